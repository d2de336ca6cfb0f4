"""The Ray Tune backend: one Tune experiment per strategy.

Data and the prepared base reach trials through Ray's object store
(``tune.with_parameters``), never through ``param_space``. Each trial writes
its own result files (see :mod:`orchestrator.trial`); this module turns Ray's
view of trials that never wrote one (stopped by the scheduler, workers that
died) into results too.

Workers are reused between trials (TensorFlow is imported once per worker); a
worker whose resident memory at its trial's last report is past
``search.worker_memory_mb`` is retired when that trial ends, and Tune starts a
new one for the next trial (see :func:`retire_worker`). A worker that stays
(one that grew only after its last report) hands the memory it has freed back
to the system before its next trial.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import math
import os
import re
import shutil
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher, SearchGenerator
from ray.tune.stopper import Stopper

from orchestrator.cluster import node_label
from orchestrator.errors import SearchInterrupted, StorageError, disk_full_error
from orchestrator.progress import tell_epoch
from orchestrator.space import Choice, Dimension, Fixed, Float, Int, LogFloat, single_value
from orchestrator.trial import (
    COST_KEYS,
    DAMAGED_RESULT_FILE,
    RESULT_FILE,
    WORST_SCORES,
    TrialResult,
    TrialSpec,
    captured_output,
    config_key,
    ended_trials,
    finite_or_none,
    freezes_here,
    read_result,
    reported_costs,
    run_trial,
    runs_again,
    trial_dir,
    write_result,
)
from orchestrator.tuning import ray_start

if TYPE_CHECKING:
    from orchestrator.data import Dataset
    from orchestrator.recipe import Recipe, SearchSpec

log = logging.getLogger(__name__)

#: What the driver knows of each running search, by (run directory, strategy).
#: Ray pickles its callbacks with the experiment state, so they look their
#: search up here rather than holding it.
_SEARCHES: dict[tuple[str, str], _Search] = {}


class TrialListener:
    """Receives trial events in the driver (progress views, event hooks)."""

    def trial_started(self, strategy: str, trial_id: str) -> None:
        """A trial was started (or restarted after its worker died)."""

    def trial_progressed(self, strategy: str, trial_id: str, epoch: int, epochs: int) -> None:
        """A running trial reported its ``epoch``-th epoch of ``epochs``."""

    def trial_finished(self, result: TrialResult) -> None:
        """A trial ended, whatever its status."""

    def warn(self, message: str) -> None:
        """Something the user should know of the search (a time budget that ran out)."""
        log.warning("%s", message)


@dataclass(frozen=True)
class Prestart:
    """Workers to prestart for the next search (:func:`ray_start.prestart_workers`).

    Asked for once this search has made its ``planned`` trials, none waits to
    start, and fewer than ``at_once`` run: its last trials, with a slot free.
    """

    workers: int
    planned: int
    at_once: int


@dataclass
class _Search:
    """The driver's view of one search while Tune runs it, kept by :class:`_Events`."""

    listener: TrialListener = field(default_factory=TrialListener)
    #: Trial id -> how many times its worker died.
    retries: dict[str, int] = field(default_factory=dict)
    #: Whether Ctrl+C is watched for, and whether the user pressed it (see _Events).
    watching: bool = False
    interrupted: bool = False
    #: The Ctrl+C handler before Tune's search began (Tune's own puts it back when it runs).
    sigint_before: Any = None
    #: Trials that had not ended when Tune last finished a step (None before the first).
    unfinished: set[str] | None = None
    #: Trials whose end the listener was told of.
    told: set[str] = field(default_factory=set)
    #: What a trial said when the disk filled (:data:`DISK_FULL`): the search stops.
    disk_full: dict[str, Any] | None = None
    #: What to prestart for the next search; None once asked for (or nothing to).
    prestart: Prestart | None = None
    #: Trial id -> the scores it reported so far, an epoch a row (for its history).
    reports: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: Trial id -> its folder as :meth:`_Events._store_early` uploaded it (see
    #: :func:`folder_state`): not uploaded again at the search's end unless changed.
    stored: dict[str, tuple] = field(default_factory=dict)

    def stopped_midway(self) -> set[str]:
        """The trials an interrupt stopped: Tune ends them without telling callbacks."""
        return set(self.unfinished or ()) if self.interrupted else set()


def to_tune(space: dict[str, Dimension], *, grid: bool = False) -> dict[str, Any]:
    """Translate graftune dimensions into Ray Tune's search-space objects.

    With ``grid``, choices and integer ranges become ``tune.grid_search`` over
    every value; continuous dimensions are still sampled.
    """
    translated: dict[str, Any] = {}
    for key, dim in space.items():
        if isinstance(dim, Fixed):
            translated[key] = dim.value
        elif isinstance(dim, (Int, Float, LogFloat)) and single_value(dim):
            # A range of equal ends is its value: Ray's loguniform gave 0.001 and
            # 0.0010000000000000002 of [0.001, 0.001] (found by QA).
            translated[key] = dim.low
        elif isinstance(dim, Choice):
            values = list(dim.values)
            translated[key] = tune.grid_search(values) if grid else tune.choice(values)
        elif isinstance(dim, Int):
            if grid:
                translated[key] = tune.grid_search(list(range(dim.low, int(dim.high) + 1)))
            else:
                # Ray's randint excludes its upper bound; ours includes it.
                translated[key] = tune.randint(dim.low, int(dim.high) + 1)
        elif isinstance(dim, LogFloat):
            translated[key] = tune.loguniform(dim.low, dim.high)
        elif isinstance(dim, Float):
            translated[key] = tune.uniform(dim.low, dim.high)
        else:
            raise TypeError(f"{key}: {type(dim).__name__} is not a graftune space type")
    return translated


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


#: The metric every report carries: the worker's resident memory in MiB then.
WORKER_RSS = "worker_rss_mb"


#: The key of the last report of a trial that could not write its files: the
#: disk (or quota) is full where it runs. The driver stops the search on it.
DISK_FULL = "graftune_disk_full"
#: The statuses of trials whose worker never wrote their files (Tune stopped them,
#: or their worker died): the driver writes their history and result, and stores them.
DRIVER_WRITTEN = ("pruned", "failed")


def _trainable(config: dict[str, Any], spec: TrialSpec, dataset: Dataset) -> None:
    trial_id = tune.get_context().get_trial_id()
    node = node_label()

    def report(metrics: dict[str, Any]) -> None:
        # The node also reaches the leaderboard of a trial that never writes result.json;
        # the memory tells the driver whether to reuse this worker (retire_worker).
        tune.report({**metrics, "node": node, WORKER_RSS: round(_rss_mb(), 1)})

    freezes_here()  # a worker's: what it imported stays out of its collections
    try:
        with captured_output(trial_dir(spec.run_dir, spec.strategy.name, trial_id)):
            run_trial(config, spec, dataset, trial_id=trial_id, report=report)
    except Exception as exc:
        full = disk_full_error(exc)
        if full is None:
            raise
        # Said to the driver, which stops the search: raised, Tune would try it
        # again (search.max_failures) and start every trial after it, each failing.
        said = {"errno": full.errno, "filename": str(full.filename or ""), "node": node}
        report({spec.metric: WORST_SCORES.get(spec.metric, float("nan")), DISK_FULL: said})


class _StopsWhenTheDiskIsFull(Stopper):
    """Ends the whole search once a trial says the disk filled (:data:`DISK_FULL`)."""

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        search = _SEARCHES.get(self.key)
        return search is not None and search.disk_full is not None


def shrink_worker(memory_mb: int) -> tuple[float, float]:
    """Hand freed heap memory back to the system if this process holds over ``memory_mb``.

    A reused worker keeps what the C allocator took for earlier trials even
    after TensorFlow has freed it; ``malloc_trim`` returns it (glibc only;
    elsewhere this only collects garbage).

    Returns:
        The resident memory in MiB before and after.
    """
    import contextlib
    import ctypes
    import gc

    before = _rss_mb()
    if before <= memory_mb:
        return before, before
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    after = _rss_mb()
    if after > memory_mb:
        log.warning(
            "worker %d holds %.0f MiB after its last trial (search.worker_memory_mb is %d)",
            os.getpid(),
            after,
            memory_mb,
        )
    return before, after


def _trainable_class(spec: TrialSpec, dataset: Dataset, memory_mb: int | None) -> type:
    """A function trainable whose reused worker sheds freed memory past ``memory_mb``."""
    from ray.tune.trainable.function_trainable import wrap_function

    base = wrap_function(tune.with_parameters(_trainable, spec=spec, dataset=dataset))

    class GraftuneTrial(base):  # type: ignore[valid-type, misc]
        def reset_config(self, new_config: dict[str, Any]) -> bool:
            # Never False: Ray 2.60 would fail the trial instead of starting a new
            # worker (the driver retires a worker past the bound: retire_worker).
            if memory_mb is not None:
                shrink_worker(memory_mb)
            return super().reset_config(new_config)

    GraftuneTrial.__name__ = GraftuneTrial.__qualname__ = f"graftune_{spec.strategy.name}"
    return GraftuneTrial


def collect(
    run_dir: Path,
    strategy: str,
    trial_id: str,
    config: dict[str, Any],
    last: dict[str, Any] | None,
    error: Any,
    retries: int = 0,
    storage: str | None = None,
    started_at: float | None = None,
    finished_at: float | None = None,
) -> TrialResult:
    """The result of one trial, from its own files or else from what Ray saw.

    A trial without ``result.json`` either was stopped early (scheduler or time
    budget: ``pruned``) or its worker died every time it was tried (``failed``).
    With ``storage`` (the run's URI), a trial that ran on another node is
    downloaded from there first. Such a trial's start and end are
    ``started_at``/``finished_at`` where the driver saw them, else its last
    report's (Tune's whole-second ``timestamp``, less its ``time_total_s``).
    """
    folder = trial_dir(run_dir, strategy, trial_id)
    # One that cannot be read is set aside: raised here, in Tune's callback, it
    # ended the whole search, and every resume after.
    result = read_result(folder, set_aside=True)
    if result is None and storage is not None:
        from orchestrator.storage import pull_trial

        if pull_trial(storage, folder, strategy, trial_id):
            result = read_result(folder, set_aside=True)
    if result is not None:
        if retries > result.retries:
            # Its worker wrote result.json not knowing the deaths before it: kept
            # there, a resume (which reads result.json) does not lose them.
            result.retries = retries
            write_result(folder, result)
        return result
    last = last or {}
    # A trial that stopped the search on a full disk reports the worst score
    # (trial.WORST_SCORES) and writes no result.json: a score the trial never had.
    scores = {
        key: None if last.get(key) == worst else finite_or_none(last.get(key))
        for key, worst in WORST_SCORES.items()
    }
    if error is not None:
        status, message = "failed", f"worker died: {_short_error(error)}"
    else:
        status, message = "pruned", None
    if finished_at is None:
        finished_at = finite_or_none(last.get("timestamp"))
    if started_at is None and finished_at is not None:
        took = finite_or_none(last.get("time_total_s"))
        started_at = None if took is None else finished_at - took
    return TrialResult(
        strategy=strategy,
        trial_id=trial_id,
        status=status,
        config={k: v for k, v in config.items()},
        val_accuracy=scores["val_accuracy"],
        val_loss=scores["val_loss"],
        epochs=int(last.get("training_iteration", 0) or 0),
        error=message,
        retries=retries,
        node=last.get("node"),
        **reported_costs(last),  # the costs up to the last epoch it reported
        started_at=started_at,
        finished_at=finished_at,
    )


#: What Tune adds to every report, besides the epoch's metrics.
_TUNE_KEYS = frozenset(
    (
        "timestamp", "checkpoint_dir_name", "should_checkpoint", "done", "training_iteration",
        "trial_id", "date", "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip",
        "time_since_restore", "iterations_since_restore", "experiment_tag", "node", WORKER_RSS,
        *COST_KEYS,
    )
)  # fmt: skip


def folder_state(folder: Path) -> tuple | None:
    """Each file under ``folder`` with its size and modification time: equal states
    mean nothing there was written in between. ``None`` where a file went as it was
    read (no state equals it)."""
    files = []
    try:
        for path in folder.rglob("*"):
            if path.is_file():
                stat = path.stat()
                files.append((str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns))
    except FileNotFoundError:
        return None
    return tuple(sorted(files))


def write_reported_history(folder: Path, reports: Any) -> None:
    """Write ``history.csv`` for a trial that ended without writing one, from its reports.

    A trial a scheduler stopped (or whose worker died) never reaches the end of
    :func:`~orchestrator.trial.run_trial`, where ``history.csv`` is written;
    Tune kept each epoch it reported. Its learning curve (in the report) then
    shows where it was stopped. A trial that wrote its own is left alone. Of a
    trial whose worker died and which was tried again, Tune kept every attempt's
    epochs one after the other: the last attempt's are its history.
    """
    path = folder / "history.csv"
    if reports is None or len(reports) == 0 or path.exists():
        return
    columns = [
        c for c in reports.columns if c not in _TUNE_KEYS and not str(c).startswith("config/")
    ]
    if "epoch" not in columns:
        return
    epochs = list(reports["epoch"])
    restarts = [i for i in range(1, len(epochs)) if not epochs[i] > epochs[i - 1]]
    if restarts:
        reports = reports.iloc[restarts[-1] :]
    from orchestrator.leaderboard import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, reports[columns].to_csv(index=False))


