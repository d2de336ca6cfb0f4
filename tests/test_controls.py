"""Plugin controls and plugin errors: disable lists, autoload, --plugin, pre-flight checks.

Every plugin error must name the plugin and its distribution, and stop a run
before any trial where it can be detected that early.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import re
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import PluginError, PluginLoadError, RecipeError
from orchestrator.plugin_manager import get_plugin_manager
from orchestrator.run import run_recipe
from tests import broken_strategies as broken


def write(folder: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def cli(*args: str):
    return CliRunner().invoke(app, [*map(str, args)])


# -- plugins: {disable: [...]} ------------------------------------------------------------


def test_a_disabled_builtin_is_an_unknown_strategy(tmp_path):
    recipe = write(
        tmp_path,
        """
        name: no-fine-tune
        data: {source: "sklearn:iris"}
        strategies: {scratch_mlp: {}, fine_tune: {}}
        plugins: {disable: [fine_tune]}
        """,
    )
    result = cli("validate", recipe)
    assert result.exit_code == 2, result.output
    assert "strategies.fine_tune: unknown strategy 'fine_tune'" in result.output
    # Not "no installed plugin provides it", while `graftune plugins` lists it.
    assert "(the recipe's plugins.disable removes the plugin 'fine_tune')" in result.output
    assert "no installed plugin" not in result.output
    assert "available: " in result.output
    assert "Traceback" not in result.output
    # Another name: a plugin the recipe disables may be the one that provides it.
    from orchestrator.registry import Registry

    said = Registry("strategy").unknown_message("linear_probe", ["fine_tune"])
    assert "or a plugin the recipe's plugins.disable removes: fine_tune)" in said


def test_what_removed_a_name_is_said_beside_a_near_one():
    """Found by QA: disabling `logreg` said only "did you mean 'logreg_two'?", and a
    near name hid that autoload was off."""
    from orchestrator.registry import Registry

    class Near:
        name = "logreg_two"

    registry = Registry("strategy")
    registry.add(Near)
    said = registry.unknown_message("logreg", ["logreg"])
    assert "did you mean" not in said
    assert "(the recipe's plugins.disable removes the plugin 'logreg')" in said
    said = registry.unknown_message("logreg_tw", ["qa_plugin"])
    assert "did you mean 'logreg_two'?" in said and "removes: qa_plugin)" in said
    registry.why_missing = "GRAFTUNE_DISABLE_PLUGIN_AUTOLOAD is set: ..."
    said = registry.unknown_message("logreg_tw")
    assert "did you mean 'logreg_two'?" in said and "(GRAFTUNE_DISABLE_PLUGIN_AUTOLOAD" in said
    registry.why_missing = None
    said = registry.unknown_message("logreg_tw")  # a typo, likely: the near name alone
    assert said.startswith("unknown strategy 'logreg_tw' (did you mean 'logreg_two'?); ")


def test_a_data_source_whose_plugin_is_disabled_says_so(tmp_path):
    """The data source's message, alone of the three, left the recipe's own
    ``plugins.disable`` out: "no installed plugin provides it"."""
    recipe = write(
        tmp_path,
        """
        name: no-data
        data: {source: "sklearn:iris"}
        strategies: {scratch_mlp: {}}
        plugins: {disable: [graftune.data]}
        """,
    )
    result = cli("validate", recipe)
    assert result.exit_code == 2, result.output
    assert "data.source: unknown data source 'sklearn'" in result.output
    assert "or a plugin the recipe's plugins.disable removes: graftune.data)" in result.output


def test_disabling_a_plugin_the_recipe_does_not_name_keeps_it_valid(tmp_path):
    recipe = write(
        tmp_path,
        """
        name: without-fine-tune
        data: {source: "sklearn:iris"}
        strategies: {scratch_mlp: {}}
        plugins: {disable: [fine_tune, feature_extraction]}
        """,
    )
    result = cli("validate", recipe)
    assert result.exit_code == 0, result.output


def test_a_name_no_plugin_has_is_a_recipe_error(tmp_path):
    recipe = write(
        tmp_path,
        """
        name: typo
        data: {source: "sklearn:iris"}
        strategies: {scratch_mlp: {}}
        plugins:
          disable: [fine_tun, sklearn]
        """,
    )
    result = cli("validate", recipe)
    assert result.exit_code == 2, result.output
    assert "recipe.yaml:6: plugins.disable.0: no plugin is named 'fine_tun'" in result.output
    assert "did you mean 'fine_tune'?" in result.output
    # What a plugin adds is named with its plugin (found by QA: no word of it).
    assert (
        "plugins.disable.1: no plugin is named 'sklearn' ('sklearn' is a data source of "
        "plugin 'graftune.data': disable 'graftune.data', which disables all it adds, or "
        "leave the name out of the recipe)"
    ) in " ".join(result.output.split())


def test_an_unknown_key_under_plugins_suggests_disable(tmp_path):
    recipe = write(
        tmp_path,
        """
        name: typo
        data: {source: "sklearn:iris"}
        strategies: {scratch_mlp: {}}
        plugins: {disabled: [fine_tune]}
        """,
    )
    result = cli("validate", recipe)
    assert result.exit_code == 2, result.output
    assert "plugins.disabled: unknown key 'disabled' (did you mean 'disable'?)" in result.output


def test_a_run_honours_the_disable_list(graftune_run):
    board = graftune_run(
        {
            "name": "no-event-log",
            "data": {"source": "sklearn:iris"},
            "strategies": {"scratch_mlp": {"num_samples": 1}},
            "search": {"max_epochs": 1},
            "plugins": {"disable": ["graftune.events"]},
        }
    )
    run_dir = board.attrs["run_dir"]
    assert list(board["status"]) == ["ok"]
    assert (run_dir / "leaderboard.csv").is_file()
    assert not (run_dir / "events.jsonl").exists()


def test_a_given_host_must_not_hold_a_plugin_the_recipe_disables(tmp_path):
    recipe = write(
        tmp_path,
        """
        name: mismatch
        data: {source: "sklearn:iris"}
        strategies: {scratch_mlp: {}}
        plugins: {disable: [fine_tune]}
        output: runs/
        """,
    )
    with pytest.raises(RecipeError, match="has it registered"):
        run_recipe(recipe, host=get_plugin_manager())
    assert not (tmp_path / "runs").exists()


# -- autoload and --plugin ------------------------------------------------------------------

MLP_RECIPE = """
name: mlp
data: {source: "sklearn:iris"}
strategies: {scratch_mlp: {}}
"""


def test_autoload_off_leaves_only_graftunes_host_plugins(tmp_path, monkeypatch):
    """Any value turns autoload off, 0 too, as pytest reads PYTEST_DISABLE_PLUGIN_AUTOLOAD.
    Found by QA: `graftune plugins` listed no strategy with =0 and did not say why."""
    monkeypatch.setenv("GRAFTUNE_DISABLE_PLUGIN_AUTOLOAD", "0")
    result = cli("validate", write(tmp_path, MLP_RECIPE))
    assert result.exit_code == 2, result.output
    assert "unknown strategy 'scratch_mlp'" in result.output
    assert "GRAFTUNE_DISABLE_PLUGIN_AUTOLOAD is set (to '0'; any value but empty" in result.output
    listed = cli("plugins")
    assert listed.exit_code == 0, listed.output
    plugin_table = listed.stdout.split("\n\n")[0]  # then the table of names
    names = {line.split()[0] for line in plugin_table.splitlines()[1:] if line.strip()}
    assert names == {"graftune.bases", "graftune.data", "graftune.events"}
    assert listed.stderr.replace("\n", " ") == (
        "note: GRAFTUNE_DISABLE_PLUGIN_AUTOLOAD is set (to '0'; any value but empty turns "
        "autoload off): plugins installed by entry point, graftune's own strategies among "
        "them, are not loaded "
    )
    # Empty is unset.
    monkeypatch.setenv("GRAFTUNE_DISABLE_PLUGIN_AUTOLOAD", "")
    listed = cli("plugins")
    assert listed.exit_code == 0 and not listed.stderr, listed.output
    assert "scratch_mlp" in listed.stdout
    # Each name with its class's description (found by QA: documented, never shown).
    from orchestrator.builtin_plugins.scratch_mlp import ScratchMLP

    described = [line for line in listed.stdout.splitlines() if "strategy scratch_mlp" in line]
    assert described and ScratchMLP.description in described[-1]
    # For scripts, the same as JSON.
    listed = cli("plugins", "--format", "json")
    assert listed.exit_code == 0, listed.output
    plugins = {entry["plugin"]: entry for entry in json.loads(listed.stdout)}
    assert plugins["scratch_mlp"]["adds"] == ["strategy scratch_mlp"]
    assert plugins["scratch_mlp"]["descriptions"] == {
        "strategy scratch_mlp": ScratchMLP.description
    }
    assert plugins["scratch_mlp"]["distribution"] == "graftune"
    assert plugins["graftune.events"]["adds"] == [
        "hook run_finished", "hook run_started", "hook trial_finished"
    ]  # fmt: skip


def test_the_plugin_option_loads_a_module_and_logs_the_act_of_trust(tmp_path, monkeypatch, caplog):
    from ray import cloudpickle

    monkeypatch.setenv("GRAFTUNE_DISABLE_PLUGIN_AUTOLOAD", "1")
    module = "orchestrator.builtin_plugins.scratch_mlp"
    try:
        with caplog.at_level(logging.WARNING, logger="orchestrator.plugin_manager"):
            result = cli("validate", write(tmp_path, MLP_RECIPE), "--plugin", module)
    finally:
        # An explicit plugin travels to Ray workers by value; the built-in need not, later.
        cloudpickle.unregister_pickle_by_value(sys.modules[module])
    assert result.exit_code == 0, result.output
    assert f"loading plugin {module} explicitly (not installed): code from it will run" in (
        caplog.text
    )


LOCAL_PLUGIN = """
import keras

