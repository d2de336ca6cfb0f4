"""The keras-tuner backend: the same recipes, strategies and spaces, in one process.

For users without Ray, and a baseline to beat. keras-tuner's oracles choose the
configurations (``random`` -> RandomSearch, ``grid`` -> GridSearch,
``bayesian`` -> BayesianOptimization, ``scheduler: hyperband`` -> Hyperband);
each trial runs through :func:`orchestrator.trial.run_trial` exactly as under
Ray, so the leaderboard has the same columns. Trials run one after another.

Hyperband's later rounds train their configurations again from scratch for
more epochs (graftune does not carry Keras checkpoints between rounds), so its
trials show the epochs each round gave them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import itertools
import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import RunDirError, SearchInterrupted, is_disk_full
from orchestrator.leaderboard import atomic_write_text
from orchestrator.progress import tell_epoch
from orchestrator.space import (
    Choice,
    Dimension,
    Fixed,
    Float,
    Int,
    LogFloat,
    distinct_configurations,
    single_value,
    uses_all,
)
from orchestrator.trial import (
    COST_KEYS,
    TrialResult,
    finite_or_none,
    read_result,
    reported_costs,
    run_trial,
    trial_dir,
    whole_or_none,
    write_result,
)
from orchestrator.tuning.ray_start import raise_if_interrupted

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from orchestrator.data import Dataset
    from orchestrator.recipe import Recipe
    from orchestrator.trial import TrialSpec
    from orchestrator.tuning.ray_tune import TrialListener

log = logging.getLogger(__name__)


@contextlib.contextmanager
def oracle_quiet() -> Iterator[None]:
    """keras-tuner's Bayesian oracle fits a Gaussian process (scikit-learn's) to the
    hyperparameters tried, and its "lbfgs failed to converge ... scale the data"
    reached the console, read as advice about the user's data (found by QA): kept
    off it. Other warnings, the trials' own included, are as they were."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", category=ConvergenceWarning, module=r"sklearn\.gaussian_process"
        )
        yield


def to_hyperparameters(space: dict[str, Dimension], start: dict[str, Any] | None = None) -> Any:
    """Translate graftune dimensions into keras-tuner ``HyperParameters``.

    ``start`` gives their default values (keras-tuner's own defaults otherwise).
    """
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for name, dim in space.items():
        default = (start or {}).get(name)
        if isinstance(dim, Fixed):
            hp.Fixed(name, dim.value)
        elif isinstance(dim, (Int, Float, LogFloat)) and single_value(dim):
            hp.Fixed(name, dim.low)  # a range of equal ends: its value, as on Ray
        elif isinstance(dim, Choice):
            values = list(dim.values)
            if _numbers(values):  # keras-tuner takes one type: [0, 0.001] as floats
                values = [float(v) for v in values]
                default = None if default is None else float(default)
            hp.Choice(name, values, ordered=False, default=default)
        elif isinstance(dim, Int):
            hp.Int(name, dim.low, int(dim.high), default=default)
        elif isinstance(dim, LogFloat):
            hp.Float(name, dim.low, dim.high, sampling="log", default=default)
        elif isinstance(dim, Float):
            hp.Float(name, dim.low, dim.high, default=default)
        else:
            raise TypeError(f"{name}: {type(dim).__name__} is not a graftune space type")
    return hp


def _numbers(values: Any) -> bool:
    """Whether a choice mixes whole numbers and floats (and nothing else)."""
    kinds = {type(v) for v in values}
    return kinds == {int, float}


def as_declared(dim: Dimension, value: Any) -> Any:
    """``value`` as the dimension declares it: keras-tuner keeps a choice of
    ``[False, True]`` as ``0`` and ``1``, which a strategy (``config["two_phase"]
    is True``) and the leaderboard must not see."""
    if isinstance(dim, Choice):
        same = [v for v in dim.values if type(v) is type(value) and v == value]
        equal = [v for v in dim.values if v == value]
        return (same or equal or [value])[0]
    return value


