#!/usr/bin/env bash
# Build, tag and push the training and inference images, CPU and GPU, to your account's ECR.
#
#   docker/build_push.sh --account 123456789012 --region eu-west-1 [--devices "cpu gpu"]
#       [--repository-prefix cnn-kmeans] [--tag VERSION] [--no-push]
#
# Images: <account>.dkr.ecr.<region>.amazonaws.com/<prefix>-{training,inference}:<tag>-{cpu,gpu}
# (the tag defaults to the package version in pyproject.toml). The last lines printed are the
# image URIs, ready for `cnn-kmeans spec --training-image ... --inference-image ...`.
# Needs docker (with BuildKit, Docker's default builder) and the AWS CLI v2.
set -euo pipefail
cd "$(dirname "$0")/.."

account="" region="" devices="cpu gpu" prefix="cnn-kmeans" tag="" push=1
# The AWS Deep Learning Containers' registry (account 763104351884 in most regions).
base_account="${DLC_ACCOUNT:-763104351884}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --account) account="${2:?--account needs a value}"; shift 2 ;;
        --region) region="${2:?--region needs a value}"; shift 2 ;;
        --devices) devices="${2:?--devices needs a value}"; shift 2 ;;
        --repository-prefix) prefix="${2:?--repository-prefix needs a value}"; shift 2 ;;
        --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
        --no-push) push=0; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ -z "$account" || -z "$region" ]]; then
    echo "--account and --region are required (see --help)" >&2
    exit 2
fi
if [[ -z "$tag" ]]; then
    tag="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)"
fi

base_registry="${base_account}.dkr.ecr.${region}.amazonaws.com"
registry="${account}.dkr.ecr.${region}.amazonaws.com"

# Pulling the base images needs a login to the DLC registry; pushing, one to ours.
aws ecr get-login-password --region "$region" \
    | docker login --username AWS --password-stdin "$base_registry"
if [[ "$push" == 1 ]]; then
    aws ecr get-login-password --region "$region" \
        | docker login --username AWS --password-stdin "$registry"
fi

built=()
for kind in training inference; do
    dockerfile="Dockerfile.train"
    [[ "$kind" == inference ]] && dockerfile="Dockerfile.infer"
    repository="${prefix}-${kind}"
    if [[ "$push" == 1 ]] \
        && ! aws ecr describe-repositories --region "$region" \
            --repository-names "$repository" > /dev/null 2>&1; then
        aws ecr create-repository --region "$region" --repository-name "$repository" > /dev/null
    fi
    for device in $devices; do
        image="${registry}/${repository}:${tag}-${device}"
        DOCKER_BUILDKIT=1 docker build --file "$dockerfile" \
            --build-arg DEVICE="$device" --build-arg REGION="$region" \
            --build-arg REGISTRY="$base_registry" --tag "$image" .
        if [[ "$push" == 1 ]]; then
            docker push "$image"
        fi
        built+=("$image")
    done
done
printf '%s\n' "${built[@]}"