from orchestrator import Fixed, hookimpl
from orchestrator.builtin_plugins.scratch_mlp import ScratchMLP


@keras.saving.register_keras_serializable(package="gt_local")
class Twice(keras.layers.Layer):
    def call(self, x):
        return 2 * x


class LocalMLP(ScratchMLP):
    name = "local_mlp"

    def search_space(self, context):
        return {
            "hidden_layers": Fixed(1),
            "width": Fixed(8),
            "lambda": Fixed(0.0),
            "learning_rate": Fixed(0.01),
        }


@hookimpl
def graftune_register_strategies(registry):
    registry.add(LocalMLP)
"""


@pytest.fixture
def local_plugin(tmp_path, monkeypatch):
    """A plugin module in the current folder, as a user would pass it to --plugin."""
    (tmp_path / "gt_local_plugin.py").write_text(LOCAL_PLUGIN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield "gt_local_plugin"
    module = sys.modules.pop("gt_local_plugin", None)
    if module is not None:
        from ray import cloudpickle

        with contextlib.suppress(ValueError):
            cloudpickle.unregister_pickle_by_value(module)


def test_the_plugin_option_finds_a_module_in_the_current_folder(local_plugin, tmp_path):
    recipe = write(tmp_path, MLP_RECIPE.replace("scratch_mlp", "local_mlp"))
    assert cli("validate", recipe).exit_code == 2
    result = cli("validate", recipe, "--plugin", local_plugin)
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_a_run_with_a_plugin_module_that_is_not_installed(local_plugin, tmp_path, ray_session):
    import keras

    # A base with a layer the module registers: the workers, which never import
    # the module, could not load it, and every fine_tune trial failed.
    sys.path.append(str(tmp_path))  # (the fixture puts sys.path back)
    twice = importlib.import_module(local_plugin).Twice
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(8)(twice()(inputs))).save(tmp_path / "base.keras")
    recipe = write(
        tmp_path,
        """
        name: local
        data: {source: "sklearn:iris"}
        base: {path: base.keras}
        strategies:
          local_mlp: {num_samples: 1}
          fine_tune: {num_samples: 1, space: {frozen_layers: 0, head_width: 8}}
        search: {max_epochs: 1, metric: val_loss}
        cache: false
        output: runs/
        """,
    )
    result = cli("run", recipe, "--plugin", local_plugin, "--quiet")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    frame = pd.read_csv(run_dir / "leaderboard.csv")
    assert set(frame["status"]) == {"ok"}, frame[["strategy", "error"]]
    # Its model predicts where the module is given again (Keras' kilobyte of config before).
    (tuned,) = frame.loc[frame["strategy"] == "fine_tune", "trial_id"]
    del keras.saving.get_custom_objects()["gt_local>Twice"]
    sys.modules.pop(local_plugin)
    args = ["predict", run_dir, "--data", "sklearn:iris", "--trial", f"fine_tune/{tuned}"]
    refused = cli(*args)
    assert refused.exit_code == 2, refused.output
    assert "the custom Keras object 'Twice'" in refused.output
    assert len(refused.output) < 600
    predicted = cli(*args, "--plugin", local_plugin)
    assert predicted.exit_code == 0, predicted.output
    # The metric the best was chosen by, first (it said val_accuracy alone).
    assert re.search(r"best: local_mlp trial \S+ val_loss=\d\.\d+ val_accuracy=", result.output)


def test_an_installed_plugins_keras_objects_are_registered_where_models_are_made_or_loaded(
    graftune_register, tmp_path, ray_session, monkeypatch
):
    """Found by QA: an installed plugin with a custom layer could register it at
    import (Keras imported by every command: `graftune plugins` took 17 s) or in its
    build (a Ray worker saved the model, which predict could not load)."""
    import zipfile

    import keras

    from tests import keras_object_plugin

    graftune_register(keras_object_plugin, name="scaled")
    recipe = write(
        tmp_path,
        """
        name: scaled
        data: {source: "sklearn:iris"}
        strategies: {scaled_mlp: {num_samples: 1}}
        search: {max_epochs: 1}
        output: runs/
        """,
    )
    result = cli("run", recipe, "--quiet")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert list(pd.read_csv(run_dir / "leaderboard.csv")["status"]) == ["ok"]
    # The trial's worker saved the layer under the name the hook registered.
    with zipfile.ZipFile(run_dir / "best" / "model.keras") as saved:
        assert '"registered_name": "tests>Scale"' in saved.read("config.json").decode()
    # Where the plugin is not installed, the model cannot load, and the way is said.
    del keras.saving.get_custom_objects()["tests>Scale"]
    monkeypatch.setenv("GRAFTUNE_DISABLE_PLUGIN_AUTOLOAD", "1")
    refused = cli("predict", run_dir, "--data", "sklearn:iris")
    assert refused.exit_code == 2, refused.output
    assert "the custom Keras object 'Scale'" in refused.output
    assert "graftune_keras_objects" in refused.output
    # Autoload off, and said (found by QA: the plugin was installed, and nothing said why).
    assert "GRAFTUNE_DISABLE_PLUGIN_AUTOLOAD is set" in " ".join(refused.output.split())
    # Export loads it first: it copied the file that cannot be loaded, and said exported.
    refused = cli("export", run_dir, tmp_path / "refused")
    assert refused.exit_code == 2, refused.output
    assert "the custom Keras object 'Scale'" in refused.output
    assert not (tmp_path / "refused").exists()
    monkeypatch.delenv("GRAFTUNE_DISABLE_PLUGIN_AUTOLOAD")
    predicted = cli("predict", run_dir, "--data", "sklearn:iris")
    assert predicted.exit_code == 0, predicted.output
    exported = cli("export", run_dir, tmp_path / "exported")
    assert exported.exit_code == 0, exported.output
    # Outside graftune, importing the layer's module does not register the name the
    # model holds (found by QA): graftune.json names it, and says how to load it.
    metadata = json.loads((tmp_path / "exported" / "graftune.json").read_text())
    assert metadata["custom_objects"] == {"tests>Scale": "tests.keras_layers.Scale"}
    assert metadata["load"] == (
        "import keras; from tests.keras_layers import Scale; model = keras.saving.load_model("
        "'model.keras', safe_mode=True, custom_objects={'tests>Scale': Scale}); model.predict(x)"
    )
    del keras.saving.get_custom_objects()["tests>Scale"]
    from tests.keras_layers import Scale

    loaded = keras.saving.load_model(
        tmp_path / "exported" / "model.keras", safe_mode=True, custom_objects={"tests>Scale": Scale}
    )
    assert loaded.get_layer("scale").factor == 0.5


def test_a_plugin_package_s_layer_shipped_by_value_is_saved_under_its_registered_name(
    tmp_path, monkeypatch
):
    """Found by QA: a `--plugin` package is shipped to Ray workers by value, its
    layer class with it, while its strategy's build imported the module's own
    class: that one was not registered, and the model named it `Halve`, which
    neither predict nor export could load."""
    import pickle
    import subprocess
    import zipfile

    import keras

    from orchestrator.trial import register_custom_objects

    package = tmp_path / "gt_byvalue"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "layers.py").write_text(
        "import keras\n\n\nclass Halve(keras.layers.Layer):\n"
        "    def call(self, x):\n        return x * 0.5\n"
    )
    # Pickled in another process, as the driver does: unpickled here, as in a worker,
    # the class is a copy made from its code.
    shipped = tmp_path / "objects.pkl"
    ship = (
        "import sys; from ray import cloudpickle; import gt_byvalue; "
        "from gt_byvalue.layers import Halve; "
        "cloudpickle.register_pickle_by_value(gt_byvalue); "
        "open(sys.argv[1], 'wb').write(cloudpickle.dumps({'gt_byvalue>Halve': Halve}))"
    )
    made = subprocess.run(
        [sys.executable, "-c", ship, str(shipped)], cwd=tmp_path, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr[-2000:]
    monkeypatch.syspath_prepend(str(tmp_path))
    objects = pickle.loads(shipped.read_bytes())
    from gt_byvalue.layers import Halve  # what the strategy's build imports

    try:
        assert objects["gt_byvalue>Halve"] is not Halve
        register_custom_objects(objects)
        inputs = keras.Input((3,))
        keras.Model(inputs, Halve()(inputs)).save(tmp_path / "model.keras")
        with zipfile.ZipFile(tmp_path / "model.keras") as saved:
            assert '"registered_name": "gt_byvalue>Halve"' in saved.read("config.json").decode()
        keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    finally:
        keras.saving.get_custom_objects().pop("gt_byvalue>Halve", None)
        for name in ("gt_byvalue.layers", "gt_byvalue"):
            sys.modules.pop(name, None)


def test_a_run_name_too_long_for_the_file_system_is_refused_writing_nothing(tmp_path):
    recipe = write(tmp_path, MLP_RECIPE + "output: runs/\n")
    result = cli("run", recipe, "--run-name", "a" * 260)
    assert result.exit_code == 2, result.output  # was "internal error: OSError", exit 1
    assert "is 260 bytes, and a file system allows 255" in result.output
    assert not (tmp_path / "runs").exists()


def test_a_console_that_cannot_show_a_character_gets_it_escaped(tmp_path):
    """Found by QA: PYTHONIOENCODING=ascii (or a Latin-1 terminal) ended commands
    in a UnicodeEncodeError's traceback."""
    import os
    import subprocess

    (tmp_path / "é.csv").write_text("x,y\n1,a\n2,b\n")
    recipe = write(tmp_path, MLP_RECIPE.replace('"sklearn:iris"}', '"csv:é.csv", target: y}'))
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    graftune = str(Path(sys.executable).with_name("graftune"))
    done = subprocess.run(
        [graftune, "validate", str(recipe)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "csv:\\xe9.csv" in done.stdout, done.stdout


def test_a_plugin_module_that_fails_to_import_is_named(tmp_path, monkeypatch):
    with pytest.raises(PluginLoadError) as info:
        get_plugin_manager(extra_plugins=["gt_no_such_plugin_module"])
    assert "plugin module 'gt_no_such_plugin_module' (--plugin) failed to import" in str(info.value)
    # A name that is no module (a typo) is a wrong command line: exit 2, not 3 (found
    # by QA); a module whose own import fails for a missing dependency is broken: 3.
    assert info.value.exit_status == 2
    (tmp_path / "gt_needs_a_dependency.py").write_text("import gt_not_installed_anywhere\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PluginLoadError) as info:
        get_plugin_manager(extra_plugins=["gt_needs_a_dependency"])
    assert "No module named 'gt_not_installed_anywhere'" in str(info.value)
    assert info.value.exit_status == 3
    # A module that exits as it is imported (a script) ended graftune itself: usage
    # text from its argparse and exit 2, or nothing at all and exit 0.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gt_exits_on_import.py").write_text("import sys\nsys.exit(0)\n")
    with pytest.raises(PluginLoadError) as info:
        get_plugin_manager(extra_plugins=["gt_exits_on_import"])
    assert "failed to import: SystemExit: 0 (it exits when imported" in str(info.value)
    # A file path: it said "No module named 'bad/x'", or a relative-import TypeError.
    for path in ("bad/x.py", "./bad/x.py"):
        with pytest.raises(PluginLoadError) as info:
            get_plugin_manager(extra_plugins=[path])
        assert "--plugin takes a module's import name, not a file path: 'bad.x'" in str(info.value)
        assert info.value.exit_status == 2
    # An absolute path: 'tmp.….bad.x' was named, which imports from nowhere.
    with pytest.raises(PluginLoadError) as info:
        get_plugin_manager(extra_plugins=[str(tmp_path / "bad" / "x.py")])
    assert (
        f"not a file path: 'x' for {tmp_path / 'bad' / 'x.py'}, run from {tmp_path / 'bad'} "
        f"or with PYTHONPATH={tmp_path / 'bad'}"
    ) in str(info.value)


def test_a_registration_hook_may_take_fewer_arguments_than_its_specification():
    from orchestrator import hookimpl

    calls = []

    class Counter:
        @hookimpl
        def graftune_register_strategies(self):  # pluggy allows it; it was a TypeError
            calls.append("strategies")

    host = get_plugin_manager(autoload=False, extra_plugins=[Counter()])
    assert calls == ["strategies"]
    assert "scratch_mlp" not in host.strategies  # no entry points
    assert "csv" in host.data_sources  # the other registries are filled as before


# -- errors that name the plugin and its distribution -----------------------------------


def make_distribution(site: Path, name: str, module: str, source: str) -> None:
    """An installed distribution ``NAME 0.3`` whose entry point NAME is ``module``."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{name.replace('-', '_')}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[graftune]\nentry_{module} = {module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for module in [m for m in sys.modules if m.startswith("gt_ctl_")]:
        del sys.modules[module]


@pytest.mark.parametrize(
    ("source", "error", "words"),
    [
        ("raise ImportError('missing dependency')", PluginLoadError, "failed to import"),
        (
            """
            from orchestrator import hookimpl

            @hookimpl
            def graftune_register_strategies(registri):
                pass
            """,
            PluginError,
            "{'registri'} are declared in the hookimpl but can not be found in the hookspec "
            "(graftune_register_strategies takes: registry, or fewer of them)",
        ),
        (
            """
            from orchestrator import hookimpl

            @hookimpl
            def graftune_trial_finish(result):
                pass
            """,
            PluginError,
            "graftune_trial_finish",
        ),
    ],
    ids=["import", "argument-name", "unknown-hook"],
)
def test_a_broken_plugin_is_named_with_its_distribution(site, source, error, words):
    make_distribution(site, "graftune-broken-thing", "gt_ctl_broken", source)
    with pytest.raises(error) as info:
        get_plugin_manager()
    message = str(info.value)
    assert "entry_gt_ctl_broken" in message
    assert "graftune-broken-thing 0.3" in message
    assert words in message


def test_the_command_line_names_it_and_exits_3(site, tmp_path):
    make_distribution(site, "graftune-broken-thing", "gt_ctl_cli", "import gt_ctl_nothing_here\n")
    result = cli("validate", write(tmp_path, MLP_RECIPE))
    assert result.exit_code == 3
    assert "graftune-broken-thing 0.3" in result.output
    # One broken plugin stops every command: the way on is said (found by QA).
    assert (
        "to do without it: pip uninstall graftune-broken-thing, or plugins: {disable: "
        "[entry_gt_ctl_cli]} in a recipe"
    ) in " ".join(result.output.split())
    recipe = MLP_RECIPE + "plugins: {disable: [entry_gt_ctl_cli]}\n"
    assert cli("validate", write(tmp_path, recipe)).exit_code == 0
    assert "Traceback" not in result.output


def test_plugins_lists_what_loads_and_names_what_does_not(site):
    make_distribution(site, "graftune-broken-thing", "gt_ctl_list", "import gt_ctl_nothing_here\n")
    result = cli("plugins")
    assert result.exit_code == 3
    assert "scratch_mlp" in result.output  # the built-ins are still listed
    assert "entry_gt_ctl_list" in result.output and "failed to import" in result.output
    assert "Traceback" not in result.output


BROKEN_RECIPE = """
name: broken
data: {source: "sklearn:digits"}
strategies: {scratch_mlp: {num_samples: 1}, NAME: {num_samples: 1}}
search: {max_epochs: 1}
output: runs/
"""


@pytest.mark.parametrize(
    ("cls", "owner", "words"),
    [
        (broken.ForeignSpace, "foreign", "'learning_rate' is builtins.tuple"),
        # Found only as a run resolved its space, and blamed on the recipe.
        (
            broken.AllWithoutABase,
            "culprit",
            "'hidden_layers': 'all' counts the cut points of a base",
        ),
    ],
)
def test_a_bad_space_of_a_plugin_is_refused_by_validate(
    graftune_register, tmp_path, cls, owner, words
):
    graftune_register(broken.Registers(cls), name=owner)
    result = cli("validate", write(tmp_path, BROKEN_RECIPE.replace("NAME", cls.name)))
    assert result.exit_code == 3, result.output
    assert (
        f"strategy {cls.name!r} from plugin {owner} (graftune-testing-{owner} 0) has a bad "
        f"search space: {words}"
    ) in result.output


def test_a_strategy_without_build_or_a_space_validate_can_read_is_refused_in_its_words(
    graftune_register, tmp_path
):
    """Found by QA: validate passed a build() misspelt (the run alone refused it), and
    a space bounded by context.task got Python's words alone."""
    for cls, words in (
        (broken.MisspeltBuild, "does not implement build() (is 'bulid' meant to be build?)"),
        (
            broken.TaskInSpace,
            ": search_space() raised AttributeError: 'NoneType' object has no attribute "
            "'n_classes' (a recipe is checked with an empty SpaceContext(): context.task and "
            "context.base may be None;",
        ),
        (broken.NoBuild, "does not implement build()"),
        (
            broken.FitTakesAnExtraArgument,
            "its fit() (" + broken.__file__,  # where it is, then the call it must take
        ),
        # Found by QA: validate said ok, and the run refused it.
        (broken.Unpicklable, "does not pickle"),
    ):
        graftune_register(broken.Registers(cls), name="culprit")
        result = cli("validate", write(tmp_path, BROKEN_RECIPE.replace("NAME", cls.name)))
        assert result.exit_code == 3, result.output
        said = " ".join(result.output.split())
        assert f"strategy {cls.name!r} from plugin culprit (graftune-testing-culprit 0)" in said
        assert words in said


def test_validate_refuses_a_keras_objects_hook_that_would_stop_every_run(
    graftune_register, tmp_path
):
    """Found by QA: a graftune_keras_objects hook returning a dotted name passed
    validate; every run, of any strategy, then stopped on it."""
    from orchestrator import hookimpl

    class NamesItsLayer:
        @hookimpl
        def graftune_keras_objects(self):
            return ["mypkg.layers.Quad"]

    graftune_register(NamesItsLayer(), name="namer")
    result = cli("validate", write(tmp_path, BROKEN_RECIPE.replace(", NAME: {num_samples: 1}", "")))
    assert result.exit_code == 3, result.output
    said = " ".join(result.output.split())
    assert "graftune_keras_objects returned 'mypkg.layers.Quad', not a Keras class" in said


@pytest.mark.parametrize(
    ("cls", "words"),
    [
        (
            broken.NeedsArguments,
            "making it (NeedsArguments()) raised TypeError: NeedsArguments.__init__() "
            "missing 1 required positional argument: 'width'",
        ),
        (broken.RaisesWhenMade, "(RaisesWhenMade()) raised RuntimeError: no GPU here"),
    ],
)
def test_a_strategy_that_cannot_be_made_bare_is_a_plugin_error(
    graftune_register, tmp_path, cls, words
):
    """Found by QA: "internal error", exit status 1, from validate and run alike."""
    graftune_register(broken.Registers(cls), name="culprit")
    recipe = write(tmp_path, BROKEN_RECIPE.replace("NAME", cls.name))
    for command in ("validate", "run"):
        result = cli(command, recipe)
        assert result.exit_code == 3, result.output
        said = " ".join(result.output.split())
        assert f"strategy {cls.name!r} from plugin culprit (graftune-testing-culprit 0)" in said
        assert words in said
        assert "give __init__'s parameters defaults" in said
        assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("cls", "words"),
    [
        (broken.Uncompiled, "build() returned a model that is not compiled"),
        (broken.WrongShape, "output shape (None, 11); expected (None, 10)"),
        (broken.LogitsOut, "outputs that are not class probabilities (each row in [0, 1]"),
        # Found by QA: each let every trial fail, in Keras' words or the trial's.
        (
            broken.FixedInput,
            "build() returned a model whose input has shape (4,); the task's inputs have "
            "shape (8, 8, 1) (build the model on keras.Input(task.input_shape))",
        ),
        (broken.NoMetrics, "compiled without metrics, whose epochs log no val_accuracy"),
        (broken.DefaultsNotADict, "default_config() returned list, not a dict"),
        # It ended the whole run at its search ("internal error"), the strategies
        # before it unranked, and every resume again.
        (broken.Unpicklable, "does not pickle (TypeError: cannot pickle '_thread.lock'"),
        (broken.NoBuild, "does not implement build()"),
        # Found by QA: the run searched a parameter validate never saw, and no recipe
        # could narrow it (its key is unknown to validate).
        (
            broken.KeysDiffer,
            "search_space() names other parameters for the run's task (extra_units, hidden_layers,",
        ),
        # Its run finished ok, with a best/model.keras that predict could not load.
        (
            broken.UnregisteredLayer,
            # (saved as 'in_build>Shift' once a test before registered it so)
            "would be saved but could not be loaded again: it uses the custom Keras object 'Shift'",
        ),
        # Found by QA: each passed validate and the driver's build, and every trial failed.
        (
            broken.FitTakesAnExtraArgument,
            "cannot be called as graftune calls it, fit(model, config, "
            "data, *, epochs, callbacks): missing a required argument: 'extra'",
        ),
        (
            broken.CategoricalLoss,
            "its loss cannot be computed on integer class labels (the labels graftune trains "
            "with, shape (batch,)): ValueError: Arguments `target` and `output` must have the "
            "same rank",
        ),
    ],
)
def test_a_model_against_the_contract_stops_the_run_before_any_trial(
    graftune_register, tmp_path, cls, words
):
    host = graftune_register(broken.Registers(cls), name="culprit")
    recipe = write(tmp_path, BROKEN_RECIPE.replace("NAME", cls.name))
    with pytest.raises(PluginError) as info:
        run_recipe(recipe, host=host)
    message = str(info.value)
    assert f"strategy {cls.name!r} from plugin culprit (graftune-testing-culprit 0)" in message
    assert words in message
    # Nothing was written: no run directory, so no trial ran.
    assert not (tmp_path / "runs").exists()


def test_defaults_outside_the_strategys_own_space_are_named_and_start_at_the_middle(
    graftune_register, graftune_run, caplog
):
    host = graftune_register(broken.Registers(broken.DefaultsOutsideItsSpace), name="culprit")
    recipe = {
        "name": "defaults",
        "data": {"source": "sklearn:iris"},
        "strategies": {"defaults_outside_its_space": {"num_samples": 1}},
        "search": {"max_epochs": 1},
    }
    with caplog.at_level(logging.WARNING, logger="orchestrator.preflight"):
        board = graftune_run(recipe, host=host)
    assert list(board["status"]) == ["ok"]
    # The middle of its loguniform [1e-3, 1e-2], not the 0.5 it asked for.
    assert board["learning_rate"].iloc[0] == pytest.approx(10**-2.5)
    assert (
        "strategy 'defaults_outside_its_space' from plugin culprit (graftune-testing-culprit 0): "
        "default_config() does not fit its search space (learning_rate=0.5 is not a value of "
        "loguniform [0.001, 0.01]); those dimensions start at their middle"
    ) in caplog.text
    # Once: the recipe's check and the search each ask for the defaults.
    assert caplog.text.count("default_config() does not fit") == 1


def test_a_strategy_whose_build_raises_is_left_to_its_trials(graftune_run, caplog):
    from tests import fixture_plugins

    with caplog.at_level(logging.WARNING, logger="orchestrator.preflight"):
        board = graftune_run(
            {
                "name": "raising",
                "data": {"source": "sklearn:iris"},
                "strategies": {"raising": {"num_samples": 1}},
                "search": {"max_epochs": 1},
            },
            plugins=[fixture_plugins],
        )
    assert list(board["status"]) == ["error"]
    assert "strategy 'raising' from plugin tests.fixture_plugins (not installed)" in caplog.text


def test_a_plugin_module_the_recipe_disables_is_known_and_not_imported(tmp_path, monkeypatch):
    """``--plugin m`` with ``plugins: {disable: [m]}`` said "no plugin is named 'm'"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gt_disabled_here.py").write_text("raise RuntimeError('imported')\n")
    recipe = write(
        tmp_path,
        "name: disabled\ndata: {source: 'sklearn:iris'}\nstrategies: {scratch_mlp: {}}\n"
        "plugins: {disable: [gt_disabled_here]}\n",
    )
    result = cli("validate", str(recipe), "--plugin", "gt_disabled_here")
    assert result.exit_code == 0, result.output
    assert "gt_disabled_here" not in sys.modules


def test_an_export_names_a_plugins_custom_functions_and_its_load_line_runs(tmp_path, monkeypatch):
    """Found by QA: a registered activation function is saved as
    {"class_name": "function", "config": "<name>"}: graftune.json left it out, and
    its load line was not Python one could run (no import, no ``model =``)."""
    import keras
    import numpy as np

    from orchestrator import export
    from tests.keras_layers import Scale, halved_relu

    keras.saving.register_keras_serializable("tests")(Scale)
    keras.saving.register_keras_serializable("tests")(halved_relu)
    try:
        model = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(4, activation=halved_relu), Scale(2.0)]
        )
        model.save(tmp_path / "model.keras")
        custom = export._custom_objects(tmp_path / "model.keras")
        assert custom == {
            "tests>Scale": "tests.keras_layers.Scale",
            "tests>halved_relu": "tests.keras_layers.halved_relu",
        }
        line = export._how_to_load(custom)
    finally:
        del keras.saving.get_custom_objects()["tests>Scale"]
        del keras.saving.get_custom_objects()["tests>halved_relu"]
    # The line runs as it is, where the file is, with nothing registered.
    monkeypatch.chdir(tmp_path)
    x = np.ones((2, 3), "float32")
    namespace: dict = {"x": x}
    exec(line, namespace)
    np.testing.assert_allclose(
        namespace["model"].predict(x, verbose=0), model.predict(x, verbose=0)
    )


def test_predict_and_export_keep_the_plugins_the_run_disabled_off(site, tmp_path):
    """Found by QA: a run that disabled a broken plugin (as the error tells one to)
    finished, and then predict and export failed on that plugin, exit 3."""
    make_distribution(site, "graftune-broken-thing", "gt_ctl_after", "import gt_ctl_nothing\n")
    recipe = MLP_RECIPE + "plugins: {disable: [entry_gt_ctl_after]}\n"
    # Trained here (keras_tuner): the plugins are loaded, or refused, where the run
    # starts, and Ray's workers never see this test's site folder anyway.
    recipe += "search: {backend: keras_tuner, num_samples: 1, max_epochs: 1}\noutput: runs/\n"
    result = cli("run", write(tmp_path, recipe), "--quiet")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    predicted = cli("predict", run_dir, "--data", "sklearn:iris")
    assert predicted.exit_code == 0, predicted.output
    exported = cli("export", run_dir, tmp_path / "exported")
    assert exported.exit_code == 0, exported.output
    # From Python too, with no host given (found by mutation testing: only the CLI,
    # which gives its own, was tried).
    from orchestrator.predict import predict

    assert len(predict(run_dir, "sklearn:iris").frame) == 150
    # A run that did not disable it: the plugin is at fault, and named.
    refused = cli("predict", tmp_path / "nowhere", "--data", "sklearn:iris")
    assert refused.exit_code == 3 and "graftune-broken-thing 0.3" in refused.output


@pytest.mark.parametrize("name", ["my run", "-x", "a%b", " a", "é"])
def test_a_run_name_is_held_to_a_recipes_name_rule(tmp_path, name):
    """Found by QA: --run-name took spaces, a leading '-' (a folder other commands
    read as an option) and '%', which a recipe's name may not have."""
    recipe = write(tmp_path, MLP_RECIPE + "output: runs/\n")
    result = cli("run", recipe, "--run-name", name)
    assert result.exit_code == 2, result.output
    assert f"run name {name!r}: expected a folder name, of ASCII letters, digits" in result.output
    assert not (tmp_path / "runs").exists()


def test_empty_cluster_options_and_addresses_are_refused(tmp_path, monkeypatch):
    """Found by QA: --address "$HEAD" with HEAD unset ran the search here, with no word
    (and validate of its recipe.yaml said "runs on the Ray cluster at  "); --storage ""
    stored the run in the current folder, where storage: "" is refused."""
    monkeypatch.chdir(tmp_path)
    recipe = write(tmp_path, MLP_RECIPE + "output: runs/\n")
    for option, said in (
        ("--address", "--address is empty: give the cluster's GCS address HEAD:6379"),
        ("--storage", "--storage is empty: give a folder, or a URI"),
    ):
        result = cli("run", recipe, option, " ")
        assert result.exit_code == 2, result.output
        assert said in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]
    empty = write(tmp_path, MLP_RECIPE + "resources: {address: ''}\n", "empty.yaml")
    result = cli("validate", empty)
    assert result.exit_code == 2, result.output
    assert "empty.yaml:5: resources.address: an empty address: give the cluster's" in (
        result.output
    )
    # "local" is embedded Ray in a recipe too, as --address local (found by QA: validate
    # said ok and the run refused it as no cluster address).
    from orchestrator.recipe import load_recipe

    local = write(tmp_path, MLP_RECIPE + "resources: {address: local}\n", "local.yaml")
    assert load_recipe(local).resources.address is None
    # A dashboard's: Ray took another scheme for a module to import (exit 4, "Module:
    # ftp does not exist"); an empty one for none given, falling back on RAY_ADDRESS.
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:1")
    for address, said in (
        ("ftp://127.0.0.1:1", "is reached over http:// or https://, not ftp://"),
        ("", "--address is empty: give the cluster's dashboard address"),
    ):
        result = cli("jobs", "list", "--address", address)
        assert result.exit_code == 2, result.output
        assert said in result.output
    # A blank RAY_API_SERVER_ADDRESS is none, as a blank RAY_ADDRESS (found by QA: an
    # internal error, "Failed to parse: Host ' '").
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", " ")
    monkeypatch.setenv("RAY_ADDRESS", " ")
    result = cli("jobs", "list")
    assert result.exit_code == 2, result.output
    assert "give the cluster's dashboard address: --address http://HEAD:8265" in result.output


def test_empty_path_options_are_refused(tmp_path, monkeypatch):
    """--run-dir "$DIR" with DIR unset was the current folder, where the run wrote
    itself unsaid; --out "" of report and predict named "." as a folder."""
    monkeypatch.chdir(tmp_path)
    recipe = write(tmp_path, MLP_RECIPE)
    for args in (
        ["run", recipe, "--run-dir", ""],
        ["run", "--resume", " "],
        ["report", tmp_path, "--out", ""],
        ["predict", tmp_path, "--data", recipe, "--out", ""],
    ):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        assert "is empty: give a path (is a shell variable unset?)" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]


