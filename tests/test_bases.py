"""Tests of ``orchestrator.bases``: providers, the cache, input adapters and cut points."""

from __future__ import annotations

import json
import logging
import random
import re
import textwrap
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from orchestrator.bases import (
    BaseInfo,
    LoadedBase,
    find_cut_points,
    keras_models_dir,
    load_base,
    plan_adapter,
    prepare_base,
    pretrain_cut_points,
)
from orchestrator.cli import app
from orchestrator.data import Dataset
from orchestrator.errors import BaseModelError
from orchestrator.plugin_manager import get_plugin_manager
from orchestrator.recipe import BaseSpec, DataSpec, PretrainSpec
from tests.helpers import digits, host, prepare_path_base, tiny_cnn

PROXIES = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")
WEIGHTS_FILE = re.compile(r"weights_mobilenet_v3_small_\S*\.h5")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A private graftune cache and seeded random sources for every test."""
    cache = tmp_path / "graftune-cache"
    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(cache))
    keras.utils.set_random_seed(0)
    return cache


def prepare(
    spec: BaseSpec,
    dataset: Dataset | None = None,
    base_dir: Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> BaseInfo:
    dataset = dataset if dataset is not None else digits()
    return prepare_base(
        spec,
        host().bases,
        dataset.task,
        seed=0,
        base_dir=base_dir or Path.cwd(),
        data_sources=host().data_sources,
        echo=echo,
    )


# -- the hook -------------------------------------------------------------------------


def test_register_bases_hook_adds_the_three_built_in_providers():
    bases = get_plugin_manager(autoload=False).bases
    assert bases.names() == ["application", "path", "pretrain"]
    assert {bases.owner(name) for name in bases.names()} == {"graftune.bases (graftune)"}

    blocked = get_plugin_manager(autoload=False, disable=["graftune.bases"]).bases
    assert blocked.names() == []


# -- keras.applications ------------------------------------------------------------------


def test_application_base_adapts_gray_digits_and_reloads_safely(tmp_path):
    dataset = digits()
    assert dataset.task.input_shape == (8, 8, 1)
    spec = BaseSpec(application="MobileNetV3Small", weights="none", input_shape=(32, 32, 3))

    info = prepare(spec)

    assert info.input_shape == (32, 32, 3)
    # MobileNetV3 rescales [0, 255] inputs itself: the adapter only multiplies by 255.
    assert info.adapter == (("resize", 32, 32), ("gray_to_rgb",), ("preprocess", "raw255"))
    assert info.path.is_file() and info.path.is_relative_to(tmp_path / "graftune-cache")
    assert info.description == "MobileNetV3Small"

    base = load_base(info)
    inputs = keras.Input(dataset.task.input_shape)
    adapted = base.adapt(inputs)
    assert tuple(adapted.shape) == (None, 32, 32, 3)
    features = base.model(adapted)
    outputs = keras.layers.Dense(dataset.task.n_classes, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(features)
    )
    model = keras.Model(inputs, outputs)
    x = dataset.x_val[:4]
    reloaded_path = tmp_path / "model.keras"
    model.save(reloaded_path)
    reloaded = keras.saving.load_model(reloaded_path, safe_mode=True)
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_application_base_takes_a_local_weights_file(tmp_path):
    source = keras.applications.MobileNetV3Small(
        weights=None, include_top=False, input_shape=(32, 32, 3)
    )
    weights = tmp_path / "mobilenet.weights.h5"
    source.save_weights(weights)
    spec = BaseSpec(application="MobileNetV3Small", weights=str(weights), input_shape=(32, 32, 3))

    loaded = load_base(prepare(spec)).model

    assert len(loaded.weights) == len(source.weights)
    for mine, theirs in zip(loaded.weights, source.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())

    missing = BaseSpec(
        application="MobileNetV3Small", weights=str(tmp_path / "absent.h5"), input_shape=(32, 32, 3)
    )
    with pytest.raises(BaseModelError, match="does not exist") as caught:
        prepare(missing)
    assert caught.value.key == "weights"
    assert "a local weights file (.h5, .hdf5, .keras, .weights.json)" in str(caught.value)
    # Keras' own spelling, None, is a file to YAML: told (found by QA).
    spelt = BaseSpec(application="MobileNetV3Small", weights="None", input_shape=(32, 32, 3))
    with pytest.raises(BaseModelError, match=r"weights file None does not exist \(did you mean"):
        prepare(spelt)
    # Imagenet's weights are of RGB images: a base of one channel is refused before
    # any download is asked for (found by QA: MobileNetV3 passed validate, then
    # failed its weights with a tensor dump).
    grey = BaseSpec(application="MobileNetV3Small", weights="imagenet", input_shape=(32, 32, 1))
    with pytest.raises(BaseModelError, match="imagenet weights are of RGB images") as caught:
        prepare(grey)
    assert caught.value.key == "input_shape"

    # Keras reads weights by the file name's ending: another one failed in every
    # trial as weights that "do not fit" (found by QA).
    renamed = tmp_path / "mobilenet.bin"
    renamed.write_bytes(weights.read_bytes())
    unread = BaseSpec(application="MobileNetV3Small", weights=str(renamed), input_shape=(32, 32, 3))
    with pytest.raises(BaseModelError) as caught:
        prepare(unread)
    assert caught.value.key == "weights"
    assert "must end in .h5, .hdf5, .keras, .weights.json (rename it if it is one)" in str(
        caught.value
    )

    # Another application's file: one short error at weights:, not a warning per layer
    # and Keras' list of every layer it could not load.
    other = BaseSpec(application="MobileNetV3Large", weights=str(weights), input_shape=(32, 32, 3))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(BaseModelError, match="do not fit MobileNetV3Large") as caught:
            prepare(other)
    assert caught.value.key == "weights"
    assert "List of objects" not in str(caught.value) and len(str(caught.value)) < 700
    assert not [w for w in seen if "Skipping" in str(w.message)]


def test_unknown_application_suggests_the_closest_name():
    with pytest.raises(BaseModelError, match="did you mean 'MobileNetV3Small'") as caught:
        prepare(BaseSpec(application="MobileNetV3Smal", weights="none"))
    assert caught.value.key == "application"


@pytest.fixture
def offline_keras(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No route to the internet, and an empty ``$KERAS_HOME``; returns that folder."""
    for name in PROXIES:
        # Port 9 (discard) refuses at once; no DNS lookup, no waiting on a timeout.
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "keras-home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    # Keras reads KERAS_HOME once, on import, which happened before this test: set
    # what that import would have read, so get_file really looks in `home`.
    import keras.src.backend.config as keras_config

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))
    return home


def test_offline_imagenet_weights_fail_with_a_message_that_says_what_to_do(offline_keras, isolated):
    spec = BaseSpec(application="MobileNetV3Small", weights="imagenet", input_shape=(32, 32, 3))

    with pytest.raises(BaseModelError) as caught:
        prepare(spec)

    message = str(caught.value)
    assert caught.value.key == "weights"
    filename = WEIGHTS_FILE.search(message)
    assert filename, message
    models = offline_keras / "models"
    assert keras_models_dir() == models
    # The place named is where Keras looked (it made the folder, left no partial file).
    assert str(models / filename.group(0)) in message
    assert models.is_dir() and not any(models.iterdir())
    assert "$KERAS_HOME/models" in message and "~/.keras/models" in message
    assert "weights: /path/to/" in message and "weights: none" in message
    assert not list(isolated.glob("**/*.keras"))


def test_a_wrong_weights_file_where_the_offline_message_says_is_refused_and_kept(
    offline_keras,
):
    """Keras took it for a download cut short, failed to download it again and
    deleted it; graftune then told the user to copy it there, again."""
    spec = BaseSpec(application="MobileNetV3Small", weights="imagenet", input_shape=(32, 32, 3))
    with pytest.raises(BaseModelError) as caught:
        prepare(spec)
    filename = WEIGHTS_FILE.search(str(caught.value))
    assert filename, caught.value
    placed = offline_keras / "models" / filename.group(0)
    placed.write_bytes(b"not the weights" * 10)

    with pytest.raises(BaseModelError) as caught:
        prepare(spec)

    message = str(caught.value)
    assert caught.value.key == "weights"
    assert f"{placed} is not the imagenet weights Keras expects for MobileNetV3Small" in message
    # MobileNetV3's hashes are md5 (Keras tells them by their length).
    assert re.search(
        r"it has 150 bytes and md5 [0-9a-f]{32}, Keras expects md5 [0-9a-f]{32}", message
    )
    assert "cannot download" not in message
    assert placed.read_bytes() == b"not the weights" * 10


