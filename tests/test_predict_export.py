"""graftune predict and export on real finished runs; exports reload without graftune."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app

WINE_CSV = Path(__file__).parents[1] / "recipes" / "data" / "wine.csv"

# Loads each export with graftune unimportable, and saves its predictions.
RELOAD = textwrap.dedent(
    """
    import json, sys
    sys.modules["orchestrator"] = None  # graftune is not installed here
    try:
        import orchestrator
    except ImportError:
        pass
    else:
        raise SystemExit("orchestrator is importable")
    import keras
    import numpy as np
    import tensorflow as tf

    x = np.load(sys.argv[1])
    for kind, folder, out in json.loads(sys.argv[2]):
        meta = json.load(open(folder + "/graftune.json"))
        if kind == "keras":
            model = keras.saving.load_model(folder + "/" + meta["model"], safe_mode=True)
            probabilities = model.predict(x, verbose=0)
        else:
            # Keep the loaded object: its variables go when it is garbage collected.
            loaded = tf.saved_model.load(folder)
            probabilities = loaded.serve(tf.constant(x)).numpy()
        np.save(out, probabilities)
    """
)


@pytest.fixture(scope="module")
def runs(e2e_run, wine_run):
    """The session's digits run (five strategies, tests/conftest.py) and its wine CSV run."""
    return e2e_run.outcome, wine_run


def split_of(run_dir: Path):
    """The run's test split, recomputed from its recipe as the run made it."""
    from orchestrator.data import prepare_dataset
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.recipe import load_recipe

    recipe = load_recipe(run_dir / "recipe.yaml")
    data = prepare_dataset(
        recipe.data, get_plugin_manager().data_sources, seed=recipe.seed, base_dir=run_dir
    )
    return data


def in_run(run_dir: Path, strategy: str, trial_id: str) -> np.ndarray:
    return np.load(run_dir / "trials" / strategy / trial_id / "test_probabilities.npy")


def trial_of(outcome, strategy: str) -> str:
    frame = outcome.leaderboard
    return str(frame.loc[frame["strategy"] == strategy, "trial_id"].iloc[0])


@pytest.fixture(scope="module")
def test_npz(runs, tmp_path_factory):
    """The digits run's test split as an npz data source, with its class names."""
    data = split_of(runs[0].run_dir)
    path = tmp_path_factory.mktemp("npz") / "test.npz"
    np.savez(path, x=data.x_test, y=data.y_test, class_names=np.array(data.task.class_names))
    return path, data


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_trial_run(folder: Path, source: str, *, epochs: int) -> Path:
    """One scratch_mlp trial on ``source`` (keras_tuner: no Ray), through the CLI."""
    recipe = folder / "one.yaml"
    recipe.write_text(
        f"name: one\ndata: {{source: '{source}'}}\nstrategies: {{scratch_mlp: {{}}}}\n"
        f"search: {{backend: keras_tuner, num_samples: 1, max_epochs: {epochs}}}\n"
        "output: runs/\n"
    )
    result = invoke("run", recipe, "--quiet")
    assert result.exit_code == 0, result.output
    (run_dir,) = (folder / "runs").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory) -> Path:
    """One scratch_mlp trial on sklearn:iris, two epochs; tests copy it before they change it."""
    return one_trial_run(tmp_path_factory.mktemp("iris"), "sklearn:iris", epochs=2)


def test_damaged_state_files_are_said_by_every_command_that_reads_the_run(iris_run, tmp_path):
    """Found by QA: a finished.json cut short or a deleted best/ went unsaid by
    leaderboard, report, predict and export; a trial's deleted model.keras was
    "saved no model (status ok); only trials with status ok have one"."""
    kept = shutil.copytree(iris_run, tmp_path / "made" / iris_run.name)
    trial_id = str(pd.read_csv(kept / "leaderboard.csv")["trial_id"].iloc[0])
    data = "sklearn:iris"

    def damaged(name: str) -> Path:
        run_dir = tmp_path / name / kept.name
        shutil.copytree(kept, run_dir)
        return run_dir

    cut = damaged("cut")
    (cut / "finished.json").write_text('{"when": ')
    said = f"note: {cut / 'finished.json'} cannot be read (JSONDecodeError"
    for command in (
        ("leaderboard", cut),
        ("predict", cut, "--data", data),
        ("export", cut, tmp_path / "out-cut"),
        ("report", cut),
    ):
        result = invoke(*command)
        assert result.exit_code == 0, result.output
        assert said in " ".join(result.output.split()), (command, result.output)
        assert f"graftune run --resume {cut} writes it again" in " ".join(result.output.split())

    no_best = damaged("nobest")
    shutil.rmtree(no_best / "best")
    said = f"note: {no_best / 'best' / 'model.keras'} is gone; graftune run --resume {no_best}"
    for command in (("leaderboard", no_best), ("report", no_best)):
        result = invoke(*command)
        assert result.exit_code == 0, result.output
        assert said in " ".join(result.output.split()), (command, result.output)
    # What needs the best model, its file alone deleted, is refused saying so (found by
    # mutation testing: not "cut short?" of a file that is not there).
    no_best = damaged("nobestmodel")
    (no_best / "best" / "model.keras").unlink()
    gone = f"error: {no_best / 'best' / 'model.keras'} is gone; graftune run --resume {no_best}"
    for command in (("predict", no_best, "--data", data), ("export", no_best, tmp_path / "o")):
        result = invoke(*command)
        assert result.exit_code == 2, result.output
        assert gone in " ".join(result.output.split()), (command, result.output)

    no_model = damaged("nomodel")
    (no_model / "trials" / "scratch_mlp" / trial_id / "model.keras").unlink()
    result = invoke("predict", no_model, "--data", data, "--trial", trial_id)
    assert result.exit_code == 2, result.output
    assert (
        f"model.keras is gone: trial scratch_mlp/{trial_id} ended ok and saved it; to train the "
        f"trial again, delete its folder {no_model / 'trials' / 'scratch_mlp' / trial_id} and "
        "the run's finished.json, then graftune run --resume"
    ) in " ".join(result.output.split())

    # A run that is whole says none of it.
    result = invoke("leaderboard", kept)
    assert "note:" not in result.output


def test_predict_the_test_split_as_the_run_did(runs, test_npz, tmp_path):
    digits = runs[0]
    path, data = test_npz
    out = tmp_path / "preds.csv"
    result = invoke("predict", digits.run_dir, "--data", f"npz:{path}", "--out", out)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out, dtype={"predicted": str, "label": str})
    names = list(data.task.class_names)
    assert list(frame.columns) == [
        "row", "predicted", "probability", "label", *(f"prob_{n}" for n in names)
    ]  # fmt: skip
    best = digits.best
    expected = in_run(digits.run_dir, best["strategy"], best["trial_id"])
    probabilities = frame[[f"prob_{n}" for n in names]].to_numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    assert list(frame["predicted"]) == [names[i] for i in expected.argmax(axis=1)]
    assert list(frame["label"]) == [names[i] for i in data.y_test]
    np.testing.assert_allclose(frame["probability"], expected.max(axis=1), rtol=1e-5)
    assert f"accuracy {best['test_accuracy']:.4f} on {len(data.y_test)} labelled" in result.output


