"""The blobs: data source: what it generates, what it refuses, and graftune validate."""

from __future__ import annotations

import graftune_linear_probe.blobs
import numpy as np
import pytest
from graftune_linear_probe.blobs import BlobsSource
from typer.testing import CliRunner

from orchestrator.errors import DataError
from orchestrator.recipe import DataSpec


def load(source: str, **options):
    spec = DataSpec(source=source, options=options)
    _, location = source.split(":", 1)
    return BlobsSource().load(location, spec, base_dir=None)


def test_shapes_labels_and_names():
    data = load("blobs:4x16", per_class=10)
    assert data.x.shape == (40, 16)
    assert data.x.dtype == np.float32
    assert np.bincount(data.y).tolist() == [10, 10, 10, 10]
    assert data.class_names == ("blob0", "blob1", "blob2", "blob3")


def test_the_seed_option_decides_the_data():
    same = load("blobs:3x5", seed=3), load("blobs:3x5", seed=3)
    other = load("blobs:3x5", seed=4)
    np.testing.assert_array_equal(same[0].x, same[1].x)
    assert not np.allclose(same[0].x, other.x)


@pytest.mark.parametrize(
    ("source", "options", "key", "words"),
    [
        ("blobs:four", {}, "source", "CLASSESxFEATURES"),
        ("blobs:1x3", {}, "source", "at least 2 classes"),
        ("blobs:3x3", {"per_klass": 5}, "options", "per_klass"),
        ("blobs:3x3", {"spread": -1}, "options", "spread"),
    ],
)
def test_bad_settings_name_the_key(source, options, key, words):
    with pytest.raises(DataError, match=words) as info:
        load(source, **options)
    assert info.value.key == key


def test_graftune_validate_finds_the_source(graftune_register, tmp_path):
    from orchestrator.cli import app

    graftune_register(graftune_linear_probe.blobs)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: blobs\n"
        "data: {source: 'blobs:3x4', options: {per_klass: 5}}\n"
        "strategies: {scratch_mlp: {}}\n"
    )
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    assert "data.options" in result.output
    assert "per_klass" in result.output
