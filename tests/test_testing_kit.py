"""The testing kit for plugin authors: check_strategy, fixtures, the in-process run."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from orchestrator.builtin_plugins.feature_extraction import FeatureExtraction
from orchestrator.builtin_plugins.fine_tune import FineTune
from orchestrator.builtin_plugins.scratch_mlp import ScratchMLP
from orchestrator.plugin_manager import get_plugin_manager
from orchestrator.strategy import SpaceContext
from orchestrator.testing import StrategyCheckError, check_strategy, tiny_base, tiny_dataset
from tests import broken_strategies as broken
from tests import fixture_plugins


@pytest.fixture(scope="module", autouse=True)
def imported_before_pytester() -> None:
    """What the inner runs of pytester import, imported before its fixture notes
    ``sys.modules`` to put back after the test: NumPy's C core, imported first in one
    test and taken out after it, cannot be loaded again in the next ("cannot load
    module more than once per process")."""
    import keras  # noqa: F401
    import keras_tuner  # noqa: F401
    import pandas  # noqa: F401
    import sklearn.datasets  # noqa: F401


# -- check_strategy -----------------------------------------------------------------


@pytest.mark.parametrize("cls", [ScratchMLP, FeatureExtraction, FineTune])
def test_the_builtin_strategies_pass(cls):
    check_strategy(cls)


def test_a_correct_third_party_strategy_passes_on_a_table():
    check_strategy(broken.SmallMLP, dataset=tiny_dataset("iris"))


def test_a_subclass_that_narrows_its_parents_space_keeps_its_parents_defaults_where_they_fit(
    caplog,
):
    import logging

    from orchestrator.preflight import strategy_defaults
    from orchestrator.space import start_config

    check_strategy(broken.NarrowsItsParentsSpace, dataset=tiny_dataset("iris"))
    strategy = broken.NarrowsItsParentsSpace()
    space = strategy.search_space(SpaceContext())
    caplog.clear()  # TensorFlow's retracing warning of the check's fit, after other tests' fits
    with caplog.at_level(logging.WARNING):
        defaults = strategy_defaults(strategy, SpaceContext(), "tests", space)
    assert caplog.text == ""
    assert start_config(space, defaults)["learning_rate"] == 0.05  # its choice's first


@pytest.mark.parametrize(
    ("cls", "words"),
    [
        (broken.CamelName, "name must be snake_case (like 'linear_probe'), got 'CamelName'"),
        (broken.TakesABuiltinName, "name 'fine_tune' is taken by graftune's built-in strategy"),
        (broken.ForeignSpace, "'learning_rate' is builtins.tuple"),
        (
            broken.AllWithoutABase,
            "'hidden_layers': 'all' counts the cut points of a base, and the strategy takes "
            "none (requires_base is False); got int [1, all]",
        ),
        (broken.Uncompiled, "build() returned a model that is not compiled"),
        (broken.WrongShape, "output shape (None, 11); expected (None, 10)"),
        (broken.LogitsOut, "end the model in a softmax"),
        (broken.Unpicklable, "a fresh instance does not pickle with cloudpickle"),
        (broken.ForgetsCallbacks, "fit() never called the callbacks it was given"),
        (broken.FitReturnsTheHistory, "fit() returned History, not the trained keras.Model"),
        # Found by QA: these two passed.
        (
            broken.ForgetsCallbacksInItsSecondFit,
            "fit() trained the model after the last epoch it reported to its callbacks",
        ),
        (broken.TenClassesAlways, "output shape (None, 10); expected (None, 3)"),
        # Found by QA: passed once the check above was added (an elif skipped these).
        (broken.OneEpochTooMany, "fit() ran 3 epochs when given epochs=2"),
        (broken.FitsWithoutValidation, "fit() epochs report no val_accuracy"),
        (
            broken.DefaultsOutsideItsSpace,
            "default_config(): learning_rate=0.5 is not a value of loguniform [0.001, 0.01]",
        ),
        (broken.DefaultsNotADict, "default_config() returned list, not a dict"),
        (broken.KeysDiffer, "search_space() names other parameters for a prepared task"),
        (
            broken.IgnoresTheCachedFeatures,
            "strategy ignores_the_cached_features.frozen_prefix returned 2, so its model is fed "
            "the base's features cached at that cut point, of shape (4, 4, 8), but it takes "
            "(8, 8, 1): build it on base.inputs_and_features(task, 2)",
        ),
        (
            broken.UnregisteredLayer,
            (  # one check_strategy run: both parts of its one message
                # (saved as 'in_build>Shift' once a test before registered it so)
                "would be saved but could not be loaded again: it uses the custom Keras "
                "object 'Shift'",
                # found by QA: in a test the way is graftune_register, not --plugin
                "; in a test, give the plugin's module to the graftune_register fixture first",
            ),
        ),
        (
            broken.RefusesItsOwnSpace,
            "check_value('learning_rate', 0.01) refuses a value of its own search space",
        ),
        (
            broken.NamesALeaderboardColumn,
            "'epochs' is the name of one of graftune's own leaderboard columns",
        ),
        (
            broken.NotesAList,
            "config_note() returned list (['a list note']), expected a line of text or None",
        ),
    ],
)
def test_a_broken_strategy_fails_naming_the_class_and_the_problem(cls, words):
    with pytest.raises(StrategyCheckError) as info:
        check_strategy(cls)
    message = str(info.value)
    assert f"tests.broken_strategies.{cls.__qualname__} (strategy {cls.name!r})" in message
    for said in words if isinstance(words, tuple) else (words,):
        assert said in message
    assert "fails 1 check(s)" in message


def test_a_layer_class_defined_inside_build_is_told_to_move_to_module_level():
    """Found by QA: the advice was to return it from graftune_keras_objects, which no
    hook can do for a class that exists only while build() runs."""
    import keras

    from orchestrator.preflight import reload_problem

    def build():
        class Triple(keras.layers.Layer):
            def call(self, x):
                return x * 3

        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(Triple()(inputs)))

    said = reload_problem(build(), dict(keras.saving.get_custom_objects()))
    assert said == (
        "it uses the custom Keras object 'Triple', a class defined inside build(), which nothing outside that call can find: define it at the top level of a "
        "module, and register it there (keras.saving.register_keras_serializable) or return "
        "it from the plugin's graftune_keras_objects hook"
    )


