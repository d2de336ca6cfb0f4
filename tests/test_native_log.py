"""TensorFlow's native start-up lines are kept off graftune's console; nothing else is."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from orchestrator.native_log import BANNER, noise_free

NOISE = textwrap.dedent(
    f"""\
    {BANNER}
    I0000 00:00:1795909756.707247   20049 port.cc:153] oneDNN custom operations are on.
    I0000 00:00:1795909756.708718   20049 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    W0000 00:00:1795909756.708718   20049 some_file.cc:12] a warning
    E0000 00:00:1795909759.104415   20049 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error
    E0000 00:00:1795909759.104415   20049 other.cc:7] a real error
    a line of Python's
    """
)


@pytest.mark.parametrize(
    ("level", "kept"),
    [
        (0, ["absl", "port.cc", "cudart_stub", "some_file", "cuInit", "other.cc", "Python"]),
        (1, ["absl", "some_file", "cuInit", "other.cc", "Python"]),
        (2, ["other.cc", "Python"]),
        (3, ["Python"]),
    ],
)
def test_only_what_the_log_level_hides_is_dropped(level, kept):
    lines = noise_free(NOISE, level).splitlines()
    assert len(lines) == len(kept)
    for line, mark in zip(lines, kept, strict=True):
        assert mark in line


def test_the_cuinit_error_stays_where_a_cuda_driver_was_found():
    text = "".join(line for line in NOISE.splitlines(keepends=True) if "cudart_stub" not in line)
    assert "failed call to cuInit" in noise_free(text, 2)


SCRIPT = """
import os, sys, threading, time
if sys.argv[1] == "quiet":
    from orchestrator.native_log import quiet_tensorflow_start
    quiet_tensorflow_start()
    import importlib.util
    importlib.util.find_spec("tensorflow")  # a look (the backend check) imports nothing
print("before", file=sys.stderr, flush=True)
def tick():
    for i in range(20):
        os.write(2, b"tick %d\\n" % i)
        time.sleep(0.1)
ticks = threading.Thread(target=tick)
ticks.start()
import keras  # imports TensorFlow
ticks.join()
keras.ops.ones((2,))  # a first operation (devices)
print("after", file=sys.stderr, flush=True)
"""


def stderr_of(mode: str) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def test_importing_tensorflow_keeps_every_other_line_in_order():
    plain, quiet = stderr_of("plain"), stderr_of("quiet")
    # What TensorFlow prints on this machine despite TF_CPP_MIN_LOG_LEVEL=2 ...
    noise = [line for line in plain.splitlines() if noise_free(line + "\n", 2) == ""]
    assert noise, "TensorFlow printed no start-up lines here: this test shows nothing"
    # ... is gone; what Python and other threads wrote meanwhile is all there, in order.
    assert noise_free(quiet, 2) == quiet
    expected = ["before", *(f"tick {i}" for i in range(20)), "after"]
    assert [line for line in quiet.splitlines() if line in expected] == expected


HANDOVER = """
import os, sys, threading, time
from orchestrator.native_log import native_stderr_filtered
noise = "I0000 00:00:1795909756.707247   20049 port.cc:153] oneDNN custom operations are on.\\n"
stop = threading.Event()
def tick():
    i = 0
    while not stop.is_set():
        os.write(2, b"tick %d\\n" % i)
        i += 1
        time.sleep(0.005)
with native_stderr_filtered():
    os.write(2, (noise * 60000).encode())  # enough to take a while to filter
    ticks = threading.Thread(target=tick)
    ticks.start()
    time.sleep(0.05)
time.sleep(0.05)
stop.set()
ticks.join()
"""


def test_lines_written_while_the_console_is_handed_back_stay_in_order():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", HANDOVER], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ticks = [int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("tick ")]
    assert "port.cc" not in done.stderr
    assert len(ticks) > 10
    assert ticks == list(range(len(ticks)))


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 1 << 16)


@pytest.mark.parametrize(
    ("level", "shown"), [("1", b""), ("0", b"I0000 00:00:1.0 1 f.cc:1] part\n")]
)
def test_a_line_still_being_written_waits_to_be_judged_whole(monkeypatch, tmp_path, level, shown):
    """Found by mutation testing: a half-written line was passed on (and judged) in
    two pieces, its tail (no absl prefix) reaching the console as a stray fragment."""
    from orchestrator.native_log import _Held

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", level)
    with open(tmp_path / "held", "w+b") as held_file, open(tmp_path / "out", "w+b") as out:
        held = _Held(held_file.fileno())
        held_file.write(b"I0000 00:00:1.0 1 f.cc:1] par")
        held_file.flush()
        assert held.pass_on(out.fileno(), final=False) == 0
        assert _read_all(out.fileno()) == b""
        held_file.write(b"t\n")
        held_file.flush()
        held.pass_on(out.fileno(), final=True)
        assert _read_all(out.fileno()) == shown


def _on_fd_2(tmp_path, work) -> bytes:
    """What ``work`` writes to descriptor 2 (pointed at a file for the length of it)."""
    with open(tmp_path / "console", "w+b") as console:
        saved = os.dup(2)
        os.dup2(console.fileno(), 2)
        try:
            work()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        return _read_all(console.fileno())


def test_a_last_line_without_a_line_end_is_not_lost(tmp_path):
    """Found by mutation testing: with the final pass after the console is handed back
    gone, a last line without a line end was dropped ("delayed, never lost")."""
    from orchestrator.native_log import native_stderr_filtered

    def work():
        with native_stderr_filtered():
            os.write(2, b"a line\ntail without newline")

    assert _on_fd_2(tmp_path, work) == b"a line\ntail without newline"


def test_tensorflows_first_look_for_devices_is_filtered_too(monkeypatch, tmp_path):
    """Found by mutation testing: with TensorFlow's first device lookup out of the
    filter, its native lines (CUDA's, cuInit) reached the console later, unfiltered."""
    import types

    from orchestrator.native_log import _QuietLoader

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    looked = []

    def list_physical_devices():
        looked.append(True)
        os.write(2, b"E0000 00:00:1.0 1 f.cc:1] failed call to cuInit: no driver\n")
        os.write(2, b"Could not find cuda drivers on your machine\n")

    class Loader:
        def exec_module(self, module):
            module.config = types.SimpleNamespace(list_physical_devices=list_physical_devices)

    module = types.ModuleType("tensorflow")
    written = _on_fd_2(tmp_path, lambda: _QuietLoader(Loader()).exec_module(module))
    assert looked == [True]
    assert written == b"Could not find cuda drivers on your machine\n"
