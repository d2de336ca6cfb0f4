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

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import SearchInterrupted
from orchestrator.space import Choice, Dimension, Fixed, Float, Int, LogFloat
from orchestrator.trial import TrialResult, read_result, run_trial, trial_dir

if TYPE_CHECKING:
    from orchestrator.data import Dataset
    from orchestrator.recipe import Recipe
    from orchestrator.trial import TrialSpec
    from orchestrator.tuning.ray_tune import TrialListener

log = logging.getLogger(__name__)


def to_hyperparameters(space: dict[str, Dimension]) -> Any:
    """Translate graftune dimensions into keras-tuner ``HyperParameters``."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for name, dim in space.items():
        if isinstance(dim, Fixed):
            hp.Fixed(name, dim.value)
        elif isinstance(dim, Choice):
            hp.Choice(name, list(dim.values), ordered=False)
        elif isinstance(dim, Int):
            hp.Int(name, dim.low, int(dim.high))
        elif isinstance(dim, LogFloat):
            hp.Float(name, dim.low, dim.high, sampling="log")
        elif isinstance(dim, Float):
            hp.Float(name, dim.low, dim.high)
        else:
            raise TypeError(f"{name}: {type(dim).__name__} is not a graftune space type")
    return hp


def check_space(recipe: Recipe, space: dict[str, Dimension]) -> None:
    """Refuse, before anything is written, what keras-tuner cannot search.

    Raises:
        RecipeError: ``asha`` (keras-tuner has no such scheduler), or a grid over
            continuous dimensions.
    """
    search = recipe.search
    if search.scheduler == "asha":
        raise recipe.error(
            ("search", "scheduler"),
            "the keras_tuner backend has no asha scheduler; use fifo or hyperband, or backend: ray",
        )
    if search.algorithm == "grid" and search.scheduler != "hyperband":
        continuous = [k for k, d in space.items() if isinstance(d, (Float, LogFloat))]
        if continuous:
            raise recipe.error(
                ("search", "algorithm"),
                "grid search with keras_tuner needs discrete dimensions; fix or list choices "
                f"for {', '.join(continuous)}",
            )


def _oracle(recipe: Recipe, space: dict[str, Dimension], num_samples: int) -> Any:
    import keras_tuner as kt

    search = recipe.search
    objective = kt.Objective(search.metric, direction=search.direction)
    common = {
        "objective": objective,
        "hyperparameters": to_hyperparameters(space),
        "tune_new_entries": False,
        "seed": recipe.seed,
        # A failing strategy is recorded per trial; it must not end the search.
        "max_consecutive_failed_trials": max(3, num_samples),
    }
    if search.scheduler == "hyperband":
        return kt.oracles.HyperbandOracle(
            max_epochs=search.max_epochs, factor=round(search.reduction_factor), **common
        )
    if search.algorithm == "grid":
        return kt.oracles.GridSearchOracle(max_trials=None, **common)
    if search.algorithm == "bayesian":
        return kt.oracles.BayesianOptimizationOracle(max_trials=num_samples, **common)
    return kt.oracles.RandomSearchOracle(max_trials=num_samples, **common)


def run_search(
    recipe: Recipe,
    spec: TrialSpec,
    space: dict[str, Dimension],
    dataset: Dataset,
    *,
    num_samples: int,
    listener: TrialListener | None = None,
    resume: bool = False,
) -> list[TrialResult]:
    """Run (or resume) one strategy's search with keras-tuner, in this process."""
    import keras_tuner as kt

    strategy = spec.strategy.name
    run_dir = Path(spec.run_dir)
    metric = recipe.search.metric
    worst = 0.0 if recipe.search.direction == "max" else 1e12
    names = list(space)

    class GraftuneTuner(kt.Tuner):
        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            values = trial.hyperparameters.values
            config = {name: values[name] for name in names}
            epochs = int(values.get("tuner/epochs", spec.max_epochs))
            trial_id = f"kt{trial.trial_id}"
            if listener is not None:
                listener.trial_started(strategy, trial_id)
            result = run_trial(
                config,
                dataclasses.replace(spec, max_epochs=epochs),
                dataset,
                trial_id=trial_id,
                report=lambda metrics: None,
            )
            if listener is not None:
                listener.trial_finished(result)
            value = getattr(result, metric, None)
            return {metric: worst if value is None else float(value)}

    tuner = GraftuneTuner(
        oracle=_oracle(recipe, space, num_samples),
        directory=str(run_dir / "keras_tuner"),
        project_name=strategy,
        overwrite=not resume,
    )
    interrupted = False
    try:
        tuner.search(verbose=0)
    except KeyboardInterrupt:  # Ctrl+C: keras-tuner keeps its state for a resume
        interrupted = True
    results, missing = [], 0
    for trial in tuner.oracle.trials.values():
        trial_id = f"kt{trial.trial_id}"
        result = read_result(trial_dir(run_dir, strategy, trial_id))
        if result is None:
            missing += 1
            if interrupted:  # the trial it stopped: it runs again on resume
                continue
            values = trial.hyperparameters.values
            result = TrialResult(
                strategy=strategy,
                trial_id=trial_id,
                status="failed",
                config={name: values.get(name) for name in names},
                error="keras-tuner recorded the trial but it left no result",
            )
        results.append(result)
    if interrupted:
        raise SearchInterrupted(sorted(results, key=lambda r: r.trial_id), missing)
    return sorted(results, key=lambda r: r.trial_id)