def test_a_layer_registered_only_in_build_does_not_count_for_loading_again():
    import keras

    # Found by QA: the check left Shift registered, and a second check passed it.
    for _ in range(2):
        with pytest.raises(StrategyCheckError) as info:
            check_strategy(broken.RegistersItsLayerInBuild)
        assert "in_build>Shift" not in keras.saving.get_custom_objects()
    assert (
        "would be saved but could not be loaded again: it uses the custom Keras object 'Shift', "
        "which is registered only while build() runs (the code that registers it is imported "
        "there), and predict and export load a model without building it: register it when "
        "the plugin's module is imported, or return it from the plugin's graftune_keras_objects"
        " hook"
    ) in " ".join(str(info.value).split())


def test_a_strategy_module_that_imports_keras_fails():
    from tests.heavy_strategy import HeavyImport

    with pytest.raises(StrategyCheckError) as info:
        check_strategy(HeavyImport)
    message = str(info.value)
    assert "importing tests.heavy_strategy imports tensorflow, keras" in message
    assert "HeavyImport" in message


def test_import_check_skipped_on_request():
    from tests.heavy_strategy import HeavyImport

    check_strategy(HeavyImport, check_imports=False)


def test_what_is_not_a_strategy_class_is_refused():
    with pytest.raises(StrategyCheckError, match=r"is not a subclass of orchestrator\.Strategy"):
        check_strategy(dict)  # type: ignore[arg-type]


