"""Build the plugin manager: load entry points, register, check, fill registries."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePath
from types import ModuleType
from typing import Any

import pluggy

from orchestrator import hookspecs
from orchestrator.errors import (
    PLUGIN_FAULTS,
    DuplicateNameError,
    GraftuneError,
    PluginError,
    PluginLoadError,
    ellipsized,
    raised,
)
from orchestrator.markers import PROJECT
from orchestrator.registry import Registry

log = logging.getLogger(__name__)

#: The entry-point group third-party plugins (and our built-ins) declare.
ENTRY_POINT_GROUP = "graftune"
#: Setting this variable to a non-empty value skips entry-point discovery.
DISABLE_AUTOLOAD_ENV = "GRAFTUNE_DISABLE_PLUGIN_AUTOLOAD"


def autoload_disabled() -> str | None:
    """Why entry points are not loaded by default, or ``None`` when they are.

    Any non-empty value of :data:`DISABLE_AUTOLOAD_ENV` turns autoload off, ``0``
    and ``false`` too, as pytest reads ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``; the
    reason quotes the value, so that ``=0`` meant as "no" is seen.
    """
    value = os.environ.get(DISABLE_AUTOLOAD_ENV)
    if not value:
        return None
    return f"{DISABLE_AUTOLOAD_ENV} is set (to {value!r}; any value but empty turns autoload off)"


#: Host modules that implement the same hooks as any plugin, registered by name.
HOST_PLUGINS = {
    "graftune.data": "orchestrator.data.sources",
    "graftune.bases": "orchestrator.bases",
    "graftune.events": "orchestrator.reporters",
}


#: Seconds an event hook may take before the run says which plugin held it up (once).
SLOW_HOOK_S = 5.0


@dataclass(frozen=True)
class PluginInfo:
    """What ``graftune plugins`` shows for one registered plugin."""

    name: str
    distribution: str
    version: str
    adds: tuple[str, ...]
    #: Each name it registers (``strategy NAME``) with its class's ``description``.
    described: tuple[tuple[str, str], ...] = ()
    #: The event hooks it implements (``run_finished``, ...): ``adds``' last entry says them.
    hooks: tuple[str, ...] = ()


#: The installed plugins seen importing TensorFlow or Keras in this process, with the
#: seconds it took (kept across plugin managers: found by QA, `graftune plugins`, which
#: loads the plugins again without one that is broken, lost the first load's finding).
_HEAVY_SEEN: dict[tuple[str, str], float | None] = {}
_HEAVY = ("tensorflow", "keras")


def _heavy_imported() -> bool:
    """Whether TensorFlow or Keras is imported in this process."""
    return any(name in sys.modules for name in _HEAVY)


def _holds_heavy(plugin: Any) -> bool:
    """Whether the module of ``plugin`` holds, at its top level, something of
    TensorFlow or Keras (a module, a class, a function): it imported them, where
    another import had already paid for them (found by QA: only the first of two
    such plugins was named)."""
    module = plugin if isinstance(plugin, ModuleType) else sys.modules.get(_module_of(plugin))
    for value in vars(module).values() if module is not None else ():
        name = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", "")
        if isinstance(name, str) and name.split(".")[0] in _HEAVY:
            return True
    return False


def _module_of(plugin: Any) -> str:
    """The module a registered plugin (a module or an object) comes from."""
    return plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__


def _handed(value: Any) -> Any:
    """What an event hook of a plugin is given for ``value``: a copy of its own,
    where it could change the original (a result, the leaderboard)."""
    if value is None or isinstance(value, (str, bytes, int, float, PurePath)):
        return value
    import copy

    return copy.deepcopy(value)


@dataclass
class PluginHost:
    """The plugin manager and the registries its hooks filled."""

    pm: pluggy.PluginManager
    strategies: Registry
    data_sources: Registry
    bases: Registry
    owners: dict[str, str] = field(default_factory=dict)
    distributions: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: The modules asked for by name (``--plugin``), loaded or blocked.
    explicit: tuple[str, ...] = ()
    #: Warnings about the plugins already given, so a run gives each once.
    said: set[str] = field(default_factory=set)
    #: The installed plugins whose import imports TensorFlow or Keras (which every
    #: command that loads the plugins then waits for), with its seconds where this
    #: process saw them (``None`` where TensorFlow was imported before).
    heavy_imports: dict[str, float | None] = field(default_factory=dict)

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call an event hook on every plugin; an observer that raises is only reported."""
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            # Each plugin's own copy (found by QA: a reporter that tagged its result's
            # config or sorted the leaderboard in place changed what graftune's events
            # log, finished.json, the console and every later reporter saw).
            own = _module_of(impl.plugin).startswith("orchestrator.")
            args = {
                name: kwargs[name] if own else _handed(kwargs[name])
                for name in impl.argnames
                if name in kwargs
            }
            began = time.monotonic()
            try:
                impl.function(**args)
            except PLUGIN_FAULTS as exc:  # sys.exit() in a reporter ended the run
                from orchestrator.errors import without_credentials

                # Where it raised (found by QA: no file, no line), and with --debug
                # (this logger at DEBUG) the traceback.
                frames = traceback.extract_tb(exc.__traceback__)
                # The innermost line of the plugin's own code (its package's folder),
                # not of a library it called; else the innermost.
                code = getattr(impl.function, "__code__", None)
                home = os.path.dirname(code.co_filename) if code is not None else ""
                own = [f for f in frames if f.filename.startswith(home + os.sep)] or frames
                where = f" at {own[-1].filename}:{own[-1].lineno}" if own else ""
                log.warning(
                    "plugin %s raised in %s%s (ignored): %s",
                    self.owners.get(impl.plugin_name, impl.plugin_name),
                    hook_name,
                    where,
                    without_credentials(raised(exc)),
                    exc_info=exc if log.isEnabledFor(logging.DEBUG) else None,
                )
            took = time.monotonic() - began
            owner = self.owners.get(impl.plugin_name, impl.plugin_name)
            said = f"slow {owner} {hook_name}"
            if took >= SLOW_HOOK_S and said not in self.said:
                # Found by QA: a 20 s hook held the run up, and nothing said whose it was.
                self.said.add(said)
                # Advice for a plugin's author; not for graftune's own (found by QA: the
                # mlflow reporter's first use of a new SQLite store took 9 s).
                advice = (
                    ""
                    if own
                    else ", so keep them fast (hand slow work, as an upload, to a thread of "
                    "the plugin's own)"
                )
                log.warning(
                    "plugin %s took %.1f s in %s: the run waits for its event hooks%s",
                    owner,
                    took,
                    hook_name,
                    advice,
                )

    def strategy(self, name: str) -> Any:
        """A new instance of the strategy registered as ``name``.

        Raises:
            KeyError: No plugin registered ``name`` (:meth:`Registry.get`).
            PluginError: Its class cannot be made with no arguments (an
                ``__init__`` that takes some, or raises): graftune makes each
                strategy so. The message names the strategy and its plugin.
        """
        cls = self.strategies.get(name)
        try:
            return cls()
        except GraftuneError:
            raise
        except PLUGIN_FAULTS as exc:
            raise PluginError(
                f"strategy {name!r} from plugin {self.strategies.owner(name)}: making it "
                f"({cls.__name__}()) raised {raised(exc)}; graftune makes a "
                "strategy with no arguments: give __init__'s parameters defaults"
            ) from exc

    def keras_objects(self) -> dict[str, Any]:
        """What the plugins' ``graftune_keras_objects`` return, registered with
        Keras, by registered name (``package>Name``); Keras is imported only
        when a plugin implements the hook.

        Raises:
            PluginError: A plugin's hook raised, or returned something not a
                class or function.
        """
        impls = self.pm.hook.graftune_keras_objects.get_hookimpls()
        if not impls:
            return {}
        import keras

        found: dict[str, Any] = {}
        for impl in reversed(impls):
            owner = self.owners.get(impl.plugin_name, impl.plugin_name)
            try:
                returned = impl.function()
                # A name, or a dict of names, read as an iterable gave its letters or keys;
                # one class or function is not a list of them.
                bare = isinstance(returned, str | Mapping | type) or (
                    callable(returned) and not hasattr(returned, "__iter__")
                )
                objects = None if bare else list(returned or ())
            except PLUGIN_FAULTS as exc:
                raise PluginError(
                    f"plugin {owner} failed in graftune_keras_objects: {raised(exc)}"
                ) from exc
            if objects is None:
                one = f" ([{returned.__name__}])" if callable(returned) else ""
                raise PluginError(
                    f"plugin {owner}: graftune_keras_objects returned {returned!r}; return a "
                    f"list of the Keras classes and functions themselves{one}"
                )
            for obj in objects:
                if not callable(obj) or not hasattr(obj, "__name__"):
                    raise PluginError(
                        f"plugin {owner}: graftune_keras_objects returned {obj!r}, not a Keras "
                        "class or function"
                    )
                name = keras.saving.get_registered_name(obj)
                if keras.saving.get_registered_object(name) is not obj:
                    # Not registered by the plugin itself (or only half): under its
                    # package's name, as register_keras_serializable would put it.
                    package, _, short = name.rpartition(">")
                    if not package:
                        package = str(getattr(obj, "__module__", "") or "Custom").split(".")[0]
                        name = f"{package}>{short}"
                    taken = keras.saving.get_registered_object(name)
                    if taken is not None and taken is not obj:
                        # Registered, the second would replace the first: a model saved
                        # with one loaded the other, silently.
                        raise PluginError(
                            f"plugin {owner}: graftune_keras_objects returned "
                            f"{obj.__module__}.{obj.__qualname__}, whose Keras name {name!r} "
                            f"is {taken.__module__}.{taken.__qualname__}'s; register one of "
                            "them under another name (keras.saving.register_keras_serializable"
                            "(package=..., name=...))"
                        )
                    keras.saving.register_keras_serializable(package, short)(obj)
                    name = keras.saving.get_registered_name(obj)
                found[name] = obj
        return found

    def infos(self) -> list[PluginInfo]:
        """One :class:`PluginInfo` per registered plugin, sorted by name."""
        adds: dict[str, list[str]] = {}
        described: dict[str, list[tuple[str, str]]] = {}
        for registry in (self.strategies, self.data_sources, self.bases):
            for entry in registry.entries():
                plugin = entry.owner.split(" ", 1)[0]
                adds.setdefault(plugin, []).append(f"{registry.kind} {entry.name}")
                # One line, as documented (found by QA: never shown anywhere).
                text = " ".join(str(getattr(entry.item, "description", "") or "").split())
                described.setdefault(plugin, []).append((f"{registry.kind} {entry.name}", text))
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            dist_name, version = self.distributions.get(name) or _host_distribution(name)
            # An event or Keras-objects plugin registers no name: its hooks are what it
            # adds (found by QA: "-" for graftune.events and mlflow).
            hooks = sorted(
                caller.name.removeprefix("graftune_")
                for caller in self.pm.get_hookcallers(plugin) or ()
                if not caller.name.startswith("graftune_register_")
            )
            added = adds.get(name, []) + ([f"hooks {', '.join(hooks)}"] if hooks else [])
            infos.append(
                PluginInfo(
                    name,
                    dist_name,
                    version,
                    tuple(added),
                    tuple(described.get(name, [])),
                    tuple(hooks),
                )
            )
        return sorted(infos, key=lambda i: i.name)


