"""Tests of the built-in ``feature_extraction`` strategy, in process."""

from __future__ import annotations

import itertools
from pathlib import Path

import keras
import numpy as np
import pytest

from orchestrator.bases import load_base
from orchestrator.builtin_plugins.feature_extraction import FeatureExtraction
from orchestrator.space import DIMENSION_TYPES, smallest_config
from orchestrator.strategy import SpaceContext
from tests.helpers import (
    assert_reloads,
    changed,
    digits,
    fit,
    loaded_tiny_base,
    prepare_path_base,
    snapshot,
    tiny_cnn,
)

CONFIG = {"head_width": 16, "head_depth": 1, "lambda": 1e-4, "learning_rate": 1e-2}


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(tmp_path / "graftune-cache"))
    keras.utils.set_random_seed(0)


def head_parameters(features: int, width: int, depth: int, classes: int) -> int:
    """Dense layers of ``width`` on pooled features, then the softmax layer."""
    sizes = [features] + [width] * depth + [classes]
    return sum(n_in * n_out + n_out for n_in, n_out in itertools.pairwise(sizes))


def test_search_space_and_smallest_model(tmp_path):
    strategy = FeatureExtraction()
    space = strategy.search_space(SpaceContext())
    assert set(space) == {"head_width", "head_depth", "lambda", "learning_rate"}
    assert all(isinstance(dim, DIMENSION_TYPES) for dim in space.values())
    assert strategy.requires_base

    dataset = digits()
    model = strategy.build(
        smallest_config(space), dataset.task, loaded_tiny_base(tmp_path, dataset)
    )

    assert model.optimizer is not None
    assert model.output_shape == (None, dataset.task.n_classes)


def test_the_base_is_frozen_and_unchanged_by_fitting(tmp_path):
    dataset = digits()
    base = loaded_tiny_base(tmp_path, dataset)
    model = FeatureExtraction().build(CONFIG, dataset.task, base)
    assert base.model.trainable_weights == []
    assert all(not layer.trainable for layer in base.model.layers if layer.weights)
    before = snapshot(base.model)
    head_before = snapshot(model.get_layer("head_output"))

    history = fit(model, dataset)

    assert np.isfinite(history.history["loss"]).all()
    # Kernels, biases, BatchNormalization's gamma/beta and its moving mean/variance.
    assert any("moving_variance" in path for path in before)
    assert changed(before, base.model) == set()
    assert changed(head_before, model.get_layer("head_output"))


def test_only_the_head_is_trainable(tmp_path):
    dataset = digits()
    base = loaded_tiny_base(tmp_path, dataset)
    model = FeatureExtraction().build({**CONFIG, "head_depth": 2}, dataset.task, base)

    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)

    channels = base.info.output_shape[-1]
    assert trainable == head_parameters(channels, 16, 2, dataset.task.n_classes)
    assert {w.path.split("/")[0] for w in model.trainable_weights} == {
        "head_dense1",
        "head_dense2",
        "head_output",
    }


def test_an_adapted_base_adds_no_trainable_weights(tmp_path):
    dataset = digits()
    info = prepare_path_base(tiny_cnn((12, 12, 3)), tmp_path, dataset)
    assert [step[0] for step in info.adapter] == ["resize", "gray_to_rgb"]

    model = FeatureExtraction().build(CONFIG, dataset.task, load_base(info))

    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == head_parameters(8, 16, 1, dataset.task.n_classes)
    assert model.predict(dataset.x_val[:4], verbose=0).shape == (4, dataset.task.n_classes)


def test_saved_model_reloads_in_safe_mode(tmp_path):
    dataset = digits()
    model = FeatureExtraction().build(CONFIG, dataset.task, loaded_tiny_base(tmp_path, dataset))
    fit(model, dataset, epochs=1)
    assert_reloads(model, tmp_path / "model.keras", dataset.x_val[:16])