def _short_error(error: Any) -> str:
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    last = lines[-1]
    if len(last) <= 500:
        return last
    # At the end of a sentence where one ends far enough in (found by QA: Ray's
    # "potential root causes" cut mid-word); the whole is in ray.log.
    cut = last[:500]
    end = cut.rfind(". ")
    return (cut[: end + 1] if end >= 200 else cut.rsplit(" ", 1)[0]) + " ..."


def retire_worker(
    controller: Any, trial: Any, result: dict[str, Any], memory_mb: int | None, *, warn: bool = True
) -> bool:
    """Keep a finished trial's worker from being reused if its memory is past ``memory_mb``.

    Called by the scheduler when a trial ends, before Tune decides whether to
    keep the trial's worker for the next trial. Tune keeps every worker it
    counts as started, and Ray 2.60 has no public way to refuse one (a
    ``reset_config`` that returns False fails the next trial instead), so the
    worker is taken out of the controller's set of started workers, the set
    Tune itself shrinks when a worker stops. Tune then stops the worker as it
    stops one it has no use for, and starts a new one for the next trial.

    If a later Ray has neither attribute, nothing is retired and the worker
    hands back freed memory before its next trial instead (``shrink_worker``).

    Args:
        warn: Say it as a warning (else as an info record: a bound below what a
            fresh worker holds would retire every worker, a warning each).

    Returns:
        Whether the worker was retired.
    """
    rss = result.get(WORKER_RSS)
    if memory_mb is None or rss is None or rss <= memory_mb:
        return False
    actors = getattr(controller, "_trial_to_actor", None)
    started = getattr(controller, "_started_actors", None)
    if not isinstance(actors, dict) or not isinstance(started, set) or trial not in actors:
        return False
    started.discard(actors[trial])
    log.log(
        logging.WARNING if warn else logging.INFO,
        "the worker of trial %s held %.0f MiB at its last report (search.worker_memory_mb "
        "is %d): it runs no more trials, a new worker takes the next%s",
        getattr(trial, "trial_id", trial),
        rss,
        memory_mb,
        " (said once a search: later workers past it are replaced alike)" if warn else "",
    )
    return True