def _host_distribution(plugin_name: str) -> tuple[str, str]:
    if plugin_name in HOST_PLUGINS:
        try:
            return "graftune", metadata.version("graftune")
        except metadata.PackageNotFoundError:
            return "graftune", "unknown"
    return "(not installed)", "-"


#: The distributions ``orchestrator.testing.graftune_register`` writes: documented
#: to win over an installed entry point of the same name, for one test.
_TESTING_DISTRIBUTION = "graftune-testing-"


def _entry_points(blocked: Callable[[str], bool] = lambda name: False) -> list[metadata.EntryPoint]:
    """The ``graftune`` group's entry points, one per name.

    Raises:
        PluginError: Two distributions use one entry-point name for different
            plugins (pip installs both; only one could load, and which would
            depend on ``sys.path``). A name the recipe disables is not checked.
    """
    chosen: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        first = chosen.get(ep.name)
        if first is None:
            chosen[ep.name] = ep
            continue
        # The same distribution found twice on sys.path is no duplicate.
        if first.value == ep.value or blocked(ep.name):
            continue
        if _dist_label(first).startswith(_TESTING_DISTRIBUTION):
            continue
        raise PluginError(
            f"two installed distributions name a graftune plugin {ep.name!r}: "
            f"{_dist_label(first)} ({first.value}) and {_dist_label(ep)} ({ep.value}); "
            "only one can load under that name: uninstall one (pip uninstall), or "
            "rename its entry point in its pyproject.toml",
            plugin=ep.name,
        )
    return list(chosen.values())