# -- check_data_source and check_base_provider --------------------------------------------
# Found by QA: an author of a data source or base provider had no check but a whole run
# (check_strategy refused their classes), and nothing flagged a source that drew at
# random without uses_seed, or a provider whose cache_key left out the seed.


def test_a_data_source_that_keeps_the_contract_passes():
    from orchestrator.data.sources import SklearnSource
    from orchestrator.testing import check_data_source
    from tests.plugin_parts import Blobs

    check_data_source(Blobs, "any")
    check_data_source(SklearnSource, "iris", check_imports=False)  # graftune's own
    # Read with the data section's other keys (found by QA: a table's target could
    # not be given), here by graftune's own csv: as a plugin's table source would be.
    from pathlib import Path

    from orchestrator.data.sources import CsvSource

    wine = Path(__file__).parents[1] / "recipes" / "data" / "wine.csv"
    check_data_source(CsvSource, str(wine), target="cultivar", check_imports=False)
    from orchestrator.testing import PluginCheckError

    with pytest.raises(PluginCheckError, match="the data keys given to the check are no recipe"):
        check_data_source(Blobs, "any", targt="x")  # found by QA: pydantic's error, raw


@pytest.mark.parametrize(
    ("name", "words"),
    [
        (
            "Unseeded",
            "two reads of 'qa_unseeded:any' with the same seed gave other data: a run's resume "
            "and graftune predict read them again; set uses_seed = True and draw them from "
            "load()'s seed",
        ),
        ("Bytes", "reading 'qa_bytes:any' failed: "),
        ("TakenScheme", "scheme 'csv' is taken by graftune's own orchestrator.data."),
    ],
)
def test_a_data_source_that_breaks_the_contract_fails_naming_the_problem(name, words):
    from orchestrator.testing import PluginCheckError, check_data_source
    from tests import plugin_parts

    with pytest.raises(PluginCheckError) as info:
        check_data_source(getattr(plugin_parts, name), "any", check_imports=False)
    said = " ".join(str(info.value).split())
    assert f"tests.plugin_parts.{name} (data source " in said
    assert words in said, said


def test_a_base_provider_that_keeps_the_contract_passes():
    from orchestrator.testing import check_base_provider
    from tests.plugin_parts import Seeded

    check_base_provider(Seeded)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        (
            "SeedlessKey",
            "cache_key() is the same for seeds 0 and 1, whose build() gives other weights: a "
            "run of one seed would reuse the base of another; put context.seed in the key",
        ),
        (
            "Unrepeatable",
            "build() gave other weights for the same seed: a resume builds the base again "
            "where the cache lost it, and refuses another; draw them from context.seed",
        ),
        ("NewKeyEachTime", "cache_key() gave another key when asked again"),
    ],
)
def test_a_base_provider_that_breaks_the_contract_fails_naming_the_problem(name, words):
    from orchestrator.testing import PluginCheckError, check_base_provider
    from tests import plugin_parts

    with pytest.raises(PluginCheckError) as info:
        check_base_provider(getattr(plugin_parts, name), check_imports=False)
    said = " ".join(str(info.value).split())
    assert f"tests.plugin_parts.{name} (base provider " in said
    assert words in said, said


def test_a_base_providers_custom_layer_counts_once_its_plugin_is_registered(graftune_register):
    """A plugin not installed yet gives its custom layers through its own
    graftune_keras_objects once graftune_register has it (found by QA: the check's
    advice, --plugin, is not the kit's)."""
    from orchestrator.testing import PluginCheckError, check_base_provider
    from tests import keras_object_plugin
    from tests.plugin_parts import ScaledBase

    with pytest.raises(PluginCheckError, match="would not load again"):
        check_base_provider(ScaledBase, check_imports=False)
    graftune_register(keras_object_plugin)
    check_base_provider(ScaledBase, check_imports=False)