def test_predict_unlabelled_arrays_and_say_why_labels_were_not_scored(runs, test_npz, tmp_path):
    digits = runs[0]
    _, data = test_npz
    bare = tmp_path / "x_only.npz"
    np.savez(bare, x=data.x_test)  # no y: nothing to score, only to predict
    result = invoke("predict", digits.run_dir, "--data", f"npz:{bare}", "--out", tmp_path / "a.csv")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "a.csv")
    assert len(frame) == len(data.x_test) and "label" not in frame
    assert "accuracy" not in result.output
    # A table's options are refused for arrays, labelled or not, and for images (found
    # by QA: an npz without labels, and an image folder, took one or the other silently).
    folder = tmp_path / "images" / "0"
    folder.mkdir(parents=True)
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a.png")
    for source in (f"npz:{bare}", f"npz:{test_npz[0]}", f"images:{folder.parent}"):
        for option in ("--target", "--ignore-column"):
            refused = invoke("predict", digits.run_dir, "--data", source, option, "label")
            assert refused.exit_code == 2, refused.output
            assert f"error: {option} applies to table sources (csv, parquet), not to " in (
                refused.output
            )
    other = tmp_path / "other_names.npz"
    names = np.array([f"class {n}" for n in data.task.class_names])
    np.savez(other, x=data.x_test, y=data.y_test, class_names=names)
    result = invoke(
        "predict", digits.run_dir, "--data", f"npz:{other}", "--out", tmp_path / "b.csv"
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "no accuracy: none of the labels (class 0, class 1, class 2, " in said
    from orchestrator.cli import _label_order

    assert sorted(["100", "b", "42", "5", "a"], key=_label_order) == ["5", "42", "100", "a", "b"]
    assert "class 9) is one of the model's classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)" in said
    # Found by QA: a NaN among the labels was a label 'nan', and the others '0.0',
    # '1.0', so that none was scored. Those without one are predicted only.
    codes = data.y_test.astype(np.float64)
    codes[:3] = np.nan
    partly = tmp_path / "partly.npz"
    np.savez(partly, x=data.x_test, y=codes)
    result = invoke(
        "predict", digits.run_dir, "--data", f"npz:{partly}", "--out", tmp_path / "c.csv"
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "c.csv", keep_default_na=False)
    assert len(frame) == len(data.x_test) and list(frame["label"][:4]) == ["", "", "", str(
        data.task.class_names[data.y_test[3]]
    )]  # fmt: skip
    right = (frame["predicted"].astype(str) == frame["label"])[3:].mean()
    said = " ".join(result.output.split())
    assert f"accuracy {right:.4f} on {len(data.x_test) - 3} labelled examples (3 without" in said


@pytest.mark.parametrize("form", ["strategy/id", "id"])
def test_predict_with_a_named_trial(runs, test_npz, tmp_path, form):
    digits = runs[0]
    trial_id = trial_of(digits, "fine_tune")
    name = f"fine_tune/{trial_id}" if form == "strategy/id" else trial_id
    out = tmp_path / "preds.csv"
    result = invoke(
        "predict", digits.run_dir, "--data", f"npz:{test_npz[0]}", "--trial", name, "--out", out
    )
    assert result.exit_code == 0, result.output
    assert f"fine_tune trial {trial_id}" in result.output
    frame = pd.read_csv(out)
    expected = in_run(digits.run_dir, "fine_tune", trial_id)
    np.testing.assert_allclose(
        frame.filter(like="prob_").to_numpy(), expected, rtol=1e-5, atol=1e-6
    )


def test_predict_a_whole_source_to_stdout(runs):
    result = invoke("predict", runs[0].run_dir, "--data", "sklearn:digits")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(StringIO(result.stdout))
    assert len(frame) == 1797  # every example: no split, no few-shot
    np.testing.assert_allclose(frame.filter(like="prob_").sum(axis=1), 1.0, rtol=1e-5)
    assert "1797 predictions" in result.stderr


def test_predict_an_image_folder_sorted_or_not_with_each_files_name(runs, tmp_path):
    """New images in one folder were refused ("no class folders"), images of another
    size too, and nothing said which row was which file."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images[:60] / 16 * 255).astype(np.uint8)
    for i, (image, label) in enumerate(zip(pixels, digits.target[:60], strict=True)):
        sorted_folder = tmp_path / "sorted" / str(label)
        sorted_folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(sorted_folder / f"{i:02d}.png")
        (tmp_path / "new").mkdir(exist_ok=True)
        # In colour: made the model's grey, as the run's images were.
        Image.fromarray(image).convert("RGB").save(tmp_path / "new" / f"{i:02d}.png")
    # Bigger: resized to the model's 8x8.
    Image.fromarray(pixels[0]).resize((16, 16)).save(tmp_path / "new" / "zz-big.png")
    expected = invoke("predict", runs[0].run_dir, "--data", "sklearn:digits")
    reference = pd.read_csv(StringIO(expected.stdout)).iloc[:60]
    labelled = invoke("predict", runs[0].run_dir, "--data", f"images:{tmp_path / 'sorted'}")
    unsorted = invoke("predict", runs[0].run_dir, "--data", f"images:{tmp_path / 'new'}")
    assert labelled.exit_code == 0 and unsorted.exit_code == 0, labelled.output + unsorted.output
    sorted_frame = pd.read_csv(StringIO(labelled.stdout))
    new_frame = pd.read_csv(StringIO(unsorted.stdout)).set_index("file")
    assert list(sorted_frame.columns[:3]) == ["row", "file", "predicted"]
    assert "label" not in new_frame.columns and "accuracy" not in unsorted.stderr
    assert "accuracy" in labelled.stderr
    by_file = sorted_frame.set_index(sorted_frame["file"].str.split("/").str[1]).sort_index()
    assert list(by_file["label"]) == list(digits.target[:60])
    assert len(new_frame) == 61 and "zz-big.png" in new_frame.index
    np.testing.assert_allclose(
        new_frame.drop(index="zz-big.png").sort_index().filter(like="prob_"),
        by_file.filter(like="prob_"),
        rtol=1e-5,
    )
    # The same pixels (to a 255th) as sklearn:digits: the same predictions, nearly all.
    same = by_file.sort_index()["predicted"].to_numpy() == reference["predicted"].to_numpy()
    assert same.mean() > 0.9


def test_images_beside_class_folders_are_said_to_make_the_folder_unlabelled(tmp_path, caplog):
    """predict read such a folder whole, unlabelled, without a word (training left them out)."""
    from PIL import Image

    from orchestrator.predict import ModelRef, read_image_folder

    (tmp_path / "run" / "recipe.yaml").parent.mkdir()
    (tmp_path / "run" / "recipe.yaml").write_text(
        "name: r\ndata: {source: 'images:p'}\nstrategies: {scratch_mlp: {}}\n"
    )
    ref = ModelRef(tmp_path / "m.keras", "scratch_mlp", "t", ("a", "b"), (4, 6, 3))
    for name in ("a/0.png", "b/1.png"):
        (tmp_path / "p" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (6, 4)).save(tmp_path / "p" / name)
    _, labels, _ = read_image_folder(tmp_path / "run", f"images:{tmp_path / 'p'}", ref)
    assert labels == ("a", "b") and not caplog.records
    Image.new("RGB", (6, 4)).save(tmp_path / "p" / "new.png")
    _, labels, files = read_image_folder(tmp_path / "run", f"images:{tmp_path / 'p'}", ref)
    assert labels is None and len(files) == 3
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert (
        f"{tmp_path / 'p'}: 1 image file(s) beside its sub-folders, such as 'new.png', made it "
        "read as new images, unlabelled"
    ) in record.getMessage()


def test_a_table_for_a_run_on_an_npz_is_said_to_be_read_by_its_columns_order(tmp_path, caplog):
    """Found by QA: a run on an npz table has no feature names; a CSV's columns in
    another order gave other predictions without a word. And a labelled table for
    it was told of --ignore-column alone, which scores nothing."""
    from orchestrator.errors import DataError
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.predict import read_source

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recipe.yaml").write_text(
        "name: r\ndata: {source: 'npz:t.npz'}\nstrategies: {scratch_mlp: {}}\n"
    )
    pd.DataFrame({"d": [1.0, 2.0], "c": [3.0, 4.0], "y": ["a", "b"]}).to_csv(
        tmp_path / "t.csv", index=False
    )
    host = get_plugin_manager()
    x, labels = read_source(tmp_path / "run", "csv:t.csv", host, base_dir=tmp_path, target="y")
    assert x.tolist() == [[1.0, 3.0], [2.0, 4.0]] and labels == ("a", "b")
    (record,) = caplog.records
    assert record.levelname == "WARNING" and record.getMessage() == (
        "the run's features have no names (it trained on npz:): csv:t.csv's columns are "
        "taken in their order, 'd', 'c'"
    )
    caplog.clear()
    with pytest.raises(DataError) as refused:
        read_source(tmp_path / "run", "csv:t.csv", host, base_dir=tmp_path)
    assert "non-numeric column(s) 'y'" in str(refused.value)
    assert "the one that holds labels, if any, is named with --target COLUMN" in str(refused.value)
    assert not caplog.records  # refused: nothing read, nothing to say of its order


def test_an_npz_for_a_run_on_a_table_is_said_to_be_read_by_its_columns_order(tmp_path, caplog):
    """Found by QA: the npz has no column names, and one of the table's columns in
    another order gave other predictions without a word (the other way round is said)."""
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.predict import read_source

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recipe.yaml").write_text(
        f"name: r\ndata: {{source: 'csv:{tmp_path}/t.csv', target: y}}\n"
        "strategies: {scratch_mlp: {}}\n"
    )
    pd.DataFrame({"d": [1.0, 2.0], "c": [3.0, 4.0], "y": ["a", "b"]}).to_csv(
        tmp_path / "t.csv", index=False
    )
    for arrays in ({}, {"y": np.array([0, 1]), "class_names": np.array(["a", "b"])}):
        np.savez(tmp_path / "n.npz", x=np.array([[3.0, 1.0], [4.0, 2.0]], np.float32), **arrays)
        caplog.clear()
        x, _ = read_source(tmp_path / "run", "npz:n.npz", get_plugin_manager(), base_dir=tmp_path)
        assert x.tolist() == [[3.0, 1.0], [4.0, 2.0]]
        (record,) = caplog.records
        assert record.levelname == "WARNING" and record.getMessage() == (
            "npz:n.npz has no column names: its columns are taken as the run's features in "
            "their order, 'd', 'c'"
        )


def test_image_files_of_a_kind_not_read_are_said_as_a_run_says_them(tmp_path, caplog):
    """Found by QA: predict left out .jfif and .heic files in silence (training warns),
    and a folder of only such files "had no images"."""
    from PIL import Image

    from orchestrator.errors import DataError
    from orchestrator.predict import ModelRef, read_image_folder

    (tmp_path / "run" / "recipe.yaml").parent.mkdir()
    (tmp_path / "run" / "recipe.yaml").write_text(
        "name: r\ndata: {source: 'images:p'}\nstrategies: {scratch_mlp: {}}\n"
    )
    ref = ModelRef(tmp_path / "m.keras", "scratch_mlp", "t", ("a", "b"), (4, 6, 3))
    for folder in ("new", "new/a", "only"):
        (tmp_path / folder).mkdir()
    Image.new("RGB", (6, 4)).save(tmp_path / "new" / "0.png")
    Image.new("RGB", (6, 4)).save(tmp_path / "new" / "a" / "x.JFIF", format="JPEG")
    Image.new("RGB", (6, 4)).save(tmp_path / "only" / "x.heic", format="JPEG")
    Image.new("RGB", (6, 4)).save(tmp_path / "new" / ".hidden.png")
    _, _, files = read_image_folder(tmp_path / "run", f"images:{tmp_path / 'new'}", ref)
    assert files == ["0.png"]
    assert (
        f"{tmp_path / 'new'}: 1 image file(s) of a kind not read (.jfif), such as 'a/x.JFIF', "
        "are left out; convert them to one of .bmp"
    ) in caplog.records[-2].getMessage()
    # Hidden ones too (found by QA: left out in silence).
    assert (
        f"{tmp_path / 'new'}: 1 image file(s) in hidden files or folders (a name starting "
        "with '.'), such as '.hidden.png', are not read"
    ) in caplog.records[-1].getMessage()
    with pytest.raises(DataError) as info:
        read_image_folder(tmp_path / "run", f"images:{tmp_path / 'only'}", ref)
    assert (
        f"image folder {tmp_path / 'only'} has no images (.bmp, .gif, .jpeg, .jpg, .png, "
        ".tif, .tiff, .webp); it has 1 image file(s) of a kind not read (.heic), such as "
        "'x.heic': convert them to one of .bmp"
    ) in str(info.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: "sklearn:iris", "gives examples of shape (4,), but the model"),
        (lambda d: _npz(d, np.zeros((5, 8, 8, 4), np.float32)), "shape (8, 8, 4)"),
        (lambda d: _npz(d, np.zeros((5, 64), np.float32)), "shape (64,)"),
        (lambda d: _csv(d, 64), "is a table (a row of features an example): give images"),
        (lambda d: "nosuch:thing", "nosuch"),
        (lambda d: f"csv:{d / 'missing.csv'}", "does not exist"),
        (lambda d: f"csv:{d}", "is a folder, not a file"),
        (lambda d: "csv:/dev/null", "/dev/null is not a regular file (a device, a FIFO"),
        (lambda d: f"images:{d / 'nowhere'}", "image folder"),
        # Found by mutation testing: unchecked, and an internal error without its check.
        (lambda d: _empty_npz(d), "has no examples"),
    ],
    ids=[
        "iris",
        "four-channels",
        "flat-npz",
        "flat-table",
        "unknown-scheme",
        "missing-file",
        "folder-as-file",
        "device-as-file",
        "missing-folder",
        "no-examples",
    ],
)
def test_predict_refuses_input_that_does_not_fit(runs, tmp_path, make, message):
    out = tmp_path / "preds.csv"
    result = invoke("predict", runs[0].run_dir, "--data", make(tmp_path), "--out", out)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ")
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_grey_images_take_the_channels_and_size_of_a_run_on_an_image_folder(tmp_path):
    """Found by QA: a run on an images: folder of grey PNGs (read as 3 channels, the
    default) refused an npz of the same images as (8, 8, 1), and sklearn:digits too,
    though the folder itself predicted: only images: took the model's channels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images[:100] / 16 * 255).astype(np.uint8)
    for i, (image, label) in enumerate(zip(pixels, digits.target[:100], strict=True)):
        (tmp_path / "pngs" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "pngs" / str(label) / f"{i:02d}.png")
    run_dir = one_trial_run(tmp_path, "images:pngs", epochs=1)
    assert json.loads((run_dir / "best" / "config.json").read_text())["input_shape"] == [8, 8, 3]
    folder = invoke("predict", run_dir, "--data", f"images:{tmp_path / 'pngs'}")
    assert folder.exit_code == 0, folder.output
    expected = pd.read_csv(StringIO(folder.stdout)).sort_values("file").filter(like="prob_")
    grey = pixels[np.argsort([f"{t}/{i:02d}.png" for i, t in enumerate(digits.target[:100])])]
    x = grey[..., np.newaxis].astype(np.float32) / 255  # floats in [0, 1], one channel
    np.savez(tmp_path / "labelled.npz", x=x, y=np.sort(digits.target[:100]))
    np.savez(tmp_path / "unlabelled.npz", x=x)
    for name, said in (("labelled", "on 100 labelled examples"), ("unlabelled", "predictions")):
        result = invoke("predict", run_dir, "--data", f"npz:{tmp_path / name}.npz")
        assert result.exit_code == 0, result.output
        assert said in result.stderr
        np.testing.assert_allclose(
            pd.read_csv(StringIO(result.stdout)).filter(like="prob_"), expected, rtol=1e-5
        )
    whole = invoke("predict", run_dir, "--data", "sklearn:digits")
    assert whole.exit_code == 0, whole.output
    assert len(pd.read_csv(StringIO(whole.stdout))) == 1797
    # Bigger grey images are made the model's 8x8, as an images: folder's are.
    np.savez(tmp_path / "big.npz", x=np.repeat(np.repeat(x, 2, axis=1), 2, axis=2))
    big = invoke("predict", run_dir, "--data", f"npz:{tmp_path / 'big.npz'}")
    assert big.exit_code == 0, big.output
    # Arrays that are no images still meet the model's shape in the refusal.
    np.savez(tmp_path / "flat.npz", x=x.reshape(100, 64))
    flat = invoke("predict", run_dir, "--data", f"npz:{tmp_path / 'flat.npz'}")
    assert flat.exit_code == 2, flat.output
    assert "gives examples of shape (64,), but the model" in flat.output
    assert "takes (8, 8, 3)" in flat.output


def test_a_run_that_set_image_size_refuses_data_that_are_no_images_by_shape(tmp_path):
    """Found by QA: the run's image_size, which the user did not give predict, was
    refused as "image_size applies only to image data" for a table or table npz,
    rather than the shape the model takes."""
    recipe = tmp_path / "img.yaml"
    recipe.write_text(
        "name: img\ndata: {source: 'glyphs:digits', image_size: 8, options: {per_class: 5}}\n"
        "strategies: {scratch_mlp: {}}\n"
        "search: {backend: keras_tuner, num_samples: 1, max_epochs: 1}\noutput: runs/\n"
    )
    result = invoke("run", recipe, "--quiet")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    for source in ("sklearn:iris", _csv(tmp_path, 5), _npz(tmp_path, np.zeros((5, 4)))):
        refused = invoke("predict", run_dir, "--data", source)
        assert refused.exit_code == 2, refused.output
        if source.startswith("csv:"):  # a table, said as such before its columns are read
            assert "the model takes images of shape (8, 8, 1), and 'csv:" in refused.output
        else:
            assert "gives examples of shape" in refused.output, refused.output
            assert "takes (8, 8, 1)" in refused.output
        assert "applies only to image data" not in refused.output


def _npz(folder: Path, x: np.ndarray) -> str:
    path = folder / "bad.npz"
    np.savez(path, x=x, y=np.array([0, 1, 0, 1, 0]))
    return f"npz:{path}"


def _empty_npz(folder: Path) -> str:
    path = folder / "empty.npz"
    np.savez(path, x=np.zeros((0, 8, 8, 1), np.float32))
    return f"npz:{path}"


def _csv(folder: Path, columns: int) -> str:
    path = folder / "flat.csv"
    frame = pd.DataFrame(np.zeros((4, columns)), columns=[f"p{i}" for i in range(columns)])
    frame.to_csv(path, index=False)
    return f"csv:{path}"


def test_predict_names_the_trials_when_one_is_unknown(runs):
    result = invoke("predict", runs[0].run_dir, "--data", "sklearn:digits", "--trial", "zzz")
    assert result.exit_code == 2
    assert "no trial 'zzz'" in result.output
    assert trial_of(runs[0], "fine_tune") in result.output


def test_an_id_under_another_strategy_is_the_trial_suggested(tmp_path):
    """`--trial diverge/ce585_00000` suggested 'diverge/d3299_00000' (the look-alike
    name), not 'flaky/ce585_00000', the trial asked for under its strategy."""
    (tmp_path / "recipe.yaml").write_text("name: x\n")
    for strategy, trial_id in (("flaky", "ce585_00000"), ("diverge", "d3299_00000")):
        (tmp_path / "trials" / strategy / trial_id).mkdir(parents=True)
    (tmp_path / "best").mkdir()
    best = {"strategy": "flaky", "trial_id": "ce585_00000", "class_names": ["a", "b"]}
    (tmp_path / "best" / "config.json").write_text(json.dumps(best | {"input_shape": [4]}))
    for asked in ("diverge/ce585_00000", "nope/ce585_00000"):
        result = invoke("predict", tmp_path, "--data", "sklearn:digits", "--trial", asked)
        assert result.exit_code == 2, result.output
        assert f"no trial {asked!r} (did you mean 'flaky/ce585_00000'?)" in result.output
    result = invoke("predict", tmp_path, "--data", "sklearn:digits", "--trial", "d3299_0000")
    assert "(did you mean 'd3299_00000'?)" in result.output  # a near id still


@pytest.mark.parametrize(
    ("out", "words"),
    [("missing/x.csv", "its folder {tmp}/missing does not exist"), (".", "is a folder")],
)
def test_predict_refuses_an_out_file_it_cannot_write_before_any_work(tmp_path, out, words):
    out = tmp_path / out
    result = invoke("predict", tmp_path, "--data", "sklearn:digits", "--out", out)
    assert result.exit_code == 2, result.output
    assert f"error: --out {out}: {words.format(tmp=tmp_path)}" in result.output
    assert list(tmp_path.iterdir()) == []


def test_predict_never_writes_over_its_data_the_run_or_another_file_unasked(tmp_path):
    """`-o` wrote over the --data file itself, the run's leaderboard.csv (which then
    ended `graftune leaderboard` in a traceback), or any file; `-o p.parquet` got
    CSV text. Refused before any work, with nothing written."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "leaderboard.csv").write_text("kept")
    # Found by QA: --force wrote over another run's leaderboard.csv, or through a link
    # to its best/config.json.
    other = tmp_path / "other"
    (other / "trials").mkdir(parents=True)
    (other / "recipe.yaml").write_text("kept")
    (other / "leaderboard.csv").write_text("kept")
    (tmp_path / "link.csv").symlink_to(other / "leaderboard.csv")
    data = tmp_path / "w.csv"
    data.write_text("kept")
    (tmp_path / "old.csv").write_text("kept")
    for out, words in (
        (data, f"--out {data} is the data file of --data csv:{data}"),
        (run_dir / "leaderboard.csv", f"is inside the run directory {run_dir}"),
        (run_dir / "new.csv", f"is inside the run directory {run_dir}"),
        (other / "leaderboard.csv", f"is inside the run directory {other}"),
        (tmp_path / "link.csv", f"is inside the run directory {other}"),
        (
            tmp_path / "p.npy",
            "written as .csv, .parquet or .json (CSV without a suffix), not as .npy",
        ),
        (tmp_path / "p.xlsx", "not as .xlsx"),
        (tmp_path / "old.csv", "exists; name a new file, or --force to replace it"),
    ):
        result = invoke("predict", run_dir, "--data", f"csv:{data}", "-o", out)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: --out ") and words in result.output
        if "old.csv" not in str(out):  # --force replaces another file, never these
            forced = invoke("predict", run_dir, "--data", f"csv:{data}", "-o", out, "--force")
            assert forced.output == result.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "leaderboard.csv",
        "leaderboard.csv",
        "link.csv",
        "old.csv",
        "other",
        "recipe.yaml",
        "run",
        "trials",
        "w.csv",
    ]
    assert {p.read_text() for p in tmp_path.rglob("*.csv")} == {"kept"}
    # Found by QA: a run whose recipe.yaml was deleted "has no recipe.yaml and trials/".
    (other / "recipe.yaml").unlink()
    result = invoke("predict", other, "--data", f"csv:{data}")
    assert result.exit_code == 2, result.output
    assert f"{other} has trials/ but no recipe.yaml" in " ".join(result.output.split())
    # Found by security QA: a link to no file yet was written through unasked, making
    # a file wherever the link (someone else's, in a shared folder) pointed.
    links = tmp_path / "links"
    links.mkdir()
    (links / "p.csv").symlink_to(links / "made.csv")
    result = invoke("predict", run_dir, "--data", f"csv:{data}", "-o", links / "p.csv")
    assert result.exit_code == 2, result.output
    assert (
        f"--out {links / 'p.csv'} is a link to {links / 'made.csv'}, which does not exist; "
        "name a new file, or --force to write there"
    ) in " ".join(result.output.split())
    assert sorted(links.iterdir()) == [links / "p.csv"]


def test_predict_writes_the_format_its_out_file_names(wine_run, tmp_path):
    data = f"csv:{WINE_CSV}"
    for name in ("p.csv", "p.parquet", "p.json", "p"):
        result = invoke("predict", wine_run.run_dir, "--data", data, "-o", tmp_path / name)
        assert result.exit_code == 0, result.output
    written = {
        "csv": pd.read_csv(tmp_path / "p.csv"),
        "parquet": pd.read_parquet(tmp_path / "p.parquet"),
        "json": pd.DataFrame(json.loads((tmp_path / "p.json").read_text())),
        "bare": pd.read_csv(tmp_path / "p"),
    }
    for frame in written.values():
        pd.testing.assert_frame_equal(frame, written["csv"], check_dtype=False)
    # Every digit of the CSV: JSON rounded to 10 decimal places (1.9e-27 was 0.0), and
    # wrote float32 probabilities widened (0.1000000015 for the CSV's 0.1).
    pd.testing.assert_frame_equal(written["json"], written["csv"], check_exact=True)
    (tmp_path / "p.csv").write_text("old")
    replaced = invoke(
        "predict", wine_run.run_dir, "--data", data, "-o", tmp_path / "p.csv", "--force"
    )
    assert replaced.exit_code == 0, replaced.output
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "p.csv"), written["csv"])


def test_a_file_another_process_wrote_meanwhile_is_kept_without_force(tmp_path):
    """Found by QA: two predicts to one new file at once both said "written to", and
    one's predictions were lost; two exports to one new folder, an internal error."""
    from orchestrator.errors import OutputPathError
    from orchestrator.predict import write_predictions

    frame = pd.DataFrame({"prediction": ["a", "b"], "probability": [0.5, 0.75]})
    for name in ("p.csv", "p.parquet", "p.json"):
        path = tmp_path / name
        path.write_bytes(b"the other's")  # written after check_out looked
        with pytest.raises(
            OutputPathError, match=r"exists \(written meanwhile by another process\)"
        ):
            write_predictions(frame, path, replace=False)
        assert path.read_bytes() == b"the other's"
        write_predictions(frame, path)  # --force
        assert path.read_bytes() != b"the other's"
        path.unlink()
        write_predictions(frame, path, replace=False)  # a new file
        assert path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p.json", "p.parquet"]
    # A link to nowhere made meanwhile is refused, not written through (found by QA).
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "elsewhere.csv")
    with pytest.raises(OutputPathError, match="written meanwhile"):
        write_predictions(frame, link, replace=False)
    assert not (tmp_path / "elsewhere.csv").exists() and link.is_symlink()


