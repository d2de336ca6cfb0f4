"""Per-trial overhead: 12 small configurations, four ways, side by side.

The same 12 configurations on scikit-learn's digits — a two-hidden-layer MLP,
widths {32, 64, 128, 256} x learning rates {1e-3, 3e-3, 1e-2}, 10 epochs each —
run by (a) a bare Keras loop in one process, (b) keras-tuner's GridSearch,
(c) graftune with one trial at a time (each trial gets both CPUs), (d) graftune
with two concurrent trials (one CPU each). Ray's start-up and shutdown are
inside (c) and (d). Prints wall times and ratios to (a); medians over
--repeats, the variants interleaved so machine noise hits each alike.

    python benchmarks/overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
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


def mlp(width: int, rate: float, task):
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
    )
    return model


def bare_loop(data) -> float:
    import keras

    best = 0.0
    for width in WIDTHS:
        for rate in RATES:
            keras.utils.set_random_seed(0)
            model = mlp(width, rate, data.task)
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


def graftune(folder: Path, concurrent: int) -> float:
    cpus = 2 // concurrent
    common.start_ray(num_cpus=2)
    try:
        outcome = common.run_recipe_text(
            f"""
            name: overhead
            seed: 0
            data: {{source: "sklearn:digits"}}
            strategies:
              scratch_mlp:
                space:
                  hidden_layers: 2
                  width: {{choice: {list(WIDTHS)}}}
                  learning_rate: {{choice: {list(RATES)}}}
                  lambda: 1.0e-9
            search: {{algorithm: grid, max_epochs: {EPOCHS}, batch_size: {BATCH},
                      max_concurrent_trials: {concurrent}}}
            resources: {{cpus_per_trial: {cpus}}}
            output: {folder}
            """,
            folder,
        )
    finally:
        common.stop_ray()
    frame = outcome.leaderboard
    assert len(frame) == len(WIDTHS) * len(RATES), frame
    return float(frame["val_accuracy"].max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = dataset()
    variants = {
        "(a) bare Keras loop": lambda folder: bare_loop(data),
        "(b) keras-tuner GridSearch": lambda folder: keras_tuner_grid(data, folder),
        "(c) graftune, 1 trial at a time": lambda folder: graftune(folder, 1),
        "(d) graftune, 2 concurrent trials": lambda folder: graftune(folder, 2),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    best: dict[str, float] = {}
    for repeat in range(args.repeats):
        for name, variant in variants.items():
            folder = common.workdir("overhead")
            seconds, score = common.timed(lambda v=variant, f=folder: v(f))
            shutil.rmtree(folder, ignore_errors=True)
            times[name].append(seconds)
            best[name] = score
            print(f"repeat {repeat + 1}: {name}: {seconds:.1f} s (best val_accuracy {score:.3f})")
    anchor = common.median(times["(a) bare Keras loop"])
    rows = [
        [name, f"{common.median(t):.1f}", f"{common.median(t) / anchor:.2f}x", f"{best[name]:.3f}",
         ", ".join(f"{x:.1f}" for x in t)]
        for name, t in times.items()
    ]  # fmt: skip
    common.write_result(
        "overhead",
        "Per-trial overhead: 12 configurations x 10 epochs on digits",
        f"""
        Medians of {args.repeats} interleaved repeats. Targets: (c)/(a) <= 1.2, (d)/(a) <= 0.75.

        {common.table(["variant", "median wall s", "ratio to (a)", "best val_accuracy", "all runs s"], rows)}
        """,
    )
    fig, ax, path = common.figure("overhead")
    names = list(times)
    ax.barh(names, [common.median(times[n]) for n in names], color="#4477aa")
    ax.invert_yaxis()
    ax.set_xlabel("median wall seconds (12 trials x 10 epochs)")
    ax.set_title("Per-trial overhead on 2 CPUs")
    common.save_figure(fig, path)


if __name__ == "__main__":
    main()