def test_a_base_provider_is_prepared_as_a_run_prepares_it():
    """The run's own checks of a base, in a cache the check removes after it."""
    import keras

    from orchestrator.bases import BaseProvider, cache_dir
    from orchestrator.testing import PluginCheckError, check_base_provider

    class Doubling(keras.layers.Layer):  # registered nowhere
        def call(self, x):
            return x * 2

    class Unregistered(BaseProvider):
        name = "qa_unregistered"

        def build(self, spec, context):
            inputs = keras.Input((8, 8, 1))
            return keras.Model(inputs, keras.layers.Flatten()(Doubling()(inputs)))

    before = sorted(cache_dir().glob("bases/*"))
    with pytest.raises(PluginCheckError) as info:
        check_base_provider(Unregistered, check_imports=False)
    assert "preparing its base failed: base provider 'qa_unregistered' from " in str(info.value)
    # The class named once (found by QA: "from tests.X (base provider 'x')" inside).
    assert str(info.value).count("(base provider 'qa_unregistered')") == 1
    assert "would not load again" in str(info.value)
    assert sorted(cache_dir().glob("bases/*")) == before
    with pytest.raises(PluginCheckError, match=r"is not a subclass of orchestrator\.bases\."):
        check_base_provider(dict)


# -- tiny data and base ------------------------------------------------------------------


def test_tiny_datasets(graftune_digits, graftune_iris):
    assert graftune_digits.task.input_shape == (8, 8, 1)
    assert graftune_digits.task.n_classes == 10
    assert graftune_iris.task.input_shape == (4,)
    assert graftune_iris.task.n_classes == 3
    # One copy is shared: the arrays are read-only.
    assert tiny_dataset("digits") is graftune_digits
    assert not graftune_digits.x_train.flags.writeable


def test_tiny_bases_take_the_task_inputs(graftune_base, graftune_iris, tmp_path):
    from orchestrator.bases import load_base

    assert graftune_base.input_shape == (8, 8, 1)
    # A cut after each block: BatchNormalization, always frozen, merges into its ReLU.
    assert graftune_base.cut_names == ("tiny_relu1", "tiny_relu2")
    loaded = load_base(graftune_base)
    assert loaded.model.output_shape == (None, 4, 4, 8)
    table = tiny_base(graftune_iris.task, tmp_path)
    assert table.output_shape == (8,)
    assert table.n_cut_points == 2


# -- fixtures, in an inner pytest session as a plugin author would use them ---------------


