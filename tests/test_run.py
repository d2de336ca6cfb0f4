"""End to end through real Ray on tiny data: recipe -> strategies -> leaderboard -> best model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(e2e_run):
    """The session's real run of five strategies (tests/conftest.py)."""
    return e2e_run.outcome


def test_every_strategy_has_rows(finished_run):
    frame = finished_run.leaderboard
    counts = frame.groupby("strategy").size().to_dict()
    assert counts == {
        "scratch_mlp": 2,
        "feature_extraction": 2,
        "fine_tune": 2,
        "exploding_mlp": 1,
        "raising": 1,
    }
    ok = frame[frame["status"] == "ok"]
    assert set(ok["strategy"]) == {"scratch_mlp", "feature_extraction", "fine_tune"}
    assert ok["val_accuracy"].between(0, 1).all()
    assert ok["test_accuracy"].between(0, 1).all()
    assert (ok["epochs"] == 2).all()
    assert (ok["params_trainable"] <= ok["params_total"]).all()
    assert (ok["fit_seconds"] > 0).all()


def test_rows_are_ranked_by_the_metric(finished_run):
    frame = finished_run.leaderboard
    ranked = frame[frame["rank"].notna()]
    assert list(ranked["rank"]) == list(range(1, len(ranked) + 1))
    assert ranked["val_accuracy"].is_monotonic_decreasing
    # Failed rows have no rank and come last.
    unranked = frame[frame["rank"].isna()]
    assert set(unranked["status"]) == {"error", "diverged"}
    assert list(frame.index[frame["rank"].isna()]) == list(range(len(ranked), len(frame)))


def test_columns_name_every_searched_parameter(finished_run):
    columns = set(finished_run.leaderboard.columns)
    expected = {
        "rank", "strategy", "trial_id", "status", "val_accuracy", "test_accuracy",
        "frozen_layers", "head_width", "head_depth", "hidden_layers", "width", "lambda",
        "learning_rate", "epochs", "fit_seconds", "params_total", "params_trainable", "error",
    }  # fmt: skip
    assert expected <= columns


def test_a_raising_strategy_marks_its_trial_error(finished_run):
    row = finished_run.leaderboard.set_index("strategy").loc["raising"]
    assert row["status"] == "error"
    assert "RuntimeError: deliberate failure in build" in row["error"]
    trial = finished_run.run_dir / "trials" / "raising" / row["trial_id"]
    assert "Traceback" in (trial / "error.txt").read_text()
    # What it printed, warned and logged in its Ray worker (found by QA: nowhere).
    said = (trial / "output.txt").read_text()
    assert said.startswith("--- attempt in process ")
    assert "raising: about to fail" in said
    # Not chdir'd by Tune into a folder under Ray's session (found by QA: a plugin's
    # relative path worked in the driver and under keras_tuner, and failed on Ray).
    working = said.split("raising: working in ", 1)[1].splitlines()[0]
    assert "working_dirs" not in working and "session_" not in working, working
    assert "UserWarning: raising: a warning first" in said
    assert "WARNING raising: raising: a log record too" in said
    # Trials that said nothing have no such file.
    assert not list((finished_run.run_dir / "trials" / "scratch_mlp").glob("*/output.txt"))


def test_a_blown_up_config_is_diverged(finished_run):
    row = finished_run.leaderboard.set_index("strategy").loc["exploding_mlp"]
    assert row["status"] == "diverged"
    assert "NaN or infinite" in row["error"]
    # Blown up in its first epoch: no score (not the first class's share, which its NaN
    # outputs scored: found by QA).
    import pandas as pd

    assert pd.isna(row["val_accuracy"]) and pd.isna(row["val_loss"])


def test_fine_tune_searched_frozen_layers_within_the_base(finished_run):
    frame = finished_run.leaderboard
    frozen = frame.loc[frame["strategy"] == "fine_tune", "frozen_layers"]
    # The pretrain CNN has 4 cut points, one after each conv block; the recipe
    # searches from 1 to all of them.
    assert frozen.between(1, 4).all()


