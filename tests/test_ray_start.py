"""Embedded Ray starts in the background while the driver prepares the run.

Each test runs ``graftune run`` in a process of its own, with Ray's files in
a fresh folder (``RAY_TMPDIR``), so that the Ray it starts can be told apart
from the test session's and looked for after the command has ended.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import file_size_limit

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


def graftune(
    folder: Path,
    ray_tmpdir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    unset: tuple[str, ...] = (),
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_TMPDIR=str(ray_tmpdir), **(env or {}))
    for name in ("RAY_ADDRESS", *unset):
        env.pop(name, None)
    return subprocess.run(
        [GRAFTUNE, *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=preexec_fn,
    )


def python_with_ray(
    script: str, ray_tmpdir: Path, *args: str, timeout: float, variable: str = "RAY_TMPDIR"
) -> subprocess.CompletedProcess:
    """Run ``script`` in a Python of its own, whose Ray keeps its files in ``ray_tmpdir``
    (named by ``variable``: ``TMPDIR`` leaves graftune to choose the folder in it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_TMPDIR", "RAY_ADDRESS")}
    env[variable] = str(ray_tmpdir)
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
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


def test_embedded_ray_that_does_not_start_is_said_with_the_way_on(tmp_path):
    """Found by QA: Ray's node timing out on a busy machine ended the run in
    "internal error", after its folder was made, with no word of a resume."""
    unusable = tmp_path / "not-a-folder"  # as Ray's temporary folder: ray.init raises
    unusable.write_text("")
    recipe = write_recipe(tmp_path, "{scratch_mlp: {num_samples: 1}}")
    done = graftune(tmp_path, unusable, "run", str(recipe), "--quiet")
    assert done.returncode == 4, done.stdout + done.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert "error: embedded Ray did not start: NotADirectoryError: " in done.stderr
    logs = unusable / "ray" / "session_latest" / "logs"  # its node's own (found by QA)
    assert f"(Ray's log: {run_dir / 'ray.log'}; its node's own: {logs})" in done.stderr
    assert f"nothing was trained, continue it with: graftune run --resume {run_dir}" in (
        done.stderr
    )
    assert "internal error" not in done.stderr
    # A file-size limit that leaves no room for Ray's smallest object store is said as
    # such, before anything is written.
    limited = graftune(
        tmp_path, tmp_path, "run", str(recipe), "--quiet", preexec_fn=file_size_limit(20 * 1024)
    )
    assert limited.returncode == 4, limited.stdout + limited.stderr
    assert (
        "error: this process may write no file over 20.0 MiB (a file-size limit, as `ulimit "
        "-f` sets), and embedded Ray's object store is one file of at least 75.0 MiB"
    ) in " ".join(limited.stderr.split())
    assert list((tmp_path / "runs").iterdir()) == [run_dir]


def test_a_run_starts_ray_in_the_background_on_workers_that_imported_tensorflow(
    tmp_path, ray_tmpdir
):
    # Ray's start is logged to the run (said before the run directory existed:
    # held, then written). The workers Ray started with itself import TensorFlow
    # while the driver prepares the run, and the first trials run on them;
    # without them, Tune would start a worker per trial actor and import it there.
    # As many as the first search runs at once: one here (Ray's own start of
    # one per CPU left the second importing TensorFlow for nothing).
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            """
            name: prestarted
            data: {source: "sklearn:iris"}
            strategies: {scratch_mlp: {num_samples: 2}}
            search: {max_epochs: 1, max_concurrent_trials: 1}
            resources: {num_cpus: 2, cpus_per_trial: 1, dashboard: true}
            output: runs/
            """
        )
    )
    # A home of its own, where Ray makes its token file: kept to its owner (Ray
    # wrote it readable by every user of the machine, mode 644).
    home = tmp_path / "home"
    home.mkdir()
    secret = "graftune-test-secret-3f9a"
    env = {"HOME": str(home), "AWS_SECRET_ACCESS_KEY": secret}
    # Not in a test as MLflow tells one (pytest's variable, a CI's): its telemetry is on.
    quiet = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "MLFLOW_DISABLE_TELEMETRY")
    # Under a file-size limit below Ray's object store (one file, 7.4 GB of 24 GiB):
    # the store is made to fit (found by QA: the raylet was killed making it, and the
    # run said Ray "timed out during startup", 35 s later).
    limit = file_size_limit(200 * 1024)
    done = graftune(
        tmp_path, ray_tmpdir, "run", str(recipe), env=env, unset=quiet, preexec_fn=limit
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Found by QA: Ray Tune imports MLflow (installed with graftune[mlflow]), whose
    # telemetry wrote an installation id to ~/.config/mlflow, unasked.
    assert importlib.util.find_spec("mlflow") is not None  # the test extra installs it
    assert not (home / ".config" / "mlflow").exists()
    # Found by security QA: Tune copies AWS_* variables (what s3:// storage needs)
    # into each trial actor's environment, and Ray's runtime-env agent logged them
    # under /tmp/ray (folders anyone can read). Embedded Ray's workers have them
    # from the driver already.
    logs = [
        p for p in ray_tmpdir.rglob("*") if p.is_file() and p.suffix in (".log", ".out", ".err")
    ]
    assert logs
    assert [p for p in logs if secret in p.read_text(errors="replace")] == []
    assert (home / ".ray" / "auth_token").stat().st_mode & 0o777 == 0o600
    # Its folder too, made before Ray starts (found by QA: a first run killed while
    # Ray started left the token readable by every user).
    assert (home / ".ray").stat().st_mode & 0o777 == 0o700
    # Found by QA: where the dashboard listens was said only in ray.log.
    assert re.search(r"^dashboard: http://127\.0\.0\.1:\d+$", done.stdout, re.M), done.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "leaderboard.csv").read_text().count("scratch_mlp") == 2
    log = (run_dir / "ray.log").read_text()
    assert "Started a local Ray instance" in log
    assert "SIGTERM handler is not set" not in log + done.stderr
    assert "ray._private" not in done.stdout + done.stderr
    # Nor TensorFlow's native start-up lines (orchestrator.native_log).
    assert "absl::InitializeLog" not in done.stderr and " port.cc:" not in done.stderr
    (raylet_log,) = ray_tmpdir.glob("ray/session_2*/logs/raylet.out")
    started = raylet_log.read_text().count("Started worker process with pid")
    assert started == 1, raylet_log.read_text()[-3000:]
    assert processes_under(ray_tmpdir) == []