def test_keras_models_dir_is_where_keras_looks_not_a_later_keras_home(
    offline_keras, monkeypatch, tmp_path
):
    later = tmp_path / "set-after-import"
    later.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(later))

    with pytest.raises(Exception, match="URL fetch failure"):
        keras.utils.get_file(
            "probe.h5", origin="http://127.0.0.1:9/probe.h5", cache_subdir="models"
        )

    assert (offline_keras / "models").is_dir() and not (later / "models").exists()
    assert keras_models_dir() == offline_keras / "models"


def test_cli_run_with_offline_imagenet_base_exits_2_and_writes_no_run(offline_keras, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            """\
            name: offline
            seed: 0
            data: {source: sklearn:digits}
            base: {application: MobileNetV3Small, weights: imagenet, input_shape: [32, 32, 3]}
            strategies:
              feature_extraction: {}
            output: out/
            """
        )
    )

    result = CliRunner().invoke(app, ["run", str(recipe)])

    assert result.exit_code == 2, result.output
    assert WEIGHTS_FILE.search(result.stderr), result.stderr
    assert str(offline_keras / "models") in result.stderr
    assert "weights:" in result.stderr
    assert f"{recipe}:4: base.weights: cannot download" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_validate_applies_keras_input_shape_rules_without_building_the_base(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            """\
            name: small
            data: {source: sklearn:digits}
            base:
              application: ResNet50
              weights: none
              input_shape: [16, 16, 3]
            strategies: {feature_extraction: {}}
            output: out/
            """
        )
    )
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    assert f"{recipe}:6: base.input_shape: ResNet50 cannot take input_shape [16, 16, 3]" in (
        result.stderr
    )
    assert "at least 32x32" in result.stderr
    # MobileNetV3 checks its shape itself, in the build (done whole, without weights).
    recipe.write_text(recipe.read_text().replace("ResNet50", "MobileNetV3Small"))
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    assert "base.input_shape: MobileNetV3Small cannot take" in result.stderr
    # Two numbers: Keras would name a layer's ndim (found by QA).
    recipe.write_text(recipe.read_text().replace("[16, 16, 3]", "[32, 32]"))
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    assert (
        f"{recipe}:6: base.input_shape: expected [height, width, channels] for an "
        "application's images, such as [32, 32, 3]; got [32, 32]"
    ) in " ".join(result.stderr.split())
    recipe.write_text(recipe.read_text().replace("[32, 32]", "[32, 32, 3]"))
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 0, result.output
    # The check stops ResNet50's build and leaves Keras as it was.
    from keras.src.applications import imagenet_utils

    assert imagenet_utils.obtain_input_shape.__name__ == "obtain_input_shape"


# -- .keras files --------------------------------------------------------------------------


def test_path_base_is_cached_and_loads_the_same_model(tmp_path, isolated):
    dataset = digits()
    model = tiny_cnn()

    info = prepare_path_base(model, tmp_path, dataset)

    assert info.path.is_relative_to(isolated) and info.path != tmp_path / "base.keras"
    assert info.adapter == ()
    assert info.output_shape == (4, 4, 8)
    # The same file prepared again is the same cache entry. (Saved again, it is a
    # new file: Keras writes the save time into it.)
    assert prepare(BaseSpec(path=tmp_path / "base.keras"), dataset, tmp_path).path == info.path
    loaded = load_base(info).model
    x = dataset.x_val[:8]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_saving_a_base_removes_what_a_killed_save_left(tmp_path, isolated):
    dataset = digits()
    info = prepare_path_base(tiny_cnn(), tmp_path, dataset)
    folder = info.path.parent
    left = folder / "base.99999.tmp.keras"  # a run killed while it saved the base
    left.write_bytes(b"half a model")
    info.path.unlink()  # killed before the move: the next run builds the base again

    again = prepare(BaseSpec(path=tmp_path / "base.keras"), dataset, tmp_path)

    assert again.path == info.path
    assert sorted(p.name for p in folder.iterdir()) == ["base.keras", "meta.json"]


def test_a_damaged_cached_base_is_named_and_made_again(tmp_path, isolated):
    """Found by QA: a base.keras cut short in the cache stopped every run that
    needed it with "internal error: ValueError: File not found" (the file was
    there), `cache info` listed it as whole, and nothing said to clear it."""
    dataset = digits()
    info = prepare_path_base(tiny_cnn(), tmp_path, dataset)
    whole = info.path.read_bytes()
    info.path.write_bytes(whole[:2000])  # cut short: a full disk, a copy killed midway

    listed = CliRunner().invoke(app, ["cache", "info"])
    assert listed.exit_code == 0, listed.output
    assert "damaged: base.keras is not a whole .keras file" in " ".join(listed.output.split())
    listed = CliRunner().invoke(app, ["cache", "info", "-f", "json"])
    assert listed.exit_code == 0, listed.output
    shown = json.loads(listed.output)
    (entry,) = shown["entries"]
    assert (entry["kind"], entry["path"]) == ("base", str(info.path.parent))
    assert entry["what"].startswith("damaged: base.keras is not a whole .keras file")
    assert entry["size_bytes"] == shown["total_bytes"] > 2000
    # Piped, an entry is one whole line, unpadded (found by QA: rows padded to 200
    # characters and the description wrapped, so that grep lost its end).
    table = CliRunner().invoke(app, ["cache", "info"]).output.splitlines()
    assert all(line == line.rstrip() for line in table), table
    (line,) = [line for line in table if line.lstrip().startswith("base")]
    assert line.endswith(entry["what"]) and len(entry["what"]) > 60, table
    with pytest.raises(ValueError) as failed:
        _ = load_base(info).model  # a trial that started before the next run remade it
    assert str(failed.value).startswith(f"the cached base {info.path.parent} cannot be read")

    said: list[str] = []
    again = prepare(BaseSpec(path=tmp_path / "base.keras"), dataset, tmp_path, echo=said.append)

    assert said == [
        f"warning: the cached base {info.path.parent} cannot be read (base.keras is not a "
        "whole .keras file (cut short?): File is not a zip file): making it again"
    ]
    assert again.path == info.path and again.fingerprint == info.fingerprint
    assert load_base(again).model is not None


def test_a_cached_base_written_over_with_another_model_is_made_again(isolated):
    """Found by QA: a cached base.keras replaced by another whole model was loaded
    ("made before") and trained on by every run with the recipe's settings."""
    spec = pretrain_spec()
    dataset = digits((5, 6, 7, 8, 9))
    first = prepare(spec, dataset)
    other = keras.models.clone_model(keras.saving.load_model(first.path, safe_mode=True))
    other.save(first.path)  # the same graph, other (fresh) weights
    said: list[str] = []
    again = prepare(spec, dataset, echo=said.append)
    assert (
        f"warning: the cached base {first.path.parent} cannot be read (its weights are not "
        "those it was cached with (written over?)): making it again"
    ) in said, said
    assert again.fingerprint == first.fingerprint


def test_a_damaged_base_of_a_provider_without_a_cache_key_is_saved_again(tmp_path, isolated):
    from orchestrator.bases import BaseProvider
    from orchestrator.registry import Registry

    class Unkeyed(BaseProvider):
        name = "unkeyed"

        def build(self, spec, context):
            keras.utils.set_random_seed(0)
            return tiny_cnn()

    registry = Registry("base provider", "name", BaseProvider)
    registry.add(Unkeyed)
    dataset = digits()

    def prepared(echo=None):
        return prepare_base(
            BaseSpec(provider="unkeyed"),
            registry,
            dataset.task,
            seed=0,
            base_dir=tmp_path,
            data_sources=host().data_sources,
            echo=echo,
        )

    info = prepared()
    info.path.write_bytes(b"not a zip")
    said: list[str] = []
    again = prepared(said.append)
    assert again.path == info.path
    assert len(said) == 1 and said[0].startswith(f"warning: the cached base {info.path.parent}")
    assert load_base(again).model is not None


def test_a_base_made_before_is_said_to_be_loaded_from_the_cache(tmp_path, isolated):
    """Found by QA: each run said "base: preparing pretrain ...", and nothing more,
    whether it pretrained or loaded the base it had made before."""
    tiny_cnn().save(tmp_path / "base.keras")
    spec = BaseSpec(path=tmp_path / "base.keras")
    first: list[str] = []
    info = prepare(spec, digits(), tmp_path, first.append)
    assert first == []
    again: list[str] = []
    assert prepare(spec, digits(), tmp_path, again.append).path == info.path
    assert again == [f"base: made before, loaded from graftune's cache ({info.path.parent})"]