def test_files_in_the_run_directory(finished_run):
    run_dir = finished_run.run_dir
    assert run_dir.parent.name == "out"
    for name in ("recipe.yaml", "leaderboard.csv", "leaderboard.md", "leaderboard.html"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "ray" / "scratch_mlp").is_dir()
    summary = json.loads((run_dir / "best" / "config.json").read_text())
    best = finished_run.leaderboard.iloc[0]
    assert summary["trial_id"] == best["trial_id"]
    assert summary["class_names"] == [str(i) for i in range(10)]


def test_a_run_records_the_versions_it_ran_with_and_a_resume_with_others_says_so(
    finished_run, tmp_path
):
    """Found by QA: a run directory named no version of Keras, its backend, Ray or
    Optuna, each of which changes what the same seed gives."""
    from importlib import metadata

    from orchestrator.environment import ENVIRONMENT_FILE, record_environment

    recorded = json.loads((finished_run.run_dir / ENVIRONMENT_FILE).read_text())
    assert recorded["at"] == "start"
    assert recorded["keras_backend"] == "tensorflow"
    for name in ("graftune", "keras", "tensorflow", "ray", "optuna", "numpy"):
        assert recorded["packages"][name] == metadata.version(name), name
    assert recorded["variables"]["TF_ENABLE_ONEDNN_OPTS"] == "1"  # graftune's default
    from orchestrator.report import _ran_with  # the report says them too

    assert _ran_with(finished_run.run_dir).startswith(
        f"graftune {metadata.version('graftune')}, Keras {metadata.version('keras')} on "
        f"tensorflow {metadata.version('tensorflow')}, Ray {metadata.version('ray')}, Python "
    )

    older = {**recorded, "packages": {**recorded["packages"], "keras": "3.0.0"}}
    (tmp_path / ENVIRONMENT_FILE).write_text(json.dumps(older))
    said = record_environment(tmp_path, None, resumed=True)
    assert said is not None and f"keras 3.0.0 -> {metadata.version('keras')}" in said
    again = json.loads((tmp_path / ENVIRONMENT_FILE).read_text())
    assert again["packages"]["keras"] == "3.0.0"  # the run's start, kept
    assert again["resumed"][0]["packages"]["keras"] == metadata.version("keras")
    assert record_environment(tmp_path, None, resumed=True) is None  # as the last resume
    assert len(json.loads((tmp_path / ENVIRONMENT_FILE).read_text())["resumed"]) == 1
    # A plugin installed since (found by QA: warned, unused) is no change; a new version is.
    from orchestrator.environment import _changes

    base = {"graftune_code": "x", "plugins": {"graftune-a": "1.0"}}
    assert _changes(base, {**base, "plugins": {"graftune-a": "1.0", "graftune-b": "0.1"}}) == []
    assert _changes(base, {**base, "plugins": {"graftune-a": "1.1"}}) == ["graftune-a 1.0 -> 1.1"]