def check_space(recipe: Recipe, space: dict[str, Dimension], strategy: str = "") -> None:
    """Refuse, before anything is written, what keras-tuner cannot search.

    ``strategy`` names whose space it is, in the message.

    Raises:
        RecipeError: ``asha`` (keras-tuner has no such scheduler), Hyperband with a
            grid or Bayesian algorithm (keras-tuner's draws at random), or a grid
            over continuous dimensions.
    """
    search = recipe.search
    if search.scheduler == "asha":
        raise recipe.error(
            ("search", "scheduler"),
            "the keras_tuner backend has no asha scheduler; use fifo or hyperband, or backend: ray",
        )
    whose = f"{strategy}'s " if strategy else ""
    for key, dim in space.items():
        # ("all" is the base's count of cut points: a whole number once the base is known.)
        values = (
            tuple(v for v in dim.values if not uses_all(Fixed(v)))
            if isinstance(dim, Choice)
            else ()
        )
        # Whole numbers among floats are floats to keras-tuner (see to_hyperparameters).
        kinds = sorted(
            {type(v).__name__ for v in values} - ({"int"} if _numbers(values) else set())
        )
        if len(kinds) > 1:
            raise recipe.error(
                ("search", "backend"),
                f"keras_tuner takes choices of one type; {whose}{key} mixes "
                f"{' and '.join(kinds)} ({dim.describe()}); use backend: ray, or one type",
            )
        if isinstance(dim, Fixed) and not isinstance(dim.value, (bool, int, float, str)):
            raise recipe.error(
                ("search", "backend"),
                f"keras_tuner fixes only numbers, text and true/false; {whose}{key} is "
                f"{dim.value!r}; use backend: ray",
            )
    if search.scheduler == "hyperband" and search.algorithm != "random":
        # keras-tuner's Hyperband draws its configurations itself, at random.
        raise recipe.error(
            ("search", "algorithm"),
            f"keras-tuner's Hyperband draws its configurations at random; algorithm: "
            f"{search.algorithm} with scheduler: hyperband needs backend: ray, or "
            "algorithm: random",
        )
    if search.scheduler == "hyperband" and (
        search.reduction_factor < 2 or not float(search.reduction_factor).is_integer()
    ):
        raise recipe.error(
            ("search", "reduction_factor"),
            "keras-tuner's Hyperband takes a whole reduction factor of 2 or more; got "
            f"{search.reduction_factor:g}",
        )
    if search.algorithm == "grid":
        continuous = [  # a range of equal ends is its value (found by QA: refused)
            k for k, d in space.items() if isinstance(d, (Float, LogFloat)) and not single_value(d)
        ]
        if continuous:
            raise recipe.error(
                ("search", "algorithm"),
                "grid search with keras_tuner needs discrete dimensions; fix or list choices "
                f"for {whose}{', '.join(continuous)}",
            )


def check_resources(recipe: Recipe, echo: Callable[[str], None]) -> None:
    """What ``resources`` means where every trial runs in this process.

    Raises:
        RecipeError: ``gpus_per_trial`` above 0 where this process sees no GPU (its
            trials ran on the CPU, in ``mixed_float16`` if asked).
            Or keras-tuner is not installed (the run would fail after writing its folder).
    """
    import importlib.util

    if importlib.util.find_spec("keras_tuner") is None:
        raise recipe.error(
            ("search", "backend"),
            "keras_tuner, but keras-tuner is not installed here: pip install keras-tuner, "
            "or backend: ray",
        )
    resources = recipe.resources
    if resources.gpus_per_trial:
        from orchestrator.accelerator import gpu_count

        if not gpu_count():
            raise recipe.error(
                ("resources", "gpus_per_trial"),
                f"{resources.gpus_per_trial:g} GPUs per trial, but this process sees no GPU "
                "(the keras_tuner backend trains here): set gpus_per_trial: 0",
            )
    if resources.address:
        echo(
            f"note: the keras_tuner backend trains every trial in this process; "
            f"{resources.address_source} ({resources.address}) is not used "
            "(backend: ray runs there)"
        )
    # What only Ray's workers use: said where the recipe asks for other than the default
    # (found by QA: num_cpus read as a limit, dashboard: true as a dashboard).
    from orchestrator.recipe import changed_keys

    unused = changed_keys(
        recipe.search, "search", ("max_concurrent_trials", "worker_memory_mb")
    ) + changed_keys(resources, "resources", ("cpus_per_trial", "num_cpus", "dashboard"))
    if unused:
        echo(
            f"note: {', '.join(unused)} {'is' if len(unused) == 1 else 'are'} for backend: "
            "ray; the keras_tuner backend trains one trial at a time in this process"
        )
    search = recipe.search
    if search.scheduler == "hyperband" and changed_keys(search, "search", ("grace_period",)):
        echo(
            "note: search.grace_period is for backend: ray; keras-tuner's Hyperband starts "
            "its brackets at max_epochs / reduction_factor^k epochs, down to 1"
        )