def test_an_export_to_a_folder_another_export_made_meanwhile_is_refused(
    wine_run, tmp_path, monkeypatch
):
    from orchestrator import export as export_module

    dest = tmp_path / "model"
    checked = export_module.cannot_make_in

    def another_export_ends_now(path):
        (dest / "model.keras").parent.mkdir()
        (dest / "model.keras").write_text("the other's")
        return checked(path)

    monkeypatch.setattr(export_module, "cannot_make_in", another_export_ends_now)
    said = f"error: {dest} exists (made meanwhile by another process); export to a new (or "
    result = invoke("export", wine_run.run_dir, dest)
    assert result.exit_code == 2, result.output
    assert result.output == said + "empty) folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left
    assert (dest / "model.keras").read_text() == "the other's"
    # A file made there meanwhile: the same (found by QA: "Not a directory: .model.N.tmp").
    shutil.rmtree(dest)
    monkeypatch.setattr(export_module, "cannot_make_in", lambda path: dest.write_text("x") and None)
    result = invoke("export", wine_run.run_dir, dest)
    assert result.exit_code == 2, result.output
    assert result.output == said + "empty) folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and dest.read_text() == "x"


def test_predict_writes_into_a_fifo_and_through_a_link_and_takes_dash_for_stdout(
    wine_run, tmp_path, monkeypatch
):
    """Found by QA: ``-o fifo`` was refused as existing, and with --force replaced by a
    file (its reader waited for ever); ``-o link.csv --force`` replaced the link; ``-o -``
    wrote a file named "-"."""
    import os
    import threading

    data = f"csv:{WINE_CSV}"
    expected = invoke("predict", wine_run.run_dir, "--data", data)
    assert expected.exit_code == 0, expected.output
    csv = expected.stdout

    fifo = tmp_path / "p.csv"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    result = invoke("predict", wine_run.run_dir, "--data", data, "-o", fifo)
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert got == [csv] and fifo.is_fifo()
    assert f"written to {fifo}" in result.stderr and result.stdout == ""

    target = tmp_path / "kept.csv"
    target.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    result = invoke("predict", wine_run.run_dir, "--data", data, "-o", link, "--force")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and target.read_text() == csv

    monkeypatch.chdir(tmp_path)
    result = invoke("predict", wine_run.run_dir, "--data", data, "-o", "-")
    assert result.exit_code == 0, result.output
    assert result.stdout == csv and not (tmp_path / "-").exists()
    # /dev/stdout is stdout too, whatever it is (found by QA: under `> preds.csv` it was
    # that file, refused as one that exists).
    result = invoke("predict", wine_run.run_dir, "--data", data, "-o", "/dev/stdout")
    assert result.exit_code == 0, result.output
    assert result.stdout == csv


def test_predict_refuses_an_unlabelled_tables_infinite_values_naming_the_row(wine_run, tmp_path):
    """They were predicted, all alike, as a labelled table's are refused."""
    table = pd.read_csv(WINE_CSV).drop(columns="cultivar")
    table.iloc[2, 0] = np.inf
    table.iloc[5, 1] = 1e40  # past float32's range: infinite too
    table.to_csv(tmp_path / "inf.csv", index=False)
    out = tmp_path / "p.csv"
    result = invoke("predict", wine_run.run_dir, "--data", f"csv:{tmp_path / 'inf.csv'}", "-o", out)
    assert result.exit_code == 2, result.output
    assert "2 row(s) with infinite values (or numbers too large for float32)" in result.output
    assert f"column(s) {table.columns[0]!r}, {table.columns[1]!r}; the first is data row 3" in (
        result.output
    )
    assert not out.exists()


def test_predict_refuses_examples_the_model_gives_no_probabilities_for(wine_run, tmp_path):
    """Found by QA: values in float32's range but far past the training data's gave NaN
    outputs, written with the first class as predicted and scored in the accuracy."""
    table = pd.read_csv(WINE_CSV)
    features = table.columns.drop("cultivar")
    table[features] = table[features].astype(float)
    table.loc[3, features] = 3e38
    table.loc[7, features] = 3e38
    table.to_csv(tmp_path / "far.csv", index=False)
    out = tmp_path / "p.csv"
    result = invoke("predict", wine_run.run_dir, "--data", f"csv:{tmp_path / 'far.csv'}", "-o", out)
    assert result.exit_code == 2, result.output
    assert "the model gives no probabilities (NaN) for 2 example(s), the first data row 4" in (
        " ".join(result.output.split())
    )
    assert not out.exists()