def test_runs_that_need_the_same_base_at_once_build_it_once(tmp_path, isolated, monkeypatch):
    """The cache entry is locked while it is built (a pretrain takes a while).

    The run that waits says so, naming the lock, instead of seeming to hang.
    """
    from orchestrator.bases import PathProvider

    dataset = digits()
    tiny_cnn().save(tmp_path / "base.keras")
    built = []
    build = PathProvider.build
    waits = threading.Event()

    def slow_build(self, spec, context):
        built.append(threading.current_thread().name)
        # Until the other run waits for the lock (a sleep was not always long enough
        # on a loaded machine; found by QA); a run that never waits fails below.
        waits.wait(timeout=60)
        return build(self, spec, context)

    monkeypatch.setattr(PathProvider, "build", slow_build)
    spec = BaseSpec(path=tmp_path / "base.keras")
    said: list[list[str]] = [[], []]

    def echo(i: int, line: str) -> None:
        said[i].append(line)
        if line.startswith("base: waiting"):
            waits.set()

    with ThreadPoolExecutor(2) as runs:
        infos = list(
            runs.map(
                lambda i: prepare(spec, dataset, tmp_path, lambda line: echo(i, line)), range(2)
            )
        )

    assert len(built) == 1
    assert infos[0].path == infos[1].path
    assert infos[0].fingerprint == infos[1].fingerprint
    waited = [lines for lines in said if lines]
    assert len(waited) == 1, said  # the one that did not build
    (line,) = waited[0]
    assert line.startswith("base: waiting for another graftune process that is making it")
    assert str(infos[0].path.parent.with_suffix(".lock")) in line