WORKER_IMPORTS = """
import importlib, sys
from orchestrator.tuning.ray_start import PRELOAD_MODULES
for name in PRELOAD_MODULES:  # as embedded Ray's workers import them
    importlib.import_module(name)
print(sorted(m for m in ("keras", "tensorflow", "ray.tune", "sklearn", "matplotlib", "jax") if m in sys.modules))
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)  # a trial still sets its threads
import sklearn.model_selection, matplotlib.pyplot  # and a strategy may still import them
from keras.src.wrappers import fixes
import jax  # TensorFlow loads it for TFLite alone; it stays importable
print("sklearn" in sys.modules, fixes.sklearn is None)
"""


def test_workers_import_keras_without_scikit_learn_or_matplotlib():
    # Keras would import them for its wrappers and plots only: 1.4 CPU-seconds a worker;
    # TensorFlow imports JAX (a test dependency) for TFLite: about 1 more.
    done = subprocess.run(
        [sys.executable, "-c", WORKER_IMPORTS],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["['keras',", "'ray.tune',", "'tensorflow']", "True", "True"]


HOLD_BACK_QUERIED = """
import importlib.util, sys
from orchestrator import trial
sys.meta_path.insert(0, trial._HOLD_BACK)
importlib.util.find_spec("sklearn")  # PyTorch asks while Keras imports it (KERAS_BACKEND=torch)
try:
    import sklearn
except ModuleNotFoundError as exc:
    print("held back" in str(exc), "sklearn" in sys.modules)
sys.meta_path.remove(trial._HOLD_BACK)
import sklearn
print(sklearn.__name__)
"""


def test_a_held_back_package_can_be_looked_up_and_is_not_imported():
    done = subprocess.run(
        [sys.executable, "-c", HOLD_BACK_QUERIED], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "False", "sklearn"]


def test_tune_actors_keep_their_environment_unless_this_process_started_ray():
    from ray.tune.execution import class_cache

    from orchestrator.tuning import ray_start

    before = dict(class_cache.DEFAULT_ENV_VARS)
    assert not ray_start._embedded  # the test session's Ray was started by conftest
    with ray_start.tune_env_inherited() as inherited:
        assert inherited is False
        assert before == class_cache.DEFAULT_ENV_VARS
    assert before == class_cache.DEFAULT_ENV_VARS


EXIT_NOW = """
import atexit, sys, threading, time
from orchestrator.cli import _exit_now

left_open = open(sys.argv[1], "w")
left_open.write("written, never flushed")
atexit.register(lambda: open(sys.argv[2], "w").write("exit hook ran"))
def late():
    time.sleep(0.5)
    open(sys.argv[3], "w").write("thread finished")
threading.Thread(target=late).start()
_exit_now(7)
"""


def test_the_fast_exit_keeps_what_an_ordinary_exit_keeps(tmp_path):
    # graftune skips Python's teardown of TensorFlow; nothing else may be lost.
    files = [tmp_path / name for name in ("open.txt", "hook.txt", "thread.txt")]
    done = subprocess.run(
        [sys.executable, "-c", EXIT_NOW, *map(str, files)], capture_output=True, text=True
    )
    assert done.returncode == 7, done.stderr
    assert [f.read_text() for f in files] == [
        "written, never flushed",
        "exit hook ran",
        "thread finished",
    ]


CTRL_C_AT_EXIT = """
import atexit, os, signal, time
from orchestrator.cli import _exit_now

def pressed():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)

atexit.register(pressed)
_exit_now(0)
"""


def test_ctrl_c_while_the_command_exits_leaves_its_exit_whole():
    # Found by QA: Ctrl+C in the second after a finished run printed a traceback, and
    # the process died of SIGINT, the status of a run stopped midway.
    done = subprocess.run([sys.executable, "-c", CTRL_C_AT_EXIT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "KeyboardInterrupt" not in done.stderr


CTRL_C_WHILE_A_THREAD_ENDS = """
import os, signal, sys, threading, time
from orchestrator.cli import _exit_now

signal.signal(signal.SIGINT, signal.default_int_handler)  # (xdist's workers ignore it)
sys.stdout = open(sys.argv[1], "w")  # a file: what is printed waits in its buffer
print("best: the run's result")
threading.Thread(target=time.sleep, args=(60,)).start()  # Ray's shutdown, slow
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
_exit_now(0)
"""


def test_ctrl_c_while_the_exit_waits_for_a_thread_keeps_the_output_and_the_status(tmp_path):
    """Found by QA: Ctrl+C while a finished run waited for Ray's shutdown ended the
    process with 130 and its printed result (in a file or a pipe) lost."""
    out = tmp_path / "out.txt"
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_WHILE_A_THREAD_ENDS, str(out)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "best: the run's result\n"


def test_a_run_leaves_the_processs_excepthook_as_it_found_it():
    """Found by QA: importing Ray made its own handler sys.excepthook, for good."""
    script = (
        "import sys\n"
        "hook = sys.excepthook\n"
        "from orchestrator.tuning.ray_start import kept_process_state\n"
        "with kept_process_state():\n"
        "    import ray\n"
        "    print('ray' in sys.excepthook.__module__)\n"
        "print(sys.excepthook is hook)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"], done.stdout + done.stderr


#: One embedded Ray's start for two tests (each start costs a Python with Ray, and
#: its workers' TensorFlow): the workers of a next search
#: (test_the_next_searchs_workers_are_prestarted_and_its_trials_take_them), then
#: garbage holding Ray objects at shutdown
#: (test_garbage_holding_ray_objects_is_freed_before_ray_shuts_down).
BACKGROUND_START = """
import gc, os, sys, time, weakref
from pathlib import Path
import psutil, ray
from orchestrator.recipe import ResourcesSpec
from orchestrator.tuning import ray_start

gc.disable()  # the garbage stays until something collects it
before = dict(os.environ)
with ray_start.kept_process_state():  # as run_recipe keeps it
    start = ray_start.BackgroundStart(ResourcesSpec(num_cpus=2), preload_workers=2)
    start.join(Path(sys.argv[1]))


    @ray.remote(num_cpus=1)
    class Trial:
        def where(self):
            return os.getpid(), "keras" in sys.modules


    def workers():
        # Ray's Python workers: started as default_worker.py (an argument of the raylet's
        # own command line too), then named for what they do (ray::IDLE, ray::Trial).
        found = set()
        for process in psutil.Process().children(recursive=True):
            try:
                command = process.cmdline()
            except psutil.Error:  # ended meanwhile
                continue
            line = " ".join(command)
            if line.startswith("ray::") and not line.split()[0].endswith("Agent"):
                found.add(process.pid)
            elif "default_worker.py" in line and not command[0].endswith("raylet"):
                found.add(process.pid)
        return found


    def wait_for(count):
        for _ in range(600):
            if len(workers()) == count:
                return
            time.sleep(0.1)
        sys.exit(f"{len(workers())} workers, not {count}")


    # A first search's trials take the workers Ray started with itself, and end with it.
    first = [Trial.remote() for _ in range(2)]
    ended = {pid for pid, _ in ray.get([t.where.remote() for t in first])}
    for trial in first:
        ray.kill(trial)
    while ended & workers():
        time.sleep(0.1)
    idle = workers()  # any worker Ray keeps beside them
    print("asked:", ray_start.prestart_workers(2))
    wait_for(len(idle) + 2)
    # Every worker there as the next search's trials are asked for: under load the count
    # above can be reached before Ray's own pool settles, so it is read again here.
    present = workers()
    second = [Trial.remote() for _ in range(2)]
    where = ray.get([t.where.remote() for t in second])
    print("on workers started before them:", {pid for pid, _ in where} <= present)
    print("keras imported:", all(keras for _, keras in where))

    class Holder:
        pass

    holder = Holder()
    holder.ref = ray.put(list(range(100)))
    holder.itself = holder  # a cycle: only a collection frees it
    alive = weakref.ref(holder)
    del holder
    start.shutdown_soon()
    print("freed before shutdown" if alive() is None else "still held at shutdown")
    start.close()
changed = sorted(k for k in {*before, *os.environ} if before.get(k) != os.environ.get(k))
print("environment changed:", changed)
"""


@pytest.fixture(scope="module")
def background_start():
    """:data:`BACKGROUND_START`'s process, and the processes of its Ray left after it."""
    folder = Path(tempfile.mkdtemp(prefix="gt-ray-", dir="/tmp"))  # short, as ray_tmpdir
    try:
        # TMPDIR, as a user's: the folder for Ray's files is graftune's choice in it.
        done = python_with_ray(
            BACKGROUND_START, folder, str(folder / "ray.log"), timeout=300, variable="TMPDIR"
        )
        yield done, processes_under(folder), folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_garbage_holding_ray_objects_is_freed_before_ray_shuts_down(background_start):
    # A collection in the main thread that frees a Ray object while the starting
    # thread shuts Ray down makes Ray end the process (seen with exit status 1
    # and the report unwritten): the search's garbage goes while Ray is up.
    done, left, _ = background_start
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "freed before shutdown" in done.stdout.splitlines(), done.stdout + done.stderr[-3000:]
    # Found by QA: ray.init's PYTHONBREAKPOINT (breakpoint() opened Ray's debugger),
    # RAY_AUTH_MODE, RAY_CLIENT_MODE and RAY_USAGE_STATS_ENABLED stayed after a
    # library run, which README says leaves the environment as it found it.
    assert "environment changed: []" in done.stdout.splitlines(), done.stdout
    assert left == []


def test_the_next_searchs_workers_are_prestarted_and_its_trials_take_them(background_start):
    # Tune ends a search's actors with it, and Ray gives a new actor neither an
    # actor's process nor a worker that ran a task: without the raylet's prestart,
    # every search after the first started new processes that imported TensorFlow.
    done, left, _ = background_start
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert done.stdout.splitlines()[:3] == [
        "asked: True",
        "on workers started before them: True",
        "keras imported: True",
    ], done.stdout + done.stderr[-3000:]
    assert left == []


def test_embedded_rays_files_are_in_a_folder_of_the_users_alone(background_start):
    """Found by security QA: Ray makes /tmp/ray, its session folders and their logs,
    sockets and runtime environments writable by every user (0777, no sticky bit),
    whatever the umask; another user could delete a search's sockets or plant links
    where Ray writes. Embedded Ray's are inside a folder only the user can enter."""
    done, _, folder = background_start
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    private = folder / f"graftune-{os.getuid()}"
    assert private.stat().st_mode & 0o777 == 0o700 and private.stat().st_uid == os.getuid()
    assert list((private / "ray").glob("session_*/logs")), sorted(folder.rglob("*"))[:20]
    assert not (folder / "ray").exists()  # where Ray would have put them


def test_the_folder_for_embedded_rays_files_is_never_another_users(ray_tmpdir, monkeypatch):
    from orchestrator.tuning.ray_start import private_temp_dir

    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(ray_tmpdir))
    private = ray_tmpdir / f"graftune-{os.getuid()}"
    private.mkdir(mode=0o755)
    private.chmod(0o755)
    assert private_temp_dir() == str(private / "ray")
    assert private.stat().st_mode & 0o777 == 0o700  # made the user's alone
    elsewhere = ray_tmpdir / "elsewhere"
    elsewhere.mkdir()

    def fresh() -> Path:
        chosen = Path(private_temp_dir()).parent
        assert chosen.parent == ray_tmpdir and chosen.name.startswith(f"{private.name}-")
        assert not chosen.is_symlink() and chosen.stat().st_mode & 0o777 == 0o700
        return chosen

    # Someone's link in it (found by QA: planted while it was open to all, and followed).
    (private / "ray").symlink_to(elsewhere)
    assert fresh() != private
    (private / "ray").unlink()
    private.chmod(0o777)  # open to all: what is in it cannot be trusted
    assert fresh() != private
    private.rmdir()
    private.symlink_to(elsewhere)  # someone's link: not followed, not used
    assert fresh() != private
    # A TMPDIR that leaves Ray's socket paths no room (found by QA: 36 bytes failed).
    long = ray_tmpdir / ("t" * 40)  # a socket path of 110 bytes or more
    long.mkdir()
    monkeypatch.setenv("TMPDIR", str(long))
    assert private_temp_dir() == f"/tmp/graftune-{os.getuid()}/ray"
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmpdir))  # the user's choice: Ray's own
    assert private_temp_dir() is None


