"""Starting Ray for a run: embedded local Ray, or a connection to a cluster.

Embedded Ray takes 3-4 seconds to start, and the driver spends about as long
before its search can begin: importing TensorFlow, preparing the data and the
base, the pre-flight build of each strategy. A run therefore starts embedded
Ray in a background thread (:func:`start_in_background`) as soon as its recipe
has been checked, and waits for it (:meth:`BackgroundStart.join`) only when the
search begins. If the run stops before that (a bad data file, a strategy that
fails its pre-flight build), :meth:`BackgroundStart.close` shuts Ray down
again: nothing was written, and no Ray process is left behind.

Embedded Ray's workers import TensorFlow and Ray Tune as they start
(:data:`PRELOAD_MODULES`), before they take work. As many as the first
search runs trials at once start with Ray (:func:`_prepare_embedded`), so
those import TensorFlow while the driver does the same, and the search's
first trials begin on workers that have it already, instead
of each starting a new process and importing it then (about 5 s on 2 CPUs);
the later searches' trials begin on workers prestarted while the search
before ended (:func:`prestart_workers`). For this, those workers
must live until the search asks for them (Ray stops idle workers after a
second), and Tune's trial actors must be able to take them: see
:func:`tune_env_inherited`.

This module imports nothing heavy (``ray`` itself only in functions), so that
the start is not held up by ``ray.tune``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import logging.handlers
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.recipe import ResourcesSpec

log = logging.getLogger(__name__)

#: The loggers whose records go to the run's ``ray.log`` instead of the console.
#: (``ray.init`` clears the handlers of ``ray`` itself; ``ray._private`` keeps
#: its own, so what Ray says while it starts is not lost to the console.)
RAY_LOGGERS = ("ray", "ray._private", "ray.tune", "ray.train", "ray.air")
#: Loggers whose level a run sets in its process: TensorFlow's, errors only
#: (``accelerator.quiet_tensorflow``), and Optuna's, for the bayesian searcher;
#: put back after it (:func:`kept_process_state`).
QUIETED_LOGGERS = ("tensorflow", "optuna")

#: What every worker of embedded Ray imports before it takes work (Ray's
#: ``preload_python_modules``), in order: Keras as a trial imports it, then
#: graftune's search module with Ray Tune (about a CPU-second), which a trial
#: actor's worker imports when it unpickles its trial. Not with GPUs, whose
#: devices Ray assigns to a worker only when it takes a trial.
PRELOAD_MODULES = ("orchestrator.tuning.worker_preload", "orchestrator.tuning.ray_tune")
#: How long embedded Ray keeps such a worker idle (the driver may spend minutes
#: on a pretrain stage before the search begins).
IDLE_WORKER_MS = 600_000

#: The environment Ray Tune gives each trial actor (``PL_DISABLE_FORK`` for
#: PyTorch Lightning). An actor with its own environment never takes one of the
#: workers Ray started with itself; embedded Ray's workers inherit these from
#: the driver instead (:func:`tune_env_inherited`).
TUNE_ACTOR_ENV = {"PL_DISABLE_FORK": "1"}
#: Read by Ray's core worker as it starts: no absl failure-signal handler (see _init_kwargs).
NO_CRASH_HANDLER = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"

_embedded = False
#: How many workers embedded Ray starts as it comes up (the first search's trials at
#: once); 0 where its workers do not import :data:`PRELOAD_MODULES` as they start.
_preload_count = 0
#: The environment embedded Ray started with (see :func:`tune_env_inherited`).
_started_env: dict[str, str] = {}


def connect_to_cluster(resources: ResourcesSpec, *, log_file: Path | None = None) -> bool:
    """Connect to the cluster at ``resources.address`` (embedded Ray starts in the background).

    Args:
        resources: The recipe's resources section, with an ``address``.
        log_file: Where Ray's own log records go instead of the console.

    Returns:
        Whether this call connected, so the caller disconnects; ``False`` when
        Ray was up in this process already.
    """
    import ray

    from orchestrator.cluster import connect

    handler = _file_handler(log_file) if log_file is not None else None
    if handler is not None:
        route_ray_logs(handler)
    if ray.is_initialized():
        return False
    kwargs = _init_kwargs(resources, configure_logging=log_file is None)
    # Fails within seconds, naming the address and the fix, where ray.init would hang.
    # The cluster has its own dashboard; these only apply to a Ray started here.
    kwargs.pop("include_dashboard")
    kwargs.pop("dashboard_host", None)
    ours = signal.getsignal(signal.SIGTERM) is _on_sigterm
    connect(resources.address, **kwargs)
    if ours and threading.current_thread() is threading.main_thread():
        # ray.init in the main thread put its SIGTERM handler (sys.exit) there.
        signal.signal(signal.SIGTERM, _on_sigterm)
    if handler is not None:
        route_ray_logs(handler)  # again: ray.init cleared the handlers of "ray"
    return True


def _init_kwargs(resources: ResourcesSpec, *, configure_logging: bool) -> dict[str, Any]:
    # Workers inherit the driver's environment: keep TensorFlow's C++ chatter out.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray's newer console output prints experiment banners even at verbose=0.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # A trial works where graftune was started (see ray_tune.search); set before Ray
    # starts, embedded Ray's workers inherit it, and Tune need not send it to each
    # trial actor, which would then never take a worker that imported TensorFlow.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    # SIGTERM is graftune's to handle (a clean stop, status 143): Ray's core worker
    # puts absl's crash handler in front of it, and a SIGTERM while TensorFlow ran
    # in the main thread (a base's pretraining, as Ray started in the background)
    # printed a native stack and aborted (status 134). Ray reads the setting when
    # it is imported: the environment for embedded Ray's workers (a worker that
    # crashes is still a trial whose worker died), the constant for this driver.
    os.environ.setdefault(NO_CRASH_HANDLER, "1")
    from ray._private import ray_constants

    ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    kwargs: dict[str, Any] = {
        "include_dashboard": resources.dashboard,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
        "configure_logging": configure_logging,
    }
    if resources.dashboard:
        kwargs["dashboard_host"] = "127.0.0.1"
    return kwargs


def _prepare_embedded(
    resources: ResourcesSpec, kwargs: dict[str, Any], preload_workers: int = 0
) -> None:
    """Init arguments and environment for a Ray started here (not for a cluster).

    With ``preload_workers`` (the trials the first search runs at once), Ray's
    workers import TensorFlow as they start, and :meth:`BackgroundStart._start`
    has that many started as soon as Ray is up (:func:`prestart_workers`).
    Ray's own start of workers for its first driver is turned off: it starts
    one per CPU whatever the first search runs at once, each importing
    TensorFlow (about 4 CPU-seconds, beside the driver's own import) and
    holding about 740 MB for :data:`IDLE_WORKER_MS` (on 2 CPUs, a search of one
    trial at a time left one idle; on many CPUs graftune preloaded nothing
    rather than leave most of them idle).
    """
    global _preload_count
    _preload_count = 0
    if (folder := private_temp_dir()) is not None:
        kwargs["_temp_dir"] = folder
    if (store := object_store_under_file_limit()) is not None:
        kwargs["object_store_memory"] = store
    for key, value in TUNE_ACTOR_ENV.items():
        os.environ.setdefault(key, value)  # before ray.init: every worker inherits it
    if not preload_workers or resources.gpus_per_trial:
        return
    _preload_count = min(preload_workers, embedded_cpus(resources))
    kwargs["_system_config"] = {
        "preload_python_modules": list(PRELOAD_MODULES),
        # Ray stops an idle worker after a second by default: a worker that has
        # imported TensorFlow before the search asks for it must wait longer.
        "idle_worker_killing_time_threshold_ms": IDLE_WORKER_MS,
        # Exactly _preload_count workers, asked for once Ray is up (see above).
        "prestart_worker_first_driver": False,
    }


def prestart_workers(count: int) -> bool:
    """Have embedded Ray start ``count`` workers now, for the next search's trials.

    Tune ends a search's trial actors with it, and Ray never gives an actor's
    process to another actor, nor a worker that ran a task: each search after
    the first would start new processes, which import TensorFlow before their
    first trial. Workers the raylet prestarts are idle workers as those it
    starts with itself: they import :data:`PRELOAD_MODULES` and wait (up to
    :data:`IDLE_WORKER_MS`), and the next search's actors take them
    (:func:`tune_env_inherited`). Ray 2.60 has no Python call for this; it is
    the raylet's ``PrestartWorkers`` request, sent as Ray's own clients send
    theirs (with the cluster's token). Only on embedded Ray whose workers
    preload; anything that goes wrong is logged, and the next search starts
    its workers as before.

    Returns:
        Whether Ray was asked to.
    """
    if not (_embedded and _preload_count) or count <= 0:
        return False
    try:
        import grpc
        import ray
        from ray._private.authentication.http_token_authentication import (
            get_auth_headers_if_auth_enabled,
        )
        from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc

        node = ray._private.worker.global_worker.node
        request = node_manager_pb2.PrestartWorkersRequest(
            language=common_pb2.PYTHON,
            job_id=bytes.fromhex(ray.get_runtime_context().get_job_id()),
            keep_alive_duration_secs=IDLE_WORKER_MS // 1000,
            num_workers=count,
        )
        metadata = [(k.lower(), v) for k, v in get_auth_headers_if_auth_enabled({}).items()]
        with grpc.insecure_channel(f"{node.node_ip_address}:{node.node_manager_port}") as channel:
            stub = node_manager_pb2_grpc.NodeManagerServiceStub(channel)
            stub.PrestartWorkers(request, timeout=5, metadata=metadata)
    except Exception as exc:  # an internal API: the next search starts its own workers
        log.info("could not prestart %d Ray workers for the next search: %s", count, exc)
        return False
    return True


def embedded_cpus(resources: ResourcesSpec) -> int:
    """The CPUs embedded Ray has: the recipe's ``num_cpus``, else the machine's."""
    return int(resources.num_cpus or os.cpu_count() or 1)


def embedded_gpus() -> float | None:
    """The GPUs embedded Ray will find on this machine, or ``None`` if that cannot be told.

    Ray counts NVIDIA GPUs (those ``CUDA_VISIBLE_DEVICES`` lets it see) when it
    starts; asked here, before it is up, through the same (internal) call.
    """
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        manager = get_accelerator_manager_for_resource("GPU")
        return float(manager.get_current_node_num_accelerators())
    except Exception:  # an internal API: the check after Ray is up still holds
        return None


@contextlib.contextmanager
def tune_env_inherited() -> Iterator[bool]:
    """While in this block, Tune's trial actors may take workers embedded Ray started.

    Tune creates each trial actor with the environment variables of its
    ``class_cache.DEFAULT_ENV_VARS``, and Ray gives an actor with an
    environment of its own only a new worker process, never one it started
    beforehand (which, here, has imported TensorFlow already). When this
    process started Ray, its workers inherited those variables from the driver
    (:data:`TUNE_ACTOR_ENV`), so Tune need not set them, and within this block
    it does not. Nothing changes for a cluster, or where a newer Ray sets
    other variables (the actors then get new workers, as before).

    Yields:
        Whether Tune's trial actors come without an environment of their own.
    """
    defaults = _tune_default_env() if _embedded else None
    propagated = _tune_propagated_env() if _embedded else None
    if defaults is None or propagated is None:
        yield False
        return
    saved = dict(defaults)
    for key, value in saved.items():
        if os.environ.get(key) == value == TUNE_ACTOR_ENV.get(key):
            del defaults[key]
    # What Tune copies from the driver's environment into each actor's (AWS
    # credentials, which Ray's runtime-env agent then writes into its log under
    # /tmp/ray, readable by others): the workers have it already, where it has
    # not changed since Ray started.
    inherited = {
        key for key in propagated if key in os.environ and _started_env.get(key) == os.environ[key]
    }
    propagated -= inherited
    try:
        yield not defaults and not any(key in os.environ for key in propagated)
    finally:
        defaults.clear()
        defaults.update(saved)
        propagated |= inherited


def _tune_propagated_env() -> set[str] | None:
    try:
        from ray.tune.execution import class_cache
    except ImportError:  # pragma: no cover - another Ray layout
        return None
    names = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    return names if isinstance(names, set) else None


def _tune_default_env() -> dict[str, str] | None:
    try:
        from ray.tune.execution import class_cache
    except ImportError:  # pragma: no cover - another Ray layout
        return None
    defaults = getattr(class_cache, "DEFAULT_ENV_VARS", None)
    return defaults if isinstance(defaults, dict) else None


def shutdown() -> None:
    """Shut down the Ray this process started or connected to."""
    import ray

    global _embedded
    ray.shutdown()
    _embedded = False


@contextlib.contextmanager
def kept_process_state() -> Iterator[None]:
    """Put back what a run changes in its process: Ray's loggers (routed to the
    run's ``ray.log``), TensorFlow's and Optuna's loggers' levels, the
    environment (what it sets for Ray's workers, and what
    ``ray.init`` sets: ``PYTHONBREAKPOINT``, ``RAY_AUTH_MODE``, ...), and Ray's
    printer of cluster messages, and the SIGTERM handler an embedded start
    installs (:func:`_exit_on_sigterm`). A library call leaves the caller's
    process as it found it; the Ray the run started is down by then.
    """
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    loggers = {name: logging.getLogger(name) for name in RAY_LOGGERS}
    before = {name: (list(lg.handlers), lg.propagate) for name, lg in loggers.items()}
    levels = {name: logging.getLogger(name).level for name in QUIETED_LOGGERS}
    # The whole environment: ray.init sets variables of its own for the driver, and a
    # PYTHONBREAKPOINT left pointing at Ray's debugger took breakpoint() from the caller.
    # Nothing a run sets is needed after it: each run sets again what it needs.
    env = dict(os.environ)
    constants = sys.modules.get("ray._private.ray_constants")
    crash_handler_off = getattr(constants, NO_CRASH_HANDLER, None)
    # Ray is not imported for this (a wrong recipe is refused without it).
    worker = sys.modules.get("ray._private.worker")
    printer = getattr(worker, "print_to_stdstream", None)
    # Ray's import sets sys.excepthook to its own, for good (found by QA).
    excepthook = sys.excepthook
    filters = warnings.catch_warnings()  # put back as they were, however the run ends
    filters.__enter__()
    # JAX warns at every fork once it runs threads (the driver builds models on
    # it while Ray starts its processes): Ray forks only to exec, which is safe.
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
    try:
        yield
    finally:
        filters.__exit__(None, None, None)
        module = getattr(sys.excepthook, "__module__", None) or ""
        if sys.excepthook is not excepthook and module.split(".")[0] == "ray":
            sys.excepthook = excepthook
        for name, logger in loggers.items():
            handlers, propagate = before[name]
            for handler in logger.handlers:
                if handler not in handlers and isinstance(handler, logging.FileHandler):
                    handler.close()
            logger.handlers, logger.propagate = handlers, propagate
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None:  # as Ray read it, or would have, when imported
            was = crash_handler_off
            if was is None:
                was = env.get(NO_CRASH_HANDLER, "").lower() in ("1", "true")
            setattr(constants, NO_CRASH_HANDLER, was)
        for key in set(os.environ) - set(env):
            del os.environ[key]
        for key, value in env.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        worker = sys.modules.get("ray._private.worker")
        routed = getattr(worker, "print_to_stdstream", None)
        if routed is not printer and hasattr(routed, "graftune_original"):
            worker.print_to_stdstream = printer or routed.graftune_original
        # Left, it made a SIGTERM to a notebook's kernel or a service, long after
        # the run, a KeyboardInterrupt in whatever code ran (exit 130, or swallowed).
        # (None: a handler from C, as Ray's core worker puts in front of it.)
        if main_thread and sigterm is not None:
            current = signal.getsignal(signal.SIGTERM)
            if current is not sigterm and (current is _on_sigterm or current is None):
                signal.signal(signal.SIGTERM, sigterm)


def route_ray_logs(handler: logging.Handler) -> None:
    """Send Ray's log records to ``handler`` and keep them off the console.

    Also the cluster's error messages, which a driver prints to stdout itself
    (not through logging, and whatever ``log_to_driver`` says): "(raylet) A
    worker died or was killed ...", some 900 characters over the progress view,
    for a death the trial's line and the leaderboard already report.
    """
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
    _route_raylet_messages()


def _route_raylet_messages() -> None:
    from ray._private import worker

    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "graftune_routed", False):
        return  # another Ray, or routed already

    def to_log(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            printer(data, ignore_prefix)
            return
        for line in data.get("lines") or ():
            logging.getLogger("ray").warning("(raylet) %s", line)

    to_log.graftune_routed = True  # type: ignore[attr-defined]
    to_log.graftune_original = printer  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_log


class _RunLogHandler(logging.FileHandler):
    """Writes the run's ``ray.log``; a write that fails (a full disk) is said once.

    ``logging`` prints a "--- Logging error ---" traceback on the console for
    every record it could not write: dozens, over the progress view.
    """

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if self.failed:
            return
        self.failed = True
        problem = sys.exc_info()[1]
        with contextlib.suppress(Exception):
            sys.stderr.write(
                f"graftune: cannot write {self.baseFilename} ({problem}); Ray's log "
                "records are left out of it from now on\n"
            )

    def close(self) -> None:
        with contextlib.suppress(OSError):  # what it held could not be written either
            super().close()


def _file_handler(log_file: Path) -> logging.Handler:
    handler = _RunLogHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


#: Embedded Ray's root folder, once :func:`private_temp_dir` has chosen it.
_temp_root: str | None = None


#: The longest socket path Ray makes under its root folder
#: (``session_DATE_TIME_MICROS_PID/sockets/plasma_store``, a PID of 7 digits), and
#: the most a socket's path may have (AF_UNIX: 108 bytes with the closing NUL).
_SOCKET_UNDER_ROOT = len("/session_2026-12-06_18-40-18_579757_4194304/sockets/plasma_store")
_SOCKET_PATH_MAX = 107


def private_temp_dir() -> str | None:
    """The root folder for embedded Ray's files: ``ray`` in ``graftune-UID`` in the
    temporary folder Ray would use (``TMPDIR``, else ``/tmp``), a folder the user's
    alone (mode 700).

    Found by security QA: Ray makes its root folder (``/tmp/ray``), each session's
    folder and the folders in them (logs, sockets, runtime environments) writable
    by every user, without the sticky bit, whatever the umask: another user could
    delete a running search's sockets, or plant links where Ray writes its logs.
    Inside a folder no other user can enter, they are the user's alone.

    ``graftune-UID`` is used only where it is a folder of this user's that no one
    else could write in, with nothing but a folder of this user's at its ``ray``
    (found by QA: one left at mode 777 was made 700, but a link planted in it
    stayed, and Ray followed it); otherwise, with a warning, a new folder with a
    random name. Where ``TMPDIR`` is so long that Ray's socket paths would pass
    their limit, the folder is made in ``/tmp``; a relative or empty ``TMPDIR`` is
    taken from the current folder, as Python's ``tempfile`` does. ``None`` (Ray's
    own choice) where ``RAY_TMPDIR`` names the place: the user chose it.
    """
    global _temp_root
    _temp_root = None
    if "RAY_TMPDIR" in os.environ or not hasattr(os, "getuid"):
        return None
    import stat
    import tempfile

    from ray._common.utils import get_default_system_temp_dir

    base = os.path.abspath(get_default_system_temp_dir() or tempfile.gettempdir())
    name = f"graftune-{os.getuid()}"
    longest = len(os.fsencode(os.path.join(base, name, "ray"))) + _SOCKET_UNDER_ROOT
    if longest > _SOCKET_PATH_MAX and os.path.isdir("/tmp"):
        base = "/tmp"  # found by QA: a TMPDIR of 36 bytes left no room for Ray's sockets

    def ours(path: Path) -> bool:
        status = os.lstat(path)  # a link is not followed: it is someone's, not ours
        return stat.S_ISDIR(status.st_mode) and status.st_uid == os.getuid()

    private = Path(base) / name
    try:
        with contextlib.suppress(FileExistsError):
            private.mkdir(mode=0o700)
        safe = ours(private) and not os.lstat(private).st_mode & 0o022
        if safe and os.path.lexists(private / "ray"):
            safe = ours(private / "ray")
        if safe:
            if os.lstat(private).st_mode & 0o077:
                os.chmod(private, 0o700)
        else:
            fresh = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))  # mode 700
            log.warning(
                "%s is not a folder of this user's alone: embedded Ray keeps its files in "
                "%s this time; remove it (or set RAY_TMPDIR) to keep them in one place",
                private,
                fresh,
            )
            private = fresh
    except OSError:
        return None  # no folder can be made there: Ray's own, which says why
    _temp_root = str(private / "ray")  # Ray makes it, for every user: private is not
    return _temp_root


def ray_logs_folder() -> Path:
    """Where the node of the Ray this process started writes its own logs.

    Its session's folder is named for the process that started it (``session_DATE_PID``).
    Found by QA: ``session_latest`` is the session of whichever Ray started last, another
    run's where runs start at once. ``session_latest`` where none is this process's.
    """
    from ray._common.utils import get_default_ray_temp_dir

    root = Path(_temp_root or get_default_ray_temp_dir())
    with contextlib.suppress(OSError):
        mine = sorted(root.glob(f"session_*_{os.getpid()}"))
        if mine:
            return mine[-1] / "logs"
    return root / "session_latest" / "logs"


def keep_token_private() -> None:
    """Make Ray's default token file readable by its owner alone.

    Embedded Ray's services listen on every interface of the machine, and the
    token is what refuses a stranger (README, "Embedded Ray and the network");
    Ray writes ``~/.ray/auth_token`` as the umask leaves it, usually readable
    by every user of the machine. A token the user keeps elsewhere
    (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``) is left as it is.
    """
    with contextlib.suppress(OSError, RuntimeError):  # none, or no home: nothing to keep
        token = _default_token_file()
        if token is None:
            return
        status = token.stat()
        if status.st_uid == os.getuid() and status.st_mode & 0o077:
            token.chmod(0o600)


def _default_token_file() -> Path | None:
    """``~/.ray/auth_token``, where Ray keeps its token; ``None`` where the user keeps
    it elsewhere (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``), which is left as it is.

    Raises:
        RuntimeError: There is no home folder.
    """
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return None
    return Path.home() / ".ray" / "auth_token"


def private_ray_folder() -> None:
    """Make ``~/.ray``, where Ray writes its token, the user's alone (mode 700) where it
    does not exist yet: :func:`keep_token_private` makes the token so only once Ray has
    started, and a first run killed while Ray started left it readable by every user
    (found by QA). A folder that exists is left as it is.
    """
    with contextlib.suppress(OSError, RuntimeError):  # it exists, or there is no home
        token = _default_token_file()
        if token is not None:
            token.parent.mkdir(mode=0o700)


class BackgroundStart:
    """Embedded local Ray, starting in a thread while the driver prepares the run.

    Ray's log records are held in memory until :meth:`join` names the run's
    log file (the run directory does not exist yet while Ray starts).
    """

    def __init__(self, resources: ResourcesSpec, *, preload_workers: int = 0) -> None:
        # Imported by the main thread: two threads importing at once can deadlock
        # on import locks, and the main thread is about to import TensorFlow.
        import ray

        # Found by QA: once in some 25 runs, "cannot release un-acquired lock" from
        # h5py twice before the first line. Keras imports h5py; had the main thread
        # done so while Ray's start forked one of its processes, between the fork's
        # handlers before and after, h5py's handler released a lock in the child
        # it had never taken. Imported now, before any fork of this start.
        with contextlib.suppress(ImportError):
            import h5py  # noqa: F401

        self._ray = ray
        self._kwargs = _init_kwargs(resources, configure_logging=False)
        _prepare_embedded(resources, self._kwargs, preload_workers)
        self._num_cpus = resources.num_cpus
        self._held = logging.handlers.MemoryHandler(
            capacity=100_000, flushLevel=logging.CRITICAL + 1
        )
        # Ray warns that it set no SIGTERM handler in a thread; this class sets one.
        self._held.addFilter(lambda record: "SIGTERM handler" not in record.getMessage())
        route_ray_logs(self._held)
        self._error: BaseException | None = None
        #: Where the dashboard listens (``resources.dashboard: true``), once Ray is up.
        self.dashboard_url: str | None = None
        self._ready = threading.Event()
        self._release = threading.Event()
        _exit_on_sigterm()
        private_ray_folder()
        self._thread = threading.Thread(target=self._start, name="graftune-ray-start", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        global _embedded
        try:
            env = dict(os.environ)  # what Ray's processes, and so its workers, start with
            context = self._ray.init(address="local", num_cpus=self._num_cpus, **self._kwargs)
            self.dashboard_url = getattr(context, "dashboard_url", None) or None
            _embedded = True
            _started_env.clear()
            _started_env.update(env)
            keep_token_private()
            # The first search's workers, importing TensorFlow while the driver prepares
            # the run (see _prepare_embedded); if Ray cannot be asked, its trials start
            # their workers as later searches' do.
            prestart_workers(_preload_count)
        except BaseException as exc:  # re-raised in the main thread by join()
            self._error = exc
        finally:
            self._ready.set()
        # Ray's processes die with the thread that started them (Linux's parent-
        # death signal is per thread): this one lives until Ray is shut down,
        # and shuts it down itself.
        self._release.wait()
        if self._ray.is_initialized():
            shutdown()

    def wait_up(self) -> bool:
        """Wait until ``ray.init`` has returned; whether Ray is up (:meth:`join` raises if not)."""
        self._ready.wait()
        return self._error is None

    def join(self, log_file: Path) -> bool:
        """Wait until Ray is up; send its log records, held and to come, to ``log_file``.

        Returns:
            ``True``: Ray was started here; :meth:`shutdown_soon` or
            :meth:`close` shuts it down.

        Raises:
            Whatever ``ray.init`` raised in the thread.
        """
        self._ready.wait()
        _exit_on_sigterm(again=True)
        handler = _file_handler(log_file)
        self._held.setTarget(handler)
        self._held.flush()
        route_ray_logs(handler)
        if self._error is not None:
            raise self._error
        return True

    def shutdown_soon(self) -> None:
        """Shut Ray down in the starting thread, and return at once.

        Ray takes 1-2 seconds to stop its processes; the run writes its
        leaderboard and report meanwhile. :meth:`close` waits for the end.

        Garbage left by the search is collected first, while Ray is up: a
        collection in this thread that frees a Ray object while the other
        thread is shutting Ray down makes Ray end the process (exit status 1,
        "The core worker has already been shutdown"), with the report unwritten.
        """
        gc.collect()
        self._release.set()

    def close(self) -> None:
        """End the background start; a run calls it however it ended.

        Shuts Ray down if it is still up (the run stopped before or during its
        search), waits until it is down, and lets the starting thread end.
        """
        self._release.set()
        self._thread.join()
        self._held.close()


def start_in_background(
    resources: ResourcesSpec, *, preload_workers: int = 0
) -> BackgroundStart | None:
    """Start embedded Ray in a thread, or ``None`` when this run does not start Ray.

    A run connecting to a cluster (``resources.address``), or one in a process
    where Ray is already up (a notebook, the test suite), starts nothing here.

    Args:
        resources: The recipe's resources section.
        preload_workers: The trials the first search will run at once: Ray's
            workers import TensorFlow as they start unless most would not be
            used (see ``_prepare_embedded``); 0 never.
    """
    import ray

    if resources.address or ray.is_initialized():
        return None
    object_store_under_file_limit()  # raises where Ray cannot start under it
    return BackgroundStart(resources, preload_workers=preload_workers)


def object_store_under_file_limit() -> int | None:
    """The size of embedded Ray's object store where a file-size limit (``ulimit -f``)
    is below the one Ray would choose; ``None`` where there is no limit, or the
    store fits it.

    Ray's object store is one file (``/dev/shm/plasma...``) of a share of the
    machine's memory, 7.4 GB on a machine of 24 GiB. Found by QA: under a limit
    below that, the raylet was killed as it made the file, and the run said, 35
    seconds later, that Ray "timed out during startup ... or the GCS has become
    overloaded". A store made to fit lets the run go on to where its own files
    meet the limit, which stops it naming the file, as on keras_tuner.

    Raises:
        RayStartError: The limit leaves no room for Ray's smallest store (75 MiB).
    """
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft == resource.RLIM_INFINITY:
        return None
    from ray._private import ray_constants
    from ray._private.utils import get_system_memory, resolve_object_store_memory

    if resolve_object_store_memory(get_system_memory()) <= soft:
        return None
    store = (soft - 2**20) // 4096 * 4096  # a MiB of room beside it, whole pages
    smallest = ray_constants.OBJECT_STORE_MINIMUM_MEMORY_BYTES
    if store < smallest:
        from orchestrator.errors import RayStartError
        from orchestrator.feature_cache import size_text

        raise RayStartError(
            f"this process may write no file over {size_text(soft)} (a file-size limit, "
            f"as `ulimit -f` sets), and embedded Ray's object store is one file of at "
            f"least {size_text(smallest)}, which needs a limit of {size_text(smallest + 2**20)} "
            "or more: raise the limit, or search with `search.backend: keras_tuner` (no "
            "Ray); nothing was written"
        )
    return store


def _exit_on_sigterm(*, again: bool = False) -> None:
    """Stop on SIGTERM as on Ctrl+C, so that Ray's processes are shut down.

    ``ray.init`` called from the main thread installs a SIGTERM handler that
    calls ``sys.exit``; here it is called from another thread, so graftune
    installs its own. It raises :class:`KeyboardInterrupt`, not ``SystemExit``:
    a ``SystemExit`` raised while Ray waits in its core worker makes Ray end
    the process on the spot (status 1, Ray's processes left to die with it),
    while an interrupt comes back out of Ray as one. :func:`terminated` then
    tells it from a Ctrl+C. With ``again`` (once Ray is up), the handler is
    installed anew: Ray's core worker puts a crash reporter in front of it
    that prints a stack trace for a SIGTERM as if the process had crashed.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    if current is signal.SIG_DFL or (again and current is _on_sigterm):
        signal.signal(signal.SIGTERM, _on_sigterm)


_sigterm = threading.Event()


@contextlib.contextmanager
def sigterm_stops_the_run() -> Iterator[None]:
    """For a ``graftune run`` command: SIGTERM stops the run as Ctrl+C does, on any backend.

    Installs :func:`_on_sigterm` for the duration (in the main thread), and
    puts back what was there after: SIGTERM's default action, which would end
    the process with no word and nothing written, or the handler of a Ray
    started earlier in the process (``sys.exit``, and a crash report). On Ray,
    the run's :class:`BackgroundStart` installs it too, for callers of
    :func:`orchestrator.run_recipe`; the keras-tuner backend has only this one.
    A run that connects to a cluster puts it back after ``ray.init``, which
    installs Ray's own when called from the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    forget_sigterm()
    before = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl+C as Python handles it, remembered too (not where SIGINT is ignored).
    sigint = signal.getsignal(signal.SIGINT)
    if sigint is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    # One raised in a finaliser is dropped, and Python prints "Exception ignored
    # in ... KeyboardInterrupt" with a traceback; the run stops at its next step
    # all the same (raise_if_interrupted, signals_seen), so it is not printed.
    unraisable = sys.unraisablehook

    def quiet(info: Any) -> None:
        if not isinstance(info.exc_value, KeyboardInterrupt):
            unraisable(info)

    sys.unraisablehook = quiet
    try:
        yield
    finally:
        if sys.unraisablehook is quiet:
            sys.unraisablehook = unraisable
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, before)
        if signal.getsignal(signal.SIGINT) is _on_sigint:
            signal.signal(signal.SIGINT, sigint)


def _on_sigterm(signum: int, frame: Any) -> None:
    global _seen
    _seen += 1
    _sigterm.set()
    raise KeyboardInterrupt("SIGTERM")


_sigint = threading.Event()
_seen = 0


def _on_sigint(signum: int, frame: Any) -> None:
    global _seen
    _seen += 1
    _sigint.set()
    signal.default_int_handler(signum, frame)  # KeyboardInterrupt, as always


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold a Ctrl+C or SIGTERM that comes in the ``with`` block until it ends,
    then handle it as it would have been (a KeyboardInterrupt, from there).

    For imports that must not be cut short: a Ctrl+C in the seconds a run imports
    Keras and its backend left a half-imported Keras, whose every later run in
    the process failed (``module 'keras.src.backend' has no attribute
    'backend'``), or a next run that hung (found by QA, from Python). Only the
    handlers that raise KeyboardInterrupt are held, in the main thread; a second
    signal is handled at once (an import that hangs can still be stopped).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    ours = (signal.default_int_handler, _on_sigint, _on_sigterm)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    came: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        came.append(signum)
        if len(came) > 1:
            before[signum](signum, frame)

    for signum, handler in before.items():
        if handler in ours:
            signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in before.items():
            if handler in ours:
                signal.signal(signum, handler)
    if came:
        before[came[0]](came[0], None)  # raises, as it would have


def signals_seen() -> int:
    """How many times graftune's SIGTERM or Ctrl+C handler has run in this process.

    A run compares it across a step where an interrupt can be dropped (raised in
    a finaliser during a garbage collection), to stop where it can.
    """
    return _seen


def forget_sigterm() -> None:
    """A new run starts: a SIGTERM or Ctrl+C handled by an earlier one in this process is past."""
    _sigterm.clear()
    _sigint.clear()


def raise_if_interrupted() -> None:
    """Raise SIGTERM's, or Ctrl+C's, KeyboardInterrupt again, where the run can stop.

    Python drops an exception raised in a finaliser or a weakref callback, and the
    handler runs wherever the main thread is when the signal comes, so the first
    one can be lost (seen in a garbage collection during a keras-tuner trial, and
    during a pretrain stage's training). Called once an epoch, between trials and
    between steps of a Ray search; does nothing when neither came. (During a Ray
    search, Tune's own Ctrl+C handler stands in for graftune's, and this one
    notes nothing.)
    """
    if _sigterm.is_set():
        raise KeyboardInterrupt("SIGTERM")
    if _sigint.is_set():
        raise KeyboardInterrupt


def terminated() -> bool:
    """Whether this process was sent SIGTERM (an interrupt, then, was not Ctrl+C)."""
    return _sigterm.is_set()
