"""The linear_probe strategy: conformance, what it trains, and a run beside a built-in."""

from __future__ import annotations

import graftune_linear_probe.blobs
import graftune_linear_probe.linear_probe
import numpy as np
from graftune_linear_probe.linear_probe import STANDARDIZE, LinearProbe

from orchestrator.bases import load_base
from orchestrator.strategy import FitData
from orchestrator.testing import check_strategy


def test_linear_probe_passes_the_conformance_check():
    check_strategy(LinearProbe)


def test_graftune_validate_refuses_a_value_it_cannot_take(graftune_register, tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    graftune_register(graftune_linear_probe.linear_probe)
    recipe = tmp_path / "recipe.yaml"
    for space, said in (
        ("{pooling: mean}", "pooling: pooling must be one of 'avg', 'max', 'none', got 'mean'"),
        ("{learning_rate: 0.0}", "learning_rate: learning_rate must be a number > 0, got 0.0"),
    ):
        recipe.write_text(
            "name: probe\n"
            "data: {source: 'sklearn:digits'}\n"
            "base: {pretrain: {data: {source: 'sklearn:digits'}}}\n"
            f"strategies: {{linear_probe: {{space: {space}}}}}\n"
        )
        result = CliRunner().invoke(app, ["validate", str(recipe)])
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1  # this problem, alone
        assert f"recipe.yaml:4: strategies.linear_probe.space.{said}" in result.output


def test_only_the_softmax_layer_trains_on_standardised_features(graftune_digits, graftune_base):
    import keras

    data = graftune_digits
    config = {"pooling": "max", "lambda": 1e-4, "learning_rate": 1e-2}
    model = LinearProbe().build(config, data.task, load_base(graftune_base))
    trainable = [w.path for w in model.trainable_weights]
    assert trainable == ["probe_output/kernel", "probe_output/bias"]

    fit_data = FitData(data.x_train, data.y_train, data.x_val, data.y_val, batch_size=64)
    model = LinearProbe().fit(model, config, fit_data, epochs=1, callbacks=[])
    standardize = model.get_layer(STANDARDIZE)
    features = keras.Model(model.inputs, standardize.input).predict(data.x_train, verbose=0)
    standardized = standardize(features).numpy()
    np.testing.assert_allclose(standardized.mean(axis=0), 0.0, atol=1e-3)


def test_a_run_beside_a_builtin_on_blobs(graftune_register, graftune_run):
    # Registered for this test only: the tests do not rely on the package's entry points.
    graftune_register(graftune_linear_probe.linear_probe)
    host = graftune_register(graftune_linear_probe.blobs)
    board = graftune_run(
        {
            "name": "probe-vs-mlp",
            "seed": 1,
            "data": {"source": "blobs:3x8", "options": {"per_class": 40}},
            "base": {
                "pretrain": {
                    "data": {"source": "blobs:3x8", "options": {"per_class": 40, "seed": 7}},
                    "epochs": 2,
                    "width": 8,
                }
            },
            "strategies": {"linear_probe": {"num_samples": 2}, "scratch_mlp": {"num_samples": 1}},
            "search": {"max_epochs": 2, "batch_size": 32},
        },
        host=host,
    )
    assert sorted(board["strategy"]) == ["linear_probe", "linear_probe", "scratch_mlp"]
    assert (board["status"] == "ok").all(), board[["strategy", "status", "error"]]
    assert board["val_accuracy"].between(0, 1).all()
    # The pretrained base's output is a vector: nothing to pool, so no pooling is
    # searched (found by QA: avg and max trained the same model twice).
    assert set(board.loc[board["strategy"] == "linear_probe", "pooling"]) == {"none"}
