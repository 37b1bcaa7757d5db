#!/usr/bin/env bash
# Smoke test of the two images, where a Docker engine exists: train on the sample data, then serve
# the model and invoke it, each container with --network none (as Marketplace runs algorithms).
#
#   docker/smoke.sh [TRAINING_IMAGE INFERENCE_IMAGE]
#
# Without arguments it first builds the CPU images as cnn-kmeans-{training,inference}:smoke
# (pulling the bases needs a docker login to the DLC registry of $REGION, default us-east-1).
# Exits 0 when every check passed, 77 when there is no Docker engine to run on.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info > /dev/null 2>&1; then
    echo "smoke: no Docker engine here (docker info failed); nothing was tested" >&2
    exit 77
fi
train_image="${1:-}" infer_image="${2:-}"
if [[ -z "$train_image" || -z "$infer_image" ]]; then
    train_image="cnn-kmeans-training:smoke" infer_image="cnn-kmeans-inference:smoke"
    for pair in "Dockerfile.train $train_image" "Dockerfile.infer $infer_image"; do
        read -r dockerfile image <<< "$pair"
        DOCKER_BUILDKIT=1 docker build --file "$dockerfile" --build-arg DEVICE=cpu \
            --build-arg REGION="${REGION:-us-east-1}" --tag "$image" .
    done
fi

work="$(mktemp -d)"
root="$work/opt_ml"
container=""
cleanup() {
    [[ -n "$container" ]] && docker rm -f "$container" > /dev/null 2>&1
    # The containers write as root: hand the files back before deleting them.
    docker run --rm --network none --entrypoint chown -v "$root:/opt/ml" "$train_image" \
        -R "$(id -u):$(id -g)" /opt/ml > /dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "smoke: FAILED: $*" >&2; exit 1; }

# /opt/ml as SageMaker lays it out for a job with the training and validation channels.
mkdir -p "$root/input/config" "$root/input/data/training" "$root/input/data/validation"
cp data/training/train.csv "$root/input/data/training/"
cp data/validation/valid.csv "$root/input/data/validation/"
echo '{"clusters": "3", "epochs": "3"}' > "$root/input/config/hyperparameters.json"
channel='{"ContentType": "text/csv", "TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}'
echo "{\"training\": $channel, \"validation\": $channel}" > "$root/input/config/inputdataconfig.json"
group='{"instance_group_name": "homogeneousCluster", "instance_type": "ml.m5.large", "hosts": ["algo-1"]}'
cat > "$root/input/config/resourceconfig.json" << EOF_JSON
{"current_host": "algo-1", "current_instance_type": "ml.m5.large",
 "current_group_name": "homogeneousCluster", "hosts": ["algo-1"],
 "instance_groups": [$group], "network_interface_name": "eth0"}
EOF_JSON

echo "smoke: training with $train_image"
docker run --rm --network none --hostname algo-1 -v "$root:/opt/ml" "$train_image" train \
    | tee "$work/train.log" || fail "the training job failed: $(cat "$root/output/failure" 2>&1)"
for file in config.json encoder.pt centroids.npy; do
    [[ -f "$root/model/$file" ]] || fail "model/$file was not written"
done
grep -Eq '^valid_score: ' "$work/train.log" || fail "no valid_score metric line in the log"

echo "smoke: a bad hyperparameter must fail the job with output/failure"
bad="$work/bad"
mkdir -p "$bad"
cp -r "$root/input" "$bad/"
echo '{"clusters": "1"}' > "$bad/input/config/hyperparameters.json"
if docker run --rm --network none --hostname algo-1 -v "$bad:/opt/ml" "$train_image" train \
    > /dev/null 2>&1; then
    fail "a job with clusters=1 succeeded"
fi
grep -q clusters "$bad/output/failure" || fail "output/failure does not name the hyperparameter"

echo "smoke: serving with $infer_image"
container="$(docker run -d --network none -v "$root/model:/opt/ml/model:ro" \
    -v "$PWD/data/inference/input:/data:ro" "$infer_image" serve)"
# With --network none the port is reachable only from inside the container: ask from there.
docker exec -i "$container" python - << 'PY' || { docker logs "$container"; fail "serving"; }
import json, time, urllib.request

url = "http://127.0.0.1:8080"
for _ in range(120):
    try:
        if urllib.request.urlopen(f"{url}/ping", timeout=2).status == 200:
            break
    except OSError:
        time.sleep(1)
else:
    raise SystemExit("GET /ping never answered 200")
params = json.load(urllib.request.urlopen(f"{url}/execution-parameters", timeout=5))
assert params["BatchStrategy"] == "MULTI_RECORD", params
body = open("/data/test.csv", "rb").read()
request = urllib.request.Request(
    f"{url}/invocations", data=body, headers={"Content-Type": "text/csv", "Accept": "text/csv"}
)
rows = urllib.request.urlopen(request, timeout=60).read().decode().splitlines()
assert len(rows) == len(body.decode().splitlines()), (len(rows), "output rows != input rows")
labels = [int(row.split(",")[0]) for row in rows]
assert set(labels) <= {0, 1, 2}, set(labels)
print("smoke: /invocations labelled", len(rows), "series; cluster sizes",
      [labels.count(k) for k in range(3)])
PY
start=$SECONDS
docker stop --time 30 "$container" > /dev/null
code="$(docker inspect --format '{{.State.ExitCode}}' "$container")"
[[ "$code" == 0 ]] || fail "the server exited with $code on SIGTERM"
echo "smoke: server stopped on SIGTERM in $((SECONDS - start)) s"
echo "smoke: all checks passed"