def test_path_base_with_a_lambda_layer_is_refused_by_safe_mode(tmp_path):
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(keras.layers.Conv2D(2, 3)(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")

    with pytest.raises(BaseModelError, match="safe_mode") as caught:
        prepare(BaseSpec(path=tmp_path / "lambda.keras"), base_dir=tmp_path)
    assert caught.value.key == "path"
    # Not Keras' advice to pass safe_mode=False, which graftune never does.
    assert "holds a Lambda layer of Python code" in str(caught.value)
    # Advice for any model (found by QA: it said "save the base" of a run's model).
    assert "use a registered custom layer in its place" in str(caught.value)
    assert "safe_mode=False" not in str(caught.value)


def test_path_base_with_an_unregistered_custom_layer_says_what_to_do(tmp_path):
    @keras.saving.register_keras_serializable(package="gt_test_unregistered")
    class Halve(keras.layers.Layer):
        def call(self, x):
            return x / 2

    inputs = keras.Input((8, 8, 1))
    keras.Model(inputs, Halve()(keras.layers.Conv2D(2, 3)(inputs))).save(tmp_path / "c.keras")
    del keras.saving.get_custom_objects()["gt_test_unregistered>Halve"]
    with pytest.raises(BaseModelError) as caught:
        prepare(BaseSpec(path=tmp_path / "c.keras"), base_dir=tmp_path)
    message = str(caught.value)
    # The package it was registered under says which plugin is missing.
    assert "the custom Keras object 'Halve' (saved as 'gt_test_unregistered>Halve')" in message
    assert "with --plugin" in message
    assert len(message) < 500  # Keras' own was a kilobyte of the model's config


def test_path_base_that_is_missing_is_a_base_model_error(tmp_path):
    with pytest.raises(BaseModelError, match="no model file"):
        prepare(BaseSpec(path=tmp_path / "absent.keras"), base_dir=tmp_path)


# -- pretrain: --------------------------------------------------------------------------------


def pretrain_spec(epochs: int = 1, classes: tuple[int, ...] = (0, 1, 2, 3, 4)) -> BaseSpec:
    return BaseSpec(
        pretrain=PretrainSpec(
            data=DataSpec(source="sklearn:digits", classes=list(classes)),
            epochs=epochs,
            width=4,
        )
    )


def test_a_dropped_ctrl_c_stops_a_pretrain_stage_at_its_next_epoch(caplog):
    """Python drops a KeyboardInterrupt raised in a finaliser (a garbage collection
    during training): the pretrain went on to its end, and the run after it."""
    from orchestrator.tuning import ray_start

    caplog.set_level(logging.INFO, logger="orchestrator.bases")
    spec = pretrain_spec(epochs=500)
    ray_start._sigint.set()  # what the Ctrl+C handler leaves, whether or not its raise got out
    try:
        with pytest.raises(KeyboardInterrupt):
            prepare(spec, digits((5, 6, 7, 8, 9)))
    finally:
        ray_start.forget_sigterm()
    assert "pretraining a cnn base" in caplog.text
    assert "pretrained base: test accuracy" not in caplog.text  # stopped after an epoch


def test_pretrain_base_is_trained_once_and_cached_by_data_and_settings(caplog):
    dataset = digits((5, 6, 7, 8, 9))
    caplog.set_level(logging.INFO, logger="orchestrator.bases")

    first = prepare(pretrain_spec(), dataset)

    assert "pretraining a cnn base" in caplog.text
    assert first.input_shape == (8, 8, 1) and first.adapter == ()
    assert first.cut_names[-1] == "block2_relu2"
    # Counted before it is trained, as a run checks frozen_layers before pretraining.
    assert pretrain_cut_points(pretrain_spec().pretrain, dataset.task) == first.n_cut_points == 4
    stamp = first.path.stat().st_mtime_ns

    caplog.clear()
    again = prepare(pretrain_spec(), dataset)

    assert "pretraining" not in caplog.text
    assert "reusing cached base" in caplog.text
    assert again.path == first.path
    assert again.path.stat().st_mtime_ns == stamp
    assert again.fingerprint == first.fingerprint

    longer = prepare(pretrain_spec(epochs=2), dataset)
    other_data = prepare(pretrain_spec(classes=(0, 1, 2)), dataset)
    paths = {first.path, longer.path, other_data.path}
    assert len(paths) == 3
    assert all(path.is_file() for path in paths)
    assert len({first.fingerprint, longer.fingerprint, other_data.fingerprint}) == 3


def test_a_pretrain_says_how_well_it_learned_and_warns_where_it_learned_nothing(isolated):
    """Found by QA: a pretrain at learning rate 1e6 diverged, and was cached and used
    by every run with its settings without a word; its accuracy was said nowhere."""
    said: list[str] = []
    prepare(pretrain_spec(epochs=8), digits((5, 6, 7, 8, 9)), echo=said.append)
    (line,) = [s for s in said if s.startswith("base: pretrained")]
    assert re.fullmatch(
        r"base: pretrained to test accuracy 0\.\d{3} on sklearn:digits \(5 classes\)", line
    ), said
    assert not [s for s in said if s.startswith("warning:")]
    said.clear()
    spec = pretrain_spec()
    assert spec.pretrain is not None
    blown = BaseSpec(pretrain=spec.pretrain.model_copy(update={"learning_rate": 1e6}))
    prepare(blown, digits((5, 6, 7, 8, 9)), echo=said.append)
    (warned,) = [s for s in said if s.startswith("warning:")]
    assert "the pretrain stage learned next to nothing of sklearn:digits (test accuracy" in warned
    assert "graftune cache clear --bases" in warned


def test_cache_info_says_what_a_cached_base_is_and_when_it_was_made(tmp_path):
    """Found by QA: a base's row showed its folder's name twice ("pretrain-d91d...
    pretrain-d91d..."), where a feature entry's says what it was made from."""
    pretrained = prepare(pretrain_spec(), digits((5, 6, 7, 8, 9))).path.parent
    from_file = prepare_path_base(tiny_cnn(), tmp_path, digits()).path.parent
    made = r"made \d{4}-\d\d-\d\d \d\d:\d\d"

    def cache_info() -> str:
        listed = CliRunner().invoke(app, ["cache", "info"])
        assert listed.exit_code == 0, listed.output
        return " ".join(listed.output.split())

    said = cache_info()
    assert said.count(pretrained.name) == 1, said
    assert re.search(
        re.escape(
            f"{pretrained.name} cnn pretrained on sklearn:digits (1 epoch, width 4, classes "
            "0, 1, 2, 3, 4, "
        )
        # Found by QA: how well it learned its data was said nowhere.
        + r"\d+ training examples, seed 0, test accuracy 0\.\d{3}\), "
        + re.escape("input (8, 8, 1), output (4, 4, 8), ")
        # Found by QA: two bases from one path at other times read alike.
        + re.escape(
            f"weights {prepare(pretrain_spec(), digits((5, 6, 7, 8, 9))).fingerprint[:12]}, "
        )
        + made,
        said,
    ), said
    assert re.search(
        re.escape(f"{from_file.name} from {tmp_path / 'base.keras'}, ") + ".*" + made, said
    )
    # An entry cached by an earlier version has no meta.json: what its name and time tell.
    (pretrained / "meta.json").unlink()
    stamp = time.strftime(
        "%Y-%m-%d %H:%M", time.localtime((pretrained / "base.keras").stat().st_mtime)
    )
    said = cache_info()
    assert (
        f"{pretrained.name} pretrained base, made {stamp} "
        "(cached before graftune described its bases)"
    ) in said, said
    # Found by QA: one whose meta.json is not graftune's was said to be from before too.
    (pretrained / "meta.json").write_text("nope")
    said = cache_info()
    assert (
        f"{pretrained.name} pretrained base, made {stamp} ({pretrained / 'meta.json'} cannot "
        "be read (JSONDecodeError: "
    ) in said, said
    assert "; the base itself is whole)" in said
    # Found by upgrade QA: one made before bases were keyed by backend (no weights
    # digest) is taken as TensorFlow's, which a JAX-made one was too: said.
    meta = json.loads((from_file / "meta.json").read_text())
    assert "made by a graftune that did not record" not in cache_info()
    (pretrained / "meta.json").write_text(
        json.dumps({k: v for k, v in meta.items() if k != "fingerprint"})
    )
    assert (
        "(made by a graftune that did not record its Keras backend: TensorFlow runs take it "
        "as theirs; if it was made on JAX or PyTorch, free it with graftune cache clear --bases)"
    ) in cache_info()


def test_cache_info_tells_bases_pretrained_with_other_seeds_or_settings_apart(tmp_path):
    """Found by QA: two recipes that differ in their seed (other images, other
    weights) made two entries that cache info described alike."""
    from orchestrator.bases import BaseContext, _describe_entry

    pretrain = pretrain_spec().pretrain
    data = pretrain.data
    spec = BaseSpec(pretrain=pretrain.model_copy(update={"learning_rate": 0.01, "data": data}))
    model = tiny_cnn()
    for seed in (1, 2):
        (tmp_path / str(seed)).mkdir()
        context = BaseContext(seed, tmp_path, host().data_sources, tmp_path)
        _describe_entry(tmp_path / str(seed), spec, model, "graftune", seed, context)
    said = [json.loads((tmp_path / f"{seed}" / "meta.json").read_text())["what"] for seed in (1, 2)]
    n = len(context.dataset(data).y_train)
    assert said[0] == (
        "cnn pretrained on sklearn:digits (1 epoch, width 4, learning rate 0.01, classes 0, 1, "
        f"2, 3, 4, {n} training examples, seed 1)"
    )
    assert said[1] == said[0].replace("seed 1", "seed 2")
    # Found by QA: pretrains on one source that a run's split left other examples of
    # read alike; how many examples each trained on tells them apart.
    fewer = data.model_copy(update={"split": data.split.model_copy(update={"val": 0.4})})
    spec = BaseSpec(pretrain=spec.pretrain.model_copy(update={"data": fewer}))
    (tmp_path / "fewer").mkdir()
    _describe_entry(tmp_path / "fewer", spec, model, "graftune", 2, context)
    other = json.loads((tmp_path / "fewer" / "meta.json").read_text())["what"]
    assert other != said[1] and f"{len(context.dataset(fewer).y_train)} training examples" in other


def test_pretrained_mlp_base_does_not_blow_up_features_constant_in_training():
    dataset = digits()
    spec = BaseSpec(
        pretrain=PretrainSpec(
            data=DataSpec(source="sklearn:digits"), epochs=1, width=4, architecture="mlp"
        )
    )
    from keras.src.random import seed_generator

    drawn = (random.getstate(), seed_generator.python_random.getstate())
    counted = pretrain_cut_points(spec.pretrain, dataset.task)
    # Built from zeros: a run that counts them first pretrains the base it always did.
    assert (random.getstate(), seed_generator.python_random.getstate()) == drawn
    info = prepare(spec, dataset)
    assert counted == info.n_cut_points == 2
    assert info.input_shape == (8, 8, 1) and info.output_shape == (8,)
    constant = dataset.task.feature_var.reshape(-1) < 1e-8
    assert constant.any()  # a blank corner pixel of every training digit
    x = np.array(dataset.x_val[:4])
    x.reshape(len(x), -1)[:, constant] = 1.0

    features = load_base(info).model.predict(x, verbose=0)

    assert np.abs(features).max() < 1e3


# -- input adaptation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_shape", "base_shape", "preprocessing", "steps"),
    [
        ((8, 8, 1), (8, 8, 1), None, []),
        ((13,), (13,), None, []),
        ((8, 8, 3), (32, 32, 3), None, [("resize", 32, 32)]),
        ((8, 8, 1), (8, 8, 3), None, [("gray_to_rgb",)]),
        ((8, 8, 1), (None, None, 3), None, [("gray_to_rgb",)]),
        ((8, 8, 1), (64,), None, [("flatten",)]),
        ((8, 8, 1), (None,), None, [("flatten",)]),
        (
            (8, 8, 1),
            (32, 32, 3),
            "caffe",
            [("resize", 32, 32), ("gray_to_rgb",), ("preprocess", "caffe")],
        ),
    ],
)
def test_plan_adapter_adapts_what_is_well_defined(data_shape, base_shape, preprocessing, steps):
    assert plan_adapter(data_shape, base_shape, preprocessing) == steps


def test_plan_adapter_says_an_image_scaling_of_a_base_that_takes_no_images():
    """Found by QA: "the data's inputs have shape (4,) but the base takes (4,)"."""
    with pytest.raises(BaseModelError) as caught:
        plan_adapter((4,), (4,), "tf")
    assert str(caught.value) == (
        "the base takes inputs of shape (4,), not images, but its preprocessing is 'tf', a "
        "scaling of images: a base provider's preprocessing() gives one only for a base that "
        "takes images (None otherwise)"
    )


@pytest.mark.parametrize(
    ("data_shape", "base_shape"),
    [
        ((8, 8, 3), (8, 8, 1)),  # rgb data into a grayscale base
        ((13,), (32, 32, 3)),  # a table into an image base
        ((8, 8, 1), (10,)),  # flattening gives 64 values, the base takes 10
        ((8, 8, 2), (8, 8, 3)),  # two channels are not grayscale
        ((8, 8, 1), (32, 32, 4)),  # data.channels takes 1 or 3: no hint of 4 (found by QA)
    ],
)
def test_plan_adapter_refuses_what_is_not(data_shape, base_shape):
    with pytest.raises(BaseModelError) as caught:
        plan_adapter(data_shape, base_shape)
    message = str(caught.value)
    assert str(data_shape) in message and str(base_shape) in message
    assert "Use a base whose input matches the data" in message
    # Found by QA: RGB images and a grey base; data.channels: 1 was the fix, unsaid.
    said = f"data.channels: {base_shape[-1]} gives them the base's channels"
    hinted = len(data_shape) == len(base_shape) == 3 and base_shape[-1] in (1, 3)
    assert (said in message) == hinted and "data.channels: 4" not in message


def test_a_base_that_ends_in_its_classifier_is_warned_of(tmp_path, caplog):
    """Found by QA: a classifier saved whole (what model.save() gives) was used as the
    base with its softmax, and feature_extraction's heads sat on the old task's class
    probabilities, scoring at chance, without a word."""
    data = digits()
    inputs = keras.Input(data.task.input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(8, activation="relu")(x)
    whole = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="probs")(x))
    with caplog.at_level(logging.WARNING, logger="orchestrator.bases"):
        prepare_path_base(whole, tmp_path / "whole", data)
    assert "the base ends in its classifier (layer 'probs' (softmax))" in caplog.text
    assert "keras.Model(model.input, model.layers[-2].output)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="orchestrator.bases"):
        prepare_path_base(keras.Model(inputs, x), tmp_path / "headless", data)
    assert "classifier" not in caplog.text
    # Found by QA: the classifier wrapped in a model of its own ended in that model,
    # and was not warned of.
    wrapped = keras.Sequential([keras.Input(data.task.input_shape), whole], name="wrapper")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="orchestrator.bases"):
        prepare_path_base(wrapped, tmp_path / "wrapped", data)
    assert f"the base ends in its classifier (layer '{whole.name}/probs' (softmax))" in (
        caplog.text
    )


def test_a_base_that_shrinks_the_images_to_nothing_is_refused_with_keras_reason(tmp_path):
    """Found by QA: a base that takes any image size, given images too small for its
    convolutions, failed with "internal error" and Keras' error, colours and all."""
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(4, 3)(x)
    x = keras.layers.Conv2D(4, 3)(x)
    shrinking = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(BaseModelError) as caught:
        prepare_path_base(shrinking, tmp_path, digits())  # 8x8: 6x6, 3x3, 1x1, then none
    assert caught.value.key == "path"
    message = str(caught.value)
    assert message.startswith(
        "the base cannot take the data's inputs of shape (8, 8, 1): Computed output size "
        "would be zero or negative. Received `inputs shape=(None, 1, 1, 4)`"
    ), message
    assert message.endswith("`padding=valid`; larger images (data.image_size) may fit it")
    assert "\x1b" not in message and "Arguments received" not in message


