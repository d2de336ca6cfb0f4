"""A testing kit for graftune plugin authors, and a pytest plugin.

Enable it in a test suite's top ``conftest.py``::

    pytest_plugins = ["orchestrator.testing"]

(or with ``pytest -p orchestrator.testing``). graftune does not register it
through pytest's ``pytest11`` entry point: like pytest's own ``pytester``, it
is opt-in, so installing graftune never adds fixtures to unrelated test suites.

Fixtures (all prefixed ``graftune_``):

- ``graftune_host``: a fresh plugin host without entry-point discovery; only
  graftune's own data sources, base providers and event log are registered.
- ``graftune_register``: ``graftune_register(plugin, name=None)`` makes a plugin
  discoverable, for this test only, exactly as if it were installed (a
  temporary distribution with an entry point in the ``graftune`` group), and
  returns a fresh host that includes it. Every plugin host built during the
  test (``graftune validate`` through typer's ``CliRunner``,
  :func:`orchestrator.run_recipe`) sees it; it is gone after the test.
- ``graftune_digits`` / ``graftune_iris``: tiny offline datasets (scikit-learn's
  8x8 digits as images, iris as a table), split with seed 0.
- ``graftune_base``: a tiny untrained CNN base for the digits (a ``BaseInfo``).
- ``graftune_run``: ``graftune_run(recipe)`` runs a recipe in process, without
  Ray, and returns its leaderboard (see :func:`run_in_process`).

Functions usable without pytest: :func:`check_strategy`, :func:`check_data_source`,
:func:`check_base_provider`, :func:`run_in_process`, :func:`tiny_dataset`,
:func:`tiny_base`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

try:
    import pytest
except ImportError:  # found by QA: the functions the docstring names work without it
    pytest = None  # type: ignore[assignment]


from orchestrator.errors import PluginError, one_line

if TYPE_CHECKING:
    import pandas as pd

    from orchestrator.bases import BaseInfo
    from orchestrator.data import Dataset, TaskSpec
    from orchestrator.plugin_manager import PluginHost
    from orchestrator.recipe import Recipe
    from orchestrator.strategy import Strategy

__all__ = [
    "PluginCheckError",
    "StrategyCheckError",
    "check_base_provider",
    "check_data_source",
    "check_strategy",
    "run_in_process",
    "tiny_base",
    "tiny_dataset",
]

_SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
#: Modules a strategy's module must not import when it is imported.
HEAVY_MODULES = ("tensorflow", "keras")


class PluginCheckError(PluginError):
    """A plugin's class fails its conformance check; the message lists every problem."""


class StrategyCheckError(PluginCheckError):
    """A strategy class fails :func:`check_strategy`; the message lists every problem."""


# -- tiny data and a tiny base ----------------------------------------------------------


_DATASETS: dict[tuple[str, tuple[Any, ...] | None, int], Dataset] = {}


def tiny_dataset(
    name: str = "digits", *, classes: Iterable[Any] | None = None, seed: int = 0
) -> Dataset:
    """A small offline dataset from scikit-learn, split 60/20/20 and seeded.

    Args:
        name: ``digits`` (8x8x1 images in [0, 1], 10 classes, 1797 examples),
            ``iris`` (4 features, 3 classes), ``wine`` or ``breast_cancer``.
        classes: Keep only these classes (e.g. ``[0, 1, 2]``).
        seed: The split's seed.

    Returns:
        The dataset (read-only arrays, so one copy is shared by every caller).
    """
    from orchestrator.data import prepare_dataset
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.recipe import DataSpec

    key = (name, tuple(classes) if classes is not None else None, seed)
    if key not in _DATASETS:
        spec = DataSpec(
            source=f"sklearn:{name}", classes=list(classes) if classes is not None else None
        )
        sources = get_plugin_manager(autoload=False).data_sources
        _DATASETS[key] = prepare_dataset(spec, sources, seed=seed, base_dir=Path.cwd())
    return _DATASETS[key]


def tiny_base(task: TaskSpec, folder: str | Path) -> BaseInfo:
    """Build, save and describe a tiny untrained base that takes ``task``'s inputs.

    Images ``(h, w, c)`` get two conv → BatchNormalization → ReLU blocks (the
    second with stride 2); any other input a flattening and two small dense
    layers. Nothing is written to graftune's cache.

    Args:
        task: The task whose inputs the base takes.
        folder: Where ``tiny_base.keras`` is written.

    Returns:
        The base as a trial receives it (load it with :func:`orchestrator.bases.load_base`).
    """
    import keras

    from orchestrator.bases import BaseInfo, find_cut_points, plan_adapter

    keras.utils.set_random_seed(0)
    shape = tuple(task.input_shape)
    inputs = keras.Input(shape, name="tiny_base_input")
    if len(shape) == 3:
        x = inputs
        for i, (filters, strides) in enumerate(((4, 1), (8, 2)), start=1):
            x = keras.layers.Conv2D(
                filters, 3, strides=strides, padding="same", use_bias=False, name=f"tiny_conv{i}"
            )(x)
            x = keras.layers.BatchNormalization(name=f"tiny_bn{i}")(x)
            x = keras.layers.Activation("relu", name=f"tiny_relu{i}")(x)
    else:
        x = keras.layers.Flatten(name="tiny_flatten")(inputs) if len(shape) > 1 else inputs
        x = keras.layers.Dense(16, activation="relu", name="tiny_dense1")(x)
        x = keras.layers.Dense(8, activation="relu", name="tiny_dense2")(x)
    model = keras.Model(inputs, x, name="tiny_base")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny_base.keras"
    model.save(path)
    cuts = find_cut_points(model)
    base_shape = tuple(model.input_shape[1:])
    info = BaseInfo(
        path=path,
        fingerprint=hashlib.sha256(path.read_bytes()).hexdigest(),
        input_shape=base_shape,
        output_shape=tuple(model.output_shape[1:]),
        cut_points=tuple(cuts),
        cut_names=tuple(model.layers[i].name for i in cuts),
        adapter=tuple(plan_adapter(shape, base_shape)),
        description="tiny untrained base (orchestrator.testing)",
    )
    keras.backend.clear_session()
    return info


