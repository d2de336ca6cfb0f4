"""A whole run: resolve the recipe, prepare data and base once, search each strategy.

Nothing is written to the run directory until the recipe, the data and the
base have all been checked and prepared, so a bad recipe leaves no trace.
A run that was killed continues with :func:`resume_run`: strategies whose
search finished are read back, unfinished searches start again from the
seed (never from Ray Tune's pickled state), and trials that finished are
never run again.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import os
import shlex
import shutil
import socket
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from orchestrator.accelerator import chosen_backend
from orchestrator.environment import plugin_modules
from orchestrator.errors import (
    TEMPORARY_NAME,
    AddressMissing,
    BaseModelError,
    DataError,
    DiskFull,
    GraftuneError,
    OutputPathError,
    PluginError,
    RecipeError,
    RunDirError,
    RunFailed,
    RunInProgress,
    RunInterrupted,
    SearchInterrupted,
    StorageError,
    cannot_make_in,
    disk_full_error,
    echoed,
    ellipsized,
    is_disk_full,
    missing_run_dir,
    no_room,
    one_line,
    unreadable,
)
from orchestrator.progress import tell_epoch
from orchestrator.recipe import (
    SEARCHED_FILE,
    SEARCHED_VALUES_FILE,
    Recipe,
    as_recipe,
    check_pretrain_input,
    check_recipe,
    check_recipe_data,
    inside_a_run,
    load_recipe,
    run_dir_around,
)
from orchestrator.storage import LOCK_FILE as _LOCK_FILE

if TYPE_CHECKING:
    import pandas as pd

    from orchestrator.bases import BaseInfo
    from orchestrator.data import Dataset
    from orchestrator.plugin_manager import PluginHost
    from orchestrator.registry import Registry
    from orchestrator.storage import RunPlace
    from orchestrator.tuning.ray_start import BackgroundStart
    from orchestrator.tuning.ray_tune import TrialListener

from orchestrator.trial import RESULT_FILE, TrialResult, ended_trials, read_result, runs_again

log = logging.getLogger(__name__)

BEST_DIR = "best"
#: The run's prepared base (:class:`orchestrator.bases.BaseInfo` as JSON), for
#: putting a trial trained on cached features back together.
BASE_FILE = "base.json"
#: The fingerprint of the data the run's trials train and are scored on.
DATA_FILE = "data.json"
#: Each example's split, row in its source, label (and name, where its source gives one).
SPLIT_FILE = "split.csv"
RECIPE_FILE = "recipe.yaml"
#: Written when a strategy's search has ended; a resumed run reads it back.
SEARCH_DONE_FILE = "search.json"
#: Written last by a run that ended with a best model: there is nothing to resume.
FINISHED_FILE = "finished.json"


@dataclass(frozen=True)
class RunOutcome:
    """What :func:`run_recipe` returns."""

    run_dir: Path
    leaderboard: pd.DataFrame
    best: dict[str, Any] | None
    #: Where the run is stored, for a storage URI (``None``: only in ``run_dir``).
    stored: str | None = None


def resume_run(run_dir: str | Path, *, address: str | None = None, **kwargs: Any) -> RunOutcome:
    """Continue a run whose process was killed, from its run directory.

    Args:
        address: Drive this Ray cluster instead of the one the run's recipe names
            (a submitted job's recipe says ``auto``: the cluster it ran on).

    Raises:
        RunDirError: ``run_dir`` holds no run.
    """
    run_dir = Path(run_dir)
    if not (run_dir / RECIPE_FILE).is_file():
        raise RunDirError(
            missing_run_dir(run_dir)
            or f"{run_dir} is not a graftune run directory (no {RECIPE_FILE})"
        )
    not_writable = _unwritable_without_links(run_dir)
    if (run_dir / FINISHED_FILE).is_file():  # nothing runs again, no hook is called again
        echo = kwargs.get("echo", log.info)
        try:
            finished = _read_finished(run_dir)
        except (OSError, ValueError) as exc:
            # Written last, when the run ended: the rest is there to rank again.
            problem = unreadable(run_dir / FINISHED_FILE, exc)
            echo(f"{problem}: the trials that ended are ranked again")
        else:
            problem = _finished_outputs_problem(run_dir)
            if problem is None:
                return _finished_outcome(run_dir, finished, echo)
            # Resumed: every search reads its search.json back, none runs a trial, and
            # the trials are ranked and the best trial saved again where a run does.
            echo(
                f"{run_dir}: the run finished, but {problem}: its trials are ranked and the "
                "best model is saved again"
            )
    if not_writable is not None:
        raise RunDirError(
            f"{not_writable} is not writable, and a resume writes in the run directory: make "
            f"it all writable (chmod -R u+w {shlex.quote(str(run_dir))}), or copy it "
            "where you may write and resume the copy"
        )
    recipe: Recipe | Path = run_dir / RECIPE_FILE
    if address is not None:
        from orchestrator.submit import with_cluster_options

        recipe = with_cluster_options(load_recipe(recipe), address=address)
    elif (said := _recorded_address(run_dir)) is not None:
        # Found by security QA: a run directory from someone else sent the user's Ray
        # token to the address its recipe.yaml named. A cluster is the user's to name.
        raise AddressMissing(
            f"{run_dir} ran on the Ray cluster at {said} (its {RECIPE_FILE} says): a resume "
            "goes to no cluster that its run directory alone names, which would be given "
            f"your Ray token; resume with --address {said} to go on there (or HEAD:6379 "
            "where the cluster is now), or --address local for embedded Ray here (from "
            "Python, address=)"
        )
    try:
        return run_recipe(recipe, run_dir=run_dir, resume=True, **kwargs)
    except RecipeError as exc:
        for error in getattr(exc, "errors", [exc]):
            if error.path in _MOVABLE_FILES and "does not exist" in error.message:
                # Editing the path in recipe.yaml is refused (what it searches changed).
                error.message += (
                    " (the run's recipe names its files where they were when it started: "
                    "put the file back there, or a link to it, to resume)"
                )
        raise


def _recorded_address(run_dir: Path) -> str | None:
    """The cluster address a run's ``recipe.yaml`` names (``None``: embedded Ray, or
    ``auto``, whose error says what it found)."""
    try:
        said = load_recipe(run_dir / RECIPE_FILE).resources.address
    except RecipeError:
        return None
    return None if said in (None, "auto", "local") else said


def _unwritable_without_links(run_dir: Path) -> Path | None:
    """The first file or folder in ``run_dir`` this process cannot write, in one walk
    that refuses any symbolic link in it.

    A resume deletes the folders of trials that did not end, and writes ``best/``,
    the leaderboard and new trials: in a run directory holding a symbolic link
    (found by QA: ``trials/STRATEGY`` linked to a folder outside, as ``cp -r`` and
    ``tar`` keep it) it would delete and write where the link leads; graftune makes
    none, so a link is refused. Something inside that cannot be written (a run
    restored from a read-only copy) stopped a resume midway, in an internal error
    (found by QA): the caller refuses it where the run is to go on (a finished run
    is still shown). A run directory that is not writable itself is refused by its
    lock (holding_run_dir): nothing inside is then looked at for it.

    Raises:
        RunDirError: ``run_dir`` holds a symbolic link.
    """
    writable = os.access(run_dir, os.W_OK)
    found = None
    for folder, folders, files in os.walk(run_dir):
        for name in sorted(folders + files):
            path = Path(folder) / name
            if path.is_symlink():
                raise RunDirError(
                    f"{path} is a symbolic link (to {os.readlink(path)}): a resume deletes "
                    "and writes folders of the run directory, and would do it where the link "
                    "leads; replace the link with a copy of what it points to to resume"
                )
            if found is None and writable and not os.access(path, os.W_OK):
                found = path
    return found


#: What a finished run has in ``best/``; a resume saves the best model again without them.
_BEST_FILES = ("config.json", "model.keras")
#: What ``best/config.json`` must hold for ``predict``, ``export`` and a resume.
_BEST_KEYS = ("strategy", "trial_id", "class_names", "input_shape")
#: The recipe's keys that name a file, which a resume needs where they were.
_MOVABLE_FILES = ("data.source", "base.path", "base.weights")


def read_best_config(run_dir: str | Path) -> dict[str, Any]:
    """A run's ``best/config.json``, with what ``predict`` and ``export`` read of it.

    Raises:
        OSError: It cannot be read.
        ValueError: It is not JSON (``json.JSONDecodeError``), or it lacks a key
            or holds a value of another type (edited, or a damaged disk).
    """
    best = json.loads((Path(run_dir) / BEST_DIR / "config.json").read_text(encoding="utf-8"))
    if not isinstance(best, dict):
        raise ValueError(f"it holds a JSON {type(best).__name__}, not an object")
    missing = [key for key in _BEST_KEYS if key not in best]
    if missing:
        raise ValueError(f"it has no {missing[0]!r}")
    shape, names = best["input_shape"], best["class_names"]
    if not isinstance(shape, list) or not all(type(d) is int and d > 0 for d in shape):
        raise ValueError(f"its input_shape is {echoed(shape, 60)}, not a list of sizes")
    if not isinstance(names, list) or not names:
        raise ValueError(f"its class_names is {echoed(names, 60)}, not a list of classes")
    return best


def _read_finished(run_dir: Path) -> dict[str, Any]:
    """A run's ``finished.json``.

    Raises:
        OSError, ValueError: It cannot be read, or lacks the time the run ended.
    """
    finished = json.loads((run_dir / FINISHED_FILE).read_text(encoding="utf-8"))
    if not isinstance(finished, dict) or not isinstance(finished.get("time"), (int, float)):
        raise ValueError("it has no time the run ended")
    return finished


def _finished_outputs_problem(run_dir: Path) -> str | None:
    """What is wrong with what a finished run wrote at its end (its best model and
    leaderboard), which a resume writes again, or ``None``."""
    from orchestrator.leaderboard import FILES

    gone = [p for p in (run_dir / BEST_DIR / n for n in _BEST_FILES) if not p.is_file()]
    gone += [run_dir / FILES["csv"]] if not (run_dir / FILES["csv"]).is_file() else []
    if gone:
        return f"{gone[0]} is gone"
    try:
        read_best_config(run_dir)
    except (OSError, ValueError) as exc:
        return unreadable(run_dir / BEST_DIR / "config.json", exc)
    from orchestrator.bases import damaged_base_file

    damaged = damaged_base_file(run_dir / BEST_DIR / "model.keras")  # cut short: no archive
    return f"{run_dir / BEST_DIR}/{damaged}" if damaged is not None else None


def _finished_outcome(
    run_dir: Path, finished: dict[str, Any], echo: Callable[[str], None]
) -> RunOutcome:
    from orchestrator.leaderboard import read_leaderboard

    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(finished["time"]))
    echo(f"{run_dir}: the run finished at {when}; nothing to resume")
    best = read_best_config(run_dir)
    return RunOutcome(run_dir=run_dir.resolve(), leaderboard=read_leaderboard(run_dir), best=best)


def run_recipe(
    recipe: Recipe | str | Path | dict[str, Any],
    *,
    run_dir: str | Path | None = None,
    plugins: Iterable[ModuleType | object | str] = (),
    host: PluginHost | None = None,
    echo: Callable[[str], None] = log.info,
    listener: TrialListener | None = None,
    resume: bool = False,
    run_name: str | None = None,
) -> RunOutcome:
    """Run a recipe end to end and write its run directory.

    Args:
        recipe: A recipe object, the path of a recipe file, YAML text (a string
            with a line break, or one line that opens a mapping, ``{...}``: JSON
            too) or a dict (relative paths then from this folder).
        run_dir: Where to write; default a new folder under the recipe's ``output``.
        plugins: Extra plugin modules or objects to register (not installed ones).
        host: A ready plugin host (``plugins`` is ignored then).
        echo: Where progress lines go.
        listener: Also told of every trial that starts and ends (a progress view):
            a :class:`~orchestrator.tuning.ray_tune.TrialListener`; one with a
            ``trial_progressed`` method is told of each epoch too.
        resume: Continue the run in ``run_dir`` instead of starting one.
        run_name: The run directory's name under ``output`` or ``storage``
            (default ``NAME-YYYYmmdd-HHMMSS``).

    Returns:
        The run directory, the leaderboard and the best trial's summary.

    Raises:
        RecipeError: The recipe is wrong, or its data (or a pretrain stage's)
            cannot be read or split (nothing is written).
        RecipeError: Also when the base cannot be prepared (nothing is written):
            the :class:`BaseModelError` at its key of the ``base:`` section.
        RunFailed: Every trial failed (the leaderboard is still written).
        RunInterrupted: The user pressed Ctrl+C. Once: the search stops, the
            trials that ended are ranked and saved as usual, and
            ``resume_run`` runs the rest. Twice, or SIGTERM: the run stops at
            once (also resumable).
        RunDirError: ``run_dir`` is not empty or cannot be made, or ``resume``
            of a run that another process is running.
        RunInProgress: Another run is going on in this process (in another thread):
            one runs at a time (nothing is written).
        BackendMissing: Keras' backend is not installed (nothing is written).
        DiskFull: The disk (or quota) filled while the run wrote its files; the
            trials that ended are kept, and the run can be resumed.

    The process is left as it was found: Ray's loggers, routed to the run's
    ``ray.log`` while it runs, and the environment (Ray's start sets variables
    of its own) are put back; a Ray the run started is shut down, one that was
    up is left up. Keras' global settings (its dtype policy) and the global
    random generators are put back as they were
    (:func:`~orchestrator.trial.keeping_callers_state`). Its garbage collections
    walk only what the run made, and leave the caller's objects as collectable
    as they were (:func:`~orchestrator.trial.collecting_its_own_garbage`).
    """
    from orchestrator.accelerator import quiet_tensorflow
    from orchestrator.trial import collecting_its_own_garbage, keeping_callers_state
    from orchestrator.tuning.ray_start import kept_process_state, sigterm_stops_the_run

    # One at a time: a second run in another thread took the first's embedded Ray for
    # the caller's, the first shut it down under it, and Ray then ended the process
    # (found by QA, from a notebook's threads). Before anything of the process changes.
    if not _ONE_RUN.acquire(blocking=False):
        raise RunInProgress(
            "another graftune run is going on in this process (in another thread); a "
            "process runs one at a time: wait for it to end, or run this one in a process "
            "of its own (`graftune run`, a subprocess)"
        )
    try:
        # sigterm_stops_the_run: a Ctrl+C that Python drops (raised in a garbage
        # collection's callback) is noted, and the run stops at its next step all the
        # same, from Python as from the command line (found by QA: a run went on to the end).
        with (
            kept_process_state(),
            keeping_callers_state(),
            collecting_its_own_garbage(),
            sigterm_stops_the_run(),
            warnings_not_errors(),
        ):
            quiet_tensorflow()  # the driver traces models too (features, the best model)
            # Ray Tune imports MLflow where it is installed (its tagging of callbacks), and
            # MLflow's telemetry then wrote an installation id to ~/.config/mlflow, to be
            # sent later (found by QA): graftune sends nothing unasked. Put back after.
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            return _run_recipe(
                recipe,
                run_dir=run_dir,
                plugins=plugins,
                host=host,
                echo=echo,
                listener=listener,
                resume=resume,
                run_name=run_name,
            )
    finally:
        _ONE_RUN.release()


@contextlib.contextmanager
def warnings_not_errors() -> Iterator[None]:
    """Inside, the warnings filters without their ``error`` actions, the others kept
    in their order; put back as they were after.

    A session's ``warnings.simplefilter("error")`` (pytest's ``filterwarnings =
    error``) made a warning Keras gives in its own ``model.save()`` the built-in
    strategies' fault, and every run failed (found by QA); in a plugin author's
    tests, ``check_strategy`` said a correct strategy's model "cannot be saved".
    A run's warnings, and a conformance check's, stay warnings.
    """
    with warnings.catch_warnings():
        kept = [f for f in warnings.filters if f[0] != "error"]
        warnings.resetwarnings()
        for action, message, category, module, lineno in kept:
            warnings.filterwarnings(
                action,
                getattr(message, "pattern", message) or "",  # compiled, or a plain string
                category,
                getattr(module, "pattern", module) or "",
                lineno,
                append=True,
            )
        yield


#: Held while a run goes on in this process: one at a time.
_ONE_RUN = threading.Lock()


def _run_recipe(
    recipe: Recipe | str | Path | dict[str, Any],
    *,
    run_dir: str | Path | None,
    plugins: Iterable[ModuleType | object | str],
    host: PluginHost | None,
    echo: Callable[[str], None],
    listener: TrialListener | None,
    resume: bool,
    run_name: str | None,
) -> RunOutcome:
    from orchestrator.accelerator import check_backend
    from orchestrator.bases import pin_cache_dir
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.tuning.ray_start import forget_sigterm

    if isinstance(plugins, (str, bytes)) or not isinstance(plugins, Iterable):
        # A string was registered letter by letter ("plugin module 'm' failed to
        # import"), and a module was not iterable (found by QA).
        raise TypeError(
            "plugins takes a list of modules, objects or module names, not "
            f"{type(plugins).__name__} {plugins!r}: plugins=[{plugins!r}]"
        )
    forget_sigterm()
    pin_cache_dir()  # before Ray starts: its workers inherit it
    recipe = as_recipe(recipe)
    if host is None:
        host = get_plugin_manager(extra_plugins=plugins, disable=recipe.plugins.disable)
    check_recipe(recipe, host)
    check_backend()  # the driver builds models too, wherever the trials run
    host.keras_objects()  # registered before a base or a saved trial is loaded
    token = _EXPLICIT_PLUGINS.set(plugin_modules(host))
    try:
        return _run_checked(recipe, host, run_dir, echo, listener, resume, run_name)
    finally:
        _EXPLICIT_PLUGINS.reset(token)


def _run_checked(
    recipe: Recipe,
    host: PluginHost,
    run_dir: str | Path | None,
    echo: Callable[[str], None],
    listener: TrialListener | None,
    resume: bool,
    run_name: str | None,
) -> RunOutcome:
    from orchestrator.bases import using_cache

    if resume and run_dir is not None:
        _check_resumed_recipe(recipe, Path(run_dir))
        _check_resumed_backend(recipe, Path(run_dir))
    recipe = recipe.with_absolute_sources(host.data_sources, host.bases)
    from orchestrator.storage import plan_run

    # Before any work: a cluster that is down or refuses us, storage it cannot share.
    place = plan_run(recipe, run_dir=run_dir, run_name=run_name, resume=resume)
    if place.remote_parent is not None:
        from orchestrator.storage import check_reachable

        check_reachable(place.remote_parent)
    if not resume:
        _check_run_dir_can_be_made(recipe, place)
    if place.remote is not None:
        from orchestrator.storage import check_stored_place

        place = check_stored_place(place, resume=resume)  # never over another run

    with contextlib.ExitStack() as held:
        if resume:  # before any work too: a run that is still going on is left alone
            assert run_dir is not None  # resume_run gives it
            held.enter_context(holding_run_dir(Path(run_dir)))
            # Looked at again, held: a run that ended between resume_run's look and the
            # lock is finished (found by QA: its hooks were called a second time).
            done = Path(run_dir) / FINISHED_FILE
            if done.is_file() and _finished_outputs_problem(Path(run_dir)) is None:
                with contextlib.suppress(OSError, ValueError):
                    return _finished_outcome(Path(run_dir), _read_finished(Path(run_dir)), echo)
        if recipe.base is not None:  # `graftune cache clear` waits for the end
            # Only a run on a base reads the cache (its base, its features): another
            # leaves it free to clear (found by QA: refused while any run went on).
            held.enter_context(
                using_cache(
                    lambda root: echo(f"cache: waiting for `graftune cache clear` in {root}")
                )
            )
        ray_start = None
        from orchestrator.trial import collector_paused, freeze_the_runs_imports
        from orchestrator.tuning.ray_start import interrupts_held

        if recipe.search.backend == "ray":
            from orchestrator.tuning.ray_start import start_in_background

            # Whole, or not at all: a Ctrl+C in Ray's import left a half-imported Ray,
            # and every later run in the process failed (found by QA, from Python).
            with interrupts_held(), collector_paused():
                import ray  # noqa: F401
            # Embedded Ray starts while the data, the base and the pre-flight are prepared.
            ray_start = start_in_background(recipe.resources, preload_workers=_first_wave(recipe))
            said = (os.environ.get("RAY_ADDRESS") or "").strip()
            if ray_start is not None and said and said != "local":  # found by QA: unsaid
                echo(
                    f"note: RAY_ADDRESS is set ({said}), and this run starts Ray of its own "
                    "here, as its recipe names no resources.address; to run on that "
                    "cluster, give --address (HEAD:6379, or auto) or resources.address"
                )
        outcome = None
        try:
            with interrupts_held(), collector_paused():  # whole, or not at all
                import keras  # noqa: F401  (and its backend: seconds, as Ray starts)
            freeze_the_runs_imports()

            outcome = _run(
                recipe,
                host,
                place,
                ray_start,
                resume=resume,
                echo=echo,
                listener=listener,
                held=held,
            )
            return outcome
        except (OSError, EOFError) as exc:
            # EOFError: a file written when the disk was full, read back empty (Tune's
            # pickled trial errors); said as the full disk it comes from.
            if not _out_of_space(exc, place.local_dir):
                raise
            raise _disk_full(exc, place.local_dir) from exc
        finally:
            if ray_start is not None:
                try:
                    ray_start.close()
                except KeyboardInterrupt:
                    # Found by QA: a Ctrl+C while Ray shut down, after the run had
                    # finished, said "interrupted" of a whole run, and gave no result.
                    if outcome is None:
                        raise


def _out_of_space(exc: BaseException, run_dir: Path) -> bool:
    """Whether ``exc`` comes of a full disk (or quota) where the run writes."""
    if is_disk_full(exc):
        return True
    try:
        return shutil.disk_usage(run_dir).free < 2**20
    except OSError:
        return False


def _disk_full(exc: BaseException, run_dir: Path) -> DiskFull:
    filename = getattr(disk_full_error(exc) or exc, "filename", None)
    then = _resume_hint(run_dir) if (run_dir / RECIPE_FILE).is_file() else "run it again"
    return DiskFull(f"{no_room(exc, filename or run_dir)}, then {then}")


#: The lock file in a run directory, held by the process that runs or resumes it.
LOCK_FILE = _LOCK_FILE
#: The trials whose end the run's hooks were told of, one ``strategy/trial_id`` a line.
REPORTED_FILE = ".reported"


def read_reported(run_dir: Path) -> set[str]:
    """The ``strategy/trial_id`` keys of :data:`REPORTED_FILE` (none without it). A
    damaged byte costs at most a trial told of twice, never the resume."""
    record = Path(run_dir) / REPORTED_FILE
    text = record.read_text(encoding="utf-8", errors="replace") if record.is_file() else ""
    return set(text.split())


@contextlib.contextmanager
def holding_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` for this process: another run or resume of it is refused.

    An advisory lock (``flock``) on :data:`LOCK_FILE`, which the system
    releases however the process ends, so that a killed run can be resumed at
    once. Where the file system has no locks (some network mounts) the run
    goes on unguarded.

    Raises:
        RunDirError: Another process holds it (its pid and host are named), or
            its lock file cannot be opened (a read-only folder).
    """
    try:
        import fcntl  # noqa: F401 (a POSIX system: lock_at_once locks)
    except ImportError:  # not a POSIX system
        yield
        return
    try:
        handle = open(run_dir / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 (held below)
    except OSError as exc:  # a read-only folder, one not ours: "internal error" said nothing
        raise RunDirError(
            f"{run_dir} cannot be written: its lock file {LOCK_FILE} cannot be opened "
            f"({exc.strerror or exc}); a run writes in its run directory (copy it where "
            "you may write, and resume the copy)"
        ) from None
    with handle:  # held until the end
        try:
            # Tried over a second: run_holder (leaderboard, report, predict and export
            # ask it) holds the lock shared for an instant, and a resume in that
            # instant was refused as "in use" (found by QA, in the code).
            from orchestrator.bases import lock_at_once

            lock_at_once(handle, tries=20)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunDirError(
                f"{run_dir} is in use by another graftune run ({holder}); "
                "let it finish or stop it, then resume it"
            ) from None
        except OSError as exc:
            log.debug("run directory %s not locked: %s", run_dir, exc)
        else:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
        yield


def run_holder(run_dir: Path) -> str | None:
    """Who holds ``run_dir`` now (``pid N on HOST``): a run still going; ``None`` if none.

    Holding :data:`LOCK_FILE` shared for an instant tells, without a wait,
    whether :func:`holding_run_dir` holds it elsewhere.
    """
    try:
        import fcntl
    except ImportError:  # not a POSIX system: runs are not locked
        return None
    try:
        handle = open(Path(run_dir) / LOCK_FILE, encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError:  # no lock file: no run ever held it
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        except OSError:  # a file system without locks
            return None
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _run(
    recipe: Recipe,
    host: PluginHost,
    place: RunPlace,
    ray_start: BackgroundStart | None,
    *,
    resume: bool,
    echo: Callable[[str], None],
    listener: TrialListener | None,
    held: contextlib.ExitStack,
) -> RunOutcome:
    from orchestrator.bases import flat_output_warning, prepare_base
    from orchestrator.preflight import (
        check_strategies,
        refuse_large_grid,
        refuse_outside_cuts,
        space_notes,
        strategy_defaults,
        strategy_space,
    )
    from orchestrator.space import Fixed, merge_spaces, resolve_space, start_config
    from orchestrator.storage import publish
    from orchestrator.strategy import SpaceContext
    from orchestrator.trial import TrialSpec

    if ray_start is not None:  # before the data and the base: what embedded Ray will have
        from orchestrator.tuning.ray_start import embedded_cpus, embedded_gpus

        _check_a_trial_fits(recipe, has=(embedded_cpus(recipe.resources), embedded_gpus()))
    dataset = check_recipe_data(recipe, host)  # its errors name the file, line and data key
    from orchestrator.submit import recorded_source

    # As the run's recipe.yaml names it: a job's working directory is deleted.
    echo(f"data: {recorded_source(recipe, place.local_dir)}: {dataset.describe()}")
    from orchestrator.data import data_notes
    from orchestrator.predict import table_features

    for note in data_notes(dataset, table_features(recipe.data, recipe.base_dir)):
        log.warning("data: %s", note)
    if resume:
        scheme = recipe.data.source.partition(":")[0]
        _check_resumed_data(dataset, place.local_dir, _plugins_own(host.data_sources, scheme))
    strategies = {name: host.strategy(name) for name in recipe.strategies}
    base_info = None
    if recipe.base is not None and any(s.requires_base for s in strategies.values()):
        # Before minutes of pretraining; what it leaves out of them is said.
        prepared = check_pretrain_input(recipe, host, dataset, said=lambda m: echo(f"base: {m}"))
        echo(f"base: preparing {recipe.base.kind} ...")
        try:
            base_info = prepare_base(
                recipe.base,
                host.bases,
                dataset.task,
                seed=recipe.seed,
                base_dir=recipe.base_dir,
                data_sources=host.data_sources,
                echo=echo,
                prepared=prepared,
                sample=dataset.x_train,
            )
        except DataError as exc:  # in the data a pretrain: stage learns from
            if recipe.base.pretrain is None:
                raise
            raise recipe.data_error(("base", "pretrain", "data"), exc) from None
        except BaseModelError as exc:  # found building it: the weights, the data's shape
            raise recipe.base_error(exc) from None
        except OSError as exc:  # the cache folder (its lock, its entry) cannot be written
            from orchestrator.bases import CACHE_ENV, cache_dir
            from orchestrator.feature_cache import cache_folder_problem

            problem = cache_folder_problem()
            if problem is not None:
                raise OutputPathError(problem) from exc
            raise OutputPathError(
                f"cannot keep the base in graftune's cache folder {cache_dir()} "
                f"(${CACHE_ENV}, default ~/.cache/graftune): {exc.strerror or exc}"
                + (f": {exc.filename}" if exc.filename else "")
            ) from exc
        points = "cut point" if base_info.n_cut_points == 1 else "cut points"
        echo(
            f"base: {base_info.description}, {base_info.n_cut_points} {points}, "
            f"output {base_info.output_shape}"
        )
        flat = flat_output_warning(base_info, recipe.base)
        if flat is not None:  # every head sits on the base's output: said once, before trials
            echo(f"warning: {flat}")

    spaces, starts = {}, {}
    for name, strategy in strategies.items():
        context = SpaceContext(
            task=dataset.task, base=base_info if strategy.requires_base else None
        )
        owner = host.strategies.owner(name)
        own = strategy_space(strategy, context, owner)
        checked = strategy_space(strategy, SpaceContext(), owner)  # what validate read
        if set(own) != set(checked):  # the recipe's keys were checked against the other
            raise PluginError(
                f"strategy {name!r} from plugin {owner}: search_space() names other "
                f"parameters for the run's task ({', '.join(sorted(own))}) than for an empty "
                f"SpaceContext ({', '.join(sorted(checked))}), which graftune validate and "
                "the recipe's keys are checked with: they must be the same either way"
            )
        cuts = base_info.n_cut_points if base_info else None
        merged = merge_spaces(own, recipe.shared_space(), recipe.strategy_space(name))
        try:
            spaces[name] = resolve_space(merged, cuts)
        except ValueError as exc:
            raise recipe.error(("strategies", name, "space"), str(exc)) from None
        if cuts is not None:
            refuse_outside_cuts(recipe, name, own, cuts)
        refuse_large_grid(recipe, name, spaces[name])  # with "all" counted now
        if recipe.search.starts_from_defaults:
            with contextlib.suppress(ValueError):  # "all" without a base: checked as is
                own = resolve_space(own, cuts)
            defaults = strategy_defaults(strategy, context, owner, own, host.said)
            start = start_config(spaces[name], defaults)
            starts[name] = {
                k: v for k, v in start.items() if not isinstance(spaces[name][k], Fixed)
            }
    for name, strategy in strategies.items():
        owner = host.strategies.owner(name)
        for line in space_notes(strategy, spaces[name], recipe.search.max_epochs, owner):
            echo(line)
    check_strategies(
        strategies,
        spaces,
        dataset.task,
        base_info,
        host,
        pickled=recipe.search.backend == "ray",
        metric=recipe.search.metric,
    )
    if ray_start is not None and ray_start.wait_up():  # embedded Ray: what it has is all
        _check_a_trial_fits(recipe)
    elif recipe.search.backend == "ray" and _started_here():
        # The caller's ray.init() made a one-node Ray nothing joins (found by QA: the
        # run waited for ever, where embedded Ray's was refused).
        _check_a_trial_fits(recipe, own=True)
    repeated = _repeats_note(recipe, spaces)
    if repeated is not None:
        echo(repeated)

    from orchestrator.trial import collector_paused, freeze_the_runs_imports
    from orchestrator.tuning.ray_start import interrupts_held

    # Ray Tune's or keras-tuner's import, whole or not at all.
    with interrupts_held(), collector_paused():
        if recipe.search.backend == "ray":
            from orchestrator.tuning import ray_tune as backend
        else:
            from orchestrator.tuning import keras_tuner as backend  # type: ignore[no-redef]
    freeze_the_runs_imports()
    if recipe.search.backend != "ray":
        for name in strategies:
            backend.check_space(recipe, spaces[name], name)
        backend.check_resources(recipe, echo)

    # What the run makes: its folder (a stamped name is always new), its output folder too.
    made = _first_missing(place.local_dir.parent)
    made_own = place.stamped or not place.local_dir.exists()
    place = _open_run_dir(recipe, place, resume)
    run_dir = place.local_dir
    if not resume:
        held.enter_context(holding_run_dir(run_dir))
    else:
        _remove_stray_temporaries(run_dir)
    echo(f"run: {run_dir}" + (" (resumed)" if resume else ""))
    from orchestrator.environment import record_environment

    # First: it records the --plugin modules that a killed run's resume hints name.
    changed = record_environment(run_dir, host, resumed=bool(resume))
    if changed is not None:
        log.warning("%s", changed)
    if place.remote is not None:
        echo(f"storage: {place.remote}")
        # Now, not at the end only: a run stopped or killed on the way (a job
        # `graftune jobs stop` ends) is fetched and resumed from what is stored.
        try:
            publish(place)
        except StorageError:
            if not resume:  # found by QA: a storage that cannot be written left a run folder
                _undo_run_dir(run_dir, made or (run_dir if made_own else None))
            raise
    from orchestrator.leaderboard import atomic_write_text

    if base_info is not None:
        if resume:
            assert recipe.base is not None
            pretrain = recipe.base.pretrain
            _check_resumed_base(
                base_info,
                run_dir,
                _plugins_own(host.bases, recipe.base.provider),
                None
                if pretrain is None
                else _plugins_own(host.data_sources, pretrain.data.source.partition(":")[0]),
                None if pretrain is None else pretrain.data.source,
            )
        atomic_write_text(run_dir / BASE_FILE, json.dumps(base_info.to_json(), indent=2))
    if not resume or not (run_dir / DATA_FILE).is_file():  # a run made before it had one
        atomic_write_text(run_dir / DATA_FILE, json.dumps(_data_record(dataset), indent=1))
    if dataset.rows is not None and (not resume or not (run_dir / SPLIT_FILE).is_file()):
        atomic_write_text(run_dir / SPLIT_FILE, split_table(dataset))
    host.notify("graftune_run_started", recipe=recipe, run_dir=run_dir)
    events = _RunEvents(host, run_dir, recipe.search.metric, echo, listener, stored=_storing(place))
    if listener is not None and hasattr(listener, "plan"):
        listener.plan(
            {name: _planned(recipe, name, spaces[name])[0] for name in strategies},
            metric=recipe.search.metric,
            mode=recipe.search.direction,
            time_budget_s=recipe.search.time_budget_s,
            slots=_slots(recipe, strategies, embedded=ray_start is not None),
        )

    started_ray = False
    try:
        if ray_start is not None:
            try:
                started_ray = ray_start.join(run_dir / "ray.log")
                if recipe.resources.dashboard and ray_start.dashboard_url:
                    # Found by QA: said only in ray.log (two runs' dashboards: two ports).
                    url = ray_start.dashboard_url
                    echo(f"dashboard: {url if '://' in url else 'http://' + url}")
            except Exception as exc:  # Ray's own: "internal error" said nothing of what to do
                from orchestrator.errors import RayStartError

                first = (str(exc).strip().splitlines() or [""])[0]
                # Ray's own logs, where its node's processes say why (found by QA:
                # ray.log alone, which had only the driver's side).
                from orchestrator.tuning.ray_start import ray_logs_folder

                logs = ray_logs_folder()
                raise RayStartError(
                    f"embedded Ray did not start: {type(exc).__name__}: {first} (Ray's log: "
                    f"{run_dir / 'ray.log'}; its node's own: {logs}); nothing was trained, "
                    f"{_resume_hint(run_dir)}"
                ) from exc
        elif recipe.search.backend == "ray":
            from orchestrator.tuning.ray_start import connect_to_cluster

            # A cluster (embedded Ray was started in the background), or Ray already up.
            started_ray = connect_to_cluster(recipe.resources, log_file=run_dir / "ray.log")
            if recipe.resources.address:
                _note_embedded_only(recipe, echo)
            _check_a_trial_fits(recipe, echo)  # a cluster may grow: said, not refused
    except KeyboardInterrupt:  # while waiting for Ray: the run directory is made
        raise _stopped_at_once(run_dir, recipe, []) from None

    results: list[TrialResult] = []
    done: RunOutcome | None = None
    interrupted: tuple[str, SearchInterrupted] | None = None
    try:
        for name, strategy in strategies.items():
            done_file = run_dir / "trials" / name / SEARCH_DONE_FILE
            if done_file.is_dir():  # found by QA: the search ran, then could not be marked
                raise RunDirError(
                    f"{done_file} is a folder, where graftune marks that {name}'s search "
                    "ended: remove it to resume (the trials that ended are kept)"
                )
            finished = _read_search(done_file) if resume and done_file.is_file() else None
            died = [r for r in finished or () if runs_again(r)]
            if died and recipe.search.backend == "ray":
                # As in a search that did not end (Tune tries such a trial again): a run
                # whose every trial failed so is resumed to run them, not to read them.
                echo(
                    f"{name}: {len(died)} trial{'s' * (len(died) != 1)} whose worker died "
                    f"run{'s' * (len(died) == 1)} again"
                )
                done_file.unlink()
                finished = None
            if finished is not None:
                n = len(finished)
                echo(f"{name}: finished before ({n} trial{'s' * (n != 1)}), not run again")
                for result in finished:
                    events.replay(result)
                events.search_finished(name, len(finished))
                results += finished
                continue
            if resume:  # its trials that ended before: the progress view counts them
                kept = [
                    result
                    for result in ended_trials(run_dir / "trials" / name)
                    if recipe.search.backend != "ray" or not runs_again(result)
                ]
                for result in kept:
                    events.replay(result)
                # Those told of before that run again (a result.json set aside, a folder
                # gone, a worker that died): the hooks hear of their new end.
                events.forget(name, keep={result.trial_id for result in kept})
            spec = TrialSpec(
                strategy=strategy,
                base=base_info if strategy.requires_base else None,
                max_epochs=recipe.search.max_epochs,
                batch_size=recipe.search.batch_size,
                seed=recipe.seed,
                metric=recipe.search.metric,
                cpus=recipe.resources.cpus_per_trial,
                gpus=recipe.resources.gpus_per_trial,
                run_dir=run_dir,
                mixed_precision=recipe.resources.mixed_precision,
                feature_cache=recipe.cache,
                storage=place.remote,
                keras_backend=chosen_backend(),
                custom_objects=_plugin_keras_objects(host),
            )
            num_samples = recipe.strategy_samples(name)
            first = "; the first at its defaults" if starts.get(name) else ""
            planned, what = _planned(recipe, name, spaces[name])
            echo(f"{name}: searching {what} over {_describe(spaces[name])}{first}")
            events.search_started(name)
            try:
                found = backend.run_search(
                    recipe,
                    spec,
                    spaces[name],
                    dataset,
                    num_samples=num_samples,
                    listener=events,
                    resume=resume,
                    start=starts.get(name),
                    **_prestart(recipe, name, planned),
                )
            except SearchInterrupted as exc:  # Ctrl+C: keep what ended, stop here
                results += exc.finished
                interrupted = (name, exc)
                break
            budget = recipe.search.time_budget_s
            if recipe.search.backend == "ray" and budget is not None and len(found) < planned:
                # Tune starts no trial once the budget is spent (keras_tuner says its own).
                left = planned - len(found)
                events.warn(
                    f"{name}: search.time_budget_s ({budget:g} s) ran out: {len(found)} of "
                    f"{planned} trials ran, "
                    + (
                        "the other was not started"
                        if left == 1
                        else f"the other {left} were not started"
                    )
                )
            _write_search(done_file, found)
            events.search_finished(name, len(found))
            results += found
    except KeyboardInterrupt:  # a second Ctrl+C, or SIGTERM (see ray_start)
        # Quickly: a stopped job's driver is killed 3 s after its SIGTERM.
        _storing(place)()
        raise _stopped_at_once(run_dir, recipe, results, events) from None
    finally:
        from orchestrator.tuning.ray_start import signals_seen

        seen = signals_seen()
        if ray_start is not None:
            ray_start.shutdown_soon()  # while the leaderboard and report are written
        elif started_ray:
            from orchestrator.tuning import ray_start as ray_control

            ray_control.shutdown()

    # Ctrl+C (a first one after the last search, or a second) or SIGTERM while the
    # run is ranked and saved: resumable, and said so.
    try:
        if signals_seen() != seen:
            # One that came during the collection before Ray's shutdown: raised in a
            # finaliser, where Python drops it (the run went on to its end, exit 0).
            raise KeyboardInterrupt
        from orchestrator.leaderboard import best_row, build_leaderboard, write_leaderboard

        frame = build_leaderboard(
            results, metric=recipe.search.metric, mode=recipe.search.direction
        )
        write_leaderboard(frame, run_dir)
        best = best_row(frame)
        summary = (
            _save_best(run_dir, best, results, dataset.task, recipe, base_info)
            if best is not None
            else None
        )
        if summary is not None and recipe.keep_models == "best" and interrupted is None:
            _drop_models(run_dir, frame, place.remote)
        from orchestrator.report import write_report_safely

        # Logs a failure: a report never fails the run. A stopped run's page says so.
        write_report_safely(run_dir, stopped=interrupted is not None)
        if interrupted is not None:
            from orchestrator.tuning.ray_start import terminated

            # A stopped job's run is fetched from its storage: what ended goes there now.
            try:
                publish(place, echo)
            except Exception as exc:  # said; the interruption is what the run reports
                log.warning("could not store the stopped run in %s: %s", place.remote, exc)
            at = list(strategies).index(interrupted[0])
            raise RunInterrupted(
                _interrupted_message(
                    run_dir,
                    *interrupted,
                    earlier=list(strategies)[:at],
                    later=list(strategies)[at + 1 :],
                    ended=len(results),
                ),
                run_dir=run_dir,
                leaderboard=frame,
                by_sigterm=terminated(),
            )
        try:
            host.notify("graftune_run_finished", leaderboard=frame, run_dir=run_dir)
        except KeyboardInterrupt:
            # The run is whole: a Ctrl+C (or SIGTERM) now stops the hooks, not the run,
            # which ends as it would (found by QA: a slow reporter's hook, stopped, made
            # the run "interrupted", and its resume told every hook again).
            log.warning(
                "stopped while the plugins heard that the run finished (graftune_run_finished "
                "hooks): one may not have done its work; the run itself is whole"
            )
        if summary is None:  # resumable: it ends the same way, with its summary, at no cost
            publish(place, echo)
            raise RunFailed(
                _failure_summary(
                    results, run_dir, recipe.search.time_budget_s, metric=recipe.search.metric
                ),
                run_dir=run_dir,
                leaderboard=frame,
            )
        from orchestrator.leaderboard import atomic_write_text

        finished = {
            "time": round(time.time(), 3),
            "trials": len(frame),
            "best": {key: summary[key] for key in ("strategy", "trial_id")},
        }
        # Written before the upload, so the stored copy has it too (a fetched run is
        # finished); taken back if the upload fails, so that --resume uploads again.
        atomic_write_text(run_dir / FINISHED_FILE, json.dumps(finished, indent=2, default=str))
        try:
            publish(place, echo)
        except BaseException:
            (run_dir / FINISHED_FILE).unlink(missing_ok=True)
            raise
        done = RunOutcome(run_dir=run_dir, leaderboard=frame, best=summary, stored=place.remote)
        return done
    except KeyboardInterrupt:
        if done is not None:  # finished and stored: a Ctrl+C now does not undo it (QA)
            return done
        raise _stopped_at_once(run_dir, recipe, results, events) from None


def _storing(place: RunPlace) -> Callable[[], None]:
    """Upload the run's state to its storage URI (not its inputs, uploaded as it began);
    a failure is logged: the run goes on, and its end uploads again."""
    from orchestrator.storage import publish
    from orchestrator.submit import INPUTS_DIR

    def store() -> None:
        if place.remote is None:
            return
        try:
            publish(place, leave_out=(INPUTS_DIR,))
        except Exception as exc:
            log.warning("could not store the run's state in %s: %s", place.remote, exc)

    return store


def _stopped_at_once(
    run_dir: Path, recipe: Recipe, results: list[TrialResult], events: _RunEvents | None = None
) -> RunInterrupted:
    """A run stopped at once (a second Ctrl+C, SIGTERM), with the leaderboard of
    the trials that ended in this process, ranked but not written (found by QA:
    ``None`` under Ray, where keras_tuner's stop gave an empty one): ``results``,
    and those that ended in the search it stopped, which ``events`` heard of (found
    by QA: left out, where keras_tuner's stop and a first Ctrl+C list them)."""
    from orchestrator.leaderboard import build_leaderboard
    from orchestrator.tuning.ray_start import terminated

    # Each trial once: one of the search it stopped in may be in results too (its
    # first Ctrl+C kept them, the second stopped the saving).
    searched = [] if events is None else events.ended_in_search()
    ended = {(result.strategy, result.trial_id): result for result in [*results, *searched]}
    frame = build_leaderboard(
        list(ended.values()), metric=recipe.search.metric, mode=recipe.search.direction
    )
    return RunInterrupted(
        "stopped at once; the trials that had ended are kept\n" + _resume_hint(run_dir),
        run_dir=run_dir,
        leaderboard=frame,
        by_sigterm=terminated(),
    )


def resume_hint(run_dir: Path, plugins: tuple[str, ...]) -> str:
    """How to continue the stopped run in ``run_dir``, which loads ``plugins`` by name."""
    return _resume_hint(run_dir, plugins)


def _resume_hint(run_dir: Path, names: tuple[str, ...] | None = None) -> str:
    """How to continue a stopped run: in place, or for a submitted job (whose run
    directory is in a working folder Ray deletes) from its storage. ``names``: the
    plugins it loads by name (default: this run's, ``--plugin``)."""
    from orchestrator.submit import SUBMITTED_ENV

    if names is None:
        names = _EXPLICIT_PLUGINS.get()
    plugins = "".join(f" --plugin {shlex.quote(name)}" for name in names)
    if os.environ.get(SUBMITTED_ENV):
        from orchestrator.storage import stored_uri

        # A submitted run has storage, and is continued as a job, from its place
        # there: the URI it records, or (its recipe.yaml names a folder) the folder
        # it runs in (found by QA: the job's log said to resume a fetched copy, which
        # stays a copy). One stopped before it recorded either, by its job's id.
        place = stored_uri(run_dir)
        if place is None and _stored_in_a_folder(run_dir):
            place = str(run_dir)
        return (
            "continue it with: graftune submit --resume "
            f"{shlex.quote(place or run_dir.name)} --address DASHBOARD{plugins}"
        )
    # A run made on a cluster goes back there only where the user says so (resume_run).
    address = _recorded_address(run_dir)
    where = f" --address {shlex.quote(address)}" if address else ""
    return f"continue it with: graftune run --resume {shlex.quote(str(run_dir))}{where}{plugins}"


def _stored_in_a_folder(run_dir: Path) -> bool:
    """Whether the run's ``recipe.yaml`` names a folder (not a URI) as its storage."""
    from orchestrator.storage import is_uri

    storage = recorded_section(run_dir, "storage")
    path = storage.get("path") if isinstance(storage, dict) else storage
    return isinstance(path, str) and bool(path.strip()) and not is_uri(path)


def recorded_section(run_dir: Path, section: str) -> Any:
    """A section of the run's ``recipe.yaml`` as written, not validated (``None``:
    none, or a file that cannot be read): for what is said of a run before it is
    loaded, or where it may not load."""
    import yaml

    try:
        recorded = yaml.safe_load((run_dir / RECIPE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return recorded.get(section) if isinstance(recorded, dict) else None


#: The run's plugins loaded by module name (``--plugin``): its resume needs them too.
_EXPLICIT_PLUGINS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "graftune_explicit_plugins", default=()
)


def _first_wave(recipe: Recipe) -> int:
    """How many trials the first search runs at once on embedded Ray."""
    return _wave(recipe, next(iter(recipe.strategies)))


def _wave(recipe: Recipe, name: str) -> int:
    """How many trials a strategy's search runs at once on embedded Ray."""
    from orchestrator.tuning.ray_start import embedded_cpus

    resources = recipe.resources
    wave = max(1, int(embedded_cpus(resources) // resources.cpus_per_trial))
    if recipe.search.max_concurrent_trials:
        wave = min(wave, recipe.search.max_concurrent_trials)
    if recipe.search.algorithm != "grid":  # a grid's samples repeat the whole grid
        wave = min(wave, recipe.strategy_samples(name))
    return wave


def _slots(recipe: Recipe, strategies: Iterable[str], *, embedded: bool) -> dict[str, int]:
    """How many trials each strategy's search runs at once, where the run knows it:
    one on keras-tuner, :func:`_wave`'s on embedded Ray with no GPUs asked (a
    cluster's room, and GPUs', are found as trials start)."""
    if recipe.search.backend == "keras_tuner":
        return dict.fromkeys(strategies, 1)
    if embedded and not recipe.resources.gpus_per_trial:
        return {name: _wave(recipe, name) for name in strategies}
    return {}


def _prestart(recipe: Recipe, name: str, planned: int) -> dict[str, Any]:
    """``run_search``'s ``prestart`` on Ray: the next strategy's first trials' workers.

    ``planned``: the trials ``name``'s search runs (:func:`_planned`).
    """
    names = list(recipe.strategies)
    following = names[names.index(name) + 1 :]
    if recipe.search.backend != "ray" or not following:
        return {}
    from orchestrator.tuning.ray_tune import Prestart

    return {"prestart": Prestart(_wave(recipe, following[0]), planned, _wave(recipe, name))}


def _planned(recipe: Recipe, name: str, space: dict[str, Any]) -> tuple[int, str]:
    """How many trials a strategy's search will run, and how to say so.

    ``num_samples`` is the count of a random or Bayesian search only: a grid
    runs each of its points (Ray: ``num_samples`` times each), and keras-tuner's
    Hyperband sizes its brackets from ``max_epochs`` and the reduction factor.
    """
    from orchestrator.space import distinct_configurations, grid_sizes

    search = recipe.search
    samples = recipe.strategy_samples(name)
    keras_tuner = search.backend == "keras_tuner"
    if keras_tuner and search.scheduler == "hyperband":
        from orchestrator.tuning.keras_tuner import hyperband_trials

        factor = max(2, round(search.reduction_factor))
        count = hyperband_trials(search.max_epochs, search.reduction_factor)
        return count, (
            f"{count} trial{'s' * (count != 1)} (keras-tuner's Hyperband for max_epochs "
            f"{search.max_epochs} and "
            f"reduction_factor {factor}; num_samples does not apply)"
        )
    if search.algorithm == "grid":
        points = math.prod(grid_sizes(space).values())  # resolved: no "all" left out
        repeats = 1 if keras_tuner else samples
        more = f" (each run {repeats} times)" if repeats > 1 else ""
        if keras_tuner and samples > 1:  # said, as Hyperband's is (found by QA)
            more = f" (keras-tuner runs each once; num_samples {samples} does not apply)"
        return points * repeats, f"a grid of {points} configuration{'s' * (points != 1)}{more}"
    distinct = distinct_configurations(space)
    if keras_tuner and distinct is not None and distinct < samples:
        # keras-tuner never draws one configuration twice: it stops when none is left.
        return distinct, (
            f"{distinct} trial{'s' * (distinct != 1)} (the space has {distinct} "
            f"configuration{'s' * (distinct != 1)}, and keras-tuner tries each once; "
            f"num_samples is {samples})"
        )
    return samples, f"{samples} trial{'s' * (samples != 1)}"


def _repeats_note(recipe: Recipe, spaces: dict[str, dict[str, Any]]) -> str | None:
    """A note where Ray runs trials that come out the same each time.

    Under Ray ``num_samples`` repeats a grid; only its continuous dimensions
    are sampled anew each repeat. Every trial trains with the recipe's
    ``seed``, so a repeat of a grid with none trains the same configurations to
    the same scores; so do the ``num_samples`` trials of a random or Bayesian
    search whose space fixes every dimension (keras-tuner runs such a
    configuration once, and says its search ended short).
    """
    from orchestrator.space import Float, LogFloat, single_value

    search = recipe.search
    if search.backend != "ray":
        return None
    grid = search.algorithm == "grid"

    def same_each_time(space: dict[str, Any]) -> bool:
        if grid:  # each repeat draws the continuous dimensions anew
            return not any(
                isinstance(dim, (Float, LogFloat)) and not single_value(dim)
                for dim in space.values()
            )
        return all(single_value(dim) for dim in space.values())  # one configuration

    counts = {name: recipe.strategy_samples(name) for name in spaces}
    alike = {
        name: counts[name]
        for name, space in spaces.items()
        if counts[name] > 1 and same_each_time(space)
    }
    few = {} if grid else _few_configurations(spaces, counts)
    if not alike:
        return _few_note(few)
    if not grid:
        if len(alike) == 1:
            ((name, count),) = alike.items()
            whose = f"{name}'s space has nothing to search (every dimension is fixed): its {count}"
        else:
            names = ", ".join(alike)
            whose = (
                f"the spaces of {names} have nothing to search (every dimension is fixed): their"
            )
        said = (
            f"note: {whose} trials (num_samples) run one configuration with the same seed, "
            "to the same scores; num_samples: 1 runs it once"
        )
        return "\n".join([said, *filter(None, [_few_note(few)])])
    if len(alike) == 1:
        ((name, count),) = alike.items()
        whose = f"{name}'s grid has no continuous dimension: its {count} repeats"
    else:
        names = ", ".join(alike)
        whose = f"the grids of {names} have no continuous dimension: their repeats"
    return (
        f"note: {whose} (num_samples) run the same configurations with the same seed, to "
        "the same scores; num_samples: 1 runs each point once"
    )


def _few_configurations(
    spaces: dict[str, dict[str, Any]], counts: dict[str, int]
) -> dict[str, tuple[int, int]]:
    """``(configurations, trials)`` of each strategy whose random or Bayesian search
    under Ray has more trials than its discrete space has configurations (more
    than one: one is :func:`_repeats_note`'s)."""
    from orchestrator.space import distinct_configurations

    few = {}
    for name, space in spaces.items():
        try:
            distinct = distinct_configurations(space)
        except (TypeError, ValueError):  # validate's space: frozen_layers up to "all"
            continue
        if distinct is not None and 1 < distinct < counts[name]:
            few[name] = (distinct, counts[name])
    return few


def _few_note(few: dict[str, tuple[int, int]]) -> str | None:
    """The note on :func:`_few_configurations` (found by QA: under Ray, 5 trials of a
    2-configuration space ran 3 repeats to the same scores; keras-tuner says it)."""
    if not few:
        return None
    said = "; ".join(
        f"{name}'s space has {distinct} configurations for its {count} trials"
        for name, (distinct, count) in few.items()
    )
    return (
        f"note: {said} (num_samples): Ray draws them with repeats, and a repeat trains with "
        "the same seed to the same scores; num_samples no more than the configurations, or "
        "algorithm: grid, tries each once"
    )


def _not_empty(path: Path) -> str:
    """Why a run cannot start in ``path``, and what to do instead."""
    if (path / RECIPE_FILE).is_file():
        holder = run_holder(path)
        if holder is not None:  # found by QA: --resume, as said, was refused in turn
            return (
                f"run directory {path} is in use by a graftune run going now ({holder}): "
                "choose another run directory (--run-dir or --run-name; from Python, "
                "run_dir= or run_name=)"
            )
        return (
            f"run directory {path} exists and is not empty (`graftune run --resume` continues "
            "it; from Python, resume_run)"
        )
    return f"{path} exists and is not empty, and is no run directory: choose a new or empty folder"


def _check_run_dir_can_be_made(recipe: Recipe, place: RunPlace) -> None:
    """Before any work: refuse a run directory that cannot be made where it would go.

    The nearest folder of its path that exists must be a folder this process may
    write in. What only the attempt shows (a read-only mount) is reported when
    the directory is made, by :func:`_open_run_dir`.
    """
    path = place.local_dir.absolute()
    too_long = next((part for part in path.parts if len(os.fsencode(part)) > 255), None)
    if too_long is not None:  # os.stat raised ENAMETOOLONG: "internal error", exit 1
        raise _run_dir_error(
            recipe,
            place,
            f"cannot make the run directory {path}: its name {too_long[:40]}... is "
            f"{len(os.fsencode(too_long))} bytes, and a file system allows 255",
        )
    if not place.stamped and path.is_dir() and any(path.iterdir()):  # --run-dir, --run-name
        raise RunDirError(_not_empty(path))
    inside = run_dir_around(path)
    if inside is not None:
        raise _inside_a_run(recipe, place, path, inside)
    problem = cannot_make_in(path)
    if problem is not None:
        raise _run_dir_error(recipe, place, f"cannot make the run directory {path}: {problem}")


def _inside_a_run(recipe: Recipe, place: RunPlace, path: Path, inside: Path) -> GraftuneError:
    return _run_dir_error(
        recipe,
        place,
        f"cannot make the run directory {path}: {inside_a_run(inside)}",
    )


def _started_here() -> bool:
    """Whether this process runs a Ray it started itself (``ray.init()`` without an
    address: a head node of its own, which no other node joins)."""
    if "ray" not in sys.modules:
        return False
    import ray

    if not ray.is_initialized():
        return False
    node = getattr(ray._private.worker, "_global_node", None)
    return bool(node is not None and getattr(node, "head", False))


def _note_embedded_only(recipe: Recipe, echo: Callable[[str], None]) -> None:
    """Say which of embedded Ray's settings a run on a cluster does not use, where the
    recipe sets them (found by QA: said under keras_tuner, and not on a cluster)."""
    from orchestrator.recipe import changed_keys

    unused = changed_keys(recipe.resources, "resources", ("num_cpus", "dashboard"))
    if unused:
        echo(
            f"note: {' and '.join(unused)} {'is' if len(unused) == 1 else 'are'} for embedded "
            "Ray; a cluster has its own CPUs and dashboard (ray start --num-cpus, "
            "http://HEAD:8265)"
        )


def _check_a_trial_fits(
    recipe: Recipe,
    echo: Callable[[str], None] | None = None,
    *,
    has: tuple[float, float | None] | None = None,
    own: bool = False,
) -> None:
    """Refuse (or with ``echo``, warn of) a trial no node of Ray can run: Tune waits for ever.

    Args:
        echo: Warn through it instead of refusing (a cluster may grow).
        has: The CPUs and GPUs of the one node embedded Ray will have, to check
            before it is up (GPUs ``None``: not known yet); default: ask Ray.

    Raises:
        RecipeError: At the ``resources`` key at fault, when no ``echo`` is given.
    """
    from orchestrator.cluster import trial_does_not_fit

    resources = recipe.resources
    cpus, gpus = resources.cpus_per_trial, resources.gpus_per_trial
    if has is not None and has[1] is None:
        gpus = 0  # checked once Ray is up
    nodes = None if has is None else [{"CPU": has[0], "GPU": has[1] or 0}]
    problem = trial_does_not_fit(cpus, gpus, nodes)
    if problem is None:
        return
    key, what = problem
    if echo is not None:
        echo(f"warning: {what}; the trials wait until such a node joins the cluster")
        return
    if own:
        raise recipe.error(
            ("resources", key),
            f"{what} (the Ray this process started with ray.init(), one node that no other "
            "joins): lower it, or start Ray with more (ray.init(num_cpus=..., num_gpus=...))",
        )
    fix = (
        "set gpus_per_trial: 0, or run on a cluster with GPUs (--address)"
        if key == "gpus_per_trial"
        else "lower it, or give embedded Ray more with resources.num_cpus"
    )
    raise recipe.error(("resources", key), f"{what} (embedded Ray on this machine): {fix}")


def _run_dir_error(recipe: Recipe, place: RunPlace, message: str) -> GraftuneError:
    """A :class:`RunDirError` for a ``--run-dir``; a recipe error at the key that chose it."""
    if not place.stamped:
        return RunDirError(message)
    from orchestrator.storage import is_uri

    storage = recipe.storage
    key = ("storage", "path") if storage is not None and not is_uri(storage.path) else ("output",)
    return recipe.error(key, message)


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (``None``: it does)."""
    path = path.absolute()
    missing = None
    while not path.exists() and path != path.parent:
        missing, path = path, path.parent
    return missing


def _undo_run_dir(run_dir: Path, made: Path | None) -> None:
    """Leave a new run's folder as it was before the run made it (``made``: the
    outermost folder it made, its output folder or the run's own): a run stopped
    before any work writes nothing (its storage could not be written)."""
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
        return
    for entry in run_dir.iterdir():  # an empty folder the run was given
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _open_run_dir(recipe: Recipe, place: RunPlace, resume: bool) -> RunPlace:
    """Make the run directory and write its recipe: the run's first write.

    A name made from the recipe's name and the time that another run took in
    the meantime (two runs started in the same second) gives way to the next
    free one, ``NAME-YYYYmmdd-HHMMSS-2`` and on.
    """
    from orchestrator.storage import record_stored

    if resume:
        place = replace(place, local_dir=place.local_dir.resolve())
        record_stored(place)  # a run made before graftune recorded where it is stored
        return place
    path = place.local_dir
    # The folders it will make, deepest first: taken away again if it is refused below.
    existed = path.exists()
    parents = [p for p in path.absolute().parents if not p.exists()]
    try:
        if place.stamped:
            stem, suffix = path.name, 1
            while True:
                try:
                    path.mkdir(parents=True)
                    break
                except FileExistsError:
                    suffix += 1
                    place = place.renamed(f"{stem}-{suffix}")
                    path = place.local_dir
        else:
            if path.exists() and any(path.iterdir()):
                raise RunDirError(_not_empty(path))
            path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _run_dir_error(
            recipe, place, f"cannot make the run directory {path}: {exc.strerror or exc}"
        ) from None
    # Looked at again now that it is made: a run started at the same moment may have
    # made its own around it since the check before any work (found by QA: a run made
    # inside another's trials/, which that run's resume deleted as a trial's folder).
    from orchestrator.recipe import run_dir_around

    inside = run_dir_around(path)
    if inside is not None:
        for folder in ([] if existed else [path.absolute()]) + parents:  # made just now
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise _inside_a_run(recipe, place, path.absolute(), inside)
    place = replace(place, local_dir=path.resolve())
    from orchestrator.leaderboard import atomic_write_text
    from orchestrator.submit import keep_staged_inputs

    recorded = keep_staged_inputs(recipe, place.local_dir).with_defaults_worked_out()
    # Whole or not at all: a kill as they were written left a torn recipe.yaml, which
    # a resume refused as a wrong recipe (found by QA).
    atomic_write_text(place.local_dir / RECIPE_FILE, recorded.to_yaml())
    searched = _searched(recorded, place.local_dir)
    atomic_write_text(place.local_dir / SEARCHED_VALUES_FILE, json.dumps(searched, indent=1) + "\n")
    atomic_write_text(place.local_dir / SEARCHED_FILE, _digest(searched) + "\n")
    record_stored(place)
    return place


#: The recipe sections a resumed run must keep: what its trials were drawn from and
#: trained on. The others (where it runs, what it is called) may change.
_SEARCHED_SECTIONS = ("seed", "data", "base", "strategies", "search", "cache")


def _searched(recipe: Recipe, run_dir: Path) -> dict[str, Any]:
    """What ``recipe`` searches, as JSON values; a file inside ``run_dir`` (a submitted
    job's ``inputs/``) counts by its path in the run directory, which moves with it."""
    dumped = recipe.model_dump(mode="json", include=set(_SEARCHED_SECTIONS))
    run_dir = run_dir.resolve()

    def inside(location: Any) -> Any:
        if not isinstance(location, str) or not Path(location).is_absolute():
            return location
        try:
            return Path(location).resolve().relative_to(run_dir).as_posix() + (
                "/" if location.endswith("/") else ""
            )
        except (ValueError, OSError):
            return location

    def source(data: dict[str, Any]) -> None:
        scheme, _, location = data["source"].partition(":")
        if location:
            data["source"] = f"{scheme}:{inside(location)}"

    source(dumped["data"])
    base = dumped.get("base")
    if base:
        for key in ("path", "weights"):
            if key in base:
                base[key] = inside(base[key])
        if base.get("pretrain"):
            source(base["pretrain"]["data"])
    return dumped


def _digest(searched: dict[str, Any]) -> str:
    """The digest in ``.searched`` (the same since runs first had one)."""
    import hashlib

    return hashlib.sha256(json.dumps(searched, sort_keys=True).encode()).hexdigest()


_ABSENT = object()


def _changes(
    then: Any, now: Any, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """Each key path whose value differs, with its value then and now (``_ABSENT``
    for a key only one has); lists are compared whole."""
    if isinstance(then, dict) and isinstance(now, dict):
        for key in [*now, *(k for k in then if k not in now)]:
            old, new = then.get(key, _ABSENT), now.get(key, _ABSENT)
            if old is _ABSENT or new is _ABSENT:
                yield (*path, key), old, new
            else:
                yield from _changes(old, new, (*path, key))
    elif then != now:
        yield path, then, now


def _shown_value(value: Any) -> str:
    if value is _ABSENT:
        return "(not set)"
    text = json.dumps(value, ensure_ascii=False)
    return ellipsized(text, 60)


def _recorded_searched(run_dir: Path, digest: str) -> dict[str, Any] | None:
    """The values a run's digest was made of, or ``None`` where there are none
    (a run made before they were kept) or they are not those of the digest."""
    try:
        values = json.loads((run_dir / SEARCHED_VALUES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(values, dict) or _digest(values) != digest:
        return None
    return values


#: Keys added to the searched sections since runs recorded them, with their defaults
#: (a key added to data:, base:, strategies:, search: or cache: goes here too): a run
#: recorded before one was added ran as the default says.
_NEW_KEYS: dict[str, Any] = {"ignore_columns": []}


#: Lists whose order says nothing about the search (the columns left out of training).
_UNORDERED_KEYS = frozenset({"ignore_columns"})


def _comparable(searched: Any) -> Any:
    """``searched`` (:func:`_searched`) without the keys of :data:`_NEW_KEYS` that
    hold their defaults, as a run made before them recorded it, and with the lists
    of :data:`_UNORDERED_KEYS` sorted (``[id, name]`` searched what ``[name, id]`` did)."""
    if isinstance(searched, dict):
        return {
            key: sorted(value, key=str)
            if key in _UNORDERED_KEYS and isinstance(value, list)
            else _comparable(value)
            for key, value in searched.items()
            if not (key in _NEW_KEYS and value == _NEW_KEYS[key])
        }
    return searched


def _check_resumed_recipe(recipe: Recipe, run_dir: Path) -> None:
    """Refuse to resume a run whose recipe was edited in what it searches.

    Its finished trials and Tune's saved experiment belong to the recipe it
    started with: a resume with other epochs, samples or data would mix two
    searches in one leaderboard. (Runs from before this check have no record.)
    The error names the first key that changed, with its line and both values;
    a run made before the values were kept beside the digest names its sections.
    """
    import re

    record = run_dir / SEARCHED_FILE
    if not record.is_file():
        return
    digest = record.read_text(encoding="utf-8", errors="replace").strip()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):  # edited or damaged: it said "changed"
        raise RunDirError(
            f"{record} is damaged (it holds no digest of what the run searches, which a "
            "resume compares with recipe.yaml so that it goes on with the search it began): "
            "delete it to resume without that check"
        )
    now = _searched(recipe, run_dir)
    if digest == _digest(now):
        return
    may_change = ", ".join(k for k in Recipe.model_fields if k not in _SEARCHED_SECTIONS)
    advice = (
        "a resume goes on with the search it began. Put it back, or start a new run with "
        f"the changed recipe (a resume may change only {may_change})"
    )
    # A key added since the run began, at its default, is no change: the run ran
    # as the default says (data.ignore_columns: [] took every column).
    if digest == _digest(_comparable(now)):
        return  # a run recorded before those keys (its digest alone)
    then = _recorded_searched(run_dir, digest)
    changes = [] if then is None else list(_changes(*map(_comparable, (then, now))))
    if then is not None and not changes:
        return
    if not changes:
        raise RecipeError(
            "changed since the run started in what it searches ("
            + ", ".join(_SEARCHED_SECTIONS)
            + f"): {advice}",
            file=recipe.file,
        )
    path, old, new = changes[0]
    others = len(changes) - 1
    more = f", and {others} more change{'s' if others > 1 else ''}" if others else ""
    raise recipe.error(
        path,
        f"changed since the run started ({_shown_value(old)} -> {_shown_value(new)}{more}): "
        + advice,
    )


def _data_record(dataset: Dataset) -> dict[str, Any]:
    """What ``data.json`` records of the data a run trains on: its fingerprint (every
    split's arrays and the class names), and the split's sizes, for humans."""
    return {
        "fingerprint": dataset.task.fingerprint,
        "described": dataset.describe(),
        "class_names": list(dataset.task.class_names),
    }


def split_table(dataset: Dataset) -> str:
    """``split.csv``: every example the run uses, one row each, split by split in the
    order of its arrays (the test rows in the order of ``test_probabilities.npy``):
    ``split``, its ``row`` in what the source read (a table's data row, 0 first),
    its ``label``, and its ``name`` where the source gives one (an image's path)."""
    import pandas as pd

    assert dataset.rows is not None
    names = dataset.task.class_names
    frames = []
    for split, rows, y in (
        ("train", dataset.rows.train, dataset.y_train),
        ("val", dataset.rows.val, dataset.y_val),
        ("test", dataset.rows.test, dataset.y_test),
    ):
        part = {"split": split, "row": rows, "label": [names[int(code)] for code in y]}
        if dataset.names is not None:
            part["name"] = [dataset.names[int(row)] for row in rows]
        frames.append(pd.DataFrame(part))
    return pd.concat(frames, ignore_index=True).to_csv(index=False)


def _remove_stray_temporaries(run_dir: Path) -> None:
    """Delete what writers killed midway left in a run directory (found by QA: a
    ``.leaderboard.md.PID.tmp`` of a SIGKILL stayed, and was stored with the run),
    those of processes that are gone: a resume holds the run."""
    try:
        entries = list(run_dir.iterdir())
    except OSError:
        return
    for entry in entries:
        found = TEMPORARY_NAME.fullmatch(entry.name)  # atomic_write_text's temporaries
        if found is None or not entry.is_file():
            continue
        pid = int(found.group(1))
        if pid != os.getpid():  # this one writes nothing there yet: a restarted container's
            try:
                os.kill(pid, 0)
                continue  # its writer is alive (in another of the run's processes)
            except ProcessLookupError:
                pass
            except (OSError, OverflowError):
                continue
        with contextlib.suppress(OSError):
            entry.unlink()


def _recorded_fingerprint(record: Path, what: str) -> dict[str, Any] | None:
    """What ``record`` (``base.json``, ``data.json``) says of the ``what`` the run's
    trials trained on, with its ``fingerprint``; ``None`` for a run made before it.

    Raises:
        RunDirError: It cannot be read, or holds no fingerprint.
    """
    try:
        then = json.loads(record.read_text(encoding="utf-8"))
        then["fingerprint"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise RunDirError(
            f"{unreadable(record, exc)}: it records the {what} the run's trials trained on, "
            f"which a resume compares with the {what} now; delete it to resume without that "
            "check"
        ) from None
    return then


def _plugins_own(registry: Registry, name: str | None) -> str | None:
    """``'name' from its plugin (distribution version)``, where a third-party plugin
    added ``name`` to ``registry``; ``None`` for graftune's own (or none)."""
    if name is None or name not in registry or registry.is_builtin(name):
        return None
    return f"{name!r} from {registry.owner(name)}"


def _check_resumed_base(
    base_info: BaseInfo,
    run_dir: Path,
    provider: str | None = None,
    source: str | None = None,
    pretrained_on: str | None = None,
) -> None:
    """Refuse to resume a run whose base is not the one its trials trained on.

    ``base.json`` records the base's fingerprint (its weights and architecture)
    and its cache entry. The file of ``base.path`` may have been replaced, or a
    base the run pretrains is made by a graftune or Keras that makes it another
    way (another entry): the trials still to run
    would transfer from another base than the finished ones, ranked in one
    leaderboard, as with changed data (:func:`_check_resumed_data`). ``provider``:
    the plugin's base provider that made it, ``source`` the plugin's data source a
    ``pretrain`` base was trained on (:func:`_plugins_own`), named; ``pretrained_on``
    the data source text of a ``pretrain`` base, whichever source reads it.
    """
    record = run_dir / BASE_FILE
    then = _recorded_fingerprint(record, "base")
    if then is None or then["fingerprint"] == base_info.fingerprint:
        return
    # The same cache entry (named by what makes the base: a pretrain's settings,
    # data, seed and versions; a file's digest) made again, on a machine whose
    # arithmetic differs in the last bits (other CPU counts): the same base (found
    # by review: a run fetched from a cluster could not be resumed here).
    from orchestrator.bases import BUILT_IN_PROVIDERS

    entry = base_info.path.parent.name  # KIND-KEY (bases.prepare_base)
    built_in = {provider.name for provider in BUILT_IN_PROVIDERS}
    same_entry = Path(str(then.get("path", ""))).parent.name == entry
    if same_entry and entry.split("-")[0] in built_in:
        return  # (not a plugin's: its build may draw other weights under one key, found by QA)
    fingerprint = then["fingerprint"]
    # Found by QA: a plugin's provider whose build() drew other weights, or a plugin's
    # source a pretrain read, went unnamed; the provider is blamed only where its
    # cache_key() named the same model (else what it builds from changed).
    if provider is not None and same_entry:
        why = (
            f"base provider {provider} built other weights under the same cache_key(): its "
            "cache_key() should change with whatever build() reads (a file, its options, its "
            "version), and build() draw random weights from context.seed, the same each time"
        )
    elif provider is not None:
        why = (
            f"base provider {provider} built it anew, from other inputs (a file it reads, its "
            "options or its version changed) or, if its build() draws weights at random, not "
            "from context.seed"
        )
    elif source is not None:
        why = (
            f"its pretrain's data, read by data source {source}, changed: if it draws them at "
            "random, it reads the same again only with uses_seed = True, from load()'s seed"
        )
    elif pretrained_on is not None:  # found by QA: a pretrain's edited CSV was not said
        why = (
            f"it is pretrained in the run on {pretrained_on}, and made anew when those data "
            "change (a file edited, added or removed), or the Keras or graftune that trains it"
        )
    else:
        why = (
            "its file or weights changed, or it was made again otherwise, by another graftune "
            "or Keras or a base provider whose build() is not repeatable"
        )
    raise RunDirError(
        f"{run_dir}: its base changed since the run started (now: {base_info.description}, "
        f"fingerprint {base_info.fingerprint[:12]}; then {str(fingerprint)[:12]}: {why}): the "
        "trials still to run would transfer from another base than the finished ones. Put "
        "the base back as it was, or start a new run (delete "
        f"{record} to resume anyway, mixing the two in one leaderboard)"
    )


def _check_resumed_data(dataset: Dataset, run_dir: Path, source: str | None = None) -> None:
    """Refuse to resume a run whose data changed since it started.

    The recipe may be the same while its files are not (images added, moved
    between class folders or edited; a CSV edited in place): the trials still to
    run would train and be scored on other data than the finished ones, ranked
    in one leaderboard (found by QA). A run made before ``data.json`` has none:
    :func:`_check_unrecorded_data` compares what its trials left. ``source``: the
    plugin's data source that read them (:func:`_plugins_own`), named.
    """
    record = run_dir / DATA_FILE
    then = _recorded_fingerprint(record, "data")
    if then is None and not record.exists():
        _check_unrecorded_data(dataset, run_dir)
        return
    if then is None or then["fingerprint"] == dataset.task.fingerprint:
        return
    described = then.get("described") if isinstance(then.get("described"), str) else None
    was = f" (then: {described})" if described and described != dataset.describe() else ""
    # Found by QA: a plugin's source that drew at random, without uses_seed, went unnamed.
    read = (
        ""
        if source is None
        else f"; data source {source} read them: if it draws them at random, it reads the "
        "same again only with uses_seed = True, from load()'s seed"
    )
    raise RunDirError(
        f"{run_dir}: its data changed since the run started (now: {dataset.describe()}{was}; "
        f"the same recipe reads other examples, labels or values{read}): the trials still to run "
        "would be trained and scored on other data than the finished ones. Put the data back "
        f"as it was, or start a new run on the data as they are (delete {record} to resume "
        "anyway, mixing the two in one leaderboard, where the test split keeps its size)"
    )


def _check_unrecorded_data(dataset: Dataset, run_dir: Path) -> None:
    """Resuming a run made before graftune recorded its data (``data.json``): refuse
    where a finished trial's test predictions have other examples or classes than
    the data's test split now, and say that nothing finer can be checked.

    Found by QA: such a run's CSV, cut from 180 rows to 120, resumed in silence;
    its leaderboard ranked trials scored on 36 test rows beside ones on 24, and
    the resume wrote a ``data.json`` and ``split.csv`` of the new data.
    """
    import numpy as np

    from orchestrator.trial import PREDICTIONS_FILE

    now = (len(dataset.y_test), len(dataset.task.class_names))
    finished = sorted((run_dir / "trials").glob(f"*/*/{PREDICTIONS_FILE}"))
    for path in finished:
        try:  # its header alone, mapped
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError):
            continue  # a trial's own file, damaged: the trial's business
        if len(shape) == 2 and tuple(shape) != now:
            raise RunDirError(
                f"{run_dir}: its data changed since the run started: the trial in "
                f"{path.parent} was tested on {shape[0]} examples of {shape[1]} classes, "
                f"the data's test split has {now[0]} of {now[1]} now; the trials still to "
                "run would be trained and scored on other data than the finished ones. Put "
                "the data back as it was, or start a new run on the data as they are"
            )
    if finished:
        log.warning(
            "%s was made before graftune recorded its data (%s): this resume checked only "
            "that its finished trials were tested on as many examples and classes as the "
            "data has now, not that they are the same",
            run_dir,
            DATA_FILE,
        )


def _check_resumed_backend(recipe: Recipe, run_dir: Path) -> None:
    """Refuse to resume on another Keras backend than the run's trials trained on.

    A resume under another ``KERAS_BACKEND`` (or ``keras.json``) trained the
    rest of the trials there and ranked the two backends' models in one
    leaderboard, in silence. Where the choice is left to Keras' default and
    the run is on a cluster, each node uses its own: nothing to compare.
    """
    from orchestrator.accelerator import backend, chosen_backend

    trained = set()
    for folder in sorted((run_dir / "trials").glob("*/")):
        for path in sorted(folder.glob(f"*/{RESULT_FILE}")):
            try:
                trained.add(json.loads(path.read_text(encoding="utf-8")).get("backend"))
            except (OSError, ValueError, AttributeError):
                continue  # set aside by the resume itself (read_result)
    trained.discard(None)
    if len(trained) != 1:
        return
    (then,) = trained
    now = backend()
    chosen = chosen_backend()
    on_a_cluster = recipe.resources.address not in (None, "local")
    if then == now or (chosen is None and on_a_cluster):
        return
    where = f" ({chosen[1]})" if chosen is not None else " (Keras' default)"
    raise RunDirError(
        f"{run_dir}: its trials trained on {then}, and this resume would train the rest on "
        f"{now}{where}, ranking models of two backends in one leaderboard: resume it with "
        f"KERAS_BACKEND={then}"
    )


def _write_search(path: Path, results: list[TrialResult]) -> None:
    from orchestrator.leaderboard import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps([r.to_json() for r in results], indent=2, default=str))


def _read_search(path: Path) -> list[TrialResult] | None:
    """The trials of a search that ended, from its ``search.json``; ``None`` if
    the search must resume instead.

    A ``search.json`` that cannot be read, or that lists a trial whose folder or
    ``result.json`` is gone, is warned of and removed: the search resumes, and
    takes back each ended trial from its own ``result.json`` (the one that is
    gone runs again). Read as it was, every resume after failed the same way.
    """
    from orchestrator.paths import is_folder_name

    try:
        found = [TrialResult.from_json(item) for item in json.loads(path.read_text())]
        for result in found:
            # Its trials' names become paths (found by security QA: "../../x").
            if result.strategy != path.parent.name or not is_folder_name(result.trial_id):
                raise ValueError(
                    f"it lists trial {result.strategy}/{result.trial_id}, which is no "
                    f"trial of {path.parent.name}"
                )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning(
            "%s cannot be read (%s: %s): removed; the search resumes",
            path,
            type(exc).__name__,
            exc,
        )
        path.unlink(missing_ok=True)
        return None
    for result in found:
        # The statuses whose trial wrote its own result.json (a failed one has none).
        stored = path.parent / result.trial_id / RESULT_FILE
        # A failed trial's folder deleted: to train it again, as its error says.
        gone = not stored.parent.is_dir() if result.status == "failed" else not stored.is_file()
        if result.status == "failed" and gone:
            # Deleted to train it again (as its error says), or never made: a trial
            # whose worker died before it started has no folder. Neither is damage
            # (found by QA: a resume of a run whose every trial failed warned of each).
            log.info("%s lists failed trial %s/%s, without a folder: it runs again", path,
                     result.strategy, result.trial_id)  # fmt: skip
            path.unlink(missing_ok=True)
            return None
        if result.status in ("ok", "diverged", "error") and gone:
            log.warning(
                "%s lists trial %s/%s, whose %s is gone: removed; the search resumes, "
                "and that trial runs again",
                path,
                result.strategy,
                result.trial_id,
                stored if stored.parent.is_dir() else f"folder {stored.parent}",
            )
            path.unlink(missing_ok=True)
            return None
        if result.status in ("ok", "diverged", "error"):
            # Found by QA: a damaged result.json of a search that had ended was
            # ranked and left as it was (predict and export then refused its trial).
            # The search resumes: it keeps the file aside and runs the trial again.
            try:
                read_result(stored.parent)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                log.warning(
                    "%s lists trial %s/%s, whose %s cannot be read (%s: %s): the search "
                    "resumes, and that trial runs again",
                    path,
                    result.strategy,
                    result.trial_id,
                    stored,
                    type(exc).__name__,
                    exc,
                )
                path.unlink(missing_ok=True)
                return None
    return found


class _RunEvents:
    """The driver's listener: echo a line, call the event hooks, tell the progress view."""

    def __init__(
        self,
        host: PluginHost,
        run_dir: Path,
        metric: str,
        echo: Callable[[str], None],
        listener: TrialListener | None,
        *,
        stored: Callable[[], None] | None = None,
    ) -> None:
        self.host = host
        #: Called after each trial that ends: the run's state goes to its storage.
        self.stored = stored
        self.run_dir = run_dir
        self.metric = metric
        self.echo = echo
        self.listener = listener
        self.reported = read_reported(run_dir)
        #: The trials of the search under way that ended (and, on a resume, those of
        #: its strategy that ended before), for a run stopped at once in it.
        self.searching: dict[str, TrialResult] = {}

    def ended_in_search(self) -> list[TrialResult]:
        """The trials of the search under way that ended, in the order they did."""
        return list(self.searching.values())

    def trial_started(self, strategy: str, trial_id: str) -> None:
        if self.listener is not None:
            self.listener.trial_started(strategy, trial_id)

    def trial_progressed(self, strategy: str, trial_id: str, epoch: int, epochs: int) -> None:
        tell_epoch(self.listener, strategy, trial_id, epoch, epochs)

    def trial_finished(self, result: TrialResult) -> None:
        from orchestrator.tuning.ray_start import interrupts_held

        # A Ctrl+C or SIGTERM waits for the hooks to hear of the trial and for its
        # record: on keras_tuner it cut a hook off, the event log missed a trial the
        # stopped run ranked, and the resume told the other hooks of it again (found
        # by QA; Ray Tune's own handler already waits). A second one stops at once.
        with interrupts_held():
            self._trial_finished(result)

    def _trial_finished(self, result: TrialResult) -> None:
        key = f"{result.strategy}/{result.trial_id}"
        self.searching[key] = result
        if result.earlier_id is not None and key not in self.reported:
            # Taken back under a new id by a search that started again (a Bayesian
            # one, see ray_tune._restart): reported before under its earlier one, or never.
            earlier = f"{result.strategy}/{result.earlier_id}"
            if earlier in self.reported:
                self._record(key)
                self.replay(result)
                return
        if key in self.reported:
            # Finished and reported before the run was killed, though Tune's saved
            # state (written every few seconds) did not know it yet: its trial
            # re-reads the stored result. Hooks (events.jsonl, MLflow) hear of it once.
            self.replay(result)
            return
        self.echo(_trial_line(result, self.metric))
        self.host.notify("graftune_trial_finished", result=result, run_dir=self.run_dir)
        self._record(key)
        if self.listener is not None:
            self.listener.trial_finished(result)
        if self.stored is not None:
            self.stored()

    def warn(self, message: str) -> None:
        self.echo(f"warning: {message}")

    def search_started(self, strategy: str) -> None:
        """A strategy's search begins: the progress view counts its time budget from now."""
        if self.listener is not None and hasattr(self.listener, "search_started"):
            self.listener.search_started(strategy)

    def search_finished(self, strategy: str, ran: int) -> None:
        """A strategy's search returned after ``ran`` trials: the progress view plans no more."""
        self.searching.clear()  # the run has them now
        if self.listener is not None and hasattr(self.listener, "search_finished"):
            self.listener.search_finished(strategy, ran)

    def forget(self, strategy: str, *, keep: set[str]) -> None:
        """Forget that the trials of ``strategy`` not in ``keep`` were reported: they
        run again on this resume, and their new end is told like any other."""
        gone = {k for k in self.reported if k.partition("/")[0] == strategy} - {
            f"{strategy}/{trial_id}" for trial_id in keep
        }
        if not gone:
            return
        self.reported -= gone
        from orchestrator.leaderboard import atomic_write_text

        atomic_write_text(
            self.run_dir / REPORTED_FILE, "".join(f"{key}\n" for key in sorted(self.reported))
        )

    def _record(self, key: str) -> None:
        with open(self.run_dir / REPORTED_FILE, "a", encoding="utf-8") as record:
            record.write(key + "\n")
        self.reported.add(key)

    def replay(self, result: TrialResult) -> None:
        """A trial that finished before a resume: the progress view counts it."""
        self.searching[f"{result.strategy}/{result.trial_id}"] = result
        if self.listener is not None:
            getattr(self.listener, "trial_replayed", self.listener.trial_finished)(result)


def _plugin_keras_objects(host: PluginHost) -> dict[str, Any] | None:
    """What plugins' ``graftune_keras_objects`` return, and what ``--plugin``
    modules registered with Keras (custom layers of a base):
    :attr:`TrialSpec.custom_objects`."""
    given = host.keras_objects()
    keras = sys.modules.get("keras")
    if keras is None or not host.explicit:
        return given or None

    def from_a_plugin(obj: Any) -> bool:
        module = str(getattr(obj, "__module__", ""))
        return any(module == name or module.startswith(f"{name}.") for name in host.explicit)

    found = {k: v for k, v in keras.saving.get_custom_objects().items() if from_a_plugin(v)}
    return {**found, **given} or None


def _describe(space: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v.describe()}" for k, v in space.items()) or "nothing"


def _trial_line(result: TrialResult, metric: str) -> str:
    value = getattr(result, metric, None)
    score = f"{metric}={value:.4f}" if isinstance(value, float) else ""
    error = result.error or ""
    # The whole error is in the leaderboard; Ray's can run to hundreds of characters.
    extra = f" ({ellipsized(one_line(error), 200)})" if error else ""
    retries = result.retries
    retried = f" after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""
    score = f" {score}" if score else ""
    return f"  {result.strategy} {result.trial_id}: {result.status}{retried}{score}{extra}"


def _interrupted_message(
    run_dir: Path,
    name: str,
    stop: SearchInterrupted,
    *,
    earlier: list[str],
    later: list[str],
    ended: int,
) -> str:
    ended_here = len(stop.finished)
    line = f"{name}: {ended_here} trial{'s' if ended_here != 1 else ''} ended"
    if stop.stopped:
        again = "they run" if stop.stopped != 1 else "it runs"
        line += f", {stop.stopped} stopped midway ({again} again on resume)"
    if earlier:  # a Ctrl+C in the third strategy's search counted its trials alone
        before = ended - ended_here
        line += (
            f"; searched before it: {', '.join(earlier)} "
            f"({before} trial{'s' if before != 1 else ''} ended)"
        )
    if later:
        line += f"; not started: {', '.join(later)}"
    lines = [line]
    if ended:
        lines.append(f"leaderboard of the trials that ended: {run_dir / 'leaderboard.md'}")
    lines.append(_resume_hint(run_dir))
    return "\n".join(lines)


def _failure_summary(
    results: list[TrialResult], run_dir: Path, time_budget_s: float | None = None, *, metric: str
) -> str:
    budget = (
        f"search.time_budget_s ({time_budget_s:g} s a strategy, counted from its search's "
        "start, its workers' start-up of a few seconds included) ran out"
        if time_budget_s
        else None
    )
    if not results:
        if budget:
            # Found by QA: "raise it", where a resume refuses a changed budget.
            return (
                f"no trial ended: {budget} first; raise it and run the recipe again (a "
                f"resume keeps the search as it was). See {run_dir}"
            )
        return f"no trial ran; see {run_dir}"
    statuses = Counter(r.status for r in results)
    counts = ", ".join(  # "2 errors", "1 pruned"
        f"{n} {status}{'s' * (status == 'error' and n > 1)}" for status, n in statuses.most_common()
    )
    errors = Counter(r.error for r in results if r.error)
    # A pruned trial stopped before its first epoch ended has no score: no rank either.
    unscored = sum(1 for r in results if r.status == "pruned" and getattr(r, metric) is None)
    if set(statuses) == {"pruned"}:
        # None trained to the end: there is no best model to save.
        why = f"the scheduler or {budget}" if budget else "the scheduler"
        pruned = statuses["pruned"]
        if not unscored:
            ranked = "the leaderboard ranks them"
        elif unscored == pruned:
            ranked = (
                "none ended its first epoch (no score, no rank)"
                if pruned > 1
                else "it stopped before its first epoch ended (no score, no rank)"
            )
        else:
            ranked = (
                f"the leaderboard ranks the {pruned - unscored} with a score; {unscored} "
                f"stopped before {'its' if unscored == 1 else 'their'} first epoch ended "
                "(no score, no rank)"
            )
        return (
            f"no trial trained all its epochs ({counts}: stopped by {why}), so no best model "
            f"was saved; {ranked}: {run_dir / 'leaderboard.md'}"
            + (
                "; raise search.time_budget_s and run the recipe again (a resume keeps "
                "the search as it was)"
                if budget
                else ""
            )
        )
    lines = [f"every trial failed ({counts}); the most frequent reasons:"]
    from orchestrator.trial import ERROR_FILE, trial_dir

    for error, n in errors.most_common(3):
        # Each on a line of its own and cut (found by QA: an error of 1 MiB, whole),
        # with where its traceback is (found by QA: nothing said error.txt was there).
        lines.append(f"  {n}x {ellipsized(one_line(error), 500)}")
        first = next(r for r in results if r.error == error)
        traceback = trial_dir(run_dir, first.strategy, first.trial_id) / ERROR_FILE
        if traceback.is_file():
            lines.append(f"     traceback: {traceback}")
    if statuses.get("pruned"):
        why = f"the scheduler, or {budget}" if budget else "the scheduler"
        whose = "its" if unscored == 1 else "their"
        early = f" ({unscored} before {whose} first epoch ended: no score)" if unscored else ""
        lines.append(f"  {statuses['pruned']}x pruned: stopped before max_epochs by {why}{early}")
    lines.append(f"leaderboard: {run_dir / 'leaderboard.md'}")
    return "\n".join(lines)


def _drop_models(run_dir: Path, frame: Any, stored: str | None) -> None:
    """``keep_models: best``: remove the models (and test predictions) of every
    trial but each strategy's best, here and in storage.

    The leaderboard keeps every trial's row, and each trial its ``result.json``
    and history; ``predict`` and ``export --trial`` of a trial without its model
    say that it was not kept.
    """
    from orchestrator.trial import MODEL_FILE, PREDICTIONS_FILE, TOP_FILE, trial_dir

    finished = frame[frame["status"] == "ok"]  # the trials that saved a model
    dropped = []
    for _, rows in finished.groupby("strategy", sort=False):
        for strategy, trial_id in zip(rows["strategy"][1:], rows["trial_id"][1:], strict=True):
            folder = trial_dir(run_dir, strategy, str(trial_id))  # ranked: the best first
            for name in (MODEL_FILE, TOP_FILE, PREDICTIONS_FILE):
                (folder / name).unlink(missing_ok=True)
                dropped.append(str((folder / name).relative_to(run_dir)))
    if stored is not None and dropped:
        from orchestrator.storage import remove_stored

        try:
            remove_stored(stored, dropped)
        except StorageError as exc:  # the run is done: what stays there is only disk
            log.warning("%s; the other trials' models stay there", exc)


def _save_best(
    run_dir: Path,
    best: Any,
    results: list[TrialResult],
    task: Any,
    recipe: Recipe,
    base: BaseInfo | None,
) -> dict[str, Any]:
    from orchestrator.leaderboard import atomic_write_text, replacing
    from orchestrator.submit import recorded_source
    from orchestrator.trial import MODEL_FILE, load_trial_model, save_model, trial_dir

    chosen = next(
        r for r in results if r.trial_id == best["trial_id"] and r.strategy == best["strategy"]
    )
    folder = run_dir / BEST_DIR
    folder.mkdir(exist_ok=True)
    source = trial_dir(run_dir, chosen.strategy, chosen.trial_id)
    # Never a torn model.keras; this run holds run_dir, so leftovers are a killed save's.
    from orchestrator.bases import damaged_base_file

    try:
        with replacing(folder / MODEL_FILE) as tmp:
            if chosen.cached_cut is None:
                damaged = (source / MODEL_FILE).is_file() and damaged_base_file(source / MODEL_FILE)
                if damaged:  # copied as it was, best/ held a model nothing could load
                    raise RunDirError(
                        f"the best trial {chosen.strategy}/{chosen.trial_id}'s model cannot be "
                        f"saved as the run's best: {source}/{damaged}; delete the trial's "
                        f"folder {source} and resume the run to train it again"
                    )
                shutil.copyfile(source / MODEL_FILE, tmp)
            else:
                # Trained on cached features: the best model is made whole once, here.
                save_model(load_trial_model(source, base, task.input_shape), tmp)
    except FileNotFoundError as exc:  # deleted from the run directory since the trial ended
        with contextlib.suppress(OSError):
            folder.rmdir()  # made for it just now, and empty: best/ is not left half made
        missing = exc.filename or exc
        raise RunDirError(
            f"the best trial {chosen.strategy}/{chosen.trial_id} has no model to save in "
            f"{folder}: {missing} is missing (deleted since the trial ended); delete the "
            f"trial's folder {source} and resume the run to train it again"
        ) from None
    except RunDirError:
        with contextlib.suppress(OSError):
            folder.rmdir()
        raise
    summary = {
        "strategy": chosen.strategy,
        "trial_id": chosen.trial_id,
        "config": chosen.config,
        "metric": recipe.search.metric,
        "val_accuracy": chosen.val_accuracy,
        "test_accuracy": chosen.test_accuracy,
        "val_loss": chosen.val_loss,
        "test_loss": chosen.test_loss,
        "class_names": list(task.class_names),
        "input_shape": list(task.input_shape),
        "data_source": recorded_source(recipe, run_dir),
    }
    from orchestrator.predict import table_features

    features = table_features(recipe.data, recipe.base_dir)
    if features is not None:  # a table's columns, in the order the model takes them
        summary["features"] = features
    atomic_write_text(folder / "config.json", json.dumps(summary, indent=2, default=str))
    return summary
