"""graftune: a plugin-based AutoML orchestrator for transfer learning.

The public API is what ``__all__`` lists; everything else may change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.errors import (
    BaseModelError,
    DataError,
    DuplicateNameError,
    GraftuneError,
    PluginError,
    PluginLoadError,
    RecipeError,
    RunFailed,
)
from orchestrator.markers import hookimpl, hookspec
from orchestrator.space import ALL, Choice, Fixed, Float, Int, LogFloat
from orchestrator.strategy import FitData, SpaceContext, Strategy

if TYPE_CHECKING:
    from orchestrator.run import RunOutcome

__version__ = "0.1.0"

__all__ = [
    "ALL",
    "BaseModelError",
    "Choice",
    "DataError",
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
    "RunFailed",
    "SpaceContext",
    "Strategy",
    "__version__",
    "hookimpl",
    "hookspec",
    "run_recipe",
]


def run_recipe(recipe: Any, **kwargs: Any) -> RunOutcome:
    """Run a recipe end to end; see :func:`orchestrator.run.run_recipe`."""
    from orchestrator.run import run_recipe as _run_recipe

    return _run_recipe(recipe, **kwargs)
