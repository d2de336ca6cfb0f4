"""Tiny builders shared by the tests of bases and strategies: digits, a small CNN base."""

from __future__ import annotations

import contextlib
import functools
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestrator.bases import BaseInfo, LoadedBase, load_base, prepare_base
from orchestrator.data import Dataset, prepare_dataset
from orchestrator.plugin_manager import PluginHost, get_plugin_manager
from orchestrator.recipe import BaseSpec, DataSpec

if TYPE_CHECKING:
    import keras


@functools.cache
def host() -> PluginHost:
    """The host's own plugins only: the built-in data sources and base providers."""
    return get_plugin_manager(autoload=False)


@functools.cache
def digits(classes: tuple[int, ...] | None = None) -> Dataset:
    """scikit-learn's 8x8 digits, split with seed 0 (arrays are read-only, so shared)."""
    spec = DataSpec(source="sklearn:digits", classes=list(classes) if classes else None)
    return prepare_dataset(spec, host().data_sources, seed=0, base_dir=Path.cwd())


def tiny_cnn(input_shape: tuple[int, ...] = (8, 8, 1)) -> keras.Model:
    """Three conv -> BatchNormalization -> ReLU blocks, with pretrained-looking statistics."""
    import keras

    inputs = keras.Input(input_shape, name="base_input")
    x = inputs
    for i, (filters, strides) in enumerate(((4, 1), (8, 2), (8, 1)), start=1):
        x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    model = keras.Model(inputs, x, name="tiny_base")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0.0, 0.5, size).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size).astype("float32"))
    return model


def prepare_path_base(model: keras.Model, folder: Path, dataset: Dataset) -> BaseInfo:
    """Save ``model`` to ``folder/base.keras`` and prepare it as a ``path:`` base."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "base.keras"
    model.save(path)
    return prepare_base(
        BaseSpec(path=path),
        host().bases,
        dataset.task,
        seed=0,
        base_dir=folder,
        data_sources=host().data_sources,
    )


def loaded_tiny_base(folder: Path, dataset: Dataset) -> LoadedBase:
    """A freshly loaded :func:`tiny_cnn` base for the digits, as a trial gets it."""
    return load_base(prepare_path_base(tiny_cnn(dataset.task.input_shape), folder, dataset))


def snapshot(model: keras.Model) -> dict[str, np.ndarray]:
    """A copy of every weight (trainable or not) by its path, like ``conv1/kernel``."""
    return {variable.path: np.array(variable.numpy()) for variable in model.weights}


def changed(before: dict[str, np.ndarray], model: keras.Model) -> set[str]:
    """The paths of the weights whose values differ from ``before``."""
    after = snapshot(model)
    assert after.keys() == before.keys()
    return {path for path in before if not np.array_equal(before[path], after[path])}


def fit(model: keras.Model, dataset: Dataset, epochs: int = 2) -> Any:
    """A short, quiet fit on the training split."""
    return model.fit(
        dataset.x_train, dataset.y_train, epochs=epochs, batch_size=64, shuffle=True, verbose=0
    )


def assert_reloads(model: keras.Model, path: Path, x: np.ndarray) -> None:
    """Save, reload with ``safe_mode=True`` (no graftune code needed) and predict the same."""
    import keras

    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A real file system of ``size`` (``1m``) mounted on ``folder``, made if need be.

    A tmpfs; mounting one needs root, as here and in CI (skips the test elsewhere).
    """
    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def file_size_limit(kilobytes: int) -> Callable[[], None]:
    """A ``preexec_fn`` that sets the process's file-size limit, as ``ulimit -f`` does
    (Python ignores SIGXFSZ: a write past it fails with EFBIG, "File too large")."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (kilobytes * 1024, kilobytes * 1024))

    return limit


@contextlib.contextmanager
def file_size_limited(kilobytes: int) -> Iterator[None]:
    """This process's file-size limit set meanwhile, as ``ulimit -f`` sets it (its
    soft limit alone, so it can be put back): a run in it meets EFBIG as a
    ``graftune run`` under the limit does, without a process (and TensorFlow
    import) of its own. Python ignores SIGXFSZ, or the limit would kill pytest."""
    import resource
    import signal

    assert signal.getsignal(signal.SIGXFSZ) is signal.SIG_IGN
    before = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (kilobytes * 1024, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, before)
