"""The frozen-feature cache: the same searches with the cache on and off, side by side.

For feature_extraction and for fine_tune: 8 trials x 10 epochs, two at a time,
once with the cache (emptied first, so computing the features is counted) and
once without. Three workloads:

- ``quickstart``: the quickstart's small CNN pretrained on glyphs, on digits
  with 40 labels per class (400 training images);
- ``quickstart-glyphs``: the same base on 20,000 rendered digit glyphs (12,000
  training images), where the base's forward pass is a real part of an epoch;
- ``application``: Keras' ResNet50 (``weights=None``: the timing does not
  depend on the weights) at 64x64x3, digits with 60 labels per class resized
  and made RGB by the adapter. ``fine_tune`` searches the cuts of its last
  stage (conv5), where fine-tuning a ResNet usually starts.

Prints wall times, the speed-up (off / on) and the best accuracy of each.
Targets: >= 3x on the quickstart base, >= 10x on the application base, best
accuracy within 0.5 points.

    python benchmarks/feature_cache.py [--workloads quickstart,quickstart-glyphs,application]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import common

QUICKSTART_BASE = """
base:
  pretrain:
    data: {source: "glyphs:latin", options: {per_class: 120}}
    epochs: 15
    width: 16
"""
APPLICATION_BASE = """
base:
  application: ResNet50
  weights: none
  input_shape: [64, 64, 3]
"""
DIGITS = 'data: {source: "sklearn:digits", split: {val: 0.2, test: 0.2}, labels_per_class: %d}'
GLYPH_DIGITS = (
    'data: {source: "glyphs:digits", options: {per_class: 2000}, split: {val: 0.2, test: 0.2}}'
)
#: name -> (base, data, the lowest cut fine_tune searches, what the data is).
WORKLOADS = {
    "quickstart": (QUICKSTART_BASE, DIGITS % 40, 4, "digits, 40 labels per class"),
    "quickstart-glyphs": (QUICKSTART_BASE, GLYPH_DIGITS, 4, "20,000 digit glyphs"),
    # fine_tune trains the top of the base; on ResNet50 cut 15 is conv5_block1_out.
    "application": (APPLICATION_BASE, DIGITS % 60, 15, "digits, 60 labels per class"),
}
SPACES = {
    "feature_extraction": "{}",
    "fine_tune": "{space: {frozen_layers: {int: [%s, all]}, two_phase: false}}",
}


def run(
    workload: str, strategy: str, cache: bool, folder: Path, samples: int = 8, epochs: int = 10
) -> tuple[float, float, float]:
    base, data, lowest_cut, _ = WORKLOADS[workload]
    space = SPACES[strategy] % lowest_cut if "%s" in SPACES[strategy] else SPACES[strategy]
    text = f"""
name: cache-{workload}-{strategy}-{"on" if cache else "off"}
seed: 0
{data}
{base}
strategies:
  {strategy}: {space}
search: {{num_samples: {samples}, max_epochs: {epochs}, batch_size: 32, max_concurrent_trials: 2, scheduler: fifo}}
resources: {{cpus_per_trial: 1}}
cache: {"true" if cache else "false"}
output: {folder}
"""
    seconds, outcome = common.timed(lambda: common.run_recipe_text(text, folder))
    board = outcome.leaderboard
    return seconds, float(board["val_accuracy"].max()), float(board["peak_memory_mb"].max())


#: Each workload in the words of the results' text (found by QA: the text named all
#: three above a table of the one that ran).
DESCRIBED = {
    "quickstart": "the quickstart base on digits with 40 labels per class (400 training "
    "images, 360 validation)",
    "quickstart-glyphs": "the quickstart base on 20,000 rendered digit glyphs (12,000 "
    "training images, 4,000 validation)",
    "application": "ResNet50 at 64x64 on digits with 60 labels per class (600 training images)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workloads", type=common.names_of(list(WORKLOADS)), default=list(WORKLOADS)
    )
    common.results_option(parser)
    args = parser.parse_args()
    common.use_results(args.results)
    folder = common.workdir("cache")
    os.environ["GRAFTUNE_CACHE_DIR"] = str(folder / "cache")
    from orchestrator.feature_cache import clear_cache

    common.start_ray(num_cpus=2)
    rows = []
    try:
        for base in args.workloads:
            # Prepare (and cache) the base once, outside the timings: one short trial.
            run(base, "feature_extraction", False, folder / "warmup", samples=1, epochs=1)
            for strategy in SPACES:
                clear_cache(("features",))
                on = run(base, strategy, True, folder)
                off = run(base, strategy, False, folder)
                print(base, strategy, "on", on, "off", off)
                rows.append(
                    [
                        base,
                        WORKLOADS[base][3],
                        strategy,
                        f"{off[0]:.1f}",
                        f"{on[0]:.1f}",
                        f"{off[0] / on[0]:.1f}x",
                        f"{off[1]:.4f}",
                        f"{on[1]:.4f}",
                        f"{(on[1] - off[1]) * 100:+.2f}",
                        f"{off[2]:.0f}",
                        f"{on[2]:.0f}",
                    ]
                )
    finally:
        common.stop_ray()
        shutil.rmtree(folder, ignore_errors=True)
    described = "; ".join(DESCRIBED[w] for w in args.workloads)
    common.write_result(
        "feature_cache",
        "The frozen-feature cache: the same search with the cache off and on",
        f"""
        8 trials x 10 epochs per search (FIFO: every trial runs every epoch), two concurrent
        trials on 2 CPUs. {described[:1].upper() + described[1:]}. "on" starts from an empty feature cache, so computing the features is part of its
        time. One run each. Peak MB: the largest of the trials' peak memory (a worker's
        resident memory while it ran the trial).

        {common.table(["workload", "data", "strategy", "off s", "on s", "speed-up", "best val off", "best val on", "difference (points)", "peak MB off", "peak MB on"], rows)}
        """,
    )
    fig, ax, path = common.figure("feature_cache")
    labels = [f"{r[0]}\n{r[2]}" for r in rows]
    ax.bar(labels, [float(r[5].rstrip("x")) for r in rows], color="#228833")
    ax.tick_params(axis="x", labelsize=7, labelrotation=20)
    ax.axhline(1, color="grey", linestyle=":")
    ax.set_ylabel("speed-up (wall time off / on)")
    common.save_figure(fig, path)


if __name__ == "__main__":
    main()
