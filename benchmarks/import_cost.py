"""What a fresh process pays to import Keras, by ml_dtypes version, side by side.

Every process that trains imports Keras first: each Ray worker of each
strategy's search (a new one for every strategy, see ``strategy_start.py``),
the driver of ``graftune run``, each pytest worker and each CLI the tests
start. TensorFlow (and JAX) import ml_dtypes, and ml_dtypes 0.7.0 takes about
a second of CPU to register its NumPy loops where 0.6.0 takes milliseconds;
``pyproject.toml`` keeps ml_dtypes below 0.7 for that. This measures it: each
version given is installed (``pip install --no-deps --target``, from the
package index as any install) into a scratch folder put first on
``PYTHONPATH``, and each repeat imports, in a fresh process per version with
the versions alternating, NumPy, then ml_dtypes, then Keras as a trial does
(``orchestrator.trial.import_keras``).

Prints the medians of ml_dtypes' own import (wall) and of the whole import
(CPU seconds of the process, and wall), and each version's ratio to the first.

    python benchmarks/import_cost.py [--repeats 7] [--ml-dtypes 0.6.0 --ml-dtypes 0.7.0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

VERSIONS = ("0.6.0", "0.7.0")


def child() -> dict[str, object]:
    """Import NumPy, ml_dtypes and Keras here, timing each step."""
    import resource
    import time

    started = time.perf_counter()
    import numpy  # noqa: F401  (ml_dtypes' own import is timed after NumPy's)

    before = time.perf_counter()
    import ml_dtypes

    ml_dtypes_s = time.perf_counter() - before
    from orchestrator.trial import import_keras

    import_keras()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "version": ml_dtypes.__version__,
        "ml_dtypes_s": ml_dtypes_s,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "wall_s": time.perf_counter() - started,
    }


def install(version: str, into: Path) -> Path:
    target = into / f"ml_dtypes-{version}"
    if not (target / "ml_dtypes").is_dir():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
             "--target", str(target), f"ml_dtypes=={version}"],
            check=True,
        )  # fmt: skip
    return target


def measure(target: Path) -> dict[str, object]:
    path = os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    import common

    parser.add_argument("--repeats", type=common.at_least(1), default=7)
    parser.add_argument("--ml-dtypes", action="append", dest="versions", metavar="VERSION")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    common.results_option(parser)
    args = parser.parse_args()
    common.use_results(args.results)
    if args.child:
        print(json.dumps(child()))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    import common

    versions = args.versions or list(VERSIONS)
    scratch = Path(tempfile.gettempdir()) / "graftune-bench-import-cost"
    targets = {v: install(v, scratch) for v in versions}
    measure(targets[versions[0]])  # uncounted: the first import reads the files from disk
    results: dict[str, list[dict]] = {v: [] for v in versions}
    for _ in range(args.repeats):
        for version in versions:
            result = measure(targets[version])
            assert result["version"] == version, result  # the scratch copy, not the installed one
            results[version].append(result)
            print(result, flush=True)

    def med(version: str, key: str) -> float:
        return common.median([float(r[key]) for r in results[version]])

    first = versions[0]
    rows = [
        [
            v,
            f"{med(v, 'ml_dtypes_s'):.3f}",
            f"{med(v, 'cpu_s'):.2f}",
            f"{med(v, 'wall_s'):.2f}",
            f"{med(v, 'cpu_s') / med(first, 'cpu_s'):.2f}x",
            f"{med(v, 'cpu_s') - med(first, 'cpu_s'):+.2f}",
        ]
        for v in versions
    ]
    common.write_result(
        "import_cost",
        "What a fresh process pays to import Keras, by ml_dtypes version",
        f"""
        Each repeat a fresh process per version, the versions alternating, {args.repeats}
        repeats after an uncounted one; medians. "whole import" is NumPy, ml_dtypes and
        Keras as a trial imports it (TensorFlow backend), in CPU seconds of the process.

        {common.table(["ml_dtypes", "its import s", "whole import CPU s", "whole import wall s", f"CPU vs {first}", f"CPU s vs {first}"], rows)}
        """,
    )


if __name__ == "__main__":
    main()
