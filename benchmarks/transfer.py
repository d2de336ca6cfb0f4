"""Transfer from rendered glyphs to real handwritten digits: what works, and when.

A small CNN is pretrained on 52 Latin letters rendered from matplotlib's fonts
(``glyphs:latin``, 8x8) and transferred to scikit-learn's handwritten digits
with 3, 10 or 50 labels per class, for 3 seeds. Three experiments:

1. strategies x labels per class: each cell the best of a small search
   (selected on validation accuracy), mean ± std of its test accuracy;
2. fine_tune's freezing-depth profile: test accuracy against ``frozen_layers``;
3. L2 against L2-SP for fine_tune with the whole base trainable.

    python benchmarks/transfer.py [--seeds 3] [--samples 6] [--experiments grid,profile,l2sp]

Each experiment writes its own table: results/transfer.md, transfer_profile.md,
transfer_l2sp.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import common

LABELS = (3, 10, 50)
STRATEGIES = ("scratch_mlp", "feature_extraction", "fine_tune")

BASE = """
base:
  pretrain:
    data: {source: "glyphs:latin", options: {per_class: 120}}
    epochs: 15
    width: 16
"""


def recipe(name: str, seed: int, labels: int, strategies: str, search: str, folder: Path) -> str:
    return f"""
name: {name}
seed: {seed}
data: {{source: "sklearn:digits", split: {{val: 0.25, test: 0.35}}, labels_per_class: {labels}}}
{BASE}
strategies:
{strategies}
search: {search}
resources: {{cpus_per_trial: 1}}
output: {folder}
"""


def best_test(frame, strategy: str) -> float:
    rows = frame[(frame["strategy"] == strategy) & (frame["status"] == "ok")]
    return float(rows.sort_values("val_accuracy", ascending=False).iloc[0]["test_accuracy"])


def experiment_grid(args: argparse.Namespace, folder: Path) -> None:
    """Strategies x labels per class, each cell the best of a small search."""
    cells: dict[tuple[str, int], list[float]] = {}
    search = (
        f"{{num_samples: {args.samples}, max_epochs: 30, scheduler: asha, grace_period: 6,"
        " batch_size: 16}"
    )
    for labels in LABELS:
        for seed in range(args.seeds):
            strategies = "\n".join(f"  {s}: {{}}" for s in STRATEGIES)
            text = recipe(f"transfer-{labels}", seed, labels, strategies, search, folder)
            frame = common.run_recipe_text(text, folder).leaderboard
            for strategy in STRATEGIES:
                cells.setdefault((strategy, labels), []).append(best_test(frame, strategy))
            print(labels, seed, {s: round(cells[(s, labels)][-1], 3) for s in STRATEGIES})
    rows = [[s, *(common.mean_std(cells[(s, n)]) for n in LABELS)] for s in STRATEGIES]
    common.write_result(
        "transfer",
        "Transfer: glyphs -> handwritten digits, strategies x labels per class",
        f"""
        Test accuracy, mean ± std over {args.seeds} seeds (the seed changes the split, the
        few-shot sample, the pretrained base and the search). Base: a small CNN pretrained in
        the run on 52 rendered Latin letters (8x8). Each cell is the trial with the best
        validation accuracy of a {args.samples}-trial ASHA search (30 epochs at most).

        {common.table(["strategy", *(f"{n} labels/class" for n in LABELS)], rows)}
        """,
    )
    fig, ax, path = common.figure("transfer")
    width = 0.25
    for i, strategy in enumerate(STRATEGIES):
        means = [statistics.mean(cells[(strategy, n)]) for n in LABELS]
        errs = [statistics.pstdev(cells[(strategy, n)]) for n in LABELS]
        ax.bar([x + i * width for x in range(len(LABELS))], means, width, yerr=errs, label=strategy)
    ax.set_xticks([x + width for x in range(len(LABELS))], [f"{n} labels/class" for n in LABELS])
    ax.set_ylabel("test accuracy")
    ax.legend()
    common.save_figure(fig, path)


def experiment_profile(args: argparse.Namespace, folder: Path) -> None:
    """fine_tune's test accuracy against frozen_layers, everything else fixed."""
    profile: dict[int, list[float]] = {}
    fixed = "head_width: 128, lambda: 1.0e-4, learning_rate: 1.0e-3, two_phase: false"
    for seed in range(args.seeds):
        strategies = f"  fine_tune: {{space: {{frozen_layers: {{int: [0, all]}}, regularizer: l2, {fixed}}}}}"
        text = recipe(
            "profile",
            seed,
            10,
            strategies,
            "{algorithm: grid, max_epochs: 30, batch_size: 16}",
            folder,
        )
        frame = common.run_recipe_text(text, folder).leaderboard
        for _, row in frame[frame["status"] == "ok"].iterrows():
            profile.setdefault(int(row["frozen_layers"]), []).append(float(row["test_accuracy"]))
    rows = [[k, common.mean_std(v)] for k, v in sorted(profile.items())]
    common.write_result(
        "transfer_profile",
        "Transfer: fine_tune's freezing-depth profile (glyphs -> digits, 10 labels/class)",
        f"""
        Test accuracy, mean ± std over {args.seeds} seeds, against frozen_layers (the base's
        cut points frozen from the input: 0 trains the whole base, the largest value only the
        head). Head 128, λ 1e-4 (L2), learning rate 1e-3, 30 epochs, no two-phase training.

        {common.table(["frozen_layers", "test accuracy"], rows)}
        """,
    )
    fig, ax, path = common.figure("transfer_profile")
    keys = sorted(profile)
    ax.errorbar(
        keys,
        [statistics.mean(profile[k]) for k in keys],
        yerr=[statistics.pstdev(profile[k]) for k in keys],
        marker="o",
    )
    ax.set_xticks(keys)
    ax.set_xlabel("frozen_layers (cut points frozen from the input)")
    ax.set_ylabel("test accuracy")
    common.save_figure(fig, path)


