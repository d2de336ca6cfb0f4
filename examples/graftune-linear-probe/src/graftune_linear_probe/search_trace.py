"""``search_trace``: a reporter that writes the search's progress, trial by trial.

Every run gets ``search_trace.csv`` in its run directory: one row per trial in
the order the trials ended, with its score and the best score so far, the
"anytime" curve of a search (how good the best model was after 1, 2, ... trials),
which the leaderboard, ranked by score, does not show. Plot it with pandas::

    pd.read_csv("runs/NAME/search_trace.csv").plot(x="order", y="best_so_far")

It shows the three event hooks of a reporter: ``graftune_run_started`` learns
the recipe's metric and reads what a killed run's trace holds (a resume goes on
with it), ``graftune_trial_finished`` appends a row, ``graftune_run_finished``
forgets the run. Its state is keyed by the run directory, and it imports
nothing heavy. A run that must not write it says
``plugins: {disable: [search_trace]}``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import hookimpl

if TYPE_CHECKING:
    import pandas as pd

    from orchestrator.recipe import Recipe
    from orchestrator.trial import TrialResult

#: The file, in each run directory.
TRACE = "search_trace.csv"
COLUMNS = ("order", "finished_at", "strategy", "trial_id", "status", "score", "best_so_far")

#: Per run directory: the metric, whether larger is better, the best so far, the rows.
_runs: dict[Path, dict[str, Any]] = {}


def _score(value: Any) -> float | None:
    """A trial's score, or ``None`` where it has none (failed, or NaN: diverged)."""
    if value is None or value == "":
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _better(score: float, best: float | None, larger: bool) -> bool:
    return best is None or (score > best if larger else score < best)


@hookimpl
def graftune_run_started(recipe: Recipe, run_dir: Path) -> None:
    state = {
        "metric": recipe.search.metric,
        "larger": recipe.search.direction == "max",
        "best": None,
        "rows": 0,
    }
    trace = Path(run_dir) / TRACE
    if trace.is_file():  # a resumed run: go on from what its trace holds
        text = trace.read_text()
        rows = list(csv.reader(text.splitlines()))
        # A row a kill cut short: the last, where the file does not end its line.
        ended = rows if text.endswith("\n") else rows[:-1]
        whole = [row for row in ended[1:] if len(row) == len(COLUMNS)]
        for row in whole:
            score = _score(row[COLUMNS.index("score")])
            if score is not None and _better(score, state["best"], state["larger"]):
                state["best"] = score
        state["rows"] = len(whole)
        if len(whole) != len(rows) - 1 or rows[:1] != [list(COLUMNS)]:
            # Written again without it (a new file, then renamed over the old one,
            # so that no kill leaves it half written).
            part = trace.with_name(f".{TRACE}.part")
            with part.open("w", newline="") as file:
                csv.writer(file, lineterminator="\n").writerows([COLUMNS, *whole])
            part.replace(trace)
    _runs[Path(run_dir)] = state


@hookimpl
def graftune_trial_finished(result: TrialResult, run_dir: Path) -> None:
    state = _runs.setdefault(
        Path(run_dir), {"metric": "val_accuracy", "larger": True, "best": None, "rows": 0}
    )
    # Ranked as the leaderboard ranks: finished trials and those a scheduler stopped early.
    ranked = result.status in ("ok", "pruned")
    score = _score(getattr(result, state["metric"])) if ranked else None
    if score is not None and _better(score, state["best"], state["larger"]):
        state["best"] = score
    state["rows"] += 1
    trace = Path(run_dir) / TRACE
    new = not trace.is_file()
    with trace.open("a", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        if new:
            writer.writerow(COLUMNS)
        writer.writerow(
            (
                state["rows"],
                result.finished_at,
                result.strategy,
                result.trial_id,
                result.status,
                "" if score is None else score,
                "" if state["best"] is None else state["best"],
            )
        )


@hookimpl
def graftune_run_finished(leaderboard: pd.DataFrame, run_dir: Path) -> None:
    _runs.pop(Path(run_dir), None)