# -- the conformance check --------------------------------------------------------------


def check_strategy(
    cls: type[Strategy], *, dataset: Dataset | None = None, check_imports: bool = True
) -> None:
    """Check that a Strategy class keeps the contract graftune relies on.

    The checks:

    1. ``cls`` subclasses :class:`orchestrator.Strategy` and can be created with
       no arguments;
    2. ``name`` is snake_case and is not the name of one of graftune's built-in
       strategies (unless ``cls`` is that built-in);
    3. ``search_space`` returns only :mod:`orchestrator.space` types with sound
       bounds, both while a recipe is validated (an empty ``SpaceContext``) and
       for a prepared task and base;
    4. the smallest configuration builds a compiled ``keras.Model`` whose
       output is ``(None, n_classes)`` and which, saved as a trial saves it,
       loads again with ``safe_mode=True`` (the installed plugins'
       ``graftune_keras_objects`` registered, as predict registers them), on
       ``dataset`` (default: the digits), and again for a task of another
       number of classes, and, for a strategy that ``requires_base``, on a :func:`tiny_base`; where its
       ``frozen_prefix`` is above 0, it builds such a model again as a trial on
       cached features does, on the very input ``base.inputs_and_features``
       returns;
    5. ``fit`` trains that model for at most the epochs it is given, calls the
       callbacks it is given each epoch (of every ``model.fit``), reports
       ``accuracy`` and ``val_accuracy``, and returns a ``keras.Model``;
    6. the strategy pickles with Ray's cloudpickle, fresh and after ``build``
       (so it reaches Ray workers; keep models out of ``self``);
    7. importing the strategy's module in a fresh interpreter imports neither
       TensorFlow nor Keras (``check_imports=False`` skips this, e.g. for a
       class defined in ``__main__``);
    8. ``default_config`` returns a dict whose values its own space takes
       (a fixed dimension takes anything: it is not searched; defaults
       inherited from a parent whose ``search_space`` the class replaced are
       used only where they fit, and are not checked).
    9. ``check_value`` accepts every value of its own search space (each
       choice, fixed value and both ends of each range);
    10. ``config_note`` returns a line of text or ``None`` for those values
        (as ``graftune validate`` asks it).

    Args:
        cls: The strategy class.
        dataset: The data to build and fit on (default :func:`tiny_dataset`).
        check_imports: Run check 7.

    Raises:
        StrategyCheckError: Naming the class and every check it fails.
    """
    from orchestrator.strategy import Strategy

    label = _label(cls)
    if not isinstance(cls, type) or not issubclass(cls, Strategy):
        raise StrategyCheckError(f"{label} is not a subclass of orchestrator.Strategy")
    label = f"{label} (strategy {cls.name!r})"
    problems: list[str] = []
    problems += _name_problems(cls)
    strategy = _made(cls, label, StrategyCheckError)
    unpicklable = _pickle_problems(strategy, "a fresh instance")
    problems += unpicklable
    if check_imports:
        problems += _import_problems(cls)
    from orchestrator.run import warnings_not_errors
    from orchestrator.trial import collecting_its_own_garbage

    # What the check registers does not reach the next one; its collections (in
    # keras.backend.clear_session) walk what it made, not the test session's millions
    # of objects (0.5 s each, about half of the check of a small strategy). A warning
    # stays one, as in a run: not a failed check under pytest's filterwarnings = error.
    with _keras_objects_kept(), collecting_its_own_garbage(), warnings_not_errors():
        problems += _behaviour_problems(
            strategy, dataset or tiny_dataset("digits"), pickle_after_build=not unpicklable
        )
    if problems:
        _fail(label, problems, StrategyCheckError)


