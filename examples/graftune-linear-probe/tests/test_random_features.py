"""The random_features base provider: conformance, its options, and linear_probe on it."""

from __future__ import annotations

import graftune_linear_probe.blobs
import graftune_linear_probe.linear_probe
import graftune_linear_probe.random_features
import pytest
from graftune_linear_probe.random_features import RandomFeatures
from typer.testing import CliRunner

from orchestrator.errors import BaseModelError
from orchestrator.recipe import BaseSpec
from orchestrator.testing import check_base_provider


def test_random_features_passes_the_conformance_check():
    # The kit's tiny digits are 8x8 images: flattened, 64 features.
    check_base_provider(RandomFeatures, options={"inputs": 64, "width": 16, "depth": 2})


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({}, "inputs must be an integer >= 1 (how many features an example has); got None"),
        ({"inputs": 8, "widht": 4}, "unknown option(s) widht"),
        ({"inputs": 8, "depth": 0}, "depth must be an integer >= 1"),
        ({"inputs": 8, "width": True}, "width must be an integer >= 1"),
    ],
)
def test_bad_options_name_the_key(options, words):
    spec = BaseSpec(provider="random_features", options=options)
    with pytest.raises(BaseModelError) as info:
        RandomFeatures().check(spec)
    assert words in str(info.value)
    assert info.value.key == "options"


def test_graftune_validate_says_where(graftune_register, tmp_path):
    from orchestrator.cli import app

    graftune_register(graftune_linear_probe.random_features)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: random\n"
        "data: {source: 'sklearn:iris'}\n"
        "base: {provider: random_features, options: {inputs: 4, depth: 0}}\n"
        "strategies: {feature_extraction: {}}\n"
    )
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    assert "base.options" in result.output and "depth must be" in result.output


def test_linear_probe_on_random_features_of_blobs(graftune_register, graftune_run):
    graftune_register(graftune_linear_probe.linear_probe)
    graftune_register(graftune_linear_probe.blobs)
    host = graftune_register(graftune_linear_probe.random_features)
    board = graftune_run(
        {
            "name": "no-transfer-baseline",
            "seed": 3,
            "data": {"source": "blobs:3x8", "options": {"per_class": 40}},
            "base": {"provider": "random_features", "options": {"inputs": 8, "width": 32}},
            "strategies": {"linear_probe": {"num_samples": 1}},
            "search": {"max_epochs": 2, "batch_size": 32},
        },
        host=host,
    )
    assert (board["status"] == "ok").all(), board[["strategy", "status", "error"]]
    # The whole random base stays frozen: only the softmax layer (32 x 3 + 3) trains.
    assert board["params_trainable"].tolist() == [32 * 3 + 3]