def test_the_kit_as_a_plugin_author_enables_it(pytester):
    pytester.makeconftest('pytest_plugins = ["orchestrator.testing"]')
    pytester.makepyfile(
        textwrap.dedent(
            """
            from orchestrator import hookimpl
            from orchestrator.plugin_manager import get_plugin_manager
            from tests import fixture_plugins


            def test_a_plugin_registered_for_one_test(graftune_register):
                host = graftune_register(fixture_plugins)
                assert "exploding_mlp" in host.strategies
                assert host.strategies.owner("exploding_mlp") == (
                    "fixture_plugins (graftune-testing-fixture-plugins 0)"
                )
                # Every host built during the test sees it, as if installed.
                assert "raising" in get_plugin_manager().strategies


            def test_it_is_gone_in_the_next_test():
                assert "exploding_mlp" not in get_plugin_manager().strategies


            class KerasObjects:
                @hookimpl
                def graftune_keras_objects(self):
                    import keras

                    class Doubled(keras.layers.Layer):
                        def call(self, x):
                            return 2 * x

                    Doubled.__module__ = "inner"
                    return [Doubled]


            def test_its_keras_objects_registered(graftune_register):
                graftune_register(KerasObjects(), name="inner").keras_objects()
                import keras

                assert "inner>Doubled" in keras.saving.get_custom_objects()


            def test_are_gone_with_it():
                # Found by QA: left registered, a model with the layer loaded in every
                # later test, as it would nowhere else.
                import keras

                assert "inner>Doubled" not in keras.saving.get_custom_objects()


            def test_a_fresh_host_without_entry_points(graftune_host):
                assert graftune_host.strategies.names() == []
                assert "sklearn" in graftune_host.data_sources
                assert "pretrain" in graftune_host.bases
                assert graftune_host.pm.has_plugin("graftune.events")
            """
        )
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_a_suite_that_makes_warnings_errors_passes_a_correct_plugin(pytester):
    """Found by QA: under pytest's `filterwarnings = error`, check_strategy failed a
    correct strategy: "its model ... cannot be saved: DeprecationWarning: __array__
    implementation doesn't accept a copy keyword" (TensorFlow's variables under NumPy 2,
    as Keras saves). A check's warnings stay warnings, as a run's do; the suite's
    filter is put back after it. (The kit's pytest plugin, not enabled here, would
    leave that warning out before it became an error.)"""
    pytester.makeini("[pytest]\nfilterwarnings =\n    error\n")
    pytester.makepyfile(
        textwrap.dedent(
            """
            import warnings

            import pytest

            from orchestrator.builtin_plugins.scratch_mlp import ScratchMLP
            from orchestrator.testing import check_strategy


            def test_a_check():
                check_strategy(ScratchMLP, check_imports=False)


            def test_the_suites_own_warnings_are_errors_after_it():
                check_strategy(ScratchMLP, check_imports=False)
                with pytest.raises(UserWarning, match="mine"):
                    warnings.warn("mine")
            """
        )
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_kit_leaves_its_dependencies_deprecations_out_of_the_summary(pytester):
    """Found by QA: two tests of a plugin (its check and an in-process run) ended in
    18 warnings, TensorFlow's under NumPy 2 and keras-tuner's, none the plugin's."""
    pytester.makeconftest('pytest_plugins = ["orchestrator.testing"]')
    pytester.makepyfile(
        textwrap.dedent(
            """
            import warnings

            from orchestrator.builtin_plugins.scratch_mlp import ScratchMLP
            from orchestrator.testing import check_strategy


            def test_a_check_and_a_run(graftune_run):
                check_strategy(ScratchMLP, check_imports=False)
                graftune_run(
                    {
                        "name": "w",
                        "data": {"source": "sklearn:iris"},
                        "strategies": {"scratch_mlp": {"num_samples": 1}},
                        "search": {"max_epochs": 2},
                    }
                )


            def test_the_plugins_own_deprecations_are_said():
                warnings.warn("mine", DeprecationWarning)
            """
        )
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)  # (how many others a new dependency adds: not counted)
    said = result.stdout.str()
    assert "DeprecationWarning: mine" in said
    assert "copy keyword" not in said and "currentThread" not in said, said


def test_a_registered_plugin_object_reaches_the_command_line(graftune_register, tmp_path):
    from orchestrator.cli import app

    graftune_register(broken.Registers(broken.SmallMLP), name="small")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: small\ndata: {source: 'sklearn:iris'}\nstrategies: {small_mlp: {}}\n")
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "ok (small_mlp on sklearn:iris)" in result.output


def test_a_module_an_entry_point_names_otherwise_registers_under_that_name(
    graftune_register, monkeypatch, tmp_path
):
    """pluggy takes a module under one name only: registering a module that an
    installed entry point names 'scaled' under its own name crashed every host
    with pluggy's message and its dump of every plugin registered."""
    import importlib

    from orchestrator.errors import PluginError
    from tests import keras_object_plugin

    graftune_register(keras_object_plugin, name="scaled")  # as if installed so
    host = graftune_register(keras_object_plugin)
    assert "scaled_mlp" in host.strategies
    assert host.strategies.owner("scaled_mlp").startswith("scaled")
    # Under another name: refused by the fixture, which says what to do (the host
    # refused it, as "registered already", with no word of the installed name).
    with pytest.raises(ValueError) as refused:
        graftune_register(keras_object_plugin, name="other")
    said = str(refused.value)
    assert "tests.keras_object_plugin is installed as plugin 'scaled'" in said
    assert "leave name out" in said
    # Two installed entry points that name one module: the host's one line says so.
    info = tmp_path / "second_install-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: second-install\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[graftune]\nother = tests.keras_object_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    with pytest.raises(PluginError) as raised:
        get_plugin_manager()
    said = str(raised.value)
    assert "tests.keras_object_plugin is registered already as plugin" in said
    assert "may name a module only once" in said and "{" not in said


def test_registration_is_undone():
    assert "small_mlp" not in get_plugin_manager().strategies


# -- the in-process run -------------------------------------------------------------------

RECIPE = {
    "name": "kit-run",
    "seed": 2,
    "data": {"source": "sklearn:iris"},
    "strategies": {
        "scratch_mlp": {"num_samples": 2, "space": {"hidden_layers": 1, "width": 16}},
        "raising": {"num_samples": 1},
    },
    "search": {"max_epochs": 2, "batch_size": 16},
}


def test_an_in_process_run_says_why_keras_tuner_refuses_a_ray_recipe(graftune_run):
    """Found by QA: "... needs backend: ray" of a recipe that asked for no keras_tuner,
    and ran on Ray already."""
    from orchestrator.errors import RecipeError

    search = {**RECIPE["search"], "scheduler": "hyperband", "algorithm": "grid"}
    with pytest.raises(RecipeError) as info:
        graftune_run({**RECIPE, "search": search}, plugins=[fixture_plugins])
    said = str(info.value)
    assert said.startswith(
        "<recipe>: search.algorithm: run_in_process searches in this process, on the "
        "keras_tuner backend, which cannot take this recipe (it may run on Ray"
    )
    assert "keras-tuner's Hyperband draws its configurations at random" in said


def test_an_in_process_run_returns_the_leaderboard(graftune_run):
    board = graftune_run(RECIPE, plugins=[fixture_plugins])
    run_dir = board.attrs["run_dir"]
    assert list(board["strategy"]) == ["scratch_mlp", "scratch_mlp", "raising"]
    assert list(board["status"]) == ["ok", "ok", "error"]
    assert list(board["rank"].iloc[:2]) == [1, 2]
    assert "deliberate failure in build" in board["error"].iloc[2]
    assert (board["epochs"].iloc[:2] == 2).all()
    assert (run_dir / "leaderboard.csv").is_file()
    assert (run_dir / "recipe.yaml").is_file()
    for trial_id in board["trial_id"].iloc[:2]:
        assert (run_dir / "trials" / "scratch_mlp" / trial_id / "model.keras").is_file()
    # The configurations come from the recipe's seed: a second run draws the same.
    again = graftune_run(RECIPE, plugins=[fixture_plugins])
    columns = ["hidden_layers", "width", "lambda", "learning_rate"]
    first = board[board["strategy"] == "scratch_mlp"].sort_values("trial_id")[columns]
    second = again[again["strategy"] == "scratch_mlp"].sort_values("trial_id")[columns]
    assert first.to_dict("records") == second.to_dict("records")
    space = ScratchMLP().search_space(SpaceContext(task=tiny_dataset("iris").task))
    assert (
        first["learning_rate"]
        .between(space["learning_rate"].low, space["learning_rate"].high)
        .all()
    )


def test_the_in_process_run_checks_the_recipe_first(graftune_run):
    from orchestrator.errors import RecipeError

    bad = {**RECIPE, "strategies": {"scratch_mpl": {}}}
    with pytest.raises(RecipeError, match="did you mean 'scratch_mlp'"):
        graftune_run(bad)


def test_the_kit_imports_without_pytest():
    """Found by QA: `from orchestrator.testing import check_strategy` needed pytest,
    which only the `test` extra installs, where the docs say it works without."""
    code = (
        "import sys; sys.modules['pytest'] = None\n"  # as if not installed
        "from orchestrator.testing import check_strategy, graftune_run, run_in_process\n"
        "print(callable(check_strategy), graftune_run.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "graftune_run"]
