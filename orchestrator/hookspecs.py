"""Every hook graftune calls, each documented.

Hooks are called with keyword arguments only. An implementation may accept
fewer arguments than its specification names, so specifications can grow
without breaking plugins.

Registration hooks run once when the plugin manager is built; event hooks run
in the driver process while a run goes on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.markers import hookspec

if TYPE_CHECKING:
    import pandas as pd

    from orchestrator.recipe import Recipe
    from orchestrator.registry import Registry
    from orchestrator.trial import TrialResult

# -- registration -------------------------------------------------------------


@hookspec
def graftune_keras_objects() -> Iterable[Any] | None:
    """Return the custom Keras objects (layers, losses, activations ...) that
    your strategies' models or your bases use.

    Import Keras and your layers inside this function, never at your module's
    import: graftune calls it only where Keras is needed. It registers each
    object with Keras (``keras.saving.register_keras_serializable``; under the
    name it has if it is registered already, else under the top-level package
    of its module) before the run prepares its base, in each trial worker
    before it builds, and before ``predict``, ``export`` or a resume loads a
    saved model with ``safe_mode=True``. Without it, a model of your custom
    layer saved in a trial cannot be loaded again.

    Returns:
        The objects: classes or functions; ``None`` for none.

    Raises:
        Should not raise: an exception, or a returned value that is not a class
        or function, stops the run (or ``predict``, ``export``) with a
        :class:`~orchestrator.errors.PluginError` naming your plugin (exit 3).
    """


@hookspec
def graftune_register_strategies(registry: Registry) -> None:
    """Add :class:`~orchestrator.Strategy` subclasses to ``registry``.

    Called once per plugin manager, when it is built. Call
    ``registry.add(MyStrategy)`` for each strategy; the strategy's ``name`` must
    be snake_case and is the name recipes use under ``strategies:``.

    Args:
        registry: The strategy registry.

    Returns:
        Nothing; the return value is ignored.

    Raises:
        Two plugins adding one name stop start-up with a
        :class:`~orchestrator.errors.DuplicateNameError` naming both. Any other
        exception stops start-up with a :class:`~orchestrator.errors.PluginError`
        naming this plugin.
    """


@hookspec
def graftune_register_data_sources(registry: Registry) -> None:
    """Add :class:`~orchestrator.data.DataSource` subclasses to ``registry``.

    Called once per plugin manager, when it is built. A data source handles one
    ``source:`` scheme of a recipe (``sklearn:``, ``csv:``, ``parquet:``,
    ``npz:``, ``images:`` and ``glyphs:`` are built in).

    Args:
        registry: The data-source registry, keyed by ``scheme``.

    Returns:
        Nothing; the return value is ignored.

    Raises:
        As :func:`graftune_register_strategies`.
    """


@hookspec
def graftune_register_bases(registry: Registry) -> None:
    """Add :class:`~orchestrator.bases.BaseProvider` subclasses to ``registry``.

    Called once per plugin manager, when it is built. A base provider turns a
    recipe's ``base:`` section into a pretrained Keras model (``application``,
    ``path`` and ``pretrain`` are built in; a third-party provider is chosen
    with ``base: {provider: NAME, options: {...}}``).

    Args:
        registry: The base-provider registry, keyed by ``name``.

    Returns:
        Nothing; the return value is ignored.

    Raises:
        As :func:`graftune_register_strategies`.
    """


# -- events -------------------------------------------------------------------


@hookspec
def graftune_run_started(recipe: Recipe, run_dir: Path) -> None:
    """Observe a run that is about to start its first trial, in the driver process.

    Called once per run, after the recipe, the data, the base and every
    strategy's smallest configuration have been checked and the run directory
    has been created (it holds ``recipe.yaml``); nothing is called for a recipe
    that fails those checks.

    Args:
        recipe: The resolved recipe (absolute paths; ``recipe.name``,
            ``recipe.strategies``, ``recipe.search`` ...).
        run_dir: The run directory.

    Returns:
        Nothing; the return value is ignored.

    Raises:
        May raise: the error is reported as a warning naming the plugin and the
        run goes on.
    """


@hookspec
def graftune_trial_finished(result: TrialResult, run_dir: Path) -> None:
    """Observe one trial that has ended, in the driver process.

    Called once per trial, whatever its status (``ok``, ``pruned``, ``error``,
    ``diverged``, ``failed``), as soon as the driver learns of it.

    Args:
        result: The trial's strategy, configuration, status, metrics and cost
            (the plugin's own copy: changing it changes nothing elsewhere).
        run_dir: The run directory.

    Returns:
        Nothing; the return value is ignored.

    Raises:
        May raise: the error is reported as a warning naming the plugin and the
        run goes on.
    """


@hookspec
def graftune_run_finished(leaderboard: pd.DataFrame, run_dir: Path) -> None:
    """Observe a finished run, after its leaderboard files are written.

    Not called for a run stopped with Ctrl+C (``RunInterrupted``): its resume
    calls it once, when it finishes. A finished run resumed again runs nothing
    and calls no hook.

    Args:
        leaderboard: The ranked leaderboard, one row per trial (the plugin's own
            copy).
        run_dir: The run directory.

    Returns:
        Nothing; the return value is ignored.

    Raises:
        May raise: the error is reported as a warning naming the plugin and the
        run goes on.
    """
