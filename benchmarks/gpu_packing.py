"""GPU packing: throughput at 1, 2 and 4 trials per GPU, on a real GPU.

The same 8 trials (fine_tune on the quickstart's glyph-pretrained CNN, digits
resized to 32x32, cache off so the GPU does the work) with
``gpus_per_trial`` 1, 0.5 and 0.25 on one GPU. Prints trials per minute, the
ratio to one trial per GPU, how many trials ran at once, the devices each
trial saw and the GPU's memory and load while they ran. The base is
pretrained (and every compiled kernel cached) by an untimed warm-up run
first. Needs a GPU build of the Keras backend: TensorFlow
(``pip install "tensorflow[and-cuda]"``), or JAX or PyTorch with
``KERAS_BACKEND=jax|torch``. Runs in under 5 minutes on a current data-centre
GPU; on a machine without a GPU it says so and exits 1.

    python benchmarks/gpu_packing.py [--mixed-precision]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import common

PACKING = (1, 2, 4)
TRIALS = 8


def recipe(name: str, folder: Path, trials: int, per_gpu: int, mixed: bool) -> str:
    return f"""
    name: {name}
    seed: 0
    data: {{source: "sklearn:digits", image_size: [32, 32]}}
    base:
      pretrain: {{data: {{source: "glyphs:latin", image_size: [32, 32]}}, epochs: 5}}
    strategies:
      fine_tune: {{space: {{frozen_layers: 0, two_phase: false}}}}
    search: {{num_samples: {trials}, max_epochs: 5, batch_size: 64}}
    resources: {{cpus_per_trial: 1, gpus_per_trial: {1 / per_gpu},
                mixed_precision: {str(mixed).lower()}}}
    cache: false
    output: {folder}
    """


class GpuWatch:
    """``nvidia-smi``'s memory use and load of GPU 0, twice a second, while it runs."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        if shutil.which("nvidia-smi") is None:
            return
        query = [
            "nvidia-smi",
            "--query-gpu=memory.used,utilization.gpu",
            "--format=csv,noheader,nounits",
            "-i",
            "0",
        ]
        while not self._stop.wait(0.5):
            try:
                used, load = subprocess.run(
                    query, capture_output=True, text=True, timeout=5
                ).stdout.split(",")
                self.samples.append((float(used), float(load)))
            except (ValueError, subprocess.SubprocessError, OSError):
                continue

    def __enter__(self) -> GpuWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> tuple[str, str]:
        if not self.samples:
            return "-", "-"
        used = max(s[0] for s in self.samples)
        load = common.median([s[1] for s in self.samples])
        return f"{used:.0f}", f"{load:.0f}"


def trial_results(run_dir: Path) -> list[dict]:
    """Every trial's ``result.json`` (start and end times, devices seen)."""
    return [json.loads(p.read_text()) for p in sorted(run_dir.glob("trials/*/*/result.json"))]


def most_at_once(results: list[dict]) -> int:
    """How many trials overlapped in time, from their start and end times."""
    events = []
    for result in results:
        events += [(result["started_at"], 1), (result["finished_at"], -1)]
    running = most = 0
    for _, step in sorted(events):
        running += step
        most = max(most, running)
    return most


def gpu_name() -> str:
    if shutil.which("nvidia-smi") is None:
        return "unknown GPU"
    found = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader", "-i", "0"],
        capture_output=True,
        text=True,
    )
    return found.stdout.strip() or "unknown GPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixed-precision", action="store_true")
    common.results_option(parser)
    args = parser.parse_args()
    common.use_results(args.results)
    from orchestrator.accelerator import backend, gpu_count

    if not gpu_count():
        raise SystemExit(f"no GPU visible to Keras' {backend()} backend: this benchmark needs one")
    folder = common.workdir("gpu")
    mixed = args.mixed_precision
    common.start_ray()
    try:
        # Untimed: pretrains the base into the cache and warms the file system.
        common.run_recipe_text(recipe("gpu-warmup", folder, 1, 1, mixed), folder)
        rows = []
        for per_gpu in PACKING:
            with GpuWatch() as watch:
                seconds, outcome = common.timed(
                    lambda p=per_gpu: common.run_recipe_text(
                        recipe(f"gpu-{p}", folder, TRIALS, p, mixed), folder
                    )
                )
            board = outcome.leaderboard
            if not (board["status"] == "ok").all():
                raise SystemExit(f"{per_gpu} per GPU: not every trial ended ok:\n{board}")
            results = trial_results(outcome.run_dir)
            devices = sorted({str(r["devices"]) for r in results})
            # From the first trial's start to the last one's end: the run's own
            # start (data, checks, Ray Tune) left out.
            span = max(r["finished_at"] for r in results) - min(r["started_at"] for r in results)
            memory, load = watch.summary()
            rows.append(
                {
                    "per_gpu": per_gpu,
                    "wall": seconds,
                    "span": span,
                    "at_once": most_at_once(results),
                    "devices": ", ".join(devices),
                    "memory": memory,
                    "load": load,
                    "best": board["val_accuracy"].max(),
                }
            )
            print(
                f"{per_gpu} per GPU: {seconds:.1f} s (trials {span:.1f} s), devices {devices}, "
                f"GPU memory {memory} MiB, median load {load}%",
                flush=True,
            )
    finally:
        common.stop_ray()
        shutil.rmtree(folder, ignore_errors=True)  # (found by QA: left in $TMPDIR)
    first = rows[0]
    table = [
        [
            row["per_gpu"],
            f"{row['wall']:.1f}",
            f"{row['span']:.1f}",
            f"{TRIALS / row['span'] * 60:.1f}",
            f"{first['span'] / row['span']:.2f}x",
            f"{first['wall'] / row['wall']:.2f}x",
            row["at_once"],
            row["devices"],
            row["memory"],
            row["load"],
            f"{row['best']:.4f}",
        ]
        for row in rows
    ]
    headers = [
        "trials per GPU",
        "run wall s",
        "trials wall s",
        "trials per minute",
        "throughput vs 1 per GPU",
        "run speed-up vs 1 per GPU (its wall / this)",
        "at once",
        "devices",
        "GPU MiB (peak)",
        "GPU load % (median)",
        "best val_accuracy",
    ]
    common.write_result(
        "gpu_packing_mixed" if mixed else "gpu_packing",
        "GPU packing: trials per GPU against throughput",
        f"""
        {TRIALS} fine_tune trials x 5 epochs, digits at 32x32, one CPU each; mixed precision
        {"on" if mixed else "off"}; Keras backend {backend()}; {gpu_name()}. One run each,
        after an untimed warm-up run that pretrains the base. "trials wall" runs from the
        first trial's start to the last one's end (throughput is measured on it); "run wall"
        adds the run's own start (data, checks, Ray Tune). "at once" is the most trials whose
        start and end overlap; "devices" the `CUDA_VISIBLE_DEVICES` each trial saw; GPU
        memory is the peak `nvidia-smi` read during the run (all processes), load its median.

        {common.table(headers, table)}
        """,
    )


if __name__ == "__main__":
    main()
