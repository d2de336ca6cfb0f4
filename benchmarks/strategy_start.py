"""What a run pays to start each strategy's search: preloaded workers against fresh ones.

graftune searches each strategy as its own Ray Tune experiment, one after the
other. Embedded Ray starts one worker per CPU with itself, and those import
TensorFlow while the driver prepares the run (``orchestrator/tuning/ray_start.py``),
so the first search's trial actors start on workers that have it. Tune ends
each experiment's actors with it, and Ray never gives an actor's process to
another actor: every later search's actors start new processes, which import
Ray, TensorFlow and graftune again before their first trial.

This measures it as a user's run has it: a three-strategy recipe (scratch_mlp,
feature_extraction and fine_tune on a base its ``pretrain`` stage makes; two
trials each, two epochs, two at once), each repeat a whole run in a fresh
process starting embedded Ray. For each strategy in the run's order: the
seconds from its search's start to its first trial's start ("wait"), and the
share of the run's searches those waits took. Prints medians over the repeats
and the ratio of a later strategy's wait to the first's.

With ``--compare-preload``, each repeat also runs the recipe with the workers
Ray starts with itself importing Keras alone, as graftune did before they
imported Ray Tune as well (``PRELOAD_MODULES`` in
``orchestrator/tuning/ray_start.py``), the two alternating, and a second table
gives the first strategy's wait by what those workers import.

    python benchmarks/strategy_start.py [--repeats 3] [--compare-preload]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import median, table, write_result

RECIPE = """
name: strategy-start
seed: 0
data: {source: "sklearn:digits"}
base:
  pretrain: {data: {source: "sklearn:digits", classes: [0, 1, 2, 3, 4]}, epochs: 1, width: 4}
strategies:
  scratch_mlp: {}
  feature_extraction: {}
  fine_tune: {}
search: {num_samples: 2, max_epochs: 2, scheduler: fifo}
resources: {num_cpus: 2, cpus_per_trial: 1}
output: OUT
"""


def child(folder: Path, keras_only: bool = False) -> dict:
    """One run in this process; each strategy's search start, first trial start and end."""
    from orchestrator import run_recipe
    from orchestrator.tuning import ray_start, ray_tune

    if keras_only:
        ray_start.PRELOAD_MODULES = ray_start.PRELOAD_MODULES[:1]

    searches: list[dict] = []
    run_search = ray_tune.run_search

    def timed_search(recipe, spec, *args, **kwargs):
        started = time.time()
        results = run_search(recipe, spec, *args, **kwargs)
        starts = [r.started_at for r in results if r.started_at is not None]
        searches.append(
            {
                "strategy": spec.strategy.name,
                "search_start": started,
                "first_trial": min(starts) if starts else None,
                "search_end": time.time(),
            }
        )
        return results

    ray_tune.run_search = timed_search
    recipe = folder / "recipe.yaml"
    recipe.write_text(RECIPE.replace("OUT", str(folder / "runs")))
    began = time.time()
    run_recipe(recipe, echo=lambda *args, **kwargs: None)
    return {"run_wall": time.time() - began, "searches": searches}


def _wait(search: dict) -> float:
    """Seconds from a search's start to its first trial's start."""
    return search["first_trial"] - search["search_start"]


def _took(search: dict) -> float:
    """Seconds the search took."""
    return search["search_end"] - search["search_start"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare-preload", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--keras-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT" + json.dumps(child(Path(args.child), args.keras_only)), flush=True)
        return

    runs = []
    keras_only_runs = []
    variants = (False, True) if args.compare_preload else (False,)
    with tempfile.TemporaryDirectory(prefix="graftune-bench-") as tmp:
        cache = Path(tmp) / "cache"  # the base is pretrained once, by the first repeat
        for repeat in range(args.repeats + 1):
            for keras_only in variants if repeat else (False,):
                folder = Path(tmp) / f"run{repeat}{'-keras-only' if keras_only else ''}"
                folder.mkdir()
                done = subprocess.run(
                    [sys.executable, __file__, "--child", str(folder)]
                    + ["--keras-only"] * keras_only,
                    capture_output=True,
                    text=True,
                    env={**os.environ, "GRAFTUNE_CACHE_DIR": str(cache)},
                )
                if done.returncode != 0:
                    sys.exit(done.stdout[-2000:] + done.stderr[-4000:])
                line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
                result = json.loads(line[len("RESULT") :])
                if repeat == 0:
                    print("warm-up (pretrains and caches the base): not counted", flush=True)
                    continue
                (keras_only_runs if keras_only else runs).append(result)
                waits = ", ".join(f"{_wait(s):.1f} s" for s in result["searches"])
                which = " (workers preloading Keras alone)" if keras_only else ""
                print(f"repeat {repeat}{which}: waits {waits}", flush=True)

    order = [s["strategy"] for s in runs[0]["searches"]]
    rows = []
    first_wait = median([_wait(r["searches"][0]) for r in runs])
    for position, strategy in enumerate(order):
        wait = median([_wait(r["searches"][position]) for r in runs])
        took = median([_took(r["searches"][position]) for r in runs])
        workers = "started with Ray (TensorFlow preloaded)" if position == 0 else "new processes"
        rows.append(
            [position + 1, strategy, workers, f"{wait:.1f}", f"{took:.1f}",
             f"{wait / took:.0%}", f"{wait / first_wait:.2f}x"]
        )  # fmt: skip
    searching = [sum(_took(s) for s in r["searches"]) for r in runs]
    waiting = [sum(_wait(s) for s in r["searches"][1:]) for r in runs]
    headers = ["position", "strategy", "its trial actors' workers", "wait s (median)",
               "search s (median)", "wait / search", "wait vs the first"]  # fmt: skip
    preload = ""
    if keras_only_runs:
        before = median([_wait(r["searches"][0]) for r in keras_only_runs])
        preload_rows = [
            ["Keras (as before)", f"{before:.1f}", "1.00x"],
            ["Keras, then Ray Tune and graftune's search module (graftune's)",
             f"{first_wait:.1f}", f"{first_wait / before:.2f}x"],
        ]  # fmt: skip
        preload = textwrap.dedent(
            f"""
            ## What the workers Ray starts with itself import (`--compare-preload`)

            The same runs, alternating with as many that preload Keras alone: the
            first strategy's wait (median), on those workers.

            {table(["the workers import", "first strategy's wait s", "vs Keras alone"], preload_rows)}
            """
        )
    body = textwrap.dedent(
        f"""
        A three-strategy run (2 trials each, 2 epochs, 2 at once, digits; a base
        pretrained by the recipe and cached by an uncounted warm-up run), {len(runs)}
        repeats, each a whole run in a fresh process starting embedded Ray. "wait" runs
        from a strategy's search start to its first trial's start.

        {table(headers, rows)}

        Per run (medians): the searches took {median(searching):.1f} s, the run
        {median([r["run_wall"] for r in runs]):.1f} s; the second and third strategies
        waited {median(waiting):.1f} s in all for their first trials.
        """
    )
    write_result(
        "strategy_start",
        "Starting each strategy's search: workers Ray started with itself against new ones",
        body + preload,
    )


if __name__ == "__main__":
    main()
