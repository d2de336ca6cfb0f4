"""What a run's garbage collections cost the process that calls it.

A run collects garbage in its own process at the pre-flight check, at the
search's end and, with ``search.backend: keras_tuner``, after each trial. A
full collection walks every object the process holds: in a notebook or a test
session that has read data and run other things, millions that are not the
run's. Since this benchmark was written a run freezes what its caller held
(``orchestrator.trial.collecting_its_own_garbage``) and its collections walk
only what the run made.

Each child process makes a caller's heap of ``--objects`` small objects (a
list of one-element lists, as a DataFrame's or a result list's Python objects
would be), runs a tiny Ray recipe once to warm up (Keras' and Ray's imports)
and then once more, timed: the run's CPU seconds in this process, its wall
seconds, and the seconds its garbage collections took (``gc.callbacks``). The
two variants, "walks everything" (the context replaced by a no-op, as before)
and "walks the run's", alternate, each in a fresh process.

A second table times the *first* run in a fresh process, as ``graftune run``
makes it: it imports Keras, TensorFlow, Ray and Ray Tune itself, after its
freeze began. "imports walked" is as before (found by QA): the imports ran with
the collector on, and their half a million objects were walked by each of the
run's full collections; "imports frozen" is now (``trial.collector_paused``
around the imports, ``trial.freeze_the_runs_imports`` after them).

    python benchmarks/driver_gc.py [--repeats 3] [--objects 0 --objects 3000000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import common

RECIPE = """
name: driver-gc
data: {source: sklearn:iris}
strategies: {scratch_mlp: {space: {hidden_layers: 1, width: 16}}}
search: {num_samples: 2, max_epochs: 1}
output: runs/
"""
VARIANTS = {"everything": "walks everything (before)", "own": "walks the run's (now)"}
FIRST_VARIANTS = {"walked": "imports walked (before)", "frozen": "imports frozen (now)"}


def child(variant: str, objects: int) -> dict[str, float]:
    import contextlib
    import gc

    heap = [[i] for i in range(objects)]  # the caller's objects, held through the run
    from orchestrator import run_recipe, trial

    if variant == "everything":
        trial.collecting_its_own_garbage = contextlib.nullcontext
    if variant == "walked":
        trial.collector_paused = contextlib.nullcontext
        trial.freeze_the_runs_imports = lambda: None
    spent = [0.0]
    began = [0.0]

    def timing(phase: str, info: dict) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            spent[0] += time.perf_counter() - began[0]

    folder = Path(tempfile.mkdtemp(prefix="graftune-driver-gc-"))
    recipe = folder / "recipe.yaml"
    recipe.write_text(RECIPE)
    if variant in VARIANTS:  # the second run in the process is timed
        run_recipe(recipe, echo=lambda *a, **k: None)  # imports, caches
    gc.callbacks.append(timing)
    wall, cpu = time.perf_counter(), time.process_time()
    run_recipe(recipe, echo=lambda *a, **k: None)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    gc.callbacks.remove(timing)
    assert len(heap) == objects
    shutil.rmtree(folder, ignore_errors=True)  # (found by QA: left in $TMPDIR)
    return {"wall": wall, "cpu": cpu, "gc": spent[0], "objects": len(gc.get_objects())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=common.at_least(1), default=3)
    parser.add_argument("--objects", type=int, action="append")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    common.results_option(parser)
    args = parser.parse_args()
    common.use_results(args.results)
    if args.child:
        common.print_child_result(child(args.child[0], int(args.child[1])))
        return
    heaps = args.objects or [0, 3_000_000]
    cases = [(objects, variant) for objects in heaps for variant in VARIANTS]
    cases += [(0, variant) for variant in FIRST_VARIANTS]
    results: dict[tuple[int, str], list[dict[str, float]]] = {}
    for repeat in range(args.repeats):
        for objects, variant in cases:
            measured = common.child_result(__file__, variant, str(objects))
            results.setdefault((objects, variant), []).append(measured)
            print(repeat, objects, variant, measured, flush=True)
    header = [
        "caller's objects",
        "collections",
        "gc wall s",
        "driver CPU s",
        "CPU vs before",
        "wall s",
        "objects at the end",
    ]
    repeats = f"{args.repeats} repeat{'s' if args.repeats > 1 else ''}, medians; each in a fresh process, the variants alternating"
    body = (
        f"A tiny Ray run (iris, 2 trials of 1 epoch, embedded Ray), the second in its process, "
        f"{repeats}.\n\n"
        + common.table(header, _rows(results, heaps, VARIANTS, "everything"))
        + "\n\nThe same run, the first in a fresh process (as `graftune run`), timed with "
        f"its imports of Keras, TensorFlow, Ray and Ray Tune; {repeats}.\n\n"
        + common.table(header, _rows(results, [0], FIRST_VARIANTS, "walked"))
    )
    common.write_result("driver_gc", "A run's garbage collections in its caller's process", body)


def _rows(
    results: dict[tuple[int, str], list[dict[str, float]]],
    heaps: list[int],
    variants: dict[str, str],
    before: str,
) -> list[list[str]]:
    rows = []
    for objects in heaps:
        base = results[(objects, before)]
        for variant, label in variants.items():
            got = results[(objects, variant)]
            cpu = common.median([r["cpu"] for r in got])
            rows.append(
                [
                    f"{objects:,}",
                    label,
                    f"{common.median([r['gc'] for r in got]):.2f}",
                    f"{cpu:.2f}",
                    f"{cpu / common.median([r['cpu'] for r in base]):.2f}x",
                    f"{common.median([r['wall'] for r in got]):.1f}",
                    f"{common.median([r['objects'] for r in got]):,.0f}",
                ]
            )
    return rows


if __name__ == "__main__":
    main()