@pytest.mark.parametrize("preprocessing", ["caffe", "tf", "torch", "raw255"])
def test_the_input_adapter_draws_no_random_numbers(preprocessing):
    """A trial through the adapter and one on cached features (no adapter) must
    give the head the same initial weights for the same seed."""
    from orchestrator.bases import apply_adapter

    def head_kernel(adapt: bool) -> np.ndarray:
        keras.utils.set_random_seed(7)
        x = keras.Input((8, 8, 1))
        if adapt:
            steps = plan_adapter((8, 8, 1), (16, 16, 3), preprocessing)
            assert ("preprocess", preprocessing) in steps
            apply_adapter(x, tuple(steps))
        head = keras.layers.Dense(4)
        head.build((None, 5))
        return head.kernel.numpy()

    np.testing.assert_array_equal(head_kernel(adapt=True), head_kernel(adapt=False))


def test_the_caffe_adapter_scales_flips_and_centres_as_keras_does():
    from orchestrator.bases import apply_adapter

    x = keras.Input((2, 2, 3))
    model = keras.Model(x, apply_adapter(x, (("preprocess", "caffe"),)))
    images = np.random.default_rng(0).uniform(0, 1, (3, 2, 2, 3)).astype("float32")
    expected = keras.applications.resnet.preprocess_input(images * 255.0)
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-3)


def test_a_base_that_cannot_take_the_data_fails_while_preparing(tmp_path):
    inputs = keras.Input((10,))
    dense = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    with pytest.raises(BaseModelError, match=re.escape("(8, 8, 1)")):
        prepare_path_base(dense, tmp_path, digits())

    # A run finds it only once it has the base: it still names the recipe's line.
    dense.save(tmp_path / "dense.keras")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: dense\ndata: {source: sklearn:digits}\nbase: {path: dense.keras}\n"
        "strategies: {feature_extraction: {}}\noutput: out/\n"
    )
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 2, result.output
    assert f"{recipe}:3: base.path: the data's inputs have shape (8, 8, 1)" in result.stderr
    assert not (tmp_path / "out").exists()


# -- cut points ---------------------------------------------------------------------------------


def only_tensor_passes(model: keras.Model, index: int) -> bool:
    """Whether the rest of ``model`` can run on layer ``index``'s output alone.

    Independent of graftune's graph walk: Keras itself refuses to build the tail
    as a model when it needs any other tensor ("Graph disconnected").
    """
    if index == len(model.layers) - 1:
        return True
    try:
        keras.Model(model.layers[index].output, model.output)
    except ValueError:
        return False
    return True


def residual_network() -> keras.Model:
    """A stem and two residual blocks (the second with a projection shortcut)."""
    inputs = keras.Input((8, 8, 3), name="input")
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    for block, filters in ((1, 4), (2, 8)):
        shortcut = x
        if filters != x.shape[-1]:
            shortcut = keras.layers.Conv2D(filters, 1, name=f"b{block}_project")(x)
        y = keras.layers.Conv2D(filters, 3, padding="same", name=f"b{block}_conv1")(x)
        y = keras.layers.BatchNormalization(name=f"b{block}_bn1")(y)
        y = keras.layers.ReLU(name=f"b{block}_relu1")(y)
        y = keras.layers.Conv2D(filters, 3, padding="same", name=f"b{block}_conv2")(y)
        x = keras.layers.Add(name=f"b{block}_add")([shortcut, y])
        x = keras.layers.ReLU(name=f"b{block}_out")(x)
    return keras.Model(inputs, x)


def test_cut_points_never_fall_inside_a_residual_block():
    model = residual_network()
    names = [layer.name for layer in model.layers]

    cuts = find_cut_points(model)

    assert [names[i] for i in cuts] == ["stem", "b1_out", "b2_out"]
    for branch, add in (("stem", "b1_add"), ("b1_out", "b2_add")):
        inside = range(names.index(branch) + 1, names.index(add))
        assert not set(cuts) & set(inside)
        assert not any(only_tensor_passes(model, i) for i in inside)
    assert all(only_tensor_passes(model, i) for i in cuts)


def test_cut_points_count_only_the_nodes_of_the_base_own_graph():
    # The same layers called in another graph too (a layer shared with another
    # model, a base nested in a bigger one): that graph's tensors are not the
    # base's and must not hide its cut points.
    model = residual_network()
    expected = find_cut_points(model)
    elsewhere = keras.Input((8, 8, 3))
    model.get_layer("stem")(elsewhere)
    keras.Model(elsewhere, model.get_layer("b1_out")(model.get_layer("stem")(elsewhere)))

    assert all(len(model.get_layer(n)._inbound_nodes) > 1 for n in ("stem", "b1_out"))
    assert find_cut_points(model) == expected


@pytest.fixture(scope="module")
def resnet50() -> keras.Model:
    return keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))


def test_resnet50_cut_points_are_the_stem_and_the_16_block_outputs(resnet50):
    cuts = find_cut_points(resnet50)
    names = [resnet50.layers[i].name for i in cuts]

    # The stem gives one, after pool1_pool: conv1_bn, which never trains, and the
    # weightless layers after conv1_conv merge into it.
    blocks = [
        f"conv{stage}_block{block}_out"
        for stage, count in ((2, 3), (3, 4), (4, 6), (5, 3))
        for block in range(1, count + 1)
    ]
    assert len(blocks) == 16
    assert names == ["pool1_pool", *blocks]
    assert len(cuts) == 17
    assert cuts == sorted(cuts) and cuts[-1] == len(resnet50.layers) - 1
    assert all(only_tensor_passes(resnet50, i) for i in cuts)
    assert not any(re.search(r"_\d_(conv|bn|relu)$", name) for name in names)
    # A layer inside a block is no cut: the shortcut still needs the block's input.
    inner = [i for i, layer in enumerate(resnet50.layers) if layer.name == "conv3_block2_2_conv"]
    assert inner and not only_tensor_passes(resnet50, inner[0])


def test_convnext_cut_points_are_its_stem_block_ends_and_downsamplings():
    """ConvNeXt sums each block's input and output with ``+``, an operation that is
    not one of ``model.layers``: the walk did not see the block's input still needed,
    and 90 of ConvNeXtTiny's 95 cut points fell inside blocks (every trial at one
    failed: "Output ... is not connected to `inputs`")."""
    model = keras.applications.ConvNeXtTiny(
        weights=None, include_top=False, input_shape=(32, 32, 3)
    )
    cuts = find_cut_points(model)
    names = [model.layers[i].name for i in cuts]

    blocks = [
        f"convnext_tiny_stage_{stage}_block_{block}_identity"
        for stage, count in enumerate((3, 3, 9, 3))
        for block in range(count)
    ]
    downsampling = [f"convnext_tiny_downsampling_block_{stage}" for stage in (0, 1, 2)]
    assert set(names) == {"convnext_tiny_stem", *blocks, *downsampling, model.layers[-1].name}
    assert len(cuts) == 1 + 18 + 3 + 1 and cuts[-1] == len(model.layers) - 1
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    whole = np.asarray(model(x, training=False))
    info = BaseInfo(
        path=Path("unused.keras"),
        fingerprint="",
        input_shape=(32, 32, 3),
        output_shape=tuple(model.output_shape[1:]),
        cut_points=tuple(cuts),
        cut_names=tuple(names),
    )
    for cut in (2, 10, len(cuts) - 1):
        base = LoadedBase(model, info)
        features = base.prefix_model((32, 32, 3), cut)(x, training=False)
        upper = base.upper_model(cut)
        assert upper is not None
        np.testing.assert_allclose(
            np.asarray(upper(features, training=False)), whole, rtol=1e-4, atol=1e-4
        )


def test_sequential_cut_points_are_every_weighted_layer_boundary():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Rescaling(2.0),
            keras.layers.Conv2D(2, 3),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(4),
            keras.layers.Dense(3),
            keras.layers.Softmax(),
        ]
    )
    kinds = [type(layer).__name__ for layer in model.layers]

    cuts = find_cut_points(model)

    # After each trainable layer, with the layers that follow it and never train
    # (weightless ones, and BatchNormalization, which always stays frozen).
    assert [kinds[i] for i in cuts] == ["Flatten", "Dense", "Softmax"]

    def trains(layer):
        return bool(layer.weights) and not isinstance(layer, keras.layers.BatchNormalization)

    weighted = [i for i, layer in enumerate(model.layers) if trains(layer)]
    assert len(cuts) == len(weighted)
    for cut, start in zip(cuts, weighted, strict=True):
        assert not any(trains(model.layers[i]) for i in range(start + 1, cut + 1))


