"""Tests of the built-in ``fine_tune`` strategy, in process."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from orchestrator import ALL
from orchestrator.builtin_plugins.fine_tune import FineTune
from orchestrator.space import DIMENSION_TYPES, Int, smallest_config
from orchestrator.strategy import SpaceContext
from tests.helpers import assert_reloads, changed, digits, fit, loaded_tiny_base, snapshot

CONFIG = {"frozen_layers": 1, "head_width": 16, "lambda": 1e-4, "learning_rate": 1e-2}
#: The tiny base's cut points: relu1, relu2, relu3 (BatchNormalization never counts).
N_CUTS = 3


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(tmp_path / "graftune-cache"))
    keras.utils.set_random_seed(0)


def layer_of(path: str) -> str:
    return path.split("/")[0]


def batch_norm_paths(model: keras.Model) -> set[str]:
    return {
        w.path
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        for w in layer.weights
    }


def test_search_space_and_smallest_model(tmp_path):
    strategy = FineTune()
    space = strategy.search_space(SpaceContext())
    assert set(space) == {
        "frozen_layers",
        "head_width",
        "regularizer",
        "lambda",
        "learning_rate",
        "two_phase",
    }
    assert all(isinstance(dim, DIMENSION_TYPES) for dim in space.values())
    assert space["frozen_layers"] == Int(0, ALL)
    assert strategy.requires_base

    dataset = digits()
    base = loaded_tiny_base(tmp_path, dataset)
    assert base.info.n_cut_points == N_CUTS
    model = strategy.build(smallest_config(space), dataset.task, base)

    assert model.optimizer is not None
    assert model.output_shape == (None, dataset.task.n_classes)


def test_frozen_prefix_keeps_its_weights_and_the_rest_trains(tmp_path):
    dataset = digits()
    base = loaded_tiny_base(tmp_path, dataset)
    model = FineTune().build(CONFIG, dataset.task, base)
    before = snapshot(base.model)

    fit(model, dataset)

    moved = changed(before, base.model)
    last_frozen = base.info.cut_points[CONFIG["frozen_layers"] - 1]
    frozen = {layer.name for layer in base.model.layers[: last_frozen + 1]}
    assert frozen == {"base_input", "conv1", "bn1", "relu1"}
    assert not {layer_of(path) for path in moved} & frozen
    assert {"conv2/kernel", "conv3/kernel", "conv3/bias"} <= moved
    # BatchNormalization stays in inference mode, also in the unfrozen part:
    # neither its moving statistics nor its gamma/beta move.
    assert not moved & batch_norm_paths(base.model)


def test_lambda_regularises_only_trainable_kernels(tmp_path):
    dataset = digits()
    base = loaded_tiny_base(tmp_path, dataset)
    model = FineTune().build({**CONFIG, "lambda": 1e-3}, dataset.task, base)

    regularised = {
        w.path for w in base.model.weights if getattr(w, "regularizer", None) is not None
    }
    assert regularised == {"conv2/kernel", "conv3/kernel"}
    # Two base kernels, the head's dense layer and its softmax layer.
    assert len(model.losses) == 4
    assert all(float(loss) > 0 for loss in model.losses)

    unregularised = FineTune().build(
        {**CONFIG, "lambda": 0.0}, dataset.task, loaded_tiny_base(tmp_path / "b", dataset)
    )
    assert unregularised.losses == []


def test_zero_frozen_layers_trains_the_whole_base(tmp_path):
    dataset = digits()
    base = loaded_tiny_base(tmp_path, dataset)
    model = FineTune().build({**CONFIG, "frozen_layers": 0}, dataset.task, base)
    before = snapshot(base.model)
    norms = batch_norm_paths(base.model)
    assert {w.path for w in base.model.trainable_weights} == set(before) - norms

    fit(model, dataset)

    assert changed(before, base.model) == set(before) - norms


def test_all_frozen_layers_is_feature_extraction(tmp_path):
    dataset = digits()
    base = loaded_tiny_base(tmp_path, dataset)
    config = {**CONFIG, "frozen_layers": N_CUTS, "lambda": 1e-3}
    model = FineTune().build(config, dataset.task, base)
    assert base.model.trainable_weights == []
    assert len(model.losses) == 2  # the head's two kernels only
    before = snapshot(base.model)

    fit(model, dataset)

    assert changed(before, base.model) == set()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == (8 * 16 + 16) + (16 * 10 + 10)


def test_saved_model_reloads_in_safe_mode(tmp_path):
    dataset = digits()
    model = FineTune().build(CONFIG, dataset.task, loaded_tiny_base(tmp_path, dataset))
    fit(model, dataset, epochs=1)
    assert_reloads(model, tmp_path / "model.keras", dataset.x_val[:16])
