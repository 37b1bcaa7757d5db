"""The notebooks (SDK v2 and v3): valid, generated, tagged, and using the package's names.

Their offline cells are executed in tests/integration/test_notebook_run.py and their SDK names
and arguments checked against the installed SDKs in tests/integration/test_notebook_sdk.py.
"""

from __future__ import annotations

import ast
import re

import nbformat
import pytest
from tools.notebook import AWS, INSTALL, OFFLINE, OUTPUTS, SDKS, TAGS, build

from cnn_kmeans.config import BY_NAME as HYPERPARAMETERS
from cnn_kmeans.container.algorithm import CHANNELS
from cnn_kmeans.container.metrics import BY_NAME as METRICS
from tests.helpers import REPO

CHANNEL_NAMES = {channel["Name"] for channel in CHANNELS}
RANGES = {"IntegerParameter", "ContinuousParameter", "CategoricalParameter"}
# What each walk-through does, in the words of its SDK.
JOURNEY = {
    "v2": (
        "Estimator(",
        "HyperparameterTuner(",
        ".deploy(",
        ".predict(",
        ".transformer(",
        "AlgorithmEstimator(",
        "delete_endpoint()",
    ),
    "v3": (
        "ModelTrainer(",
        "HyperparameterTuner(",
        "ModelBuilder(",
        ".deploy(",
        "endpoint.invoke(",
        ".transformer(",
        "algorithm_name=algorithm_arn",
        "endpoint.delete()",
        "endpoint_config.delete()",
    ),
}
COMMON = (
    "docker/build_push.sh",
    "np.allclose(batch_features, features",
    "create_algorithm(",
    "delete_algorithm(",
)


