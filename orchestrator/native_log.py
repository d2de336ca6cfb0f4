"""TensorFlow's native start-up lines, kept off the console of ``graftune``.

TensorFlow 2.21 writes a handful of lines from C++ straight to file
descriptor 2 while it is imported and when it first looks for devices: absl's
"All log messages before absl::InitializeLog() ..." banner, oneDNN's and
CUDA's informational ``I0000 ...`` lines, and on a machine without an NVIDIA
driver an ``E0000 ... failed call to cuInit`` that only says there is no GPU.
``TF_CPP_MIN_LOG_LEVEL`` does not hold them back, because absl prints them
before TensorFlow's logging is set up.

:func:`quiet_tensorflow_start` (called by the console entry point only)
sends descriptor 2 to a temporary file for the length of TensorFlow's import
and device discovery, then writes back to the console every captured line
that is not such noise, in order: Python's own warnings, other threads'
output and real errors are delayed by those seconds, never lost. Noise is
what ``TF_CPP_MIN_LOG_LEVEL`` promises to hide (``I`` lines from 1, ``W``
lines and the banner from 2, ``E`` lines from 3), plus the cuInit error where
TensorFlow said in the same breath that the machine has no CUDA driver.
``graftune --debug`` keeps everything.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

#: absl's banner before its logging is initialised (a WARNING-level line).
BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
#: An absl log line: severity letter, date, time, thread, file:line].
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] ")
#: The levels each severity is hidden from, as TF_CPP_MIN_LOG_LEVEL counts them.
_HIDDEN_FROM = {"I": 1, "W": 2, "E": 3}
NO_DRIVER = "Could not find cuda drivers on your machine"
CUINIT = "failed call to cuInit"

#: Set by ``graftune --debug``: nothing is filtered.
keep_all = False


def noise_free(text: str, level: int, no_driver: bool = False) -> str:
    """``text`` without the native lines ``TF_CPP_MIN_LOG_LEVEL=level`` would hide.

    Args:
        text: What was written to descriptor 2.
        level: The log level in force (0 hides nothing, 3 hides errors too).
        no_driver: TensorFlow said before ``text`` that there is no CUDA driver.

    Returns:
        The other lines, in their order, each with its line end.
    """
    lines = text.splitlines(keepends=True)
    no_driver = no_driver or any(NO_DRIVER in line for line in lines)
    kept = []
    for line in lines:
        match = _ABSL_LINE.match(line)
        severity = match.group(1) if match else None
        if line.rstrip("\r\n") == BANNER:
            severity = "W"
        hidden = severity is not None and level >= _HIDDEN_FROM.get(severity, 99)
        if severity == "E" and no_driver and CUINIT in line and level >= 2:
            hidden = True  # "no GPU here", said twice
        if not hidden:
            kept.append(line)
    return "".join(kept)


def log_level() -> int:
    """The ``TF_CPP_MIN_LOG_LEVEL`` in force (TensorFlow's default is 0)."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


class _Held:
    """What descriptor 2 wrote to a file, passed on in order, noise left out."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.done = 0  # bytes of the file passed on
        self.no_driver = False

    def pass_on(self, to: int, *, final: bool) -> int:
        """Write what came since the last call to descriptor ``to``; return its byte count.

        Reads with ``pread``, which leaves the offset that writers to the file share
        alone. A line not finished yet waits for the next call unless ``final``.
        """
        size = os.fstat(self.fd).st_size
        data = os.pread(self.fd, size - self.done, self.done) if size > self.done else b""
        if not final:
            data = data[: data.rfind(b"\n") + 1]
        self.done += len(data)
        text = data.decode("utf-8", errors="replace")
        kept = text if keep_all else noise_free(text, log_level(), self.no_driver)
        self.no_driver = self.no_driver or NO_DRIVER in text
        out = kept.encode("utf-8", errors="replace")
        while out:
            out = out[os.write(to, out) :]
        return len(data)


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Hold descriptor 2 in a file during the block, then write back what is not noise.

    Other threads may write to descriptor 2 while the console is handed back. So
    what was held is passed on to the console *before* descriptor 2 points at it
    again, until a look finds nothing new; only the few bytes written in the
    instant between that look and the switch are passed on after it.
    """
    sys.stderr.flush()
    with tempfile.TemporaryFile() as file:
        saved = os.dup(2)
        os.dup2(file.fileno(), 2)
        held = _Held(file.fileno())
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            for _ in range(5):
                if not held.pass_on(saved, final=False):
                    break
            os.dup2(saved, 2)
            os.close(saved)
            held.pass_on(2, final=True)


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's import, and its first look for devices, with stderr filtered."""

    def __init__(self, loader: Any, finder: Any = None) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        with contextlib.suppress(ValueError):  # its work is done: TensorFlow is imported
            sys.meta_path.remove(self._finder)
        with native_stderr_filtered():
            self._loader.exec_module(module)
            # The first look for devices says its piece (cuInit) now, not later.
            with contextlib.suppress(Exception):
                module.config.list_physical_devices()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _TensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` the usual way and hands it :class:`_QuietLoader`.

    It stays until TensorFlow is imported: a look that imports nothing
    (``importlib.util.find_spec``, as graftune's check of Keras' backend does)
    must not use it up.
    """

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "tensorflow" or self not in sys.meta_path:
            return None
        index = sys.meta_path.index(self)
        sys.meta_path.remove(self)  # the usual way: the finders after this one
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(index, self)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self)
        return spec


def quiet_tensorflow_start() -> None:
    """Filter TensorFlow's native start-up lines when this process imports it.

    Does nothing if TensorFlow is imported already.
    """
    if "tensorflow" in sys.modules:
        return
    if not any(isinstance(finder, _TensorFlowFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TensorFlowFinder())