def _dist_label(ep: metadata.EntryPoint) -> str:
    return f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown"


def not_a_module_name(name: str) -> str | None:
    """What is wrong with a ``--plugin`` that names a file, not a module, and the
    name to give instead (``None``: a module's name)."""
    if name.replace(".", "").replace("_", "").isalnum() and not name.endswith(".py"):
        return None
    module, colon, attribute = name.partition(":")
    if colon and all(part.isidentifier() for part in (*module.split("."), attribute)):
        # Found by QA: called a file path, with the same text as the fix.
        return (
            f"--plugin takes a module's import name ({module!r}), not module:attribute as "
            f"an entry point does: its hooks are the module's functions (or give {attribute} "
            "from Python: run_recipe(..., plugins=[...]))"
        )
    if os.path.isabs(name):  # its folder is not the current one: name both
        path = Path(name)
        module, where = path.name.removesuffix(".py"), f"run from {path.parent}"
        where += f" or with PYTHONPATH={path.parent}"
    else:
        module = name.removesuffix(".py").strip("./").replace("/", ".")
        where = "from the folder that holds it (or a folder on PYTHONPATH)"
    return (
        f"--plugin takes a module's import name, not a file path: "
        f"{module or 'NAME'!r} for {name or 'an empty name'}, {where}"
    )


