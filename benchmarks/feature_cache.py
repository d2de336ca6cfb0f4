"""The frozen-feature cache: the same searches with the cache on and off, side by side.

For feature_extraction and for fine_tune: 8 trials x 10 epochs, two at a time,
once with the cache (emptied first, so computing the features is counted) and
once without. Two bases:

- ``quickstart``: the quickstart's small CNN pretrained on glyphs, on digits
  with 40 labels per class;
- ``application``: Keras' ResNet50 (``weights=None``: the timing does not
  depend on the weights) at 64x64x3, digits with 60 labels per class resized
  and made RGB by the adapter. ``fine_tune`` searches the cuts of its last
  stage (conv5), where fine-tuning a ResNet usually starts.

Prints wall times, the speed-up (off / on) and the best accuracy of each.
Targets: >= 3x on the quickstart base, >= 10x on the application base, best
accuracy within 0.5 points.

    python benchmarks/feature_cache.py [--bases quickstart,application]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import common

BASES = {
    "quickstart": """
base:
  pretrain:
    data: {source: "glyphs:latin", options: {per_class: 120}}
    epochs: 15
    width: 16
""",
    "application": """
base:
  application: ResNet50
  weights: none
  input_shape: [64, 64, 3]
""",
}
SPACES = {
    "feature_extraction": "{}",
    "fine_tune": "{space: {frozen_layers: {int: [%s, all]}, two_phase: false}}",
}
# fine_tune trains the top of the base; on ResNet50 cut 15 is conv5_block1_out.
LOWEST_CUT = {"quickstart": 4, "application": 15}
LABELS_PER_CLASS = {"quickstart": 40, "application": 60}


def run(
    base: str, strategy: str, cache: bool, folder: Path, samples: int = 8, epochs: int = 10
) -> tuple[float, float]:
    space = SPACES[strategy] % LOWEST_CUT[base] if "%s" in SPACES[strategy] else SPACES[strategy]
    text = f"""
name: cache-{base}-{strategy}-{"on" if cache else "off"}
seed: 0
data: {{source: "sklearn:digits", split: {{val: 0.2, test: 0.2}}, labels_per_class: {LABELS_PER_CLASS[base]}}}
{BASES[base]}
strategies:
  {strategy}: {space}
search: {{num_samples: {samples}, max_epochs: {epochs}, batch_size: 32, max_concurrent_trials: 2, scheduler: fifo}}
resources: {{cpus_per_trial: 1}}
cache: {"true" if cache else "false"}
output: {folder}
"""
    seconds, outcome = common.timed(lambda: common.run_recipe_text(text, folder))
    return seconds, float(outcome.leaderboard["val_accuracy"].max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", default="quickstart,application")
    args = parser.parse_args()
    folder = common.workdir("cache")
    os.environ["GRAFTUNE_CACHE_DIR"] = str(folder / "cache")
    from orchestrator.feature_cache import clear_cache

    common.start_ray(num_cpus=2)
    rows = []
    try:
        for base in args.bases.split(","):
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
                        strategy,
                        f"{off[0]:.1f}",
                        f"{on[0]:.1f}",
                        f"{off[0] / on[0]:.1f}x",
                        f"{off[1]:.4f}",
                        f"{on[1]:.4f}",
                        f"{(on[1] - off[1]) * 100:+.2f}",
                    ]
                )
    finally:
        common.stop_ray()
        shutil.rmtree(folder, ignore_errors=True)
    common.write_result(
        "feature_cache",
        "The frozen-feature cache: the same search with the cache off and on",
        f"""
        8 trials x 10 epochs per search (FIFO: every trial runs every epoch), two concurrent
        trials on 2 CPUs. Digits with 40 labels per class (400 training images, 360
        validation) on the quickstart base, 60 (600 training images) on ResNet50 at 64x64.
        "on" starts from an empty feature cache, so computing the features is part of its
        time. One run each.

        {common.table(["base", "strategy", "off s", "on s", "speed-up", "best val off", "best val on", "difference (points)"], rows)}
        """,
    )
    fig, ax, path = common.figure("feature_cache")
    labels = [f"{r[0]}\n{r[1]}" for r in rows]
    ax.bar(labels, [float(r[4].rstrip("x")) for r in rows], color="#228833")
    ax.axhline(1, color="grey", linestyle=":")
    ax.set_ylabel("speed-up (wall time off / on)")
    common.save_figure(fig, path)


if __name__ == "__main__":
    main()
