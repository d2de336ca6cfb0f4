"""TensorFlow's oneDNN kernels off and on, side by side, on what trials train.

graftune sets ``TF_ENABLE_ONEDNN_OPTS=1`` unless the user set it
(``orchestrator/__init__.py``): TensorFlow turns the kernels on by itself only
on CPUs with AVX-512 or AMX. This measures what the setting changes on this
machine, each workload in a fresh process per setting (TensorFlow reads the
variable when it is imported), the two settings alternating, one thread as a
trial with ``cpus_per_trial: 1`` has:

- ``resnet50-conv5``: one epoch of a fine_tune trial at ResNet50's cut 16 on
  cached features (conv5's last block and a head; 600 training and 360
  validation images at 64x64), timed after a first epoch;
- ``resnet50-forward``: ResNet50's forward pass over 320 images at 64x64, what
  making a feature-cache entry and an uncached trial's frozen prefix cost;
- ``digits-mlp``: 10 epochs of a 256x256 MLP on scikit-learn's digits
  (scratch_mlp's kind of network);
- ``digits-cnn``: 10 epochs of a small CNN on 8x8 digits (the quickstart
  base's kind).

Prints the median seconds of each setting, the ratio off / on and the last
validation accuracy (the same seed: the two settings add numbers in another
order).

    python benchmarks/onednn.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

WORKLOADS = ("resnet50-conv5", "resnet50-forward", "digits-mlp", "digits-cnn")


def child(workload: str) -> dict[str, float]:
    """Run one workload in this process and return its seconds and accuracy."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    if workload.startswith("resnet50"):
        base = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
        if workload == "resnet50-forward":
            x = rng.standard_normal((320, 64, 64, 3)).astype("float32")
            base.predict(x[:32], batch_size=32, verbose=0)
            started = time.perf_counter()
            base.predict(x, batch_size=32, verbose=0)
            return {"seconds": time.perf_counter() - started, "accuracy": float("nan")}
        upper = keras.Model(base.get_layer("conv5_block2_out").output, base.output)
        for layer in upper.layers:  # as graftune freezes BatchNormalization
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
        inputs = keras.Input((2, 2, 2048))
        h = keras.layers.GlobalAveragePooling2D()(upper(inputs, training=False))
        h = keras.layers.Dense(128, activation="relu")(h)
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
        x = rng.standard_normal((960, 2, 2, 2048)).astype("float32")
        y = rng.integers(0, 10, 960)
        data, epochs, warm = (x[:600], y[:600]), 1, 1
        val = (x[600:], y[600:])
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x, y = digits.data.astype("float32") / 16, digits.target
        if workload == "digits-mlp":
            layers = [keras.layers.Dense(256, activation="relu") for _ in range(2)]
            shape: tuple[int, ...] = (64,)
        else:
            x = x.reshape(-1, 8, 8, 1)
            shape = (8, 8, 1)
            layers = [
                keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
                keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(),
                keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(64, activation="relu"),
            ]
        model = keras.Sequential(
            [keras.Input(shape), *layers, keras.layers.Dense(10, activation="softmax")]
        )
        data, epochs, warm = (x[:1400], y[:1400]), 10, 0
        val = (x[1400:], y[1400:])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=32,
    )
    if warm:
        model.fit(*data, batch_size=32, epochs=warm, verbose=0, validation_data=val)
    started = time.perf_counter()
    history = model.fit(*data, batch_size=32, epochs=epochs, verbose=0, validation_data=val)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "accuracy": float(history.history["val_accuracy"][-1])}


def measure(workload: str, onednn: str) -> dict[str, float]:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, __file__, "--child", workload],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    import common

    parser.add_argument("--repeats", type=common.at_least(1), default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    common.results_option(parser)
    args = parser.parse_args()
    common.use_results(args.results)
    if args.child:
        print(json.dumps(child(args.child)))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    import common

    rows = []
    for workload in WORKLOADS:
        seconds: dict[str, list[float]] = {"0": [], "1": []}
        accuracy: dict[str, float] = {}
        for _ in range(args.repeats):
            for onednn in ("0", "1"):
                result = measure(workload, onednn)
                seconds[onednn].append(result["seconds"])
                accuracy[onednn] = result["accuracy"]
                print(workload, "oneDNN", onednn, result, flush=True)
        off, on = common.median(seconds["0"]), common.median(seconds["1"])
        rows.append(
            [
                workload,
                f"{off:.2f}",
                f"{on:.2f}",
                f"{off / on:.2f}x",
                *("-" if math.isnan(accuracy[o]) else f"{accuracy[o]:.4f}" for o in ("0", "1")),
            ]
        )
    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    vector = (
        "AVX-512"
        if "avx512f" in cpuinfo
        else "AVX2, no AVX-512"
        if "avx2" in cpuinfo
        else "no AVX2"
    )
    common.write_result(
        "onednn",
        "TensorFlow's oneDNN kernels off and on",
        f"""
        CPU: {cpu} ({vector}). Each workload in a fresh process per setting, the
        settings alternating, {args.repeats} repeats, one thread; medians.

        {common.table(["workload", "off s", "on s", "speed-up (off / on)", "val accuracy off", "val accuracy on"], rows)}
        """,
    )


if __name__ == "__main__":
    main()