def experiment_l2sp(args: argparse.Namespace, folder: Path) -> None:
    """L2 against L2-SP for fine_tune with the whole base trainable."""
    reg: dict[tuple[str, int], list[float]] = {}
    for labels in (3, 10):
        for seed in range(args.seeds):
            strategies = (
                "  fine_tune: {space: {frozen_layers: 0, regularizer: {choice: [l2, l2sp]},"
                " lambda: {choice: [1.0e-3, 1.0e-2, 1.0e-1]}, head_width: 128,"
                " learning_rate: 1.0e-3, two_phase: false}}"
            )
            text = recipe(
                "l2sp", seed, labels, strategies,
                "{algorithm: grid, max_epochs: 30, batch_size: 16}", folder,
            )  # fmt: skip
            frame = common.run_recipe_text(text, folder).leaderboard
            for form in ("l2", "l2sp"):
                rows = frame[(frame["regularizer"] == form) & (frame["status"] == "ok")]
                best = rows.sort_values("val_accuracy", ascending=False).iloc[0]
                reg.setdefault((form, labels), []).append(float(best["test_accuracy"]))
    rows = [[form, *(common.mean_std(reg[(form, n)]) for n in (3, 10))] for form in ("l2", "l2sp")]
    common.write_result(
        "transfer_l2sp",
        "Transfer: L2 against L2-SP (fine_tune, whole base trainable, glyphs -> digits)",
        f"""
        Test accuracy, mean ± std over {args.seeds} seeds, of the best λ in {{1e-3, 1e-2, 1e-1}}
        on validation accuracy, per form. frozen_layers 0, head 128, learning rate 1e-3.

        {common.table(["regularizer", "3 labels/class", "10 labels/class"], rows)}
        """,
    )


EXPERIMENTS = {"grid": experiment_grid, "profile": experiment_profile, "l2sp": experiment_l2sp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=common.at_least(1), default=3)
    parser.add_argument("--samples", type=common.at_least(1), default=6)
    parser.add_argument(
        "--experiments", type=common.names_of(list(EXPERIMENTS)), default=list(EXPERIMENTS)
    )
    common.results_option(parser)
    args = parser.parse_args()
    common.use_results(args.results)
    folder = common.workdir("transfer")
    common.start_ray(num_cpus=2)
    try:
        for name in args.experiments:
            EXPERIMENTS[name](args, folder)
    finally:
        common.stop_ray()
        shutil.rmtree(folder, ignore_errors=True)  # (found by QA: left in $TMPDIR)


if __name__ == "__main__":
    main()