@pytest.fixture(scope="module", params=SDKS)
def sdk(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def notebook(sdk) -> nbformat.NotebookNode:
    return nbformat.read(REPO / OUTPUTS[sdk], as_version=4)


@pytest.fixture(scope="module")
def trees(notebook) -> list[ast.Module]:
    return [ast.parse(_python(cell.source)) for cell in _code(notebook)]


def _code(notebook, tag: str | None = None) -> list:
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    return [cell for cell in cells if tag is None or cell.metadata.tags == [tag]]


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


def _calls(trees: list[ast.Module], name: str) -> list[ast.Call]:
    """Calls of `name(...)` or `x.name(...)`."""
    return [
        call
        for call in _nodes(trees, ast.Call)
        if getattr(call.func, "attr", getattr(call.func, "id", None)) == name
    ]


def test_notebook_is_valid_nbformat(notebook):
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.language == "python"


def test_every_code_cell_compiles(notebook):
    for number, cell in enumerate(notebook.cells, 1):
        if cell.cell_type == "code":
            compile(_python(cell.source), f"notebook cell {number}", "exec")


def test_committed_notebook_is_what_the_generator_writes(notebook, sdk):
    stale = f"{OUTPUTS[sdk]} is stale: run `make notebook` (tools/notebook.py)"
    assert notebook == build(sdk), stale


def test_every_code_cell_says_what_it_needs(notebook):
    for cell in _code(notebook):
        assert len(cell.metadata.tags) == 1 and cell.metadata.tags[0] in TAGS, cell.source
    assert all(
        line.startswith("%pip install ")
        for cell in _code(notebook, INSTALL)
        for line in cell.source.splitlines()
    )
    assert len(_code(notebook, OFFLINE)) >= 5 and len(_code(notebook, AWS)) >= 8


def test_offline_cells_need_neither_aws_nor_the_shell(notebook):
    for cell in _code(notebook, OFFLINE):
        assert not re.search(r"^\s*[!%]", cell.source, re.M), cell.source
        tree = ast.parse(cell.source)
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {name.split(".")[0] for name in imported} & {"sagemaker", "boto3"}, imported


def test_aws_cells_define_what_they_declare(notebook):
    """What the executed test stands in for is really defined there (same signature)."""
    declared = []
    for cell in _code(notebook, AWS):
        tree = ast.parse(_python(cell.source))
        defined = {
            n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }
        functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        for name in cell.metadata.get("cnn_kmeans", {}).get("defines", []):
            assert name in defined | functions.keys(), (name, cell.source)
            declared.append(name)
        if "invoke" in functions:
            assert ast.unparse(functions["invoke"].args) == (
                "body, content_type='text/csv', accept='text/csv'"
            )
    assert declared == ["final", "invoke", "batch_output"]


def test_hyperparameters_are_declared_and_their_values_allowed(trees):
    given = _keyword_values(trees, "hyperparameters")
    assert len(given) >= 2  # the training job and the one through the algorithm resource
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
    for call in _calls(trees, "with_metric_definitions"):  # SDK v3's ModelTrainer
        assert "for m in metric_definitions()" in ast.unparse(call), ast.unparse(call)
    text = "\n".join(cell.source for cell in notebook.cells)
    for name in set(re.findall(r"\b(?:train|valid)_(?:loss|score)\b", text)):
        assert name in METRICS, name


def test_channel_names_are_the_algorithm_s(trees, sdk):
    (channels,) = [
        node.value
        for node in _nodes(trees, ast.Assign)
        if any(isinstance(t, ast.Name) and t.id == "channels" for t in node.targets)
    ]
    if sdk == "v2":  # {"training": TrainingInput(...), ...}, passed to every fit()
        names = set(_dict_keys(channels))
        runs = [call.args for call in _calls(trees, "fit")]
        assert len(runs) >= 3  # Estimator, HyperparameterTuner, AlgorithmEstimator
    else:  # [InputData(channel_name="training", ...), ...], to train() and tune()
        assert isinstance(channels, ast.List)
        names = {
            ast.literal_eval(kw.value)
            for element in channels.elts
            for kw in element.keywords
            if kw.arg == "channel_name"
        }
        runs = [[kw.value for kw in call.keywords] for call in _calls(trees, "train")]
        runs += [[kw.value for kw in call.keywords] for call in _calls(trees, "tune")]
        assert len(runs) >= 3  # ModelTrainer, HyperparameterTuner, ModelTrainer(algorithm_name)
    assert "training" in names and names <= CHANNEL_NAMES
    for arguments in runs:
        assert [ast.unparse(a) for a in arguments] == ["channels"]


def test_clean_up_deletes_the_endpoint_its_configuration_and_both_models(notebook, sdk):
    source = _code(notebook, AWS)[-1].source
    steps = {
        # Predictor.delete_model() reads the models from the endpoint configuration, so it runs
        # before delete_endpoint() deletes that configuration; Model.transformer() made the
        # other model (model.delete_model() would delete that one only).
        "v2": [
            "predictor.delete_model()",
            "predictor.delete_endpoint()",
            "transformer.delete_model()",
        ],
        "v3": [
            "EndpointConfig.get(endpoint_config_name=endpoint.endpoint_config_name)",
            "endpoint_config.production_variants",
            "model_names.add(transformer.model_name)",
            "endpoint.delete()",
            "endpoint_config.delete()",
            "ModelResource.get(model_name=name).delete()",
        ],
    }[sdk]
    positions = [source.find(step) for step in steps]
    assert -1 not in positions, [step for step in steps if step not in source]
    assert positions == sorted(positions), steps
    assert not re.search(r"(?<![\w.])model\.delete_model\(\)", source)  # only the last model


def test_notebook_walks_the_whole_journey(notebook, sdk):
    text = "\n".join(cell.source for cell in notebook.cells)
    for step in (*COMMON, *JOURNEY[sdk]):
        assert step in text, step
    for path in re.findall(r"(?<![\w/])((?:docker|data)/[\w./]+)", text):
        assert (REPO / path.rstrip("/")).exists(), path
