"""GPU packing: throughput at 1, 2 and 4 trials per GPU, on a real GPU.

The same 8 trials (fine_tune on the quickstart's glyph-pretrained CNN, digits
resized to 32x32, cache off so the GPU does the work) with
``gpus_per_trial`` 1, 0.5 and 0.25 on one GPU. Prints trials per minute and
the ratio to one trial per GPU. Needs a CUDA build of TensorFlow
(``pip install "tensorflow[and-cuda]"``) and runs in under 5 minutes on a
current data-centre GPU; on a machine without a GPU it says so and exits 2.

    python benchmarks/gpu_packing.py [--mixed-precision]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import common

PACKING = (1, 2, 4)
TRIALS = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixed-precision", action="store_true")
    args = parser.parse_args()
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        raise SystemExit("no GPU visible to TensorFlow: this benchmark needs one")
    folder = common.workdir("gpu")
    rows, times = [], {}
    for per_gpu in PACKING:
        common.start_ray()
        try:
            seconds, outcome = common.timed(
                lambda p=per_gpu: common.run_recipe_text(
                    f"""
                    name: gpu-{p}
                    seed: 0
                    data: {{source: "sklearn:digits", image_size: [32, 32]}}
                    base:
                      pretrain: {{data: {{source: "glyphs:latin", image_size: [32, 32]}}, epochs: 5}}
                    strategies:
                      fine_tune: {{space: {{frozen_layers: 0, two_phase: false}}}}
                    search: {{num_samples: {TRIALS}, max_epochs: 5, batch_size: 64}}
                    resources: {{cpus_per_trial: 1, gpus_per_trial: {1 / p},
                                mixed_precision: {str(args.mixed_precision).lower()}}}
                    cache: false
                    output: {folder}
                    """,
                    folder,
                )
            )
        finally:
            common.stop_ray()
        times[per_gpu] = seconds
        assert (outcome.leaderboard["status"] == "ok").all()
        print(f"{per_gpu} per GPU: {seconds:.1f} s")
    for per_gpu in PACKING:
        throughput = TRIALS / times[per_gpu] * 60
        base = TRIALS / times[1] * 60
        rows.append(
            [per_gpu, f"{times[per_gpu]:.1f}", f"{throughput:.1f}", f"{throughput / base:.2f}x"]
        )
    common.write_result(
        "gpu_packing",
        "GPU packing: trials per GPU against throughput",
        f"""
        {TRIALS} fine_tune trials x 5 epochs, digits at 32x32; mixed precision
        {"on" if args.mixed_precision else "off"}. One run each.

        {common.table(["trials per GPU", "wall s", "trials per minute", "ratio to 1 per GPU"], rows)}
        """,
    )


if __name__ == "__main__":
    main()
