"""Embedded Ray starts in the background while the driver prepares the run.

Each test runs ``graftune run`` in a process of its own, with Ray's files in
a fresh folder (``RAY_TMPDIR``), so that the Ray it starts can be told apart
from the test session's and looked for after the command has ended.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

GRAFTUNE = str(Path(sys.executable).with_name("graftune"))

UNCOMPILED_PLUGIN = """
from orchestrator import hookimpl
from orchestrator.builtin_plugins.scratch_mlp import ScratchMLP


class UncompiledMLP(ScratchMLP):
    name = "uncompiled_mlp"

    def build(self, config, task, base):
        import keras

        inputs = keras.Input(task.input_shape)
        x = keras.layers.Flatten()(inputs)
        return keras.Model(inputs, keras.layers.Dense(task.n_classes, activation="softmax")(x))


@hookimpl
def graftune_register_strategies(registry):
    registry.add(UncompiledMLP)
"""


@pytest.fixture
def ray_tmpdir():
    # Short: Ray's socket paths under it must stay within the OS limit.
    folder = Path(tempfile.mkdtemp(prefix="gt-ray-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def graftune(folder: Path, ray_tmpdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_TMPDIR=str(ray_tmpdir))
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [GRAFTUNE, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )


def processes_under(folder: Path, wait_s: float = 10.0) -> list[str]:
    """Command lines of live processes that name ``folder`` (Ray's, started there)."""
    import psutil

    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for process in psutil.process_iter(["cmdline"]):
            command = " ".join(process.info.get("cmdline") or [])
            if str(folder) in command:
                found.append(command)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def write_recipe(folder: Path, strategies: str) -> Path:
    recipe = folder / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            f"""
            name: background
            data: {{source: "sklearn:iris"}}
            strategies: {strategies}
            search: {{max_epochs: 1}}
            resources: {{num_cpus: 1}}
            output: runs/
            """
        )
    )
    return recipe


def test_a_run_starts_ray_in_the_background_and_logs_its_start_to_the_run(tmp_path, ray_tmpdir):
    recipe = write_recipe(tmp_path, "{scratch_mlp: {num_samples: 1}}")
    done = graftune(tmp_path, ray_tmpdir, "run", str(recipe), "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    log = (run_dir / "ray.log").read_text()
    # Said while Ray started, before the run directory existed: held, then written.
    assert "Started a local Ray instance" in log
    assert "SIGTERM handler is not set" not in log + done.stderr
    assert "ray._private" not in done.stdout + done.stderr
    assert processes_under(ray_tmpdir) == []


def test_a_run_stopped_by_its_pre_flight_writes_nothing_and_leaves_no_ray(tmp_path, ray_tmpdir):
    (tmp_path / "gt_uncompiled_plugin.py").write_text(UNCOMPILED_PLUGIN)
    recipe = write_recipe(tmp_path, "{uncompiled_mlp: {num_samples: 1}}")
    done = graftune(
        tmp_path, ray_tmpdir, "run", str(recipe), "--quiet", "--plugin", "gt_uncompiled_plugin"
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "not compiled" in done.stderr
    assert not (tmp_path / "runs").exists()
    # Ray had started in the background (its session folder is there) and was shut down.
    assert list(ray_tmpdir.glob("ray/session_*")), sorted(ray_tmpdir.rglob("*"))
    assert processes_under(ray_tmpdir) == []
