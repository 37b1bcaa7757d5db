"""The paper's code for bench_paper.py: the pinned commit, its two compatibility edits, checks.

The paper's repository is never copied into ours; the user clones it (README, "Performance"):

    git clone https://github.com/White-Link/UnsupervisedScalableRepresentationLearningTimeSeries \
        paper-code
    git -C paper-code checkout 4aff59229113368ace606ad76e149a7916daa6f9
    python benchmarks/bench_paper.py --prepare paper-code

`--prepare` applies the two edits modern scikit-learn needs to `scikit_wrappers.py`, by exact
string replacement, and refuses when the text is not the pinned commit's: `sklearn.externals.joblib`
is gone since scikit-learn 0.23 (use `joblib`), and `GridSearchCV` lost `iid=` in 0.24. The
benchmark itself calls neither (only `fit_encoder` and `encode`), but it runs the code in the
documented state, so it checks the clone is exactly the pinned commit plus these edits.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["COMMIT", "EDITS", "check", "prepare"]

COMMIT = "4aff59229113368ace606ad76e149a7916daa6f9"
URL = "https://github.com/White-Link/UnsupervisedScalableRepresentationLearningTimeSeries"
FILE = "scikit_wrappers.py"
# (text at the pinned commit, replacement, occurrences): joblib left scikit-learn's externals;
# GridSearchCV's `iid` argument was removed.
EDITS = (
    ("import sklearn.externals\n", "import joblib\n", 1),
    ("sklearn.externals.joblib.", "joblib.", 2),
    ("cv=5, iid=False, n_jobs=5", "cv=5, n_jobs=5", 1),
)


class PaperCodeError(Exception):
    """The clone is not the pinned commit, or not in the documented state; says what to do."""


def edited(text: str) -> str:
    """The pinned commit's `scikit_wrappers.py` text with the edits applied.

    Raises:
        PaperCodeError: If a replaced text does not occur exactly as often as at the commit.
    """
    for old, new, count in EDITS:
        found = text.count(old)
        if found != count:
            raise PaperCodeError(
                f"{FILE}: expected {count} occurrence(s) of {old.strip()!r}, found {found}; "
                f"is this commit {COMMIT[:7]}?"
            )
        text = text.replace(old, new)
    return text


def _git(paper_dir: Path, *args: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(paper_dir), *args], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise PaperCodeError(
            f"{paper_dir} is not a git clone of the paper's code ({error}); clone it with\n"
            f"  git clone {URL} {paper_dir}\n  git -C {paper_dir} checkout {COMMIT}"
        ) from None


def _check_commit(paper_dir: Path) -> None:
    head = _git(paper_dir, "rev-parse", "HEAD").strip()
    if head != COMMIT:
        raise PaperCodeError(
            f"{paper_dir} is at {head[:7]}, not the pinned {COMMIT[:7]}: "
            f"git -C {paper_dir} checkout {COMMIT}"
        )
    changed = set(_git(paper_dir, "diff", "--name-only", "HEAD").split())
    if changed - {FILE}:
        raise PaperCodeError(
            f"{paper_dir}: files other than {FILE} are modified ({', '.join(sorted(changed))}); "
            f"git -C {paper_dir} checkout -- . and run --prepare again"
        )


def prepare(paper_dir: Path) -> str:
    """Apply the edits to the clone's `scikit_wrappers.py`; returns what was done.

    Raises:
        PaperCodeError: If the clone is not the pinned commit or the file differs from it.
    """
    _check_commit(paper_dir)
    pinned = _git(paper_dir, "show", f"{COMMIT}:{FILE}")
    path = paper_dir / FILE
    current = path.read_text()
    wanted = edited(pinned)
    if current == wanted:
        return f"{path}: the edits are already applied"
    if current != pinned:
        raise PaperCodeError(
            f"{path} differs from the pinned commit and from its edited form; restore it with "
            f"git -C {paper_dir} checkout -- {FILE} and run --prepare again"
        )
    path.write_text(wanted)
    done = ", ".join(repr(old.strip()) for old, _, _ in EDITS)
    return f"{path}: replaced {done}"


def check(paper_dir: Path) -> None:
    """Raise PaperCodeError unless the clone is the pinned commit plus exactly the edits."""
    if not (paper_dir / FILE).is_file():
        raise PaperCodeError(
            f"no {FILE} in {paper_dir}; clone the paper's code there:\n"
            f"  git clone {URL} {paper_dir}\n  git -C {paper_dir} checkout {COMMIT}"
        )
    _check_commit(paper_dir)
    pinned = _git(paper_dir, "show", f"{COMMIT}:{FILE}")
    if (paper_dir / FILE).read_text() != edited(pinned):
        raise PaperCodeError(
            f"{paper_dir / FILE} is not the pinned commit plus the two compatibility edits; run\n"
            f"  python benchmarks/bench_paper.py --prepare {paper_dir}"
        )