def _starting_at_defaults(oracle_class: type) -> type:
    """``oracle_class``, whose first configuration is its hyperparameters' defaults.

    keras-tuner's random, Bayesian and Hyperband oracles draw every new
    configuration with ``_random_values``; the first draw of a search that has
    no trial yet (not a resumed one) returns the defaults instead.
    """

    class Starting(oracle_class):  # type: ignore[misc,valid-type]
        def _random_values(self) -> Any:
            if not self.trials:
                values = self.hyperparameters.copy().values
                if not self._duplicate(values):
                    return values
            return super()._random_values()

    Starting.__name__ = Starting.__qualname__ = f"Starting{oracle_class.__name__}"
    return Starting


def _never_twice(oracle_class: type) -> type:
    """``oracle_class``, which never proposes a configuration it has tried.

    keras-tuner's Bayesian oracle returns the Gaussian process's optimum
    without checking it was tried (the same configuration ran twice), and its
    random draws give up after some collisions (the search ended short, saying
    nothing). A repeated proposal is replaced by a random draw, and a draw that
    gave up by a configuration not yet tried, chosen at random among them
    (``None`` where there is none, or the space is continuous).
    """
    from keras_tuner.src.engine import trial as trial_module

    class NeverTwice(oracle_class):  # type: ignore[misc,valid-type]
        def populate_space(self, trial_id: str) -> dict[str, Any]:
            response = super().populate_space(trial_id)
            values = response.get("values")
            if response.get("status") != trial_module.TrialStatus.RUNNING or not values:
                return response
            if self._duplicate(values):
                values = self._random_values()
                if values is None:
                    return {"status": trial_module.TrialStatus.STOPPED, "values": None}
            return {**response, "values": values}

        def _random_values(self) -> Any:
            values = super()._random_values()
            return values if values is not None else self._untried_values()

        def _untried_values(self) -> dict[str, Any] | None:
            import random

            from keras_tuner.src.engine.hyperparameters import hp_types

            choices = []
            for hp in self.hyperparameters.space:
                if isinstance(hp, hp_types.Fixed):
                    choices.append([hp.value])
                elif isinstance(hp, hp_types.Choice):
                    choices.append(list(hp.values))
                elif isinstance(hp, hp_types.Int):
                    choices.append(list(range(hp.min_value, hp.max_value + 1, hp.step or 1)))
                else:  # a float: a continuous space is never used up
                    return None
            names = [hp.name for hp in self.hyperparameters.space]
            untried = [
                values
                for values in (
                    dict(zip(names, combo, strict=True)) for combo in itertools.product(*choices)
                )
                if not self._duplicate(values)
            ]
            if not untried:
                return None
            self._seed_state += 1
            return random.Random(self._seed_state).choice(untried)

    NeverTwice.__name__ = NeverTwice.__qualname__ = f"NeverTwice{oracle_class.__name__}"
    return NeverTwice


def _resumable_grid() -> type:
    """keras-tuner's grid oracle, which goes on where a reloaded search stopped.

    It keeps the grid's order (which trial's point comes after which) and the
    trials whose next point it has yet to draw in memory only, not in its saved
    state: a resumed grid search raised ``KeyError`` at its first new point, and
    the next resume ended it at once, half the grid untried. Both are made again
    from the trials at the first new point after a reload; an ended trial whose
    next point was drawn already is passed over, so every point gets the trial
    id it had.
    """

    import keras_tuner as kt
    from keras_tuner.src.tuners.gridsearch import LinkedList

    class ResumableGridSearchOracle(kt.oracles.GridSearchOracle):
        def reload(self) -> None:
            super().reload()
            self._reloaded = True

        def populate_space(self, trial_id: str) -> dict[str, Any]:
            if getattr(self, "_reloaded", False):
                self._reloaded = False
                self._ordered_ids = LinkedList()
                ordered = sorted(
                    self.start_order,
                    key=functools.cmp_to_key(
                        lambda a, b: self._compare(
                            self.trials[a].hyperparameters.values,
                            self.trials[b].hyperparameters.values,
                        )
                    ),
                )
                for this in ordered:  # appended: in the grid's order
                    self._ordered_ids.insert(this)
                self._populate_next = list(dict.fromkeys([*self.end_order, *self._populate_next]))
            return super().populate_space(trial_id)

    return ResumableGridSearchOracle


