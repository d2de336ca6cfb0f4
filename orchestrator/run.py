"""A whole run: resolve the recipe, prepare data and base once, search each strategy.

Nothing is written to the run directory until the recipe, the data and the
base have all been checked and prepared, so a bad recipe leaves no trace.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from orchestrator.errors import RecipeError, RunFailed
from orchestrator.recipe import Recipe, check_recipe, load_recipe

if TYPE_CHECKING:
    import pandas as pd

    from orchestrator.plugin_manager import PluginHost
    from orchestrator.trial import TrialResult

log = logging.getLogger(__name__)

BEST_DIR = "best"


@dataclass(frozen=True)
class RunOutcome:
    """What :func:`run_recipe` returns."""

    run_dir: Path
    leaderboard: pd.DataFrame
    best: dict[str, Any] | None


def new_run_dir(recipe: Recipe) -> Path:
    """``OUTPUT/NAME-YYYYmmdd-HHMMSS`` (with a suffix if that exists already)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = recipe.output / f"{recipe.name}-{stamp}"
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = recipe.output / f"{recipe.name}-{stamp}-{suffix}"
    return candidate


def run_recipe(
    recipe: Recipe | str | Path,
    *,
    run_dir: str | Path | None = None,
    plugins: Iterable[ModuleType | object | str] = (),
    host: PluginHost | None = None,
    echo: Callable[[str], None] = log.info,
) -> RunOutcome:
    """Run a recipe end to end and write its run directory.

    Args:
        recipe: A recipe object or the path of a recipe file.
        run_dir: Where to write; default a new folder under the recipe's ``output``.
        plugins: Extra plugin modules or objects to register (not installed ones).
        host: A ready plugin host (``plugins`` is ignored then).
        echo: Where progress lines go.

    Returns:
        The run directory, the leaderboard and the best trial's summary.

    Raises:
        RecipeError: The recipe is wrong (nothing is written).
        DataError, BaseModelError: The data or base cannot be prepared (nothing is written).
        RunFailed: Every trial failed (the leaderboard is still written).
    """
    from orchestrator.bases import prepare_base
    from orchestrator.data import prepare_dataset
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.space import merge_spaces, resolve_space
    from orchestrator.strategy import SpaceContext
    from orchestrator.trial import TrialSpec

    if host is None:
        host = get_plugin_manager(extra_plugins=plugins)
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    check_recipe(recipe, host)
    recipe = recipe.with_absolute_sources(host.data_sources)

    dataset = prepare_dataset(
        recipe.data, host.data_sources, seed=recipe.seed, base_dir=recipe.base_dir
    )
    echo(
        f"data: {recipe.data.source}: {len(dataset.y_train)} train / {len(dataset.y_val)} val / "
        f"{len(dataset.y_test)} test, {dataset.task.n_classes} classes, inputs {dataset.task.input_shape}"
    )
    strategies = {name: host.strategies.get(name)() for name in recipe.strategies}
    base_info = None
    if recipe.base is not None and any(s.requires_base for s in strategies.values()):
        echo(f"base: preparing {recipe.base.kind} ...")
        base_info = prepare_base(
            recipe.base,
            host.bases,
            dataset.task,
            seed=recipe.seed,
            base_dir=recipe.base_dir,
            data_sources=host.data_sources,
        )
        echo(
            f"base: {base_info.description}, {base_info.n_cut_points} cut points, output {base_info.output_shape}"
        )

    spaces = {}
    for name, strategy in strategies.items():
        context = SpaceContext(
            task=dataset.task, base=base_info if strategy.requires_base else None
        )
        merged = merge_spaces(
            strategy.search_space(context), recipe.shared_space(), recipe.strategy_space(name)
        )
        try:
            spaces[name] = resolve_space(merged, base_info.n_cut_points if base_info else None)
        except ValueError as exc:
            raise recipe.error(("strategies", name, "space"), str(exc)) from None

    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(recipe)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RecipeError(f"run directory {run_dir} exists and is not empty", file=recipe.file)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir = run_dir.resolve()
    (run_dir / "recipe.yaml").write_text(recipe.to_yaml(), encoding="utf-8")
    echo(f"run: {run_dir}")

    from orchestrator.leaderboard import best_row, build_leaderboard, write_leaderboard
    from orchestrator.tuning.ray_tune import ensure_ray, run_search

    started_ray = ensure_ray(recipe.resources)
    results: list[TrialResult] = []
    try:
        for name, strategy in strategies.items():
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
            )
            num_samples = recipe.strategies[name].num_samples or recipe.search.num_samples
            echo(f"{name}: searching {num_samples} trials over {_describe(spaces[name])}")

            def done(result: TrialResult) -> None:
                echo(_trial_line(result, recipe.search.metric))
                host.notify("graftune_trial_finished", result=result, run_dir=run_dir)

            results += run_search(
                recipe, spec, spaces[name], dataset, num_samples=num_samples, on_trial_done=done
            )
    finally:
        if started_ray:
            import ray

            ray.shutdown()

    frame = build_leaderboard(results, metric=recipe.search.metric, mode=recipe.search.direction)
    write_leaderboard(frame, run_dir)
    best = best_row(frame)
    summary = _save_best(run_dir, best, results, dataset.task, recipe) if best is not None else None
    host.notify("graftune_run_finished", leaderboard=frame, run_dir=run_dir)
    if summary is None:
        raise RunFailed(f"every trial failed; see {run_dir / 'leaderboard.md'}")
    return RunOutcome(run_dir=run_dir, leaderboard=frame, best=summary)


def _describe(space: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v.describe()}" for k, v in space.items()) or "nothing"


def _trial_line(result: TrialResult, metric: str) -> str:
    value = getattr(result, metric, None)
    score = f"{metric}={value:.4f}" if isinstance(value, float) else ""
    extra = f" ({result.error})" if result.error else ""
    return f"  {result.strategy} {result.trial_id}: {result.status} {score}{extra}".rstrip()


def _save_best(
    run_dir: Path, best: Any, results: list[TrialResult], task: Any, recipe: Recipe
) -> dict[str, Any]:
    from orchestrator.leaderboard import atomic_write_text

    chosen = next(
        r for r in results if r.trial_id == best["trial_id"] and r.strategy == best["strategy"]
    )
    folder = run_dir / BEST_DIR
    folder.mkdir(exist_ok=True)
    assert chosen.model_path is not None
    shutil.copyfile(chosen.model_path, folder / "model.keras")
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
        "data_source": recipe.data.source,
    }
    atomic_write_text(folder / "config.json", json.dumps(summary, indent=2, default=str))
    return summary
