"""Search-space types, free of any tuning framework.

Strategies declare their dimensions with these types; recipes override or
narrow them with a small YAML syntax (see :func:`parse_dimension`); the search
backends translate them into their own objects.

Recipe syntax::

    head_width: {choice: [64, 128, 256]}
    lambda: {loguniform: [1.0e-6, 1.0e-1]}
    learning_rate: {float: [1.0e-4, 1.0e-2]}
    frozen_layers: {int: [0, all]}       # "all" is the base's number of cut points
    hidden_layers: 2                     # a plain value is fixed
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any, Literal

from orchestrator.errors import first_few, written

#: The symbolic upper bound of an :class:`Int` resolved against the base at run time.
ALL = "all"

#: The whole numbers a space may hold: 64-bit ones, as a leaderboard column (pandas'
#: ``Int64``), keras-tuner and a model's layer sizes keep them.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def int_problem(value: Any) -> str | None:
    """Why ``value`` is a whole number no space can hold (beyond 64 bits), or ``None``."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if whole and not INT64_MIN <= value <= INT64_MAX:
        return f"whole numbers must fit in 64 bits (-2**63 to 2**63 - 1), got {value}"
    return None


@dataclass(frozen=True)
class Int:
    """An integer in ``[low, high]``, both ends included.

    ``high`` may be ``"all"``: the number of cut points of the base, known once
    the base is prepared.
    """

    low: int
    high: int | Literal["all"]

    def resolve(self, all_value: int | None) -> Int:
        """Replace a symbolic ``"all"`` bound by ``all_value``."""
        if self.high == ALL:
            if all_value is None:
                raise ValueError("'all' needs a base whose layers can be counted")
            return Int(min(self.low, all_value), all_value)
        return self

    def describe(self) -> str:
        return f"int [{self.low}, {self.high}]"


@dataclass(frozen=True)
class Float:
    """A float drawn uniformly from ``[low, high]``."""

    low: float
    high: float

    def resolve(self, all_value: int | None) -> Float:
        return self

    def describe(self) -> str:
        return f"float [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class LogFloat:
    """A positive float drawn uniformly on a log scale from ``[low, high]``."""

    low: float
    high: float

    def resolve(self, all_value: int | None) -> LogFloat:
        return self

    def describe(self) -> str:
        return f"loguniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Choice:
    """One of a list of values (a tuple; a list is taken as one, as keras-tuner's
    ``hp.Choice`` takes it)."""

    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        if isinstance(self.values, list):  # found by QA: refused, though what anyone writes
            object.__setattr__(self, "values", tuple(self.values))

    def resolve(self, all_value: int | None) -> Choice:
        """Replace an ``"all"`` among the values by ``all_value`` (once, in its place)."""
        if not any(_is_all(v) for v in self.values):
            return self
        if all_value is None:
            raise ValueError("'all' needs a base whose layers can be counted")
        values = [all_value if _is_all(v) else v for v in self.values]
        return Choice(tuple(dict.fromkeys(values)))  # [0, 5, all] of 5 cut points: 5 once

    def describe(self) -> str:
        # The first few: a choice of 5000 numbers made an error message of 39 KB.
        return "choice [" + first_few([written(v) for v in self.values[:11]], 10) + "]"


@dataclass(frozen=True)
class Fixed:
    """A value that is not searched."""

    value: Any

    def resolve(self, all_value: int | None) -> Fixed:
        if _is_all(self.value):
            if all_value is None:
                raise ValueError("'all' needs a base whose layers can be counted")
            return Fixed(all_value)
        return self

    def describe(self) -> str:
        return f"fixed {written(self.value)}"


Dimension = Int | Float | LogFloat | Choice | Fixed
DIMENSION_TYPES: tuple[type, ...] = (Int, Float, LogFloat, Choice, Fixed)
#: The keys of the recipe syntax, in the order they are documented.
SYNTAX_KEYS = ("int", "float", "loguniform", "choice")


def _is_all(value: Any) -> bool:
    # Compared as a string only: a value of another type may define == oddly.
    return isinstance(value, str) and value == ALL


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {written(value)}{_text_number_hint(value)}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return float(value)


