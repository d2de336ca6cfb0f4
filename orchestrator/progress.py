"""The live view of a run: trials done, running, pruned and unranked per strategy,
best so far, ETA."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console, ConsoleOptions, RenderResult
    from rich.table import Table
    from rich.text import Text

    from orchestrator.trial import TrialResult

#: The statuses the leaderboard gives no rank: the view's "unranked" column (found by
#: QA: called "failed", the status of a trial whose worker died, they read as such).
UNRANKED = ("error", "diverged", "failed")


@dataclass
class _Counts:
    planned: int = 0
    running: set[str] = field(default_factory=set)
    done: int = 0
    pruned: int = 0
    unranked: int = 0
    best: float | None = None
    #: How many of its trials run at once, where the run knows (embedded Ray's CPUs,
    #: keras-tuner's one); else the most trials seen running at once.
    slots: int | None = None
    #: Seconds each trial timed here took, from its start to its end.
    took: list[float] = field(default_factory=list)
    #: When its search began (the time budget counts from there), and whether it returned.
    search_began: float | None = None
    searched: bool = False


class RunProgress:
    """Collects trial events (a :class:`~orchestrator.tuning.ray_tune.TrialListener`) and renders them.

    Args:
        metric: The recipe's metric.
        mode: ``max`` or ``min``.
        clock: Seconds from an arbitrary start (``time.monotonic``; tests give their own).
    """

    def __init__(self, metric: str, mode: str, *, clock: Callable[[], float] | None = None) -> None:
        self.metric = metric
        self.mode = mode
        self._now = clock if clock is not None else time.monotonic
        self.started = self._now()
        self.strategies: dict[str, _Counts] = {}
        #: The best score so far, its strategy, trial and status (``pruned`` trials rank
        #: in the leaderboard by their last score, but are not the best model).
        self.best: tuple[float, str, str, str] | None = None
        self._best_key: tuple[Any, ...] | None = None
        self.time_budget_s: float | None = None
        self._ended: set[tuple[str, str]] = set()
        self._replayed = 0
        self._starts: dict[tuple[str, str], float] = {}
        #: A running trial's epochs: (the first reported, when), (the last, when), of how many.
        self._epochs: dict[tuple[str, str], tuple[tuple[int, float], tuple[int, float], int]] = {}
        #: The most trials seen running at once: how many run side by side.
        self._slots = 1

    def plan(
        self,
        samples: dict[str, int],
        metric: str | None = None,
        mode: str | None = None,
        time_budget_s: float | None = None,
        slots: dict[str, int] | None = None,
    ) -> None:
        """Set how many trials each strategy will run, what "best" means, the time
        budget of each strategy's search, and how many of a strategy's trials run
        at once where the run knows it."""
        self.metric = metric or self.metric
        self.mode = mode or self.mode
        self.time_budget_s = time_budget_s
        for name, count in samples.items():
            self.strategies.setdefault(name, _Counts()).planned = count
        for name, count in (slots or {}).items():
            self.strategies.setdefault(name, _Counts()).slots = max(1, count)

    def search_started(self, strategy: str) -> None:
        """A strategy's search begins (its time budget counts from now)."""
        self.strategies.setdefault(strategy, _Counts()).search_began = self._now()

    def search_finished(self, strategy: str, ran: int) -> None:
        """A strategy's search returned after ``ran`` trials: a time budget or
        keras-tuner may have ended it short of its plan, and none runs any more."""
        counts = self.strategies.setdefault(strategy, _Counts())
        counts.planned = ran
        counts.running.clear()
        counts.searched = True

    def trial_started(self, strategy: str, trial_id: str) -> None:
        counts = self.strategies.setdefault(strategy, _Counts())
        counts.running.add(trial_id)
        # A trial restarted after its worker died: timed from its first start.
        self._starts.setdefault((strategy, trial_id), self._now())
        self._slots = max(self._slots, sum(len(c.running) for c in self.strategies.values()))

    def trial_progressed(self, strategy: str, trial_id: str, epoch: int, epochs: int) -> None:
        """A running trial ended its ``epoch``-th epoch of ``epochs``: with two
        epochs seen, the estimate has its time per epoch before any trial ends."""
        key = (strategy, trial_id)
        if key not in self._starts or key in self._ended:
            return  # a stored result told again (a resume), or not started here
        now = self._now()
        seen = self._epochs.get(key)
        if seen is None or epoch <= seen[1][0]:
            # Its first epoch, or again from the start (its worker died and it restarted).
            self._epochs[key] = ((epoch, now), (epoch, now), epochs)
        else:
            self._epochs[key] = (seen[0], (epoch, now), epochs)

    def _left(self, key: tuple[str, str], now: float) -> float | None:
        """What a running trial has left, from its epochs so far (``None`` before
        two): the time per epoch since its first reported one (the time to that
        one has its set-up and tracing in it), or the time since its last one
        where that is longer, for the epochs it has left."""
        seen = self._epochs.get(key)
        if seen is None:
            return None
        (first, first_at), (last, last_at), epochs = seen
        if last <= first:
            return None  # one epoch tells the set-up and an epoch apart from nothing
        per_epoch = (last_at - first_at) / (last - first)
        since = now - last_at
        to_go = max(0, epochs - last)
        # Silent for longer than an epoch took: its epochs take at least that long.
        return max(per_epoch, since) * to_go - since if to_go else 0.0

    def trial_replayed(self, result: TrialResult) -> None:
        """A trial that ended before a resume: counted, but not in the time per trial."""
        if not self._counted(result):
            self._replayed += 1
        self._starts.pop((result.strategy, result.trial_id), None)
        self.trial_finished(result)

    def trial_finished(self, result: TrialResult) -> None:
        counts = self.strategies.setdefault(result.strategy, _Counts())
        counts.running.discard(result.trial_id)
        key = (result.strategy, result.trial_id)
        began = self._starts.pop(key, None)
        self._epochs.pop(key, None)
        if self._counted(result):
            self._ended.add(key)
            return  # told again (a resumed search re-reads a stored result): counted once
        self._ended.add(key)
        if began is not None:
            counts.took.append(self._now() - began)
        if result.status in UNRANKED:
            counts.unranked += 1
        elif result.status == "pruned":
            counts.pruned += 1
        else:
            counts.done += 1
        value = getattr(result, self.metric, None)
        if value is None or result.status not in ("ok", "pruned"):
            return
        if counts.best is None or self._better(value, counts.best):
            counts.best = value
        ranked = self._rank_key(result, value)
        if self._best_key is None or ranked < self._best_key:
            self._best_key = ranked
            self.best = (value, result.strategy, result.trial_id, result.status)

    def _rank_key(self, result: TrialResult, value: float) -> tuple[Any, ...]:
        """Where the trial ranks, as the leaderboard ranks (its docs: among equal
        scores the smaller model, then fewer epochs, then the earlier strategy and
        trial): the view named another trial best than the run's ``best:`` line
        where scores tied (found by QA)."""
        params = result.params_total
        order = list(self.strategies).index(result.strategy)
        return (
            -value if self.mode == "max" else value,
            math.inf if params is None else params,
            result.epochs,
            order,
            result.trial_id,
        )

    def _counted(self, result: TrialResult) -> bool:
        """Whether the trial was counted: under its id, or under the one it had
        before a resumed search took its result back under a new one."""
        ids = {result.trial_id, result.earlier_id} - {None}
        return any((result.strategy, trial_id) in self._ended for trial_id in ids)

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def eta_seconds(self) -> float | None:
        """Remaining time, or ``None`` before any trial timed here ended or
        reported two epochs.

        A running trial that reported two epochs or more has what its epochs
        say is left (:meth:`_left`). Each other trial, running or still to
        start, takes the mean time of its strategy's trials that ended in this
        process (from each one's start to its end: the run's set-up, and
        trials replayed from before a resume, take none of it), less what it
        has run; a strategy with none ended yet takes the mean time its running
        trials will take by their epochs, or else the mean of all, and at least
        the time its longest running trial has run. Shared among as many slots
        as the strategy's trials run at once (:meth:`plan`'s, else as many as
        were seen running at once: found by QA, the estimate halved when a
        second trial started a second after the first); no more than what is left of each
        search's ``time_budget_s``. Strategies are searched one after another:
        their times add up.
        """
        now = self._now()
        took = [t for c in self.strategies.values() for t in c.took]
        left_of = {key: left for key in self._epochs if (left := self._left(key, now)) is not None}
        # The whole time of each running trial that reported two epochs.
        projected = {key: now - self._starts[key] + left for key, left in left_of.items()}
        if not took and not projected:
            return None
        overall = _mean(took) if took else _mean(list(projected.values()))
        left = 0.0
        for name, c in self.strategies.items():
            if c.searched:
                continue
            running = {(name, t): now - self._starts.get((name, t), now) for t in c.running}
            # A strategy none of whose trials ended yet takes at least as long a trial
            # as its longest running one: fine_tune's trials ran 30-70 s after 2-6 s
            # ones, and "about 0:12 left" stood still for 40 s.
            own = [projected[key] for key in running if key in projected]
            guess = _mean(own) if own else overall
            mean = _mean(c.took) if c.took else max([guess, *running.values()])
            to_start = max(0, c.planned - (c.done + c.pruned + c.unranked) - len(running))
            # Found by QA: a trial past its strategy's mean counted as done, and the
            # view said "about 0:00 left" for the 10 s it still ran.
            under_way = sum(
                left_of[key] if key in left_of else max(0.0, mean - ran)
                for key, ran in running.items()
            )
            seconds = (mean * to_start + under_way) / (c.slots or self._slots)
            if self.time_budget_s is not None:
                began = c.search_began if c.search_began is not None else now
                seconds = min(seconds, max(0.0, self.time_budget_s - (now - began)))
            left += seconds
        return left

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.measure import Measurement

        table = self._table(f"best {self.metric}")
        wide = options.update(width=10_000)  # how wide the table would be, not cut to fit
        if Measurement.get(console, wide, table).maximum > options.max_width:
            # Found by QA: on 60 columns the counts' headers were cut ("runni…") for
            # the metric's name over a column of 6-digit numbers; the footer names it.
            table = self._table("best")
        yield table
        yield self._footer(named=table.columns[2].header != f"best {self.metric}")

    def _table(self, best: str) -> Table:
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        # Found by QA: on a terminal of 50 columns the strategies' names were cut
        # ("feature…"), and the footer, the table's caption, wrapped to the table's
        # width, centred. Names stay whole (the counts give way); the footer is a
        # line of its own, as wide as the terminal. The counts of done and the best
        # stay whole too; running, pruned and unranked give way first.
        longest = max((len(name) for name in self.strategies), default=8)
        table.add_column("strategy", no_wrap=True, min_width=min(longest, 30))
        table.add_column("done", no_wrap=True, min_width=5)
        # The best beside done: what a terminal too narrow for all crops is the last.
        table.add_column(best, no_wrap=True, min_width=6)
        for column in ("running", "pruned", "unranked"):
            table.add_column(column, min_width=3)
        for name, c in self.strategies.items():
            ended = c.done + c.pruned + c.unranked
            table.add_row(
                name,
                f"{ended}/{c.planned}" if c.planned else str(ended),
                "" if c.best is None else f"{c.best:.4f}",
                str(len(c.running)),
                str(c.pruned),
                str(c.unranked),
            )
        return table

    def _footer(self, *, named: bool) -> Text:
        from rich.text import Text

        elapsed = self._now() - self.started
        eta = self.eta_seconds()
        footer = f"elapsed {_clock(elapsed)}"
        footer += f", about {_clock(eta)} left" if eta is not None else ""
        if self.best is not None:
            value, strategy, trial_id, status = self.best
            pruned = ", pruned" if status == "pruned" else ""
            metric = f"{self.metric} " if named else ""
            footer += f"; best so far {strategy} {trial_id} ({metric}{value:.4f}{pruned})"
        return Text(footer)


def tell_epoch(listener: Any, strategy: str, trial_id: str, epoch: int, epochs: int) -> None:
    """Tell a listener of a trial's epoch, if it listens for epochs (one of a
    caller's own, written before listeners heard of them, may not)."""
    progressed = getattr(listener, "trial_progressed", None)
    if progressed is not None:
        progressed(strategy, trial_id, epoch, epochs)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def render_text(progress: RunProgress, width: int = 120) -> Any:
    """The view as plain text (for tests and logs), on a terminal ``width`` columns wide."""
    import io

    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO())
    console.print(progress)
    return console.export_text()