def test_rays_start_error_names_this_processs_own_session_logs(tmp_path, monkeypatch):
    """Found by QA: it named session_latest, the session of whichever Ray started
    last: another run's, where runs start at once."""
    from orchestrator.tuning import ray_start

    monkeypatch.setattr(ray_start, "_temp_root", str(tmp_path))
    assert ray_start.ray_logs_folder() == tmp_path / "session_latest" / "logs"  # none yet
    mine = tmp_path / f"session_2026-12-06_18-44-58_208796_{os.getpid()}"
    other = tmp_path / "session_2026-12-06_18-45-04_465268_1"
    for folder in (mine, other):
        folder.mkdir()
    (tmp_path / "session_latest").symlink_to(other)
    assert ray_start.ray_logs_folder() == mine / "logs"


def test_ray_not_started_here_is_not_asked_to_prestart_workers(ray_session):
    from orchestrator.tuning import ray_start

    assert not ray_start._embedded  # the test session's Ray was started by conftest
    assert ray_start.prestart_workers(2) is False


def test_a_ray_log_the_disk_cannot_take_is_said_once(tmp_path, capsys):
    """A full disk printed logging's "--- Logging error ---" traceback on the console
    for every record Ray logged (dozens, over the progress view)."""
    import logging

    from orchestrator.tuning.ray_start import _file_handler

    handler = _file_handler(tmp_path / "ray.log")
    handler.stream = open("/dev/full", "w", encoding="utf-8")  # noqa: SIM115 (writes fail: ENOSPC)
    logger = logging.getLogger("graftune-test-full-disk")
    logger.addHandler(handler)
    try:
        for n in range(3):
            logger.warning("record %d", n)
    finally:
        logger.removeHandler(handler)
        handler.close()
    err = capsys.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err, err
    assert err.count(f"graftune: cannot write {tmp_path / 'ray.log'}") == 1, err
    assert "No space left on device" in err


