"""What a run pays to start each strategy's search, and what graftune does about it.

graftune searches each strategy as its own Ray Tune experiment, one after the
other. Embedded Ray starts the first search's workers with itself, and those
import TensorFlow and Ray Tune while the driver prepares the run
(``orchestrator/tuning/ray_start.py``), so the first search's trial actors
start on workers that have them. Tune ends each experiment's actors with it,
and Ray never gives an actor's process to another actor: every later search's
actors would start new processes, which import Ray, TensorFlow and graftune
again before their first trial. So while a search's last trials run with a
free slot beside them, graftune has Ray prestart the next search's workers
(``prestart_workers``).

This measures it as a user's run has it: a three-strategy recipe (scratch_mlp,
feature_extraction and fine_tune on a base its ``pretrain`` stage makes; three
trials each, two epochs, two at once, so each search's last trial runs alone),
each repeat a whole run in a fresh process starting embedded Ray. For each
strategy in the run's order: the seconds from its search's start to its first
trial's start ("wait"), and the share of the run's searches those waits took.
Prints medians over the repeats and the ratio of a later strategy's wait to
the first's.

Side by side, alternating with graftune's runs in each repeat:

- ``--compare-prestart``: runs without the prestart (as graftune ran before
  it): each strategy's wait by variant;
- ``--compare-preload``: runs whose first workers import Keras alone (as
  graftune's did before they imported Ray Tune as well): the first strategy's
  wait by variant.

    python benchmarks/strategy_start.py [--repeats 3] [--compare-prestart] [--compare-preload]
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
search: {num_samples: 3, max_epochs: 2, scheduler: fifo}
resources: {num_cpus: 2, cpus_per_trial: 1}
output: OUT
"""


#: The variants a repeat may run besides graftune's own: what the child changes.
VARIANTS = {
    "no-prestart": "without prestarting the next search's workers",
    "keras-only": "with the first workers importing Keras alone",
}


def child(folder: Path, variant: str | None = None) -> dict:
    """One run in this process; each strategy's search start, first trial start and end."""
    from orchestrator import run_recipe
    from orchestrator.tuning import ray_start, ray_tune

    if variant == "keras-only":
        ray_start.PRELOAD_MODULES = ray_start.PRELOAD_MODULES[:1]
    elif variant == "no-prestart":
        ray_start.prestart_workers = lambda count: False

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
    import common

    parser.add_argument("--repeats", type=common.at_least(1), default=3)
    parser.add_argument("--compare-prestart", action="store_true")
    parser.add_argument("--compare-preload", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    common.results_option(parser)
    args = parser.parse_args()
    common.use_results(args.results)
    if args.child:
        print("RESULT" + json.dumps(child(Path(args.child), args.variant)), flush=True)
        return

    variants = [None]
    variants += ["no-prestart"] * args.compare_prestart + ["keras-only"] * args.compare_preload
    runs: dict[str | None, list[dict]] = {variant: [] for variant in variants}
    with tempfile.TemporaryDirectory(prefix="graftune-bench-") as tmp:
        cache = Path(tmp) / "cache"  # the base is pretrained once, by the first repeat
        for repeat in range(args.repeats + 1):
            for variant in variants if repeat else [None]:
                folder = Path(tmp) / f"run{repeat}-{variant or 'graftune'}"
                folder.mkdir()
                done = subprocess.run(
                    [sys.executable, __file__, "--child", str(folder)]
                    + ([f"--variant={variant}"] if variant else []),
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
                runs[variant].append(result)
                waits = ", ".join(f"{_wait(s):.1f} s" for s in result["searches"])
                which = f" ({VARIANTS[variant]})" if variant else ""
                print(f"repeat {repeat}{which}: waits {waits}", flush=True)

    ours = runs[None]
    order = [s["strategy"] for s in ours[0]["searches"]]

    def waits(variant: str | None, position: int) -> float:
        return median([_wait(r["searches"][position]) for r in runs[variant]])

    def run_wall(variant: str | None) -> float:
        return median([r["run_wall"] for r in runs[variant]])

    rows = []
    first_wait = waits(None, 0)
    for position, strategy in enumerate(order):
        wait = waits(None, position)
        took = median([_took(r["searches"][position]) for r in ours])
        workers = (
            "started with Ray (TensorFlow preloaded)"
            if position == 0
            else "asked of the raylet during the last search's last trial"
        )
        rows.append(
            [position + 1, strategy, workers, f"{wait:.1f}", f"{took:.1f}",
             f"{wait / took:.0%}", f"{wait / first_wait:.2f}x"]
        )  # fmt: skip
    searching = [sum(_took(s) for s in r["searches"]) for r in ours]
    waiting = [sum(_wait(s) for s in r["searches"][1:]) for r in ours]
    headers = ["position", "strategy", "its trial actors' workers", "wait s (median)",
               "search s (median)", "wait / search", "wait vs the first"]  # fmt: skip
    body = textwrap.dedent(
        f"""
        A three-strategy run (3 trials each, 2 epochs, 2 at once, digits; a base
        pretrained by the recipe and cached by an uncounted warm-up run), {len(ours)}
        repeats, each a whole run in a fresh process starting embedded Ray. "wait" runs
        from a strategy's search start to its first trial's start.

        {table(headers, rows)}

        Per run (medians): the searches took {median(searching):.1f} s, the run
        {run_wall(None):.1f} s; the second and third strategies
        waited {median(waiting):.1f} s in all for their first trials.
        """
    )
    if runs.get("no-prestart"):
        prestart_rows = [
            [position + 1, strategy, f"{waits('no-prestart', position):.1f}",
             f"{waits(None, position):.1f}",
             f"{waits(None, position) / waits('no-prestart', position):.2f}x"]
            for position, strategy in enumerate(order)
        ]  # fmt: skip
        prestart_rows.append(
            ["", "the run", f"{run_wall('no-prestart'):.1f}", f"{run_wall(None):.1f}",
             f"{run_wall(None) / run_wall('no-prestart'):.2f}x"]
        )  # fmt: skip
        body += textwrap.dedent(
            f"""
            ## Prestarting the next search's workers (`--compare-prestart`)

            The same runs, alternating with as many without the prestart: each
            strategy's wait (median, s), and the run's wall time.

            {table(["position", "strategy", "without s", "with s", "with / without"], prestart_rows)}
            """
        )
    if runs.get("keras-only"):
        before = waits("keras-only", 0)
        preload_rows = [
            ["Keras (as before)", f"{before:.1f}", "1.00x"],
            ["Keras, then Ray Tune and graftune's search module (graftune's)",
             f"{first_wait:.1f}", f"{first_wait / before:.2f}x"],
        ]  # fmt: skip
        body += textwrap.dedent(
            f"""
            ## What the workers Ray starts with itself import (`--compare-preload`)

            The same runs, alternating with as many that preload Keras alone: the
            first strategy's wait (median), on those workers.

            {table(["the workers import", "first strategy's wait s", "vs Keras alone"], preload_rows)}
            """
        )
    write_result(
        "strategy_start",
        "Starting each strategy's search: preloaded and prestarted workers",
        body,
    )


if __name__ == "__main__":
    main()