def _import_explicit(name: str) -> ModuleType:
    """Import a ``--plugin`` module; like ``python -m``, the current folder is searched too."""
    problem = not_a_module_name(name)
    if problem is not None:
        raise ValueError(problem)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        top = name.split(".", 1)[0]
        if exc.name != top or os.getcwd() in sys.path:
            raise
    # Appended, not prepended: an installed module of the same name still wins.
    sys.path.append(os.getcwd())
    return importlib.import_module(name)


def _names_no_module(name: str, exc: BaseException) -> bool:
    """Whether ``exc``, raised importing ``--plugin name``, says that ``name`` (or a
    package above it) is no module, or is no module name at all; not that something
    the module imports is missing."""
    if isinstance(exc, ModuleNotFoundError):
        parts = name.split(".")
        return exc.name in {".".join(parts[: i + 1]) for i in range(len(parts))}
    return not_a_module_name(name) is not None  # a file's path (_import_explicit)


def _ship_by_value(module: ModuleType) -> None:
    """Send an explicitly loaded module's code to Ray workers, which may not import it."""
    from ray import cloudpickle

    # A module missing from sys.modules (built on the fly) cannot be shipped; its
    # strategies then pickle by value anyway, or fail with Ray's own message.
    with contextlib.suppress(ValueError):
        cloudpickle.register_pickle_by_value(module)


