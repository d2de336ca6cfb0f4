"""Shared fixtures: one local Ray per session (per pytest-xdist worker), a private
cache, quiet TensorFlow.

Also two real runs that several test modules read (each run costs tens of
seconds, mostly TensorFlow imported by the fresh workers of each strategy's
Tune experiment): they are made once per session. Tests copy a run's folder
before they change anything in it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

# graftune's testing kit for plugin authors (its fixtures are all named graftune_*),
# and pytest's own, to run the kit in an inner pytest session.
pytest_plugins = ["orchestrator.testing", "pytester"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Ray renices its workers to 15, where every trial runs; the rest of the suite (this
# worker's driver, the other pytest-xdist worker's in-process keras_tuner searches and
# TensorFlow tests, the CLI's drivers) runs at 0. On 2 CPUs a worker then got ~3% of
# a CPU while the other worker trained in process: a search's first trial did not
# start within time_budget_s: 60 (QA). Trials here compete as the rest of the suite does.
os.environ.setdefault("RAY_worker_niceness", "0")
# The tests that run on Keras' JAX backend (tests/test_accelerator.py, tests/test_cluster.py)
# spend most of their time in XLA compiling each step function for the CPU: without its
# backend optimisations it compiles them in about half the time, and runs tiny models
# as well (what they check is that a run works on JAX, not how fast it trains).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
# Tests never read plugins from entry points they did not ask for.
os.environ.pop("GRAFTUNE_DISABLE_PLUGIN_AUTOLOAD", None)


#: Test files that read the session's e2e run (:func:`e2e_run`, a minute to make):
#: kept on one pytest-xdist worker, so that it is made once, not once per worker.
E2E_READERS = ("test_predict_export.py", "test_report.py", "test_run.py")
#: The unit of work they make together.
E2E_UNIT = "e2e-run"


#: Seconds the slowest test files take on a 2-CPU machine (the E2E_READERS together),
#: from a CI run's junit report (stop 57, 786 s in all): the workers take them first,
#: heaviest first, and the many small files last, so that neither worker is left with
#: a long file to run alone at the end (pytest-xdist queues files by their number of
#: tests: test_cluster's 32 tests, 221 s, went late, after test_space's 150 in 1 s).
#: Files not named here follow in pytest-xdist's order; rough numbers do. (Stop 59
#: queued them by stop 58's times, test_cluster before the e2e run: a replay of the
#: queue on those times had the workers end together, but CI took 998 s against
#: 876-926 s on the same work, so this order stays.)
SLOWEST_FILES = {
    "test_resume.py": 345,
    "test_search.py": 295,
    E2E_UNIT: 180,
    "test_cluster.py": 145,
    "test_ray_start.py": 85,
    "test_transfer.py": 85,
    "test_bases.py": 60,
    "test_testing_kit.py": 60,
    "test_controls.py": 55,
    "test_accelerator.py": 50,
}


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """pytest-xdist's ``--dist loadfile`` (pyproject.toml), with the files of
    :data:`E2E_READERS` one unit (its ``loadgroup`` cannot group them: it marks a
    test's group in ``item._nodeid``, which pytest 9 no longer reads), and the files
    of :data:`SLOWEST_FILES` queued first."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return E2E_UNIT if Path(scope).name in E2E_READERS else scope

        def _assign_work_unit(self, node) -> None:
            # The heaviest file waiting goes next; the first of equals, as queued.
            heaviest = max(self.workqueue, key=lambda unit: SLOWEST_FILES.get(Path(unit).name, 0))
            self.workqueue.move_to_end(heaviest, last=False)
            super()._assign_work_unit(node)

    return Scheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def graftune_cache(tmp_path_factory: pytest.TempPathFactory):
    """Every test session gets its own graftune cache (pretrained bases ...)."""
    path = tmp_path_factory.mktemp("graftune-cache")
    old = os.environ.get("GRAFTUNE_CACHE_DIR")
    os.environ["GRAFTUNE_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("GRAFTUNE_CACHE_DIR", None)
    else:
        os.environ["GRAFTUNE_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def ray_session():
    """Real local Ray, started once for the whole session (runs reuse it)."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    yield ray
    ray.shutdown()


@pytest.fixture
def by_value(ray_session):
    """Ray's workers get tests/fixture_plugins.py by value (it is not installed)."""
    import ray.cloudpickle

    from tests import fixture_plugins

    ray.cloudpickle.register_pickle_by_value(fixture_plugins)
    yield
    ray.cloudpickle.unregister_pickle_by_value(fixture_plugins)


#: Five strategies, two of them failing (see tests/fixture_plugins.py), on a
#: base pretrained by the recipe. ``fine_tune`` freezes at least one block, so
#: its trials train on cached features (tests/test_predict_export.py needs one).
E2E_RECIPE = """
name: tiny-e2e
seed: 3
data:
  source: sklearn:digits
  split: {val: 0.2, test: 0.2}
base:
  pretrain:
    data: {source: sklearn:digits, classes: [0, 1, 2, 3, 4]}
    epochs: 2
    width: 4
strategies:
  scratch_mlp:
    space: {hidden_layers: 1, width: {choice: [16, 32]}, learning_rate: {loguniform: [3.0e-3, 1.0e-2]}}
  feature_extraction:
    space: {head_depth: 1, head_width: 32}
  fine_tune:
    space: {frozen_layers: {int: [1, all]}, head_width: 32}
  exploding_mlp: {num_samples: 1, space: {learning_rate: 1.0e+30}}
  raising: {num_samples: 1}
search:
  metric: val_accuracy
  num_samples: 2
  max_epochs: 2
  scheduler: fifo
  batch_size: 64
  space:
    learning_rate: {loguniform: [1.0e-3, 1.0e-2]}
resources: {cpus_per_trial: 1}
output: out/
"""

#: A CSV table run through the CLI (data found next to the recipe); its two trials one
#: after the other, on one worker: a second would cost its own TensorFlow import, in
#: each test worker that makes this run (the e2e run shows two trials at once).
WINE_RECIPE = """
name: cli-run
data: {source: "csv:wine.csv", target: cultivar}
strategies: {scratch_mlp: {}}
search: {num_samples: 2, max_epochs: 2, max_concurrent_trials: 1}
output: runs/
"""
WINE_CSV = Path(__file__).parents[1] / "recipes" / "data" / "wine.csv"


@pytest.fixture(scope="session")
def e2e_run(ray_session, tmp_path_factory):
    """One real run of :data:`E2E_RECIPE` through the API, with the fixture plugins.

    Returns:
        The run's outcome, and what the fixture plugins' observers saw during it.
    """
    import ray.cloudpickle

    from orchestrator import run_recipe
    from tests import fixture_plugins

    ray.cloudpickle.register_pickle_by_value(fixture_plugins)
    folder = tmp_path_factory.mktemp("e2e")
    recipe = folder / "recipe.yaml"
    recipe.write_text(E2E_RECIPE)
    fixture_plugins.SEEN["trials"].clear()
    fixture_plugins.SEEN["runs"].clear()
    # A caller's global state, which the run must neither take up nor leave changed
    # (tests/test_run.py::test_the_run_leaves_its_callers_keras_and_random_state_alone).
    import random

    import keras
    import numpy as np
    import tensorflow as tf

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    random.seed(11)
    np.random.seed(11)
    tf.random.set_seed(11)
    float(tf.random.uniform(()))
    before = (random.getstate(), np.random.get_state()[1].copy())
    from tensorflow.python.framework import ops

    gradients = set(ops._gradient_registry._registry)
    try:
        outcome = run_recipe(
            recipe, plugins=[fixture_plugins, fixture_plugins.BrokenObserver()], echo=print
        )
        drawn = float(tf.random.uniform(()))
        tf.random.set_seed(11)  # what the second draw after that seed is, run or no run
        float(tf.random.uniform(()))
        after = SimpleNamespace(
            policy=keras.config.dtype_policy().name,
            python_random=random.getstate() == before[0],
            numpy_random=bool((np.random.get_state()[1] == before[1]).all()),
            tensorflow_random=drawn == float(tf.random.uniform(())),
            # The custom gradients that training the base registered here (each held
            # its model for good: orchestrator.models.forget_traced_gradients).
            gradients_added=len(set(ops._gradient_registry._registry) - gradients),
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    seen = {key: list(value) for key, value in fixture_plugins.SEEN.items()}
    return SimpleNamespace(outcome=outcome, seen=seen, caller_after=after)


@pytest.fixture(scope="session")
def wine_run(ray_session, tmp_path_factory):
    """One real run of :data:`WINE_RECIPE` through ``graftune run --quiet``.

    Returns:
        The recipe's folder, the run's folder and what the command printed.
    """
    from typer.testing import CliRunner

    from orchestrator.cli import app

    folder = tmp_path_factory.mktemp("wine")
    recipe = folder / "mlp.yaml"
    recipe.write_text(WINE_RECIPE)
    shutil.copyfile(WINE_CSV, folder / "wine.csv")
    result = CliRunner().invoke(app, ["run", str(recipe), "--quiet"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (folder / "runs").iterdir()
    return SimpleNamespace(folder=folder, run_dir=run_dir, output=result.output)
