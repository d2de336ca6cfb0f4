"""Where the test suite's CPU goes, test by test: a pytest plugin.

The suite's budget (15 minutes on 2 CPUs) is a budget of CPU: with two
pytest-xdist workers the machine is busy most of the run, and much of a test's
work is in processes it starts (a CLI run, its Ray, Ray's workers importing
TensorFlow), which pytest's ``--durations`` does not see. This plugin samples
``/proc`` every 0.4 s for each test process and every process under it, living
or ended since, and charges each test the CPU seconds they used while it ran
(its fixtures' setup and teardown included). Processes that live under 0.4 s
may be missed; processes that leave the tree (``ray start`` detaches a test
cluster's) are not counted. Linux only.

Run the suite with it (README's command, plus the plugin)::

    PYTHONPATH=benchmarks .venv/bin/pytest -p suite_cpu --suite-cpu=/tmp/cpu.json

and it writes ``{test id: [cpu seconds, wall seconds]}`` to that file and
prints the heaviest files and tests. Use it to choose what to cut, and measure
a cut by running the suite before and after in the same hour: the machines are
shared, and one run's time moves by 10 % on its own. How fast the machine's
CPUs ran is printed too, the CPU time of one fixed piece of Python work at the
run's start and at its end: on 2026-12-07 the same work (and the same suite)
took 15-40 % more CPU an hour later; compare runs whose probes agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

TICKS = os.sysconf("SC_CLK_TCK")
INTERVAL_S = 0.4


class _Sampler:
    """CPU seconds of this process and each process under it, last seen."""

    def __init__(self) -> None:
        self.me = os.getpid()
        self.lock = threading.Lock()
        self.seen: dict[str, float] = {}

    def scan(self) -> None:
        parents: dict[int, int] = {}
        usage: dict[int, tuple[float, str]] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                text = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue  # ended meanwhile
            fields = text[text.rindex(")") + 2 :].split()
            parents[int(name)] = int(fields[1])
            usage[int(name)] = ((int(fields[11]) + int(fields[12])) / TICKS, fields[19])
        with self.lock:
            for pid, (cpu, started) in usage.items():
                if pid != self.me and self._under_me(pid, parents):
                    self.seen[f"{pid}:{started}"] = cpu

    def _under_me(self, pid: int, parents: dict[int, int]) -> bool:
        for _ in range(20):
            pid = parents.get(pid, 0)
            if pid == self.me:
                return True
            if pid <= 1:
                return False
        return False

    def total(self) -> float:
        own = os.times()
        with self.lock:
            return own.user + own.system + sum(self.seen.values())

    def run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a sample lost is a sample lost
                self.scan()
            time.sleep(INTERVAL_S)


_sampler = _Sampler()
_current: dict[str, object] = {}
_results: dict[str, list[float]] = {}
#: The probe's CPU seconds at the run's start (the controller's).
_speed: list[float] = []


def _probe() -> float:
    """CPU seconds of a fixed piece of Python work, the median of three: the
    machine's speed now."""
    took = []
    for _ in range(3):
        start = time.process_time()
        total = 0
        for i in range(3_000_000):
            total += i * i % 7
        took.append(time.process_time() - start)
    return sorted(took)[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--suite-cpu", metavar="PATH", help="write each test's CPU seconds here")


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if config.getoption("suite_cpu") and not hasattr(config, "workerinput"):
        _speed.append(_probe())


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if not item.config.getoption("suite_cpu"):
        return
    if not _current:  # the first test of this process: sampling starts
        threading.Thread(target=_sampler.run, daemon=True).start()
    _sampler.scan()
    _current.update(test=item.nodeid, cpu=_sampler.total(), wall=time.monotonic())


def pytest_runtest_logfinish(nodeid: str, location: object) -> None:
    if _current.get("test") == nodeid:
        _sampler.scan()
        cpu = _sampler.total() - float(_current["cpu"])  # type: ignore[arg-type]
        wall = time.monotonic() - float(_current["wall"])  # type: ignore[arg-type]
        _results[nodeid] = [round(cpu, 2), round(wall, 2)]


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if not config.getoption("suite_cpu"):
        return
    worker = getattr(config, "workerinput", None)
    path = Path(config.getoption("suite_cpu"))
    if worker is not None:  # an xdist worker: its part, merged by the controller
        part = path.with_name(f"{path.name}.{worker['workerid']}")
        part.write_text(json.dumps(_results))
        return
    merged = dict(_results)
    for part in path.parent.glob(f"{path.name}.gw*"):
        merged.update(json.loads(part.read_text()))
        part.unlink()
    path.write_text(json.dumps(merged, indent=1))
    _report(merged, config)


def _report(results: dict[str, list[float]], config: pytest.Config) -> None:
    write = config.get_terminal_writer().line
    total = sum(cpu for cpu, _ in results.values()) or 1.0
    files: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for nodeid, (cpu, wall) in results.items():
        files[nodeid.split("::")[0]][0] += cpu
        files[nodeid.split("::")[0]][1] += wall
    write(f"suite CPU: {total:.0f} CPU-s charged to {len(results)} tests")
    write(
        f"speed probe: {_speed[0]:.2f} CPU-s at the start, {_probe():.2f} at the end "
        "(the same work: compare runs whose probes agree)"
    )
    write("heaviest files (CPU-s, wall s):")
    for name, (cpu, wall) in sorted(files.items(), key=lambda kv: -kv[1][0])[:12]:
        write(f"  {cpu:7.1f} {wall:7.1f}  {name}")
    write("heaviest tests (CPU-s, wall s, share of all):")
    for nodeid, (cpu, wall) in sorted(results.items(), key=lambda kv: -kv[1][0])[:25]:
        write(f"  {cpu:7.1f} {wall:7.1f} {100 * cpu / total:4.1f}%  {nodeid}")
