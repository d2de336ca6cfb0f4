"""What a reused worker keeps of each trial it runs.

A Ray worker (and the process of a keras_tuner search) runs trial after trial
through ``orchestrator.trial.run_trial``, which ends each by clearing Keras'
session and collecting garbage. TensorFlow registers a custom gradient in a
global table each time a training step is traced, and never removes it; it
holds the traced graph, and the graph the model's and the optimizer's
variables. Since this benchmark was written a trial drops the ones it
registered (``orchestrator.models.forget_traced_gradients``).

Each child process runs ``--trials`` trials of one scratch_mlp configuration
on digits, one epoch each, in a loop as a reused worker does, and records its
resident memory after each trial, the objects the garbage collector tracks and
the trial's wall time. The two variants, "keeps them" (the function replaced by
a no-op, as before) and "drops them", alternate, each in a fresh process. Two
models: a large MLP (3 x 2048, 8.5 million weights) where the variables show in
memory, and scratch_mlp's defaults (2 x 128), where the objects do.

    python benchmarks/trial_memory.py [--repeats 3] [--trials 12]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import common

MODELS = {
    "3 x 2048 (8.5 M weights)": {"hidden_layers": 3, "width": 2048},
    "2 x 128 (25 k weights)": {"hidden_layers": 2, "width": 128},
}
VARIANTS = {"keeps": "keeps them (before)", "drops": "drops them (now)"}


def child(variant: str, model: str, trials: int) -> dict[str, list[float]]:
    from orchestrator import models
    from orchestrator.builtin_plugins.scratch_mlp import ScratchMLP
    from orchestrator.data import prepare_dataset
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.recipe import DataSpec
    from orchestrator.trial import TrialSpec

    if variant == "keeps":
        models.forget_traced_gradients = lambda kept: 0
    data = prepare_dataset(
        DataSpec(source="sklearn:digits"),
        get_plugin_manager(autoload=False).data_sources,
        seed=0,
        base_dir=Path.cwd(),
    )
    spec = TrialSpec(
        strategy=ScratchMLP(),
        base=None,
        max_epochs=1,
        batch_size=32,
        seed=0,
        metric="val_accuracy",
        run_dir=Path(tempfile.mkdtemp(prefix="graftune-trial-memory-")),
    )
    try:
        return _trials(spec, data, {**MODELS[model], "learning_rate": 1e-3, "lambda": 1e-6}, trials)
    finally:
        shutil.rmtree(spec.run_dir, ignore_errors=True)


def _trials(spec: Any, data: Any, config: dict[str, Any], trials: int) -> dict[str, list[float]]:
    import gc

    import psutil

    from orchestrator.trial import run_trial

    process = psutil.Process()
    rss, objects, seconds = [], [], []
    for number in range(trials):
        started = time.perf_counter()
        result = run_trial(config, spec, data, trial_id=f"t{number}", report=lambda m: None)
        seconds.append(time.perf_counter() - started)
        assert result.status == "ok", result
        rss.append(process.memory_info().rss / 2**20)
        objects.append(len(gc.get_objects()))
    return {"rss": rss, "objects": objects, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=common.at_least(1), default=3)
    parser.add_argument("--trials", type=common.at_least(3), default=12)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    common.results_option(parser)
    args = parser.parse_args()
    common.use_results(args.results)
    if args.child:
        variant, model, trials = args.child
        common.print_child_result(child(variant, model, int(trials)))
        return
    results: dict[tuple[str, str], list[dict[str, list[float]]]] = {}
    for repeat in range(args.repeats):
        for model in MODELS:
            for variant in VARIANTS:
                measured = common.child_result(__file__, variant, model, str(args.trials))
                results.setdefault((model, variant), []).append(measured)
                print(repeat, model, variant, {k: v[-1] for k, v in measured.items()}, flush=True)
    rows = []
    for model in MODELS:
        for variant, label in VARIANTS.items():
            got = results[(model, variant)]
            # Growth from the second trial to the last (the first also pays one-time costs).
            grow = [(r["rss"][-1] - r["rss"][1]) / (len(r["rss"]) - 2) for r in got]
            objects = [(r["objects"][-1] - r["objects"][1]) / (len(r["objects"]) - 2) for r in got]
            later = [common.median(r["seconds"][1:]) for r in got]
            rows.append(
                [
                    model,
                    label,
                    f"{common.median([r['rss'][1] for r in got]):.0f}",
                    f"{common.median([r['rss'][-1] for r in got]):.0f}",
                    f"{common.median(grow):+.1f}",
                    f"{common.median(objects):+,.0f}",
                    f"{common.median(later):.2f}",
                ]
            )
    body = (
        f"{args.trials} trials of one configuration in one process (scratch_mlp on digits, one "
        f"epoch each, through `run_trial` as a reused Ray worker runs them), {args.repeats} "
        f"repeat{'s' if args.repeats > 1 else ''}, medians; each in a fresh process, the variants alternating. Growth is "
        "from the second trial to the last, per trial.\n\n"
        + common.table(
            [
                "model",
                "the trials' custom gradients",
                "RSS after trial 2 (MB)",
                f"RSS after trial {args.trials} (MB)",
                "MB per trial",
                "tracked objects per trial",
                "trial s (median)",
            ],
            rows,
        )
    )
    common.write_result("trial_memory", "What a reused worker keeps of each trial", body)


if __name__ == "__main__":
    main()