class _RetiresWorkers:
    """Scheduler mixin: a trial's worker past ``memory_mb`` is not reused (warned once)."""

    memory_mb: int | None = None
    _warned: bool = False

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        super().on_trial_complete(tune_controller, trial, result)  # type: ignore[misc]
        warn = not self._warned
        if retire_worker(tune_controller, trial, result, self.memory_mb, warn=warn):
            self._warned = True


class _FIFO(_RetiresWorkers, FIFOScheduler):
    """Tune's FIFO scheduler, retiring workers past the memory bound."""


def _scheduler(search: SearchSpec, seed: int) -> Any:
    scheduler = _scheduler_for(search, seed)
    scheduler.memory_mb = search.worker_memory_mb
    return scheduler


def _scheduler_for(search: SearchSpec, seed: int) -> Any:
    if search.scheduler == "fifo":
        return _FIFO()
    grace = min(search.grace_period, search.max_epochs)
    brackets = 1
    if search.scheduler == "hyperband":
        # Hyperband's brackets, run asynchronously so trials are never paused
        # (pausing a function trainable would restart it from scratch).
        ratio = search.max_epochs / grace
        brackets = int(math.log(ratio, search.reduction_factor) + 1e-9) + 1 if ratio > 1 else 1
    return _SeededASHA(
        seed=seed,
        time_attr="training_iteration",
        max_t=search.max_epochs,
        grace_period=grace,
        reduction_factor=search.reduction_factor,
        brackets=brackets,
    )


