"""What the benchmark scripts share: README blocks they generate, the machine line, peak memory.

Generated blocks in README.md: a benchmark writes its own figures between two markers.

    <!-- bench_paper:begin -->
    ... written by `benchmarks/bench_paper.py --write-readme README.md`, never by hand ...
    <!-- bench_paper:end -->

A script replaces the text between its markers and nothing else; a README without the markers
(or with them out of order or repeated) is an error, not a silent append.
"""

from __future__ import annotations

import datetime
import os
import resource
import subprocess
from pathlib import Path

__all__ = ["git_commit", "machine_line", "peak_rss_mb", "replace_block", "write_block"]

REPO = Path(__file__).resolve().parent.parent


def markers(name: str) -> tuple[str, str]:
    """The begin and end markers of block `name`."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_block(text: str, name: str, body: str) -> str:
    """`text` with the lines between block `name`'s markers replaced by `body`.

    Raises:
        ValueError: If the markers are missing, repeated or in the wrong order.
    """
    begin, end = markers(name)
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(
            f"expected exactly one {begin} and one {end} line; add them where the figures go"
        )
    head, rest = text.split(begin)
    if end not in rest:
        raise ValueError(f"{end} comes before {begin}")
    _, tail = rest.split(end)
    return f"{head}{begin}\n{body.strip()}\n{end}{tail}"


def write_block(path: Path, name: str, body: str) -> None:
    """Replace block `name` in the file at `path` (see `replace_block`)."""
    path.write_text(replace_block(path.read_text(), name, body))


def machine_line(load_before: tuple[float, ...], load_after: tuple[float, ...]) -> str:
    """When and where a figure was measured: UTC date, CPUs, load averages before and after."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpus = len(os.sched_getaffinity(0))
    model = cpu_model()

    def fmt(load: tuple[float, ...]) -> str:
        return "/".join(f"{v:.2f}" for v in load)

    return (
        f"measured {now} on {cpus} CPUs ({model}); load average (1/5/15 min) "
        f"{fmt(load_before)} before, {fmt(load_after)} after"
    )


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or 'unknown CPU'."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    /proc's VmHWM, not ru_maxrss: Linux carries the parent's high-water mark over exec into a
    child's ru_maxrss (a 13 MB child started by a 500 MB parent reports 513 MB; checked on this
    machine), while VmHWM is the child's own. ru_maxrss only where /proc is missing.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def git_commit() -> str:
    """This checkout's commit, e.g. "commit ec037b1 + uncommitted changes"."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit"
    return f"commit {head}" + (" + uncommitted changes" if dirty else "")
