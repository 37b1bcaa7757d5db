"""The benchmark scripts' own logic: README blocks, the paper's edits, the ratios they print.

The scripts themselves are not run here (minutes of measurement, outside CI); these check what
would make a published figure wrong or a README edit destructive.
"""

from __future__ import annotations

import pytest
from benchmarks.bench_common import replace_block
from benchmarks.bench_paper import summarise, table
from benchmarks.paper_code import EDITS, PaperCodeError, edited

README = """# Title

## Performance

<!-- bench_paper:begin -->
old figures
| a | b |
<!-- bench_paper:end -->

Text after the block.
<!-- bench_core:begin -->
core figures
<!-- bench_core:end -->
"""


def test_block_replaced_and_nothing_else():
    out = replace_block(README, "bench_paper", "| new | table |\n")
    assert "old figures" not in out
    assert "<!-- bench_paper:begin -->\n| new | table |\n<!-- bench_paper:end -->" in out
    assert out.replace("| new | table |", "old figures\n| a | b |") == README
    assert replace_block(out, "bench_paper", "| new | table |") == out  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "no markers at all",
        README.replace("<!-- bench_paper:end -->", ""),
        README + "<!-- bench_paper:begin -->\n",
        "<!-- bench_paper:end -->\nx\n<!-- bench_paper:begin -->\n",
    ],
)
def test_block_markers_must_be_one_well_ordered_pair(text):
    with pytest.raises(ValueError, match="bench_paper"):
        replace_block(text, "bench_paper", "figures")


PINNED = """import sklearn.externals
import sklearn.model_selection
        sklearn.externals.joblib.dump(
        self.classifier = sklearn.externals.joblib.load(
                cv=5, iid=False, n_jobs=5
"""


def test_paper_edits_are_the_two_compatibility_changes():
    assert edited(PINNED) == (
        "import joblib\nimport sklearn.model_selection\n        joblib.dump(\n"
        "        self.classifier = joblib.load(\n                cv=5, n_jobs=5\n"
    )


@pytest.mark.parametrize("old", [old for old, _, _ in EDITS])
def test_paper_edits_refuse_text_that_is_not_the_pinned_commit(old):
    with pytest.raises(PaperCodeError, match="4aff592"):
        edited(PINNED.replace(old, "something else", 1))
    with pytest.raises(PaperCodeError, match="4aff592"):
        edited(edited(PINNED))  # applying twice is refused, not a silent no-op


def run(side, shape, steps, encode_s, peak):
    return {
        "side": side,
        "shape": shape,
        "step_s": steps,
        "encode_s": encode_s,
        "peak_mb": peak,
        "train_peak_mb": peak,
        "version": side,
    }


def test_summary_ratios_are_paper_over_ours_after_warmup():
    results = [
        # warm-up step first (100 s: must not count), then the measured steps
        run("paper", "gunpoint", [100.0, 2.0, 2.0, 4.0], [2.0, 1.0], 2000.0),
        run("ours", "gunpoint", [100.0, 0.1, 0.1, 0.3], [0.1, 0.2], 500.0),
        run("ours", "gunpoint", [100.0, 0.2, 0.2, 0.2], [0.05], 400.0),
        run("paper", "gunpoint", [100.0, 2.0, 3.0, 3.0], [3.0], 1900.0),
    ]
    (row,) = summarise(results, warmup=1, sizes={"gunpoint": 200})
    assert row["paper"]["step_s"] == 2.5  # median of 2, 2, 4, 2, 3, 3
    assert row["ours"]["step_s"] == 0.2
    assert row["step_ratio"] == pytest.approx(12.5)
    assert row["step_ratio_rounds"] == pytest.approx([20.0, 15.0])  # per round: 2/0.1, 3/0.2
    assert row["paper"]["series_per_s"] == 200.0  # best pass: 1 s
    assert row["ours"]["series_per_s"] == 4000.0  # best pass: 0.05 s
    assert row["encode_ratio"] == pytest.approx(20.0)
    assert row["peak_ratio"] == pytest.approx(4.0)  # highest peaks: 2000 / 500
    line = table([row], {"gunpoint": "GunPoint"}).splitlines()[-1]
    assert line.startswith("| GunPoint | 2.50 | 0.200 | **12.5×** (15.0–20.0) | 200 | 4,000 |")


def test_the_convolution_floor_counts_each_calls_flops_over_its_valid_width():
    from benchmarks.profile_long import conv_floor

    # 2 series x 4 channels x 10 steps, 5 filters of 3 taps, dilation 2: 6 output steps.
    seconds, flops = conv_floor([((2, 4, 10), (5, 4, 3), (2,)), ((1, 1, 7), (4, 1, 2), 1)])
    assert flops == 2 * 2 * 5 * 4 * 3 * 6 + 2 * 1 * 4 * 1 * 2 * 6
    assert seconds > 0


def test_the_floor_scales_to_true_cells_over_the_groups_padded_cells():
    import numpy as np
    from benchmarks.profile_long import cells

    from cnn_kmeans.loss import sample_triplets

    rng = np.random.default_rng(0)
    triplets = sample_triplets(rng, rng.integers(20, 300, size=30), np.arange(10), 10)
    true, padded = cells(triplets)
    lengths = np.concatenate(
        [triplets.anchor_length, triplets.positive_length, triplets.negative_length.ravel()]
    )
    assert true == lengths.sum()
    # Three groups of 40 sorted windows, each padded to its longest window's multiple of 16.
    ordered = np.sort(lengths)
    assert padded == sum(40 * -(-ordered[i + 39] // 16) * 16 for i in (0, 40, 80))