def test_paths_given_with_a_home_folder_go_there(wine_run, tmp_path, monkeypatch):
    """Found by QA: `export RUN "~/exp"` made a folder named ~ in the current one, and
    `predict --out "~/p.csv"` looked for ./~ (the shell leaves ~ in quotes)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    result = invoke("export", wine_run.run_dir, "~/exp")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "home" / "exp" / "model.keras").is_file()
    table = pd.read_csv(WINE_CSV).drop(columns="cultivar").head(3)
    table.to_csv(tmp_path / "home" / "new.csv", index=False)
    result = invoke("predict", wine_run.run_dir, "--data", "csv:~/new.csv", "-o", "~/p.csv")
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "home" / "p.csv")) == 3
    assert not (tmp_path / "~").exists()


def test_predict_refuses_a_tables_missing_values_naming_the_column_and_row(wine_run, tmp_path):
    """Found by QA: "'csv:new.csv' has missing values", with neither."""
    table = pd.read_csv(WINE_CSV).drop(columns="cultivar")
    table.iloc[4, 1] = np.nan
    table.to_csv(tmp_path / "gap.csv", index=False)
    out = tmp_path / "p.csv"
    result = invoke("predict", wine_run.run_dir, "--data", f"csv:{tmp_path / 'gap.csv'}", "-o", out)
    assert result.exit_code == 2, result.output
    assert (
        f"has 1 row(s) with missing values, in column(s) {table.columns[1]!r}; the first is "
        "data row 5; graftune takes no missing values: drop those rows or fill the values first"
    ) in result.output
    assert not out.exists()


def test_a_new_tables_text_cell_is_shown_with_how_its_numbers_were_read(wine_run, tmp_path):
    """Training named the cell and the decimal separator a ';' CSV was read with;
    predict named the column alone ("has non-numeric column(s) 'alcohol'")."""
    table = pd.read_csv(WINE_CSV).drop(columns="cultivar")
    # Written with decimal commas as the others (pandas writes a text column's "2.43"
    # as it is: a point in a decimal-comma file, itself no number there).
    table["ash"] = table["ash"].map(lambda v: f"{v}".replace(".", ","))
    table.loc[2, "ash"] = "?"
    table.to_csv(tmp_path / "new.csv", sep=";", decimal=",", index=False)
    result = invoke(
        "predict", wine_run.run_dir, "--data", f"csv:{tmp_path / 'new.csv'}", "-o", tmp_path / "p"
    )
    assert result.exit_code == 2, result.output
    assert (
        "has non-numeric column(s) 'ash' (data row 3: '?') (read as ';'-separated with "
        "decimal commas, as most numbers in its first"
    ) in " ".join(result.output.split())
    assert not (tmp_path / "p").exists()


def test_a_labelled_tables_text_cell_is_told_predicts_option(wine_run, tmp_path):
    """Found by QA: with its label column, a new table read as the run's training
    data, and its text cell's error named the recipe's data.ignore_columns."""
    table = pd.read_csv(WINE_CSV)
    table["ash"] = table["ash"].astype(object)
    table.loc[2, "ash"] = "?"
    table.to_csv(tmp_path / "new.csv", index=False)
    result = invoke(
        "predict", wine_run.run_dir, "--data", f"csv:{tmp_path / 'new.csv'}", "-o", tmp_path / "p"
    )
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "has non-numeric column(s) 'ash' (data row 3: '?')" in said
    assert "to the output with --ignore-column COLUMN" in said
    assert "data.ignore_columns" not in said


def test_predict_says_what_is_wrong_with_a_table_not_what_it_is_not(wine_run, tmp_path):
    """Found by QA: a header-only file without the label column was said to have
    non-numeric columns (with the label column: "a header but no rows");
    `--ignore-column` naming the run's label column, on a file without it, was
    said to be its label column; and a label column of measured numbers was refused
    as a recipe's target is (training advice), where one empty label in it had every
    row predicted."""
    table = pd.read_csv(WINE_CSV)
    header = tmp_path / "header.csv"
    table.drop(columns=["cultivar"]).head(0).to_csv(header, index=False)
    result = invoke("predict", wine_run.run_dir, "--data", f"csv:{header}")
    assert result.exit_code == 2, result.output
    assert f"error: {header} has a header but no rows" in " ".join(result.output.split())
    unlabelled = tmp_path / "unlabelled.csv"
    table.drop(columns=["cultivar"]).to_csv(unlabelled, index=False)
    result = invoke(
        "predict", wine_run.run_dir, "--data", f"csv:{unlabelled}", "--ignore-column", "cultivar"
    )
    assert result.exit_code == 2, result.output
    assert "--ignore-column 'cultivar' is not a column of 'csv:" in result.output
    measured = table.assign(cultivar=np.random.default_rng(0).random(len(table)) * 10)
    outs = []
    for name, frame in (("measured", measured), ("measured-one-empty", measured.astype(object))):
        if name.endswith("empty"):
            frame.loc[3, "cultivar"] = ""
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        out = tmp_path / f"{name}.out.csv"
        result = invoke(
            "predict", wine_run.run_dir, "--data", f"csv:{tmp_path / name}.csv", "-o", out
        )
        assert result.exit_code == 0, result.output
        assert "no accuracy: none of the labels" in " ".join(result.output.split())
        outs.append(pd.read_csv(out))
    assert len(outs[0]) == len(table)
    np.testing.assert_allclose(outs[0].filter(like="prob_"), outs[1].filter(like="prob_"))


def test_predict_scores_a_tables_labelled_rows_and_only_predicts_the_others(wine_run, tmp_path):
    """A label column with empty cells was refused: "drop or fill them first"."""
    table = pd.read_csv(WINE_CSV)
    whole = invoke("predict", wine_run.run_dir, "--data", f"csv:{WINE_CSV}", "-o", tmp_path / "a")
    table["cultivar"] = table["cultivar"].astype(object)
    table.loc[[0, 5, 70], "cultivar"] = ""
    table.to_csv(tmp_path / "part.csv", index=False)
    part = invoke(
        "predict", wine_run.run_dir, "--data", f"csv:{tmp_path / 'part.csv'}", "-o", tmp_path / "b"
    )
    assert whole.exit_code == 0 and part.exit_code == 0, part.output
    a, b = pd.read_csv(tmp_path / "a"), pd.read_csv(tmp_path / "b")
    np.testing.assert_allclose(b.filter(like="prob_"), a.filter(like="prob_"), rtol=1e-5)
    assert list(b["label"].isna().to_numpy().nonzero()[0]) == [0, 5, 70]
    assert (b["label"].dropna() == a["label"].drop(index=[0, 5, 70])).all()
    scored = b.dropna(subset=["label"])
    accuracy = (scored["label"] == scored["predicted"]).mean()
    assert (
        f"accuracy {accuracy:.4f} on {len(table) - 3} labelled examples (3 without a label: "
        "predicted only)"
    ) in " ".join(part.output.split())
    # A label the model has no class for is predicted, not scored, and said so (it
    # was left out of the count silently).
    table.loc[10, "cultivar"] = "zinfandel"
    table.to_csv(tmp_path / "foreign.csv", index=False)
    foreign = invoke(
        "predict",
        wine_run.run_dir,
        "--data",
        f"csv:{tmp_path / 'foreign.csv'}",
        "-o",
        tmp_path / "c",
    )
    assert foreign.exit_code == 0, foreign.output
    scored = scored.drop(index=10)
    accuracy = (scored["label"] == scored["predicted"]).mean()
    assert (
        f"accuracy {accuracy:.4f} on {len(table) - 4} labelled examples (3 without a label and "
        "1 with a label the model has no class for: predicted only)"
    ) in " ".join(foreign.output.split())


def test_predict_on_a_folder_that_is_no_run(tmp_path):
    result = invoke("predict", tmp_path, "--data", "sklearn:digits")
    assert result.exit_code == 2
    assert "not a graftune run directory" in result.output
    # One that stopped before its first trial (it said "no recipe.yaml", which it has).
    (tmp_path / "recipe.yaml").write_text("name: x\n")
    result = invoke("predict", tmp_path, "--data", "sklearn:digits")
    assert result.exit_code == 2
    assert f"{tmp_path} has no trials/: the run stopped before any trial ran" in result.output


def test_predict_a_table_by_column_name_with_or_without_labels(runs, tmp_path):
    wine = runs[1]
    table = pd.read_csv(WINE_CSV)
    labelled = invoke(
        "predict", wine.run_dir, "--data", f"csv:{WINE_CSV}", "--out", tmp_path / "a.csv"
    )
    assert labelled.exit_code == 0, labelled.output
    shuffled = table.drop(columns=["cultivar"])[list(reversed(table.columns.drop("cultivar")))]
    shuffled.to_csv(tmp_path / "new.csv", index=False)
    unlabelled = invoke(
        "predict",
        wine.run_dir,
        "--data",
        f"csv:{tmp_path / 'new.csv'}",
        "--out",
        tmp_path / "b.csv",
    )
    assert unlabelled.exit_code == 0, unlabelled.output
    a = pd.read_csv(tmp_path / "a.csv")
    b = pd.read_csv(tmp_path / "b.csv")
    assert "label" in a and "label" not in b
    assert list(a["label"]) == list(table["cultivar"])
    np.testing.assert_allclose(b.filter(like="prob_"), a.filter(like="prob_"), rtol=1e-5)
    assert "accuracy" not in unlabelled.output
    # The labels under another name: refused, with the way to name them.
    table.rename(columns={"cultivar": "kind"}).to_csv(tmp_path / "renamed.csv", index=False)
    renamed = f"csv:{tmp_path / 'renamed.csv'}"
    refused = invoke("predict", wine.run_dir, "--data", renamed)
    assert refused.exit_code == 2
    assert "if 'kind' holds the labels, name it with --target kind" in refused.output
    named = invoke("predict", wine.run_dir, "--data", renamed, "--target", "kind")
    assert named.exit_code == 0, named.output
    assert "accuracy" in named.output


def test_a_tables_id_columns_are_no_features_and_predict_copies_them_beside_its_predictions(
    tmp_path, monkeypatch
):
    """data.ignore_columns: an ID and a text column stay out of training; predict
    copies them to its output as the table holds them, and --ignore-column adds
    one the run never saw (refused as an unknown feature without it)."""
    table = pd.read_csv(WINE_CSV)
    table.insert(0, "bottle", [f"{i:04d}" for i in range(len(table))])  # 0007 stays 0007
    table.insert(3, "cellar", ["north", ""] * (len(table) // 2) + ["north"] * (len(table) % 2))
    table.to_csv(tmp_path / "wine.csv", index=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipe.yaml").write_text(
        textwrap.dedent(
            """
            name: ids
            data: {source: "csv:wine.csv", target: cultivar, ignore_columns: [bottle, cellar]}
            strategies: {scratch_mlp: {}}
            search: {backend: keras_tuner, num_samples: 1, max_epochs: 2}
            output: runs/
            """
        )
    )
    ran = invoke("run", tmp_path / "recipe.yaml", "--quiet")
    assert ran.exit_code == 0, ran.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    features = json.loads((run_dir / "best" / "config.json").read_text())["features"]
    assert features == list(pd.read_csv(WINE_CSV).columns.drop("cultivar"))

    labelled = invoke("predict", run_dir, "--data", "csv:wine.csv", "--out", tmp_path / "a.csv")
    assert labelled.exit_code == 0, labelled.output
    a = pd.read_csv(tmp_path / "a.csv", dtype={"bottle": str, "cellar": str}, keep_default_na=False)
    assert list(a.columns[:4]) == ["row", "bottle", "cellar", "predicted"]
    assert list(a["bottle"]) == list(table["bottle"]) and a["bottle"][7] == "0007"
    assert list(a["cellar"]) == list(table["cellar"].fillna(""))
    assert list(a["label"]) == list(table["cultivar"])

    # A new table: no labels, no cellar (the run's ignored columns it lacks are not
    # wanted), and a column the run never saw.
    new = table.drop(columns=["cultivar", "cellar"]).assign(batch="b1")
    new.to_csv(tmp_path / "new.csv", index=False)
    refused = invoke("predict", run_dir, "--data", "csv:new.csv")
    assert refused.exit_code == 2
    assert "copy it to the output with --ignore-column batch" in refused.output
    b = invoke("predict", run_dir, "--data", "csv:new.csv", "--ignore-column", "batch")
    assert b.exit_code == 0, b.output
    b = pd.read_csv(StringIO(b.stdout), dtype={"bottle": str})
    assert list(b.columns[:4]) == ["row", "bottle", "batch", "predicted"]
    np.testing.assert_allclose(b.filter(like="prob_"), a.filter(like="prob_"), rtol=1e-5)
    unknown = invoke("predict", run_dir, "--data", "csv:new.csv", "--ignore-column", "batsh")
    assert unknown.exit_code == 2
    assert "--ignore-column 'batsh' (did you mean 'batch'?) is not a column of" in unknown.output
    feature = invoke("predict", run_dir, "--data", "csv:new.csv", "--ignore-column", "alcohol")
    assert feature.exit_code == 2
    assert "--ignore-column 'alcohol': the model takes it as a feature" in feature.output
    from orchestrator.predict import predict

    api = predict(run_dir, "csv:new.csv", ignore="batch")  # one column alone, as in a recipe
    assert list(api.frame.columns[:3]) == ["row", "bottle", "batch"]
    # Another label column named: the run's own is then an unknown column, and the
    # error names the label column read, not the one it calls unknown.
    other = invoke("predict", run_dir, "--data", "csv:wine.csv", "--target", "cellar")
    assert other.exit_code == 2
    assert "not trained on: 'cultivar'" in other.output
    assert "(and optionally the label column 'cellar')" in other.output
    # A feature named as the label column (QA: "lacks 'alcohol'", and it optional).
    feature_label = invoke("predict", run_dir, "--data", "csv:new.csv", "--target", "alcohol")
    assert feature_label.exit_code == 2
    assert "--target 'alcohol' is a feature the model takes, not a label column" in (
        feature_label.output
    )
    assert len(predict(run_dir, "csv:wine.csv", ignore=None).frame) == len(table)
    label = invoke("predict", run_dir, "--data", "csv:wine.csv", "--ignore-column", "cultivar")
    assert label.exit_code == 2
    assert "--ignore-column 'cultivar' is the label column of 'csv:wine.csv' (" in label.output

    # Found by QA: what a Parquet file's columns hold comes through as it is (nullable
    # integers became floats, and two large IDs one; list cells crashed the JSON), and
    # a column named like one of predict's, and one named like that name, both stay.
    ids = pd.array([1234567890123456789, None, 1234567890123456791], dtype="Int64")
    odd = pd.read_csv(WINE_CSV).drop(columns=["cultivar"]).head(3)
    odd = odd.assign(acct=ids, tags=[["a", "b"], [], ["c"]], row=["r1", "r2", "r3"])
    odd["input_row"] = "IR"
    odd.to_parquet(tmp_path / "odd.parquet", index=False)
    columns = ["--ignore-column", "acct", "--ignore-column", "tags", "--ignore-column", "row"]
    columns += ["--ignore-column", "input_row"]
    for suffix in ("parquet", "json", "csv"):
        out = tmp_path / f"odd-out.{suffix}"
        done = invoke("predict", run_dir, "--data", "parquet:odd.parquet", *columns, "--out", out)
        assert done.exit_code == 0, done.output
    frame = pd.read_parquet(tmp_path / "odd-out.parquet")
    # The table's row, named like predict's, takes input_ as often as it needs.
    assert list(frame.columns[:5]) == ["row", "acct", "tags", "input_input_row", "input_row"]
    assert str(frame["acct"].dtype) == "Int64" and frame["acct"].iloc[2] == ids[2]
    assert list(frame["input_input_row"]) == ["r1", "r2", "r3"]
    rows = json.loads((tmp_path / "odd-out.json").read_text())
    assert [r["acct"] for r in rows] == [1234567890123456789, None, 1234567890123456791]
    assert [r["tags"] for r in rows] == [["a", "b"], [], ["c"]]
    # In CSV, a list cell as Python writes a list (numpy's "['a' 'b']" before).
    assert list(pd.read_csv(tmp_path / "odd-out.csv")["tags"]) == ["['a', 'b']", "[]", "['c']"]
    assert rows[0]["input_row"] == "IR" and rows[0]["row"] == 0
    # An ID kept as a Parquet file's stored index (df.set_index(...).to_parquet) is
    # named like a column, and copied.
    odd.drop(columns=["tags", "row", "input_row"]).set_index("acct").to_parquet(tmp_path / "i.pq")
    indexed = invoke("predict", run_dir, "--data", "parquet:i.pq", "--ignore-column", "acct")
    assert indexed.exit_code == 0, indexed.output
    frame = pd.read_csv(StringIO(indexed.stdout), dtype={"acct": str}, keep_default_na=False)
    assert list(frame["acct"]) == ["1234567890123456789", "", "1234567890123456791"]
    # Found by QA: consecutive integer IDs, which pandas stores as a range (no column).
    ranged = odd.drop(columns=["tags", "row", "input_row"]).assign(acct=[100, 101, 102])
    ranged.set_index("acct").to_parquet(tmp_path / "r.pq")
    indexed = invoke("predict", run_dir, "--data", "parquet:r.pq", "--ignore-column", "acct")
    assert indexed.exit_code == 0, indexed.output
    assert list(pd.read_csv(StringIO(indexed.stdout))["acct"]) == [100, 101, 102]


def test_predict_a_table_missing_a_column_is_refused(runs, tmp_path):
    table = pd.read_csv(WINE_CSV).drop(columns=["alcohol", "cultivar"])
    table.to_csv(tmp_path / "short.csv", index=False)
    result = invoke("predict", runs[1].run_dir, "--data", f"csv:{tmp_path / 'short.csv'}")
    assert result.exit_code == 2
    assert "lacks column(s) 'alcohol'" in result.output


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory):
    """Both formats of the best and of the fine_tune trial, and their reloaded predictions."""
    digits = runs[0]
    folder = tmp_path_factory.mktemp("exports")
    fine_tune = trial_of(digits, "fine_tune")
    made = []
    for fmt in ("keras", "savedmodel"):
        for trial in (None, f"fine_tune/{fine_tune}"):
            dest = folder / f"{fmt}-{'best' if trial is None else 'fine_tune'}"
            args = ["export", digits.run_dir, dest, "--format", fmt]
            result = invoke(*args, *(["--trial", trial] if trial else []))
            assert result.exit_code == 0, result.output
            strategy, trial_id = (
                (digits.best["strategy"], digits.best["trial_id"])
                if trial is None
                else ("fine_tune", fine_tune)
            )
            made.append((fmt, dest, folder / f"{dest.name}.npy", strategy, trial_id))
    data = split_of(digits.run_dir)
    np.save(folder / "x.npy", np.asarray(data.x_test))
    jobs = json.dumps([(fmt, str(dest), str(out)) for fmt, dest, out, _, _ in made])
    reload = subprocess.run(
        [sys.executable, "-c", RELOAD, str(folder / "x.npy"), jobs],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reload.returncode == 0, reload.stderr[-3000:]
    return made, data


def test_exports_reload_without_graftune_and_predict_as_the_run(runs, exports):
    made, _ = exports
    for fmt, _, out, strategy, trial_id in made:
        reloaded = np.load(out)
        expected = in_run(runs[0].run_dir, strategy, trial_id)
        np.testing.assert_allclose(
            reloaded, expected, rtol=1e-5, atol=1e-5, err_msg=f"{fmt} {strategy}"
        )


def test_exports_carry_class_names_and_input_shape(exports, runs):
    from orchestrator.trial import read_result

    made, data = exports
    run_dir = runs[0].run_dir
    for fmt, dest, _, strategy, trial_id in made:
        meta = json.loads((dest / "graftune.json").read_text())
        assert meta["format"] == fmt
        assert meta["class_names"] == list(data.task.class_names)
        assert meta["input_shape"] == [8, 8, 1]
        assert (meta["strategy"], meta["trial_id"]) == (strategy, trial_id)
        # Its configuration and scores, as README says, and where it came from (found
        # by mutation testing: none of them was checked).
        trial = read_result(run_dir / "trials" / strategy / trial_id)
        assert trial is not None and trial.config
        assert meta["config"] == trial.config
        assert meta["scores"] == pytest.approx(
            {
                k: getattr(trial, k)
                for k in ("val_accuracy", "test_accuracy", "val_loss", "test_loss")
            }
        )
        assert meta["run_dir"] == str(Path(run_dir).resolve())
        if fmt == "keras":
            assert (dest / "model.keras").is_file()
        else:
            assert (dest / "saved_model.pb").is_file()


def test_the_load_line_names_only_registered_objects_as_python(tmp_path, monkeypatch):
    """Found by QA: a `registered_name` planted in an untrusted model.keras, in a key
    Keras ignores (so it loads with safe_mode), was pasted into graftune.json's `load`
    line as Python, and ran when the user ran that line."""
    import zipfile

    import keras

    from orchestrator.export import _custom_objects, _how_to_load
    from tests.keras_layers import Scale

    planted = 'os import getcwd; __import__("os").system("touch pwned"); from os.path'
    config = {
        "class_name": "Functional",
        "x": {"registered_name": planted + ">x"},
        "layers": [
            {"class_name": "Scale", "registered_name": "tests>Scale", "config": {}},
            {"class_name": "Shift", "registered_name": "tests>Shift", "config": {}},
        ],
    }
    saved = tmp_path / "model.keras"
    with zipfile.ZipFile(saved, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
    monkeypatch.setitem(keras.saving.get_custom_objects(), "tests>Scale", Scale)
    custom = _custom_objects(saved)
    assert custom == {"tests>Scale": "tests.keras_layers.Scale"}  # neither planted nor unknown
    line = _how_to_load(custom)
    assert "system" not in line
    compile(line, "load", "exec")  # Python (that it loads: test_controls.py)
    assert line.startswith("import keras; from tests.keras_layers import Scale; model = ")
    assert "custom_objects={'tests>Scale': Scale})" in line
    # Loaded safely, with or without custom objects (found by mutation testing: no
    # test read the flag, and safe_mode=False runs a Lambda layer's code).
    assert "safe_mode=True" in line and "safe_mode=False" not in line
    assert "safe_mode=True)" in _how_to_load({})


def test_an_export_whose_ctrl_c_python_dropped_stops_before_it_exports(runs, tmp_path):
    """Found by QA: a Ctrl+C that came while a garbage collection's callback ran (one
    of jax's) was dropped ("Exception ignored in ... KeyboardInterrupt"), and export
    went on to the end, exit 0. Remembered, it stops export before DEST is made."""
    import signal

    from orchestrator.export import export_model
    from orchestrator.tuning import ray_start

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # (xdist ignores it)
    try:
        with ray_start.sigterm_stops_the_run():
            with contextlib.suppress(KeyboardInterrupt):  # as when Python drops it
                signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
            with pytest.raises(KeyboardInterrupt):
                export_model(runs[0].run_dir, tmp_path / "model")
    finally:
        signal.signal(signal.SIGINT, before)
        ray_start.forget_sigterm()
    assert list(tmp_path.iterdir()) == []  # nor its staging folder


def test_a_refused_export_leaves_no_folder_it_made(iris_run, tmp_path):
    """Found by QA: an export of a model that could not be loaded was refused (exit
    2, "nothing is written"), and the new folders above its destination stayed."""
    damaged = shutil.copytree(iris_run, tmp_path / "damaged" / iris_run.name)
    os.truncate(damaged / "best" / "model.keras", 1000)
    result = invoke("export", damaged, tmp_path / "new" / "sub" / "exported")
    assert result.exit_code == 2, result.output
    assert "is not a whole .keras file" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged"]
    (tmp_path / "mine").mkdir()  # a folder that was there stays
    result = invoke("export", damaged, tmp_path / "mine" / "sub" / "exported")
    assert result.exit_code == 2, result.output
    assert list((tmp_path / "mine").iterdir()) == []


def test_export_refuses_a_folder_that_is_not_empty(runs, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    result = invoke("export", runs[0].run_dir, tmp_path / "taken")
    assert result.exit_code == 2
    assert "exists" in result.output
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["keep.txt"]
    assert not list(tmp_path.glob(".taken*"))
    # Found by QA: a place it cannot write ended in "internal error: OSError"; and a
    # long legal name, as its temporary name grew past 255 bytes.
    result = invoke("export", runs[0].run_dir, tmp_path / "taken" / "keep.txt" / "model")
    assert result.exit_code == 2, result.output
    assert "error: cannot export to" in result.output and "is a file, not a folder" in result.output
    # Found by QA: into a run directory (its own or another's), where predict then took
    # a folder in trials/ for a trial of the run.
    for inside in ("trials/fine_tune/mine", "exported"):
        for run_dir in (runs[0].run_dir, runs[1].run_dir):
            result = invoke("export", runs[0].run_dir, run_dir / inside)
            assert result.exit_code == 2, result.output
            assert f"it is inside the run directory {run_dir}, whose files" in result.output
            assert not (run_dir / inside).exists()
    # Found by QA: "-", stdout to every other command, made a folder named -.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        result = invoke("export", runs[0].run_dir, "-")
    assert result.exit_code == 2, result.output
    assert "export writes a folder" in result.output and "cannot go to stdout" in result.output
    assert not (tmp_path / "-").exists()
    long = tmp_path / ("d" * 250)
    result = invoke("export", runs[0].run_dir, long)
    assert result.exit_code == 0, result.output
    assert (long / "model.keras").is_file()


# Runs each (folder, script) of argv[1] in that folder, with fresh globals.
RUN_IN_FOLDERS = """
import json, os, sys
for folder, script in json.loads(sys.argv[1]):
    os.chdir(folder)
    exec(compile(script, folder, "exec"), {"__name__": "__main__"})
