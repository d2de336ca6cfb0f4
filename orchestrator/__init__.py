"""graftune: a plugin-based AutoML orchestrator for transfer learning.

The public API is what ``__all__`` lists; everything else may change.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# TensorFlow's oneDNN kernels, read once, when TensorFlow is imported: set here,
# before any graftune process (the CLI, a Ray worker, a script that imports
# graftune first) imports it. TensorFlow turns them on by itself only on CPUs
# with AVX-512 or AMX; on an AVX2 machine without them, training a ResNet's
# last stage, as fine_tune does, ran 5.1x slower (a convolution's gradient with
# respect to its input, 6-14x), and small models ran as fast either way
# (benchmarks/results/onednn.md). TF_ENABLE_ONEDNN_OPTS=0 in the
# environment keeps them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from orchestrator.errors import (
    BackendMissing,
    BaseModelError,
    CacheInUse,
    ClusterError,
    DataError,
    DiskFull,
    DuplicateNameError,
    GraftuneError,
    PluginError,
    PluginLoadError,
    RecipeError,
    RunDirError,
    RunFailed,
    RunInProgress,
    RunInterrupted,
    StorageError,
)
from orchestrator.markers import hookimpl, hookspec
from orchestrator.space import ALL, Choice, Fixed, Float, Int, LogFloat
from orchestrator.strategy import FitData, SpaceContext, Strategy

if TYPE_CHECKING:
    from orchestrator.run import RunOutcome

__version__ = "0.1.0"

__all__ = [
    "ALL",
    "BackendMissing",
    "BaseModelError",
    "CacheInUse",
    "Choice",
    "ClusterError",
    "DataError",
    "DiskFull",
    "DuplicateNameError",
    "FitData",
    "Fixed",
    "Float",
    "GraftuneError",
    "Int",
    "LogFloat",
    "PluginError",
    "PluginLoadError",
    "RecipeError",
    "RunDirError",
    "RunFailed",
    "RunInProgress",
    "RunInterrupted",
    "RunOutcome",
    "SpaceContext",
    "StorageError",
    "Strategy",
    "__version__",
    "hookimpl",
    "hookspec",
    "read_leaderboard",
    "resume_run",
    "run_recipe",
]


def run_recipe(recipe: Any, **kwargs: Any) -> RunOutcome:
    """Run a recipe end to end, as ``graftune run`` does, and return its outcome.

    Args:
        recipe: A recipe file's path, YAML text (with a line break, or one line
            that opens a mapping, ``{...}``: JSON too), a dict, or a ``Recipe``.
        **kwargs: ``run_dir``, ``plugins`` (modules or objects to register),
            ``echo`` (a callable for progress lines), ``listener`` (told of
            every trial), ``run_name``: see :func:`orchestrator.run.run_recipe`.

    Returns:
        A :class:`RunOutcome`: ``run_dir``, ``leaderboard`` (a DataFrame) and ``best``.

    Raises:
        RecipeError: A wrong recipe or data (nothing is written).
        RunFailed: Every trial failed (the leaderboard is still written: the
            error's ``run_dir`` and ``leaderboard``).
        RunInterrupted: Ctrl+C or SIGTERM; :func:`resume_run` goes on.
        RunInProgress: Another run is going on in this process (in another thread).
        DiskFull: The disk (or quota) filled while the run wrote its files; the
            trials that ended are kept and :func:`resume_run` goes on.
        RunDirError: ``run_dir`` is not empty, or cannot be made there.
        BackendMissing: Keras' backend is not installed (nothing is written).
        PluginError: A plugin fails to load, two register one name, or a strategy
            breaks its contract before any trial (a bad search space).
        ClusterError: A Ray cluster cannot be reached or refuses us, or embedded
            Ray does not start (:func:`resume_run` goes on).
        StorageError: ``run_name`` is no folder's name, or is given with ``run_dir``
            (nothing is written).

    Starts embedded Ray for the run and shuts it down after, unless Ray is
    already up in this process (then it is used and left up).
    """
    from orchestrator.run import run_recipe as _run_recipe

    return _run_recipe(recipe, **kwargs)


def resume_run(run_dir: Any, **kwargs: Any) -> RunOutcome:
    """Continue a run that was stopped or killed; see :func:`orchestrator.run.resume_run`.

    It raises what :func:`run_recipe` raises, and:

    Raises:
        RunDirError: ``run_dir`` holds no run, or another process is running it.
    """
    from orchestrator.run import resume_run as _resume_run

    return _resume_run(run_dir, **kwargs)


def read_leaderboard(run_dir: Any) -> Any:
    """A run's leaderboard as a pandas DataFrame, ranked (from ``leaderboard.csv``).

    The columns have the types ``outcome.leaderboard`` has: the frame equals it.

    Raises:
        RunDirError: ``run_dir`` has no ``leaderboard.csv`` (or does not exist), or
            the file is not a leaderboard as graftune writes it (edited, emptied,
            cut short); the message names it and what is wrong.
    """
    from pathlib import Path

    from orchestrator.leaderboard import read_leaderboard as _read_leaderboard

    return _read_leaderboard(Path(run_dir))


def __getattr__(name: str) -> Any:
    if name == "RunOutcome":  # without importing the run module (and pandas) at import
        from orchestrator.run import RunOutcome

        return RunOutcome
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