#: In a trial's folder while this process runs it: how many times it was started
#: and did not end, its process killed (out of memory, SIGKILL) while it ran.
RUNNING_FILE = "running"


def _deaths(folder: Path) -> int:
    """How many times the process died while running the trial in ``folder``."""
    try:
        return int((folder / RUNNING_FILE).read_text())
    except (OSError, ValueError):
        return 0


def _set_deaths(folder: Path, deaths: int) -> None:
    if deaths:
        atomic_write_text(folder / RUNNING_FILE, str(deaths))
    else:
        (folder / RUNNING_FILE).unlink(missing_ok=True)


#: In a trial's folder while an attempt of it runs: each epoch it reported, a JSON
#: line each, for a trial whose process dies in it (:func:`_died_too_often`).
REPORTS_FILE = "reported.jsonl"


def _note_report(folder: Path, metrics: dict[str, Any]) -> None:
    """Keep an epoch's report where a process that dies leaves it (a line: one cut
    short by the death is not read back)."""
    with (
        contextlib.suppress(OSError, TypeError, ValueError),
        open(folder / REPORTS_FILE, "a", encoding="utf-8") as file,
    ):
        file.write(json.dumps(metrics) + "\n")


def _read_reports(folder: Path) -> list[dict[str, Any]]:
    """The epochs the last attempt of the trial in ``folder`` reported."""
    reports = []
    with contextlib.suppress(OSError):
        for line in (folder / REPORTS_FILE).read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                if isinstance(report := json.loads(line), dict):
                    reports.append(report)
    return reports


def _died_too_often(
    folder: Path, strategy: str, trial_id: str, config: dict[str, Any], deaths: int
) -> TrialResult:
    """Record as ``failed`` a trial whose process died more than ``max_failures`` times,
    with the scores and costs of the last epoch its last attempt reported, and those
    epochs as its ``history.csv``, as Ray's trials whose worker died (found by QA: an
    empty row, ``epochs`` 0, and no learning curve)."""
    reports = _read_reports(folder)
    last = reports[-1] if reports else {}
    result = TrialResult(
        strategy=strategy,
        trial_id=trial_id,
        status="failed",
        config=config,
        val_accuracy=finite_or_none(last.get("val_accuracy")),
        val_loss=finite_or_none(last.get("val_loss")),
        epochs=whole_or_none(last.get("epoch")) or 0,
        **reported_costs(last),
        error=f"the process died while running it {deaths} time{'s' * (deaths != 1)} "
        "(killed, or out of memory); to train it again, delete its folder (and the run's "
        "finished.json, once the run finished) and resume the run",
        retries=deaths - 1,
    )
    if reports:
        import pandas as pd

        epochs = [{k: v for k, v in report.items() if k not in COST_KEYS} for report in reports]
        atomic_write_text(folder / "history.csv", pd.DataFrame(epochs).to_csv(index=False))
    write_result(folder, result)
    _set_deaths(folder, 0)
    (folder / REPORTS_FILE).unlink(missing_ok=True)
    return result