def test_debug_shows_where_a_missing_run_was_found(tmp_path):
    """Found by QA: `leaderboard` and `run --resume` said one line under --debug too."""
    for args in (["leaderboard", tmp_path], ["run", "--resume", tmp_path]):
        result = cli("--debug", *args)
        assert result.exit_code == 2, result.output
        assert "Traceback (most recent call last)" in result.output
        assert "RunDirError" in result.output


def test_validate_here_refuses_a_cache_folder_a_base_cannot_be_kept_in(tmp_path, monkeypatch):
    """Found by QA: --here passed a $GRAFTUNE_CACHE_DIR that is a file; run refused it."""
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(tmp_path / "file"))
    based = write(
        tmp_path,
        "name: b\ndata: {source: 'sklearn:digits'}\nstrategies: {feature_extraction: {}}\n"
        "base: {pretrain: {data: {source: 'sklearn:digits'}}}\n",
    )
    result = cli("validate", based, "--here")
    assert result.exit_code == 2, result.output
    assert f"cache folder {tmp_path / 'file'} ($GRAFTUNE_CACHE_DIR" in result.output
    result = cli("validate", based)
    assert result.exit_code == 0, result.output
    assert "note: graftune's cache folder" in result.output
    assert "`graftune run` here would refuse it" in result.output
    plain = write(tmp_path, MLP_RECIPE, "plain.yaml")  # no base: the cache is not used
    assert cli("validate", plain, "--here").exit_code == 0


def test_a_run_dir_and_a_run_name_together_are_refused(tmp_path):
    """Found by QA: the run name was dropped without a word."""
    recipe = write(tmp_path, MLP_RECIPE + "output: runs/\n")
    result = cli("run", recipe, "--run-dir", tmp_path / "here", "--run-name", "there")
    assert result.exit_code == 2, result.output
    assert "a run name ('there') and a run directory" in result.output
    assert "give one of them" in result.output
    assert not (tmp_path / "here").exists() and not (tmp_path / "runs").exists()