def get_plugin_manager(
    *,
    autoload: bool | None = None,
    extra_plugins: Iterable[ModuleType | object | str] = (),
    disable: Iterable[str] = (),
) -> PluginHost:
    """Build a plugin manager with every plugin registered and the registries filled.

    Args:
        autoload: Load plugins from the ``graftune`` entry-point group. Defaults
            to true unless ``GRAFTUNE_DISABLE_PLUGIN_AUTOLOAD`` is set.
        extra_plugins: Modules, objects or dotted module names to register as
            well (``graftune run --plugin``, tests).
        disable: Plugin names to block (an entry point's name, or ``graftune.data``
            / ``graftune.bases`` for the host's own); a blocked plugin behaves as absent.

    Returns:
        The host, with its strategy, data-source and base registries.

    Raises:
        PluginLoadError: A plugin failed to import (names entry point and distribution).
        DuplicateNameError: Two plugins registered one name.
        PluginError: A hook implementation does not match its specification.
    """
    from orchestrator.bases import BaseProvider
    from orchestrator.data import DataSource
    from orchestrator.strategy import Strategy

    disable = tuple(disable)
    off = autoload_disabled() if autoload is None else None
    if autoload is None:
        autoload = off is None
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in disable:
        pm.set_blocked(name)
    owners: dict[str, str] = {}
    distributions: dict[str, tuple[str, str]] = {}
    unmarked: list[tuple[str, str]] = []  # (plugin, hook) defined without @hookimpl
    heavy: dict[str, float | None] = {}  # plugins whose import imports TensorFlow/Keras

    for name, module_name in HOST_PLUGINS.items():
        if not pm.is_blocked(name):
            pm.register(importlib.import_module(module_name), name=name)
            owners[name] = f"{name} (graftune)"

    if autoload:
        for ep in _entry_points(pm.is_blocked):
            if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
                continue
            dist_label = _dist_label(ep)
            light = not _heavy_imported()
            began = time.monotonic()
            try:
                plugin = ep.load()
            except PLUGIN_FAULTS as exc:  # a module that exits took graftune with it
                raise PluginLoadError(ep.name, ep.value, dist_label, exc) from exc
            owner = f"{ep.name} ({dist_label})"
            seen = (owner, ep.value)  # (found by QA: another module under one name, stale)
            if light and _heavy_imported():
                _HEAVY_SEEN[seen] = time.monotonic() - began
            elif _holds_heavy(plugin):  # another plugin, or graftune, imported it first
                _HEAVY_SEEN.setdefault(seen, None)
            if seen in _HEAVY_SEEN:
                heavy[owner] = _HEAVY_SEEN[seen]
            unmarked += _register(pm, plugin, ep.name, dist_label)
            if ep.dist is not None:
                distributions[ep.name] = (ep.dist.name, ep.dist.version)
            owners[ep.name] = f"{ep.name} ({dist_label})"

    explicit: list[str] = []
    for extra in extra_plugins:
        if isinstance(extra, str):
            explicit.append(extra)
            if pm.is_blocked(extra):
                continue  # its code does not run either
            try:
                plugin = _import_explicit(extra)
            except PLUGIN_FAULTS as exc:
                error = PluginLoadError(extra, extra, None, exc)
                if _names_no_module(extra, exc):
                    # A --plugin name with a typo, or a file's path: the command line is
                    # wrong (exit 2), not the plugin's code (a missing dependency is).
                    error.exit_status = 2
                raise error from exc
            name = extra
        else:
            plugin = extra
            # An object by its class's name (found by QA: "<Spy object at 0x7f...>"),
            # numbered where two objects of one class are given.
            name = called = getattr(extra, "__name__", None) or type(extra).__name__
            number = 1
            while pm.get_plugin(name) is not None and pm.get_plugin(name) is not extra:
                number += 1
                name = f"{called}#{number}"
            if isinstance(extra, int | float | bool | bytes | type(None) | list | tuple | dict):
                # Found by QA: plugins=[42] was taken, and nothing said.
                raise PluginError(
                    f"plugin {extra!r} ({type(extra).__name__}) is no plugin: give a module, its "
                    "dotted name, or an object whose methods are hook implementations"
                )
        if pm.is_blocked(name):
            continue
        known = pm.get_name(plugin)
        if known is not None:  # --plugin of a module an entry point has loaded already
            log.info("plugin %s is loaded already, as %s", name, owners.get(known, known))
            continue
        log.warning("loading plugin %s explicitly (not installed): code from it will run", name)
        unmarked += _register(pm, plugin, name, "(not installed)")
        owners[name] = f"{name} (not installed)"
        if isinstance(plugin, ModuleType):
            _ship_by_value(plugin)

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginError(
            f"plugin {owners.get(name, name)} is invalid: {_one_line(exc)}"
            f"{_hook_hint(pm, exc.plugin)}",
            plugin=name,
        ) from None  # pluggy's check: no code of the plugin ran (no traceback to offer)

    host = PluginHost(
        pm=pm,
        strategies=Registry("strategy", "name", Strategy),
        data_sources=Registry("data source", "scheme", DataSource),
        bases=Registry("base provider", "name", BaseProvider),
        owners=owners,
        distributions=distributions,
        explicit=tuple(explicit),
        heavy_imports=heavy,
    )
    for registry in (host.strategies, host.data_sources, host.bases):
        # Found by QA: predict of a run whose recipe disabled a data source said "no
        # installed plugin provides it", and `graftune plugins` listed it.
        registry.disabled = disable
    if not autoload:
        for registry in (host.strategies, host.data_sources, host.bases):
            registry.why_missing = (
                f"{off or 'autoload=False'}: plugins installed by entry point, the "
                "built-in strategies among them, are not loaded"
            )
    hooks = {
        "graftune_register_strategies": host.strategies,
        "graftune_register_data_sources": host.data_sources,
        "graftune_register_bases": host.bases,
    }
    for owner, hook in unmarked:
        if hook in hooks and hooks[hook].why_missing is None:  # found by QA
            hooks[hook].why_missing = (
                f"no installed plugin provides it; plugin {owner} defines {hook} without "
                "@hookimpl, so it is ignored"
            )
    for hook, registry in hooks.items():
        _fill(host, hook, registry)
    return host


