"""The example plugin package, installed as a user would, run beside the built-ins.

``.ci/run`` installs ``examples/graftune-linear-probe`` (editable); when it is
missing, the session fixture below installs it (``--no-deps``, no build
isolation: offline), so ``pytest`` alone still tests it.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

EXAMPLE = Path(__file__).parents[1] / "examples" / "graftune-linear-probe"
DISTRIBUTION = "graftune-linear-probe"


@pytest.fixture(scope="session")
def example_installed(tmp_path_factory: pytest.TempPathFactory) -> metadata.Distribution:
    """The example distribution, installed into this environment if it is not yet."""
    try:
        return metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    # Built from a copy: a build in place would leave build/ and *.egg-info in the example.
    source = tmp_path_factory.mktemp("example") / EXAMPLE.name
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    importlib.invalidate_caches()
    return metadata.distribution(DISTRIBUTION)


def test_it_is_discovered_with_its_distribution(example_installed):
    from orchestrator.cli import app
    from orchestrator.plugin_manager import get_plugin_manager

    host = get_plugin_manager()
    version = example_installed.version
    assert host.strategies.owner("linear_probe") == f"linear_probe ({DISTRIBUTION} {version})"
    assert host.data_sources.owner("blobs") == f"blobs ({DISTRIBUTION} {version})"
    owner = f"random_features ({DISTRIBUTION} {version})"
    assert host.bases.owner("random_features") == owner
    hooks = {i.plugin_name for i in host.pm.hook.graftune_trial_finished.get_hookimpls()}
    assert "search_trace" in hooks
    result = CliRunner().invoke(app, ["plugins"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.split()[:1] == ["linear_probe"])
    assert row.split()[1:4] == [DISTRIBUTION, version, "strategy"]


RECIPE = """
name: example-plugin
seed: 0
data:
  source: "blobs:3x8"
  options: {per_class: 50}
base:
  pretrain:
    data: {source: "blobs:3x8", options: {per_class: 50, seed: 11}}
    epochs: 2
    width: 8
strategies:
  linear_probe: {num_samples: 2}
  feature_extraction: {num_samples: 1, space: {head_depth: 1, head_width: 16}}
search: {max_epochs: 2, batch_size: 32, max_concurrent_trials: 1}
resources: {cpus_per_trial: 1}
output: runs/
"""


@pytest.mark.slow
def test_a_recipe_runs_it_beside_the_builtins_through_ray(example_installed, ray_session, tmp_path):
    import pandas as pd

    from orchestrator import run_recipe
    from orchestrator.reporters import read_events

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent(RECIPE))
    outcome = run_recipe(recipe, echo=print)
    board = outcome.leaderboard
    assert sorted(board["strategy"]) == ["feature_extraction", "linear_probe", "linear_probe"]
    assert (board["status"] == "ok").all(), board[["strategy", "status", "error"]]
    probes = board[board["strategy"] == "linear_probe"]
    assert set(probes["pooling"]) == {"none"}  # the pretrained base's output is a vector
    assert probes["val_accuracy"].between(0, 1).all()
    # The trials ran in Ray workers, which imported the installed plugin themselves
    # (one trial at a time: the second on the first's worker, spared a TensorFlow import).
    for trial_id in probes["trial_id"]:
        assert (outcome.run_dir / "trials" / "linear_probe" / trial_id / "model.keras").is_file()
    # The event log of the run saw every trial, in the driver.
    events = read_events(outcome.run_dir)
    assert events[0]["event"] == "run_started"
    assert events[0]["data"] == "blobs:3x8"
    assert events[-1]["event"] == "run_finished"
    logged = {e["trial_id"] for e in events if e["event"] == "trial_finished"}
    assert logged == set(board["trial_id"])
    # Its reporter too: a row per trial, in the order they ended.
    trace = pd.read_csv(outcome.run_dir / "search_trace.csv")
    assert trace["order"].tolist() == [1, 2, 3]
    assert set(trace["trial_id"]) == set(board["trial_id"])
    assert trace["best_so_far"].iloc[-1] == board["val_accuracy"].max()


@pytest.mark.slow
def test_its_own_test_suite_passes(example_installed, tmp_path):
    env = dict(os.environ)
    env.pop("GRAFTUNE_DISABLE_PLUGIN_AUTOLOAD", None)
    # The pytest script, not `python -m pytest`, as for graftune's own tests.
    pytest_script = Path(sys.executable).with_name("pytest")
    done = subprocess.run(
        [str(pytest_script), "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
