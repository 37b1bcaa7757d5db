"""The quality report (benchmarks/quality_report.py): which runs each table reads."""

from __future__ import annotations


def record(quality_report, seed: int, ari: float, baselines: bool) -> dict:
    """A GunPoint run of the default job: untrained ARI 0, trained `ari`."""

    def shot(epochs: int, value: float) -> dict:
        scores = {"ari": value, "nmi": value}
        variants = {v: scores for v in ["none", *quality_report.VARIANTS]}
        return {"epochs": epochs, "steps": epochs * 5, "train_seconds": 60.0, "kmeans": variants}

    run = {
        "dataset": "GunPoint",
        "seed": seed,
        "commit": "abc1234",
        "versions": {"torch": "x"},
        "config": {"epochs": 100},
        "data": {"train": 50, "test": 150, "length": [150, 150], "classes": 2},
        "snapshots": [shot(0, 0.0), shot(100, ari)],
    }
    if baselines:
        run["baselines"] = {
            m: {"ari": 0.2, "nmi": 0.2, "seconds": 1.0} for m in quality_report.BASELINES
        }
    return run


def test_only_the_suites_seeds_make_the_tables_and_every_seed_the_seed_to_seed_one(
    quality_report,
):
    runs = [record(quality_report, 0, 0.7, True), record(quality_report, 3, 0.1, False)]
    text = quality_report.report(runs)
    before, after = text.split("## Seed to seed", 1)
    # Every table before it reads seed 0 alone: ours 0.700, not the two seeds' 0.400.
    assert "| GunPoint | 0 | 0.700 | 0.000 |" in before and "0.400" not in before
    # The seed-to-seed table reads both: mean ± sd, min, max, seeds 0–2, others, |0.7 - 0.1|.
    assert "| GunPoint | 0,3 | 0.400 ± 0.424 | 0.100 | 0.700 | 0.700 | 0.100 | 0.600 |" in after
    # Each method's mean at seeds 0–2, at the others and at every seed, and paired over all.
    assert "| ours (defaults) | 0.700 | 0.100 | 0.400 |" in after
    assert "| k-Shape | 0.200 | – | 0.200 |" in after
    assert "| ours vs k-Shape | 1 | 1 / 0 | +0.500 |" in after
    # The run without baselines is reproduced by a command that skips them.
    assert "--dataset GunPoint --seeds 3 --skip-baselines --cache" in after
    assert "--dataset GunPoint --seeds 0 --cache" in after


def test_the_goal_is_also_read_over_every_seed_of_the_sets_that_have_more(quality_report):
    runs = [record(quality_report, 0, 0.7, True), record(quality_report, 3, 0.1, True)]
    goal = quality_report.report(runs).split("## Test ARI per data set", 1)[0]
    assert "- mean test ARI over sets: ours 0.700, k-Shape 0.200" in goal  # seeds 0–2
    assert (
        "Over every seed of the 1 sets that have more than seeds 0–2 (2 runs), mean test ARI: "
        "ours 0.400, k-Shape 0.200" in goal
    )
    assert "(seeds 0–2 of the same sets: ours 0.700, MiniRocket+KMeans 0.200)" in goal


def test_a_retrained_lever_is_paired_at_every_seed_it_was_run_and_tabled_at_the_suites(
    quality_report,
):
    runs = [record(quality_report, 0, 0.7, True), record(quality_report, 3, 0.1, True)]
    levers = []
    for seed, ari in ((0, 0.8), (3, 0.4)):
        lever = record(quality_report, seed, ari, False)
        lever.update(lever="augment0.3", overrides={"positive-augment": "0.3"})
        levers.append(lever)
    section = quality_report.report(runs, levers).split("## Levers that retrain", 1)[1]
    section = section.split("## Seed to seed", 1)[0]
    title = "augment0.3 (positive-augment=0.3)"
    # Paired at both seeds: gains 0.1 and 0.3.
    assert f"| {title} vs ours (defaults) | 2 | 2 / 0 | +0.200 | +0.200 |" in section
    # The table per set reads seed 0 only, as every column's seeds must match.
    assert "| GunPoint | 0 | 0.700 | 0.000 | 0.800 |" in section
    assert "0,3" not in section


