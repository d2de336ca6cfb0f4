"""The search_trace reporter: one row per trial, the best so far, and a resume."""

from __future__ import annotations

import csv

import graftune_linear_probe.search_trace
from graftune_linear_probe.search_trace import TRACE

RECIPE = {
    "name": "traced",
    "seed": 0,
    "data": {"source": "sklearn:iris"},
    "strategies": {"scratch_mlp": {"num_samples": 3}},
    "search": {"max_epochs": 2, "batch_size": 32},
}


def rows(run_dir):
    with (run_dir / TRACE).open(newline="") as file:
        return list(csv.DictReader(file))


def test_a_row_per_trial_the_best_so_far_and_a_resume(graftune_register, graftune_run):
    host = graftune_register(graftune_linear_probe.search_trace)
    board = graftune_run(RECIPE, host=host)
    trace = rows(board.attrs["run_dir"])
    assert [row["order"] for row in trace] == ["1", "2", "3"]
    assert sorted(row["trial_id"] for row in trace) == sorted(board["trial_id"])
    best = [float(row["best_so_far"]) for row in trace]
    assert best == sorted(best)  # val_accuracy: the best so far only grows
    assert best[-1] == board["val_accuracy"].max()
    for row in trace:  # each score is its trial's, as the leaderboard has it
        trial = board[board["trial_id"] == row["trial_id"]].iloc[0]
        assert float(row["score"]) == trial["val_accuracy"]

    # The same run directory resumed (one run serves both: each costs seconds).
    resumed_goes_on_with_its_trace(board.attrs["run_dir"])


def resumed_goes_on_with_its_trace(run_dir):
    from orchestrator.recipe import as_recipe
    from orchestrator.trial import TrialResult

    # As if killed after the first trial, in the middle of writing the second's row.
    header, first = (run_dir / TRACE).read_text().splitlines()[:2]
    (run_dir / TRACE).write_text(f"{header}\n{first}\n{first[:-1]}")  # 7 fields, cut
    kept = float(first.split(",")[5])
    # What the resume calls: the run started again, then each trial still to run.
    trace = graftune_linear_probe.search_trace
    trace.graftune_run_started(recipe=as_recipe(RECIPE), run_dir=run_dir)
    worse = TrialResult("scratch_mlp", "t9", "ok", {}, val_accuracy=kept / 2, finished_at=1.0)
    trace.graftune_trial_finished(result=worse, run_dir=run_dir)
    failed = TrialResult("scratch_mlp", "t10", "error", {}, error="ValueError: boom")
    trace.graftune_trial_finished(result=failed, run_dir=run_dir)
    assert len(rows(run_dir)) == 3  # the torn row is gone
    last = rows(run_dir)[-2:]
    assert [(r["order"], r["trial_id"], r["status"]) for r in last] == [
        ("2", "t9", "ok"),
        ("3", "t10", "error"),
    ]
    assert [r["best_so_far"] for r in last] == [str(kept), str(kept)]  # the first's, kept
    assert last[1]["score"] == ""  # a failed trial has none
