"""The notebooks' offline cells, executed in order in a real Jupyter kernel (nbclient + ipykernel).

What a user's run depends on but AWS does not: reading the sample data, the endpoint's answers
as the cells parse them, the plot, the batch/endpoint comparison. The model comes from the real
training entrypoint on a temporary /opt/ml (a tiny architecture, 2 epochs), the endpoint is the
real `serve` entrypoint (gunicorn) on 127.0.0.1. Each `aws` cell that defines names later cells
use is replaced, in place, by a stand-in that defines them from these local processes: `final`
from the job's metric lines (as SageMaker scrapes them), `invoke` as an HTTP request to the
server, `batch_output` assembled from the server's answers as a batch transform job assembles
them. The other `aws` and `install` cells are not run (tests/unit/test_notebook.py checks their
SDK names and arguments).

Why a kernel and not exec(): the notebooks run in IPython kernels, so this is the runtime users
get (the inline matplotlib backend, display, the kernel's working directory), and the cells'
state stays out of pytest's process. The kernel is this virtualenv's Python.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest
import requests
from nbclient import NotebookClient
from tools.notebook import AWS, OFFLINE, SDKS, build

from tests.helpers import DATA, REPO
from tests.integration.opt_ml import TINY, make_job, metric_values, run_job
from tests.integration.test_serve import SERVE, start

pytestmark = pytest.mark.slow

# Mini-batches of at most this many bytes, cut at line ends (SageMaker's MaxPayloadInMB is at
# least 1 MB; the sample file is 30 kB, so a small bound stands for a file of many mini-batches).
MINI_BATCH_BYTES = 8192


def _head(path: Path, rows: int) -> bytes:
    return b"".join(path.read_bytes().splitlines(keepends=True)[:rows])


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """The training entrypoint on the sample channels: /opt/ml root and the final metrics."""
    root = tmp_path_factory.mktemp("opt_ml")
    channels = {  # the first rows of each sample channel: a quick job (the clusters don't matter)
        "training": {"train.csv": _head(DATA / "training" / "train.csv", 40)},
        "validation": {"valid.csv": _head(DATA / "validation" / "valid.csv", 20)},
    }
    make_job(root, {**TINY, "epochs": "1", "negative-samples": "1", "seed": "0"}, channels)
    result = run_job(root)
    assert result.returncode == 0, result.stderr[-3000:]
    # SageMaker keeps the last value each MetricDefinitions regex matched in the log.
    final = {name: values[-1] for name, values in metric_values(result.stdout).items() if values}
    assert {"train_loss", "valid_loss", "train_score", "valid_score"} <= final.keys()
    return root, final


@pytest.fixture(scope="module")
def server(request, job):
    """The `serve` entrypoint as in an endpoint, on the trained model."""
    root, _ = job
    return start(request, root, SERVE, "notebook-server", SAGEMAKER_MODEL_SERVER_WORKERS="1")


def batch_transform(url: str, data: bytes) -> str:
    """The `.out` file of a batch transform with SplitType=Line, BatchStrategy=MultiRecord and
    AssembleWith=Line: the records (lines) go in mini-batches of whole lines, one request each,
    and each answer is written followed by a line break.

    Whether SageMaker adds that line break when the answer already ends with one is not
    documented; adding it (a blank line after each mini-batch) is the case readers must survive.
    """
    lines = data.splitlines(keepends=True)
    batches, current = [], b""
    for line in lines:
        if current and len(current) + len(line) > MINI_BATCH_BYTES:
            batches.append(current)
            current = b""
        current += line
    batches.append(current)
    assert len(batches) > 1
    out = []
    for body in batches:
        response = requests.post(
            f"{url}/invocations",
            data=body,
            headers={"Content-Type": "text/csv", "Accept": "text/csv"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        out.append(response.content.decode() + "\n")
    return "".join(out)


def stand_in(name: str, url: str, final: dict[str, float], batch_output: str) -> str:
    """Source of a cell defining `name` from the local processes, as the `aws` cell would."""
    if name == "final":
        return f"final = {final!r}"
    if name == "batch_output":
        return f"batch_output = {batch_output!r}"
    if name == "invoke":
        return f'''
import requests


def invoke(body, content_type="text/csv", accept="text/csv"):
    """The local server's answer to one request, as text (an error status raises)."""
    headers = {{"Content-Type": content_type, "Accept": accept}}
    response = requests.post({url!r} + "/invocations", data=body, headers=headers, timeout=60)
    response.raise_for_status()
    return response.content.decode()
'''
    raise AssertionError(f"no local stand-in for {name!r}: add one to {__name__}")


def offline_run(notebook: nbformat.NotebookNode, stand_ins: dict[str, str]) -> list:
    """The offline cells in order, each defining aws cell replaced by its stand-ins."""
    check = f"import sys, os\nassert sys.executable == {sys.executable!r}, sys.executable\n"
    check += f"assert os.getcwd() == {str(REPO)!r}, os.getcwd()"
    cells = [nbformat.v4.new_code_cell(check)]
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        (tag,) = cell.metadata.tags
        if tag == OFFLINE:
            cells.append(cell)
        elif tag == AWS:
            for name in cell.metadata.get("cnn_kmeans", {}).get("defines", []):
                cells.append(nbformat.v4.new_code_cell(stand_ins[name]))
    return cells


def text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def _offline_part(notebook: nbformat.NotebookNode) -> list[tuple[str, str | list[str]]]:
    """The offline cells' sources and the names the aws cells define, in order."""
    part = []
    for cell in notebook.cells:
        if cell.cell_type == "code" and cell.metadata.tags == [OFFLINE]:
            part.append((OFFLINE, cell.source))
        elif cell.cell_type == "code" and "cnn_kmeans" in cell.metadata:
            part.append((AWS, cell.metadata.cnn_kmeans.defines))
    return part


def test_offline_cells_run_against_the_local_server(job, server, tmp_path, monkeypatch):
    # What runs here is the same in both notebooks: run it once.
    v2, v3 = (build(sdk) for sdk in SDKS)
    assert _offline_part(v2) == _offline_part(v3)
    notebook = v2
    _, final = job
    batch_output = batch_transform(server.url, (DATA / "inference/input/test.csv").read_bytes())
    assert "\n\n" in batch_output  # the blank lines the comparison cell must skip
    stand_ins = {
        name: stand_in(name, server.url, final, batch_output)
        for name in ("final", "invoke", "batch_output")
    }
    notebook.cells = offline_run(notebook, stand_ins)
    # The kernel's runtime files and IPython profile go to a temporary folder, not $HOME.
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    client = NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error

    outputs = "\n".join(text(cell) for cell in notebook.cells)
    for name, value in final.items():
        assert f"{name:12} {value:10.4f}" in outputs, name
    assert "100 series of 100 ; cluster sizes:" in outputs
    assert "rows: 100 for 100 series" in outputs
    assert "same labels: True" in outputs
    assert "same features: True" in outputs
    images = [
        o
        for cell in notebook.cells
        for o in cell.outputs
        if o.output_type == "display_data" and "image/png" in o.data
    ]
    assert len(images) == 1  # the clusters' plot
    assert re.search(r"^labels: \[\d+, \d+\]$", outputs, re.M)  # one per JSON instance