def _register(
    pm: pluggy.PluginManager, plugin: object, name: str, dist_label: str
) -> list[tuple[str, str]]:
    """Register ``plugin``; returns its hooks defined without ``@hookimpl``, with its owner."""
    owner = f"{name} ({dist_label.strip('()')})"  # as the other plugin errors name it
    _refuse_a_class(plugin, owner, name)
    unmarked = _warn_unmarked_hooks(plugin, owner)
    earlier = pm.get_name(plugin)
    if earlier is not None:  # pluggy's own message lists every plugin registered
        what = getattr(plugin, "__name__", repr(plugin))
        raise PluginError(
            f"plugin {owner} cannot be registered: {what} is registered already as plugin "
            f"{earlier!r}; an entry point (or --plugin) may name a module only once, so "
            "remove one of the two",
            plugin=name,
        )
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(
            f"plugin {owner} is invalid: {_one_line(exc)}{_arguments_hint(pm, exc)}", plugin=name
        ) from None  # as above
    except ValueError as exc:
        raise PluginError(f"plugin {owner} cannot be registered: {exc}", plugin=name) from exc
    implemented = pm.get_hookcallers(plugin) or []
    if not implemented and not unmarked and not isinstance(plugin, ModuleType):
        # Found by QA: graftune_register(AStrategyClass) registered nothing, unsaid. (A
        # module may add by being imported: Keras objects it registers, for a model.)
        log.warning(
            "plugin %s implements no graftune hook (@hookimpl def graftune_...): it adds nothing",
            owner,
        )
    for caller in implemented:
        _warn_catch_all_arguments(caller, plugin, owner)
    return unmarked


def _refuse_a_class(plugin: object, owner: str, name: str) -> None:
    """A class given as a plugin: its hooks are methods, which pluggy would call
    without an instance (found by QA: "missing 1 required positional argument:
    'self'", from a plugin the start-up check took), or a strategy class, which is
    no plugin."""
    if not inspect.isclass(plugin):
        return
    from orchestrator.strategy import Strategy

    if issubclass(plugin, Strategy):
        raise PluginError(
            f"plugin {owner} is the strategy class {plugin.__name__}, not a plugin: a "
            "plugin registers it in its graftune_register_strategies hook "
            f"(registry.add({plugin.__name__})); give that plugin's module or object",
            plugin=name,
        )
    methods = [
        hook
        for hook in dir(plugin)
        if hook.startswith(f"{PROJECT}_")
        and inspect.isfunction(inspect.getattr_static(plugin, hook))
    ]
    if methods:
        raise PluginError(
            f"plugin {owner} is the class {plugin.__name__}, whose hooks ({', '.join(methods)}) "
            "are methods, called on an instance: name an instance of it (an entry point "
            f"'module:plugin' with plugin = {plugin.__name__}()), or the module whose "
            "functions are the hooks",
            plugin=name,
        )