def test_a_layer_whose_weights_never_train_makes_no_cut_point():
    """Found by QA: EfficientNet's Normalization layer (a mean and a variance, made
    not trainable) made a cut point that froze nothing more than none; a frozen
    layer's trainable weights still count (fine-tuning unfreezes it)."""
    normalize = keras.layers.Normalization(axis=-1)
    normalize.adapt(np.arange(16, dtype="float32").reshape(4, 4))
    first = keras.layers.Dense(4, name="first")
    model = keras.Sequential(
        [keras.Input((4,)), normalize, keras.layers.Dense(4), first, keras.layers.Dense(3)]
    )
    assert normalize.weights and not normalize.trainable_weights
    first.trainable = False  # as a saved base may have it
    assert [model.layers[i].name for i in find_cut_points(model)][:3] == [
        model.layers[1].name, "first", model.layers[3].name
    ]  # fmt: skip
    base = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    names = [base.layers[i].name for i in find_cut_points(base)]
    assert names[0] == "stem_activation" and len(names) == 38  # stem_conv_pad froze nothing


def test_freeze_freezes_exactly_the_layers_up_to_the_cut_point(tmp_path):
    info = prepare_path_base(tiny_cnn(), tmp_path, digits())
    base = load_base(info)
    layers = base.model.layers
    assert info.cut_names == ("relu1", "relu2", "relu3")

    for k in range(info.n_cut_points + 1):
        last = info.cut_points[k - 1] if k else -1
        assert base.freeze(k) == last + 1
        for index, layer in enumerate(layers):
            if isinstance(layer, keras.layers.BatchNormalization):
                # Frozen everywhere, so it keeps to its pretrained statistics.
                assert not layer.trainable, (k, layer.name)
            else:
                assert layer.trainable == (index > last), (k, layer.name)

    for wrong in (-1, info.n_cut_points + 1):
        with pytest.raises(ValueError, match="frozen_layers"):
            base.freeze(wrong)


def test_freeze_reaches_batch_normalization_in_nested_models(tmp_path):
    inner = tiny_cnn()
    inputs = keras.Input((8, 8, 1))
    outer = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="after")(inner(inputs)))
    cuts = find_cut_points(outer)
    info = BaseInfo(
        path=tmp_path / "unused.keras",
        fingerprint="",
        input_shape=(8, 8, 1),
        output_shape=(4, 4, 2),
        cut_points=tuple(cuts),
        cut_names=tuple(outer.layers[i].name for i in cuts),
    )

    LoadedBase(outer, info).freeze(0)

    assert inner.get_layer("conv1").trainable and not inner.get_layer("bn1").trainable


def _sequential_base() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(6, activation="relu"),
        ]
    )


def _exported_base() -> keras.Model:
    """The shape of a graftune export of a trial on cached features: a nested
    ``frozen_prefix`` whose input has the outer input's name."""
    inner_in = keras.Input((8, 8, 1), name="inputs")
    inner = keras.Model(
        inner_in, keras.layers.Conv2D(4, 3, name="c1")(inner_in), name="frozen_prefix"
    )
    outer_in = keras.Input((8, 8, 1), name="inputs")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c2")(inner(outer_in))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(outer_in, keras.layers.Dense(6, name="head")(x))


def _summed_base() -> keras.Model:
    """Residual blocks summed with ``+`` on symbolic tensors, as ConvNeXt's are: an
    operation of the graph that is not one of ``model.layers``."""
    inputs = keras.Input((8, 8, 1), name="inputs")
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    for block in (1, 2):
        y = keras.layers.Conv2D(4, 3, padding="same", name=f"b{block}_conv1")(x)
        y = keras.layers.Conv2D(4, 3, padding="same", name=f"b{block}_conv2")(y)
        x = x + keras.layers.Activation("linear", name=f"b{block}_identity")(y)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(6, name="head")(x))


@pytest.mark.parametrize(
    "make", [_sequential_base, _exported_base, _summed_base], ids=["sequential", "export", "summed"]
)
def test_a_saved_base_splits_at_every_cut_into_prefix_and_upper_part(make, tmp_path):
    """A trial on cached features trains on prefix features through the part
    above the cut. A loaded Sequential base has no ``output`` (every such trial
    failed), and a graftune export's nested prefix gave the tensor of its own
    graph ("the name 'inputs' is used 2 times")."""
    model = make()
    path = tmp_path / "base.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    cuts = find_cut_points(loaded)
    info = BaseInfo(
        path=path,
        fingerprint="",
        input_shape=(8, 8, 1),
        output_shape=(6,),
        cut_points=tuple(cuts),
        cut_names=tuple(loaded.layers[i].name for i in cuts),
    )
    x = np.random.default_rng(0).normal(size=(5, 8, 8, 1)).astype("float32")
    whole = np.asarray(loaded(x, training=False))
    assert len(cuts) >= 3
    for cut in range(1, len(cuts)):  # the last cut point has no part above it
        base = LoadedBase(loaded, info)
        features = base.prefix_model((8, 8, 1), cut)(x, training=False)
        upper = base.upper_model(cut)
        assert upper is not None
        np.testing.assert_allclose(np.asarray(upper(features, training=False)), whole, atol=1e-5)


def test_a_run_keeps_tensorflows_retracing_warnings_off_the_console(tmp_path, monkeypatch, caplog):
    """Found by QA: a ConvNeXt base printed "5 out of the last 5 calls to <function
    conv.<locals>._conv_xla> triggered tf.function retracing" twice through ``run
    --quiet``: Keras makes a function for each grouped convolution, and the driver
    traces the base (its features). Warnings for whoever writes the layers, of no
    use to the user; the trials had them off already. The logger's level is put
    back after the run."""
    from orchestrator.run import run_recipe

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    for _ in range(6):
        x = keras.layers.Conv2D(4, 3, padding="same", groups=2, activation="relu")(x)
    keras.Model(inputs, x).save(tmp_path / "grouped.keras")
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            """\
            name: grouped
            data: {source: "sklearn:digits", classes: [0, 1, 2]}
            base: {path: grouped.keras}
            strategies: {feature_extraction: {num_samples: 1}}
            search: {backend: keras_tuner, max_epochs: 1}
            output: runs/
            """
        )
    )
    tf_logger = logging.getLogger("tensorflow")
    before = tf_logger.level
    tf_logger.setLevel(logging.INFO)  # a caller's own level, put back after the run
    try:
        with caplog.at_level(logging.WARNING):
            outcome = run_recipe(recipe)
        assert tf_logger.level == logging.INFO
    finally:
        tf_logger.setLevel(before)
    assert list(outcome.leaderboard["status"]) == ["ok"]
    said = [r.getMessage() for r in caplog.records if r.name.startswith("tensorflow")]
    assert not said, said


def test_a_run_prepares_its_pretrain_data_once(tmp_path, monkeypatch):
    """The check before pretraining, the base's cache key and its training each
    prepared it (for glyphs: rendered it) again."""
    import orchestrator.data
    from orchestrator.run import run_recipe

    calls: list[str] = []
    prepare = orchestrator.data.prepare_dataset

    def counted(spec, *args, **kwargs):
        calls.append(spec.source)
        return prepare(spec, *args, **kwargs)

    monkeypatch.setattr(orchestrator.data, "prepare_dataset", counted)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            """\
            name: once
            data: {source: "sklearn:digits", classes: [5, 6, 7, 8, 9]}
            base: {pretrain: {data: {source: "sklearn:digits", classes: [0, 1, 2, 3, 4]}, epochs: 1, width: 4}}
            strategies: {feature_extraction: {num_samples: 1}}
            search: {backend: keras_tuner, max_epochs: 1}
            output: runs/
            """
        )
    )
    run_recipe(recipe)
    assert calls.count("sklearn:digits") == 2, calls  # the run's data, the pretrain's


class _Faulty:
    """Base providers, each broken in one way a plugin author might break one."""

    @staticmethod
    def providers():
        import keras

        from orchestrator.bases import BaseProvider

        class Raises(BaseProvider):
            name = "raises_in_build"

            def build(self, spec, context):
                raise RuntimeError("build exploded")

        class NoModel(BaseProvider):
            name = "returns_no_model"

            def build(self, spec, context):
                return "not a model"

        class BadCheck(BaseProvider):
            name = "bad_check"

            def check(self, spec):
                spec.options["required_key"]

        class BadPreprocessing(BaseProvider):
            name = "bad_preprocessing"

            def build(self, spec, context):
                return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten()])

            def preprocessing(self, spec):
                return "bogus"

        class IntKey(BaseProvider):
            name = "int_key"

            def cache_key(self, spec, context):
                return 1234567890123

        class Doubling(keras.layers.Layer):  # registered nowhere, as a forgetful plugin's
            def call(self, x):
                return x * 2

        class Unregistered(BaseProvider):
            name = "unregistered_layer"

            def build(self, spec, context):
                inputs = keras.Input((8, 8, 1))
                return keras.Model(inputs, keras.layers.Flatten()(Doubling()(inputs)))

        class Exits(BaseProvider):
            name = "exits_in_build"

            def build(self, spec, context):
                raise SystemExit(0)

        class ExitsInKey(BaseProvider):
            name = "exits_in_cache_key"

            def cache_key(self, spec, context):
                raise SystemExit("no key")

        class Scalar(BaseProvider):
            name = "scalar_output"

            def build(self, spec, context):
                inputs = keras.Input((8, 8, 1))
                return keras.Model(inputs, keras.ops.sum(inputs, axis=(1, 2, 3)))

        class Subclassed(BaseProvider):
            name = "subclassed"

            def build(self, spec, context):
                class Net(keras.Model):
                    def call(self, x):
                        return x

                return Net()

        class CaffeOnGrey(BaseProvider):
            name = "caffe_on_grey"

            def preprocessing(self, spec):
                return "caffe"

            def build(self, spec, context):
                inputs = keras.Input((8, 8, 1))
                return keras.Model(inputs, keras.layers.Flatten()(inputs))

        class Wide(BaseProvider):
            name = "wide_input"

            def build(self, spec, context):
                inputs = keras.Input((5,))
                return keras.Model(inputs, keras.layers.Dense(4)(inputs))

        return (
            Raises, NoModel, BadCheck, BadPreprocessing, IntKey, Unregistered, Exits,
            ExitsInKey, Scalar, Subclassed, CaffeOnGrey, Wide,
        )  # fmt: skip


