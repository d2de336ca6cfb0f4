"""Shared helpers of the benchmark scripts: timing, Markdown tables, figures, Ray.

Benchmarks are scripts, never tests: each measures its variants side by side
in one run and prints medians and ratios. Results go to ``benchmarks/results/``
as Markdown (and PNG figures).
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

RESULTS = Path(__file__).parent / "results"
#: Where a run's tables and figures go instead of :data:`RESULTS` (``--results DIR``).
RESULTS_ENV = "GRAFTUNE_BENCH_RESULTS"


def results_dir() -> Path:
    """Where tables and figures go: ``--results DIR``, else the committed ``results/``."""
    return Path(os.environ.get(RESULTS_ENV) or RESULTS)


def results_option(parser: Any) -> None:
    """Add ``--results DIR`` to a benchmark's argument parser (found by QA: a quick
    try of a script overwrote the committed tables, keeping their hand-written
    reading of other numbers)."""
    parser.add_argument(
        "--results",
        metavar="DIR",
        help="where the tables and figures go (default: benchmarks/results/, the committed "
        "ones: give another folder to try a quick mode without touching them)",
    )


def at_least(least: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number no smaller than ``least`` (found by QA:
    ``--repeats 0`` and ``--trials 2`` ended in a KeyError or a division by zero,
    some after minutes of work)."""
    import argparse

    def number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected {least} or more, got {value}")
        return value

    return number


def names_of(known: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse ``type``: a comma-separated list of ``known`` names, checked before
    any work (found by QA: a name with a typo ended in a KeyError once Ray had started,
    or after the names before it had run)."""
    import argparse

    def names(text: str) -> list[str]:
        given = [name.strip() for name in text.split(",") if name.strip()]
        wrong = [name for name in given if name not in known]
        if wrong or not given:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(map(repr, wrong)) or 'nothing'}; expected a comma-separated "
                f"list of {', '.join(known)}"
            )
        return given

    return names


def use_results(folder: str | None) -> None:
    """Send this run's tables and figures to ``folder`` (``None``: ``results/``)."""
    if folder:
        os.environ[RESULTS_ENV] = str(Path(folder).absolute())


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of one call, and its result."""
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def machine() -> str:
    """One line describing where the numbers were measured."""
    import keras
    import ray

    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"Keras {keras.__version__} ({keras.backend.backend()}), Ray {ray.__version__}, "
        f"{time.strftime('%Y-%m-%d')}"
    )


#: Headings of the sections written by hand below a result's tables.
HAND_WRITTEN = re.compile(r"^## (Reading|Earlier runs)\b", re.MULTILINE)


def write_result(name: str, title: str, body: str) -> Path:
    """Write ``results/NAME.md`` (or in ``--results DIR``) and print it.

    The sections written by hand after earlier runs (``## Reading ...``,
    ``## Earlier runs``) are kept, after the new tables, to be brought up to
    date by hand: a run used to replace them with nothing.
    """
    results = results_dir()
    results.mkdir(parents=True, exist_ok=True)
    # Bodies mix indented source text with inserted tables: strip every line.
    body = "\n".join(line.strip() for line in body.strip().splitlines())
    text = f"# {title}\n\nMeasured on {machine()}.\n\n{body}\n"
    path = results / f"{name}.md"
    kept = ""
    if path.is_file():
        found = HAND_WRITTEN.search(path.read_text())
        if found:
            kept = path.read_text()[found.start() :]
    path.write_text(text + ("\n" + kept if kept else ""))
    print(text)
    if kept:
        print(
            f"(kept the hand-written sections of the previous {path.name}: bring them up to date)"
        )
    return path


def figure(name: str) -> tuple[Any, Any, Path]:
    """A matplotlib figure and axes, and the PNG path to save it to."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    results_dir().mkdir(parents=True, exist_ok=True)
    return fig, ax, results_dir() / f"{name}.png"


def save_figure(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)


def print_child_result(result: Any) -> None:
    """In a benchmark's child process: hand ``result`` (JSON) to :func:`child_result`."""
    import json

    print("RESULT " + json.dumps(result), flush=True)


def child_result(script: str, *args: str) -> Any:
    """Run ``script --child ARGS...`` in a fresh Python process and return what it
    printed with :func:`print_child_result` (variants measured each in a process of
    their own, nothing carried from one to the next)."""
    import json
    import subprocess

    done = subprocess.run(
        [sys.executable, script, "--child", *args], capture_output=True, text=True, check=True
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def workdir(prefix: str) -> Path:
    """A fresh scratch folder (runs, caches) for one benchmark."""
    return Path(tempfile.mkdtemp(prefix=f"graftune-bench-{prefix}-"))


def start_ray(num_cpus: int | None = None) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
        )


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def run_recipe_text(text: str, folder: Path, **kwargs: Any) -> Any:
    """Write a recipe into ``folder`` and run it; returns the run's outcome."""
    from orchestrator import RunFailed, run_recipe

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"recipe-{time.monotonic_ns()}.yaml"
    path.write_text(textwrap.dedent(text))
    try:
        return run_recipe(path, echo=lambda line: None, **kwargs)
    except RunFailed as exc:
        raise SystemExit(f"benchmark run failed: {exc}") from exc
