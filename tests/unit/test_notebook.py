"""notebook.ipynb: valid, compilable, and using only names the package declares."""

from __future__ import annotations

import ast
import re

import nbformat
import pytest
from tools.notebook import build

from cnn_kmeans.config import BY_NAME as HYPERPARAMETERS
from cnn_kmeans.container.algorithm import CHANNELS
from cnn_kmeans.container.metrics import BY_NAME as METRICS
from tests.helpers import REPO

NOTEBOOK = REPO / "notebook.ipynb"
CHANNEL_NAMES = {channel["Name"] for channel in CHANNELS}
RANGES = {"IntegerParameter", "ContinuousParameter", "CategoricalParameter"}


@pytest.fixture(scope="module")
def notebook() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


@pytest.fixture(scope="module")
def trees(notebook) -> list[ast.Module]:
    return [ast.parse(_python(cell.source)) for cell in notebook.cells if cell.cell_type == "code"]


def _python(source: str) -> str:
    """The cell without IPython's shell (`!`) and magic (`%`) lines."""
    lines = source.splitlines()
    return "\n".join("" if line.lstrip().startswith(("!", "%")) else line for line in lines)


def _nodes(trees: list[ast.Module], kind: type) -> list:
    return [node for tree in trees for node in ast.walk(tree) if isinstance(node, kind)]


def _keyword_values(trees: list[ast.Module], name: str) -> list[ast.expr]:
    return [kw.value for kw in _nodes(trees, ast.keyword) if kw.arg == name]


def _dict_keys(node: ast.expr) -> list[str]:
    assert isinstance(node, ast.Dict), ast.dump(node)
    return [ast.literal_eval(key) for key in node.keys]


def test_notebook_is_valid_nbformat(notebook):
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.language == "python"


def test_every_code_cell_compiles(notebook):
    for number, cell in enumerate(notebook.cells, 1):
        if cell.cell_type == "code":
            compile(_python(cell.source), f"notebook.ipynb cell {number}", "exec")


def test_committed_notebook_is_what_the_generator_writes(notebook):
    assert notebook == build(), "notebook.ipynb is stale: run `make notebook` (tools/notebook.py)"


def test_hyperparameters_are_declared_and_their_values_allowed(trees):
    given = _keyword_values(trees, "hyperparameters")
    assert len(given) >= 2  # Estimator and AlgorithmEstimator
    for node in given:
        for key, value in zip(_dict_keys(node), node.values, strict=True):
            assert key in HYPERPARAMETERS, key
            HYPERPARAMETERS[key].check(ast.literal_eval(value))


def test_tuned_ranges_are_declared_tunable_and_inside_the_allowed_range(trees):
    (ranges,) = _keyword_values(trees, "hyperparameter_ranges")
    for key, value in zip(_dict_keys(ranges), ranges.values, strict=True):
        hp = HYPERPARAMETERS[key]
        assert hp.tunable, key
        assert isinstance(value, ast.Call) and value.func.id in RANGES, key
        if value.func.id == "CategoricalParameter":
            assert set(ast.literal_eval(value.args[0])) <= set(hp.choices), key
        else:
            low, high = (ast.literal_eval(arg) for arg in value.args[:2])
            assert hp.low <= low < high <= hp.high, key
            assert (value.func.id == "IntegerParameter") == (hp.kind is int), key


def test_metric_names_are_declared_and_definitions_come_from_the_package(trees, notebook):
    (objective,) = _keyword_values(trees, "objective_metric_name")
    assert ast.literal_eval(objective) == "valid_score"
    assert METRICS["valid_score"].maximize
    assert [ast.literal_eval(v) for v in _keyword_values(trees, "objective_type")] == ["Maximize"]
    definitions = _keyword_values(trees, "metric_definitions")
    assert definitions and all(ast.unparse(d) == "metric_definitions()" for d in definitions)
    text = "\n".join(cell.source for cell in notebook.cells)
    for name in set(re.findall(r"\b(?:train|valid)_(?:loss|score)\b", text)):
        assert name in METRICS, name


def test_channel_names_are_the_algorithm_s(trees):
    assigned = [
        node.value
        for node in _nodes(trees, ast.Assign)
        if any(isinstance(t, ast.Name) and t.id == "channels" for t in node.targets)
    ]
    (channels,) = assigned
    names = set(_dict_keys(channels))
    assert "training" in names and names <= CHANNEL_NAMES
    fits = [c for c in _nodes(trees, ast.Call) if getattr(c.func, "attr", None) == "fit"]
    assert len(fits) >= 3  # Estimator, HyperparameterTuner, AlgorithmEstimator
    for call in fits:
        (argument,) = call.args
        assert isinstance(argument, ast.Name) and argument.id == "channels"


def test_notebook_walks_the_whole_journey(notebook):
    text = "\n".join(cell.source for cell in notebook.cells)
    for step in (
        "docker/build_push.sh",
        "Estimator(",
        "HyperparameterTuner(",
        ".deploy(",
        ".predict(",
        ".transformer(",
        "np.allclose(batch_features, features",
        "create_algorithm(",
        "AlgorithmEstimator(",
        "delete_endpoint()",
        "delete_algorithm(",
    ):
        assert step in text, step
    for path in re.findall(r"(?<![\w/])((?:docker|data)/[\w./]+)", text):
        assert (REPO / path.rstrip("/")).exists(), path
