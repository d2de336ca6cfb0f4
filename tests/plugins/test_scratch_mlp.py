"""Tests of the built-in ``scratch_mlp`` strategy, in process."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from orchestrator.builtin_plugins.scratch_mlp import ScratchMLP
from orchestrator.space import DIMENSION_TYPES, smallest_config
from orchestrator.strategy import SpaceContext
from orchestrator.testing import tiny_dataset
from tests.helpers import assert_reloads, digits, fit

CONFIG = {"hidden_layers": 1, "width": 32, "lambda": 1e-6, "learning_rate": 1e-2}


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(tmp_path / "graftune-cache"))
    keras.utils.set_random_seed(0)


def test_search_space_and_smallest_model():
    strategy = ScratchMLP()
    space = strategy.search_space(SpaceContext())
    assert set(space) == {"hidden_layers", "width", "lambda", "learning_rate"}
    assert all(isinstance(dim, DIMENSION_TYPES) for dim in space.values())
    assert not strategy.requires_base

    task = digits().task
    model = strategy.build(smallest_config(space), task, None)

    assert model.optimizer is not None
    assert model.output_shape == (None, task.n_classes)


def test_inputs_are_flattened_and_standardised_with_training_statistics():
    dataset = digits()
    model = ScratchMLP().build(CONFIG, dataset.task, None)
    standardize = model.get_layer("standardize")
    assert isinstance(model.get_layer("flatten"), keras.layers.Flatten)

    inside = keras.Model(model.input, standardize.output).predict(dataset.x_train, verbose=0)

    assert inside.shape == (len(dataset.x_train), 64)
    varying = dataset.task.feature_var.reshape(-1) > 1e-8
    assert not varying.all()  # digits have always-blank corner pixels
    np.testing.assert_allclose(inside[:, varying].mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(inside[:, varying].std(axis=0), 1.0, atol=1e-3)
    # Constant features are not divided by ~0.
    assert np.isfinite(inside).all()
    assert np.abs(inside[:, ~varying]).max() < 1e-4


@pytest.mark.parametrize("unit", [1e-6, 1e20])
def test_features_of_any_unit_are_standardised(unit):
    """Found by QA: iris in units 1e-5 (a standard deviation below 1e-4) was taken as
    constant and left near 0, and in units 1e20 its variance overflowed float32 and
    zeroed it: chance accuracy, no word."""
    from orchestrator.data import _dataset
    from orchestrator.data.split import Splits

    iris = tiny_dataset("iris")
    parts = Splits(
        iris.x_train * np.float32(unit), iris.y_train, iris.x_val * np.float32(unit),
        iris.y_val, iris.x_test * np.float32(unit), iris.y_test,
    )  # fmt: skip
    dataset = _dataset(parts, iris.task.class_names, "scaled")
    model = ScratchMLP().build(CONFIG, dataset.task, None)
    standardize = model.get_layer("standardize")

    inside = keras.Model(model.input, standardize.output).predict(dataset.x_train, verbose=0)

    assert np.isfinite(inside).all()
    np.testing.assert_allclose(inside.mean(axis=0), 0.0, atol=1e-3)
    if unit < 1:
        np.testing.assert_allclose(inside.std(axis=0), 1.0, atol=1e-3)
    else:  # past float32's squares: divided by its largest std, ~1.8e19, not by 0
        assert (inside.std(axis=0) > 1).all()


def test_regularises_every_kernel_when_lambda_is_positive():
    task = digits().task
    assert len(ScratchMLP().build({**CONFIG, "hidden_layers": 2}, task, None).losses) == 3
    assert ScratchMLP().build({**CONFIG, "lambda": 0.0}, task, None).losses == []


def test_trains_above_chance_on_digits():
    dataset = digits()
    model = ScratchMLP().build(CONFIG, dataset.task, None)

    fit(model, dataset, epochs=3)

    scores = model.evaluate(dataset.x_val, dataset.y_val, verbose=0, return_dict=True)
    assert scores["accuracy"] > 0.7  # chance is 0.1
    # compile_classifier's cross_entropy: the loss without the λ penalty.
    assert scores["cross_entropy"] < scores["loss"]


def test_saved_model_reloads_in_safe_mode(tmp_path):
    dataset = digits()
    model = ScratchMLP().build(CONFIG, dataset.task, None)
    fit(model, dataset, epochs=1)
    assert_reloads(model, tmp_path / "model.keras", dataset.x_val[:16])
