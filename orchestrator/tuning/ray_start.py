"""Starting Ray for a run: embedded local Ray, or a connection to a cluster.

Embedded Ray takes 3-4 seconds to start, and the driver spends about as long
before its search can begin: importing TensorFlow, preparing the data and the
base, the pre-flight build of each strategy. A run therefore starts embedded
Ray in a background thread (:func:`start_in_background`) as soon as its recipe
has been checked, and waits for it (:meth:`BackgroundStart.join`) only when the
search begins. If the run stops before that (a bad data file, a strategy that
fails its pre-flight build), :meth:`BackgroundStart.close` shuts Ray down
again: nothing was written, and no Ray process is left behind.

This module imports nothing heavy (``ray`` itself only in functions), so that
the start is not held up by ``ray.tune``.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.recipe import ResourcesSpec

log = logging.getLogger(__name__)

#: The loggers whose records go to the run's ``ray.log`` instead of the console.
#: (``ray.init`` clears the handlers of ``ray`` itself; ``ray._private`` keeps
#: its own, so what Ray says while it starts is not lost to the console.)
RAY_LOGGERS = ("ray", "ray._private", "ray.tune", "ray.train", "ray.air")


def ensure_ray(resources: ResourcesSpec, *, log_file: Path | None = None) -> bool:
    """Start embedded local Ray, or connect to ``resources.address``.

    Args:
        resources: The recipe's resources section.
        log_file: Where Ray's own log records go instead of the console.

    Returns:
        Whether this call started (or connected) Ray, so the caller shuts it down.
    """
    import ray

    handler = _file_handler(log_file) if log_file is not None else None
    if handler is not None:
        route_ray_logs(handler)
    if ray.is_initialized():
        return False
    kwargs = _init_kwargs(resources, configure_logging=log_file is None)
    if resources.address:
        from orchestrator.cluster import connect

        # Fails within seconds, naming the address and the fix, where ray.init would hang.
        # The cluster has its own dashboard; these only apply to a Ray started here.
        kwargs.pop("include_dashboard")
        kwargs.pop("dashboard_host", None)
        connect(resources.address, **kwargs)
    else:
        ray.init(address="local", num_cpus=resources.num_cpus, **kwargs)
    if handler is not None:
        route_ray_logs(handler)  # again: ray.init cleared the handlers of "ray"
    return True


def _init_kwargs(resources: ResourcesSpec, *, configure_logging: bool) -> dict[str, Any]:
    # Workers inherit the driver's environment: keep TensorFlow's C++ chatter out.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray's newer console output prints experiment banners even at verbose=0.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    kwargs: dict[str, Any] = {
        "include_dashboard": resources.dashboard,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
        "configure_logging": configure_logging,
    }
    if resources.dashboard:
        kwargs["dashboard_host"] = "127.0.0.1"
    return kwargs


def route_ray_logs(handler: logging.Handler) -> None:
    """Send Ray's log records to ``handler`` and keep them off the console."""
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False


def _file_handler(log_file: Path) -> logging.Handler:
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


class BackgroundStart:
    """Embedded local Ray, starting in a thread while the driver prepares the run.

    Ray's log records are held in memory until :meth:`join` names the run's
    log file (the run directory does not exist yet while Ray starts).
    """

    def __init__(self, resources: ResourcesSpec) -> None:
        # Imported by the main thread: two threads importing at once can deadlock
        # on import locks, and the main thread is about to import TensorFlow.
        import ray

        self._ray = ray
        self._kwargs = _init_kwargs(resources, configure_logging=False)
        self._num_cpus = resources.num_cpus
        self._held = logging.handlers.MemoryHandler(
            capacity=100_000, flushLevel=logging.CRITICAL + 1
        )
        # Ray warns that it set no SIGTERM handler in a thread; this class sets one.
        self._held.addFilter(lambda record: "SIGTERM handler" not in record.getMessage())
        route_ray_logs(self._held)
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._release = threading.Event()
        _exit_on_sigterm()
        self._thread = threading.Thread(target=self._start, name="graftune-ray-start", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            self._ray.init(address="local", num_cpus=self._num_cpus, **self._kwargs)
        except BaseException as exc:  # re-raised in the main thread by join()
            self._error = exc
        finally:
            self._ready.set()
        # Ray's processes die with the thread that started them (Linux's parent-
        # death signal is per thread): this one lives until Ray is shut down.
        self._release.wait()

    def join(self, log_file: Path) -> bool:
        """Wait until Ray is up; send its log records, held and to come, to ``log_file``.

        Returns:
            ``True``: Ray was started here, and the caller shuts it down.

        Raises:
            Whatever ``ray.init`` raised in the thread.
        """
        self._ready.wait()
        handler = _file_handler(log_file)
        self._held.setTarget(handler)
        self._held.flush()
        route_ray_logs(handler)
        if self._error is not None:
            raise self._error
        return True

    def close(self) -> None:
        """End the background start; a run calls it however it ended.

        Shuts Ray down if it is still up (the run stopped before or during its
        search; after a search the run has shut it down already), then lets
        the starting thread end.
        """
        self._ready.wait()
        if self._ray.is_initialized():
            self._ray.shutdown()
        self._release.set()
        self._thread.join()
        self._held.close()


def start_in_background(resources: ResourcesSpec) -> BackgroundStart | None:
    """Start embedded Ray in a thread, or ``None`` when this run does not start Ray.

    A run connecting to a cluster (``resources.address``), or one in a process
    where Ray is already up (a notebook, the test suite), starts nothing here.
    """
    import ray

    if resources.address or ray.is_initialized():
        return None
    return BackgroundStart(resources)


def _exit_on_sigterm() -> None:
    """What ``ray.init`` does when called from the main thread, which it is not here.

    SIGTERM then exits through ``sys.exit``, so that Ray's exit hooks shut
    down the processes it started.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