def _text_number_hint(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    mantissa, e, exponent = value.strip().lower().partition("e")
    if e and ("." not in mantissa or exponent[:1] not in ("-", "+")):
        # YAML 1.1 (PyYAML) reads 1e-6 and 1.0e6 as text; only 1.0e-6 and 1.0e+6 are floats.
        if "." not in mantissa:
            mantissa += ".0"
        if exponent[:1] not in ("-", "+"):
            exponent = f"+{exponent}"
        return (
            f" (YAML reads {value} as text; write it with a decimal point and a signed "
            f"exponent: {mantissa}e{exponent})"
        )
    return f" (YAML reads {value!r} in quotes as text; write {value.strip()} without quotes)"


#: Ray Tune's (and keras-tuner's) names for graftune's space types: 'uniform' was
#: told "did you mean 'loguniform'?", a log scale where a linear one was meant.
_OTHER_NAMES = {
    "uniform": "float",
    "quniform": "float",
    "randint": "int",
    "qrandint": "int",
    "integer": "int",
    "categorical": "choice",
    "grid_search": "choice",
    "qloguniform": "loguniform",
}


def parse_dimension(raw: Any) -> Dimension:
    """Turn one recipe entry into a dimension.

    Args:
        raw: A mapping with one key of :data:`SYNTAX_KEYS`, or a plain value.

    Returns:
        The dimension.

    Raises:
        ValueError: With a message saying what was expected.
    """
    if not isinstance(raw, dict):
        if isinstance(raw, list):
            raise ValueError(
                "expected a plain value or one of {int: [low, high]}, {float: [low, high]}, "
                "{loguniform: [low, high]}, {choice: [...]}; got a list (write {choice: [...]})"
            )
        problem = int_problem(raw)
        if problem:
            raise ValueError(problem)
        return Fixed(raw)
    if len(raw) != 1:
        raise ValueError(
            f"expected exactly one of {', '.join(SYNTAX_KEYS)}; got keys {sorted(map(str, raw))}"
        )
    ((kind, args),) = raw.items()
    if kind not in SYNTAX_KEYS:
        from orchestrator.errors import did_you_mean

        ours = _OTHER_NAMES.get(str(kind).lower())
        hint = f" (graftune calls it {ours!r})" if ours else ""
        raise ValueError(
            f"unknown space type {kind!r}{hint or did_you_mean(kind, SYNTAX_KEYS)}; "
            f"expected one of {', '.join(SYNTAX_KEYS)}"
        )
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ValueError("choice expects a non-empty list of values")
        seen: dict[Any, Any] = {}
        for value in args:
            problem = int_problem(value)
            if problem:
                raise ValueError(f"choice values: {problem}")
            if choice_identity(value) in seen:
                first = written(seen[choice_identity(value)])
                same = "" if first == written(value) else f" ({first} and {written(value)} are one)"
                raise ValueError(
                    f"choice lists the value {first} twice{same}; list each value once "
                    "(a grid would run it twice, keras-tuner once)"
                )
            seen[choice_identity(value)] = value
        return Choice(tuple(args))
    if not isinstance(args, list) or len(args) != 2:
        raise ValueError(f"{kind} expects a list [low, high]; got {written(args)}")
    low, high = args
    problem = int_problem(low) or int_problem(high)
    if problem:
        raise ValueError(f"{kind} bounds: {problem}")
    if kind == "int":
        if isinstance(low, bool) or not isinstance(low, int):
            where = " ('all' may be the high bound only)" if low == ALL else ""
            raise ValueError(f"int low bound must be an integer{where}, got {written(low)}")
        if high == ALL:
            if low < 0:
                raise ValueError(f"int low bound must be >= 0 with 'all', got {low}")
            return Int(low, ALL)
        if isinstance(high, bool) or not isinstance(high, int):
            raise ValueError(f"int high bound must be an integer or 'all', got {written(high)}")
        if low > high:
            raise ValueError(f"int bounds must have low <= high, got [{low}, {high}]")
        return Int(low, high)
    lo = _number(low, f"{kind} low bound")
    hi = _number(high, f"{kind} high bound")
    if lo > hi:
        raise ValueError(f"{kind} bounds must have low <= high, got [{low}, {high}]")
    if kind == "loguniform":
        if lo <= 0:
            raise ValueError(f"loguniform bounds must be > 0, got [{low}, {high}]")
        return LogFloat(lo, hi)
    return Float(lo, hi)


def check_compatible(name: str, default: Dimension, override: Dimension) -> None:
    """Check that a recipe's override fits the kind of value a strategy expects.

    An integer dimension stays integer (so ``frozen_layers`` cannot become 2.5),
    a numeric one numeric, a positive log-scaled one positive, and a choice keeps
    the kinds of value its default offers (numbers, text, true/false). ``"all"``
    stands for a number of layers, so only integer dimensions take it.

    Raises:
        ValueError: When the override cannot stand in for the default.
    """
    kinds = _kinds(default)
    positive = isinstance(default, LogFloat)
    if uses_all(override) and not isinstance(default, Int):
        raise ValueError(
            f"'all' (the base's number of cut points) only fits whole-number dimensions, "
            f"and {name} is {default.describe()}; got {override.describe()}"
        )
    if kinds is None:
        return
    values = _sample_values(override)
    # A log scale cannot reach 0 (loguniform refuses it), but 0 itself, fixed, listed or
    # the end of a uniform range (lambda: 0, no penalty), is a value like any other:
    # the strategy's check_value says whether it takes it.
    fits = all(_kind(v) in kinds and not (positive and v < 0) for v in values) and not (
        isinstance(override, (Float, LogFloat)) and "float" not in kinds
    )
    if not fits:
        below = [v for v in values if positive and _kind(v) in ("int", "float") and v < 0]
        hint = f" ({below[0]} is below 0)" if below and not isinstance(override, Fixed) else ""
        hint = hint or next((h for h in map(_text_number_hint, values) if h), "")
        if not hint and isinstance(default, Int):
            # Found by QA: 'ALL' and 'alll' were told "whole numbers", not that 'all' is
            # taken (the base's number of cut points).
            spelt = [
                v
                for v in values
                if isinstance(v, str) and get_close_matches(v.strip().lower(), [ALL], cutoff=0.7)
            ]
            hint = (
                " (or 'all', the base's number of cut points: did you mean 'all'?)" if spelt else ""
            )
        raise ValueError(
            f"{name} takes {_describe_kinds(kinds, positive)}; got {override.describe()}{hint}"
        )


def uses_all(dim: Dimension) -> bool:
    """Whether ``dim`` refers to the base's number of cut points (``"all"``)."""
    if isinstance(dim, Int):
        return _is_all(dim.high)
    if isinstance(dim, Choice):
        return any(_is_all(v) for v in dim.values)
    return isinstance(dim, Fixed) and _is_all(dim.value)


_KIND_WORDS = {"bool": "true or false", "int": "whole numbers", "float": "numbers", "str": "text"}


def _kind(value: Any) -> str | None:
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if isinstance(value, types):
            return kind
    return None


def _kinds(default: Dimension) -> set[str] | None:
    """The kinds of value ``default`` takes, or ``None`` when they are not known."""
    if isinstance(default, Int) or (isinstance(default, Fixed) and _is_all(default.value)):
        return {"int"}
    if isinstance(default, (Float, LogFloat)):
        return {"int", "float"}
    values = default.values if isinstance(default, Choice) else (default.value,)
    kinds = {_kind(v) for v in values}
    if None in kinds:
        return None
    if "float" in kinds:
        kinds.add("int")
    return kinds  # type: ignore[return-value]


def _describe_kinds(kinds: set[str], positive: bool) -> str:
    words = [
        w for k, w in _KIND_WORDS.items() if k in kinds and not (k == "int" and "float" in kinds)
    ]
    text = " or ".join(words)
    # 0 is taken (lambda: 0, no penalty), and the strategy's check_value may refuse it:
    # "of 0 or more" was said of learning_rate, which refuses 0 (found by QA).
    return f"{text} (none below 0)" if positive else text


def _sample_values(dim: Dimension) -> list[Any]:
    if isinstance(dim, Choice):
        return [v for v in dim.values if not _is_all(v)]
    if isinstance(dim, Fixed):
        return [] if _is_all(dim.value) else [dim.value]
    if isinstance(dim, Int):
        return [dim.low] + ([] if _is_all(dim.high) else [dim.high])
    return [dim.low, dim.high]


def merge_spaces(
    defaults: dict[str, Dimension],
    shared: dict[str, Dimension],
    own: dict[str, Dimension],
) -> dict[str, Dimension]:
    """Apply the recipe's shared and per-strategy overrides to a strategy's defaults.

    Shared entries apply only to dimensions the strategy declares; per-strategy
    entries win over shared ones. Unknown per-strategy keys are the caller's to
    reject (the recipe checker does, with a suggestion).
    """
    merged = dict(defaults)
    for source in (shared, own):
        for key, dim in source.items():
            if key in defaults:
                merged[key] = dim
    return merged


def extremes(dim: Dimension) -> tuple[Any, ...]:
    """The values that stand for what ``dim`` can give: a fixed value, every choice,
    both ends of a range (``"all"`` left out: the base's count, known later)."""
    return tuple(v for v in _sample_values(dim) if not _is_all(v))


def outside_cut_points(given: Dimension, cuts: int) -> list[Any]:
    """The values of ``given``, a recipe's dimension of a count of cut points (one
    its strategy declares with ``all``), that no base of ``cuts`` cut points has.

    ``int: [LOW, all]`` with ``LOW`` above ``cuts`` counts: resolving would
    narrow it to ``[cuts, cuts]``, which is not what the recipe asked for.
    """
    if isinstance(given, Int) and _is_all(given.high) and given.low > cuts:
        return [given.low]
    values = extremes(given.resolve(cuts))
    return [
        v for v in values if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= cuts
    ]


def resolve_space(space: dict[str, Dimension], all_value: int | None) -> dict[str, Dimension]:
    """Resolve every symbolic ``"all"`` bound against the base's number of cut points."""
    return {key: dim.resolve(all_value) for key, dim in space.items()}


def smallest_config(space: dict[str, Dimension]) -> dict[str, Any]:
    """A concrete configuration with the smallest value of every dimension.

    A choice of numbers gives its smallest number; any other choice its first
    value. Used by conformance checks and ``validate`` to build a model cheaply.
    """
    config: dict[str, Any] = {}
    for key, dim in space.items():
        if isinstance(dim, Fixed):
            config[key] = dim.value
        elif isinstance(dim, Choice):
            numeric = all(_kind(v) in ("int", "float") for v in dim.values)
            config[key] = min(dim.values) if numeric else dim.values[0]
        else:
            config[key] = dim.low
    return config


def contains(dim: Dimension, value: Any) -> bool:
    """Whether ``value`` is one of the values ``dim`` can take."""
    if isinstance(dim, (Fixed, Choice)):
        # True == 1 in Python: numbers do not stand for true/false, nor the reverse.
        values = dim.values if isinstance(dim, Choice) else (dim.value,)
        return any(_number_kind(value) == _number_kind(v) and value == v for v in values)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(dim, Int):
        return isinstance(value, int) and dim.low <= value <= int(dim.high)
    return dim.low <= value <= dim.high


def middle(dim: Dimension) -> Any:
    """The value a search starts from when nothing better is known.

    A fixed value; a choice's first value (as in keras-tuner, whose choices
    default to their first value: the author's order); a range's middle, on a
    log scale for ``loguniform``, rounded down for integers.
    """
    if isinstance(dim, Fixed):
        return dim.value
    if isinstance(dim, Choice):
        return dim.values[0]
    if isinstance(dim, Int):
        return (dim.low + int(dim.high)) // 2
    if isinstance(dim, LogFloat):
        return math.sqrt(dim.low * dim.high)
    return (dim.low + dim.high) / 2


def start_config(space: dict[str, Dimension], preferred: dict[str, Any]) -> dict[str, Any]:
    """The configuration a search runs first: the strategy's defaults, where the space allows.

    Args:
        space: The resolved space the search runs over (after the recipe's overrides).
        preferred: The strategy's :meth:`~orchestrator.strategy.Strategy.default_config`;
            ``"all"`` stands for an integer dimension's upper bound.

    Returns:
        One value per dimension: the preferred one where the (possibly narrowed)
        dimension takes it, else the dimension's :func:`middle`.
    """
    config = {}
    for key, dim in space.items():
        if isinstance(dim, Fixed):
            config[key] = dim.value
            continue
        value = preferred.get(key, _MISSING)
        if _is_all(value) and isinstance(dim, Int):
            value = int(dim.high)
        config[key] = value if value is not _MISSING and contains(dim, value) else middle(dim)
    return config


_MISSING = object()


def choice_identity(value: Any) -> Any:
    """What makes two choice values one: numbers by value (16 is 16.0), the rest by repr."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ("number", value)
    return (type(value).__name__, repr(value))


def single_value(dim: Dimension) -> bool:
    """Whether ``dim`` can give one value only: fixed, or a choice of one value, or a
    range whose ends are equal (found by QA: ``{int: [2, 2]}`` trained repeats to the
    same scores, without the note a fixed value gets)."""
    if isinstance(dim, Fixed):
        return True
    if isinstance(dim, Choice):
        return len(set(map(choice_identity, dim.values))) == 1
    return dim.low == dim.high


def grid_sizes(space: dict[str, Dimension]) -> dict[str, int]:
    """How many values a grid over ``space`` lists for each dimension it lists: every
    value of a choice (``all`` is one), every integer of a range; a continuous
    dimension is sampled, not listed, and a range up to ``all`` is left out (the
    base's cut points, not known before it is made)."""
    sizes = {}
    for key, dim in space.items():
        if isinstance(dim, Choice):
            sizes[key] = len(dim.values)
        elif isinstance(dim, Int) and not _is_all(dim.high):
            sizes[key] = int(dim.high) - dim.low + 1
    return sizes


def distinct_configurations(space: dict[str, Dimension]) -> int | None:
    """How many configurations a space of discrete dimensions holds (``None``: continuous)."""
    count = 1
    for dim in space.values():
        if single_value(dim):
            continue
        if isinstance(dim, Choice):
            count *= len(set(map(choice_identity, dim.values)))
        elif isinstance(dim, Int):
            count *= int(dim.high) - dim.low + 1
        elif not isinstance(dim, Fixed):
            return None
    return count


def _number_kind(value: Any) -> str | None:
    kind = _kind(value)
    return "number" if kind in ("int", "float") else kind