def test_a_resume_by_changed_graftune_code_says_so(finished_run, tmp_path):
    """Found by QA: graftune's version is the same between releases, so a resume by
    code that trains otherwise (standardising features anew) ranked its trials
    beside the old ones with no word; the code's fingerprint tells them apart."""
    from orchestrator.environment import ENVIRONMENT_FILE, graftune_code, record_environment

    recorded = json.loads((finished_run.run_dir / ENVIRONMENT_FILE).read_text())
    code = graftune_code()
    assert recorded["graftune_code"] == code and len(code) == 12
    changed = {**recorded, "graftune_code": "0123456789ab"}
    (tmp_path / ENVIRONMENT_FILE).write_text(json.dumps(changed))
    said = record_environment(tmp_path, None, resumed=True)
    assert said is not None and f"graftune's code 0123456789ab -> {code}" in said
    assert json.loads((tmp_path / ENVIRONMENT_FILE).read_text())["resumed"][0]["graftune_code"]
    # From any folder, as the console script runs (found by QA: `import plugins`
    # found the checkout's folder only from the repository's root: every run failed).
    elsewhere = subprocess.run(
        [
            sys.executable,
            "-c",
            "from orchestrator.environment import graftune_code as c; print(c())",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert elsewhere.returncode == 0, elsewhere.stderr[-2000:]
    assert elsewhere.stdout.strip() == code
    # Laid out as a wheel installs it, the built-ins inside orchestrator/, the same
    # code reads alike (found by QA: a resume under a wheel of the same commit said
    # the code had changed, and bug reports' --version differed).
    import orchestrator
    import orchestrator.builtin_plugins

    wheel = tmp_path / "wheel"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(Path(orchestrator.__file__).parent, wheel / "orchestrator", ignore=ignore)
    shutil.copytree(
        Path(orchestrator.builtin_plugins.__file__).parent,
        wheel / "orchestrator" / "builtin_plugins",
        ignore=ignore,
    )
    as_a_wheel = subprocess.run(
        [
            sys.executable,
            "-c",
            "import orchestrator.environment as e; print(e.__file__, e.graftune_code())",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(wheel)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert as_a_wheel.returncode == 0, as_a_wheel.stderr[-2000:]
    assert as_a_wheel.stdout.split() == [str(wheel / "orchestrator" / "environment.py"), code]
    # A record from before the fingerprint cannot vouch for the code either.
    del changed["graftune_code"]
    (tmp_path / ENVIRONMENT_FILE).write_text(json.dumps(changed))
    said = record_environment(tmp_path, None, resumed=True)
    assert said is not None and f"graftune's code not recorded -> {code}" in said


def test_best_model_reloads_and_predicts_as_in_the_run(finished_run, ray_session):
    import keras

    from orchestrator.data import prepare_dataset
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.recipe import load_recipe

    run_dir = finished_run.run_dir
    recipe = load_recipe(run_dir / "recipe.yaml")
    host = get_plugin_manager()
    data = prepare_dataset(recipe.data, host.data_sources, seed=recipe.seed, base_dir=run_dir)
    model = keras.saving.load_model(run_dir / "best" / "model.keras", safe_mode=True)
    best = finished_run.best
    in_run = np.load(
        run_dir / "trials" / best["strategy"] / best["trial_id"] / "test_probabilities.npy"
    )
    reloaded = model.predict(data.x_test, verbose=0)
    np.testing.assert_allclose(reloaded, in_run, rtol=1e-5, atol=1e-6)
    accuracy = float((reloaded.argmax(axis=1) == data.y_test).mean())
    assert accuracy == pytest.approx(best["test_accuracy"], abs=1e-6)


def test_the_recorded_recipe_has_the_values_the_run_worked_out(finished_run):
    """Found by QA: recipe.yaml said mode: null and num_samples: null, where the run
    ranked by max and ran the search's 2 trials (1 where a strategy says so)."""
    import yaml

    recorded = yaml.safe_load((finished_run.run_dir / "recipe.yaml").read_text())
    assert (recorded["search"]["mode"], recorded["search"]["num_samples"]) == ("max", 2)
    samples = {name: spec["num_samples"] for name, spec in recorded["strategies"].items()}
    assert samples == {
        "scratch_mlp": 2, "feature_extraction": 2, "fine_tune": 2, "exploding_mlp": 1,
        "raising": 1,
    }  # fmt: skip
    counts = finished_run.leaderboard.groupby("strategy").size().to_dict()
    assert counts == samples


def test_split_csv_names_each_examples_source_row_and_label(finished_run):
    """split.csv: which rows of the source each split holds, the test rows in the
    order of test_probabilities.npy, so that a trial's test predictions join the
    user's data (before, nothing said which rows they were)."""
    import pandas as pd
    from sklearn.datasets import load_digits

    run_dir = finished_run.run_dir
    table = pd.read_csv(run_dir / "split.csv")
    assert list(table.columns) == ["split", "row", "label"]
    assert table["row"].is_unique  # each example in one split only
    digits = load_digits()
    assert (table["label"] == digits.target[table["row"]]).all()
    test = table[table["split"] == "test"]
    best = finished_run.best
    probabilities = np.load(
        run_dir / "trials" / best["strategy"] / best["trial_id"] / "test_probabilities.npy"
    )
    assert len(probabilities) == len(test)
    accuracy = float((probabilities.argmax(axis=1) == test["label"].to_numpy()).mean())
    assert accuracy == pytest.approx(best["test_accuracy"], abs=1e-6)
    # The rows are the examples the trials were scored on.
    from orchestrator.recipe import load_recipe

    recipe = load_recipe(run_dir / "recipe.yaml")
    from orchestrator.data import prepare_dataset
    from orchestrator.plugin_manager import get_plugin_manager

    data = prepare_dataset(
        recipe.data, get_plugin_manager().data_sources, seed=recipe.seed, base_dir=run_dir
    )
    counts = table["split"].value_counts().to_dict()
    assert counts == {"train": len(data.y_train), "val": len(data.y_val), "test": len(data.y_test)}
    np.testing.assert_allclose(
        data.x_test.reshape(len(test), -1), digits.data[test["row"]] / 16.0, rtol=1e-6
    )


@pytest.mark.parametrize("strategy", ["scratch_mlp", "fine_tune"])
def test_validation_scores_are_the_saved_models(finished_run, ray_session, strategy):
    # scratch_mlp trains with the default fit, whose last epoch's validation is
    # taken as the trial's; fine_tune's own two-phase fit is evaluated after it.
    from orchestrator.bases import BaseInfo
    from orchestrator.data import prepare_dataset
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.recipe import load_recipe
    from orchestrator.trial import load_trial_model

    run_dir = finished_run.run_dir
    recipe = load_recipe(run_dir / "recipe.yaml")
    data = prepare_dataset(
        recipe.data, get_plugin_manager().data_sources, seed=recipe.seed, base_dir=run_dir
    )
    base = BaseInfo.from_json(json.loads((run_dir / "base.json").read_text()))
    board = finished_run.leaderboard
    row = board[(board["strategy"] == strategy) & (board["status"] == "ok")].iloc[0]
    folder = run_dir / "trials" / strategy / row["trial_id"]
    model = load_trial_model(folder, base, data.task.input_shape)
    predicted = model.predict(data.x_val, verbose=0).argmax(axis=1)
    assert float((predicted == data.y_val).mean()) == pytest.approx(row["val_accuracy"], abs=1e-6)
    if model.compiled:  # a whole model saved by the trial (not one assembled at load)
        scores = model.evaluate(data.x_val, data.y_val, verbose=0, return_dict=True)
        # val_loss is the cross-entropy alone; Keras' loss adds the λ penalty.
        assert scores["cross_entropy"] == pytest.approx(row["val_loss"], rel=1e-4)
        assert scores["loss"] > scores["cross_entropy"]


def test_the_run_leaves_its_callers_keras_and_random_state_alone(e2e_run, finished_run):
    # The fixture's caller set a mixed_bfloat16 policy and seeded Python's and NumPy's
    # generators. The run cleared Keras' session (which dropped the policy) and seeded
    # them with the recipe's seed; and it built its base under the caller's policy,
    # a cached base in bfloat16 on a CPU (found while profiling the driver). Training
    # the base left it in TensorFlow's table of gradients, with its variables.
    assert vars(e2e_run.caller_after) == {
        "policy": "mixed_bfloat16",
        "python_random": True,
        "numpy_random": True,
        "tensorflow_random": True,
        "gradients_added": 0,
    }
    import keras

    base = json.loads((finished_run.run_dir / "base.json").read_text())
    model = keras.saving.load_model(base["path"], compile=False)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}


def test_a_run_takes_keras_settings_as_its_workers_do_and_puts_the_callers_back(
    tmp_path, monkeypatch
):
    # Keras keeps these in its config module, not in the session that clear_session
    # drops: a caller's float64 or channels_first reached the driver's models (a
    # pretrained base, cached for every later run) and no Ray worker's.
    import keras
    from keras.src.backend import config

    from orchestrator.trial import keeping_callers_state

    settings = tmp_path / "keras.json"
    settings.write_text(json.dumps({"floatx": "float16", "image_data_format": "channels_last"}))
    monkeypatch.setattr(config, "_config_path", str(settings))
    monkeypatch.delenv("KERAS_MAX_EPOCHS", raising=False)
    monkeypatch.setenv("KERAS_MAX_STEPS_PER_EPOCH", "7")

    def now():
        return (
            keras.config.floatx(),
            keras.config.image_data_format(),
            keras.config.epsilon(),
            keras.config.max_epochs(),
            keras.config.max_steps_per_epoch(),
        )

    before = now()
    keras.config.set_floatx("float64")
    keras.config.set_image_data_format("channels_first")
    keras.config.set_epsilon(1e-3)
    keras.config.set_max_epochs(1)
    try:
        with keeping_callers_state():
            inside = now()
            keras.config.set_floatx("float32")  # as a strategy might
        after = now()
    finally:
        keras.config.set_floatx(before[0])
        keras.config.set_image_data_format(before[1])
        keras.config.set_epsilon(before[2])
        keras.config.set_max_epochs(before[3])
    assert inside == ("float16", "channels_last", 1e-7, None, 7)
    assert after == ("float64", "channels_first", 1e-3, 1, None)


def test_a_run_freezes_the_callers_objects_for_itself_and_thaws_them_after():
    import gc

    from orchestrator import trial
    from orchestrator.trial import collecting_its_own_garbage

    assert gc.get_freeze_count() == 0
    with collecting_its_own_garbage():
        frozen = gc.get_freeze_count()
        assert frozen > 0  # the caller's objects: not walked by the run's collections
        made = [[] for _ in range(1000)]
        trial._freeze_imports()  # as an in-process trial does: what the run made too
        assert gc.get_freeze_count() >= frozen + len(made)
    assert gc.get_freeze_count() == 0
    # A caller that froze objects itself keeps its freeze, and no trial adds to it
    # (found by QA: an in-process trial froze some 50,000 more objects for good).
    gc.freeze()
    try:
        theirs = gc.get_freeze_count()
        with collecting_its_own_garbage():
            more = [[] for _ in range(1000)]
            trial._freeze_imports()
            assert gc.get_freeze_count() == theirs, len(more)
        assert gc.get_freeze_count() == theirs
    finally:
        gc.unfreeze()
    # Nor does a trial run outside a run (a plugin author's test of run_trial): only
    # a Ray worker's trials freeze their process for good.
    trial._freeze_imports()
    assert gc.get_freeze_count() == 0


def test_what_a_run_imports_is_imported_without_collections_and_frozen_for_the_run():
    """Found by QA: ``graftune run`` imported Keras, TensorFlow and Ray after its
    freeze began, with the collector on: 7 full collections in the imports, and
    each of the run's own walked their 500,000 objects."""
    import gc

    from orchestrator import trial

    collections = []

    def counting(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(counting)
    try:
        with trial.collector_paused():
            assert not gc.isenabled()
            for _ in range(3):  # as an import's many objects would start collections
                many = [[i] for i in range(100_000)]
    finally:
        gc.callbacks.remove(counting)
    del many
    assert gc.isenabled() and 2 not in collections  # (a thread may collect a young one)
    gc.disable()  # a caller's collector left off stays off
    try:
        with trial.collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
    with trial.collecting_its_own_garbage():
        frozen = gc.get_freeze_count()
        imported = [[i] for i in range(1000)]  # what the run imported after its freeze
        trial.freeze_the_runs_imports()
        assert gc.get_freeze_count() >= frozen + len(imported)
    assert gc.get_freeze_count() == 0
    trial.freeze_the_runs_imports()  # outside a run: nothing
    assert gc.get_freeze_count() == 0


def test_a_run_imports_without_collections_and_freezes_its_imports(tmp_path):
    """The same in a fresh process's first run, as ``graftune run`` makes it: by the
    pre-flight check, Keras' objects are out of the run's collections."""
    import subprocess
    import sys

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: frozen\ndata: {source: sklearn:iris}\n"
        "strategies: {scratch_mlp: {space: {hidden_layers: 1, width: 4}}}\n"
        "search: {backend: keras_tuner, num_samples: 1, max_epochs: 1, scheduler: fifo}\n"
        f"output: {tmp_path}/runs\n"
    )
    script = f"""
import gc, sys
from orchestrator import run_recipe, preflight
assert "keras" not in sys.modules
seen = []
checked = preflight.check_strategies
def check_strategies(*args, **kwargs):
    import keras
    tracked = {{id(o) for o in gc.get_objects()}}
    seen.append(id(vars(keras)) in tracked or id(vars(sys.modules["tensorflow"])) in tracked)
    return checked(*args, **kwargs)
preflight.check_strategies = check_strategies
run_recipe({str(recipe)!r}, echo=lambda *a, **k: None)
print("walked" if any(seen) else "frozen", len(seen))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["frozen", "1"], done.stdout


def test_observers_saw_every_trial_and_a_raising_one_was_ignored(e2e_run, finished_run):
    seen = e2e_run.seen
    assert len(seen["trials"]) == len(finished_run.leaderboard)
    assert ("raising", "error") in seen["trials"]
    assert seen["runs"] == [(len(finished_run.leaderboard), finished_run.run_dir)]


@pytest.mark.parametrize("fmt", ["table", "csv", "md", "json"])
def test_leaderboard_command_shows_the_run_again(finished_run, fmt):
    from orchestrator.cli import app

    result = CliRunner().invoke(app, ["leaderboard", str(finished_run.run_dir), "--format", fmt])
    assert result.exit_code == 0, result.output
    best = finished_run.leaderboard.iloc[0]
    assert best["trial_id"] in result.output
    if fmt == "json":
        rows = json.loads(result.output)
        assert len(rows) == len(finished_run.leaderboard)
        assert rows[0]["rank"] == 1


def test_cli_run_prints_the_leaderboard(wine_run):
    from orchestrator.cli import app

    assert "best: scratch_mlp" in wine_run.output
    # Its configuration too, in a line (found by QA: at 80 columns no searched column fits).
    best = json.loads((wine_run.run_dir / "best" / "config.json").read_text())["config"]
    said = [line for line in wine_run.output.splitlines() if line.startswith("config: ")]
    assert said == [
        "config: "
        + " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.items())
    ]
    assert "width=" in said[0] and "learning_rate=" in said[0]
    frame_text = (wine_run.run_dir / "leaderboard.md").read_text()
    assert "scratch_mlp" in frame_text
    # The run keeps a recipe that still finds its data from its own folder.
    kept = CliRunner().invoke(app, ["validate", str(wine_run.run_dir / "recipe.yaml")])
    assert kept.exit_code == 0, kept.output
    assert str(wine_run.folder / "wine.csv") in (wine_run.run_dir / "recipe.yaml").read_text()


def test_leaderboard_command_on_a_folder_that_is_no_run(tmp_path):
    from orchestrator.cli import app

    result = CliRunner().invoke(app, ["leaderboard", str(tmp_path)])
    assert result.exit_code == 2
    assert "leaderboard.csv" in result.output


@pytest.mark.parametrize(
    ("data", "base", "key"),
    [
        ("{source: 'sklearn:digits', classes: [42]}", "", "data.classes"),
        ("{source: 'sklearn:iris', labels_per_class: 500}", "", "data.labels_per_class"),
        (
            "{source: 'sklearn:digits'}",
            "base: {pretrain: {data: {source: 'sklearn:digits', classes: [42]}}}",
            "base.pretrain.data.classes",
        ),
    ],
)
def test_data_a_run_cannot_use_is_named_by_file_line_and_key(tmp_path, data, base, key):
    from orchestrator.cli import app

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: bad-data\ndata: {data}\n{base}\n"
        f"strategies: {{{'fine_tune' if base else 'scratch_mlp'}: {{}}}}\n"
        f"output: {tmp_path / 'runs'}\n"
    )
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 2, result.output
    line = 2 if key.startswith("data") else 3
    assert f"error: {recipe}:{line}: {key}: " in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--resume", "RUN"],
        ["leaderboard", "RUN"],
        ["report", "RUN"],
        ["predict", "RUN", "--data", "sklearn:digits"],
        ["export", "RUN", "DEST"],
    ],
    ids=lambda c: c[0],
)
def test_commands_given_a_run_directory_that_does_not_exist_say_so(tmp_path, command):
    from orchestrator.cli import app

    missing = tmp_path / "runs" / "typo"
    args = [
        str(missing) if a == "RUN" else str(tmp_path / "d") if a == "DEST" else a for a in command
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"error: {missing} does not exist" in result.output
    assert list(tmp_path.iterdir()) == []


def test_only_the_default_fit_gives_its_last_epoch_as_the_validation_score():
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.trial import _epoch_reporter, _last_validation

    strategies = get_plugin_manager().strategies
    scratch, fine_tune = strategies.get("scratch_mlp")(), strategies.get("fine_tune")()
    reported = []
    reporter = _epoch_reporter(reported.append, 3)
    for epoch, accuracy in enumerate([0.5, 0.7, 0.9]):
        logs = {"loss": 1.0, "val_loss": 1.5 - accuracy, "val_accuracy": accuracy}
        reporter.on_epoch_end(epoch, {**logs, "val_cross_entropy": 1 - accuracy})
    assert _last_validation(scratch, reporter, 3) == {"accuracy": 0.9, "loss": pytest.approx(0.1)}
    # Keras' float32 share, made exact (37/144) by the reporter, so that it ties with
    # an evaluated trial's.
    counted = _epoch_reporter(lambda metrics: None, 1, None, 144)
    counted.on_epoch_end(
        0,
        {
            "loss": 1.0,
            "val_loss": 2.0,
            "val_accuracy": 0.2569444477558136,
            "val_cross_entropy": 1.0,
        },
    )
    assert _last_validation(scratch, counted, 1)["accuracy"] == 37 / 144
    # The reports a scheduler sees (and a pruned trial's row) are exact too.
    exact = []
    reporting = _epoch_reporter(exact.append, 2, "val_accuracy", 144)
    reporting.on_epoch_end(0, {"loss": 1.0, "val_loss": 2.0, "val_accuracy": 0.2569444477558136})
    assert exact[0]["val_accuracy"] == 37 / 144
    assert _last_validation(fine_tune, reporter, 3) is None  # a fit of its own
    assert _last_validation(scratch, reporter, 4) is None  # stopped before its last epoch
    # What the search sees: val_loss is the cross-entropy, Keras' objective beside it.
    assert reported[0]["val_loss"] == pytest.approx(0.5)
    assert reported[0]["val_objective"] == pytest.approx(1.0)
    assert "val_cross_entropy" not in reported[0]
    unvalidated = _epoch_reporter(lambda metrics: None, 1)
    unvalidated.on_epoch_end(0, {"loss": 1.0})
    assert _last_validation(scratch, unvalidated, 1) is None
    # A model compiled without the cross-entropy metric: its val_loss has the
    # penalties in it, so the trial scores the validation split itself.
    penalised = _epoch_reporter(lambda metrics: None, 1)
    penalised.on_epoch_end(0, {"loss": 1.0, "val_loss": 0.6, "val_accuracy": 0.9})
    assert _last_validation(scratch, penalised, 1) is None


def test_scores_are_the_cross_entropy_without_the_penalty():
    import keras
    import numpy as np

    from orchestrator.models import compile_classifier
    from orchestrator.trial import evaluate

    rng = np.random.default_rng(0)
    x, y = rng.random((40, 5)).astype("float32"), rng.integers(0, 3, 40)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(
                3, activation="softmax", kernel_regularizer=keras.regularizers.L2(1.0)
            ),
        ]
    )
    keras_says = compile_classifier(model, 1e-3).evaluate(x, y, verbose=0, return_dict=True)
    predicted, ours = evaluate(model, x, y)
    assert ours["loss"] == pytest.approx(keras_says["cross_entropy"], rel=1e-5)
    assert keras_says["loss"] > ours["loss"] + 0.1  # Keras' loss: the penalty on top
    assert ours["accuracy"] == pytest.approx(keras_says["accuracy"])
    np.testing.assert_allclose(predicted, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    # Confidently wrong (probabilities under Keras' ε): still the epoch's formula.
    # A clipped one gave at most 16.1 an example beside the metric's hundreds.
    model.layers[-1].kernel.assign(rng.normal(0, 300, (5, 3)))
    keras_says = model.evaluate(x, y, verbose=0, return_dict=True)
    predicted, ours = evaluate(model, x, y, batch_size=7)
    assert keras_says["cross_entropy"] > 20
    assert ours["loss"] == pytest.approx(keras_says["cross_entropy"], rel=1e-5)
    assert evaluate(model, x[:0], y[:0])[1] == {}


@pytest.mark.parametrize("shape", [(64,), (16, 16, 1), (40, 40, 3)])
def test_probabilities_in_batches_equal_predict(shape):
    import keras

    from orchestrator.trial import probabilities

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape)
    x = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))
    data = np.random.default_rng(0).random((150, *shape), dtype=np.float32)
    np.testing.assert_allclose(
        probabilities(model, data), model.predict(data, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_a_model_that_enlarges_its_input_is_evaluated_in_batches_of_its_size():
    """Batches were sized by the input alone: 8x8 digits went through a ResNet50 base
    adapted to 64x64x3 in batches of 1024, and a trial's test split took 4.5 GB
    more than its training did (5.6 GB a worker, each then retired for
    ``search.worker_memory_mb``). The largest tensor of any layer, nested models'
    included, sizes them now; a small model still takes its split in one call."""
    import keras

    from orchestrator.trial import evaluate

    class Seen(keras.layers.Layer):
        """Passes its input on, noting the batch sizes it was called with."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.sizes = []

        def call(self, x):
            if x.shape[0] is not None:  # (not the functional build's symbolic call)
                self.sizes.append(int(x.shape[0]))
            return x

    keras.utils.set_random_seed(0)
    seen = Seen()
    inner = keras.Input((64, 64, 1))
    wide = keras.Model(inner, seen(keras.layers.Conv2D(512, 3, padding="same")(inner)))
    inputs = keras.Input((8, 8, 1))
    features = keras.layers.GlobalAveragePooling2D()(wide(keras.layers.Resizing(64, 64)(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(features))
    x = np.random.default_rng(0).random((100, 8, 8, 1), dtype=np.float32)
    y = np.arange(100) % 3
    predicted, _ = evaluate(model, x, y)
    assert seen.sizes == [32, 32, 32, 4]  # 64*64*512 values an example: predict's 32
    np.testing.assert_allclose(predicted, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)

    small_seen = Seen()
    flat = keras.Input((8, 8, 1))
    hidden = small_seen(keras.layers.Dense(8)(keras.layers.Flatten()(flat)))
    small = keras.Model(flat, keras.layers.Dense(3, activation="softmax")(hidden))
    evaluate(small, x, y)
    assert small_seen.sizes == [100]


def test_a_resume_names_another_backend_and_packages_installed_or_removed():
    """Found by mutation testing: a resume on another Keras backend, or after a package
    was installed or removed, was not named (only packages there both times were)."""
    from orchestrator.environment import _changes

    assert _changes({"keras_backend": "jax"}, {"keras_backend": "tensorflow"}) == [
        "keras_backend jax -> tensorflow"
    ]
    assert _changes({"packages": {"tensorflow": "2.21"}}, {"packages": {}}) == [
        "tensorflow 2.21 -> none"
    ]
    assert _changes({"packages": {}}, {"packages": {"jax": "0.7"}}) == ["jax none -> 0.7"]
    # A plugin installed or removed since is no change (found by QA).
    assert _changes({"plugins": {"a": "1"}}, {"plugins": {"b": "2"}}) == []
