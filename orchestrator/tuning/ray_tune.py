"""The Ray Tune backend: one Tune experiment per strategy.

Data and the prepared base reach trials through Ray's object store
(``tune.with_parameters``), never through ``param_space``. Each trial writes
its own result files (see :mod:`orchestrator.trial`); this module turns Ray's
view of trials that never wrote one (pruned by the scheduler, killed) into
results too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune

from orchestrator.space import Choice, Dimension, Fixed, Float, Int, LogFloat
from orchestrator.trial import TrialResult, TrialSpec, read_result, run_trial, trial_dir

if TYPE_CHECKING:
    from orchestrator.data import Dataset
    from orchestrator.recipe import Recipe, ResourcesSpec

log = logging.getLogger(__name__)


def to_tune(space: dict[str, Dimension]) -> dict[str, Any]:
    """Translate graftune dimensions into Ray Tune's search-space objects."""
    translated: dict[str, Any] = {}
    for key, dim in space.items():
        if isinstance(dim, Fixed):
            translated[key] = dim.value
        elif isinstance(dim, Choice):
            translated[key] = tune.choice(list(dim.values))
        elif isinstance(dim, Int):
            # Ray's randint excludes its upper bound; ours includes it.
            translated[key] = tune.randint(dim.low, int(dim.high) + 1)
        elif isinstance(dim, LogFloat):
            translated[key] = tune.loguniform(dim.low, dim.high)
        elif isinstance(dim, Float):
            translated[key] = tune.uniform(dim.low, dim.high)
        else:
            raise TypeError(f"{key}: {type(dim).__name__} is not a graftune space type")
    return translated


def ensure_ray(resources: ResourcesSpec) -> bool:
    """Start embedded local Ray, or connect to ``resources.address``.

    Returns:
        Whether this call started (or connected) Ray, so the caller shuts it down.
    """
    import ray

    if ray.is_initialized():
        return False
    # Workers inherit the driver's environment: keep TensorFlow's C++ chatter out.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray's newer console output prints experiment banners even at verbose=0.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    kwargs: dict[str, Any] = {
        "include_dashboard": resources.dashboard,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
        "configure_logging": True,
    }
    if resources.dashboard:
        kwargs["dashboard_host"] = "127.0.0.1"
    if resources.address:
        ray.init(address=resources.address, **kwargs)
    else:
        ray.init(address="local", num_cpus=resources.num_cpus, **kwargs)
    return True


def _trainable(config: dict[str, Any], spec: TrialSpec, dataset: Dataset) -> None:
    trial_id = tune.get_context().get_trial_id()
    run_trial(config, spec, dataset, trial_id=trial_id, report=tune.report)


def collect(
    run_dir: Path,
    strategy: str,
    trial_id: str,
    config: dict[str, Any],
    last: dict[str, Any] | None,
    error: Any,
) -> TrialResult:
    """The result of one trial, from its own files or else from what Ray saw."""
    result = read_result(trial_dir(run_dir, strategy, trial_id))
    if result is not None:
        return result
    last = last or {}
    if error is not None:
        status, message = "error", _short_error(error)
    else:
        status, message = "pruned", None
    return TrialResult(
        strategy=strategy,
        trial_id=trial_id,
        status=status,
        config={k: v for k, v in config.items()},
        val_accuracy=last.get("val_accuracy"),
        val_loss=last.get("val_loss"),
        epochs=int(last.get("training_iteration", 0) or 0),
        error=message,
    )


def _short_error(error: Any) -> str:
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else type(error).__name__


def run_search(
    recipe: Recipe,
    spec: TrialSpec,
    space: dict[str, Dimension],
    dataset: Dataset,
    *,
    num_samples: int,
    on_trial_done: Callable[[TrialResult], None] | None = None,
) -> list[TrialResult]:
    """Run one strategy's search as a Ray Tune experiment and return every trial's result."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    search = recipe.search
    strategy = spec.strategy.name
    run_dir = spec.run_dir

    if search.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=search.max_epochs,
            grace_period=min(search.grace_period, search.max_epochs),
            reduction_factor=search.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()

    events = _Events(run_dir, strategy, on_trial_done)
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, spec=spec, dataset=dataset),
        {"cpu": spec.cpus, "gpu": spec.gpus},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=to_tune(space),
        tune_config=tune.TuneConfig(
            metric=search.metric,
            mode=search.direction,
            num_samples=num_samples,
            scheduler=scheduler,
            search_alg=BasicVariantGenerator(random_state=recipe.seed),
            max_concurrent_trials=search.max_concurrent_trials,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=strategy,
            storage_path=str((run_dir / "ray").resolve()),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            callbacks=[events],
        ),
    )
    tuner.fit()
    return [events.results[trial_id] for trial_id in sorted(events.results)]


class _Events(tune.Callback):
    """Turns each ended trial into a :class:`TrialResult` as soon as Ray reports it."""

    def __init__(
        self, run_dir: Path, strategy: str, on_trial_done: Callable[[TrialResult], None] | None
    ) -> None:
        self.run_dir = run_dir
        self.strategy = strategy
        self.on_trial_done = on_trial_done
        self.results: dict[str, TrialResult] = {}

    def _done(self, trial: Any, error: Any) -> None:
        result = collect(
            self.run_dir, self.strategy, trial.trial_id, trial.config, trial.last_result, error
        )
        self.results[trial.trial_id] = result
        if self.on_trial_done is not None:
            self.on_trial_done(result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._done(trial, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._done(trial, _trial_error(trial))

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles its callbacks with the experiment state; the hook is driver-only.
        state = dict(self.__dict__)
        state["on_trial_done"] = None
        return state


def _trial_error(trial: Any) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        return Path(path).read_text() if path else "the trial failed"
    except OSError:
        return "the trial failed"
