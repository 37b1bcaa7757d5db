# Development tasks. Every target is idempotent: the virtualenv is built once and rebuilt only
# when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := runs/demo

.PHONY: venv demo test lint format bench data clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[dev]'
	touch $(STAMP)

# The main job on the sample data: train (3 clusters, about a minute on 2 cores), then predict.
demo: venv
	$(BIN)/cnn-kmeans train --train data/training --validation data/validation \
		--model-dir $(DEMO)/model --clusters 3 --epochs 25
	$(BIN)/cnn-kmeans predict --model-dir $(DEMO)/model data/inference/input/test.csv \
		--output $(DEMO)/predictions.csv

test: lint
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
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
