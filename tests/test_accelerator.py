"""Keras' backends: what a trial asks of each, and a whole run on JAX.

graftune trains on TensorFlow by default; ``KERAS_BACKEND=jax`` (or ``torch``)
runs the same recipes where only that backend has a GPU build (see
``benchmarks/results/gpu_packing.md``, measured that way).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import types

import numpy as np
import pandas as pd
import pytest

from orchestrator import accelerator


@pytest.fixture
def no_keras(monkeypatch, tmp_path):
    """As in a process that has not imported Keras yet, with an empty Keras home."""
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    return tmp_path / "keras-home"


def test_the_backend_is_chosen_as_keras_chooses_it(no_keras, monkeypatch):
    assert accelerator.backend() == "tensorflow"
    no_keras.mkdir()
    (no_keras / "keras.json").write_text(json.dumps({"backend": "torch"}))
    assert accelerator.backend() == "torch"
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert accelerator.backend() == "jax"
    (no_keras / "keras.json").write_text("{not json")
    monkeypatch.delenv("KERAS_BACKEND")
    assert accelerator.backend() == "tensorflow"
    # Set but empty, as `export KERAS_BACKEND=` leaves it: Keras ignores it, and so
    # does graftune (found by mutation testing: '' was taken as the backend).
    (no_keras / "keras.json").unlink()
    monkeypatch.setenv("KERAS_BACKEND", "")
    assert accelerator.backend() == "tensorflow"
    assert accelerator.chosen_backend() is None


def test_a_backend_that_cannot_do_the_job_is_named_with_the_fix(no_keras, monkeypatch):
    """Found by QA: any importable module name passed (``yaml``: an internal error
    after the data was prepared), ``numpy`` ran a whole search of failing trials,
    ``TensorFlow`` was "not installed", and the backends "you have" were a fixed
    list, torch among them where it was not installed."""
    from orchestrator.errors import BackendMissing

    def refused(name: str, training: bool = True) -> str:
        monkeypatch.setenv("KERAS_BACKEND", name)
        with pytest.raises(BackendMissing) as caught:
            accelerator.check_backend(training=training)
        return str(caught.value)

    assert refused("yaml") == (
        "Keras' backend 'yaml' (KERAS_BACKEND) is not a Keras backend: "
        "choose one of tensorflow, jax, torch"
    )
    assert refused("TensorFlow").endswith("backend names are lower case: tensorflow")
    monkeypatch.setattr(accelerator, "_installed", lambda module: module in ("jax", "numpy"))
    assert refused("numpy") == (
        "Keras' backend is numpy (KERAS_BACKEND), which cannot train models: "
        "set KERAS_BACKEND to a backend you have (jax)"
    )
    accelerator.check_backend(training=False)  # numpy predicts
    assert refused("torch") == (
        "Keras' backend is torch (KERAS_BACKEND), and torch is not installed here: "
        "pip install torch, or set KERAS_BACKEND to a backend you have (jax)"
    )
    monkeypatch.setattr(accelerator, "_installed", lambda module: False)
    assert refused("torch").endswith("set KERAS_BACKEND to tensorflow after pip install tensorflow")
    # Chosen in keras.json: the message names the file.
    monkeypatch.delenv("KERAS_BACKEND")
    no_keras.mkdir()
    (no_keras / "keras.json").write_text(json.dumps({"backend": "jax"}))
    with pytest.raises(BackendMissing, match=re.escape(f"jax ({no_keras / 'keras.json'})")):
        accelerator.check_backend()


def test_trials_use_the_backend_chosen_where_the_run_started(no_keras, monkeypatch):
    """Found by QA: a cluster's trials ran on TensorFlow while the driver was on JAX
    (``KERAS_BACKEND`` is not sent to other nodes), and nothing said so."""
    from orchestrator.errors import BackendMissing

    assert accelerator.chosen_backend() is None  # Keras' default: the nodes choose
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert accelerator.chosen_backend() == ("jax", "KERAS_BACKEND")
    monkeypatch.delenv("KERAS_BACKEND")
    no_keras.mkdir()
    (no_keras / "keras.json").write_text(json.dumps({"backend": "jax"}))
    chosen = accelerator.chosen_backend()
    assert chosen == ("jax", str(no_keras / "keras.json"))

    # In a worker that has not imported Keras, with neither of the driver's choices.
    (no_keras / "keras.json").unlink()
    accelerator.use_backend(None)
    assert "KERAS_BACKEND" not in os.environ
    monkeypatch.setenv("KERAS_BACKEND", "")  # (taken back after the test, as unset)
    accelerator.use_backend(chosen)
    assert os.environ["KERAS_BACKEND"] == "jax" and accelerator.backend() == "jax"
    monkeypatch.setattr(accelerator, "_installed", lambda module: False)
    with pytest.raises(BackendMissing, match=r"jax is not installed on .*: pip install jax on"):
        accelerator.use_backend(("jax", "KERAS_BACKEND"))
    # A process with Keras imported already (keras_tuner's, the driver's) on TensorFlow.
    on_tensorflow = types.SimpleNamespace(
        backend=types.SimpleNamespace(backend=lambda: "tensorflow")
    )
    monkeypatch.setitem(sys.modules, "keras", on_tensorflow)
    with pytest.raises(BackendMissing, match="has Keras on tensorflow already"):
        accelerator.use_backend(("jax", "KERAS_BACKEND"))
    accelerator.use_backend(("tensorflow", "KERAS_BACKEND"))


def test_an_imported_keras_decides(monkeypatch):
    import keras

    assert accelerator.backend() == keras.backend.backend() == "tensorflow"
    # Once imported, what Keras trains on wins over a KERAS_BACKEND set since (found
    # by mutation testing: only the case where both agree was tested).
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert accelerator.backend() == "tensorflow"


def test_jax_takes_gpu_memory_as_needed_unless_the_user_said_otherwise(no_keras, monkeypatch):
    """JAX takes three quarters of every GPU at its first operation: trials
    sharing a GPU (gpus_per_trial 0.5) would fail without this."""
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    accelerator.configure_trial(1, 0)
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in os.environ  # no GPU asked for
    accelerator.configure_trial(1, 0.5)
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "true")
    accelerator.share_gpu_memory()
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"


def test_no_gpu_is_counted_on_this_machine():
    assert accelerator.gpu_count() == 0


RECIPE = """
name: on-jax
seed: 0
data: {source: "sklearn:digits", image_size: [16, 16]}
base:
  pretrain: {data: {source: "glyphs:digits", image_size: [16, 16], labels_per_class: 30}, epochs: 1}
