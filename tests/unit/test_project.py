"""Project rules that users and later work rely on: the README is true, the core stays pure."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from cnn_kmeans.config import markdown_table
from tests.helpers import REPO

# The pure core: every module of the package but the container layer and the CLI entrypoint.
CORE = [p for p in (REPO / "src" / "cnn_kmeans").glob("*.py") if p.name != "cli.py"]


def test_readme_hyperparameter_table_is_generated_from_the_declarations():
    readme = (REPO / "README.md").read_text()
    assert markdown_table() in readme, (
        "README.md's hyperparameter table is stale: paste the output of\n"
        "python -c 'from cnn_kmeans.config import markdown_table; print(markdown_table())'"
    )


def test_readme_commands_are_make_targets_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}\n" in readme
        assert re.search(rf"^{target}:", makefile, re.MULTILINE)
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_core_never_imports_the_container_layer_flask_or_the_environment():
    assert len(CORE) >= 10
    forbidden = re.compile(
        r"^\s*(from|import)\s+(flask|cnn_kmeans\.container|sagemaker)|os\.environ|getenv",
        re.MULTILINE,
    )
    offenders = [p.name for p in CORE if forbidden.search(p.read_text())]
    assert offenders == []


def test_no_pickle_in_the_package():
    pattern = re.compile(r"import pickle|import joblib|allow_pickle=True|weights_only=False")
    offenders = [p for p in (REPO / "src").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def _torch_loads_without_weights_only(path: Path) -> list[int]:
    """Lines of `path` calling `torch.load` without a literal `weights_only=True`."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "load"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "torch"
        ):
            safe = any(
                k.arg == "weights_only"
                and isinstance(k.value, ast.Constant)
                and k.value.value is True
                for k in node.keywords
            )
            if not safe:
                lines.append(node.lineno)
    return lines


def test_every_torch_load_in_the_package_refuses_pickle():
    """A bare `torch.load` is safe on torch >= 2.6 but unpickles on the images' torch 2.1."""
    sources = list((REPO / "src").rglob("*.py"))
    calls = {p.name: _torch_loads_without_weights_only(p) for p in sources}
    assert {name: lines for name, lines in calls.items() if lines} == {}
    assert len(sources) >= 20


def test_the_torch_load_check_flags_a_bare_call(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nx = torch.load('a')\ny = torch.load('b', weights_only=False)\n")
    assert _torch_loads_without_weights_only(bad) == [2, 3]


def test_readme_metric_table_is_generated_from_the_declarations():
    from cnn_kmeans.container.metrics import markdown_table as metric_table

    assert metric_table() in (REPO / "README.md").read_text(), (
        "README.md's metric table is stale: paste the output of\n"
        "python -c 'from cnn_kmeans.container.metrics import markdown_table; "
        "print(markdown_table())'"
    )


def test_readme_content_type_tables_list_exactly_what_the_server_speaks():
    from cnn_kmeans.container.codecs import REQUEST_CONTENT_TYPES, RESPONSE_CONTENT_TYPES
    from cnn_kmeans.outputs import OUTPUT_CHOICES

    readme = (REPO / "README.md").read_text()
    tables = {}
    for header in ("| Content-Type (request) | body |", "| Accept (response) | body |"):
        rows = readme.split(header + "\n|---|---|\n", 1)[1].split("\n\n", 1)[0].splitlines()
        tables[header] = tuple(row.split(" | ")[0].lstrip("| ") for row in rows)
    assert tables["| Content-Type (request) | body |"] == REQUEST_CONTENT_TYPES
    assert tables["| Accept (response) | body |"] == RESPONSE_CONTENT_TYPES
    for output in OUTPUT_CHOICES:
        assert f"`{output}`" in readme


def test_readme_serving_settings_table_lists_the_variables_the_server_reads():
    import inspect

    from cnn_kmeans.container import environment
    from cnn_kmeans.container.environment import ServingSettings
    from cnn_kmeans.errors import UserError

    readme = (REPO / "README.md").read_text()
    table = readme.split("| variable | default | |\n|---|---|---|\n", 1)[1].split("\n\n", 1)[0]
    listed = {row.split(" | ")[0].strip("|` ") for row in table.splitlines()}
    source = inspect.getsource(ServingSettings.from_environ)
    read = set(re.findall(r"\b(?:SAGEMAKER|CNN_KMEANS)_[A-Z_]+\b", source))
    read |= {environment.MAX_RESPONSE_ENV, environment.BATCH_ENV}
    # The port and the batch flag are SageMaker's to set; the text describes them.
    assert listed == read - {"SAGEMAKER_BIND_TO_PORT", environment.BATCH_ENV}
    for name in listed:  # each is really read: a bad value is refused by name
        try:
            ServingSettings.from_environ({name: "bogus"})
        except UserError as error:
            assert name in str(error)
        else:
            raise AssertionError(f"{name}=bogus was accepted")


def quality_records() -> tuple[list[dict], list[dict], list[dict]]:
    """The committed quality records: the default runs, the retrained levers' runs, and the
    runs of the sets beyond the suite."""
    import json

    folder = REPO / "benchmarks" / "results" / "quality"
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    levers = [json.loads(p.read_text()) for p in sorted(folder.glob("levers/*/*.json"))]
    large = [json.loads(p.read_text()) for p in sorted(folder.glob("large/*.json"))]
    assert records, "no quality records committed"
    return records, levers, large


def test_benchmarks_md_is_the_report_of_the_committed_quality_records(quality_report):
    """BENCHMARKS.md is generated: regenerating it from the committed records gives the same
    text, so a hand edit (or a record committed without regenerating) fails here."""
    records, levers, large = quality_records()
    assert (REPO / "BENCHMARKS.md").read_text() == quality_report.report(records, levers, large)


def test_readme_quality_table_is_the_reports_headline(quality_report):
    table = "\n".join(quality_report.headline(quality_records()[0]))
    assert table in (REPO / "README.md").read_text(), (
        "README.md's Quality table is stale: paste this table from BENCHMARKS.md's goal section\n"
        + table
    )