def test_sigterm_while_the_base_pretrains_stops_the_run_cleanly(tmp_path, ray_tmpdir):
    """SIGTERM during a pretrain stage (TensorFlow in the main thread, Ray starting
    in the background) printed a native stack from Ray's crash handler, which stood
    in front of graftune's SIGTERM handler, or aborted the process (status 134)."""
    import signal

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            """
            name: pretraining
            data: {source: "sklearn:digits", labels_per_class: 5}
            base: {pretrain: {data: {source: "sklearn:digits"}, epochs: 2000, width: 8}}
            strategies: {feature_extraction: {num_samples: 1}}
            search: {max_epochs: 1}
            output: runs/
            """
        )
    )
    env = dict(os.environ, RAY_TMPDIR=str(ray_tmpdir), GRAFTUNE_CACHE_DIR=str(tmp_path / "c"))
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen(
        [GRAFTUNE, "run", str(recipe)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("base: preparing pretrain"):
                break
        time.sleep(3)  # into the pretraining, with Ray up by now
        # To the driver, as systemd (KillMode=mixed) and Kubernetes send it. (To the
        # whole group, as `timeout` sends it, Ray's own processes die with it, and
        # Ray may end the driver before its handler runs: a race left open.)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 143, err[-3000:]
    assert "terminated (SIGTERM): stopped at once" in err
    assert "SIGTERM received" not in err and "failure_signal_handler" not in err, err[-3000:]
    assert processes_under(ray_tmpdir) == []


def test_an_interrupt_dropped_in_a_finaliser_is_not_printed(monkeypatch):
    """Python printed "Exception ignored in ... KeyboardInterrupt: SIGTERM" with a
    traceback when the signal came during a garbage collection (the run stops at
    its next step all the same); anything else raised there is still shown."""
    from orchestrator.tuning.ray_start import sigterm_stops_the_run

    class Dropping:
        def __del__(self):
            raise KeyboardInterrupt("SIGTERM")

    class Failing:
        def __del__(self):
            raise ValueError("shown")

    shown = []
    monkeypatch.setattr(sys, "unraisablehook", shown.append)
    with sigterm_stops_the_run():
        Dropping()  # collected at once: what its finaliser raises is "unraisable"
        Failing()
    assert [type(info.exc_value) for info in shown] == [ValueError]
    assert sys.unraisablehook == shown.append  # put back


def test_a_library_run_puts_back_the_callers_sigterm_handling():
    """Found by QA: after ``run_recipe`` on embedded Ray, a SIGTERM to the caller
    (a notebook's kernel, a service) raised KeyboardInterrupt in whatever ran next."""
    from orchestrator.tuning.ray_start import _exit_on_sigterm, _on_sigterm, kept_process_state

    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with kept_process_state():
            _exit_on_sigterm()  # as embedded Ray's start does, for the CLI's sake
            assert signal.getsignal(signal.SIGTERM) is _on_sigterm
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        # A handler of the caller's own is kept, and stays theirs.
        signal.signal(signal.SIGTERM, lambda *_: None)
        mine = signal.getsignal(signal.SIGTERM)
        with kept_process_state():
            _exit_on_sigterm()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_library_run_puts_back_the_levels_of_the_loggers_it_quiets():
    """TensorFlow's logger stayed at ERROR after an in-process (keras_tuner) run, and
    Optuna's at WARNING after a bayesian search: a caller's own INFO went unseen."""
    import logging

    from orchestrator.tuning.ray_start import kept_process_state

    loggers = [logging.getLogger(name) for name in ("tensorflow", "optuna")]
    before = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.INFO)
        with kept_process_state():
            # As accelerator.configure_trial does for an in-process trial (not called
            # here: it would set this process's TensorFlow threads to one).
            logging.getLogger("tensorflow").setLevel(logging.ERROR)
            logging.getLogger("optuna").setLevel(logging.WARNING)  # as the searcher does
            assert [logger.level for logger in loggers] == [logging.ERROR, logging.WARNING]
        assert [logger.level for logger in loggers] == [logging.INFO, logging.INFO]
    finally:
        for logger, level in zip(loggers, before, strict=True):
            logger.setLevel(level)


def test_a_local_ray_refuses_a_driver_without_its_token(ray_session, tmp_path):
    """Embedded Ray's services listen on all the machine's interfaces (Ray binds
    them so, and takes 127.0.0.1 for the machine's address), so what keeps another
    machine's driver out is Ray's token authentication, on for a local Ray since
    Ray 2.59 (README, "Embedded Ray and the network"). The session's Ray starts
    as a run's does; the GCS is asked as ``graftune run --address`` asks it."""
    from orchestrator.cluster import _PROBE

    gcs = ray_session.get_runtime_context().gcs_address
    assert not gcs.startswith("127."), gcs

    def ask(env: dict[str, str]) -> dict:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, gcs, "10"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert "hosts" in ask(dict(os.environ))  # this user, who has the token
    stranger = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    stranger["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to send
    assert "auth" in ask(stranger)