def _resume_trials(
    oracle: Any,
    run_dir: Path,
    strategy: str,
    space: dict[str, Dimension],
    max_failures: int,
    listener: TrialListener | None,
) -> None:
    """Put keras-tuner's reloaded state right with the trials' own files.

    Reloaded, keras-tuner retries the trials that were running when the run
    stopped, and never proposes again one it recorded as ended. A trial of the
    latter whose ``result.json`` is gone (its folder deleted, or the file set
    aside as damaged) showed as ``failed``, and the run was sealed without it:
    it runs again, as on Ray. A trial whose process died while running it
    (killed, out of memory: see :data:`RUNNING_FILE`) killed every resume
    after, which ran it first: once it has died more than ``max_failures``
    times it is recorded as ``failed``, as Ray's worker deaths are, and the
    search goes on.
    """
    from keras_tuner.src.engine import trial as trial_module

    queue, failed = list(oracle._retry_queue), set()
    for trial_id, trial in oracle.trials.items():
        folder = trial_dir(run_dir, strategy, f"kt{trial_id}")
        if read_result(folder, set_aside=True) is not None:
            _set_deaths(folder, 0)  # ended: a stored copy's stale `running` (below)
            (folder / REPORTS_FILE).unlink(missing_ok=True)
            continue
        deaths = _deaths(folder)
        if deaths <= max_failures:
            queue.append(trial_id)
            continue
        values = trial.hyperparameters.values
        config = {name: as_declared(space[name], values.get(name)) for name in space}
        result = _died_too_often(folder, strategy, f"kt{trial_id}", config, deaths)
        failed.add(trial_id)
        trial.status = trial_module.TrialStatus.FAILED
        if trial_id not in oracle.end_order:
            oracle.end_order.append(trial_id)
        oracle._save_trial(trial)
        if listener is not None:
            listener.trial_finished(result)
    # Taken from the end: the lowest id first.
    oracle._retry_queue = sorted(set(queue) - failed, reverse=True)
    oracle.save()


class _BudgetSpent(BaseException):
    """The search's ``time_budget_s`` ran out (past keras-tuner, which catches Exception)."""


