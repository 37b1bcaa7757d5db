"""The long fuzzing campaign of the request decoders (not run by CI).

    python benchmarks/fuzz_campaign.py [--examples 10000] [--seed 0] [-k EXPRESSION] [--json FILE]

Runs the properties of `tests/unit/test_fuzz_decoders.py` (CSV, JSON, JSON Lines, any charset)
with `--examples` generated inputs each instead of the suite's 150, under a fixed hypothesis
seed so a run can be repeated, and prints per property: inputs tried, how many decoded and how
many were rejected with a UserError, failures, and the time taken. A failure is printed with the
smallest input hypothesis found; the exit code is non-zero then.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE = "tests/unit/test_fuzz_decoders.py"


def run(examples: int, seed: int, select: str | None = None) -> tuple[int, str, float]:
    """pytest on the fuzz module with `examples` per property; returns (code, output, seconds)."""
    env = {**os.environ, "CNN_KMEANS_FUZZ_EXAMPLES": str(examples)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        MODULE,
        "-q",
        "-p",
        "no:cacheprovider",
        "--hypothesis-show-statistics",
        f"--hypothesis-seed={seed}",
        *(["-k", select] if select else []),
    ]
    began = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - began


def statistics(output: str) -> list[dict]:
    """Per property: inputs tried, decoded / rejected shares, failures, from hypothesis' report."""
    rows = []
    for block in re.split(r"\n(?=tests/unit/\S+::)", output):
        name = re.match(r"tests/unit/\S+::(\w+)", block)
        counts = re.search(r"(\d+) passing, (\d+) failing, and (\d+) invalid", block)
        if not name or not counts:
            continue
        events = dict(
            (label.strip(), float(share))
            for share, label in re.findall(r"\* ([\d.]+)%, (decoded|rejected: UserError)", block)
        )
        passing, failing, invalid = (int(c) for c in counts.groups())
        rows.append(
            {
                "property": name.group(1),
                "inputs": passing + failing,
                "failing": failing,
                "filtered": invalid,
                "decoded_%": events.get("decoded"),
                "user_error_%": events.get("rejected: UserError"),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=10_000, help="inputs per property")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed")
    parser.add_argument("-k", dest="select", help="only the properties pytest -k selects")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    code, output, seconds = run(args.examples, args.seed, args.select)
    rows = statistics(output)
    summary = re.findall(r"^=* ?(\d+ (?:passed|failed).*?) ?=*$", output, re.MULTILINE)
    figures = {
        "examples_per_property": args.examples,
        "seed": args.seed,
        "seconds": round(seconds, 1),
        "total_inputs": sum(row["inputs"] for row in rows),
        "properties": rows,
        "pytest": summary[-1] if summary else None,
    }
    print(json.dumps(figures, indent=2))
    if code != 0:
        print(output[-6000:])  # the failing input and its traceback
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
