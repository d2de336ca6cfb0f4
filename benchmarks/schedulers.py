"""ASHA and Hyperband against FIFO on the same 27 configurations and seed.

A grid of 27 scratch_mlp configurations (width {32, 64, 128} x learning rate
{3e-4, 1e-3, 3e-3} x hidden layers {1, 2, 3}), up to 20 epochs, two concurrent
trials, on two workloads: scikit-learn's digits (1,437 training images of
8x8, an epoch costs less than a trial's build and compile), and glyphs (7,800
rendered Latin letters of 16x16, where an epoch costs several times more:
the searches schedulers are for). For each scheduler: the time until a trial
is within 1 point of FIFO's best validation accuracy (target <= 0.5x FIFO's),
read two ways: a trial that finished there, and any epoch's report there (what
a user watching the search sees; Ray's report timestamps, whole seconds); the
final best (target: within 1 point of FIFO's), the wall time, and the epochs
trained in all. Times count from the start of ``run_recipe``, in a process
where Ray is up.

Each workload runs the configurations in two orders: Tune's grid, which puts
the widest (and strongest) configurations last, and 27 seeded draws of random
search from the same choices, the same draws for every scheduler (checked
from the leaderboards). Where the strong configurations come in a search's
order decides much of how soon any scheduler reaches them.

    python benchmarks/schedulers.py [--workload digits|glyphs] [--order grid|random]
"""

from __future__ import annotations

import argparse
import json
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
}


#: Each order's search space: the narrow grid of 27 above, or scratch_mlp's own search
#: space (what a recipe that names no space searches).
SPACES = {
    "grid": NARROW,
    "random": NARROW,
    "own-space": "{}",
}


def search(
    scheduler: str, folder: Path, workload: str, order: str
) -> tuple[float, list[dict], float, list[dict], list[tuple]]:
    started = common.time.time()
    seconds, outcome = common.timed(
        lambda: common.run_recipe_text(
            f"""
            name: schedulers-{scheduler}
            seed: 0
            data: {WORKLOADS[workload]}
            strategies:
              scratch_mlp:
                space: {SPACES[order]}
            search:
              algorithm: {ORDERS[order]}
              scheduler: {scheduler}
              max_epochs: {EPOCHS}
              grace_period: 2
              reduction_factor: 3
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), action="append")
    parser.add_argument("--order", choices=sorted(ORDERS), action="append")
    args = parser.parse_args()
    workloads = args.workload or list(WORKLOADS)
    orders = args.order or list(ORDERS)
    common.start_ray(num_cpus=2)
    sections = []
    try:
        for workload in workloads:
            for order in orders:
                runs = {}
                for scheduler in ("fifo", "asha", "hyperband"):
                    folder = common.workdir(f"sched-{workload}-{order}-{scheduler}")
                    runs[scheduler] = search(scheduler, folder, workload, order)
                    print(f"{workload} {order} {scheduler}: {runs[scheduler][0]:.1f} s")
                sections.append(summarize(workload, order, runs))
    finally:
        common.stop_ray()
    common.write_result(
        "schedulers",
        "Schedulers: ASHA and Hyperband against FIFO (27 configurations)",
        """
        Targets: time to within 1 point of FIFO's best <= 0.5x FIFO's; final best within
        1 point of FIFO's. Hyperband runs its brackets asynchronously (Ray's
        AsyncHyperBandScheduler with several brackets). One run each, same seed, two
        concurrent trials on 2 CPUs, grace period 2, reduction factor 3, 20 epochs.
        """
        + "\n".join(sections),
    )


def summarize(workload: str, order: str, runs: dict[str, tuple]) -> str:
    """One workload's table (and figure) for one order of the configurations."""
    fifo_best = max(r["val_accuracy"] for r in runs["fifo"][1])
    target = fifo_best - 0.01

    def time_to_target(results: list[dict]) -> float | None:
        hits = [r["t"] for r in results if r["val_accuracy"] >= target]
        return min(hits) if hits else None

    fifo_time = time_to_target(runs["fifo"][1])
    fifo_report = time_to_target(runs["fifo"][3])
    rows = []
    for scheduler, (seconds, results, epochs, reports, _) in runs.items():
        hit = time_to_target(results)
        seen = time_to_target(reports)
        best = max(r["val_accuracy"] for r in results)
        rows.append(
            [
                scheduler,
                f"{seconds:.1f}",
                "never" if hit is None else f"{hit:.1f}",
                "-" if hit is None or not fifo_time else f"{hit / fifo_time:.2f}x",
                "never" if seen is None else f"{seen:.0f}",
                "-" if seen is None or not fifo_report else f"{seen / fifo_report:.2f}x",
                f"{best:.4f}",
                f"{(best - fifo_best) * 100:+.2f}",
                epochs,
            ]
        )
    fig, ax, path = common.figure(
        f"schedulers_{workload}" + ("" if order == "grid" else f"_{order}")
    )
    for scheduler, (_, results, _, _, _) in runs.items():
        ordered = sorted(results, key=lambda r: r["t"])
        best, xs, ys = 0.0, [], []
        for r in ordered:
            best = max(best, r["val_accuracy"])
            xs.append(r["t"])
            ys.append(best)
        ax.step(xs, ys, where="post", label=scheduler)
    ax.axhline(target, color="grey", linestyle=":", label="FIFO best - 1 pt")
    ax.set_xlabel("seconds since the search started")
    ax.set_ylabel("best val_accuracy of finished trials")
    ax.set_title(f"{workload}, {order} order")
    ax.legend()
    common.save_figure(fig, path)
    header = [
        "scheduler", "wall s", "s to a finished trial within 1 pt", "ratio to FIFO",
        "s to a report within 1 pt", "ratio to FIFO", "best val_accuracy",
        "vs FIFO (points)", "epochs trained",
    ]  # fmt: skip
    configs = {scheduler: run[4] for scheduler, run in runs.items()}
    same = all(c == configs["fifo"] for c in configs.values())
    distinct = len(set(configs["fifo"]))
    return f"""
    ## {workload}, {order} order

    FIFO's best validation accuracy: {fifo_best:.4f}; "within 1 point" means >= {target:.4f}.
    The same {len(configs["fifo"])} configurations ({distinct} distinct) for every scheduler:
    {"yes" if same else "**no**"}.

    {common.table(header, rows)}
    """


if __name__ == "__main__":
    main()