def test_the_headline_reads_the_suites_seeds_then_every_seed_paired(quality_report):
    runs = [record(quality_report, 0, 0.7, True), record(quality_report, 3, 0.1, True)]
    table = quality_report.headline(runs)
    assert table[0].startswith("| method | mean test ARI, 1 sets × seeds 0–2 | 1 sets, every seed")
    assert "| ours (defaults) | 0.700 | 0.400 | – |" in table
    # k-Shape scores 0.2 at both seeds: ours better at seed 0, worse at seed 3, +0.2 on average.
    assert "| k-Shape | 0.200 | 0.200 | 1 / 1 (+0.200) |" in table
    assert "| untrained control | 0.000 | 0.000 | 2 / 0 (+0.400) |" in table


def test_the_kmeans_side_levers_are_also_paired_over_every_seed(quality_report):
    runs = [record(quality_report, 0, 0.7, True), record(quality_report, 3, 0.1, True)]
    runs[1]["snapshots"][1]["kmeans"]["l2"] = {"ari": 0.4, "nmi": 0.4}
    section = quality_report.report(runs).split("## Levers, each on its own", 1)[1]
    section = section.split("## Levers that retrain", 1)[0]
    # Seeds 0–2 alone: L2 ties with none (0.7 both); over both seeds it gains 0.3 at seed 3.
    assert "| L2-normalised features vs none (default budget) | 1 | 0 / 0 | +0.000 |" in section
    assert "over every seed of the 1 sets that have more than seeds 0–2 (2 runs)" in section
    assert "| L2-normalised features vs none | 2 | 1 / 0 | +0.150 |" in section


def test_a_large_set_is_reported_on_its_own_with_its_capped_and_continued_runs(quality_report):
    """A set beyond the suite: its own section, the default's capped passes named as ours, the
    passes past them as continued, its command; the suite's means do not read it."""
    suite = [record(quality_report, 0, 0.7, True)]
    crop = record(quality_report, 0, 0.4, True)
    crop["dataset"] = "Crop"
    crop["config"] = {"epochs": 100, "max-steps": 1500}
    crop["data"] = {"train": 7200, "test": 16800, "length": [46, 46], "classes": 24}
    # 720 steps per pass: the cap makes 3 passes (2,160 steps); a run continued to 10 passes.
    crop["snapshots"] = [
        {**crop["snapshots"][0], "epochs": 0, "steps": 0},
        {**crop["snapshots"][1], "epochs": 3, "steps": 2160},
        {**crop["snapshots"][1], "epochs": 10, "steps": 7200, "train_seconds": 600.0},
    ]
    text = quality_report.report(suite, large=[crop])
    before, section = text.split("## A large set", 1)
    assert "Crop" not in before and "ours 0.700, k-Shape 0.200" in before
    assert "| Crop | 0 | 7200 / 16800 / 46–46 / 24 | 0.200 | 0.200 | 0.200 | 0.200 |" in section
    assert "| Crop | 0 | 0 | 0 | untrained control | 0.000 | 0.000 | 1.0 |" in section
    assert "| Crop | 0 | 3 | 2,160 | ours (defaults) | 0.400 | 0.400 | 1.0 |" in section
    assert "| Crop | 0 | 10 | 7,200 | continued (10% of `epochs`' 72,000) | 0.400" in section
    assert "--dataset Crop --seeds 0 --min-steps 7200 --cache" in section