def check_data_source(
    cls: type,
    location: str,
    *,
    options: dict[str, Any] | None = None,
    base_dir: str | Path | None = None,
    check_imports: bool = True,
    **data: Any,
) -> None:
    """Check that a DataSource class keeps the contract graftune relies on, reading
    ``SCHEME:location`` as a run would.

    The checks:

    1. ``cls`` subclasses :class:`orchestrator.data.DataSource`, has a valid
       ``scheme`` that is not one of graftune's own, and can be created with no
       arguments;
    2. importing its module in a fresh interpreter imports neither TensorFlow nor
       Keras (``check_imports=False`` skips this);
    3. ``check`` and ``load`` succeed, raising nothing but a ``DataError``, and
       what ``load`` returns keeps the ``load`` contract (the checks a run makes:
       shapes, dtypes, image range, class codes and names, no NaN);
    4. two reads with the same seed give the same examples, labels and names (a
       run's resume and ``graftune predict`` read them again; a source that draws
       at random sets ``uses_seed = True`` and draws from ``load()``'s ``seed``).

    Args:
        cls: The data source class.
        location: What follows ``SCHEME:`` in a recipe's ``data.source``.
        options: The recipe's ``data.options`` to read it with.
        base_dir: The folder a relative location resolves against (default: the
            current folder).
        check_imports: Run check 2.
        data: The recipe's other ``data`` keys to read it with (``target``,
            ``image_size``, ``channels``, ``classes``, ...).

    Raises:
        PluginCheckError: Naming the class and every check it fails.
    """
    from orchestrator.data import DataSource, prepare_dataset
    from orchestrator.errors import DataError
    from orchestrator.recipe import DataSpec

    registry, label, _ = _admitted(cls, DataSource, "data source", "scheme", "data_sources")
    problems = _import_problems(cls) if check_imports else []
    try:
        spec = DataSpec(source=f"{cls.scheme}:{location}", options=options or {}, **data)
    except (TypeError, ValueError) as exc:  # found by QA: pydantic's error, raw
        raise PluginCheckError(
            f"{label}: the data keys given to the check are no recipe's: {one_line(str(exc))}"
        ) from None
    from orchestrator.run import warnings_not_errors

    folder = Path(base_dir) if base_dir is not None else Path.cwd()
    try:
        with warnings_not_errors():  # as in a run (check_strategy says why)
            first = prepare_dataset(spec, registry, seed=0, base_dir=folder)
            again = prepare_dataset(spec, registry, seed=0, base_dir=folder)
    except DataError as exc:
        problems.append(f"reading {spec.source!r} failed: {exc}")
    else:
        if again.task.fingerprint != first.task.fingerprint or again.names != first.names:
            how = (
                "draw them from load()'s seed"
                if cls.uses_seed
                else "set uses_seed = True and draw them from load()'s seed"
            )
            problems.append(
                f"two reads of {spec.source!r} with the same seed gave other data: a run's "
                f"resume and graftune predict read them again; {how}"
            )
    if problems:
        _fail(label, problems)


def check_base_provider(
    cls: type,
    *,
    options: dict[str, Any] | None = None,
    dataset: Dataset | None = None,
    base_dir: str | Path | None = None,
    check_imports: bool = True,
) -> None:
    """Check that a BaseProvider class keeps the contract graftune relies on,
    preparing its base as a run would (in a cache of its own, removed after).

    The checks:

    1. ``cls`` subclasses :class:`orchestrator.bases.BaseProvider`, its ``name`` is
       snake_case and not one of graftune's own, and it can be created with no
       arguments;
    2. importing its module in a fresh interpreter imports neither TensorFlow nor
       Keras (``check_imports=False`` skips this);
    3. the run's checks of a base pass for ``base: {provider: NAME, options:
       ...}`` on ``dataset`` (default the tiny digits): ``check``,
       ``preprocessing`` and ``cache_key`` return what they should, ``build``
       returns a ``keras.Model`` of one input and one output of features that
       ``dataset``'s inputs can be adapted to, and that loads again as each
       trial loads it (its custom objects registered by a
       ``graftune_keras_objects`` hook);
    4. ``cache_key`` gives the same key twice (else every run makes a new
       cache entry), and ``build`` the same weights twice for a seed (a
       resume builds it again where the cache lost it);
    5. where ``build`` draws other weights for seeds 0 and 1, ``cache_key``
       differs between them too (else a run of one seed reuses the base of
       another).

    Args:
        cls: The base provider class.
        options: The recipe's ``base.options``.
        dataset: The data the base is prepared for (default :func:`tiny_dataset`).
        base_dir: The recipe's folder, which relative paths in ``options`` resolve
            against (default: the current folder).
        check_imports: Run check 2.

    A plugin not installed in the test's environment has its own
    ``graftune_keras_objects`` counted once ``graftune_register(its_module)``
    registered it, before the check (as for :func:`check_strategy`).

    Raises:
        PluginCheckError: Naming the class and every check it fails.
    """
    import numpy as np

    from orchestrator.bases import BaseContext, BaseProvider, prepare_base
    from orchestrator.errors import BaseModelError
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.recipe import BaseSpec

    registry, label, provider = _admitted(cls, BaseProvider, "base provider", "name", "bases")
    problems = _import_problems(cls) if check_imports else []
    spec = BaseSpec(provider=cls.name, options=options or {})
    data = dataset or tiny_dataset("digits")
    folder_of_recipe = Path(base_dir) if base_dir is not None else Path.cwd()
    sources = get_plugin_manager(autoload=False).data_sources
    from orchestrator.run import warnings_not_errors

    # A warning stays one, as in a run (check_strategy says why).
    with _keras_objects_kept(), tempfile.TemporaryDirectory() as folder, warnings_not_errors():
        _register_plugin_keras_objects()
        kept = os.environ.get("GRAFTUNE_CACHE_DIR")
        os.environ["GRAFTUNE_CACHE_DIR"] = folder
        try:
            prepare_base(
                spec, registry, data.task, seed=0, base_dir=folder_of_recipe, data_sources=sources
            )
        except BaseModelError as exc:
            problems.append(f"preparing its base failed: {exc}")
        else:

            def context(seed: int) -> BaseContext:
                return BaseContext(seed, folder_of_recipe, sources, Path(folder))

            def weights(seed: int) -> list[Any]:
                return [np.asarray(w) for w in provider.build(spec, context(seed)).get_weights()]

            def same(a: list[Any], b: list[Any]) -> bool:
                return len(a) == len(b) and all(map(np.array_equal, a, b))

            key = provider.cache_key(spec, context(0))
            if provider.cache_key(spec, context(0)) != key:
                problems.append(
                    "cache_key() gave another key when asked again: every run would make "
                    "a new cache entry; make it of build()'s settings only"
                )
            zero = weights(0)
            if not same(weights(0), zero):
                problems.append(
                    "build() gave other weights for the same seed: a resume builds the base "
                    "again where the cache lost it, and refuses another; draw them from "
                    "context.seed (keras.utils.set_random_seed(context.seed))"
                )
            elif (
                key is not None
                and provider.cache_key(spec, context(1)) == key
                and not same(weights(1), zero)
            ):
                problems.append(
                    "cache_key() is the same for seeds 0 and 1, whose build() gives other "
                    "weights: a run of one seed would reuse the base of another; put "
                    "context.seed in the key"
                )
        finally:
            if kept is None:
                os.environ.pop("GRAFTUNE_CACHE_DIR", None)
            else:
                os.environ["GRAFTUNE_CACHE_DIR"] = kept
    if problems:
        _fail(label, problems)


