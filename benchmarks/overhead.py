"""Per-trial overhead: 12 small configurations, four ways, side by side.

The same 12 configurations on scikit-learn's digits — a two-hidden-layer MLP,
widths {32, 64, 128, 256} x learning rates {1e-3, 3e-3, 1e-2}, 10 epochs each —
run by (a) a bare Keras loop in one process, (b) keras-tuner's GridSearch,
(c) graftune with one trial at a time (each trial gets both CPUs), (d) graftune
with two concurrent trials (one CPU each). Each variant runs in a fresh
process, timed from its start to its end, as a user would run it: (a) and (b)
pay their TensorFlow import, (c) and (d) are ``graftune run RECIPE --quiet``,
with embedded Ray's start-up and shutdown, the leaderboard and the report.
An extra row, (a2), is the bare loop compiled with graftune's 32 steps per
compiled call, to show how much of graftune's speed comes from that alone.
Prints wall times and ratios to (a); medians over --repeats, the variants
interleaved so machine noise hits each alike.

    python benchmarks/overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import common

WIDTHS = (32, 64, 128, 256)
RATES = (1e-3, 3e-3, 1e-2)
EPOCHS = 10
BATCH = 32


def dataset():
    from orchestrator.data import prepare_dataset
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.recipe import DataSpec

    spec = DataSpec(source="sklearn:digits")
    return prepare_dataset(spec, get_plugin_manager().data_sources, seed=0, base_dir=".")


def mlp(width: int, rate: float, task, steps_per_execution: int = 1):
    import keras

    inputs = keras.Input(task.input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(width, activation="relu")(x)
    x = keras.layers.Dense(width, activation="relu")(x)
    outputs = keras.layers.Dense(task.n_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def bare_loop(data, steps_per_execution: int = 1) -> float:
    import keras

    best = 0.0
    for width in WIDTHS:
        for rate in RATES:
            keras.utils.set_random_seed(0)
            model = mlp(width, rate, data.task, steps_per_execution)
            history = model.fit(
                data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
                epochs=EPOCHS, batch_size=BATCH, verbose=0,
            )  # fmt: skip
            best = max(best, history.history["val_accuracy"][-1])
            keras.backend.clear_session()
    return best


def keras_tuner_grid(data, folder: Path) -> float:
    import keras_tuner as kt

    def build(hp):
        return mlp(hp.Choice("width", list(WIDTHS)), hp.Choice("rate", list(RATES)), data.task)

    tuner = kt.GridSearch(
        build, objective="val_accuracy", max_trials=len(WIDTHS) * len(RATES), seed=0,
        directory=str(folder), project_name="kt", overwrite=True,
    )  # fmt: skip
    tuner.search(
        data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
        epochs=EPOCHS, batch_size=BATCH, verbose=0,
    )  # fmt: skip
    return tuner.oracle.get_best_trials(1)[0].score


RECIPE = """
name: overhead
seed: 0
data: {{source: "sklearn:digits"}}
strategies:
  scratch_mlp:
    space:
      hidden_layers: 2
      width: {{choice: {widths}}}
      learning_rate: {{choice: {rates}}}
      lambda: 1.0e-9
search: {{algorithm: grid, max_epochs: {epochs}, batch_size: {batch},
          max_concurrent_trials: {concurrent}}}