def _faulty_base(provider: str, tmp_path: Path) -> Any:
    """What :func:`prepare_base` raises for one of :class:`_Faulty`'s providers,
    registered from ``qa_plugin (qa-plugin 1.0)``, on 8x8 images of 3 classes."""
    from orchestrator.bases import BaseProvider, prepare_base
    from orchestrator.data import TaskSpec
    from orchestrator.errors import BaseModelError
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.recipe import BaseSpec
    from orchestrator.registry import Registry

    host = get_plugin_manager()
    registry = Registry("base provider", "name", BaseProvider)
    registry.current_owner = "qa_plugin (qa-plugin 1.0)"
    for cls in _Faulty.providers():
        registry.add(cls)
    zeros = np.zeros(64, dtype="float32")
    task = TaskSpec((8, 8, 1), 3, ("a", "b", "c"), zeros, zeros + 1, "f")
    with pytest.raises(BaseModelError) as info:
        prepare_base(
            BaseSpec(provider=provider),
            registry,
            task,
            seed=0,
            base_dir=tmp_path,
            data_sources=host.data_sources,
        )
    return info


@pytest.mark.parametrize(
    ("provider", "words"),
    [
        ("raises_in_build", "failed in build(): RuntimeError: build exploded"),
        ("returns_no_model", "returned str from build(), not a keras.Model"),
        ("bad_check", "failed in check(): KeyError: 'required_key'"),
        ("bad_preprocessing", "returned preprocessing 'bogus'; expected one of None, caffe"),
        # Found by QA: "internal error: TypeError: 'int' object is not subscriptable".
        ("int_key", "returned int 1234567890123 from cache_key(); expected a text or None"),
        # Found by QA: sys.exit(0) ended `run` silently with exit 0, no run directory.
        ("exits_in_build", "failed in build(): SystemExit: 0"),
        ("exits_in_cache_key", "failed in cache_key(): SystemExit: no key"),
        # Found by QA: every trial failed, blaming the strategy.
        (
            "scalar_output",
            "returned from build() a model that is no base: the base model's "
            "output has shape (None,): no features an example",
        ),
        (
            "subclassed",
            "returned from build() a model that is no base: the base model has "
            "no defined input (a Sequential without a keras.Input, saved or returned before it "
            "was built, or a subclassed keras.Model)",
        ),
        # Found by QA: told to fix base.input_shape, a key a provider's base has not.
        (
            "caffe_on_grey",
            "gives its base of 1 channel(s) the 'caffe' scaling of RGB images: its "
            "preprocessing() should give one only for a base that takes 3 channels",
        ),
        # Found by QA: accepted, and every trial failed loading it from the cache.
        (
            "unregistered_layer",
            "built a model that would not load again, as each trial loads it from graftune's "
            # Defined in this test's function: told to move it to a module's top level.
            "cache: it uses the custom Keras object 'Doubling', a class defined inside ",
        ),
    ],
)
def test_a_provider_that_breaks_its_contract_is_named(provider, words, tmp_path, isolated):
    info = _faulty_base(provider, tmp_path)
    message = str(info.value)
    assert f"base provider {provider!r} from qa_plugin (qa-plugin 1.0)" in message
    assert words in message
    assert not list(isolated.glob("bases/*/base.keras"))  # nothing cached
    assert info.value.key == ("provider" if provider == "caffe_on_grey" else None)


def test_a_providers_base_the_data_cannot_feed_names_the_provider(tmp_path, isolated):
    """Found by QA: the data's shape against a plugin's base was refused naming no
    provider (the base itself is fine, and stays cached)."""
    info = _faulty_base("wide_input", tmp_path)
    assert (
        "the data's inputs have shape (8, 8, 1) but the base (made by base provider "
        "'wide_input' from qa_plugin (qa-plugin 1.0)) takes (5,)"
    ) in str(info.value)
    # Not base.input_shape, an application's key (found by QA).
    assert "Use a base whose input matches the data (its options may choose one)." in str(
        info.value
    )


def test_a_providers_cache_key_names_an_entry_inside_the_cache_by_its_digest(tmp_path, isolated):
    """Found by QA: a key with '/' or '..' named a folder outside the cache, and two
    keys whose first 16 characters were the same shared one entry (the second run
    took the first one's base)."""
    from orchestrator.bases import BaseProvider
    from orchestrator.registry import Registry

    class Keyed(BaseProvider):
        name = "keyed"

        def cache_key(self, spec, context):
            return spec.options["key"]

        def build(self, spec, context):
            keras.utils.set_random_seed(spec.options["seed"])
            return tiny_cnn()

    registry = Registry("base provider", "name", BaseProvider)
    registry.add(Keyed)
    dataset = digits()

    def prepared(key, seed):
        return prepare_base(
            BaseSpec(provider="keyed", options={"key": key, "seed": seed}),
            registry,
            dataset.task,
            seed=0,
            base_dir=tmp_path,
            data_sources=host().data_sources,
        )

    escaping = prepared("../../escape/v1", 0)
    assert escaping.path.parent.parent == isolated / "bases"
    assert escaping.path.parent.name.startswith("keyed-") and "." not in escaping.path.parent.name
    assert not (tmp_path / "escape").exists()
    first = prepared("my-provider/checkpoints/a", 1)
    second = prepared("my-provider/checkpoints/b", 2)
    assert first.path != second.path and first.fingerprint != second.fingerprint
    assert prepared("my-provider/checkpoints/a", 2).fingerprint == first.fingerprint  # reused


def test_a_random_application_base_is_drawn_from_the_seed(tmp_path):
    from orchestrator.bases import ApplicationProvider, BaseContext, weights_digest
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.recipe import BaseSpec

    spec = BaseSpec(application="MobileNetV3Small", weights="none", input_shape=(32, 32, 3))
    host = get_plugin_manager()

    def made(seed):
        context = BaseContext(seed, tmp_path, host.data_sources, tmp_path)
        provider = ApplicationProvider()
        return provider.cache_key(spec, context), weights_digest(provider.build(spec, context))

    first, again, other = made(3), made(3), made(4)
    assert first == again  # rebuilt after a cache clear: the base the trials trained on
    assert other[0] != first[0] and other[1] != first[1]


def test_a_pretrain_base_named_with_its_default_architecture_is_the_same_base(tmp_path):
    """Found by QA: `architecture: cnn` on images, the default, pretrained it again."""
    from orchestrator.bases import BaseContext, PretrainProvider
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.recipe import BaseSpec, DataSpec, PretrainSpec

    host = get_plugin_manager()
    context = BaseContext(0, tmp_path, host.data_sources, tmp_path)

    def key(source, architecture):
        data = DataSpec(source=source)
        pretrain = PretrainSpec(data=data, architecture=architecture)
        return PretrainProvider().cache_key(BaseSpec(pretrain=pretrain), context)

    assert key("sklearn:digits", "cnn") == key("sklearn:digits", None)
    assert key("sklearn:digits", "mlp") != key("sklearn:digits", None)
    assert key("sklearn:iris", "mlp") == key("sklearn:iris", None)