def _warn_catch_all_arguments(caller: Any, plugin: object, owner: str) -> None:
    """Say so when a plugin's hook takes ``*args`` or ``**kwargs``: pluggy passes a
    hook only the arguments it names, so they stay empty (found by QA: a reporter's
    ``graftune_trial_finished(self, **kwargs)`` recorded nothing, unsaid)."""
    for impl in caller.get_hookimpls():
        if impl.plugin is not plugin:
            continue
        try:
            parameters = inspect.signature(impl.function).parameters.values()
        except (TypeError, ValueError):
            continue
        catch_all = [
            ("*" if p.kind is p.VAR_POSITIONAL else "**") + p.name
            for p in parameters
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if catch_all:
            takes = ", ".join(caller.spec.argnames) if caller.spec else "its arguments"
            log.warning(
                "plugin %s's %s takes %s, which stays empty: pluggy passes a hook only the "
                "arguments it names (%s takes: %s, or fewer of them)",
                owner,
                caller.name,
                " and ".join(catch_all),
                caller.name,
                takes,
            )


def _warn_unmarked_hooks(plugin: object, owner: str) -> list[tuple[str, str]]:
    """Say so when a plugin defines a hook's function without ``@hookimpl``:
    pluggy then ignores it, and the plugin seems to add nothing. Returns them."""
    unmarked = []
    for hook in dir(hookspecs):
        if hook.startswith("graftune_"):
            function = getattr(plugin, hook, None)
            if callable(function) and not hasattr(function, f"{PROJECT}_impl"):
                log.warning(
                    "plugin %s defines %s without @hookimpl (from orchestrator import "
                    "hookimpl): it is ignored",
                    owner,
                    hook,
                )
                unmarked.append((owner, hook))
    return unmarked


def _hook_hint(pm: pluggy.PluginManager, plugin: object) -> str:
    """The hint for a plugin's hook that no specification names: the closest
    graftune hook (``" (did you mean graftune_...?)"``), or the list of them."""
    known = [name for name in dir(hookspecs) if name.startswith(f"{PROJECT}_")]
    for name, caller in vars(pm.hook).items():
        if caller.has_spec() or not any(i.plugin is plugin for i in caller.get_hookimpls()):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        return (
            f" (did you mean {close[0]}?)" if close else f" (graftune's hooks: {', '.join(known)})"
        )
    return ""


def _arguments_hint(pm: pluggy.PluginManager, exc: BaseException) -> str:
    """The arguments a hook takes, for a hook implementation that names others
    (pluggy says which it cannot find, not which there are; found by QA)."""
    import re

    hook = re.search(r"for hook '(\w+)'", str(exc))
    caller = getattr(pm.hook, hook.group(1), None) if hook else None
    if caller is None or not caller.has_spec() or "can not be found" not in str(exc):
        return ""
    return f" ({hook.group(1)} takes: {', '.join(caller.spec.argnames)}, or fewer of them)"


def _one_line(exc: BaseException) -> str:
    """Pluggy's validation message, which spans lines, as one."""
    return " ".join(str(exc).split())


def _fill(host: PluginHost, hook_name: str, registry: Registry) -> None:
    caller = getattr(host.pm.hook, hook_name)
    # Hook implementations are called one by one so each addition is credited to its plugin.
    for impl in reversed(caller.get_hookimpls()):
        registry.current_owner = host.owners.get(impl.plugin_name, impl.plugin_name)
        try:
            # pluggy's rule: an implementation may take fewer arguments than its spec.
            returned = impl.function(
                **({"registry": registry} if "registry" in impl.argnames else {})
            )
        except PluginError as exc:
            # What registry.add refused is this plugin's doing (graftune plugins lists the
            # others without it); a name two plugins register is neither's alone.
            if exc.plugin is None and not isinstance(exc, DuplicateNameError):
                exc.plugin = impl.plugin_name
            raise
        except GraftuneError:
            raise
        except PLUGIN_FAULTS as exc:
            raise PluginError(
                f"plugin {registry.current_owner} failed in {hook_name}: {raised(exc)}",
                plugin=impl.plugin_name,
            ) from exc
        if returned is not None:  # pluggy keeps it; graftune adds only what add() is given
            if registry.why_missing is None:  # an unknown name links back to it (found by QA)
                registry.why_missing = (
                    f"no installed plugin provides it; plugin {registry.current_owner} "
                    f"returned {ellipsized(repr(returned), 80)} from {hook_name}, which is "
                    f"ignored: call registry.add(...) for each {registry.kind} instead"
                )
            log.warning(
                "plugin %s returned %s from %s, which is ignored: call registry.add(...) "
                "for each %s instead",
                registry.current_owner,
                ellipsized(repr(returned), 120),
                hook_name,
                registry.kind,
            )
    registry.current_owner = "<unknown>"
