"""ASHA and Hyperband against FIFO on the same 27 configurations and seed.

A grid of 27 scratch_mlp configurations (width {32, 64, 128} x learning rate
{3e-4, 1e-3, 3e-3} x hidden layers {1, 2, 3}), up to 20 epochs, two concurrent
trials, on three workloads: scikit-learn's digits (1,437 training images of
8x8, an epoch costs less than a trial's build and compile), and glyphs (7,800
rendered Latin letters of 16x16, where an epoch costs several times more),
and glyphs32 (15,600 letters of 32x32: an epoch costs 0.4-0.6 s, about ten
times a trial's build, compile and first trace, so a trial stopped at its
first rung costs a seventh of a full one: the searches schedulers are for).
For each scheduler: the time until a trial
is within 1 point of FIFO's best validation accuracy (target <= 0.5x FIFO's),
read two ways: a trial that finished there, and any epoch's report there (what
a user watching the search sees; Ray's report timestamps, whole seconds); the
final best (target: within 1 point of FIFO's), the wall time, and the epochs
trained in all. Times count from the start of ``run_recipe``, in a process
where Ray is up.

Each workload runs the configurations in three orders: Tune's grid, which puts
the widest (and strongest) configurations last; 27 seeded draws of random
search from the same choices; and 27 seeded draws from scratch_mlp's own
search space (what a recipe that names no space searches: 1-3 hidden layers,
widths 32-256, lambda 1e-6..1e-2 and learning rates 1e-4..1e-2, log-uniform),
where poor configurations are as common as in a first search of a new problem.
Every scheduler gets the same draws (checked from the leaderboards). Where the
strong configurations come in a search's order decides much of how soon any
scheduler reaches them, so the random orders run with ``--seeds`` recipe
seeds (different draws and initial weights each), and the tables give the
median over seeds, each seed's ratio measured against FIFO's run of the same
seed.

    python benchmarks/schedulers.py [--workload digits|glyphs|glyphs32]
        [--order grid|random|own-space] [--seeds N]
        [--grace-period 2] [--reduction-factor 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import common

EPOCHS = 20
#: The order the 27 configurations run in: Tune's grid (width varies slowest,
#: so the widest, strongest configurations come last), or 27 draws of random
#: search from the same choices with the same seed (the same draws for every
#: scheduler; a draw can repeat a configuration).
#: Random search here draws all 27 (no trial at scratch_mlp's defaults first):
#: a strong configuration put first would reach FIFO's best as soon for every
#: scheduler, and the comparison is of how each treats the same draws.
ORDERS = {
    "grid": "grid",
    "random": "random\n              num_samples: 27\n              start_from_defaults: false",
    "own-space": "random\n              num_samples: 27\n              start_from_defaults: false",
}
NARROW = """
                  width: {choice: [32, 64, 128]}
                  learning_rate: {choice: [3.0e-4, 1.0e-3, 3.0e-3]}
                  hidden_layers: {choice: [1, 2, 3]}
                  lambda: 1.0e-6"""
#: Each workload's data section.
WORKLOADS = {
    "digits": '{source: "sklearn:digits"}',
    "glyphs": '{source: "glyphs:latin", image_size: [16, 16], options: {per_class: 150}}',
    "glyphs32": '{source: "glyphs:latin", image_size: [32, 32], options: {per_class: 300}}',
}


#: Each order's search space: the narrow grid of 27 above, or scratch_mlp's own search
#: space (what a recipe that names no space searches).
SPACES = {
    "grid": NARROW,
    "random": NARROW,
    "own-space": "{}",
}


def search(
    scheduler: str,
    folder: Path,
    workload: str,
    order: str,
    seed: int,
    grace_period: int = 2,
    reduction_factor: float = 3,
) -> tuple[float, list[dict], float, list[dict], list[tuple]]:
    started = common.time.time()
    seconds, outcome = common.timed(
        lambda: common.run_recipe_text(
            f"""
            name: schedulers-{scheduler}
            seed: {seed}
            data: {WORKLOADS[workload]}
            strategies:
              scratch_mlp:
                space: {SPACES[order]}
            search:
              algorithm: {ORDERS[order]}
              scheduler: {scheduler}
              max_epochs: {EPOCHS}
              grace_period: {grace_period}
              reduction_factor: {reduction_factor}
              batch_size: 32
              max_concurrent_trials: 2
            resources: {{cpus_per_trial: 1}}
            output: {folder}
            """,
            folder,
        )
    )
    finished = [
        json.loads(p.read_text()) for p in outcome.run_dir.glob("trials/scratch_mlp/*/result.json")
    ]
    epochs = int(outcome.leaderboard["epochs"].sum())
    import pandas as pd

    reports = [
        {"val_accuracy": float(row.val_accuracy), "t": float(row.timestamp) - started}
        for path in outcome.run_dir.glob("ray/scratch_mlp/*/progress.csv")
        for row in pd.read_csv(path).itertuples()
    ]
    columns = ["width", "learning_rate", "hidden_layers", "lambda"]
    configs = sorted(outcome.leaderboard[columns].itertuples(index=False, name=None))
    return (
        seconds,
        [dict(r, t=r["finished_at"] - started) for r in finished],
        epochs,
        reports,
        configs,
    )


SCHEDULERS = ("fifo", "asha", "hyperband")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), action="append")
    parser.add_argument("--order", choices=sorted(ORDERS), action="append")
    parser.add_argument(
        "--seeds",
        type=common.at_least(1),
        default=3,
        help="recipe seeds per random order (grid: one)",
    )
    parser.add_argument("--grace-period", type=int, default=2, help="ASHA's and Hyperband's")
    parser.add_argument("--reduction-factor", type=float, default=3, help="theirs too")
    common.results_option(parser)
    args = parser.parse_args()
    common.use_results(args.results)
    workloads = args.workload or list(WORKLOADS)
    orders = args.order or list(ORDERS)
    common.start_ray(num_cpus=2)
    sections = []
    try:
        for workload in workloads:
            for order in orders:
                seeds = range(1 if order == "grid" else args.seeds)
                runs: list[dict[str, tuple]] = []
                for seed in seeds:
                    runs.append({})
                    for scheduler in SCHEDULERS:
                        folder = common.workdir(f"sched-{workload}-{order}-{scheduler}")
                        runs[-1][scheduler] = search(
                            scheduler,
                            folder,
                            workload,
                            order,
                            seed,
                            args.grace_period,
                            args.reduction_factor,
                        )
                        shutil.rmtree(folder, ignore_errors=True)  # (found by QA: left behind)
                        print(
                            f"{workload} {order} seed {seed} {scheduler}: "
                            f"{runs[-1][scheduler][0]:.1f} s",
                            flush=True,
                        )
                sections.append(summarize(workload, order, runs))
    finally:
        common.stop_ray()
    # What ran, not the defaults (found by QA: seeds said of a grid order alone).
    seeded = [order for order in orders if order != "grid"]
    orders_said = " ".join(
        ["Grid order: one run (seed 0)." if "grid" in orders else ""]
        + [
            f"{' and '.join(seeded).capitalize()} order{'s' if len(seeded) > 1 else ''}: "
            f"{args.seeds} recipe seed{'s' if args.seeds > 1 else ''}, medians over them, "
            "each seed's ratio against FIFO's run of the same seed."
        ]
        * bool(seeded)
    ).strip()
    common.write_result(
        "schedulers",
        "Schedulers: ASHA and Hyperband against FIFO (27 configurations)",
        f"""
        Targets: time to within 1 point of FIFO's best <= 0.5x FIFO's; final best within
        1 point of FIFO's. Hyperband runs its brackets asynchronously (Ray's
        AsyncHyperBandScheduler with several brackets). Two concurrent trials on 2 CPUs,
        grace period {args.grace_period}, reduction factor {args.reduction_factor:g}, 20 epochs.
        {orders_said}
        """
        + "\n".join(sections),
    )


def _time_to(results: list[dict], target: float) -> float | None:
    hits = [r["t"] for r in results if r["val_accuracy"] >= target]
    return min(hits) if hits else None


def _ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


def _median_of(values: list[float | None], digits: str) -> str:
    """The median, or "never" where a seed never got there (counted as the slowest)."""
    if any(v is None for v in values):
        known = sorted(v for v in values if v is not None)
        missing = len(values) - len(known)
        if missing * 2 >= len(values):
            return "never"
        known += [float("inf")] * missing
        return format(common.median(known), digits)
    return format(common.median(values), digits)


def summarize(workload: str, order: str, runs: list[dict[str, tuple]]) -> str:
    """One workload's table (and the first seed's figure) for one order."""
    per_seed: dict[str, dict[str, list]] = {s: {} for s in SCHEDULERS}
    for seed_runs in runs:
        fifo_best = max(r["val_accuracy"] for r in seed_runs["fifo"][1])
        target = fifo_best - 0.01
        fifo_time = _time_to(seed_runs["fifo"][1], target)
        fifo_report = _time_to(seed_runs["fifo"][3], target)
        for scheduler, (seconds, results, epochs, reports, _) in seed_runs.items():
            hit = _time_to(results, target)
            seen = _time_to(reports, target)
            best = max(r["val_accuracy"] for r in results)
            values = {
                "wall": seconds,
                "hit": hit,
                "hit_ratio": _ratio(hit, fifo_time),
                "seen": seen,
                "seen_ratio": _ratio(seen, fifo_report),
                "best": best,
                "vs": (best - fifo_best) * 100,
                "epochs": epochs,
            }
            for key, value in values.items():
                per_seed[scheduler].setdefault(key, []).append(value)
    rows = []
    for scheduler, v in per_seed.items():
        rows.append(
            [
                scheduler,
                f"{common.median(v['wall']):.1f}",
                _median_of(v["hit"], ".1f"),
                _median_of(v["hit_ratio"], ".2f") + "x",
                _median_of(v["seen"], ".0f"),
                _median_of(v["seen_ratio"], ".2f") + "x",
                ", ".join("never" if r is None else f"{r:.2f}" for r in v["seen_ratio"]),
                f"{common.median(v['best']):.4f}",
                f"{min(v['vs']):+.2f}",
                f"{common.median(v['epochs']):.0f}",
            ]
        )
    first = runs[0]
    fifo_best = max(r["val_accuracy"] for r in first["fifo"][1])
    fig, ax, path = common.figure(
        f"schedulers_{workload}" + ("" if order == "grid" else f"_{order.replace('-', '_')}")
    )
    for scheduler, (_, results, _, _, _) in first.items():
        ordered = sorted(results, key=lambda r: r["t"])
        best, xs, ys = 0.0, [], []
        for r in ordered:
            best = max(best, r["val_accuracy"])
            xs.append(r["t"])
            ys.append(best)
        ax.step(xs, ys, where="post", label=scheduler)
    ax.axhline(fifo_best - 0.01, color="grey", linestyle=":", label="FIFO best - 1 pt")
    ax.set_xlabel("seconds since the search started")
    ax.set_ylabel("best val_accuracy of finished trials")
    ax.set_title(f"{workload}, {order} order" + ("" if len(runs) == 1 else ", seed 0"))
    ax.legend()
    common.save_figure(fig, path)
    header = [
        "scheduler", "wall s", "s to a finished trial within 1 pt", "ratio to FIFO",
        "s to a report within 1 pt", "ratio to FIFO", "each seed's report ratio",
        "best val_accuracy", "worst seed vs FIFO (points)", "epochs trained",
    ]  # fmt: skip
    lines = []
    for seed, seed_runs in enumerate(runs):
        configs = {scheduler: run[4] for scheduler, run in seed_runs.items()}
        same = all(c == configs["fifo"] for c in configs.values())
        best = max(r["val_accuracy"] for r in seed_runs["fifo"][1])
        lines.append(
            f"seed {seed}: FIFO's best {best:.4f} (within 1 point: >= {best - 0.01:.4f}); "
            f"{len(configs['fifo'])} configurations, {len(set(configs['fifo']))} distinct, "
            f"the same for every scheduler: {'yes' if same else '**no**'}."
        )
    seeds = "one run" if len(runs) == 1 else f"medians over {len(runs)} seeds"
    return f"""
    ## {workload}, {order} order ({seeds})

    {"<br>".join(lines)}

    {common.table(header, rows)}
    """


if __name__ == "__main__":
    main()