def _admitted(
    cls: Any, base_class: type, kind: str, key_attr: str, builtins: str
) -> tuple[Any, str, Any]:
    """A registry holding ``cls``, its label for the check's messages and an
    instance, or a :class:`PluginCheckError`: ``cls`` is no subclass of
    ``base_class``, its registration is refused (its ``key_attr`` not snake_case,
    or one of graftune's own ``builtins``), or it cannot be made with no arguments."""
    from orchestrator.registry import Registry

    label = _label(cls)
    if not isinstance(cls, type) or not issubclass(cls, base_class):
        raise PluginCheckError(
            f"{label} is not a subclass of {base_class.__module__}.{base_class.__qualname__}"
        )
    registry: Registry[type] = Registry(kind, key_attr, base_class)
    registry.current_owner = label  # the class: messages say "KIND 'x' from" it
    label = f"{label} ({kind} {getattr(cls, key_attr)!r})"
    problems = _registration_problems(registry, cls, _builtin_items(builtins))
    if problems:
        _fail(label, problems)
    return registry, label, _made(cls, label, PluginCheckError)


def _made(cls: Any, label: str, error: type[PluginCheckError]) -> Any:
    """An instance of ``cls``, made as graftune makes one (no arguments)."""
    try:
        return cls()
    except Exception as exc:
        raise error(
            f"{label}: cannot be created with no arguments: {type(exc).__name__}: {exc}"
        ) from exc


def _label(cls: Any) -> str:
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', repr(cls))}"


def _fail(
    label: str, problems: list[str], error: type[PluginCheckError] = PluginCheckError
) -> None:
    listed = "\n".join(f"  - {p}" for p in problems)
    raise error(f"{label} fails {len(problems)} check(s):\n{listed}")


def _registration_problems(registry: Any, cls: type, builtins: dict[str, type]) -> list[str]:
    """What registering ``cls`` in ``registry`` refuses, and a name graftune's own take."""
    try:
        registry.add(cls)
    except PluginError as exc:
        return [str(exc)]
    name = getattr(cls, registry.key_attr)
    builtin = builtins.get(name)
    if builtin is not None and builtin is not cls:
        return [
            f"{registry.key_attr} {name!r} is taken by graftune's own "
            f"{builtin.__module__}.{builtin.__qualname__}; choose another"
        ]
    return []


def _builtin_items(registry: str) -> dict[str, type]:
    """graftune's own data sources or base providers (``registry``: the host's
    attribute), by scheme or name."""
    from orchestrator.plugin_manager import get_plugin_manager

    host = get_plugin_manager(autoload=False)
    found = getattr(host, registry)
    return {entry.name: entry.item for entry in found.entries()}


@contextlib.contextmanager
def _keras_objects_kept() -> Iterator[None]:
    """Keras' global table of custom objects as it was before the block, after it.

    What a plugin's ``graftune_keras_objects`` or a strategy's ``build``
    registered there stays otherwise for the rest of the process: a check or a
    test after it loaded a model that, on its own, would not load.
    """
    import keras

    table = keras.saving.get_custom_objects()
    kept = dict(table)
    try:
        yield
    finally:
        table.clear()
        table.update(kept)


def _name_problems(cls: type[Strategy]) -> list[str]:
    name = cls.name
    if not isinstance(name, str) or not _SNAKE_CASE.match(name):
        return [f"name must be snake_case (like 'linear_probe'), got {name!r}"]
    builtin = _builtin_strategies().get(name)
    if builtin is not None and builtin is not cls:
        return [
            f"name {name!r} is taken by graftune's built-in strategy "
            f"{builtin.__module__}.{builtin.__qualname__}; choose another"
        ]
    return []


def _builtin_strategies() -> dict[str, type]:
    """graftune's own strategies, by name, read from graftune's entry points."""
    from orchestrator.plugin_manager import ENTRY_POINT_GROUP
    from orchestrator.registry import Registry
    from orchestrator.strategy import Strategy

    try:
        dist = metadata.distribution("graftune")
    except metadata.PackageNotFoundError:
        return {}
    registry: Registry[type] = Registry("strategy", "name", Strategy)
    for ep in dist.entry_points.select(group=ENTRY_POINT_GROUP):
        plugin = ep.load()
        hook = getattr(plugin, "graftune_register_strategies", None)
        if hook is not None:
            hook(registry=registry)
    return {entry.name: entry.item for entry in registry.entries()}