class _SeededASHA(_RetiresWorkers, ASHAScheduler):
    """ASHA whose choice of bracket for each new trial follows the recipe's seed.

    Ray draws a trial's Hyperband bracket from NumPy's global generator; this
    scheduler draws it from its own, seeded one (and leaves the global one as
    it found it), so two runs of one recipe put their trials in the same
    brackets. Like every scheduler here, it retires workers past the memory
    bound (``_RetiresWorkers``).
    """

    def __init__(self, *, seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rng = np.random.RandomState(seed)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        outside = np.random.get_state()
        np.random.set_state(self._rng.get_state())
        try:
            super().on_trial_add(tune_controller, trial)
        finally:
            self._rng.set_state(np.random.get_state())
            np.random.set_state(outside)


class _OrderedSearchGenerator(SearchGenerator):
    """Tune's wrapper of a :class:`Searcher`, naming trials in the order it makes them.

    Tune names a searcher's trials with random hex (random search's and grid's
    get ``prefix_00000``, ``prefix_00001``, ...). The leaderboard breaks ties by
    trial id, so one seed ranked its tied trials, and chose its best model,
    differently from run to run.
    """

    def __init__(self, searcher: Searcher) -> None:
        super().__init__(searcher)
        self._prefix = uuid.uuid4().hex[:5]

    def create_trial_if_possible(self, experiment_spec: dict) -> Any:
        # Tune's code calls Trial.generate_id() for the id and nothing else (Ray 2.60).
        made = vars(Trial)["generate_id"]
        number = self._counter
        Trial.generate_id = classmethod(lambda cls: f"{self._prefix}_{number:05d}")
        try:
            return super().create_trial_if_possible(experiment_spec)
        finally:
            Trial.generate_id = made

    def get_state(self) -> dict:
        return {**super().get_state(), "graftune_prefix": self._prefix}

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._prefix = state.get("graftune_prefix", self._prefix)


def _searcher(
    search: SearchSpec,
    seed: int,
    start: dict[str, Any] | None = None,
    *,
    searched: bool = True,
    restart: _Restart | None = None,
) -> Any:
    """The recipe's searcher. Where every dimension is fixed there is nothing to
    model: Optuna would refuse the space, so the trials repeat the one
    configuration, as random search's do.

    A search started again (``restart``): random and grid search, seeded, draw
    what they drew before, and name their trials with the earlier prefix, so
    each keeps its id. A Bayesian search is given the configurations of the
    trials that ended first, in their order, so it learns their results (taken
    back by configuration, under new ids) before it draws the rest.
    """
    from ray.tune.search.basic_variant import BasicVariantGenerator

    points = [dict(start)] if start else None
    if search.algorithm == "bayesian" and searched and restart is not None and restart.ended:
        given = {config_key(c) for c in restart.ended}
        first = [] if start is None or config_key(start) in given else [dict(start)]
        points = first + [dict(c) for c in restart.ended]
    if search.algorithm == "bayesian" and searched:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        # Tree-structured Parzen estimators, seeded (Optuna quiet: see run_search).
        # Started again, its random draws (its first ten) would be those it drew
        # before, the ended trials' again: seeded on from them instead.
        # Optuna takes seeds below 2**32 (found by QA: a recipe's seed near it,
        # resumed, would pass one past).
        ended = len(restart.ended) if restart is not None else 0
        searcher: Searcher = OptunaSearch(
            sampler=optuna.samplers.TPESampler(seed=(seed + ended) % 2**32),
            points_to_evaluate=points,
        )
        if search.max_concurrent_trials:
            from ray.tune.search import ConcurrencyLimiter

            searcher = ConcurrencyLimiter(searcher, max_concurrent=search.max_concurrent_trials)
        # Under new ids: what it draws after the trials that ended is not what it drew
        # before, so a trial of an old id could be another configuration.
        return _OrderedSearchGenerator(searcher)
    # Ray applies max_concurrent_trials only to searchers it makes itself (or
    # to a Searcher); a generator passed in must carry the limit.
    generator = BasicVariantGenerator(
        points_to_evaluate=points,
        random_state=seed,
        max_concurrent=search.max_concurrent_trials or 0,
    )
    if restart is not None and restart.prefix:
        generator._uuid_prefix = f"{restart.prefix}_"  # Ray 2.60: trial ids are prefix + number
    return generator


def experiment_dir(run_dir: Path, strategy: str) -> Path:
    """Where Ray keeps one strategy's experiment (Tune's own files; ``--resume``
    never reads them: see :func:`_restart`)."""
    return Path(run_dir) / "ray" / strategy


#: A trial's id: its search's prefix and its number in the search's order.
_TRIAL_ID = re.compile(r"^(?P<prefix>[0-9a-z]+)_(?P<number>\d{5})$")


@dataclass
class _Restart:
    """What a resumed search starts again with (:func:`_restart`)."""

    #: Ended trials' ids by configuration (:attr:`TrialSpec.earlier`).
    earlier: dict[str, list[str]]
    #: The configurations of the trials that ended, in their search's order.
    ended: list[dict[str, Any]]
    #: The search's trial-id prefix, so its trials keep their ids; ``None`` if none ran.
    prefix: str | None


def _restart(run_dir: Path, strategy: str) -> _Restart:
    """A resumed search is started again, never restored from Tune's saved state.

    Tune saves a search as pickles (``tuner.pkl``, its trials and searcher),
    and unpickling runs whatever code they name: a run directory fetched from
    shared storage, or copied, would run code anyone who could write there
    put in it. The search starts again from the recipe's seed instead, under
    its trial-id prefix (read from its trial folders), so random and grid
    search draw the same configurations under the same ids; a trial whose
    ``result.json`` exists takes it back rather than running again
    (:func:`~orchestrator.trial.run_trial`), and one whose configuration comes
    again under another id takes it back by configuration (``earlier``). The
    folders of trials that did not end, and of those whose worker died (which
    Tune would have restarted), are removed: they run again. A folder whose
    ``result.json`` could not be read is kept, that file set aside in it
    (:func:`~orchestrator.trial.read_result`): its trial runs again there.
    """
    folder = Path(run_dir) / "trials" / strategy
    ended = [r for r in ended_trials(folder) if not runs_again(r)]
    kept = {result.trial_id for result in ended}
    prefixes: Counter[str] = Counter()
    for path in folder.iterdir() if folder.is_dir() else ():
        match = _TRIAL_ID.match(path.name)
        if match:
            prefixes[match["prefix"]] += 1
        if path.is_dir() and path.name not in kept and not (path / DAMAGED_RESULT_FILE).exists():
            shutil.rmtree(path, ignore_errors=True)
    earlier: dict[str, list[str]] = {}
    for result in ended:
        earlier.setdefault(config_key(result.config), []).append(result.trial_id)
    prefix = prefixes.most_common(1)[0][0] if prefixes else None
    return _Restart(earlier, [dict(r.config) for r in ended], prefix)


def run_search(
    recipe: Recipe,
    spec: TrialSpec,
    space: dict[str, Dimension],
    dataset: Dataset,
    *,
    num_samples: int,
    listener: TrialListener | None = None,
    resume: bool = False,
    start: dict[str, Any] | None = None,
    prestart: Prestart | None = None,
) -> list[TrialResult]:
    """Run (or resume) one strategy's search as a Ray Tune experiment.

    ``start``, when given, is the configuration of the first trial (it counts
    among ``num_samples``); the searcher draws the others. ``prestart``: the
    next search's workers, which embedded Ray starts while this search's last
    trials run (not on ``resume``).

    Returns:
        Every trial's result, each trial once.
    """
    search = recipe.search
    strategy = spec.strategy.name
    run_dir = Path(spec.run_dir).resolve()
    key = (str(run_dir), strategy)
    events = _Events(run_dir, strategy, spec.storage, spec.max_epochs, search.max_failures)
    state = _SEARCHES[key] = _Search(
        listener=listener or TrialListener(), prestart=None if resume else prestart
    )

    experiment = experiment_dir(run_dir, strategy)
    restart = None
    if resume:  # started again, its ended trials taken back: see _restart
        restart = _restart(run_dir, strategy)
        # What a searcher is given of them: the dimensions it searches (as ``start``).
        restart.ended = [
            {k: v for k, v in config.items() if k in space and not isinstance(space[k], Fixed)}
            for config in restart.ended
        ]
        if search.algorithm == "bayesian":
            # Under new ids, taken back by configuration. Random and grid search keep
            # their ids, and each trial takes back its own result: by configuration
            # too, a trial whose configuration came again took an earlier one's
            # folder (a grid's repeats, a choice drawn twice).
            spec = dataclasses.replace(spec, earlier=restart.earlier)
        shutil.rmtree(experiment, ignore_errors=True)
    trainable = tune.with_resources(
        _trainable_class(spec, dataset, search.worker_memory_mb),
        {"cpu": spec.cpus, "gpu": spec.gpus},
    )
    param_space = to_tune(space, grid=search.algorithm == "grid")
    if search.algorithm == "bayesian":
        import optuna

        # Optuna warns on every experimental feature Ray touches, and logs each
        # study it makes (a restored search's too), which is not for our users.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        searched = any(not isinstance(dim, Fixed) for dim in space.values())
        searcher = _searcher(search, recipe.seed, start, searched=searched, restart=restart)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=search.metric,
                mode=search.direction,
                num_samples=num_samples,
                scheduler=_scheduler(search, recipe.seed),
                search_alg=searcher,
                # Tune limits a Searcher; a generator carries the limit itself
                # (Tune would log that it ignores its own).
                max_concurrent_trials=(
                    search.max_concurrent_trials if isinstance(searcher, Searcher) else None
                ),
                time_budget_s=search.time_budget_s,
                reuse_actors=True,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=strategy,
                storage_path=str(run_dir / "ray"),
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=search.max_failures),
                # Tune's own CSV and JSON logs, not its TensorBoard one: each of its
                # writers stays registered with atexit, and a process that ran many
                # searches grew by megabytes a run (found by QA); the trials write
                # their own TensorBoard logs (trials/STRATEGY/ID/tensorboard).
                callbacks=[events, CSVLoggerCallback(), JsonLoggerCallback()],
                stop=_StopsWhenTheDiskIsFull(key),
            ),
        )
        # Tune's newer console output prints banners at verbose=0, on any Ray (a
        # notebook's own ray.init too); the run puts the variable back after.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # see callbacks
        # Tune would chdir each trial into a folder of its own under Ray's session
        # (found by QA: a plugin's relative path worked in the driver and under
        # keras_tuner, and failed every Ray trial); graftune's trials write only by
        # absolute paths. Set as Ray starts (ray_start._init_kwargs); here for a
        # caller's own ray.init, whose trial actors Tune then sends it to.
        os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
        if threading.current_thread() is threading.main_thread():
            state.sigint_before = signal.getsignal(signal.SIGINT)
        ignored = state.sigint_before is signal.SIG_IGN  # on the main thread only
        with ray_start.tune_env_inherited(), _signals_restored(), _ignored_sigint_kept(ignored):
            grid = tuner.fit()
    finally:
        _SEARCHES.pop(key, None)
    if state.disk_full is not None:
        # Before any trial is collected: those Tune stopped have no result, and run
        # again on --resume, with the one that could not write its files.
        said = state.disk_full
        where = f" (on {said['node']})" if said.get("node") else ""
        code = int(said.get("errno") or errno.ENOSPC)
        raise OSError(code, os.strerror(code) + where, said.get("filename") or None)
    stopped = state.stopped_midway()
    results: dict[str, TrialResult] = {}
    for ray_result in grid:
        trial_id = _trial_id(ray_result)
        reported = (ray_result.metrics or {}).get("training_iteration")
        folder = trial_dir(run_dir, strategy, trial_id)
        if not reported and not folder.exists() and ray_result.error is None:
            # Left unstarted when a time budget ran out or the user stopped the
            # search: not a trial of this run (yet).
            continue
        if trial_id in stopped and read_result(folder, set_aside=True) is None:
            continue  # stopped midway by Ctrl+C: it runs again on --resume
        results[trial_id] = collect(
            run_dir,
            strategy,
            trial_id,
            ray_result.config or {},
            ray_result.metrics,
            ray_result.error,
            retries=state.retries.get(trial_id, 0),
            storage=spec.storage,
        )
        if results[trial_id].status in DRIVER_WRITTEN:
            write_reported_history(folder, ray_result.metrics_dataframe)
            stored = state.stored.get(trial_id)
            if (
                spec.storage is not None
                and folder.is_dir()
                and (stored is None or stored != folder_state(folder))
            ):
                # Its worker never uploaded it: the driver wrote its result and history.
                # Once, as it ended (_Events._store_early), unless that upload failed
                # or the folder changed since.
                from orchestrator.storage import push_trial

                push_trial(folder, spec.storage, strategy, trial_id)
    finished = [results[trial_id] for trial_id in sorted(results)]
    _tell_the_untold(state, finished, spec, search.time_budget_s)
    if state.interrupted:
        midway = {t for t in stopped - set(results) if trial_dir(run_dir, strategy, t).exists()}
        raise SearchInterrupted(finished, stopped=len(midway))
    return finished


