"""Tests of ``orchestrator.space`` and its translation into Ray Tune's search space."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from orchestrator.space import (
    ALL,
    Choice,
    Dimension,
    Fixed,
    Float,
    Int,
    LogFloat,
    check_compatible,
    contains,
    merge_spaces,
    middle,
    outside_cut_points,
    parse_dimension,
    resolve_space,
    smallest_config,
    start_config,
    uses_all,
)

# -- parse_dimension: every syntax ------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"int": [0, 5]}, Int(0, 5)),
        ({"int": [3, 3]}, Int(3, 3)),
        ({"int": [-2, 2]}, Int(-2, 2)),
        ({"int": [0, "all"]}, Int(0, ALL)),
        ({"int": [4, "all"]}, Int(4, ALL)),
        ({"float": [0.1, 0.9]}, Float(0.1, 0.9)),
        ({"float": [0, 1]}, Float(0.0, 1.0)),
        ({"float": [-1.5, -0.5]}, Float(-1.5, -0.5)),
        ({"float": [0.5, 0.5]}, Float(0.5, 0.5)),
        ({"loguniform": [1.0e-6, 1.0e-1]}, LogFloat(1e-6, 0.1)),
        ({"loguniform": [1, 10]}, LogFloat(1.0, 10.0)),
        ({"choice": [64, 128, 256]}, Choice((64, 128, 256))),
        ({"choice": ["relu", "gelu"]}, Choice(("relu", "gelu"))),
        ({"choice": [1]}, Choice((1,))),
        ({"choice": [None, 0.5, "x"]}, Choice((None, 0.5, "x"))),
        ({"choice": [1, True, "1", 0, False]}, Choice((1, True, "1", 0, False))),  # all differ
        (2, Fixed(2)),
        (0.25, Fixed(0.25)),
        ("relu", Fixed("relu")),
        ("all", Fixed(ALL)),
        (True, Fixed(True)),
        (None, Fixed(None)),
    ],
)
def test_parse_dimension_syntax(raw: Any, expected: Dimension) -> None:
    parsed = parse_dimension(raw)
    assert parsed == expected
    assert type(parsed) is type(expected)


def test_parsed_bounds_are_floats_for_float_dimensions() -> None:
    parsed = parse_dimension({"float": [0, 1]})
    assert isinstance(parsed, Float)
    assert isinstance(parsed.low, float) and isinstance(parsed.high, float)
    log = parse_dimension({"loguniform": [1, 10]})
    assert isinstance(log.low, float) and isinstance(log.high, float)


# -- parse_dimension: every error -------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ([1, 2], "got a list (write {choice: [...]})"),
        ([], "got a list"),
        ({}, "expected exactly one of int, float, loguniform, choice; got keys []"),
        ({"int": [0, 1], "float": [0, 1]}, "got keys ['float', 'int']"),
        # Ray Tune's name: 'loguniform' was suggested, a log scale (found by QA).
        ({"uniform": [1, 2]}, "unknown space type 'uniform' (graftune calls it 'float')"),
        ({"integer": [1, 2]}, "unknown space type 'integer' (graftune calls it 'int')"),
        ({"intt": [1, 2]}, "unknown space type 'intt' (did you mean 'int'?)"),
        ({"range": [1, 2]}, "expected one of int, float, loguniform, choice"),
        ({"choice": []}, "choice expects a non-empty list of values"),
        ({"choice": 5}, "choice expects a non-empty list of values"),
        ({"choice": None}, "choice expects a non-empty list of values"),
        ({"choice": [16, 32, 16]}, "choice lists the value 16 twice; list each value once"),
        ({"choice": [16, 16.0]}, "the value 16 twice (16 and 16.0 are one)"),
        ({"choice": ["a", True, "a"]}, "the value 'a' twice"),
        ({"choice": [True, False, True]}, "choice lists the value true twice;"),
        ({"int": [1, 2, 3]}, "int expects a list [low, high]; got [1, 2, 3]"),
        ({"int": 3}, "int expects a list [low, high]; got 3"),
        ({"float": [1]}, "float expects a list [low, high]"),
        ({"loguniform": "1e-3"}, "loguniform expects a list [low, high]"),
        ({"int": [1.5, 3]}, "int low bound must be an integer, got 1.5"),
        ({"int": [True, 3]}, "int low bound must be an integer, got true"),
        ({"int": ["0", 3]}, "int low bound must be an integer, got '0'"),
        ({"int": [0, 2.5]}, "int high bound must be an integer or 'all', got 2.5"),
        ({"int": [0, False]}, "int high bound must be an integer or 'all', got false"),
        ({"int": [0, "many"]}, "int high bound must be an integer or 'all', got 'many'"),
        ({"int": [3, 1]}, "int bounds must have low <= high, got [3, 1]"),
        ({"int": [-1, "all"]}, "int low bound must be >= 0 with 'all', got -1"),
        ({"float": [1, 0]}, "float bounds must have low <= high, got [1, 0]"),
        ({"float": ["a", 1]}, "float low bound must be a number, got 'a'"),
        ({"float": [0, None]}, "float high bound must be a number, got null"),
        ({"float": [True, 1]}, "float low bound must be a number, got true"),
        ({"float": [0, math.inf]}, "float high bound must be finite, got inf"),
        ({"float": [math.nan, 1]}, "float low bound must be finite, got nan"),
        ({"loguniform": [0, 1]}, "loguniform bounds must be > 0, got [0, 1]"),
        ({"loguniform": [-1.0, 1.0]}, "loguniform bounds must be > 0, got [-1.0, 1.0]"),
        ({"loguniform": [0.1, 0.01]}, "loguniform bounds must have low <= high"),
        ({"loguniform": [0.1, "all"]}, "loguniform high bound must be a number, got 'all'"),
        # PyYAML reads 1e-6 (no decimal point) as text: the message says so.
        ({"loguniform": ["1e-6", 0.1]}, "YAML reads 1e-6 as text"),
    ],
)
def test_parse_dimension_errors(raw: Any, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_dimension(raw)
    assert fragment in str(info.value)


# -- resolving "all" ---------------------------------------------------------------


def test_int_all_resolves_to_the_number_of_cut_points() -> None:
    assert Int(0, ALL).resolve(7) == Int(0, 7)
    assert Int(2, ALL).resolve(2) == Int(2, 2)
    assert Int(0, ALL).resolve(0) == Int(0, 0)
    # A low bound above the base's count is clamped rather than left empty.
    assert Int(5, ALL).resolve(3) == Int(3, 3)


def test_resolve_leaves_concrete_dimensions_alone() -> None:
    dims: list[Dimension] = [Int(1, 4), Float(0, 1), LogFloat(1e-3, 1), Choice((1, 2)), Fixed(3)]
    for dim in dims:
        assert dim.resolve(9) is dim
        assert dim.resolve(None) is dim


def test_fixed_all_resolves_and_needs_a_count() -> None:
    assert Fixed(ALL).resolve(12) == Fixed(12)
    with pytest.raises(ValueError, match="'all' needs a base"):
        Fixed(ALL).resolve(None)


def test_int_all_without_a_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="'all' needs a base whose layers can be counted"):
        Int(0, ALL).resolve(None)


def test_resolve_space_resolves_every_dimension() -> None:
    space: dict[str, Dimension] = {
        "frozen_layers": Int(0, ALL),
        "depth": Fixed(ALL),
        "width": Choice((8, 16)),
    }
    assert resolve_space(space, 5) == {
        "frozen_layers": Int(0, 5),
        "depth": Fixed(5),
        "width": Choice((8, 16)),
    }


def test_uses_all() -> None:
    assert uses_all(Int(0, ALL))
    assert uses_all(Fixed(ALL))
    assert not uses_all(Int(0, 3))
    assert not uses_all(Fixed(3))
    assert uses_all(Choice((0, "all")))
    assert not uses_all(Choice((0, 2)))
    assert not uses_all(Float(0, 1))


def test_all_in_a_choice_is_the_bases_count_once() -> None:
    """``frozen_layers: {choice: [0, 2, all]}`` was refused as not whole numbers."""
    check_compatible("frozen_layers", Int(0, ALL), Choice((0, 2, "all")))
    assert Choice((0, 2, "all")).resolve(5) == Choice((0, 2, 5))
    assert Choice((0, 2, "all")).resolve(2) == Choice((0, 2))
    assert Choice((0, 2)).resolve(None) == Choice((0, 2))
    with pytest.raises(ValueError, match="'all' needs a base"):
        Choice((0, "all")).resolve(None)
    with pytest.raises(ValueError, match="only fits whole-number dimensions"):
        check_compatible("head_width", Choice((64, 128)), Choice((64, "all")))
    assert outside_cut_points(Choice((0, 9, "all")), 5) == [9]
    # Found by QA: 'ALL' was told only "whole numbers".
    for spelt in ("ALL", "alll"):
        with pytest.raises(
            ValueError,
            match=rf"got fixed '{spelt}' \(or 'all', the base's number of cut points: did you mean 'all'\?\)",
        ):
            check_compatible("frozen_layers", Int(0, ALL), Fixed(spelt))
    with pytest.raises(ValueError, match=r"\('all' may be the high bound only\), got 'all'"):
        parse_dimension({"int": ["all", 1]})


def test_describe() -> None:
    assert Int(0, ALL).describe() == "int [0, all]"
    assert Int(1, 3).describe() == "int [1, 3]"
    assert Float(0.5, 2).describe() == "float [0.5, 2]"
    assert LogFloat(1e-6, 0.01).describe() == "loguniform [1e-06, 0.01]"
    assert Choice((64, "x")).describe() == "choice [64, 'x']"
    # As a recipe writes them (they read "choice [False, True]", Python's spelling).
    assert Choice((False, True)).describe() == "choice [false, true]"
    assert Fixed(True).describe() == "fixed true"
    assert Fixed("all").describe() == "fixed 'all'"


# -- merge_spaces ---------------------------------------------------------------------

DEFAULTS: dict[str, Dimension] = {
    "frozen_layers": Int(0, ALL),
    "head_width": Choice((64, 128, 256)),
    "lambda": LogFloat(1e-6, 1e-2),
}


def test_merge_spaces_without_overrides_keeps_the_defaults() -> None:
    merged = merge_spaces(DEFAULTS, {}, {})
    assert merged == DEFAULTS
    assert merged is not DEFAULTS


def test_merge_spaces_shared_applies_only_to_declared_dimensions() -> None:
    shared: dict[str, Dimension] = {"lambda": Fixed(1e-4), "hidden_layers": Int(1, 2)}
    merged = merge_spaces(DEFAULTS, shared, {})
    assert merged["lambda"] == Fixed(1e-4)
    assert "hidden_layers" not in merged
    assert merged["head_width"] == DEFAULTS["head_width"]
    assert list(merged) == list(DEFAULTS)


def test_merge_spaces_per_strategy_wins_over_shared() -> None:
    shared: dict[str, Dimension] = {"lambda": Fixed(1e-4), "head_width": Choice((512,))}
    own: dict[str, Dimension] = {"lambda": LogFloat(1e-5, 1e-3)}
    merged = merge_spaces(DEFAULTS, shared, own)
    assert merged["lambda"] == LogFloat(1e-5, 1e-3)
    assert merged["head_width"] == Choice((512,))
    assert merged["frozen_layers"] == Int(0, ALL)


def test_merge_spaces_ignores_unknown_own_keys() -> None:
    # Rejecting them (with a suggestion) is the recipe checker's job.
    merged = merge_spaces(DEFAULTS, {}, {"frozen_layer": Int(0, 1)})
    assert merged == DEFAULTS


def test_merge_spaces_does_not_change_its_inputs() -> None:
    defaults = dict(DEFAULTS)
    shared: dict[str, Dimension] = {"lambda": Fixed(0.1)}
    own: dict[str, Dimension] = {"head_width": Fixed(8)}
    merge_spaces(defaults, shared, own)
    assert defaults == DEFAULTS
    assert shared == {"lambda": Fixed(0.1)}
    assert own == {"head_width": Fixed(8)}


# -- check_compatible ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("default", "override"),
    [
        (Int(1, 3), Int(1, 2)),
        (Int(1, 3), Int(0, 10)),
        (Int(1, 3), Fixed(2)),
        (Int(1, 3), Choice((1, 3))),
        (Int(0, ALL), Int(0, ALL)),
        (Int(0, ALL), Int(2, 5)),
        (Int(0, ALL), Fixed(ALL)),
        (Int(0, ALL), Fixed(0)),
        (LogFloat(1e-6, 1e-2), LogFloat(1e-5, 1e-3)),
        (LogFloat(1e-6, 1e-2), Float(0.1, 0.2)),
        (LogFloat(1e-6, 1e-2), Fixed(1e-4)),
        # A listed 0 is a value (lambda: 0, no penalty); the strategy's check_value decides.
        (LogFloat(1e-6, 1e-2), Fixed(0)),
        (LogFloat(1e-6, 1e-2), Choice((0.0, 1e-4))),
        (LogFloat(1e-6, 1e-2), Float(0, 1e-3)),
        (LogFloat(1e-6, 1e-2), Choice((1e-5, 1e-3, 1))),
        (Float(0.0, 0.5), Float(-1, 1)),
        (Float(0.0, 0.5), Fixed(0)),
        (Float(0.0, 0.5), Int(0, 1)),
        (Choice((64, 128)), Choice((32, 512))),
        (Choice((64, 128)), Int(16, 512)),
        (Choice((64, 128)), Fixed(1024)),
        (Choice((0.1, 0.5)), Choice((1, 0.25))),
        (Choice(("relu", "gelu")), Fixed("swish")),
        (Choice((True, False)), Fixed(False)),
        (Choice((None, "relu")), Fixed([1, 2])),
        (Fixed(3), Choice((2, 3))),
        (Fixed(None), Fixed("anything")),
    ],
)
def test_check_compatible_accepts(default: Dimension, override: Dimension) -> None:
    check_compatible("dim", default, override)


@pytest.mark.parametrize(
    ("default", "override", "fragment"),
    [
        (Int(1, 3), Float(1, 3), "dim takes whole numbers; got float [1, 3]"),
        (Int(1, 3), LogFloat(1, 3), "dim takes whole numbers; got loguniform [1, 3]"),
        (Int(1, 3), Fixed(2.5), "dim takes whole numbers; got fixed 2.5"),
        (Int(1, 3), Fixed(True), "dim takes whole numbers"),
        (Int(1, 3), Fixed("two"), "dim takes whole numbers"),
        (Int(0, ALL), Choice((0, 2, "ALL")), "dim takes whole numbers"),
        (Int(1, 3), Choice((1, 2.0)), "dim takes whole numbers"),
        # Found by QA: "positive numbers", where 0 is taken (lambda: 0), and a choice's
        # value at fault went unnamed.
        (
            LogFloat(1e-6, 1e-2),
            Float(-1, 1),
            "dim takes numbers (none below 0); got float [-1, 1] (-1 is below 0)",
        ),
        (LogFloat(1e-6, 1e-2), Fixed(-1e-3), "dim takes numbers (none below 0); got fixed -0.001"),
        (LogFloat(1e-6, 1e-2), Fixed("1e-3"), "dim takes numbers (none below 0)"),
        (LogFloat(1e-6, 1e-2), Fixed(True), "dim takes numbers (none below 0)"),
        (
            LogFloat(1e-6, 1e-2),
            Choice((0, -0.5)),
            "dim takes numbers (none below 0); got choice [0, -0.5] (-0.5 is below 0)",
        ),
        (LogFloat(1e-6, 1e-2), Fixed(ALL), "'all' (the base's number of cut points)"),
        (Float(0.0, 0.5), Fixed("half"), "dim takes numbers; got fixed 'half'"),
        (Choice((64, 128)), Float(1, 2), "dim takes whole numbers; got float [1, 2]"),
        (Choice((64, 128)), Choice((64, "wide")), "dim takes whole numbers"),
        (Choice((64, 128)), Fixed(ALL), "only fits whole-number dimensions"),
        (Choice((64, 128)), Int(0, ALL), "only fits whole-number dimensions"),
        (Choice(("relu", "gelu")), Fixed(1), "dim takes text; got fixed 1"),
        (Choice((True, False)), Fixed(1), "dim takes true or false"),
        (Choice((1, "auto")), Fixed(0.5), "dim takes whole numbers or text"),
        # A quoted number: the hint says to drop the quotes (it said to write 6.4e+1,
        # which whole-number dimensions refuse in turn).
        (
            Choice((64, 128)),
            Choice((32, "64")),
            "YAML reads '64' in quotes as text; write 64 without quotes",
        ),
        (
            LogFloat(1e-6, 1e-2),
            Fixed("1e-3"),
            "YAML reads 1e-3 as text; write it with a decimal point",
        ),
        (Float(0.0, 0.5), Fixed("0.25"), "write 0.25 without quotes"),
        # Found by QA: an unsigned exponent was taken for quotes ("write 1.0e10 without quotes").
        (
            LogFloat(1e-6, 1e-2),
            Fixed("1.0e10"),
            "YAML reads 1.0e10 as text; write it with a decimal point and a signed exponent: "
            "1.0e+10)",
        ),
        (LogFloat(1e-6, 1e-2), Choice((1e-3, "1E2")), "signed exponent: 1.0e+2)"),
        (LogFloat(1e-6, 1e-2), Fixed("2e-3"), "signed exponent: 2.0e-3)"),
    ],
)
def test_check_compatible_rejects(default: Dimension, override: Dimension, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        check_compatible("dim", default, override)
    assert fragment in str(info.value)


# -- start_config: where a search starts ------------------------------------------------


SPACE: dict[str, Dimension] = {
    "hidden_layers": Int(1, 3),
    "dropout": Float(0.1, 0.5),
    "lambda": LogFloat(1e-6, 1e-2),
    "width": Choice((32, 64, 128)),
    "two_phase": Choice((False, True)),
    "optimizer": Fixed("adam"),
}


def test_start_config_takes_the_strategys_defaults_where_the_space_allows() -> None:
    preferred = {"hidden_layers": 3, "dropout": 0.2, "lambda": 1e-4, "width": 64, "two_phase": True}
    assert start_config(SPACE, preferred) == {**preferred, "optimizer": "adam"}


def test_start_config_starts_elsewhere_at_each_dimensions_middle() -> None:
    # Nothing preferred, or preferred values the (narrowed) space does not take.
    for preferred in ({}, {"hidden_layers": 7, "dropout": 0.9, "lambda": 1.0, "width": 256}):
        config = start_config(SPACE, preferred)
        assert config["hidden_layers"] == 2
        assert config["dropout"] == pytest.approx(0.3)
        assert config["lambda"] == pytest.approx(1e-4)  # the middle on a log scale
        assert config["width"] == 32  # a choice's first value, as in keras-tuner
        assert config["two_phase"] is False
        assert config["optimizer"] == "adam"


def test_start_config_never_mixes_up_numbers_and_true_false() -> None:
    # True == 1 in Python; neither stands for the other here.
    config = start_config(
        {"flag": Choice((False, True)), "n": Choice((0, 1))}, {"flag": 1, "n": True}
    )
    assert config == {"flag": False, "n": 0}
    assert type(config["flag"]) is bool and type(config["n"]) is int


def test_start_config_gives_all_the_resolved_upper_bound_and_keeps_fixed_values() -> None:
    space = resolve_space({"frozen_layers": Int(0, ALL), "depth": Fixed(3)}, 6)
    assert start_config(space, {"frozen_layers": ALL, "depth": 9}) == {
        "frozen_layers": 6,
        "depth": 3,
    }


def test_contains_and_middle() -> None:
    assert contains(Int(0, 4), 4) and not contains(Int(0, 4), 5) and not contains(Int(0, 4), 2.5)
    assert contains(LogFloat(1e-4, 1e-2), 1e-3) and not contains(LogFloat(1e-4, 1e-2), "1e-3")
    assert contains(Choice((0.5, 1)), 1.0) and not contains(Choice((0, 1)), False)
    assert contains(Fixed(8), 8) and not contains(Float(0.0, 1.0), True)
    assert middle(Int(0, 5)) == 2
    assert middle(Fixed("x")) == "x"
    assert middle(LogFloat(1e-6, 1e-2)) == pytest.approx(1e-4)


# -- smallest_config ------------------------------------------------------------------


def test_smallest_config_takes_the_smallest_value_of_each_dimension() -> None:
    space: dict[str, Dimension] = {
        "hidden_layers": Int(1, 3),
        "frozen_layers": Int(0, 9),
        "dropout": Float(0.1, 0.5),
        "lambda": LogFloat(1e-6, 1e-2),
        "width": Choice((128, 32, 64)),
        "rate": Choice((0.5, 0.1, 1)),
        "activation": Choice(("relu", "gelu")),
        "flag": Choice((True, False)),
        "optimizer": Fixed("adam"),
    }
    assert smallest_config(space) == {
        "hidden_layers": 1,
        "frozen_layers": 0,
        "dropout": 0.1,
        "lambda": 1e-6,
        "width": 32,
        "rate": 0.1,
        "activation": "relu",
        "flag": True,
        "optimizer": "adam",
    }


def test_smallest_config_of_a_resolved_space() -> None:
    space = resolve_space({"frozen_layers": Int(2, ALL), "depth": Fixed(ALL)}, 6)
    assert smallest_config(space) == {"frozen_layers": 2, "depth": 6}


def test_smallest_config_of_nothing_is_empty() -> None:
    assert smallest_config({}) == {}


# -- the Ray Tune translation ------------------------------------------------------


@pytest.fixture(scope="module")
def ray_tune() -> Any:
    """``orchestrator.tuning.ray_tune`` (imports ray; no Ray instance is started)."""
    from orchestrator.tuning import ray_tune

    return ray_tune


def _samples(domain: Any, n: int = 2000, seed: int = 0) -> list[Any]:
    return list(domain.sample(size=n, random_state=np.random.default_rng(seed)))


def test_to_tune_int_is_an_inclusive_randint(ray_tune: Any) -> None:
    from ray.tune.search.sample import Integer

    domain = ray_tune.to_tune({"hidden_layers": Int(1, 3)})["hidden_layers"]
    assert isinstance(domain, Integer)
    values = _samples(domain)
    assert set(values) == {1, 2, 3}
    assert all(isinstance(v, (int, np.integer)) for v in values)


def test_to_tune_a_range_of_equal_ends_gives_its_value(ray_tune: Any) -> None:
    # Found by QA: Ray's loguniform of [0.001, 0.001] drew 0.0010000000000000002.
    from orchestrator.tuning.keras_tuner import to_hyperparameters

    space = {"frozen_layers": Int(4, 4), "learning_rate": LogFloat(1e-3, 1e-3), "x": Float(2, 2)}
    for grid in (False, True):
        assert ray_tune.to_tune(space, grid=grid) == {
            "frozen_layers": 4,
            "learning_rate": 1e-3,
            "x": 2,
        }
    hp = to_hyperparameters(space)
    assert {p.__class__.__name__ for p in hp.space} == {"Fixed"}
    assert hp.values == {"frozen_layers": 4, "learning_rate": 1e-3, "x": 2}


def test_to_tune_resolved_all_reaches_every_cut_point(ray_tune: Any) -> None:
    space = resolve_space({"frozen_layers": Int(0, ALL)}, 5)
    domain = ray_tune.to_tune(space)["frozen_layers"]
    assert set(_samples(domain)) == {0, 1, 2, 3, 4, 5}


def test_to_tune_grid_over_an_int_includes_its_upper_bound(ray_tune: Any) -> None:
    """Found by mutation testing: a grid over an Int that stopped one short (range's
    end) passed every test: a grid over frozen_layers never froze the whole base,
    while the run announced the full grid."""
    assert ray_tune.to_tune({"n": Int(1, 3)}, grid=True)["n"] == {"grid_search": [1, 2, 3]}
    assert ray_tune.to_tune({"n": Int(4, 5)}, grid=True)["n"] == {"grid_search": [4, 5]}
    space = resolve_space({"frozen_layers": Int(0, ALL)}, 5)
    grid = ray_tune.to_tune(space, grid=True)["frozen_layers"]
    assert grid == {"grid_search": [0, 1, 2, 3, 4, 5]}


def test_to_tune_float_is_uniform(ray_tune: Any) -> None:
    from ray.tune.search.sample import Float as RayFloat
    from ray.tune.search.sample import Uniform

    domain = ray_tune.to_tune({"dropout": Float(0.1, 0.5)})["dropout"]
    assert isinstance(domain, RayFloat)
    assert isinstance(domain.get_sampler(), Uniform)
    assert (domain.lower, domain.upper) == (0.1, 0.5)
    values = np.array(_samples(domain))
    assert values.min() >= 0.1 and values.max() <= 0.5
    # Uniform: each half of the range gets about half of the draws.
    assert 0.45 < np.mean(values < 0.3) < 0.55


def test_to_tune_logfloat_is_loguniform(ray_tune: Any) -> None:
    from ray.tune.search.sample import Float as RayFloat
    from ray.tune.search.sample import LogUniform

    domain = ray_tune.to_tune({"lambda": LogFloat(1e-6, 1e-2)})["lambda"]
    assert isinstance(domain, RayFloat)
    assert isinstance(domain.get_sampler(), LogUniform)
    assert (domain.lower, domain.upper) == (1e-6, 1e-2)
    values = np.array(_samples(domain))
    assert values.min() >= 1e-6 and values.max() <= 1e-2
    # Log-uniform: each decade of the four gets about a quarter of the draws.
    assert 0.2 < np.mean(values < 1e-5) < 0.3


def test_to_tune_choice_is_choice(ray_tune: Any) -> None:
    from ray.tune.search.sample import Categorical

    domain = ray_tune.to_tune({"head_width": Choice((64, 128, 256))})["head_width"]
    assert isinstance(domain, Categorical)
    assert list(domain.categories) == [64, 128, 256]
    assert set(_samples(domain, n=300)) == {64, 128, 256}


def test_to_tune_fixed_is_the_plain_value(ray_tune: Any) -> None:
    translated = ray_tune.to_tune(
        {"optimizer": Fixed("adam"), "depth": Fixed(2), "rate": Fixed(0.5), "none": Fixed(None)}
    )
    assert translated == {"optimizer": "adam", "depth": 2, "rate": 0.5, "none": None}


def test_to_tune_translates_a_whole_space(ray_tune: Any) -> None:
    from ray.tune.search.sample import Domain

    space: dict[str, Dimension] = {
        "hidden_layers": Int(1, 3),
        "width": Choice((32, 64)),
        "lambda": LogFloat(1e-6, 1e-2),
        "dropout": Float(0.0, 0.5),
        "optimizer": Fixed("adam"),
    }
    translated = ray_tune.to_tune(space)
    assert list(translated) == list(space)
    assert all(isinstance(translated[k], Domain) for k in list(space)[:4])
    assert translated["optimizer"] == "adam"


def test_to_tune_rejects_other_objects(ray_tune: Any) -> None:
    with pytest.raises(TypeError, match="x: str is not a graftune space type"):
        ray_tune.to_tune({"x": "plain"})  # type: ignore[dict-item]


def test_a_recipes_cut_point_values_outside_the_base_are_named() -> None:
    from orchestrator.space import outside_cut_points

    assert outside_cut_points(Int(50, ALL), 4) == [50]  # not narrowed to [4, 4] in silence
    assert outside_cut_points(Fixed(500), 4) == [500]
    assert outside_cut_points(Choice((0, 2, 9)), 4) == [9]
    assert outside_cut_points(Int(-1, 3), 4) == [-1]
    assert outside_cut_points(Int(1, ALL), 4) == []
    assert outside_cut_points(Choice((0, ALL)), 4) == []
    # At the boundary (found by mutation testing: `> cuts + 1` and `>= cuts` passed).
    assert outside_cut_points(Int(5, ALL), 4) == [5]
    assert outside_cut_points(Int(4, ALL), 4) == []  # the whole base frozen
    assert outside_cut_points(Fixed(4), 4) == [] and outside_cut_points(Fixed(5), 4) == [5]
    assert outside_cut_points(Choice((0, 4, 5)), 4) == [5]


def test_choice_values_must_be_scalars_either_backend_can_search() -> None:
    from orchestrator.preflight import space_problems

    assert space_problems({"w": Choice(((8,), (16, 8)))}) == [
        "'w': Choice values must be numbers, text or true/false, got (8,) (tuple)"
    ]
    assert space_problems({"w": Choice((None, 16))})[0].endswith("got None (NoneType)")
    assert space_problems({"w": Choice((1.0, math.nan))}) == [
        "'w': Choice values must be finite, got nan"
    ]
    assert space_problems({"l": Fixed(math.inf)}) == ["'l': Fixed value must be finite, got inf"]
    assert space_problems({"w": Choice((8, "wide")), "b": Choice((False, True))}) == []
    # A list, as Python (and keras-tuner's hp.Choice) writes one, is taken as a tuple:
    # found by QA, refused with "needs a non-empty tuple" alone, then told to write one.
    listed = Choice(["relu", "tanh"])
    assert space_problems({"a": listed}) == []
    assert listed == Choice(("relu", "tanh")) and listed.values == ("relu", "tanh")
    assert hash(listed) == hash(Choice(("relu", "tanh")))
    assert space_problems({"a": Choice([])}) == [
        "'a': Choice needs a non-empty tuple (or list) of values, got ()"
    ]
    assert space_problems({"a": Choice({"relu", "tanh"})})[0].startswith(
        "'a': Choice needs a non-empty tuple (or list) of values, got {"
    )
    # A plugin's choice, as a recipe's, lists a value once (16 and 16.0 are one).
    assert space_problems({"w": Choice((16, 32, 16.0))}) == [
        "'w': Choice lists the value 16 twice (16 and 16.0 are one); list each value once"
    ]
    assert space_problems({"b": Choice((1, True))}) == []
    assert space_problems({"w": Choice((8, 8))})[0].startswith(
        "'w': Choice lists the value 8 twice;"
    )


def test_a_space_keeps_off_the_leaderboards_own_columns_and_64_bit_overflow() -> None:
    # Found by QA: a parameter named status or epochs, or an Int beyond 64 bits, passed
    # validate and broke the leaderboard after every trial had trained; rank vanished.
    from orchestrator.leaderboard import COLUMN_TYPES
    from orchestrator.preflight import space_problems
    from orchestrator.space import parse_dimension

    for name in ("status", "epochs", "rank", "note"):
        (problem,) = space_problems({name: Choice((1, 2)), "width": Int(4, 8)})
        assert problem.startswith(f"{name!r} is the name of one of graftune's own leaderboard")
        assert problem.endswith("give the parameter another name")
    assert set(COLUMN_TYPES) >= {"rank", "strategy", "trial_id", "error"}
    big = 2**70
    said = f"whole numbers must fit in 64 bits (-2**63 to 2**63 - 1), got {big}"
    assert space_problems({"w": Int(0, big)}) == [f"'w': {said}"]
    assert space_problems({"w": Choice((1, -big))}) == [f"'w': {said.replace(str(big), str(-big))}"]
    assert space_problems({"w": Fixed(big)}) == [f"'w': {said}"]
    assert space_problems({"w": Int(-(2**63), 2**63 - 1), "f": Float(0.0, 1e300)}) == []
    for raw, words in (
        ({"int": [1, big]}, f"int bounds: {said}"),
        ({"choice": [1, big]}, f"choice values: {said}"),
        (big, said),
    ):
        with pytest.raises(ValueError) as info:
            parse_dimension(raw)
        assert str(info.value) == words


def test_a_strategy_that_calls_sys_exit_before_the_trials_is_a_plugin_error() -> None:
    # A plugin's sys.exit() in validate's calls ended the command with its message, status 1.
    from orchestrator.errors import PluginError
    from orchestrator.preflight import space_notes, strategy_space
    from orchestrator.strategy import SpaceContext, Strategy

    class Exits(Strategy):
        name = "exits"

        def search_space(self, context):
            raise SystemExit("no space today")

        def config_note(self, config, epochs):
            raise SystemExit("no note today")

    with pytest.raises(PluginError) as info:
        strategy_space(Exits(), SpaceContext(), "exits (dist 1)")
    assert str(info.value) == (
        "strategy 'exits' from plugin exits (dist 1): search_space() raised SystemExit: "
        "no space today"
    )
    with pytest.raises(PluginError, match="config_note\\(\\) raised SystemExit: no note today"):
        space_notes(Exits(), {"w": Choice((1, 2))}, 2, "exits (dist 1)")

    class Unsayable(Exception):
        def __str__(self):
            raise RuntimeError("str broke")

    class Mute(Strategy):
        name = "mute"

        def search_space(self, context):
            raise Unsayable

    # Found by QA: "internal error: RuntimeError: str broke", the plugin unnamed.
    with pytest.raises(PluginError) as info:
        strategy_space(Mute(), SpaceContext(), "mute (dist 1)")
    assert str(info.value) == (
        "strategy 'mute' from plugin mute (dist 1): search_space() raised Unsayable (its "
        "message cannot be shown: its __str__ raised)"
    )


def test_distinct_configurations_counts_a_value_once_however_it_is_written() -> None:
    from orchestrator.space import distinct_configurations

    # keras-tuner makes a choice of 16 and 16.0 one value; a plugin's space may list both.
    space = {"w": Choice((16, 16.0, 32)), "b": Choice((True, 1)), "k": Int(0, 2), "x": Fixed(3)}
    assert distinct_configurations(space) == 2 * 2 * 3
    assert distinct_configurations({**space, "lr": LogFloat(1e-3, 1e-2)}) is None


def test_a_plugin_space_with_bad_bounds_is_refused_and_equal_bounds_are_not() -> None:
    """Found by mutation testing: the bound checks of a plugin's space (out of order,
    a LogFloat at 0, 'all' from a negative low) could be dropped or loosened, and equal
    bounds (one value) refused, with no test noticing."""
    from orchestrator.preflight import space_problems

    assert space_problems({"x": Float(1.0, 0.1)}) == ["'x': Float bounds out of order: [1.0, 0.1]"]
    assert space_problems({"x": LogFloat(0.0, 1.0)}) == [
        "'x': LogFloat bounds must be > 0, got [0.0, 1.0]"
    ]
    assert space_problems({"k": Int(-1, ALL)}) == [
        "'k': Int low bound must be >= 0 with 'all', got -1"
    ]
    assert space_problems({"k": Int(3, 1)}) == ["'k': Int bounds out of order: [3, 1]"]
    assert space_problems({"k": Int(2, 2), "f": Float(0.5, 0.5), "l": LogFloat(0.1, 0.1)}) == []
    assert space_problems({"k": Int(0, ALL)}) == []


def test_a_plugin_default_on_an_all_dimension_is_accepted() -> None:
    """Found by mutation testing: a plugin default that is a number (or 'all') for its
    own Int(low, 'all') dimension is allowed; with the 'all' check gone it reached
    int('all') and validate died with a traceback."""
    from orchestrator.preflight import default_problems

    assert default_problems({"k": 2}, {"k": Int(0, ALL)}) == {}
    assert default_problems({"k": ALL}, {"k": Int(0, ALL)}) == {}
    assert default_problems({"k": 2}, {"k": Choice((0, 2, ALL))}) == {}
    assert default_problems({"k": 9}, {"k": Int(0, 3)}) == {
        "k": "k=9 is not a value of " + Int(0, 3).describe()
    }