class _DiskFull(BaseException):
    """A trial could not write its files: the disk is full. Past keras-tuner, which
    would print the traceback and go on to the next trial, to the run, which says so."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


def _saves_in_one_step() -> None:
    """Make keras-tuner write its JSON state (each trial's, the oracle's) atomically.

    It writes them in place; a run stopped (Ctrl+C, SIGKILL) while it writes
    one left it empty, and keras-tuner could not reload the project: the run
    could never be resumed. Written aside and moved, a file is whole or old.
    """
    from keras_tuner.src import utils

    if getattr(utils.save_json, "graftune", False):
        return

    def save_json(path: str, obj: Any) -> str:
        text = json.dumps(obj)
        atomic_write_text(Path(path), text)
        return text

    save_json.graftune = True  # type: ignore[attr-defined]
    utils.save_json = save_json


def oracle_seed(seed: int) -> int:
    """The seed a keras-tuner oracle gets for a recipe's ``seed``.

    An oracle takes 0 for "none" (it draws one at random: ``seed: 0``, the
    default, searched differently every run), seeds its n-th draw with
    ``seed + n`` (seeds 1 and 5 would try the same configurations, one trial
    apart), and its Bayesian search takes no seed past 2**32 - 1 (numpy's).
    Recipe seeds are spread out: times a prime that shares no factor with
    2**32 - 1, modulo it, each seed of 0 to 2**32 - 2 has its own oracle seed
    (a bijection), and seeds fewer than 4,000 apart are a million draws apart.
    Of the 2**32 recipe seeds only 2**32 - 1 (the last) meets another's (0's):
    the oracle has one seed fewer. Found by QA: modulo 2**32 - 2, seeds 0 and
    4294967294, and 1 and 4294967295, drew the same configurations. Seeds
    below 4294 map as they did before.
    """
    return 1 + (seed * 1_000_003) % (2**32 - 1)


def hyperband_trials(max_epochs: int, reduction_factor: float) -> int:
    """How many trials keras-tuner's Hyperband runs for ``max_epochs`` and
    ``reduction_factor`` (its HyperbandOracle, ``min_epochs`` 1)."""
    factor = max(2, round(reduction_factor))  # validate refuses others
    brackets, epochs = 0, float(max_epochs)
    while epochs >= 1:
        epochs /= factor
        brackets += 1
    first_end = math.ceil(1 + math.log(max_epochs, factor))
    return sum(
        math.ceil(first_end / (bracket + 1) * factor ** (bracket - round_))
        for bracket in range(brackets)
        for round_ in range(bracket + 1)
    )


def _oracle(
    recipe: Recipe, space: dict[str, Dimension], num_samples: int, start: dict[str, Any] | None
) -> Any:
    import keras_tuner as kt

    search = recipe.search
    objective = kt.Objective(search.metric, direction=search.direction)

    def oracle(cls: type) -> type:
        return _starting_at_defaults(cls) if start else cls

    def searcher(cls: type) -> type:
        return oracle(_never_twice(cls))

    common = {
        "objective": objective,
        "hyperparameters": to_hyperparameters(space, start),
        "tune_new_entries": False,
        "seed": oracle_seed(recipe.seed),
        # A failing strategy is recorded per trial; it must not end the search.
        "max_consecutive_failed_trials": max(3, num_samples),
    }
    if search.scheduler == "hyperband":
        return oracle(kt.oracles.HyperbandOracle)(
            max_epochs=search.max_epochs, factor=int(search.reduction_factor), **common
        )
    if search.algorithm == "grid":
        return _resumable_grid()(max_trials=None, **common)
    if search.algorithm == "bayesian":
        return searcher(kt.oracles.BayesianOptimizationOracle)(max_trials=num_samples, **common)
    return searcher(kt.oracles.RandomSearchOracle)(max_trials=num_samples, **common)


def _reported(
    listener: TrialListener | None,
    strategy: str,
    trial_id: str,
    epochs: int,
    folder: Path,
    metrics: dict[str, Any],
) -> None:
    """A trial's epoch ended: stop here on Ctrl+C, or keep it and tell the listener."""
    raise_if_interrupted()
    _note_report(folder, metrics)
    if isinstance(metrics.get("epoch"), int):
        tell_epoch(listener, strategy, trial_id, metrics["epoch"], epochs)


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
) -> list[TrialResult]:
    """Run (or resume) one strategy's search with keras-tuner, in this process.

    ``start``, when given, is the configuration of the first trial.
    """
    import keras_tuner as kt

    strategy = spec.strategy.name
    run_dir = Path(spec.run_dir)
    metric = recipe.search.metric
    worst = 0.0 if recipe.search.direction == "max" else 1e12
    names = list(space)

    budget = recipe.search.time_budget_s
    began = time.monotonic()

    class GraftuneTuner(kt.Tuner):
        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            values = trial.hyperparameters.values
            config = {name: as_declared(space[name], values[name]) for name in names}
            epochs = int(values.get("tuner/epochs", spec.max_epochs))
            trial_id = f"kt{trial.trial_id}"
            raise_if_interrupted()
            if budget is not None and time.monotonic() - began > budget:
                raise _BudgetSpent  # between trials: keras-tuner has no budget of its own
            if listener is not None:
                listener.trial_started(strategy, trial_id)
            folder = trial_dir(run_dir, strategy, trial_id)
            deaths = _deaths(folder)
            if deaths and read_result(folder, set_aside=True) is not None:
                # It ended (run_trial takes its result back): no death, whatever its
                # `running` file says. Found by QA: a stored copy of a run killed
                # just after the trial ended keeps the file (uploaded before it was
                # removed), and keras-tuner, its state saved before the end, retries
                # the trial: it was `failed`, its scores gone, or given a retry.
                _set_deaths(folder, 0)
                deaths = 0
            if deaths > recipe.search.max_failures:
                # Killed in a search's first trial, before keras-tuner saved any state,
                # the resume's oracle knew nothing of it, and proposed it again.
                result = _died_too_often(folder, strategy, trial_id, config, deaths)
                if listener is not None:
                    listener.trial_finished(result)
                return {metric: worst}
            try:
                # Left as it is if the process dies in the trial: counted on resume.
                folder.mkdir(parents=True, exist_ok=True)
                _set_deaths(folder, deaths + 1)
                (folder / REPORTS_FILE).unlink(missing_ok=True)  # an attempt's own
                try:
                    result = run_trial(
                        config,
                        dataclasses.replace(spec, max_epochs=epochs),
                        dataset,
                        trial_id=trial_id,
                        report=functools.partial(
                            _reported, listener, strategy, trial_id, epochs, folder
                        ),
                    )
                except BaseException:  # stopped (Ctrl+C, a full disk): not a death
                    with contextlib.suppress(OSError):  # the disk full: what it stopped on
                        _set_deaths(folder, deaths)
                    raise
                if deaths:  # tried again after its process died, as Ray's retries
                    result.retries = max(result.retries, deaths)
                    write_result(folder, result)
                _set_deaths(folder, 0)
                (folder / REPORTS_FILE).unlink(missing_ok=True)
            except OSError as exc:
                if is_disk_full(exc):
                    raise _DiskFull(exc) from exc
                raise
            if listener is not None:
                listener.trial_finished(result)
            # Only an ok trial's score: a diverged one's last epoch is no score of its
            # configuration (Hyperband promoted such a trial to its next round).
            value = getattr(result, metric, None) if result.status == "ok" else None
            return {metric: worst if value is None else float(value)}

    _saves_in_one_step()
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):  # "Reloading Tuner from ..." on resume: to the log
            tuner = GraftuneTuner(
                oracle=_oracle(recipe, space, num_samples, start),
                directory=str(run_dir / "keras_tuner"),
                project_name=strategy,
                overwrite=not resume,
            )
    except ValueError as exc:  # json's errors: a file cut short by an older graftune
        if not resume:
            raise
        raise RunDirError(
            f"keras-tuner's saved state of {strategy} in {run_dir / 'keras_tuner' / strategy} "
            f"is damaged ({type(exc).__name__}: {exc}): the run was stopped while it was "
            "saved, and cannot be resumed; start it again"
        ) from exc
    if said.getvalue().strip():
        log.info("keras-tuner: %s", said.getvalue().strip())
    if resume:
        _resume_trials(tuner.oracle, run_dir, strategy, space, recipe.search.max_failures, listener)
    interrupted = spent = False
    try:
        with oracle_quiet():
            tuner.search(verbose=0)
    except KeyboardInterrupt:  # Ctrl+C: keras-tuner keeps its state for a resume
        interrupted = True
    except _DiskFull as full:
        raise full.error from None
    except _BudgetSpent:  # the trial it was about to run is not listed, as under Ray
        spent = True
    results, missing = [], 0
    for trial in tuner.oracle.trials.values():
        trial_id = f"kt{trial.trial_id}"
        result = read_result(trial_dir(run_dir, strategy, trial_id), set_aside=True)
        if result is None:
            missing += 1
            if interrupted or spent:  # stopped (it runs again on resume), or never run
                continue
            values = trial.hyperparameters.values
            result = TrialResult(
                strategy=strategy,
                trial_id=trial_id,
                status="failed",
                config={name: as_declared(space[name], values.get(name)) for name in names},
                error="keras-tuner recorded the trial but it left no result",
            )
        results.append(result)
    if interrupted:
        raise SearchInterrupted(sorted(results, key=lambda r: r.trial_id), missing)
    search = recipe.search
    distinct = distinct_configurations(space)
    if search.scheduler == "hyperband":
        planned = hyperband_trials(search.max_epochs, search.reduction_factor)
    elif search.algorithm == "grid":
        planned = distinct or 0  # each point once (a grid's points are discrete)
    else:
        planned = num_samples if distinct is None else min(num_samples, distinct)
    if spent:
        # Said as under Ray; the trial it was about to run is not counted (nor listed).
        ran = len(results)
        said = (
            f"{strategy}: search.time_budget_s ({budget:g} s) ran out: {ran} of {planned} "
            f"trials ran"
            + (f", the other {planned - ran} were not run" if planned > ran else "")
            + " (keras_tuner checks the budget between trials)"
        )
        (listener.warn if listener is not None else log.warning)(said)
        return sorted(results, key=lambda r: r.trial_id)
    ran = len(tuner.oracle.trials)
    if search.algorithm != "grid" and ran < planned:  # as announced, or said
        why = (
            "its brackets had fewer configurations to draw or promote (a small space, "
            "or trials that failed)"
            if search.scheduler == "hyperband"
            else "it drew no configuration it had not tried"
        )
        said = f"{strategy}: keras-tuner ended the search after {ran} of {planned} trials: {why}"
        (listener.warn if listener is not None else log.warning)(said)
    return sorted(results, key=lambda r: r.trial_id)
