"""The live view of a run: trials done, running and failed per strategy, best so far, ETA."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import RenderableType

    from orchestrator.trial import TrialResult

FAILED = ("error", "diverged", "failed")


@dataclass
class _Counts:
    planned: int = 0
    running: set[str] = field(default_factory=set)
    done: int = 0
    pruned: int = 0
    failed: int = 0
    best: float | None = None


class RunProgress:
    """Collects trial events (a :class:`~orchestrator.tuning.ray_tune.TrialListener`) and renders them.

    Args:
        metric: The recipe's metric.
        mode: ``max`` or ``min``.
    """

    def __init__(self, metric: str, mode: str) -> None:
        self.metric = metric
        self.mode = mode
        self.started = time.monotonic()
        self.strategies: dict[str, _Counts] = {}
        self.best: tuple[float, str, str] | None = None
        self._ended: set[tuple[str, str]] = set()
        self._replayed = 0

    def plan(
        self, samples: dict[str, int], metric: str | None = None, mode: str | None = None
    ) -> None:
        """Set how many trials each strategy will run, and what "best" means."""
        self.metric = metric or self.metric
        self.mode = mode or self.mode
        for name, count in samples.items():
            self.strategies.setdefault(name, _Counts()).planned = count

    def trial_started(self, strategy: str, trial_id: str) -> None:
        self.strategies.setdefault(strategy, _Counts()).running.add(trial_id)

    def trial_replayed(self, result: TrialResult) -> None:
        """A trial that ended before a resume: counted, but not in the time per trial."""
        if (result.strategy, result.trial_id) not in self._ended:
            self._replayed += 1
        self.trial_finished(result)

    def trial_finished(self, result: TrialResult) -> None:
        counts = self.strategies.setdefault(result.strategy, _Counts())
        counts.running.discard(result.trial_id)
        if (result.strategy, result.trial_id) in self._ended:
            return  # told again (a resumed search re-reads a stored result): counted once
        self._ended.add((result.strategy, result.trial_id))
        if result.status in FAILED:
            counts.failed += 1
        elif result.status == "pruned":
            counts.pruned += 1
        else:
            counts.done += 1
        value = getattr(result, self.metric, None)
        if value is None or result.status not in ("ok", "pruned"):
            return
        if counts.best is None or self._better(value, counts.best):
            counts.best = value
        if self.best is None or self._better(value, self.best[0]):
            self.best = (value, result.strategy, result.trial_id)

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def eta_seconds(self) -> float | None:
        """Remaining time from the mean time per trial ended in this process, or ``None``
        before the first (trials replayed from before a resume took none of it)."""
        ended = sum(c.done + c.pruned + c.failed for c in self.strategies.values())
        planned = sum(c.planned for c in self.strategies.values())
        timed = ended - self._replayed
        if timed <= 0 or not planned:
            return None
        elapsed = time.monotonic() - self.started
        return max(0.0, elapsed / timed * (planned - ended))

    def __rich__(self) -> RenderableType:
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("strategy", "done", "running", "pruned", "failed", f"best {self.metric}"):
            table.add_column(column)
        for name, c in self.strategies.items():
            ended = c.done + c.pruned + c.failed
            table.add_row(
                name,
                f"{ended}/{c.planned}" if c.planned else str(ended),
                str(len(c.running)),
                str(c.pruned),
                str(c.failed),
                "" if c.best is None else f"{c.best:.4f}",
            )
        elapsed = time.monotonic() - self.started
        eta = self.eta_seconds()
        footer = f"elapsed {_clock(elapsed)}"
        footer += f", about {_clock(eta)} left" if eta is not None else ""
        if self.best is not None:
            footer += f"; best so far {self.best[1]} {self.best[2]} ({self.best[0]:.4f})"
        table.caption = footer
        return table


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def render_text(progress: RunProgress) -> Any:
    """The view as plain text (for tests and logs)."""
    from rich.console import Console

    console = Console(width=120, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(progress)
    return console.export_text()
