"""Registries the ``graftune_register_*`` hooks add to.

A registry maps a name (a strategy's ``name``, a data source's ``scheme``, a
base provider's ``name``) to the class that implements it, and remembers which
plugin added it, so that two plugins claiming one name is a start-up error
naming both.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from orchestrator.errors import DuplicateNameError, PluginError, did_you_mean

T = TypeVar("T")

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered item and the plugin that added it."""

    name: str
    item: T
    owner: str


class Registry(Generic[T]):
    """Name -> class, filled by one kind of registration hook.

    Args:
        kind: What is registered, for messages ("strategy", "data source", ...).
        key_attr: The class attribute that holds the name (``name`` or ``scheme``).
        base_class: The class every registered item must subclass, if any.
    """

    def __init__(self, kind: str, key_attr: str = "name", base_class: type | None = None):
        self.kind = kind
        self.key_attr = key_attr
        self.base_class = base_class
        self._entries: dict[str, Entry[T]] = {}
        #: Set by the plugin manager while one plugin's hook implementation runs.
        self.current_owner: str = "<unknown>"
        #: Why a name may be missing, said in place of "no installed plugin provides it"
        #: (set by the plugin manager when it loaded no installed plugin).
        self.why_missing: str | None = None
        #: The plugins blocked where the host was made (a recipe's ``plugins.disable``,
        #: a run's for its predict or export), which an unknown name's error names.
        self.disabled: tuple[str, ...] = ()

    def add(self, item: T, *, name: str | None = None) -> T:
        """Register ``item`` under its name attribute (or ``name``).

        Returns the item, so the method can be used as a class decorator.

        Raises:
            DuplicateNameError: If another plugin registered that name already.
            PluginError: If the item has no valid snake_case name or the wrong base class.
        """
        key = name if name is not None else getattr(item, self.key_attr, None)
        label = getattr(item, "__qualname__", repr(item))
        named = isinstance(key, str) and bool(_NAME_RE.match(key))
        if self.base_class is not None and not (
            isinstance(item, type) and issubclass(item, self.base_class)
        ):
            # Before the name: a dict or a function has none, and its type is what is
            # wrong (found by QA). graftune makes an instance of the class where it
            # needs one (in each worker).
            what = (
                ""
                if isinstance(item, type)
                else f" (registered an instance of {type(item).__name__}: add the class itself)"
            )
            raise PluginError(
                f"{self.kind} {key if named else label!r} from {self.current_owner} must be a "
                f"class that subclasses "
                f"{self.base_class.__module__}.{self.base_class.__qualname__}{what}"
            )
        if not named:
            raise PluginError(
                f"{self.kind} {label} from {self.current_owner} needs a snake_case "
                f"{self.key_attr!r} attribute, got {key!r}"
            )
        existing = self._entries.get(key)
        if existing is not None and existing.item is not item:
            raise DuplicateNameError(
                f"two plugins register the {self.kind} {key!r}: {existing.owner} and "
                f"{self.current_owner}; uninstall or disable one of them"
            )
        self._entries[key] = Entry(key, item, self.current_owner)
        return item

    def get(self, name: str) -> T:
        """Return the item registered under ``name``.

        Raises:
            KeyError: With a message listing what is available and a suggestion.
        """
        try:
            return self._entries[name].item
        except KeyError:
            raise KeyError(self.unknown_message(name, self.disabled)) from None

    def unknown_message(self, name: str, disabled: Sequence[str] = ()) -> str:
        """What to say of a name nothing registered, ``disabled`` being the plugins
        the recipe's ``plugins.disable`` blocks (``graftune plugins`` still lists them)."""
        available = ", ".join(sorted(self._entries)) or "none"
        suggestion = did_you_mean(name, self._entries)
        # No near name: most likely a plugin that is not installed (here, or any more).
        missing = self.why_missing or "no installed plugin provides it: `graftune plugins`"
        if name in disabled:
            # What the user did, not a near name another plugin has (found by QA).
            missing, suggestion = f"the recipe's plugins.disable removes the plugin {name!r}", ""
        elif disabled:
            missing += f", or a plugin the recipe's plugins.disable removes: {', '.join(disabled)}"
        # A near name alone is likely a typo; what the recipe or the environment removed
        # is said beside it (found by QA: it was lost to the suggestion).
        said = not suggestion or disabled or self.why_missing
        installed = f" ({missing})" if said else ""
        return f"unknown {self.kind} {name!r}{suggestion}{installed}; available: {available}"

    def owner(self, name: str) -> str:
        return self._entries[name].owner

    def is_builtin(self, name: str) -> bool:
        """Whether ``name`` is graftune's own (its class is defined in ``orchestrator``),
        not a third-party plugin's, whose results graftune checks against the contract."""
        item = self.get(name)
        return (item if isinstance(item, type) else type(item)).__module__.startswith(
            "orchestrator."
        )

    def entries(self) -> list[Entry[T]]:
        return [self._entries[k] for k in sorted(self._entries)]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: Any) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