resources: {{cpus_per_trial: {cpus}, num_cpus: 2}}
output: {folder}
"""


def graftune_command(folder: Path, concurrent: int) -> list[str]:
    """``graftune run`` of the 12 configurations, ``concurrent`` trials at a time."""
    recipe = folder / "recipe.yaml"
    recipe.write_text(
        RECIPE.format(
            widths=list(WIDTHS), rates=list(RATES), epochs=EPOCHS, batch=BATCH,
            concurrent=concurrent, cpus=2 // concurrent, folder=folder / "runs",
        )
    )  # fmt: skip
    return [str(Path(sys.executable).with_name("graftune")), "run", str(recipe), "--quiet"]


def graftune_best(folder: Path) -> float:
    import pandas as pd

    (run_dir,) = (folder / "runs").iterdir()
    frame = pd.read_csv(run_dir / "leaderboard.csv")
    assert len(frame) == len(WIDTHS) * len(RATES), frame
    return float(frame["val_accuracy"].max())


def in_process(variant: str, folder: Path) -> None:
    """Run (a), (a2) or (b) in this (fresh) process; write its best score."""
    data = dataset()
    if variant == "a":
        best = bare_loop(data)
    elif variant == "a2":
        best = bare_loop(data, steps_per_execution=32)
    else:
        best = keras_tuner_grid(data, folder)
    (folder / "best.txt").write_text(f"{best}")


def fresh_process(variant: str, folder: Path) -> tuple[float, float]:
    """Wall seconds of one variant in a process of its own, and its best val_accuracy."""
    if variant in ("c", "d"):
        command = graftune_command(folder, 1 if variant == "c" else 2)
    else:
        command = [sys.executable, __file__, "--variant", variant, "--folder", str(folder)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{done.stdout}\n{done.stderr}")
    if variant in ("c", "d"):
        return seconds, graftune_best(folder)
    return seconds, float((folder / "best.txt").read_text())


VARIANTS = {
    "a": "(a) bare Keras loop",
    "a2": "(a2) bare Keras loop, 32 steps per call",
    "b": "(b) keras-tuner GridSearch",
    "c": "(c) graftune, 1 trial at a time",
    "d": "(d) graftune, 2 concurrent trials",
}


HEADERS = [
    "variant", "median wall s", "ratio to (a)", "best val_accuracy", "all runs s",
    "ratio to (a), repeat by repeat",
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=common.at_least(1), default=3)
    parser.add_argument("--variant", choices=["a", "a2", "b"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    common.results_option(parser)
    args = parser.parse_args()
    common.use_results(args.results)
    if args.variant:
        in_process(args.variant, args.folder)
        return
    times: dict[str, list[float]] = {name: [] for name in VARIANTS.values()}
    best: dict[str, float] = {}
    for repeat in range(args.repeats):
        for key, name in VARIANTS.items():
            folder = common.workdir("overhead")
            seconds, score = fresh_process(key, folder)
            shutil.rmtree(folder, ignore_errors=True)
            times[name].append(seconds)
            best[name] = score
            print(f"repeat {repeat + 1}: {name}: {seconds:.1f} s (best val_accuracy {score:.3f})")
    anchor = common.median(times[VARIANTS["a"]])
    bare = times[VARIANTS["a"]]
    rows = [
        [name, f"{common.median(t):.1f}", f"{common.median(t) / anchor:.2f}x", f"{best[name]:.3f}",
         ", ".join(f"{x:.1f}" for x in t),
         ", ".join(f"{x / a:.2f}" for x, a in zip(t, bare, strict=True))]
        for name, t in times.items()
    ]  # fmt: skip
    common.write_result(
        "overhead",
        "Per-trial overhead: 12 configurations x 10 epochs on digits",
        f"""
        Each variant in a fresh process, wall time from its start to its end (imports,
        Ray's start-up and shutdown included). Medians of {args.repeats} interleaved
        repeats; the last column divides each repeat by the bare loop's of the same
        repeat. Targets: (c)/(a) <= 1.2, (d)/(a) <= 0.75.

        {common.table(HEADERS, rows)}
        """,
    )
    fig, ax, path = common.figure("overhead")
    names = list(times)
    ax.barh(names, [common.median(times[n]) for n in names], color="#4477aa")
    ax.invert_yaxis()
    ax.set_xlabel("median wall seconds, fresh process (12 trials x 10 epochs)")
    ax.set_title("Per-trial overhead on 2 CPUs")
    common.save_figure(fig, path)


if __name__ == "__main__":
    main()