strategies:
  fine_tune: {space: {frozen_layers: 2, two_phase: true, regularizer: l2sp}}
  scratch_mlp: {}
search: {backend: keras_tuner, num_samples: 1, max_epochs: 2, batch_size: 64}
output: OUT
"""


@pytest.mark.slow
def test_a_run_trains_saves_and_predicts_on_the_jax_backend(tmp_path):
    """A whole run in a process whose Keras runs on JAX and that cannot import
    TensorFlow: transfer on cached features with L2-SP and two phases, the
    saved whole model, and ``predict``."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent(RECIPE).replace("OUT", str(tmp_path / "runs")))
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "GRAFTUNE_CACHE_DIR": str(tmp_path / "cache"),
    }
    # As on a machine without TensorFlow (the GPU machine the packing benchmark ran on).
    no_tensorflow = (
        "import sys\n"
        "class NoTensorFlow:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'tensorflow':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoTensorFlow())\n"
    )
    graftune = [sys.executable, "-c", no_tensorflow + "from orchestrator.cli import main; main()"]
    done = subprocess.run(
        [*graftune, "run", "--quiet", str(recipe)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    results = [json.loads(p.read_text()) for p in run_dir.glob("trials/*/*/result.json")]
    assert {r["strategy"] for r in results} == {"fine_tune", "scratch_mlp"}
    for result in results:
        assert result["status"] == "ok", result.get("error")
        assert result["backend"] == "jax"
        assert np.isfinite(result["val_loss"])
    # Keras writes TensorBoard events with TensorFlow: none, and none offered.
    assert not list(run_dir.glob("trials/*/*/tensorboard"))
    assert "tensorboard" not in done.stdout
    assert "tensorboard --logdir" not in (run_dir / "report.html").read_text()
    (tuned,) = [r for r in results if r["strategy"] == "fine_tune"]
    (scratch,) = [r for r in results if r["strategy"] == "scratch_mlp"]
    assert scratch["val_accuracy"] > 0.5  # 10 classes: it learned
    assert tuned["cached_cut"] == 2
    # The whole model (frozen prefix + what trained on cached features) predicts,
    # on JAX, what the trial computed for its test split.
    from orchestrator.data import prepare_dataset
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.recipe import load_recipe

    ran = load_recipe(run_dir / "recipe.yaml")
    data = prepare_dataset(
        ran.data, get_plugin_manager().data_sources, seed=ran.seed, base_dir=run_dir
    )
    split = tmp_path / "test.npz"
    np.savez(split, x=data.x_test, y=data.y_test, class_names=np.array(data.task.class_names))
    out = tmp_path / "predictions.csv"
    done = subprocess.run(
        [*graftune, "predict", str(run_dir), "--data", f"npz:{split}", "--out", str(out),
         "--trial", f"fine_tune/{tuned['trial_id']}"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    frame = pd.read_csv(out)
    predicted = frame[[f"prob_{n}" for n in data.task.class_names]].to_numpy()
    expected = np.load(
        run_dir / "trials" / "fine_tune" / tuned["trial_id"] / "test_probabilities.npy"
    )
    np.testing.assert_allclose(predicted, expected, rtol=1e-4, atol=1e-5)
    # Export: the .keras file needs nothing more; a SavedModel needs TensorFlow.
    done = subprocess.run(
        [*graftune, "export", str(run_dir), str(tmp_path / "saved"), "--format", "savedmodel"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0
    assert "needs TensorFlow" in done.stdout + done.stderr
    assert not (tmp_path / "saved").exists()
    done = subprocess.run(
        [*graftune, "export", str(run_dir), str(tmp_path / "kept"), "--format", "keras"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "kept" / "model.keras").is_file()


def test_a_backend_that_is_not_installed_is_refused_before_anything_is_written(tmp_path):
    """Without TensorFlow and without KERAS_BACKEND, every command failed with
    "internal error: ModuleNotFoundError" (a run after writing its folder)."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: r\ndata: {source: 'sklearn:iris'}\nstrategies: {scratch_mlp: {}}\n"
        f"output: {tmp_path / 'runs'}\n"
    )
    if accelerator._installed("torch"):
        pytest.skip("needs a Keras backend that is not installed here (torch is)")
    env = {**os.environ, "KERAS_BACKEND": "torch"}  # a backend Keras knows; not installed
    graftune = [sys.executable, "-c", "from orchestrator.cli import main; main()"]
    done = subprocess.run(
        [*graftune, "run", str(recipe)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert (
        "error: Keras' backend is torch (KERAS_BACKEND), and torch is not installed here: "
        "pip install torch, or set KERAS_BACKEND to a backend you have (tensorflow or jax)"
    ) in done.stderr
    assert not (tmp_path / "runs").exists()
    done = subprocess.run(
        [*graftune, "validate", str(recipe)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "note: Keras' backend is torch" in done.stdout
    assert "`graftune run` here would refuse it" in done.stdout


def test_the_keras_tuner_backend_without_keras_tuner_is_refused(monkeypatch):
    """It passed validate, wrote the run's folder and failed with an internal error."""
    import importlib.util

    from orchestrator.errors import RecipeError
    from orchestrator.recipe import as_recipe
    from orchestrator.tuning.keras_tuner import check_resources

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "keras_tuner" else real(name, *a),
    )
    recipe = as_recipe(
        {"name": "r", "data": {"source": "sklearn:iris"}, "strategies": {"scratch_mlp": {}},
         "search": {"backend": "keras_tuner"}}
    )  # fmt: skip
    with pytest.raises(
        RecipeError, match=r"search\.backend: keras_tuner, but keras-tuner is not installed"
    ):
        check_resources(recipe, print)


FORKS_UNDER_JAX = """
import os, warnings
import jax.numpy as jnp
from orchestrator.tuning.ray_start import kept_process_state

jnp.ones(4).sum().block_until_ready()  # JAX runs its threads now
before = list(warnings.filters)
with kept_process_state():
    # As Ray starts its processes (Python 3.12's subprocess runs the fork hooks too).
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
print("filters kept:", list(warnings.filters) == before)
"""


def test_jax_s_fork_warning_is_not_printed_while_ray_starts():
    """It printed three times over the console when a run built a base on JAX
    while embedded Ray started its processes (fork, then exec: safe)."""
    done = subprocess.run(
        [sys.executable, "-c", FORKS_UNDER_JAX],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "os.fork() was called" not in done.stderr
    assert done.stdout.strip() == "filters kept: True"


@pytest.mark.parametrize(("given", "enabled"), [(None, "True"), ("0", "False")])
def test_graftune_turns_tensorflows_onednn_kernels_on_unless_told_not_to(given, enabled):
    """On an AVX2 CPU TensorFlow leaves them off, and training a ResNet's last stage
    (fine_tune) ran 5.1x slower: graftune turns them on before TensorFlow is imported."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if given is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = given
    code = (
        "import orchestrator, tensorflow\n"
        "from tensorflow.python.util import _pywrap_util_port as port\n"
        "print(port.IsMklEnabled())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == enabled