def test_a_base_is_one_built_input_to_one_output():
    import keras

    from orchestrator.bases import _check_one_input_and_output, plan_adapter
    from orchestrator.errors import BaseModelError

    inputs = keras.Input((8, 8, 1))
    a = keras.layers.Conv2D(2, 3)(inputs)
    b = keras.layers.Conv2D(2, 3)(a)
    with pytest.raises(BaseModelError, match=r"1 input\(s\) and 2 output\(s\)"):
        _check_one_input_and_output(keras.Model(inputs, [a, b]))
    with pytest.raises(BaseModelError, match="no defined input"):
        _check_one_input_and_output(keras.Sequential([keras.layers.Dense(2)]))
    _check_one_input_and_output(keras.Model(inputs, b))
    with pytest.raises(BaseModelError, match="its 'torch' scaling is of RGB images"):
        plan_adapter((8, 8, 1), (32, 32, 1), "torch")
    assert plan_adapter((8, 8, 1), (32, 32, 3), "caffe")[-1] == ("preprocess", "caffe")


def test_a_relative_or_home_cache_dir_is_pinned_before_trials_move(tmp_path, monkeypatch):
    """Trials run in working folders of their own: a relative $GRAFTUNE_CACHE_DIR
    named another folder there, and every transfer trial missed its base."""
    import os

    from orchestrator.bases import cache_dir, pin_cache_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", "relcache")
    pin_cache_dir()
    assert os.environ["GRAFTUNE_CACHE_DIR"] == str(tmp_path / "relcache")
    monkeypatch.chdir("/")
    assert cache_dir() == tmp_path / "relcache"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", "~/gt")
    assert cache_dir() == tmp_path / "gt"


def test_a_base_whose_output_hardly_varies_is_warned_of_and_noted_in_its_trials(
    tmp_path, monkeypatch
):
    """A random MobileNetV3Small keeps an untrained network's BatchNormalization
    statistics, frozen: its output is about 1e-10 whatever the input, and every
    trial scored at chance without a word."""
    from dataclasses import replace

    from orchestrator.bases import flat_output_warning, output_spread
    from orchestrator.run import run_recipe

    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            """\
            name: flat
            data: {source: "sklearn:digits", classes: [0, 1, 2]}
            base: {application: MobileNetV3Small, weights: none, input_shape: [32, 32, 3]}
            strategies: {feature_extraction: {num_samples: 1}}
            search: {backend: keras_tuner, max_epochs: 1}
            output: runs/
            """
        )
    )
    said: list[str] = []
    outcome = run_recipe(recipe, echo=said.append)

    warned = [line for line in said if "hardly varies" in line]
    assert len(warned) == 1, said
    assert warned[0].startswith("warning: the base's output hardly varies over 16 training")
    assert "weights: none (MobileNetV3Small) has the BatchNormalization statistics" in warned[0]
    assert "weights: imagenet" in warned[0] and "pretrain: stage" in warned[0]
    notes = list(outcome.leaderboard["note"])
    assert notes and all("base output near constant" in note for note in notes), notes

    # A base that carries the signal on (here a small random CNN without BatchNormalization
    # statistics to keep) is measured and not warned of.
    info = prepare_path_base(tiny_cnn(), tmp_path / "tiny", digits())
    assert info.output_spread is None  # not asked for
    spread = output_spread(load_base(info).model, info.adapter, digits().x_train)
    assert spread is not None and spread[1] > 1e-2 and spread[2] == 16
    # Data with fewer training examples than it measures: said over those it has.
    few = output_spread(load_base(info).model, info.adapter, digits().x_train[:5])
    assert few is not None and few[2] == 5
    said = flat_output_warning(replace(info, output_spread=(1e-9, 1e-10, 5)), None)
    assert said is not None and said.startswith("the base's output hardly varies over 5 training")
    assert flat_output_warning(replace(info, output_spread=spread), None) is None


def test_a_base_of_several_inputs_or_outputs_is_refused_with_advice_that_works():
    """Found by QA: a two-input base was told to take keras.Model(model.inputs[0],
    model.outputs[i]), which fails where that output uses both inputs."""
    from orchestrator.bases import _check_one_input_and_output

    image, extra = keras.Input((8, 8, 1)), keras.Input((4,))
    flat = keras.layers.Flatten(name="flat")(image)
    joined = keras.layers.Concatenate()([flat, extra])
    two_in = keras.Model([image, extra], joined)
    with pytest.raises(BaseModelError) as info:
        _check_one_input_and_output(two_in)
    said = str(info.value)
    assert "the base model has 2 input(s) and 1 output(s)" in said
    assert "keras.Model(model.inputs[i], model.get_layer(NAME).output)" in said
    _check_one_input_and_output(keras.Model(two_in.inputs[0], two_in.get_layer("flat").output))
    two_out = keras.Model(image, [flat, keras.layers.Dense(2)(flat)])
    with pytest.raises(
        BaseModelError, match=re.escape("keras.Model(model.inputs[0], model.outputs[i])")
    ):
        _check_one_input_and_output(two_out)
    _check_one_input_and_output(keras.Model(two_out.inputs[0], two_out.outputs[0]))


def test_a_base_whose_weights_a_seed_draws_is_cached_apart_for_each_backend(tmp_path):
    """Found by QA: a TensorFlow run trained on the pretrained base JAX had cached (the
    same seed draws other weights there) and scored otherwise than on its own."""
    import os
    import subprocess
    import sys

    from orchestrator.bases import BaseContext, _describe_entry, _drawn_by

    assert _drawn_by() == {}  # TensorFlow's keys are those made before: still found
    script = (
        "import json, keras, pathlib\n"
        "from orchestrator.bases import BaseContext, _describe_entry, _drawn_by\n"
        "from orchestrator.plugin_manager import get_plugin_manager\n"
        "from orchestrator.recipe import BaseSpec\n"
        f"spec = BaseSpec.model_validate(json.loads({pretrain_spec().model_dump_json()!r}))\n"
        "model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])\n"
        f"folder = pathlib.Path({str(tmp_path)!r})\n"
        "context = BaseContext(0, folder, get_plugin_manager().data_sources, folder)\n"
        "_describe_entry(folder, spec, model, 'g', 0, context)\n"
        "print(json.dumps(_drawn_by()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"backend": "jax"}
    what = json.loads((tmp_path / "meta.json").read_text())["what"]
    assert what.endswith("seed 0, backend jax)"), what
    context = BaseContext(0, tmp_path, host().data_sources, tmp_path)
    _describe_entry(tmp_path, pretrain_spec(), tiny_cnn(), "g", 0, context)
    assert "backend" not in json.loads((tmp_path / "meta.json").read_text())["what"]


def test_a_bases_drawn_weights_do_not_depend_on_other_draws_from_pythons_random():
    """Found by QA: on JAX, three runs of one recipe pretrained three bases. Keras drew
    its initializers' seeds from Python's random, which embedded Ray's start, in
    another thread, draws from meanwhile: here the draws in between stand for it."""
    import random

    from orchestrator.bases import _seeded_weights

    def built(others: int) -> np.ndarray:
        with _seeded_weights(3):
            for _ in range(others):
                random.random()
            layer = keras.layers.Dense(4)
            layer.build((None, 3))
            return keras.ops.convert_to_numpy(layer.kernel)

    np.testing.assert_array_equal(built(0), built(5))
    from keras.src.random import seed_generator

    assert seed_generator.python_random is random  # after: the trials draw as before


def test_a_third_party_provider_without_options_says_so_in_its_own_words():
    """Found by QA: a third-party provider with ``takes_options = False`` was refused
    with "options are for a third-party base provider", which it is."""
    from orchestrator.bases import BaseProvider, check_base_spec
    from orchestrator.errors import BaseModelError
    from orchestrator.registry import Registry

    class Fixed(BaseProvider):
        name = "fixed"
        takes_options = False

    registry = Registry("base provider", "name", BaseProvider)
    registry.current_owner = "acme-bases"
    registry.add(Fixed)
    with pytest.raises(BaseModelError) as info:
        check_base_spec(BaseSpec(provider="fixed", options={"alpha": 1}), registry)
    said = str(info.value)
    assert "the 'fixed' base takes no options, got 'alpha'" in said
    assert "from acme-bases, sets takes_options = False" in said
    assert "options are for a third-party" not in said


def test_keras_warning_of_a_mobilenets_224_weights_is_said_in_graftunes_words(caplog):
    """Found by QA: Keras' "`input_shape` is undefined or non-square, or `rows` is not
    224" reached the console as a raw Python warning with Keras' source line."""
    import warnings

    from orchestrator.bases import _resolution_said

    with pytest.warns(DeprecationWarning, match="another"), _resolution_said("MobileNetV3Small"):
        warnings.warn(
            "`input_shape` is undefined or non-square, or `rows` is not 224. Weights for "
            "input shape (224, 224) will be loaded as the default.",
            UserWarning,
            stacklevel=1,
        )
        warnings.warn("another", DeprecationWarning, stacklevel=1)  # goes on as it was
    (said,) = (r.getMessage() for r in caplog.records if r.name == "orchestrator.bases")
    assert said.startswith(
        "MobileNetV3Small's imagenet weights were trained on 224x224 images, and "
        "base.input_shape is another size: they are used as they are"
    )