"""


def test_export_fills_an_empty_folder_in_place_and_its_load_line_runs_there(
    runs, tmp_path, monkeypatch
):
    """Found by QA: `graftune export RUN .` in an empty folder staged the export inside
    itself (an OSError), and DEST a link to an empty folder was removed as a folder
    (NotADirectoryError), each after the work; the SavedModel's `load` line named
    neither TensorFlow nor its folder."""
    digits = runs[0]
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    result = invoke("export", digits.run_dir, ".", "--format", "savedmodel")
    assert result.exit_code == 0, result.output
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    result = invoke("export", digits.run_dir, tmp_path / "link")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "link").is_symlink() and (target / "model.keras").is_file()
    np.save(tmp_path / "x.npy", np.asarray(split_of(digits.run_dir).x_test))
    scripts = []
    for folder, made in (
        (here, "loaded.serve(tf.constant(x, tf.float32)).numpy()"),
        (target, "model.predict(x, verbose=0)"),
    ):
        assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no staging left
        meta = json.loads((folder / "graftune.json").read_text())
        assert meta["load"].startswith("import ")
        script = (
            f"import numpy as np; x = np.load({str(tmp_path / 'x.npy')!r})\n"
            + meta["load"]
            + f"\nnp.save('out.npy', {made})"
        )
        scripts.append((str(folder), script))
    # One process (TensorFlow imported once) runs each line in its folder, each with
    # names of its own: a line that imports nothing it uses, or that names its folder
    # only relative to where it is run, fails as in a process of its own.
    ran = subprocess.run(
        [sys.executable, "-c", RUN_IN_FOLDERS, json.dumps(scripts)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    expected = in_run(digits.run_dir, digits.best["strategy"], digits.best["trial_id"])
    for folder in (here, target):
        np.testing.assert_allclose(np.load(folder / "out.npy"), expected, rtol=1e-5, atol=1e-5)


def test_the_best_trial_named_needs_no_base_from_the_cache(runs, test_npz, tmp_path):
    """Found by QA: after `cache clear --bases`, --trial naming the run's best trial,
    which trained on cached features, was refused and pointed at the best model."""
    from orchestrator.predict import find_model, load_model
    from orchestrator.trial import TOP_FILE

    run_dir = tmp_path / "copy"
    shutil.copytree(runs[0].run_dir, run_dir, ignore=shutil.ignore_patterns("ray"))
    folder = next(p for p in sorted((run_dir / "trials").glob("*/*")) if (p / TOP_FILE).is_file())
    # This copy's best is that trial: its whole model in best/, as a run saves it.
    whole = load_model(find_model(run_dir, folder.name))
    whole.save(run_dir / "best" / "model.keras")
    best = json.loads((run_dir / "best" / "config.json").read_text())
    best |= {"strategy": folder.parent.name, "trial_id": folder.name}
    (run_dir / "best" / "config.json").write_text(json.dumps(best))
    data = f"npz:{test_npz[0]}"
    before = invoke("predict", run_dir, "--data", data, "--trial", folder.name, "-o", "-")
    assert before.exit_code == 0, before.output
    base = json.loads((run_dir / "base.json").read_text())
    base["path"] = str(tmp_path / "cleared" / "base.keras")
    (run_dir / "base.json").write_text(json.dumps(base))

    after = invoke("predict", run_dir, "--data", data, "--trial", folder.name, "-o", "-")

    assert after.exit_code == 0, after.output
    assert after.stdout == before.stdout


def test_a_cached_trial_whose_base_left_the_cache_is_refused_with_the_way_out(
    runs, test_npz, tmp_path
):
    run_dir = tmp_path / "copy"
    shutil.copytree(runs[0].run_dir, run_dir, ignore=shutil.ignore_patterns("ray"))
    base = json.loads((run_dir / "base.json").read_text())
    base["path"] = str(tmp_path / "cleared" / "base.keras")
    (run_dir / "base.json").write_text(json.dumps(base))
    trial_id = trial_of(runs[0], "fine_tune")
    out = tmp_path / "preds.csv"
    result = invoke(
        "predict", run_dir, "--data", f"npz:{test_npz[0]}", "--trial", trial_id, "--out", out
    )
    assert result.exit_code == 2
    from orchestrator.bases import cache_dir

    here = cache_dir() / "bases" / "cleared" / "base.keras"
    assert "no longer in graftune's cache (neither at " in result.output
    assert f"{base['path']}, where the run kept it, nor at {here})" in result.output
    assert "best model" in result.output
    # Found by QA: running the recipe again makes another base where its file changed.
    said = " ".join(result.output.split())
    assert "(the same base only from the same base file, weights, or pretrain data" in said
    assert not out.exists()


def test_a_cached_trial_of_a_run_made_with_another_cache_finds_its_base_in_this_one(
    runs, test_npz, tmp_path
):
    """Found by QA: a run fetched from a cluster (or made with another
    $GRAFTUNE_CACHE_DIR) names its base in that cache; predict and export --trial
    said the base was "no longer in graftune's cache" though the same entry was
    in this one, and running the recipe again never helped."""
    run_dir = tmp_path / "copy"
    shutil.copytree(runs[0].run_dir, run_dir, ignore=shutil.ignore_patterns("ray"))
    base = json.loads((run_dir / "base.json").read_text())
    kept = Path(base["path"])
    base["path"] = str(Path("/home/alice/.cache/graftune/bases") / kept.parent.name / kept.name)
    (run_dir / "base.json").write_text(json.dumps(base))
    trial_id = trial_of(runs[0], "fine_tune")
    out = tmp_path / "preds.csv"

    result = invoke(
        "predict", run_dir, "--data", f"npz:{test_npz[0]}", "--trial", trial_id, "--out", out
    )

    assert result.exit_code == 0, result.output
    expected = in_run(run_dir, "fine_tune", trial_id)
    frame = pd.read_csv(out)
    np.testing.assert_allclose(
        frame.filter(like="prob_").to_numpy(), expected, rtol=1e-5, atol=1e-6
    )
    exported = invoke("export", run_dir, tmp_path / "dest", "--trial", trial_id)
    assert exported.exit_code == 0, exported.output


def test_what_a_plugin_prints_stays_out_of_the_predictions_on_stdout(runs, tmp_path, monkeypatch):
    """Found by QA: a data source that printed a line put it first in predict's CSV on
    stdout, which pandas then read as a table of one column (exit 0)."""
    (tmp_path / "loud_source.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            from sklearn.datasets import load_digits

            from orchestrator import hookimpl
            from orchestrator.data import DataSource, LabelledArrays

            print("loud_source: imported")


            class Loud(DataSource):
                scheme = "loud"
                description = "digits, said aloud"

                def load(self, location, spec, base_dir):
                    print("loud_source: loading", location)
                    digits = load_digits()
                    names = tuple(str(k) for k in range(10))
                    return LabelledArrays(digits.images[..., None] / 16, digits.target, names)


            @hookimpl
            def graftune_register_data_sources(registry):
                registry.add(Loud)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    result = invoke("predict", runs[0].run_dir, "--data", "loud:all", "--plugin", "loud_source")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(StringIO(result.stdout))
    assert len(frame) == 1797 and "predicted" in frame.columns, result.stdout[:300]
    assert "loud_source: loading all" in result.stderr
    assert "loud_source: imported" in result.stderr


RUN_PLUGINS_HINT = (
    "(the run was made with --plugin tests.fixture_plugins, not given now: pass it again)"
)


def refusals_of_trial(run_dir: Path, trial_id: str, npz: Path, dest: Path) -> list[str]:
    """The one line each of predict --trial and export --trial is refused with (exit 2,
    nothing exported)."""
    lines = []
    for command in (
        ["predict", run_dir, "--data", f"npz:{npz}", "--trial", trial_id],
        ["export", run_dir, dest, "--trial", trial_id],
    ):
        result = invoke(*command)
        assert result.exit_code == 2, result.output
        line, *more = result.output.splitlines()
        # (and, where the error speaks of plugins, the --plugin modules the run was made
        # with: tests.fixture_plugins)
        assert more in ([], [RUN_PLUGINS_HINT]), result.output
        lines.append(line)
    assert not dest.exists()
    return lines


def test_a_cached_trial_whose_base_json_is_damaged_is_named(runs, test_npz, tmp_path):
    """Found by QA: "internal error: JSONDecodeError", exit 1, from predict --trial."""
    run_dir = tmp_path / "copy"
    shutil.copytree(runs[0].run_dir, run_dir, ignore=shutil.ignore_patterns("ray"))
    (run_dir / "base.json").write_text("garbage")
    trial_id = trial_of(runs[0], "fine_tune")
    for line in refusals_of_trial(run_dir, trial_id, test_npz[0], tmp_path / "out"):
        assert line.startswith(f"error: {run_dir / 'base.json'} cannot be read (JSONDecode"), line
        assert f"trial fine_tune/{trial_id} trained on cached features" in line
        assert f"best model ({run_dir / 'best' / 'model.keras'}) is whole" in line


def test_a_cached_trial_whose_base_holds_an_unregistered_layer_is_named(runs, test_npz, tmp_path):
    """Found by QA: a trial on cached features of a base with a plugin's custom layer,
    predicted or exported without that plugin, was "internal error: TypeError", exit 1
    (the whole best model gave the clear message)."""
    import zipfile

    run_dir = tmp_path / "copy"
    shutil.copytree(runs[0].run_dir, run_dir, ignore=shutil.ignore_patterns("ray"))
    base = json.loads((run_dir / "base.json").read_text())
    # The run's base with one layer a class no code registers, as a plugin's would be.
    edited = tmp_path / "bases" / Path(base["path"]).parent.name / "base.keras"
    edited.parent.mkdir(parents=True)
    with zipfile.ZipFile(base["path"]) as kept, zipfile.ZipFile(edited, "w") as made:
        for item in kept.infolist():
            data = kept.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                layer = next(
                    lay for lay in config["config"]["layers"] if lay["class_name"] == "Conv2D"
                )
                layer.update(
                    class_name="Spectral", module=None, registered_name="qa_plugin>Spectral"
                )
                data = json.dumps(config).encode()
            made.writestr(item, data)
    base["path"] = str(edited)
    (run_dir / "base.json").write_text(json.dumps(base))
    trial_id = trial_of(runs[0], "fine_tune")
    for line in refusals_of_trial(run_dir, trial_id, test_npz[0], tmp_path / "out"):
        assert line.startswith(f"error: cannot load trial fine_tune/{trial_id}'s model"), line
        assert (
            "the custom Keras object 'Spectral' (saved as 'qa_plugin>Spectral'), which no "
            "imported code" in line
        )
        assert "--plugin" in line and "top.keras behind its base" in line


def test_export_of_a_trial_without_a_model_is_refused(runs, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(runs[0].run_dir, run_dir, ignore=shutil.ignore_patterns("ray"))
    trial_id = trial_of(runs[0], "fine_tune")
    folder = run_dir / "trials" / "fine_tune" / trial_id
    # Trained on cached features, it saved only the part above the cut.
    assert (folder / "top.keras").is_file() and not (folder / "model.keras").exists()
    (folder / "top.keras").unlink()
    result = invoke("export", run_dir, tmp_path / "dest", "--trial", trial_id)
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert f"{folder / 'top.keras'} is gone: trial fine_tune/{trial_id} ended ok and saved it" in (
        said
    )
    assert not (tmp_path / "dest").exists()
    # A damaged result.json: it ended in "internal error: JSONDecodeError".
    (folder / "result.json").write_text("{bad")
    result = invoke("export", run_dir, tmp_path / "dest", "--trial", trial_id)
    assert result.exit_code == 2, result.output
    assert f"error: trial fine_tune/{trial_id}'s result.json cannot be read (JSONDecodeError" in (
        result.output
    )


def test_a_pruned_trial_is_called_pruned_when_it_has_no_model(runs, tmp_path):
    from orchestrator.leaderboard import read_leaderboard, write_leaderboard

    run_dir = tmp_path / "copy"
    shutil.copytree(runs[0].run_dir, run_dir, ignore=shutil.ignore_patterns("ray"))
    trial_id = trial_of(runs[0], "fine_tune")
    folder = run_dir / "trials" / "fine_tune" / trial_id
    # What a trial a scheduler stopped leaves: no result.json, no model.
    for name in ("result.json", "top.keras", "model.keras"):
        (folder / name).unlink(missing_ok=True)
    frame = read_leaderboard(run_dir)
    frame.loc[frame["trial_id"] == trial_id, "status"] = "pruned"
    write_leaderboard(frame, run_dir)

    result = invoke("export", run_dir, tmp_path / "dest", "--trial", trial_id)
    assert result.exit_code == 2
    assert f"trial fine_tune/{trial_id} saved no model (status pruned)" in result.output


def test_a_table_runs_feature_order_is_recorded_and_outlives_the_table(runs, tmp_path):
    import shutil

    import yaml

    wine = runs[1]
    table = pd.read_csv(WINE_CSV)
    features = list(table.columns.drop("cultivar"))
    summary = json.loads((wine.run_dir / "best" / "config.json").read_text())
    assert summary["features"] == features
    made = invoke("export", wine.run_dir, tmp_path / "exported")
    assert made.exit_code == 0, made.output
    assert json.loads((tmp_path / "exported" / "graftune.json").read_text())["features"] == features
    # The training table gone (a submitted job's working folder, say): the
    # recorded order still puts a reordered table's columns right.
    moved = tmp_path / "run"
    shutil.copytree(wine.run_dir, moved)
    recipe = yaml.safe_load((moved / "recipe.yaml").read_text())
    recipe["data"]["source"] = f"csv:{tmp_path / 'gone.csv'}"
    (moved / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    table[list(reversed(table.columns))].to_csv(tmp_path / "reordered.csv", index=False)
    as_run = invoke("predict", wine.run_dir, "--data", f"csv:{WINE_CSV}", "-o", tmp_path / "a.csv")
    later = invoke(
        "predict", moved, "--data", f"csv:{tmp_path / 'reordered.csv'}", "-o", tmp_path / "b.csv"
    )
    assert as_run.exit_code == 0 and later.exit_code == 0, later.output
    np.testing.assert_allclose(
        pd.read_csv(tmp_path / "b.csv").filter(like="prob_"),
        pd.read_csv(tmp_path / "a.csv").filter(like="prob_"),
        rtol=1e-5,
    )
    # The training table re-saved with its columns in another order: the recorded
    # order still wins (the table's new order scrambled the features, accuracy 0.33).
    recipe["data"]["source"] = f"csv:{tmp_path / 'reordered.csv'}"
    (moved / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    edited = invoke("predict", moved, "--data", f"csv:{WINE_CSV}", "-o", tmp_path / "c.csv")
    assert edited.exit_code == 0, edited.output
    np.testing.assert_allclose(
        pd.read_csv(tmp_path / "c.csv").filter(like="prob_"),
        pd.read_csv(tmp_path / "a.csv").filter(like="prob_"),
        rtol=1e-5,
    )


def test_a_run_on_a_scikit_learn_table_matches_a_tables_columns_by_name(iris_run, tmp_path):
    """Found by QA: a run trained on sklearn:wine recorded no feature names, so
    predict took a CSV's columns by position: the same named columns in another
    order scored 0.33 where they scored 0.97, silently."""
    from sklearn.datasets import load_iris

    run_dir = shutil.copytree(iris_run, tmp_path / "runs" / iris_run.name)  # changed below
    frame = load_iris(as_frame=True).frame
    features = list(frame.columns[:-1])
    assert json.loads((run_dir / "best" / "config.json").read_text())["features"] == features
    frame.to_csv(tmp_path / "same.csv", index=False)
    frame[[*features[::-1], "target"]].to_csv(tmp_path / "reversed.csv", index=False)
    predicted = {}
    for name in ("same", "reversed"):
        out = tmp_path / f"{name}_predictions.csv"
        result = invoke("predict", run_dir, "--data", f"csv:{tmp_path / name}.csv", "--out", out)
        assert result.exit_code == 0, result.output
        # Its "target" column holds class codes: read as the run's class names, and scored
        # (it was taken for a feature, and then, named by --target, matched no class).
        assert "on 150 labelled examples" in result.output, result.output
        predicted[name] = pd.read_csv(out)
    pd.testing.assert_frame_equal(predicted["same"], predicted["reversed"])
    assert set(predicted["same"]["label"]) == {"setosa", "versicolor", "virginica"}
    # Columns named otherwise are refused with the run's names, not read by position.
    frame.rename(columns={features[0]: "sepal length"}).to_csv(
        tmp_path / "renamed.csv", index=False
    )
    result = invoke("predict", run_dir, "--data", f"csv:{tmp_path / 'renamed.csv'}")
    assert result.exit_code == 2, result.output
    assert "lacks column(s) 'sepal length (cm)'" in result.output
    # And scikit-learn's own table is matched by its names as well (found by QA: a run
    # on a CSV of four other columns took sklearn:iris by position, exit 0).
    summary = json.loads((run_dir / "best" / "config.json").read_text())
    other = {**summary, "features": ["a", "b", "c", "d"]}
    (run_dir / "best" / "config.json").write_text(json.dumps(other))
    result = invoke("predict", run_dir, "--data", "sklearn:iris", "--out", tmp_path / "no.csv")
    assert result.exit_code == 2, result.output
    assert "data 'sklearn:iris' lacks column(s) 'a', 'b', 'c', 'd' and has column(s)" in (
        " ".join(result.output.split())
    )
    assert "--ignore-column" not in result.output
    assert not (tmp_path / "no.csv").exists()
    (run_dir / "best" / "config.json").write_text(json.dumps(summary))
    # A folder of images, for this model of features, is said to be one (found by QA:
    # told to set data.image_size, a recipe key, for images of two sizes).
    from PIL import Image

    for size in (8, 9):
        (tmp_path / "pictures" / "a").mkdir(parents=True, exist_ok=True)
        Image.new("L", (size, size)).save(tmp_path / "pictures" / "a" / f"{size}.png")
    result = invoke("predict", run_dir, "--data", f"images:{tmp_path / 'pictures'}")
    assert result.exit_code == 2, result.output
    assert "the model takes rows of 4 features, and 'images:" in result.output
    assert "image_size" not in result.output
    # A run from before the names were recorded: predict and export look them up.
    summary = json.loads((run_dir / "best" / "config.json").read_text())
    del summary["features"]
    (run_dir / "best" / "config.json").write_text(json.dumps(summary))
    assert invoke("export", run_dir, tmp_path / "exported").exit_code == 0
    exported = json.loads((tmp_path / "exported" / "graftune.json").read_text())
    assert exported["features"] == features


def test_output_whose_reader_has_gone_ends_quietly_with_sigpipes_status(wine_run):
    """Found by QA: `graftune predict ... | head` exited 1, README's "every trial
    failed". A closed pipe now ends any command as SIGPIPE ends `yes | head`: 141,
    nothing said. Rich's console, Click's wrapper and the TensorFlow-loaded exit
    each met it their own way."""
    import os

    from tests.search_helpers import GRAFTUNE

    commands = {
        "rich": ["--version"],
        "click": ["leaderboard", str(wine_run.run_dir), "--format", "csv"],
        "tensorflow": ["predict", str(wine_run.run_dir), "--data", f"csv:{WINE_CSV}"],
        # Written to /dev/stdout as a file (found by QA: "internal error: BrokenPipeError").
        "a page": ["report", str(wine_run.run_dir), "--out", "-"],
    }
    for way, args in commands.items():
        read, write = os.pipe()
        os.close(read)  # the reader has gone before the first line
        try:
            done = subprocess.run(
                [GRAFTUNE, *args], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120
            )
        finally:
            os.close(write)
        assert (way, done.returncode, done.stderr) == (way, 141, ""), done.stderr


def test_data_written_to_stdout_is_utf8_whatever_the_consoles_encoding(tmp_path):
    """Found by QA: under PYTHONIOENCODING=ascii (or a C locale without Python's UTF-8
    mode) predict wrote a class Barolò into its CSV as the text `Barol\\xf2`, exit 0;
    -o file.csv wrote UTF-8."""
    import os

    from tests.search_helpers import GRAFTUNE

    table = pd.read_csv(WINE_CSV)
    accented = {"barbera": "Barberà", "barolo": "Barolò", "grignolino": "Grignolìno"}
    table["cultivar"] = table["cultivar"].map(accented)
    table.to_csv(tmp_path / "vini.csv", index=False)
    (tmp_path / "one.yaml").write_text(
        "name: one\ndata: {source: 'csv:vini.csv', target: cultivar}\n"
        "strategies: {scratch_mlp: {}}\n"
        "search: {backend: keras_tuner, num_samples: 1, max_epochs: 1}\noutput: runs/\n"
    )
    result = invoke("run", tmp_path / "one.yaml", "--quiet")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    done = subprocess.run(
        [GRAFTUNE, "predict", str(run_dir), "--data", f"csv:{tmp_path / 'vini.csv'}"],
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "ascii"},
    )
    assert done.returncode == 0, done.stderr
    header = done.stdout.decode("utf-8").splitlines()[0]
    assert header.endswith(",prob_Barberà,prob_Barolò,prob_Grignolìno"), header


def test_a_run_whose_output_reader_has_gone_goes_on_to_its_end(tmp_path):
    """Found by QA: `graftune run R | head` (a pager quit) ended the search midway,
    with no leaderboard and no word; it goes on now, saying so once on stderr, and
    ends with SIGPIPE's status, as `run --quiet | head` did."""
    from tests.search_helpers import GRAFTUNE, write_recipe

    # Two trials: the reader leaves at the first line, before either trains.
    recipe = write_recipe(tmp_path, "{backend: keras_tuner, num_samples: 2, max_epochs: 1}")
    running = subprocess.Popen(
        [GRAFTUNE, "run", str(recipe), "--run-dir", str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert running.stdout.readline().startswith("data: sklearn:iris")
    running.stdout.close()  # as `head -1` leaves
    stderr = running.stderr.read()
    assert running.wait(timeout=300) == 141, stderr
    assert stderr == (
        "note: the output's reader has gone; the run goes on without printing its progress "
        "(its leaderboard is written in its run directory)\n"
        # Found by QA: nothing named that directory (runs of one recipe seconds apart).
        f"note: the run's results are in {tmp_path / 'run'}\n"
    )
    assert (tmp_path / "run" / "finished.json").is_file()
    assert len(pd.read_csv(tmp_path / "run" / "leaderboard.csv")) == 2


def test_a_run_whose_output_cannot_be_written_goes_on_to_its_end(tmp_path):
    """Found by QA: a run logging to a full disk (`> /dev/full`) was stopped, with an
    error naming the run directory's disk (it had room) and no word of stdout. It
    goes on, as when its reader has gone, and ends saying stdout failed (exit 1)."""
    from tests.search_helpers import GRAFTUNE, write_recipe

    recipe = write_recipe(tmp_path, "{backend: keras_tuner, num_samples: 2, max_epochs: 1}")
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [GRAFTUNE, "run", str(recipe), "--run-dir", str(tmp_path / "run")],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        "note: the output (stdout) cannot be written (No space left on device); the run "
        "goes on without printing its progress\n"
        f"note: the run's results are in {tmp_path / 'run'}\n"
        "error: no space left on the device of the output (stdout); free some, or write "
        "elsewhere\n"
    )
    assert (tmp_path / "run" / "finished.json").is_file()
    assert len(pd.read_csv(tmp_path / "run" / "leaderboard.csv")) == 2


def test_no_colour_reset_is_left_on_a_terminal_at_the_end():
    """Found by QA: every run on a terminal ended with `ESC[0m`, TERM=dumb and --quiet
    too: the exit hook of the colorama Ray bundles, which its CLI logger starts."""
    import os
    import pty

    code = (
        "import ray.autoscaler._private.cli_logger\n"
        "from orchestrator.cli import _no_colour_reset\n"
        "_no_colour_reset()\n"
        "print('end')\n"
    )
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-c", code], stdout=follower, timeout=120)
        os.close(follower)
        written = b""
        with contextlib.suppress(OSError):  # EIO: nothing more to read
            while chunk := os.read(leader, 1024):
                written += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0
    assert written == b"end\r\n", written


def test_a_reader_gone_midway_is_met_with_unbuffered_output_too(wine_run, tmp_path):
    """Found by QA: with PYTHONUNBUFFERED=1 (common in containers and CI) Python took
    a short write into a pipe whose reader had left as the whole, dropped the rest
    and `predict | head` exited 0, saying every example was predicted."""
    import os

    from tests.search_helpers import GRAFTUNE

    table = pd.read_csv(WINE_CSV)
    big = tmp_path / "big.csv"
    pd.concat([table] * 40).to_csv(big, index=False)  # about 600 KB of predictions
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reading = subprocess.Popen(
        [GRAFTUNE, "predict", str(wine_run.run_dir), "--data", f"csv:{big}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert reading.stdout.read(100).startswith(b"row,")
    reading.stdout.close()  # as `head -c 100` leaves
    stderr = reading.stderr.read().decode()
    assert (reading.wait(timeout=120), stderr) == (141, "")


def test_output_the_disk_has_no_room_for_is_said_in_one_line(wine_run, tmp_path):
    """Found by QA: on a full disk (`> /dev/full`, `> file` on a full file system)
    leaderboard and predict printed a traceback and exited 1 or 120 (Python's own
    flush at exit); stdout closed (`>&-`) ended every command in a traceback at the
    import, and then predict said it had written its predictions; an export past a file-size limit (`ulimit -f`) was an internal error,
    and out of room it named the run's model, not the destination."""
    import os

    from tests.helpers import file_size_limit
    from tests.search_helpers import GRAFTUNE

    run_dir = str(wine_run.run_dir)
    said = (
        "error: no space left on the device of the output (stdout); free some, or write elsewhere\n"
    )
    for args in (["leaderboard", run_dir], ["predict", run_dir, "--data", f"csv:{WINE_CSV}"]):
        with open("/dev/full", "w") as full:
            done = subprocess.run([GRAFTUNE, *args], stdout=full, stderr=subprocess.PIPE, text=True)
        assert (args[0], done.returncode, done.stderr) == (args[0], 1, said)
    # stdout closed: refused, before any work, where the command's product goes there
    done = subprocess.run(
        [GRAFTUNE, "leaderboard", run_dir],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.close(1),
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: stdout is closed (>&-), where the leaderboard "), (
        done.stderr
    )
    # So is a --format json list (found by QA: a traceback, exit 1, after the work; the
    # cluster's is refused before it is asked).
    for args in (
        ["plugins", "-f", "json"],
        ["cache", "info", "-f", "json"],
        ["jobs", "list", "-f", "json", "--address", "http://127.0.0.1:1"],
    ):
        done = subprocess.run(
            [GRAFTUNE, *args], stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(1)
        )
        assert (args[0], done.returncode, done.stderr) == (
            args[0],
            2,
            "error: stdout is closed (>&-), where the list would go; give stdout a file or a "
            "pipe\n",
        )
    # A command whose product is a file: its lines go nowhere, as with > /dev/null.
    done = subprocess.run(
        [GRAFTUNE, "report", run_dir, "--out", str(tmp_path / "r.html")],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.close(1),
    )
    assert (done.returncode, done.stderr) == (0, "")
    (tmp_path / "r.html").unlink()

    dest = tmp_path / "exported"
    done = subprocess.run(
        [GRAFTUNE, "export", run_dir, str(dest)],
        capture_output=True,
        text=True,
        preexec_fn=file_size_limit(4),
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(
        f"error: a file grew past the largest this process may write, writing {dest} "
    ), done.stderr
    assert done.stderr.endswith("; raise the limit, or write elsewhere\n"), done.stderr
    assert not dest.exists() and os.listdir(tmp_path) == []  # nothing cut off left


def test_a_report_in_a_read_only_run_directory_is_refused_in_one_line(wine_run, tmp_path, caplog):
    """Found by QA: "internal error: PermissionError" (--out elsewhere worked); and the
    end of a run that could not write its report printed the error's traceback."""
    from orchestrator.report import write_report_safely
    from tests.helpers import tmpfs

    with tmpfs(tmp_path / "disk", "16m") as disk:
        run_dir = disk / "run"
        shutil.copytree(wine_run.run_dir, run_dir, ignore=shutil.ignore_patterns("ray"))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        result = invoke("report", run_dir)
        assert result.exit_code == 2, result.output
        assert result.output == (
            f"error: cannot write {run_dir}/report.html: {run_dir} is not writable; "
            "give --out FILE.html\n"
        )
        assert write_report_safely(run_dir) is None
    (record,) = [r for r in caplog.records if "report.html" in r.getMessage()]
    assert record.exc_info is None
    assert record.getMessage() == (
        f"could not write report.html in {run_dir} (OutputPathError: cannot write "
        f"{run_dir}/report.html: {run_dir} is not writable; give --out FILE.html); "
        f"`graftune report {run_dir}` writes it again"
    )


def test_paths_no_file_can_be_at_are_refused_in_one_line(runs, tmp_path, monkeypatch):
    """Found by QA (fuzzing): a symbolic link loop, a name over 255 bytes and a NUL
    byte were internal errors (exit 1) or tracebacks, and a FIFO given as the run
    directory made export and predict wait forever, read as a recipe."""
    import os

    monkeypatch.chdir(tmp_path)
    os.symlink("loop", "loop")
    os.symlink("nowhere", "dangling")
    os.mkfifo("fifo")
    long = "L" * 300
    cases = [
        # A loop is named: as one, or as a path to nothing, as each command finds it.
        (("export", "loop", "out"), "loop"),
        (("report", "loop", "--out", "r.html"), "loop"),
        (("predict", "loop", "--data", "sklearn:iris"), "loop"),
        (("export", runs[1].run_dir, "loop"), "loop is a symbolic link loop"),
        (("export", runs[1].run_dir, "dangling"), "dangling is a link to nowhere (nowhere)"),
        (("export", "fifo", "out"), "fifo is a file, not a run directory"),
        (("predict", "fifo", "--data", "sklearn:iris"), "fifo is a file, not a run directory"),
        (("leaderboard", long), "File name too long"),
        (("export", long, "out"), "File name too long"),
    ]
    for args, said in cases:
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("error: ") and said in result.output, result.output
        assert len(result.output.splitlines()) == 1, result.output
    full = invoke("report", runs[1].run_dir, "--out", "/dev/full")  # a full disk: 1, as a run's
    assert full.exit_code == 1, full.output
    assert full.output == (
        "error: no space left on the device of /dev/full; free some, or write elsewhere\n"
    )
    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(tmp_path / long))
    for command in (("cache", "info"), ("cache", "clear")):
        result = invoke(*command)
        assert result.exit_code == 2 and "error: File name too long" in result.output, result.output


def test_a_savedmodel_from_a_backend_keras_cannot_export_it_from_is_refused(runs, tmp_path):
    """Found by QA: KERAS_BACKEND=numpy ended export --format savedmodel in an internal
    error (Keras' numpy backend has no SavedModel export); --format keras works."""
    import os

    from tests.search_helpers import GRAFTUNE

    env = {**os.environ, "KERAS_BACKEND": "numpy"}
    for fmt, status in (("savedmodel", 2), ("keras", 0)):
        done = subprocess.run(
            [GRAFTUNE, "export", str(runs[1].run_dir), str(tmp_path / fmt), "--format", fmt],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert done.returncode == status, done.stdout + done.stderr
        if status:
            assert done.stderr.startswith(
                "error: --format savedmodel: Keras exports a SavedModel from the tensorflow, "
                "jax, torch backends, and this one is numpy"
            ), done.stderr
            assert not (tmp_path / fmt).exists()


def test_a_trial_named_in_a_run_where_every_trial_failed_is_said_in_its_words(tmp_path):
    """Found by QA: `export --trial T` of a run whose every trial failed said the
    run's problem alone ("no trial finished with a saved model"), not T's."""
    from orchestrator.errors import RunFailed
    from tests.search_helpers import run, write_recipe

    recipe = write_recipe(
        tmp_path, "{backend: keras_tuner, num_samples: 1, max_epochs: 1}", "raising: {}"
    )
    with pytest.raises(RunFailed) as failed:
        run(recipe)
    run_dir = failed.value.run_dir
    trial = sorted(p for p in (run_dir / "trials" / "raising").iterdir() if p.is_dir())[0]
    for command in ("export", "predict"):
        args = [command, run_dir, *([tmp_path / "out"] if command == "export" else [])]
        result = invoke(
            *args,
            *(["--data", "sklearn:iris"] if command == "predict" else []),
            "--trial",
            trial.name,
        )
        assert result.exit_code == 2, result.output
        assert (
            f"trial raising/{trial.name} saved no model (status error), nor did any trial "
            f"of run {run_dir}"
        ) in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_a_savedmodel_export_leaves_the_root_logger_as_it_was(runs, tmp_path, monkeypatch):
    """Found by QA: TensorFlow's absl logging, saving, called logging.basicConfig():
    the root logger kept its handler, and the caller's own basicConfig did nothing."""
    import logging

    from orchestrator.export import export_model

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # as a script's, before its basicConfig
    export_model(runs[0].run_dir, tmp_path / "saved", format="savedmodel")
    assert root.handlers == []


def test_columns_the_run_never_saw_are_told_both_ways_to_take_them():
    """Found by QA: a table with an ID and its labels under another name was told to
    --ignore-column both, which dropped the labels unscored; --target takes them."""
    from orchestrator.errors import DataError
    from orchestrator.predict import _feature_order

    trained = ["a", "b", "label"]
    assert _feature_order(["b", "a"], trained, "label", "csv:t.csv") == [1, 0]
    with pytest.raises(DataError) as caught:
        _feature_order(["customer_id", "a", "b", "species"], trained, "label", "csv:t.csv")
    said = str(caught.value)
    assert "--ignore-column customer_id --ignore-column species" in said
    assert said.endswith(
        "; name the one that holds the labels, if any, with --target COLUMN instead"
    )


@pytest.mark.parametrize("in_place", [False, True])
def test_an_export_that_fails_leaves_no_staging_folder_behind(tmp_path, monkeypatch, in_place):
    """Found by mutation testing: an export that failed after its staging folder was
    made (a model that cannot be loaded, Ctrl+C) left a hidden ``.DEST.PID.tmp/``
    beside (or inside) the folder; the refusal tests read the message only."""
    from types import SimpleNamespace

    from orchestrator import predict
    from orchestrator.errors import RunDirError
    from orchestrator.export import export_model

    def cannot_load(ref):
        raise RunDirError("the model cannot be loaded")

    ref = SimpleNamespace(path=tmp_path / "run" / "model.keras")
    monkeypatch.setattr(predict, "find_model", lambda run_dir, trial: ref)
    monkeypatch.setattr(predict, "load_model", cannot_load)
    out = tmp_path / "exports" / "out"
    out.parent.mkdir()
    if in_place:
        out.mkdir()
    with pytest.raises(RunDirError, match="cannot be loaded"):
        export_model(tmp_path / "run", out)
    assert list(out.parent.iterdir()) == ([out] if in_place else [])
    if in_place:
        assert list(out.iterdir()) == []


def test_a_trial_id_of_two_strategies_is_refused_as_ambiguous(tmp_path):
    """Found by mutation testing: an id that two strategies' trials share (keras-tuner's
    '00' repeats in every strategy) silently took the first strategy's model."""
    from orchestrator.errors import RunDirError
    from orchestrator.predict import find_model
    from orchestrator.run import _BEST_KEYS

    run = tmp_path / "run"
    (run / "trials" / "alpha" / "00").mkdir(parents=True)
    (run / "trials" / "beta" / "00").mkdir(parents=True)
    (run / "best").mkdir()
    (run / "recipe.yaml").write_text("name: run\n")
    best = dict.fromkeys(_BEST_KEYS, "x") | {"input_shape": [4], "class_names": ["a", "b"]}
    (run / "best" / "config.json").write_text(json.dumps(best))
    with pytest.raises(RunDirError, match=r"is ambiguous in .*: name one of alpha/00, beta/00"):
        find_model(run, "00")