def _pickle_problems(strategy: Strategy, when: str) -> list[str]:
    from ray import cloudpickle

    try:
        copy = cloudpickle.loads(cloudpickle.dumps(strategy))
    except Exception as exc:
        return [
            f"{when} does not pickle with cloudpickle ({type(exc).__name__}: {exc}); Ray sends "
            "strategies to its workers pickled: keep models and other live objects out of self"
        ]
    if type(copy).name != type(strategy).name:
        return [f"{when} changes its name when pickled"]
    return []


def _import_problems(cls: type) -> list[str]:
    module = cls.__module__
    if module == "__main__":
        return [
            "the class is defined in __main__, which no other process (a fresh interpreter, "
            "a Ray worker) can import; move it to a module (or pass check_imports=False)"
        ]
    code = textwrap.dedent(
        """
        import importlib, sys
        importlib.import_module(sys.argv[1])
        print(",".join(m for m in sys.argv[2:] if m in sys.modules))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run(
        [sys.executable, "-c", code, module, *HEAVY_MODULES],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        return [f"module {module} cannot be imported in a fresh interpreter: {last}"]
    heavy = [m for m in done.stdout.strip().split(",") if m]
    if heavy:
        return [
            f"importing {module} imports {', '.join(heavy)}; import TensorFlow/Keras inside "
            "methods, so that importing it, and each command that loads the plugins, stay fast"
        ]
    return []


def _behaviour_problems(
    strategy: Strategy, dataset: Dataset, *, pickle_after_build: bool
) -> list[str]:
    """Checks 3 to 5 and 8, and (if asked) the pickle check after ``build``."""
    import keras

    from orchestrator.bases import load_base
    from orchestrator.models import forgetting_traced_gradients
    from orchestrator.preflight import model_problems, reload_problem, space_problems
    from orchestrator.space import resolve_space, smallest_config
    from orchestrator.strategy import SpaceContext

    problems: list[str] = []
    # The models trained here are dropped at its end (keras.backend.clear_session).
    with (
        forgetting_traced_gradients(),
        tempfile.TemporaryDirectory(prefix="graftune-check-") as folder,
    ):
        base = tiny_base(dataset.task, folder) if strategy.requires_base else None
        found: dict[str, list[str]] = {}
        spaces: list[Any] = []
        space = None
        for when, context in (
            ("for an empty SpaceContext (graftune validate)", SpaceContext()),
            ("for a prepared task", SpaceContext(task=dataset.task, base=base)),
        ):
            try:
                space = strategy.search_space(context)
            except Exception as exc:
                space = None
                found[when] = [f"raised {type(exc).__name__}: {exc}"]
            else:
                found[when] = space_problems(space, takes_base=strategy.requires_base)
            spaces.append(space if isinstance(space, dict) else {})
        (validating, prepared) = found.values()
        if not validating and not prepared and set(spaces[0]) != set(spaces[1]):
            return [
                "search_space() names other parameters for a prepared task "
                f"({', '.join(sorted(spaces[1]))}) than for an empty SpaceContext "
                f"({', '.join(sorted(spaces[0]))}); graftune validate checks a recipe's keys "
                "without data: they must be the same either way"
            ]
        if validating == prepared:
            problems += [f"search_space(): {p}" for p in prepared]
        else:
            for when, listed in found.items():
                problems += [f"search_space() {when}: {p}" for p in listed]
        if space is None or problems:
            return problems
        try:
            resolved = resolve_space(space, base.n_cut_points if base else None)
        except ValueError as exc:
            return [*problems, f"the space cannot be resolved against the base: {exc}"]
        config = smallest_config(resolved)
        problems += _default_problems(
            strategy, SpaceContext(task=dataset.task, base=base), resolved
        )
        problems += _value_problems(strategy, resolved)
        problems += _note_problems(strategy, resolved)
        keras.utils.set_random_seed(0)
        _register_plugin_keras_objects()
        registered = dict(keras.saving.get_custom_objects())
        try:
            model = strategy.build(
                dict(config), dataset.task, load_base(base) if base is not None else None
            )
        except Exception as exc:
            return [
                *problems,
                f"build() raised {type(exc).__name__}: {exc} for the smallest configuration {config}",
            ]
        broken = model_problems(model, dataset.task.n_classes, dataset.task.input_shape)
        problems += [f"{p} (smallest configuration {config})" for p in broken]
        if not broken:
            problems += _other_classes_problems(strategy, config, dataset.task, base)
            reload = reload_problem(model, registered)
            if reload:
                if "graftune_keras_objects hook" in reload:  # found by QA: --plugin, in a test
                    reload += (
                        "; in a test, give the plugin's module to the graftune_register "
                        "fixture first: it registers what the hook returns"
                    )
                problems.append(
                    f"its model (smallest configuration {config}) would be saved but could not "
                    f"be loaded again: {reload}"
                )
        if pickle_after_build:
            problems += _pickle_problems(strategy, "the instance after build()")
        if not broken:
            problems += _fit_problems(strategy, model, config, dataset)
        if not broken and base is not None:
            problems += _cached_problems(strategy, config, dataset.task, base)
        keras.backend.clear_session()
    return problems


def _other_classes_problems(
    strategy: Strategy, config: dict[str, Any], task: TaskSpec, base: BaseInfo | None
) -> list[str]:
    """Check 4's output shape again for a task with another number of classes: a
    strategy that fixed the digits' 10 passed, to fail on the user's data."""
    from orchestrator.bases import load_base
    from orchestrator.preflight import model_problems

    n = 3 if task.n_classes != 3 else 4
    other = dataclasses.replace(
        task, n_classes=n, class_names=tuple(f"c{i}" for i in range(n)), fingerprint="other"
    )
    where = f"smallest configuration {config}, for a task of {n} classes"
    try:
        model = strategy.build(dict(config), other, load_base(base) if base else None)
    except Exception as exc:
        return [f"build() raised {type(exc).__name__}: {exc} ({where})"]
    return [f"{p} ({where})" for p in model_problems(model, n, task.input_shape)]


def _cached_problems(
    strategy: Strategy, config: dict[str, Any], task: TaskSpec, base: BaseInfo
) -> list[str]:
    """Check 4 again as a trial on cached features builds: on the base's features
    at the cut ``frozen_prefix`` returns (when it returns one)."""
    from orchestrator.bases import load_base
    from orchestrator.preflight import model_problems
    from orchestrator.trial import check_cached_input

    try:
        cut = int(strategy.frozen_prefix(dict(config), base) or 0)
    except Exception as exc:
        return [f"frozen_prefix() raised {type(exc).__name__}: {exc} for {config}"]
    if cut <= 0:
        return []
    if cut > base.n_cut_points:
        return [f"frozen_prefix() returned {cut} for a base of {base.n_cut_points} cut points"]
    loaded = load_base(base)
    loaded.cached_cut = cut
    loaded.feature_shape = tuple(loaded.prefix_model(task.input_shape, cut).output_shape[1:])
    where = f"smallest configuration {config}, on the base's features cached at cut point {cut}"
    try:
        model = strategy.build(dict(config), task, loaded)
    except Exception as exc:
        return [f"build() raised {type(exc).__name__}: {exc} ({where})"]
    problems = [f"{p} ({where})" for p in model_problems(model, task.n_classes)]
    if not problems:
        try:
            check_cached_input(model, strategy, loaded, cut)
        except TypeError as exc:
            problems.append(str(exc))
    return problems


def _register_plugin_keras_objects() -> None:
    """Register the installed plugins' ``graftune_keras_objects``, as predict does
    before it loads a model (a plugin that fails to load is the plugin checks' to name)."""
    from orchestrator.errors import GraftuneError
    from orchestrator.plugin_manager import get_plugin_manager

    with contextlib.suppress(GraftuneError):
        get_plugin_manager().keras_objects()


def _value_problems(strategy: Strategy, space: dict[str, Any]) -> list[str]:
    """Check 9: ``check_value`` takes every value of the strategy's own space."""
    from orchestrator.space import extremes

    problems = []
    for key, dim in space.items():
        for value in extremes(dim):
            try:
                strategy.check_value(key, value)
            except Exception as exc:
                problems.append(
                    f"check_value({key!r}, {value!r}) refuses a value of its own search space "
                    f"({dim.describe()}): {type(exc).__name__}: {exc}"
                )
    return problems


def _note_problems(strategy: Strategy, space: dict[str, Any]) -> list[str]:
    """Check 10: ``config_note`` says a line or nothing, as ``graftune validate`` asks it."""
    from orchestrator.errors import PluginError
    from orchestrator.preflight import space_notes

    try:
        space_notes(strategy, space, 2, "under test")
    except PluginError as exc:
        return [str(exc).split("under test: ", 1)[-1]]
    return []


def _default_problems(strategy: Strategy, context: Any, space: dict[str, Any]) -> list[str]:
    """Check 8: ``default_config()`` returns a dict that fits the strategy's own space."""
    from orchestrator.preflight import default_problems, defaults_are_its_own

    try:
        defaults = strategy.default_config(context)
    except Exception as exc:
        return [f"default_config() raised {type(exc).__name__}: {exc}"]
    if not isinstance(defaults, dict):
        return [f"default_config() returned {type(defaults).__name__}, not a dict"]
    if not defaults_are_its_own(strategy):  # a parent's, used only where they fit
        return []
    return [f"default_config(): {p}" for p in default_problems(defaults, space).values()]


def _fit_problems(
    strategy: Strategy, model: Any, config: dict[str, Any], dataset: Dataset
) -> list[str]:
    """What a strategy's ``fit`` does against its contract, trained for two epochs on
    up to 64 of ``dataset``'s training examples: raises, returns no model, never
    calls or bypasses its callbacks, runs more epochs, or reports no accuracy."""
    import keras
    import numpy as np

    from orchestrator.strategy import FitData

    class Counter(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.logs: list[dict[str, Any]] = []
            #: The optimizer and its step count at the last epoch reported.
            self.last: tuple[Any, int] | None = None

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.logs.append(dict(logs or {}))
            optimizer = getattr(self.model, "optimizer", None)
            steps = getattr(optimizer, "iterations", None)
            self.last = (optimizer, int(steps)) if steps is not None else None

    n = min(64, len(dataset.y_train))
    data = FitData(
        np.asarray(dataset.x_train[:n]),
        np.asarray(dataset.y_train[:n]),
        np.asarray(dataset.x_val[:32]),
        np.asarray(dataset.y_val[:32]),
        32,
    )
    counter = Counter()
    epochs = 2
    try:
        trained = strategy.fit(model, dict(config), data, epochs=epochs, callbacks=[counter])
    except Exception as exc:
        return [f"fit() raised {type(exc).__name__}: {exc}"]
    problems = []
    if not isinstance(trained, keras.Model):
        problems.append(f"fit() returned {type(trained).__name__}, not the trained keras.Model")
    if not counter.logs:
        problems.append("fit() never called the callbacks it was given (pass them to model.fit)")
        return problems
    if counter.last is not None and isinstance(trained, keras.Model):
        optimizer, steps = counter.last
        now = getattr(trained, "optimizer", None)
        if now is not optimizer or int(getattr(now, "iterations", steps)) > steps:
            # Its epochs after the last it reported: never scored, stopped or pruned.
            problems.append(
                "fit() trained the model after the last epoch it reported to its callbacks "
                "(a second model.fit, as a two-phase fit does, without callbacks=callbacks?): "
                "pass the callbacks to every model.fit"
            )
    if len(counter.logs) > epochs:
        problems.append(f"fit() ran {len(counter.logs)} epochs when given epochs={epochs}")
    else:
        missing = {"accuracy", "val_accuracy"} - set(counter.logs[-1])
        if missing:
            problems.append(
                f"fit() epochs report no {', '.join(sorted(missing))} (compile with "
                "metrics=['accuracy'] and pass validation data)"
            )
    return problems


# -- an in-process run ---------------------------------------------------------------------


def _as_recipe(recipe: Recipe | str | Path | dict[str, Any]) -> Recipe:
    from orchestrator.recipe import as_recipe

    return as_recipe(recipe)


def run_in_process(
    recipe: Recipe | str | Path | dict[str, Any],
    *,
    run_dir: str | Path,
    host: PluginHost | None = None,
    plugins: Iterable[ModuleType | object | str] = (),
) -> pd.DataFrame:
    """Run a recipe in this process, one trial after another, without Ray.

    Exactly ``graftune run`` — the same checks (the recipe, each strategy's
    space and smallest configuration), data and base preparation, trials
    (:func:`orchestrator.trial.run_trial`), event hooks and files — with the
    search on graftune's in-process keras-tuner backend: ``search.backend`` is
    set to ``keras_tuner``, and an ``asha`` scheduler (which keras-tuner has
    not) to ``fifo``.

    Args:
        recipe: A recipe object, a recipe file, YAML text or a dict. Relative
            paths in text or a dict resolve against the current directory.
        run_dir: The run directory (trial folders, ``leaderboard.csv``,
            ``events.jsonl``); created, and it must be empty.
        host: A ready plugin host; default one built with ``plugins`` and the
            recipe's ``plugins.disable``.
        plugins: Extra plugin modules or objects (when ``host`` is not given).

    Returns:
        The leaderboard, one row per trial, ranked as in a real run, also when
        every trial failed; ``frame.attrs["run_dir"]`` is the run directory.

    Raises:
        RecipeError: The recipe is wrong; or, asking for Ray, it is one keras-tuner
            cannot search, said as this function's choice of backend.
    """
    from orchestrator.errors import RecipeError, RunFailed
    from orchestrator.leaderboard import read_leaderboard
    from orchestrator.run import run_recipe

    recipe = _as_recipe(recipe)
    scheduler = "fifo" if recipe.search.scheduler == "asha" else recipe.search.scheduler
    search = recipe.search.model_copy(update={"backend": "keras_tuner", "scheduler": scheduler})
    in_process = recipe.updated(search=search)
    run_dir = Path(run_dir)
    try:
        frame = run_recipe(in_process, run_dir=run_dir, host=host, plugins=plugins).leaderboard
    except RunFailed:
        frame = read_leaderboard(run_dir)
    except RecipeError as exc:
        if recipe.search.backend == "keras_tuner" or "backend: ray" not in str(exc):
            raise
        # Its "use backend: ray" read as if the recipe asked for keras_tuner (found by QA).
        several = len(getattr(exc, "errors", ())) > 1
        raise RecipeError(
            "run_in_process searches in this process, on the keras_tuner backend, which "
            "cannot take this recipe (it may run on Ray: graftune run, run_recipe): "
            f"{exc if several else exc.message}",
            **({} if several else {"file": exc.file, "path": exc.path, "line": exc.line}),
        ) from exc
    frame.attrs["run_dir"] = run_dir.resolve()
    return frame


# -- pytest fixtures -------------------------------------------------------------------------
#: Deprecation warnings that graftune's dependencies give inside the kit's runs and
#: checks, of which a plugin's author can change nothing: TensorFlow's variables under
#: NumPy 2 (as Keras saves a model, as its TensorBoard callback logs a learning rate)
#: and keras-tuner's threading calls (its oracle, in every in-process run). Left out of
#: the suite's warnings summary (found by QA: 18 warnings after two tests of a plugin).
DEPENDENCY_WARNINGS = (
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning:keras",
    "ignore::DeprecationWarning:keras_tuner",
)


def pytest_configure(config: Any) -> None:
    for line in DEPENDENCY_WARNINGS:
        config.addinivalue_line("filterwarnings", line)


def _fixture(*args: Any, **kwargs: Any) -> Any:
    """``pytest.fixture``, and where pytest is not installed the function as it is."""
    if pytest is not None:
        return pytest.fixture(*args, **kwargs)
    return args[0] if args and callable(args[0]) else (lambda function: function)


@_fixture
def graftune_host() -> PluginHost:
    """A fresh plugin host without entry points: graftune's data sources, bases and event log."""
    from orchestrator.plugin_manager import get_plugin_manager

    return get_plugin_manager(autoload=False)


_REGISTERED_PREFIX = "_graftune_registered_"


def _installed_name(module: str) -> str | None:
    """The name of an installed ``graftune`` entry point that names ``module``, if any."""
    from orchestrator.plugin_manager import ENTRY_POINT_GROUP

    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.value == module:
            return ep.name
    return None


@_fixture
def graftune_register(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., PluginHost]]:
    """``register(plugin, name=None) -> PluginHost``: a plugin installed for one test.

    ``plugin`` is a module (found by its import name) or any object with hook
    implementations. It is written as a temporary distribution
    ``graftune-testing-NAME 0`` whose entry point ``NAME`` in the ``graftune``
    group names it, on a folder put first on ``sys.path``; so it is discovered
    the way installed plugins are, and wins over an installed entry point of
    the same name (and over one registered under that name earlier in the test).
    A module an installed entry point names under another name takes that name by
    default. ``GRAFTUNE_DISABLE_PLUGIN_AUTOLOAD`` is unset for the test.
    Everything is undone after the test.
    """
    from orchestrator.plugin_manager import DISABLE_AUTOLOAD_ENV, get_plugin_manager

    site = tmp_path_factory.mktemp("graftune-plugins")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    this = sys.modules[__name__]
    counter = itertools.count()

    def register(plugin: ModuleType | object, name: str | None = None) -> PluginHost:
        if isinstance(plugin, ModuleType) and sys.modules.get(plugin.__name__) is plugin:
            value = plugin.__name__
            # Installed under an entry point of another name: that one, which it then
            # shadows (pluggy takes a module under one name only).
            installed = _installed_name(value)
            if installed and name and name != installed:
                # pluggy takes a module under one name only: the host refused it later,
                # as "registered already", with no word of the installed entry point.
                raise ValueError(
                    f"{value} is installed as plugin {installed!r}, and a module is a plugin "
                    f"under one name only: leave name out (registered as {installed!r}, it "
                    "stands for the installed one in this test)"
                )
            default = installed or plugin.__name__.rsplit(".", 1)[-1]
        else:
            attribute = f"{_REGISTERED_PREFIX}{next(counter)}"
            monkeypatch.setattr(this, attribute, plugin, raising=False)
            value = f"{__name__}:{attribute}"
            default = getattr(plugin, "__name__", type(plugin).__name__).lower()
        name = name or default
        dist = f"graftune-testing-{name.replace('_', '-').replace('.', '-')}"
        info = site / f"{dist.replace('-', '_')}-0.dist-info"
        # Registered under this name before, in this test: the newer one replaces it.
        shutil.rmtree(info, ignore_errors=True)
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0\n")
        (info / "entry_points.txt").write_text(f"[graftune]\n{name} = {value}\n")
        importlib.invalidate_caches()
        return get_plugin_manager()

    # The Keras objects its plugins registered go with them (Keras imported only if it is).
    table = _keras_objects() if "keras" in sys.modules else None
    kept = dict(table) if table is not None else {}
    yield register
    table = _keras_objects() if "keras" in sys.modules else None
    if table is not None:
        table.clear()
        table.update(kept)


def _keras_objects() -> dict[str, Any]:
    import keras

    return keras.saving.get_custom_objects()


@_fixture(scope="session")
def graftune_digits() -> Dataset:
    """scikit-learn's 8x8 digits as (8, 8, 1) images, 10 classes, split with seed 0."""
    return tiny_dataset("digits")


@_fixture(scope="session")
def graftune_iris() -> Dataset:
    """Iris as a table of 4 features, 3 classes, split with seed 0."""
    return tiny_dataset("iris")


@_fixture
def graftune_base(graftune_digits: Dataset, tmp_path: Path) -> BaseInfo:
    """A tiny untrained CNN base for :func:`graftune_digits` (see :func:`tiny_base`)."""
    return tiny_base(graftune_digits.task, tmp_path / "graftune-base")


@_fixture
def graftune_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., pd.DataFrame]:
    """``run(recipe, **kwargs) -> leaderboard``: :func:`run_in_process` in a temporary run dir.

    Each call writes to a new folder under the test's ``tmp_path`` (the
    leaderboard's ``attrs["run_dir"]`` says which). Unless
    ``GRAFTUNE_CACHE_DIR`` is set, bases are cached in a temporary folder, not
    in the user's cache.
    """
    from orchestrator.bases import CACHE_ENV

    if not os.environ.get(CACHE_ENV):
        monkeypatch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("graftune-cache")))
    counter = itertools.count(1)

    def run(recipe: Recipe | str | Path | dict[str, Any], **kwargs: Any) -> pd.DataFrame:
        run_dir = kwargs.pop("run_dir", None) or tmp_path / f"graftune-run-{next(counter)}"
        return run_in_process(recipe, run_dir=run_dir, **kwargs)

    return run
