#!/usr/bin/env bash
# Build, tag and push the training and inference images, CPU and GPU, to your account's ECR.
#
#   docker/build_push.sh --account 123456789012 --region eu-west-1 [--devices "cpu gpu"]
#       [--repository-prefix cnn-kmeans] [--tag VERSION] [--no-push]
#
# Images: <account>.dkr.ecr.<region>.<domain>/<prefix>-{training,inference}:<tag>-{cpu,gpu}
# (domain amazonaws.com, amazonaws.com.cn in the China regions; the tag defaults to the package
# version in pyproject.toml). The base images come from the region's AWS Deep Learning
# Containers registry (its account by region: dlc_account below; DLC_ACCOUNT overrides it).
# The last lines printed are the image URIs, ready for
# `cnn-kmeans spec --training-image ... --inference-image ...`.
# Needs docker (with BuildKit, Docker's default builder) and the AWS CLI v2.
set -euo pipefail
cd "$(dirname "$0")/.."

account="" region="" devices="cpu gpu" prefix="cnn-kmeans" tag="" push=1

# The AWS Deep Learning Containers' registry account by region, from the DLC table of regions
# (aws/deep-learning-containers: available_images.md, "Deep Learning Containers Docker Images
# are available in the following regions", moved in Feb 2026 to
# docs/reference/region_availability.md; checked against both on 2026-12-01). DLC_ACCOUNT
# overrides it, for a region added after that.
dlc_account() {
    case "$1" in
        us-east-1 | us-east-2 | us-west-1 | us-west-2 | ap-south-1 | ap-northeast-1 \
            | ap-northeast-2 | ap-southeast-1 | ap-southeast-2 | ca-central-1 | eu-central-1 \
            | eu-west-1 | eu-west-2 | eu-west-3 | eu-north-1 | sa-east-1) echo 763104351884 ;;
        af-south-1) echo 626614931356 ;;
        ap-east-1) echo 871362719292 ;;
        ap-east-2) echo 975050140332 ;;
        ap-south-2) echo 772153158452 ;;
        ap-northeast-3) echo 364406365360 ;;
        ap-southeast-3) echo 907027046896 ;;
        ap-southeast-4) echo 457447274322 ;;
        ap-southeast-5) echo 550225433462 ;;
        ap-southeast-6) echo 633930458069 ;;
        ap-southeast-7) echo 590183813437 ;;
        ca-west-1) echo 204538143572 ;;
        eu-central-2) echo 380420809688 ;;
        eu-south-1) echo 692866216735 ;;
        eu-south-2) echo 503227376785 ;;
        il-central-1) echo 780543022126 ;;
        me-central-1) echo 914824155844 ;;
        me-south-1) echo 217643126080 ;;
        mx-central-1) echo 637423239942 ;;
        cn-north-1 | cn-northwest-1) echo 727897471807 ;;
        *) return 1 ;;
    esac
}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --account) account="${2:?--account needs a value}"; shift 2 ;;
        --region) region="${2:?--region needs a value}"; shift 2 ;;
        --devices) devices="${2:?--devices needs a value}"; shift 2 ;;
        --repository-prefix) prefix="${2:?--repository-prefix needs a value}"; shift 2 ;;
        --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
        --no-push) push=0; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
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

if [[ -n "${DLC_ACCOUNT:-}" ]]; then
    base_account="$DLC_ACCOUNT"
elif ! base_account="$(dlc_account "$region")"; then
    echo "no AWS Deep Learning Containers registry is known for region $region: check the" \
        "region, or set DLC_ACCOUNT to the account of its DLC registry" >&2
    exit 2
fi
# ECR in the China regions (the aws-cn partition) answers under amazonaws.com.cn.
domain="amazonaws.com"
[[ "$region" == cn-* ]] && domain="amazonaws.com.cn"
base_registry="${base_account}.dkr.ecr.${region}.${domain}"
registry="${account}.dkr.ecr.${region}.${domain}"

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