def test_how_far_from_the_goal_lists_each_sets_gaps_over_every_seed_largest_first(quality_report):
    runs = [record(quality_report, 0, 0.7, True), record(quality_report, 3, 0.1, True)]
    behind = record(quality_report, 0, 0.05, True)
    behind["dataset"] = "CBF"
    # A set where the default's cap binds: 400 series, 40 steps a pass, 1,500 steps in 38 passes;
    # today's job trains every pass of `epochs` (100), and ours is 0.2 above it.
    capped = record(quality_report, 0, 0.3, True)
    capped["dataset"] = "Fish"
    capped["data"]["train"] = 400
    capped["config"]["max-steps"] = 1500
    capped["snapshots"].insert(1, {**capped["snapshots"][1], "epochs": 38})
    capped["snapshots"][1]["kmeans"] = {
        v: {"ari": 0.5, "nmi": 0.5} for v in ["none", *quality_report.VARIANTS]
    }
    section = quality_report.report([*runs, behind, capped]).split("## How far from the goal", 1)
    section = section[1].split("## Test ARI per data set", 1)[0]
    assert (
        "ours trails MiniRocket+KMeans on 1 of 3 sets, by 0.150 ARI in all (largest: CBF, "
        "-0.150), and leads on 2, by 0.500 in all. More than 0.10 below KMeans on the "
        "z-normalised series: CBF (-0.150)." in section
    )
    rows = [line for line in section.splitlines() if line.startswith("| ") and "|---" not in line]
    # Largest gap to MiniRocket+KMeans first (then R-Clustering, k-Shape, KASBA, KMeans on the
    # series: 0.2 each); GunPoint reads both seeds (mean 0.4, one run ahead of 0.2 and one
    # behind); ours minus the untrained control's 0 last but one.
    assert rows[1:] == [
        "| CBF | 0 | 0.050 | -0.150 | -0.150 | -0.150 | -0.150 | -0.150 | +0.050 | 0 / 1 | "
        "the same job |",
        "| GunPoint | 0,3 | 0.400 | +0.200 | +0.200 | +0.200 | +0.200 | +0.200 | +0.400 | 1 / 1 | "
        "the same job |",
        "| Fish | 0 | 0.500 | +0.300 | +0.300 | +0.300 | +0.300 | +0.300 | +0.500 | 1 / 0 | "
        "+0.200 |",
    ]


def test_a_lever_is_also_paired_with_the_default_job_run_on_its_own_cpu_model(quality_report):
    def on(run: dict, cpu: str, lever: str = "", **overrides) -> dict:
        run["versions"] = {"cpu": cpu}
        if lever:
            run.update(lever=lever, overrides=overrides)
        return run

    runs = [
        on(record(quality_report, 0, 0.7, True), "Intel"),
        on(record(quality_report, 3, 0.1, True), "AMD"),
    ]
    levers = [
        on(record(quality_report, 0, 0.8, False), "AMD", "pooling", pooling="max-mean"),
        on(record(quality_report, 3, 0.4, False), "AMD", "pooling", pooling="max-mean"),
        # The default job again on AMD at seed 0, where the default record ran on Intel.
        on(record(quality_report, 0, 0.5, False), "AMD", "rerun"),
        # A lever on a model no default job ran on has no pairs on its CPU model.
        on(record(quality_report, 0, 0.9, False), "ARM", "augment0.3", **{"positive-augment": 0.3}),
    ]
    section = quality_report.report(runs, levers).split("## Levers that retrain", 1)[1]
    section = section.split("## Seed to seed", 1)[0]
    title = "pooling (pooling=max-mean)"
    # With the default records: +0.1 (Intel's 0.7) and +0.3.
    assert f"| {title} vs ours (defaults) | 2 | 2 / 0 | +0.200 |" in section
    # On AMD: seed 0 against the rerun's 0.5, seed 3 against its own default record's 0.1.
    assert f"| {title} vs ours (defaults) on its CPU model | 2 | 2 / 0 | +0.300 |" in section
    # The rerun is the default job on another CPU model: -0.2 from the Intel record.
    assert "| rerun (the default job again) vs ours (defaults) | 1 | 0 / 1 | -0.200 |" in section
    assert "rerun (the default job again) vs ours (defaults) on its CPU model" not in section
    assert "augment0.3 (positive-augment=0.3) vs ours (defaults) | 1 |" in section
    assert "augment0.3 (positive-augment=0.3) vs ours (defaults) on its CPU model" not in section