#: The signals Tune handles during ``Tuner.fit`` (SIGUSR1 where the system has it).
TUNE_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGUSR1") if hasattr(signal, name)
)


@contextmanager
def _ignored_sigint_kept(ignored: bool) -> Iterator[None]:
    """No Tune handler for Ctrl+C where this process ``ignored`` it as the search began.

    A shell script's background job starts with SIGINT ignored (so that a Ctrl+C
    at the terminal does not reach it); Python keeps that, and so does the
    keras_tuner backend, but Tune installs its handler whatever was there, and a
    ``kill -INT`` stopped the search on Ray only (found by QA).
    """
    if not ignored:
        yield
        return
    before = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = before


@contextmanager
def _signals_restored() -> Iterator[None]:
    """Put back the handlers of Ctrl+C and SIGUSR1 that were there before ``Tuner.fit``.

    Tune installs its own for the search and leaves them installed when the
    search ends; a Ctrl+C after that (while the next strategy starts, or the
    leaderboard is written) would only set a flag nobody reads any more, and a
    SIGUSR1 to the caller's process after the run printed Tune's "Stop signal
    received" instead of what the caller's handler (or the default) does
    (found by QA).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {number: signal.getsignal(number) for number in TUNE_SIGNALS}
    try:
        yield
    finally:
        for number, handler in before.items():
            if handler is not None:  # None: set from C, which Python cannot put back
                signal.signal(number, handler)


def _trial_dirname(trial: Any) -> str:
    return str(trial.trial_id)


def _trial_id(ray_result: Any) -> str:
    """The id of the trial a Tune result is of, which names its folder under ``trials/``.

    Not the name of its folder under ``ray/``, which Tune may suffix
    (``ID_2f28``) where a folder of that name exists. Tune puts the id in every
    trial's metrics, reported or not (Ray 2.60).
    """
    trial_id = (ray_result.metrics or {}).get("trial_id")
    return str(trial_id) if trial_id else Path(ray_result.path).name


class _Events(tune.Callback):
    """Tells the driver about each trial as soon as Ray does, and about Ctrl+C.

    On Ctrl+C, Tune stops the search, saves its state for ``Tuner.restore``
    and ends the trials still running without calling any callback; its
    ``fit`` returns as if the search had ended. So that the driver can tell
    (:class:`SearchInterrupted`), the first step wraps the SIGINT handler Tune
    installed for the search in one that notes the interrupt first, and every
    step's end notes which trials have not ended yet.
    """

    def __init__(
        self,
        run_dir: Path,
        strategy: str,
        storage: str | None = None,
        max_epochs: int | None = None,
        max_failures: int | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.strategy = strategy
        self.storage = storage
        self.max_epochs = max_epochs
        self.max_failures = max_failures

    def _retries(self, trial: Any) -> int:
        # Tune counts the worker's deaths; the last one, past max_failures, was not retried.
        deaths = int(getattr(trial, "num_failures", 0) or 0)
        return deaths if self.max_failures is None else min(deaths, self.max_failures)

    def _search(self) -> _Search:
        # A search that is not the driver's (none registered) is told nothing.
        return _SEARCHES.get((str(self.run_dir), self.strategy)) or _Search()

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        said = result.get(DISK_FULL)
        search = self._search()
        if said is not None:
            if search.disk_full is None:
                search.disk_full = dict(said)
            return
        epoch = result.get("epoch")
        if isinstance(epoch, (int, float)):
            row = {k: v for k, v in result.items() if isinstance(v, (int, float, str))}
            search.reports.setdefault(trial.trial_id, []).append(row)
            if self.max_epochs:
                tell_epoch(
                    search.listener, self.strategy, trial.trial_id, int(epoch), self.max_epochs
                )

    def _done(self, trial: Any, error: Any) -> None:
        if DISK_FULL in (trial.last_result or {}):
            # No result: it runs again on --resume, once there is room.
            return
        search = self._search()
        search.retries[trial.trial_id] = self._retries(trial)
        if search.unfinished is not None:
            search.unfinished.discard(trial.trial_id)
        result = collect(
            self.run_dir,
            self.strategy,
            trial.trial_id,
            trial.config,
            trial.last_result,
            error,
            retries=search.retries[trial.trial_id],
            storage=self.storage,
            started_at=getattr(getattr(trial, "run_metadata", None), "start_time", None),
            finished_at=time.time(),
        )
        folder = trial_dir(self.run_dir, self.strategy, trial.trial_id)
        reports = search.reports.pop(trial.trial_id, [])
        if result.status in DRIVER_WRITTEN and reports and not search.interrupted:
            # Now, not once the search has ended (found by QA: a run killed midway
            # left its pruned trials without one, and a resume replayed only their
            # last epoch to the scheduler; the MLflow reporter, told of the trial
            # here, found none).
            import pandas as pd

            write_reported_history(folder, pd.DataFrame(reports))
        _tell(search, result, folder, self.max_epochs, stored=self._store_early)

    def _store_early(self, result: TrialResult, folder: Path) -> None:
        """Upload a pruned or failed trial's folder as soon as the driver has written
        it, before the run records that it ended: its worker never uploads it, and a
        run killed before the search's end had stored the record and not the trial,
        which a resume from storage then trained again, and the hooks heard of twice
        (found by upgrade QA). Tried again when the search ends if it failed (or the
        folder changed since); not uploaded twice otherwise."""
        if self.storage is None or result.status not in DRIVER_WRITTEN:
            return
        if self._search().interrupted or not folder.is_dir():
            return
        from orchestrator.storage import push_trial

        state = folder_state(folder)
        try:
            push_trial(folder, self.storage, self.strategy, result.trial_id)
        except StorageError as exc:
            log.warning("%s; uploaded again when the search ends", exc)
        else:
            if state is not None:
                self._search().stored[result.trial_id] = state

    def setup(self, **info: Any) -> None:
        # As soon as Tune's Ctrl+C handler is up (it is, when callbacks are set up):
        # noted from the first step only, one in between stopped the search unnoticed,
        # which then ended with no trial and was written as finished.
        self.on_step_begin(0, [])

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        search = _SEARCHES.get((str(self.run_dir), self.strategy))
        if search is not None and not search.watching:
            search.watching = True
            _note_interrupts(search)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        search = self._search()
        search.unfinished = {
            t.trial_id for t in trials if t.status not in (Trial.TERMINATED, Trial.ERROR)
        }
        prestart = search.prestart
        if prestart is not None and len(trials) >= prestart.planned:
            statuses = [t.status for t in trials]
            if Trial.PENDING not in statuses and statuses.count(Trial.RUNNING) < prestart.at_once:
                # Its last trials run, with room beside them: the next search's workers
                # import TensorFlow now rather than when it asks for them.
                ray_start.prestart_workers(prestart.workers)
                search.prestart = None
        ray_start.raise_if_interrupted()  # a SIGTERM or Ctrl+C whose KeyboardInterrupt Python dropped

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._search().listener.trial_started(self.strategy, trial.trial_id)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._search().retries[trial.trial_id] = self._retries(trial)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._done(trial, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._done(trial, _trial_error(trial))


def _tell(
    search: _Search,
    result: TrialResult,
    folder: Path,
    max_epochs: int | None,
    *,
    stored: Callable[[TrialResult, Path], None] | None = None,
) -> bool:
    """Tell the listener a trial ended, once; whether it was stopped before its last epoch.

    ``stored``: called with the trial's files written, before the listener is told
    (which records the end, and stores that record).

    A trial stopped early (by the scheduler, or the time budget) gets its
    ``result.json`` here: its worker never wrote one, and without it Tune's
    saved state (a few seconds old when a run is killed) would run it again.
    (A trial that ran every epoch on another node may only not be here yet.)
    """
    stopped_early = (
        result.status == "pruned" and max_epochs is not None and result.epochs < max_epochs
    )
    if stopped_early and not search.interrupted and not (folder / RESULT_FILE).is_file():
        write_result(folder, result)  # not again for one a resume took back
    if stored is not None:
        stored(result, folder)
    search.told.add(result.trial_id)
    search.listener.trial_finished(result)
    return stopped_early


def _tell_the_untold(
    state: _Search, finished: list[TrialResult], spec: TrialSpec, budget: float | None
) -> None:
    """Tell the listener of the trials Tune ended without a callback.

    When ``search.time_budget_s`` runs out, Tune stops the trials still running
    and calls no callback: they had no line, no ``graftune_trial_finished``, no
    ``result.json`` (so a resume could run them again), and the progress view
    kept them running.
    """
    run_dir = Path(spec.run_dir).resolve()
    scored = unscored = 0
    for result in finished:
        if result.trial_id in state.told:
            continue
        folder = trial_dir(run_dir, spec.strategy.name, result.trial_id)
        if _tell(state, result, folder, spec.max_epochs):
            if getattr(result, spec.metric, None) is None:
                unscored += 1  # stopped before its first epoch ended
            else:
                scored += 1
    if (scored or unscored) and budget is not None and not state.interrupted:
        said = f"{spec.strategy.name}: search.time_budget_s ({budget:g} s) ran out: " + "; ".join(
            _cut_short(scored, unscored)
        )
        warn = getattr(state.listener, "warn", None)  # (a listener of its own may lack it)
        (warn or TrialListener().warn)(said)


def _cut_short(scored: int, unscored: int) -> list[str]:
    """What the time budget did to trials it stopped: those with an epoch's
    scores, and those stopped before their first epoch ended (no score, no rank)."""
    said = []
    if scored == 1:
        said.append("1 trial stopped midway, shown as pruned with the scores of its last epoch")
    elif scored:
        said.append(
            f"{scored} trials stopped midway, each shown as pruned with the scores of its "
            "last epoch"
        )
    if unscored == 1:
        said.append("1 trial stopped before its first epoch ended (pruned, no score)")
    elif unscored:
        said.append(f"{unscored} trials stopped before their first epoch ended (pruned, no score)")
    return said


def _note_interrupts(search: _Search) -> None:
    """Have a Ctrl+C set ``search.interrupted`` before Tune's handler stops the search."""
    if threading.current_thread() is not threading.main_thread():
        return  # Tune installs no handler off the main thread either
    tune_handler = signal.getsignal(signal.SIGINT)
    if not callable(tune_handler):
        return
    if (
        tune_handler is search.sigint_before
        and os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") == "0"
        and hasattr(tune, "tune")
        and hasattr(tune.tune, "_setup_signal_catching")  # Tune installs one (Ray 2.60)
    ):
        # Tune's handler ran already (it puts back the one before it): a Ctrl+C
        # while the search was set up. Its search ends with no trial, as stopped.
        search.interrupted = True
        return

    def interrupted(signum: int, frame: Any) -> None:
        search.interrupted = True
        tune_handler(signum, frame)

    signal.signal(signal.SIGINT, interrupted)


def _trial_error(trial: Any) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        return Path(path).read_text() if path else "the trial failed"
    except OSError:
        return "the trial failed"
