"""Checks of a recipe's plugins that run in the driver before any trial.

A plugin that breaks its contract should stop a run at once, with a message
naming the plugin and its distribution, not fail the same way in every trial
on a worker. Three checks live here:

- :func:`strategy_space` calls a strategy's ``search_space`` and checks that it
  returns only :mod:`orchestrator.space` types with sensible bounds (used by
  ``graftune validate`` and by a run);
- :func:`check_strategies` builds each strategy's smallest configuration once
  and checks that the result is a compiled ``keras.Model`` with output
  ``(None, n_classes)`` that loads again once saved (:func:`reload_problem`);
- :func:`plugin_control_errors` checks a recipe's ``plugins: {disable: [...]}``
  against the plugins there are.

The functions that judge a space or a model (:func:`space_problems`,
:func:`model_problems`) return lists of problems, so that the conformance check
of :mod:`orchestrator.testing` reports them the same way.
"""

from __future__ import annotations

import gc
import logging
import math
from difflib import get_close_matches
from importlib import metadata
from typing import TYPE_CHECKING, Any

from orchestrator.accelerator import share_gpu_memory
from orchestrator.errors import (
    PLUGIN_FAULTS,
    GraftuneError,
    PluginError,
    did_you_mean,
    one_line,
    raised,
)
from orchestrator.leaderboard import COLUMN_TYPES
from orchestrator.space import (
    ALL,
    DIMENSION_TYPES,
    Choice,
    Fixed,
    Float,
    Int,
    LogFloat,
    choice_identity,
    extremes,
    int_problem,
    outside_cut_points,
    uses_all,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from orchestrator.bases import BaseInfo
    from orchestrator.data import TaskSpec
    from orchestrator.plugin_manager import PluginHost
    from orchestrator.recipe import Recipe, RecipeError
    from orchestrator.space import Dimension
    from orchestrator.strategy import SpaceContext, Strategy

log = logging.getLogger(__name__)

_TYPE_NAMES = ", ".join(t.__name__ for t in DIMENSION_TYPES)


def space_problems(space: Any, takes_base: bool = True) -> list[str]:
    """What is wrong with a search space a strategy returned; empty when nothing is.

    A space is a ``dict`` from parameter name (text) to an instance of one of
    :data:`orchestrator.space.DIMENSION_TYPES`, with bounds in order
    (``low <= high``), positive log-scaled bounds, non-empty choices that list
    each value once, and ``"all"`` (a base's cut points) only where the
    strategy ``takes_base``.
    """
    if not isinstance(space, dict):
        return [
            f"search_space() returned {type(space).__name__}, expected a dict of "
            f"parameter name -> {_TYPE_NAMES}"
        ]
    problems = []
    for key, dim in space.items():
        if not isinstance(key, str) or not key:
            problems.append(f"parameter name {key!r} is not a non-empty string")
            continue
        if key in COLUMN_TYPES:
            problems.append(
                f"{key!r} is the name of one of graftune's own leaderboard columns "
                f"({', '.join(COLUMN_TYPES)}); give the parameter another name"
            )
            continue
        if not isinstance(dim, DIMENSION_TYPES):
            problems.append(
                f"{key!r} is {type(dim).__module__}.{type(dim).__qualname__} ({dim!r}), "
                f"not a graftune space type; use one of {_TYPE_NAMES} from orchestrator.space"
            )
            continue
        problem = _dimension_problem(dim)
        if problem is None and not takes_base and uses_all(dim):
            problem = (
                "'all' counts the cut points of a base, and the strategy takes none "
                f"(requires_base is False); got {dim.describe()}"
            )
        if problem:
            problems.append(f"{key!r}: {problem}")
    return problems


def _dimension_problem(dim: Dimension) -> str | None:
    if not isinstance(dim, Choice) or isinstance(dim.values, tuple):  # (else: said below)
        problem = next(filter(None, map(int_problem, extremes(dim))), None)
        if problem:
            return problem
    if isinstance(dim, Int):
        if isinstance(dim.low, bool) or not isinstance(dim.low, int):
            return f"Int low bound must be an integer, got {dim.low!r}"
        if dim.high == ALL:
            return None if dim.low >= 0 else f"Int low bound must be >= 0 with 'all', got {dim.low}"
        if isinstance(dim.high, bool) or not isinstance(dim.high, int):
            return f"Int high bound must be an integer or 'all', got {dim.high!r}"
        return None if dim.low <= dim.high else f"Int bounds out of order: [{dim.low}, {dim.high}]"
    if isinstance(dim, (Float, LogFloat)):
        kind = type(dim).__name__
        for bound in (dim.low, dim.high):
            if isinstance(bound, bool) or not isinstance(bound, (int, float)):
                return f"{kind} bounds must be numbers, got {bound!r}"
            if not math.isfinite(bound):
                return f"{kind} bounds must be finite, got {bound!r}"
        if dim.low > dim.high:
            return f"{kind} bounds out of order: [{dim.low}, {dim.high}]"
        if isinstance(dim, LogFloat) and dim.low <= 0:
            return f"LogFloat bounds must be > 0, got [{dim.low}, {dim.high}]"
        return None
    if isinstance(dim, Choice):
        if not isinstance(dim.values, tuple) or not dim.values:
            return f"Choice needs a non-empty tuple (or list) of values, got {dim.values!r}"
        seen: dict[Any, Any] = {}
        for value in dim.values:
            problem = _value_problem(value)
            if problem:
                return f"Choice values {problem}"
            if choice_identity(value) in seen:  # as a recipe's choice: a grid would run it twice
                first = seen[choice_identity(value)]
                same = "" if repr(first) == repr(value) else f" ({first!r} and {value!r} are one)"
                return f"Choice lists the value {first!r} twice{same}; list each value once"
            seen[choice_identity(value)] = value
        return None
    assert isinstance(dim, Fixed)
    if isinstance(dim.value, float) and not math.isfinite(dim.value):
        return f"Fixed value must be finite, got {dim.value!r}"
    return None


def _value_problem(value: Any) -> str | None:
    """Why a choice's value cannot be searched (both backends take numbers, text, booleans)."""
    if not isinstance(value, (bool, int, float, str)):
        return f"must be numbers, text or true/false, got {value!r} ({type(value).__name__})"
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be finite, got {value!r}"
    return None


def strategy_space(strategy: Strategy, context: SpaceContext, owner: str) -> dict[str, Dimension]:
    """Call ``strategy.search_space(context)`` and check what it returns.

    Args:
        strategy: The strategy instance.
        context: The task and base as far as they are known.
        owner: The registering plugin and its distribution, ``"entry (dist version)"``.

    Returns:
        The strategy's own space.

    Raises:
        PluginError: ``search_space`` raised, or returned something that is not a
            space of graftune types; the message names the strategy and ``owner``.
    """
    who = f"strategy {strategy.name!r} from plugin {owner}"
    space = _ask(strategy.search_space, context, who)
    problems = space_problems(space, takes_base=strategy.requires_base)
    if problems:
        raise PluginError(f"{who} has a bad search space: " + "; ".join(problems))
    return space


def refuse_outside_cuts(recipe: Recipe, name: str, own: dict[str, Dimension], cuts: int) -> None:
    """Refuse, at its key, a count of cut points the recipe gives strategy ``name``
    (a dimension of ``own``, its space, that goes up to ``all``, as
    ``frozen_layers``) that a base of ``cuts`` cut points has not.

    Raises:
        RecipeError: At ``strategies.NAME.space.KEY``, with the values outside.
    """
    given = {**recipe.shared_space(), **recipe.strategy_space(name)}
    for key, declared in own.items():
        if key not in given or not uses_all(declared):
            continue
        outside = outside_cut_points(given[key], cuts)
        if outside:
            raise recipe.error(
                ("strategies", name, "space", key),
                f"{', '.join(map(str, outside))}: the base has cut points 0 to {cuts} "
                f"({key} counts them; 'all' is {cuts})",
            )


#: The most trials a grid search may list for one strategy (its points times Ray's
#: repeats): Ray Tune and keras-tuner list a dimension's every value before the first
#: trial, and no machine runs this many (found by QA: ``{int: [1, 10^12]}`` under
#: ``algorithm: grid`` passed validate, and the run, its directory made, ended in a
#: MemoryError).
MAX_GRID_TRIALS = 100_000


def refuse_large_grid(recipe: Recipe, name: str, space: dict[str, Dimension]) -> None:
    """Refuse a grid search of strategy ``name`` over ``space`` (its merged space)
    that lists more than :data:`MAX_GRID_TRIALS` trials, at the key of its largest
    dimension where the recipe gives it (else at ``search.algorithm``).

    Raises:
        RecipeError: Saying how many trials the grid lists and what to do instead.
    """
    from orchestrator.space import grid_sizes

    search = recipe.search
    if search.algorithm != "grid":
        return
    sizes = grid_sizes(space)
    repeats = 1 if search.backend == "keras_tuner" else recipe.strategy_samples(name)
    trials = math.prod(sizes.values()) * repeats
    if trials <= MAX_GRID_TRIALS:
        return
    largest = max(sizes, key=sizes.__getitem__)
    if largest in recipe.strategy_space(name):
        key: tuple[str, ...] = ("strategies", name, "space", largest)
    elif largest in recipe.shared_space():
        key = ("search", "space", largest)
    else:
        key = ("search", "algorithm")
    each = f", each {repeats} times (num_samples)" if repeats > 1 else ""
    raise recipe.error(
        key,
        f"a grid over {name}'s space lists {trials:,} trials ({largest}: {sizes[largest]:,} "
        f"values{each}), more than graftune runs in one search ({MAX_GRID_TRIALS:,}): "
        "list fewer values, or search the ranges with algorithm: random or bayesian",
    )


def refuse_cuts_past(recipe: Recipe, host: PluginHost, count: Callable[[], int]) -> None:
    """Refuse a count of cut points the recipe gives a strategy that takes the base
    (``frozen_layers``) past the base's ``count()``, before the base is prepared.

    ``count`` is called only where the recipe gives one: it may build the base's
    architecture. The strategies' spaces are read as ``validate`` reads them.

    Raises:
        RecipeError: As :func:`refuse_outside_cuts`; what ``count`` raises.
    """
    from orchestrator.strategy import SpaceContext

    counting = {}
    for name in recipe.strategies:
        strategy = host.strategy(name)
        if not strategy.requires_base:
            continue
        own = strategy_space(strategy, SpaceContext(), host.strategies.owner(name))
        given = {**recipe.shared_space(), **recipe.strategy_space(name)}
        if any(key in given and uses_all(declared) for key, declared in own.items()):
            counting[name] = own
    if not counting:  # nothing to check: no base's architecture is built
        return
    cuts = count()
    for name, own in counting.items():
        refuse_outside_cuts(recipe, name, own, cuts)


def _ask(method: Any, context: SpaceContext, who: str) -> Any:
    """Call a strategy's ``method(context)``; what it raises becomes a PluginError naming it."""
    try:
        return method(context)
    except GraftuneError:
        raise
    except PLUGIN_FAULTS as exc:
        hint = ""
        empty = context.task is None or context.base is None
        if empty and isinstance(exc, AttributeError) and "'NoneType'" in str(exc):
            # Found by QA: context.task.n_classes in a space, and Python's words alone.
            hint = (
                " (a recipe is checked with an empty SpaceContext(): context.task and "
                "context.base may be None; give bounds that do not need them there)"
            )
        raise PluginError(f"{who}: {method.__name__}() raised {raised(exc)}{hint}") from exc


def space_notes(
    strategy: Strategy, space: dict[str, Dimension], epochs: int, owner: str
) -> list[str]:
    """What :meth:`~orchestrator.strategy.Strategy.config_note` says of the values ``space`` can give.

    Each value of :func:`~orchestrator.space.extremes` of each dimension, the
    others at their smallest (:func:`~orchestrator.space.smallest_config`), at
    ``epochs`` epochs; each note once, naming the value of a dimension that
    brings it about (one whose other values do not), or none where no single
    dimension's values decide it (all its configurations tried give it).

    Raises:
        PluginError: ``config_note`` raised, naming the strategy and ``owner``.
    """
    from orchestrator.space import smallest_config

    def note(config: dict[str, Any]) -> str | None:
        try:
            said = strategy.config_note(config, epochs)
        except PLUGIN_FAULTS as exc:
            raise PluginError(
                f"strategy {strategy.name!r} from plugin {owner}: config_note() raised "
                f"{raised(exc)}"
            ) from exc
        if said is not None and not isinstance(said, str):
            raise PluginError(
                f"strategy {strategy.name!r} from plugin {owner}: config_note() returned "
                f"{type(said).__name__} ({said!r}), expected a line of text or None"
            )
        return said

    smallest = smallest_config(space)
    everywhere = note(smallest)
    notes: dict[str, str] = {}
    for key, dim in space.items():
        values = extremes(dim)
        said = [note({**smallest, key: value}) for value in values]
        for value, line in zip(values, said, strict=True):
            # Given by one value of this dimension and not by another: that value's doing.
            if line and line not in notes and any(other != line for other in said):
                shown = str(value).lower() if isinstance(value, bool) else value
                notes[line] = f"note: {strategy.name}: {line} (its space gives {key}: {shown})"
    if everywhere and everywhere not in notes:
        notes[everywhere] = f"note: {strategy.name}: {everywhere}"
    return list(notes.values())


#: A Ray search's time budget under this many seconds is noted by validate: its
#: workers' start-up counts, and a fresh one imports TensorFlow (about 4 s).
SHORT_BUDGET_S = 10


def recipe_notes(recipe: Recipe, host: PluginHost) -> list[str]:
    """:func:`space_notes` of each strategy of a valid recipe, and a setting that
    changes nothing, for ``graftune validate``."""
    from orchestrator.space import merge_spaces
    from orchestrator.strategy import SpaceContext

    notes = []
    if recipe.resources.mixed_precision and not recipe.resources.gpus_per_trial:
        # Found by QA: accepted, and float32 unsaid.
        notes.append(
            "note: resources.mixed_precision changes nothing with gpus_per_trial: 0; the "
            "trials train in float32 on CPUs (mixed_float16 is for GPUs)"
        )
    budget = recipe.search.time_budget_s
    if recipe.search.backend == "ray" and budget is not None and budget < SHORT_BUDGET_S:
        # Found by QA: 0.001 s passed validate; the run made its directory and failed.
        notes.append(
            f"note: search.time_budget_s ({budget:g} s) counts from each strategy's search "
            "start, its workers' start-up included (a few seconds: each imports "
            f"TensorFlow): under {SHORT_BUDGET_S} s, the budget may end before any trial does"
        )
    for name in recipe.strategies:
        strategy = host.strategy(name)
        owner = host.strategies.owner(name)
        own = strategy_space(strategy, SpaceContext(), owner)
        space = merge_spaces(own, recipe.shared_space(), recipe.strategy_space(name))
        notes += space_notes(strategy, space, recipe.search.max_epochs, owner)
    return notes


def strategy_defaults(
    strategy: Strategy,
    context: SpaceContext,
    owner: str,
    own: dict[str, Dimension],
    said: set[str] | None = None,
) -> dict[str, Any]:
    """Call ``strategy.default_config(context)`` and check it against the strategy's space.

    Defaults that do not fit the strategy's own space are left out, so those
    dimensions start at their middle; they are logged as a warning (and
    ``check_strategy`` reports them) unless they were inherited from a parent
    whose space the strategy replaced (:func:`defaults_are_its_own`).

    Args:
        own: The strategy's own space (:func:`strategy_space`), before the
            recipe's overrides, with ``"all"`` resolved where a base is known.
        said: Warnings already given (the run's recipe check and its search
            both ask); one given is not repeated, and is added to it.

    Returns:
        The strategy's defaults that fit its space.

    Raises:
        PluginError: ``default_config`` raised, or returned something that is not a dict.
    """
    who = f"strategy {strategy.name!r} from plugin {owner}"
    defaults = _ask(strategy.default_config, context, who)
    if not isinstance(defaults, dict):
        raise PluginError(f"{who}: default_config() returned {type(defaults).__name__}, not a dict")
    problems = default_problems(defaults, own)
    if problems and not defaults_are_its_own(strategy):
        # Inherited from a parent whose space this strategy replaced: taken where they fit.
        log.debug("%s: inherited defaults left out: %s", who, "; ".join(problems.values()))
    elif problems:
        warning = (
            f"{who}: default_config() does not fit its search space "
            f"({'; '.join(problems.values())}); those dimensions start at their middle"
        )
        if said is None or warning not in said:
            log.warning("%s", warning)
        if said is not None:
            said.add(warning)
    return {key: value for key, value in defaults.items() if key not in problems}


def defaults_are_its_own(strategy: Strategy) -> bool:
    """Whether ``default_config`` was written with the strategy's own space in view.

    True unless the class inherits ``default_config`` from a parent and
    declares a ``search_space`` of its own (narrowing the parent's, say): the
    parent's defaults then need not fit, and are used only where they do.
    """
    cls = type(strategy)

    def owner(name: str) -> type:
        return next(k for k in cls.__mro__ if name in vars(k))

    return issubclass(owner("default_config"), owner("search_space"))


def default_problems(defaults: dict[str, Any], own: dict[str, Dimension]) -> dict[Any, str]:
    """What in a strategy's defaults its own space does not allow, by key; empty when nothing.

    A fixed dimension is not searched, so whatever its default, it is not a problem.
    """
    from orchestrator.space import contains, uses_all

    problems = {}
    for key, value in defaults.items():
        if key not in own:
            problems[key] = f"{key!r} is not in the search space{did_you_mean(str(key), list(own))}"
            continue
        dim = own[key]
        if isinstance(dim, Fixed) or uses_all(dim):
            continue
        if isinstance(dim, Int) and isinstance(value, str) and value == ALL:
            continue
        if not contains(dim, value):
            problems[key] = f"{key}={value!r} is not a value of {dim.describe()}"
    return problems


def model_problems(
    model: Any, n_classes: int, input_shape: tuple[int, ...] | None = None
) -> list[str]:
    """What is wrong with a model a strategy built; empty when nothing is.

    The contract: a ``keras.Model``, compiled (an optimizer and a loss), taking
    inputs of ``input_shape`` (the task's; not checked where ``None``), with a
    single output of shape ``(None, n_classes)`` that holds class probabilities
    (tried on two made-up examples).
    """
    import keras

    if not isinstance(model, keras.Model):
        return [f"build() returned {type(model).__name__}, not a keras.Model"]
    problems = []
    takes = _input_problem(model, input_shape) if input_shape is not None else None
    if takes is not None:  # found by QA: every trial failed in Keras' words
        problems.append(takes)
    if getattr(model, "optimizer", None) is None:
        problems.append("build() returned a model that is not compiled (call model.compile)")
    elif getattr(model, "loss", None) is None:
        problems.append("build() returned a model compiled without a loss")
    try:
        shape = model.output_shape
    except (AttributeError, ValueError) as exc:
        problems.append(f"build() returned a model whose output shape is unknown: {exc}")
        return problems
    if not isinstance(shape, tuple) or len(shape) != 2 or shape[-1] != n_classes:
        problems.append(
            f"build() returned a model with output shape {shape}; expected (None, {n_classes})"
        )
        return problems
    problem = _output_problem(model)
    if problem is not None:
        problems.append(f"build() returned a model with {problem}")
    return problems


def check_implements_build(strategy: Strategy, name: str, owner: str) -> None:
    """Refuse a strategy whose class does not override ``Strategy.build`` (found by
    QA: `validate` passed one whose method was misspelt), naming a close name.

    Raises:
        PluginError: It does not.
    """
    from orchestrator.strategy import Strategy

    cls = type(strategy)
    if cls.build is not Strategy.build:
        _check_signatures(strategy, name, owner)
        return
    own = [
        attr
        for klass in cls.__mro__
        if klass not in Strategy.__mro__
        for attr, value in vars(klass).items()
        if callable(value) and not attr.startswith("__")
    ]
    close = get_close_matches("build", own, n=1, cutoff=0.6)
    hint = f" (is {close[0]!r} meant to be build?)" if close else ""
    raise PluginError(f"strategy {name!r} from plugin {owner} does not implement build(){hint}")


#: How graftune calls a strategy's methods: (arguments, keywords), and the call as
#: the documentation writes it.
_CALLS = {
    "search_space": ((None,), {}, "search_space(context)"),
    "build": ((None, None, None), {}, "build(config, task, base)"),
    "fit": ((None, None, None), {"epochs": 1, "callbacks": []},
            "fit(model, config, data, *, epochs, callbacks)"),
}  # fmt: skip


def _check_signatures(strategy: Strategy, name: str, owner: str) -> None:
    """Refuse a strategy method graftune cannot call as it does (found by QA: a
    fit() with an extra parameter failed every trial with Python's TypeError,
    which named neither the plugin nor the method's file).

    Raises:
        PluginError: Naming the method, where it is defined and the call it must take.
    """
    import inspect

    for method, (args, kwargs, call) in _CALLS.items():
        bound = getattr(strategy, method, None)
        if bound is None:
            continue
        try:
            inspect.signature(bound).bind(*args, **kwargs)
        except TypeError as exc:
            function = getattr(bound, "__func__", bound)
            code = getattr(function, "__code__", None)
            where = f" ({code.co_filename}:{code.co_firstlineno})" if code is not None else ""
            raise PluginError(
                f"strategy {name!r} from plugin {owner}: its {method}(){where} cannot be "
                f"called as graftune calls it, {call}: {exc}"
            ) from None
        except ValueError:  # no signature to read (a builtin): its trials will say
            continue


def loss_problem(model: Any, n_classes: int) -> str | None:
    """Why a model's loss cannot be computed on integer class labels, as the
    default ``fit`` trains it (found by QA: categorical_crossentropy failed every
    trial on "target and output must have the same rank"); ``None`` where it can,
    or where no input can be made up for it."""
    import numpy as np

    x = _made_up_inputs(model)
    if x is None:
        return None
    y = np.array([0, min(1, n_classes - 1)], np.int64)
    try:
        model.compute_loss(x=x, y=y, y_pred=model(x, training=False))
    except Exception as exc:
        return (
            f"its loss cannot be computed on integer class labels (the labels graftune "
            f"trains with, shape (batch,)): {raised(exc)}; compile it with "
            "loss='sparse_categorical_crossentropy'"
        )
    return None


def _input_problem(model: Any, input_shape: tuple[int, ...]) -> str | None:
    """Why a single-input model does not take the task's ``input_shape`` (its
    unknown dimensions take anything); ``None`` where it does, or has several inputs."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        return None
    shape = tuple(inputs[0].shape)[1:]
    wanted = tuple(int(d) for d in input_shape)
    if len(shape) == len(wanted) and all(
        d is None or d == w for d, w in zip(shape, wanted, strict=True)
    ):
        return None
    return (
        f"build() returned a model whose input has shape {shape}; the task's inputs have "
        f"shape {wanted} (build the model on keras.Input(task.input_shape))"
    )


def metrics_problem(model: Any) -> str | None:
    """Why a model compiled with no metrics reports no accuracy (``None``: it has some).

    The default ``Strategy.fit`` reports what Keras logs: a model compiled
    without ``metrics=["accuracy"]`` logs no ``val_accuracy``, and every trial of
    a search by it failed (found by QA)."""
    try:
        config = model.get_compile_config() or {}
    except Exception:  # not compiled: model_problems says so
        return None
    if config.get("metrics") or config.get("weighted_metrics"):
        return None
    return (
        "build() returned a model compiled without metrics, whose epochs log no "
        "val_accuracy; compile it with metrics=['accuracy']"
    )


def _made_up_inputs(model: Any) -> Any:
    """Two random examples a single-input model takes (``None`` where its input has
    unknown dimensions, is not floats, or there are several)."""
    import keras
    import numpy as np

    if len(getattr(model, "inputs", None) or []) != 1:
        return None
    shape = tuple(model.inputs[0].shape)[1:]
    dtype = keras.backend.standardize_dtype(model.inputs[0].dtype)
    if any(d is None for d in shape) or not dtype.startswith("float"):
        return None
    return np.random.default_rng(0).normal(size=(2, *shape)).astype(dtype)


def _output_problem(model: Any) -> str | None:
    """:func:`~orchestrator.models.not_probabilities` of the model's outputs for
    two random inputs (``None`` for a model whose input cannot be made up)."""
    import keras

    from orchestrator.models import not_probabilities

    x = _made_up_inputs(model)
    if x is None:
        return None
    try:
        outputs = keras.ops.convert_to_numpy(model(x, training=False))
    except Exception:  # its trials say what fails
        log.debug("could not call the model on made-up inputs", exc_info=True)
        return None
    return not_probabilities(outputs)


def check_strategies(
    strategies: dict[str, Strategy],
    spaces: dict[str, dict[str, Dimension]],
    task: TaskSpec,
    base: BaseInfo | None,
    host: PluginHost,
    *,
    pickled: bool = True,
    metric: str = "val_accuracy",
) -> None:
    """Build each strategy's smallest configuration once, in the driver, and check it.

    A build that raises is only logged: it may depend on the configuration, and
    the trials record such failures. A model that breaks the contract (not a
    ``keras.Model``, not compiled, the wrong output shape) stops the run. So
    does, with ``pickled`` (Ray sends strategies to its workers pickled), a
    strategy that does not pickle: it ended the whole run at its search, with
    the strategies before it unranked.

    Args:
        strategies: The recipe's strategies, by name.
        spaces: Each strategy's merged and resolved space.
        task: The prepared task.
        base: The prepared base, for strategies that require one.
        host: The plugin host, to name each strategy's plugin and distribution.
        metric: The search's metric: ``val_accuracy`` needs a model compiled
            with metrics, where the strategy trains with the default ``fit``.

    Raises:
        PluginError: Naming the strategy, its plugin and distribution, and what is wrong.
    """
    import keras

    from orchestrator.bases import load_base
    from orchestrator.space import smallest_config
    from orchestrator.strategy import Strategy

    share_gpu_memory()
    for name, strategy in strategies.items():
        owner = host.strategies.owner(name)
        if pickled:
            check_pickles(strategy, name, owner)
        config = smallest_config(spaces[name])
        try:
            loaded = load_base(base) if strategy.requires_base and base is not None else None
            check_implements_build(strategy, name, owner)  # every trial would fail
            registered = dict(keras.saving.get_custom_objects())
            try:
                model = strategy.build(dict(config), task, loaded)
            except (Exception, SystemExit) as exc:  # as a trial takes them (run_trial)
                from orchestrator.trial import error_text

                log.warning(
                    "strategy %r from plugin %s raised in build() for its smallest "
                    "configuration %s (its trials will record the error): %s",
                    name,
                    owner,
                    config,
                    # As the trials' lines show it (found by QA: a terminal's escapes
                    # and bidi controls reached the terminal raw here).
                    one_line(error_text(exc)),
                )
                continue
            problems = model_problems(model, task.n_classes, task.input_shape)
            own_fit = type(strategy).fit is not Strategy.fit
            if not problems and not own_fit:
                # A fit of its own may log the accuracy itself, or train on other labels.
                if metric == "val_accuracy":
                    problems = [p for p in [metrics_problem(model)] if p]
                problems += [p for p in [loss_problem(model, task.n_classes)] if p]
            if problems:
                raise PluginError(
                    f"strategy {name!r} from plugin {owner} breaks the Strategy contract "
                    f"(smallest configuration {config}): " + "; ".join(problems)
                )
            problem = reload_problem(model, registered)
            if problem:
                raise PluginError(
                    f"strategy {name!r} from plugin {owner}: its model (smallest configuration "
                    f"{config}) would be saved but could not be loaded again: {problem}"
                )
        finally:
            # Nothing the check built may stay in the driver's memory: one collection
            # (Keras' own would be a second, 0.3 s on a small CPU with TensorFlow loaded).
            keras.backend.clear_session(free_memory=False)
            gc.collect()


#: Models with more parameters (a large base inside) are checked by their
#: configuration alone: saving and loading their weights would take seconds.
RELOAD_MAX_PARAMS = 2_000_000


def reload_problem(model: Any, registered: dict[str, Any] | None = None) -> str | None:
    """Why ``model``, saved as a trial saves it, would not load with ``safe_mode=True``
    as predict and export load it; ``None`` when it loads.

    A model of up to :data:`RELOAD_MAX_PARAMS` parameters is saved to a
    temporary file (:func:`orchestrator.trial.save_model`) and loaded again; a
    larger one has its configuration serialized and rebuilt, which finds the
    same custom objects without writing its weights.

    Args:
        model: A built ``keras.Model``.
        registered: Keras' custom objects before the model was built: objects
            the build itself registered are set aside while it loads, since a
            predict never runs the build (``None``: use all).
    """
    import json
    import tempfile
    from pathlib import Path

    import keras

    from orchestrator.errors import DiskFull, is_disk_full, no_room
    from orchestrator.trial import save_model

    table = keras.saving.get_custom_objects()
    added = {}
    if registered is not None:
        added = {k: v for k, v in table.items() if k not in registered}
    for key in added:
        del table[key]
    try:
        if model.count_params() > RELOAD_MAX_PARAMS:
            try:
                config = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
            except Exception as exc:
                return f"its configuration cannot be saved: {type(exc).__name__}: {exc}"
            try:
                keras.saving.deserialize_keras_object(config, safe_mode=True)
            except Exception as exc:
                return _why_unloadable(exc, model, added)
            return None
        with tempfile.TemporaryDirectory(prefix="graftune-reload-") as folder:
            path = Path(folder) / "model.keras"
            try:
                save_model(model, path)
            except Exception as exc:
                if is_disk_full(exc):  # the machine's, not the plugin's (found by QA: exit 3)
                    raise DiskFull(
                        f"{no_room(exc, path)}, then run the command again (a model is "
                        "saved in $TMPDIR to check that it loads again)"
                    ) from exc
                return f"it cannot be saved: {type(exc).__name__}: {exc}"
            try:
                keras.saving.load_model(path, safe_mode=True)
            except Exception as exc:
                return _why_unloadable(exc, model, added)
        return None
    finally:
        table.update(added)


def _why_unloadable(exc: BaseException, model: Any, added: dict[str, Any]) -> str:
    """Why a model saved here does not load again, in the words that fit its case."""
    from orchestrator.bases import load_problem

    return _defined_inside(exc, model) or _registered_in_build(exc, added) or load_problem(exc)


def _defined_inside(exc: BaseException, model: Any) -> str | None:
    """What to say where the object a model could not load with is a class defined
    inside a function (``build``): no hook can return it, no module import can
    register it (found by QA: that was the advice)."""
    from orchestrator.bases import unknown_keras_object

    name = unknown_keras_object(exc)
    if name is None:
        return None
    for layer in getattr(model, "_flatten_layers", lambda: [])():
        cls = type(layer)
        if cls.__name__ == name and "<locals>" in cls.__qualname__:
            return (
                f"it uses the custom Keras object {name!r}, a class defined inside "
                f"{cls.__qualname__.rsplit('.<locals>.', 1)[0].rsplit('.', 1)[-1]}(), which nothing outside that call "
                "can find: define it at the top level of a module, and register it there "
                "(keras.saving.register_keras_serializable) or return it from the plugin's "
                "graftune_keras_objects hook"
            )
    return None


def _registered_in_build(exc: BaseException, added: dict[str, Any]) -> str | None:
    """What to say where the object a model could not load with was registered by
    the build itself (its module imported inside ``build()``): Keras knows it, so
    "no code has registered it" would mislead (found by QA)."""
    from orchestrator.bases import unknown_keras_object

    name = unknown_keras_object(exc)
    if name is None:
        return None
    if not any(key == name or key.rsplit(">", 1)[-1] == name for key in added):
        return None
    return (
        f"it uses the custom Keras object {name!r}, which is registered only while build() "
        "runs (the code that registers it is imported there), and predict and export load "
        "a model without building it: register it when the plugin's module is imported, "
        "or return it from the plugin's graftune_keras_objects hook"
    )


def check_pickles(strategy: Strategy, name: str, owner: str) -> None:
    from ray import cloudpickle

    try:
        cloudpickle.dumps(strategy)
    except Exception as exc:
        raise PluginError(
            f"strategy {name!r} from plugin {owner} does not pickle "
            f"({type(exc).__name__}: {exc}); Ray sends strategies to its workers pickled: "
            "keep locks, open files, models and other live objects out of self (make them "
            "in build or fit), or run it with search.backend: keras_tuner"
        ) from None


def _added_by(name: str, host: PluginHost) -> str:
    """Where ``name`` is what a plugin adds (a strategy, a data source, a base
    provider), which plugin adds it (found by QA: ``disable: [sklearn]`` was "no
    plugin is named 'sklearn'", nothing more); else nothing."""
    for registry in (host.strategies, host.data_sources, host.bases):
        if name in registry:
            plugin = registry.owner(name).split(" (", 1)[0]
            return (
                f" ({name!r} is a {registry.kind} of plugin {plugin!r}: disable {plugin!r}, "
                "which disables all it adds, or leave the name out of the recipe)"
            )
    return ""


def known_plugin_names(host: PluginHost) -> set[str]:
    """Every plugin name a recipe may disable: registered, host or installed."""
    from orchestrator.plugin_manager import ENTRY_POINT_GROUP, HOST_PLUGINS

    # A blocked name is listed too, with None for its plugin: it proves nothing.
    names = {name for name, plugin in host.pm.list_name_plugin() if plugin is not None}
    names.update(HOST_PLUGINS)
    names.update(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))
    names.update(host.explicit)  # --plugin modules, loaded or blocked
    return names


def plugin_control_errors(recipe: Recipe, host: PluginHost) -> list[RecipeError]:
    """Check the recipe's ``plugins.disable`` list against the plugins there are.

    A name that no plugin has is an error (a typo would silently disable
    nothing); so is a host built without the recipe's ``disable`` list that
    still holds a plugin the recipe disables.
    """
    errors = []
    known = known_plugin_names(host)
    for index, name in enumerate(recipe.plugins.disable):
        path = ("plugins", "disable", str(index))
        if name not in known:
            errors.append(
                recipe.error(
                    path,
                    f"no plugin is named {name!r}{_added_by(name, host) or did_you_mean(name, known)}"
                    f"; plugins: {', '.join(sorted(known))}",
                )
            )
        elif host.pm.get_plugin(name) is not None:
            errors.append(
                recipe.error(
                    path,
                    f"the recipe disables {name!r}, but the plugin host given to the run has it "
                    "registered; build it with get_plugin_manager(disable=recipe.plugins.disable)",
                )
            )
    return errors


def run_disabled_plugins(run_dir: Any) -> tuple[str, ...]:
    """The plugins a run's recipe disabled, for a command on the run (predict,
    export): none where its ``recipe.yaml`` is missing or cannot be read, which
    the command then names as it finds the run."""
    from pathlib import Path

    from orchestrator.errors import GraftuneError

    try:
        if not Path(run_dir).is_dir():  # a FIFO read as a recipe waited forever (found by QA)
            return ()
        return disabled_plugins(run_dir)
    except (GraftuneError, OSError, ValueError):  # the command names what is wrong
        return ()


def disabled_plugins(recipe_path: Any) -> tuple[str, ...]:
    """The plugins a recipe file (or a run directory's recipe) disables.

    The command line builds its plugin host before it runs or validates a
    recipe, so it reads the recipe's ``plugins.disable`` first.

    Raises:
        RecipeError: The recipe cannot be read.
    """
    from pathlib import Path

    from orchestrator.recipe import load_recipe

    if recipe_path is None:
        return ()
    path = Path(recipe_path)
    if path.is_dir():
        # A run directory, to resume; a folder without a recipe is the command's to refuse.
        path = path / "recipe.yaml"
        if not path.is_file():
            return ()
    return tuple(load_recipe(path).plugins.disable)
