"""The search engine: schedulers, searchers, keras-tuner, retries, resume, GPU packing."""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import weakref
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.errors import RunDirError, RunFailed
from tests import fixture_plugins
from tests.search_helpers import GRAFTUNE, ROOT, EpochsHeard, run, write_recipe

pytestmark = pytest.mark.slow


def test_strategies_that_break_the_fit_contract_fail_their_trials_not_the_search(
    by_value, tmp_path
):
    # Without the metric in an epoch's report, Ray Tune would stop the whole run.
    from orchestrator.leaderboard import read_leaderboard

    # Each breaks its own trials; the searches after it run (a good strategy beside
    # failing ones is test_run's e2e run).
    recipe = write_recipe(
        tmp_path,
        "{num_samples: 1, max_epochs: 2}",
        "{silent_fit_mlp: {}, overtime_mlp: {}, exiting_mlp: {space: {width: 9}}}",
    )
    with pytest.raises(RunFailed):
        run(recipe)
    frame = read_leaderboard(next((tmp_path / "runs").iterdir())).set_index("strategy")
    errors = frame["error"].to_dict()
    assert len(frame) == 3 and (frame["status"] == "error").all(), errors
    # Its own error, not a worker's death retried (Tune's SystemExit, a prune, is not one).
    assert errors["exiting_mlp"] == "SystemExit: exits on purpose at width 9"
    assert "pass `callbacks` to every model.fit call" in errors["silent_fit_mlp"]
    assert "trained more than the 2 epochs it was given" in errors["overtime_mlp"]


def test_errors_hard_to_say_are_the_trials_errors_and_read_back(by_value, tmp_path):
    """Found by QA: a message of 140,000 characters passed the csv module's field
    limit, and `leaderboard`, `report` and `--resume` of the run failed; one with
    lone surrogates, or whose str() raised, broke the trial's own error handling, so
    that it passed for a dead worker, ran twice, and lost its error."""
    from orchestrator.cli import app
    from orchestrator.leaderboard import read_leaderboard

    recipe = write_recipe(
        tmp_path, "{algorithm: grid, max_epochs: 1, max_concurrent_trials: 1}", "unsayable: {}"
    )
    with pytest.raises(RunFailed) as failed:
        run(recipe)
    assert max(map(len, str(failed.value).splitlines())) < 600  # the summary cuts them
    run_dir = next((tmp_path / "runs").iterdir())
    frame = read_leaderboard(run_dir)
    # From Python, the error says where the run is (found by QA: its message alone).
    assert failed.value.run_dir == run_dir
    assert failed.value.leaderboard.equals(frame)
    assert list(frame["status"]) == ["error"] * 3
    errors = sorted(frame["error"])
    assert errors[0] == "RuntimeError: no file \\udcff\\udcfe here"
    assert errors[1].startswith("RuntimeError: xxx") and errors[1].endswith(
        "xxx ... (200,014 characters; error.txt has them all)"
    )
    assert len(errors[1]) < 2100
    assert errors[2] == "_Unsayable: (its message cannot be shown: str() of it raised)"
    whole = [path.read_text() for path in run_dir.glob("trials/unsayable/*/error.txt")]
    assert len(whole) == 3 and any("x" * 200_000 in text for text in whole)
    listed = CliRunner().invoke(app, ["leaderboard", str(run_dir), "--format", "csv"])
    assert listed.exit_code == 0, listed.output


def test_a_second_run_in_the_process_is_refused_and_a_sessions_error_filter_is_no_fault(
    ray_session, tmp_path
):
    """Found by QA, from a notebook: a run in a second thread took the first's Ray
    for the caller's and lost it when the first ended, and Ray then ended the
    process; under warnings.simplefilter("error"), a DeprecationWarning of Keras'
    own model.save() failed every run as the built-in strategy's fault."""
    import threading
    import warnings

    from orchestrator import RunInProgress

    recipe = write_recipe(tmp_path, "{num_samples: 1, max_epochs: 1}")
    started, go_on = threading.Event(), threading.Event()
    outcome = {}

    def slow_echo(line: str) -> None:
        if line.startswith("run: "):  # its run directory is made: the run is going
            started.set()
            go_on.wait(120)

    def first() -> None:
        try:
            outcome["first"] = run(recipe, echo=slow_echo)
        except BaseException as exc:
            outcome["first"] = exc
            started.set()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        thread = threading.Thread(target=first)
        thread.start()
        try:
            assert started.wait(120)
            with pytest.raises(RunInProgress, match="another graftune run is going on"):
                run(recipe, run_dir=tmp_path / "second")
        finally:
            go_on.set()
            thread.join(300)
        assert not (tmp_path / "second").exists()
        assert warnings.filters[0][0] == "error"  # the session's filter, put back
    first_outcome = outcome["first"]
    assert not isinstance(first_outcome, BaseException), first_outcome
    assert list(first_outcome.leaderboard["status"]) == ["ok"]
    again = run(recipe, run_dir=tmp_path / "after")  # the process runs the next one
    assert list(again.leaderboard["status"]) == ["ok"]


def test_a_trial_whose_strategy_raised_is_an_error_under_a_scheduler_too(by_value, tmp_path):
    """Found by QA: a trial that raised reported the worst score, for its searcher,
    before it wrote its result; ASHA and Hyperband stopped it in that report, and it
    was listed as pruned, with no score and no error (error.txt held it)."""
    from orchestrator.leaderboard import read_leaderboard

    recipe = write_recipe(
        tmp_path,
        "{algorithm: grid, num_samples: 2, max_epochs: 2, max_concurrent_trials: 1, "
        "scheduler: asha, grace_period: 1, reduction_factor: 2}",
        "exiting_mlp: {}",  # its trials of width 9 raise in fit, before an epoch ends
    )
    run(recipe)
    frame = read_leaderboard(next((tmp_path / "runs").iterdir()))
    raised = frame[frame["width"] == 9]
    assert len(frame) == 4 and len(raised) == 2, frame
    assert (raised["status"] == "error").all(), raised
    assert (raised["error"] == "SystemExit: exits on purpose at width 9").all(), raised


#: The searches of test_each_scheduler_and_searcher_runs, by its ids.
SCHEDULER_SEARCHES = {
    # Random search (the default) and grid search also hold the trials to
    # max_concurrent_trials: two CPUs and one per trial would run two at once.
    "fifo": "{scheduler: fifo, num_samples: 3, max_epochs: 2, max_concurrent_trials: 1}",
    "asha": "{scheduler: asha, grace_period: 1, reduction_factor: 2, num_samples: 6,"
    " max_epochs: 4, max_concurrent_trials: 1}",
    # Hyperband spreads trials over three brackets; only the first prunes
    # at epoch 1, so it needs more trials than ASHA's single bracket
    # (both run one trial at a time so that who reaches a rung first does
    # not vary with the machine's load).
    "hyperband": "{scheduler: hyperband, grace_period: 1, reduction_factor: 2, num_samples: 8,"
    " max_epochs: 4, max_concurrent_trials: 1}",
    "grid": "{algorithm: grid, max_epochs: 2, max_concurrent_trials: 1}",
    "bayesian": "{algorithm: bayesian, num_samples: 3, max_epochs: 2, max_concurrent_trials: 1}",
}
#: What the fifo and asha runs add to their recipes for the other tests that read
#: them (each run costs a search's fresh workers, which import TensorFlow): none of
#: it bears on what test_each_scheduler_and_searcher_runs checks.
SCHEDULER_EXTRAS = {
    # test_keep_models_best_keeps_each_strategys_best_model_here_and_in_storage, and
    # test_a_worker_within_its_memory_bound_runs_its_searchs_trials_in_turn (the
    # default worker_memory_mb, 4096).
    "fifo": "storage: file://{store}/\nkeep_models: best\n",
    # test_trials_a_scheduler_stopped_reach_uri_storage.
    "asha": "storage: file://{store}/\n",
    # test_mixed_precision_without_gpus_is_said_to_change_nothing.
    "grid": "resources: {{mixed_precision: true}}\n",
}


@pytest.fixture(scope="module")
def scheduler_runs(ray_session, tmp_path_factory):
    """Makes the run of a search of :data:`SCHEDULER_SEARCHES` the first time a
    test asks for it, then gives that one (tests read it, never change it).

    Returns:
        A function of the search's id giving the run's outcome, its recipe, the folder of its
        ``storage`` (its run is named for the id there), and the signal handlers
        of this process before and after the run.
    """
    from types import SimpleNamespace

    made = {}

    def make(name: str) -> SimpleNamespace:
        if name not in made:
            folder = tmp_path_factory.mktemp(f"search-{name}")
            recipe = write_recipe(folder, SCHEDULER_SEARCHES[name])
            store = folder / "store"
            extra = SCHEDULER_EXTRAS.get(name, "").format(store=store)
            recipe.write_text(recipe.read_text() + extra)
            numbers = (signal.SIGINT, signal.SIGUSR1)
            before = {number: signal.getsignal(number) for number in numbers}
            progress = EpochsHeard("val_accuracy", "max", runs=folder / "runs")
            outcome = run(recipe, run_name=name, listener=progress)
            after = {number: signal.getsignal(number) for number in numbers}
            made[name] = SimpleNamespace(
                outcome=outcome,
                recipe=recipe,
                store=store,
                before=before,
                after=after,
                heard=progress.heard,
                told_with_history=progress.told_with_history,
            )
        return made[name]

    return make


@pytest.mark.parametrize("name", list(SCHEDULER_SEARCHES))
def test_each_scheduler_and_searcher_runs(scheduler_runs, name):
    from orchestrator.accelerator import backend as keras_backend
    from orchestrator.trial import read_result

    search = SCHEDULER_SEARCHES[name]
    made = scheduler_runs(name)
    outcome = made.outcome
    # Tune's handlers are the search's alone (found by QA: a SIGUSR1 to the caller's
    # process after a run printed Tune's "Stop signal received" and ended nothing).
    assert made.after == made.before
    frame = outcome.leaderboard
    if "grid" in search:
        # Every value of the one searched choice, once.
        assert sorted(frame["hidden_layers"]) == [1, 2]
    else:
        assert len(frame) == int(re.search(r"num_samples: (\d+)", search).group(1))
        # The first trial runs scratch_mlp's defaults (2 hidden layers, Adam at 1e-3):
        # a log-uniform draw never gives 1e-3 exactly.
        defaults = frame[frame["learning_rate"] == 1e-3]
        assert list(defaults["hidden_layers"]) == [2]
        assert defaults["trial_id"].iloc[0].endswith("_00000"), frame["trial_id"]
    # Every searcher numbers its trials in the order it made them (Optuna's were
    # random hex: tied trials ranked, and the best was chosen, by chance).
    assert len({t.split("_")[0] for t in frame["trial_id"]}) == 1, frame["trial_id"]
    assert sorted(int(t.split("_")[1]) for t in frame["trial_id"]) == list(range(len(frame)))
    assert set(frame["status"]) <= {"ok", "pruned"}
    assert (frame["status"] == "ok").any()
    # The live view heard each trial's epochs as they ended, of the search's
    # max_epochs (its estimate before any trial ends comes from them).
    max_epochs = int(re.search(r"max_epochs: (\d+)", search).group(1))
    for trial_id, epochs in zip(frame["trial_id"], frame["epochs"], strict=True):
        heard = [(e, of) for _, t, e, of in made.heard if t == trial_id]
        assert heard == [(e, max_epochs) for e in range(1, epochs + 1)], (trial_id, made.heard)
    if "asha" in search or "hyperband" in search:
        # Successive halving stops someone before max_epochs (factor 2).
        assert (frame["epochs"] < 4).any()
        assert (frame.loc[frame["status"] == "pruned", "epochs"] < 4).all()
        # A pruned trial has its costs up to where it stopped (from its reports).
        pruned = frame[frame["status"] == "pruned"]
        assert (pruned["fit_seconds"] > 0).all() and (pruned["peak_memory_mb"] > 0).all()
        assert (pruned["params_trainable"] <= pruned["params_total"]).all()
        assert pruned["params_total"].notna().all()
        # A pruned trial's learning curve comes from the epochs it reported.
        import pandas as pd

        for _, row in frame[frame["status"] == "pruned"].iterrows():
            history = pd.read_csv(
                outcome.run_dir / "trials" / "scratch_mlp" / row.trial_id / "history.csv"
            )
            # loss and val_objective: Keras' (with the λ penalty); val_loss: the cross-entropy.
            assert list(history.columns) == [
                "accuracy",
                "cross_entropy",
                "loss",
                "val_accuracy",
                "val_loss",
                "val_objective",
                "epoch",
            ]
            assert list(history["epoch"]) == list(range(1, row.epochs + 1))
            # Written when it was stopped, before its end was told (found by QA: only
            # once the search had ended, so that a run killed midway had none, and the
            # MLflow reporter, told of the trial, found none).
            assert row.trial_id in made.told_with_history
            # Its TensorBoard log has every epoch it reported, counted from 1 as in
            # history.csv (found by QA: the epoch it was stopped at was missing).
            from tensorboard.backend.event_processing.event_accumulator import (
                EventAccumulator,
            )

            logs = outcome.run_dir / "trials" / "scratch_mlp" / row.trial_id / "tensorboard"
            events = EventAccumulator(str(logs / "validation"))
            events.Reload()
            steps = [event.step for event in events.Tensors("epoch_accuracy")]
            assert steps == list(range(1, row.epochs + 1)), (row.trial_id, steps)
            # Recorded when it was stopped: a resume, whatever Tune's saved state
            # says of it, reads it back instead of running it again.
            stored = read_result(outcome.run_dir / "trials" / "scratch_mlp" / row.trial_id)
            assert (stored.status, stored.epochs) == ("pruned", row.epochs)
            # On the backend it trained on, as a finished trial says (it was null).
            assert stored.backend == keras_backend()
            # When it ran, as a finished trial says: a timeline of the search needs it.
            assert stored.started_at < stored.finished_at <= time.time()
    # One trial at a time: each finished trial ended before the next one began.
    results = [
        json.loads(path.read_text())
        for path in outcome.run_dir.glob("trials/scratch_mlp/*/result.json")
    ]
    spans = sorted(
        (result["started_at"], result["finished_at"])
        for result in results
        if result["status"] == "ok"
    )
    assert len(spans) == (frame["status"] == "ok").sum()
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans
    # Held by the searcher itself, or by Tune's limiter: Tune ignores nothing.
    assert "will be ignored" not in (outcome.run_dir / "ray.log").read_text()


def _worker_pids(run_dir: Path, strategy: str) -> dict[str, set[int]]:
    """Trial id -> the pids of the workers that reported for it, from Tune's own results."""
    pids = {}
    for results in (run_dir / "ray" / strategy).glob("*/result.json"):
        lines = results.read_text().splitlines()
        pids[results.parent.name] = {json.loads(line)["pid"] for line in lines if line.strip()}
    return pids


@pytest.mark.parametrize(
    ("bound", "scheduler", "workers"),
    [
        # 1 MiB: every worker is past the bound at its trial's last report, whether
        # the trial ended itself (ASHA lets the first through its rung at 1 epoch of
        # 2) or the scheduler ended it. (fifo with 1 MiB added nothing to this.)
        (1, "asha", 3),
        # The default bound, one worker for three trials in turn: the fifo run of
        # test_each_scheduler_and_searcher_runs, read by
        # test_a_worker_within_its_memory_bound_runs_its_searchs_trials_in_turn.
    ],
)
def test_a_worker_past_its_memory_bound_is_replaced(
    ray_session, tmp_path, bound, scheduler, workers
):
    recipe = write_recipe(
        tmp_path,
        f"{{algorithm: grid, max_epochs: 2, max_concurrent_trials: 1, worker_memory_mb: {bound},"
        f" scheduler: {scheduler}, grace_period: 1, reduction_factor: 2}}",
        "scratch_mlp: {space: {hidden_layers: {choice: [1, 2, 3]}, width: 16, lambda: 1.0e-5}}",
    )
    outcome = run(recipe)
    frame = outcome.leaderboard
    assert sorted(frame["hidden_layers"]) == [1, 2, 3]
    assert set(frame["status"]) <= {"ok", "pruned"}, frame[["status", "error"]]
    assert (frame["status"] == "pruned").any() == (scheduler == "asha"), frame[["status", "epochs"]]
    assert (frame["status"] == "ok").any(), frame[["status", "epochs"]]
    assert set(frame["retries"]) == {0}
    pids = _worker_pids(outcome.run_dir, "scratch_mlp")
    assert len(pids) == 3 and all(len(p) == 1 for p in pids.values()), pids
    assert len(set().union(*pids.values())) == workers, pids


def test_a_worker_within_its_memory_bound_runs_its_searchs_trials_in_turn(scheduler_runs):
    # The default bound (worker_memory_mb 4096), which no tiny trial's worker passes.
    outcome = scheduler_runs("fifo").outcome
    frame = outcome.leaderboard
    assert len(frame) == 3
    assert set(frame["status"]) == {"ok"}, frame[["status", "error"]]
    assert set(frame["retries"]) == {0}
    pids = _worker_pids(outcome.run_dir, "scratch_mlp")
    assert len(pids) == 3 and all(len(p) == 1 for p in pids.values()), pids
    assert len(set().union(*pids.values())) == 1, pids


def test_a_worker_is_retired_only_past_its_bound_and_while_tune_knows_it(caplog):
    from orchestrator.tuning.ray_tune import WORKER_RSS, retire_worker

    class Controller:
        def __init__(self):
            self._trial_to_actor = {"trial": "actor"}
            self._started_actors = {"actor", "other"}

    controller = Controller()
    assert not retire_worker(controller, "trial", {WORKER_RSS: 100.0}, 100)
    assert not retire_worker(controller, "trial", {WORKER_RSS: 900.0}, None)
    assert not retire_worker(controller, "trial", {}, 100)
    assert not retire_worker(controller, "unknown", {WORKER_RSS: 900.0}, 100)
    assert controller._started_actors == {"actor", "other"}
    with caplog.at_level(logging.WARNING, logger="orchestrator.tuning.ray_tune"):
        assert retire_worker(controller, "trial", {WORKER_RSS: 100.5}, 100)
    assert controller._started_actors == {"other"}
    assert "held 100 MiB at its last report (search.worker_memory_mb is 100)" in caplog.text
    # A Tune without these attributes: nothing is retired, nothing breaks.
    assert not retire_worker(object(), "trial", {WORKER_RSS: 900.0}, 100)

    # Found by QA: a bound below what a fresh worker holds (TensorFlow's 800 MiB)
    # retired every worker, with a warning after each trial: one a search now.
    from orchestrator.tuning.ray_tune import _RetiresWorkers

    class Base:
        def on_trial_complete(self, tune_controller, trial, result):
            pass

    class Scheduler(_RetiresWorkers, Base):
        memory_mb = 100

    scheduler = Scheduler()
    controller._trial_to_actor = {f"t{i}": f"a{i}" for i in range(3)}
    controller._started_actors = {"a0", "a1", "a2"}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="orchestrator.tuning.ray_tune"):
        for index in range(3):
            scheduler.on_trial_complete(controller, f"t{index}", {WORKER_RSS: 900.0})
    assert controller._started_actors == set()
    levels = [(r.levelname, "said once a search" in r.getMessage()) for r in caplog.records]
    assert levels == [("WARNING", True), ("INFO", False), ("INFO", False)]


def test_shrinking_a_worker_acts_only_past_the_bound(caplog):
    from orchestrator.tuning.ray_tune import shrink_worker

    before, after = shrink_worker(10**9)
    assert before == after > 0
    with caplog.at_level(logging.WARNING, logger="orchestrator.tuning.ray_tune"):
        before, after = shrink_worker(1)
    assert after > 1
    assert "search.worker_memory_mb is 1" in caplog.text


def test_hyperband_brackets_follow_the_seed_and_leave_numpy_alone():
    import numpy as np

    from orchestrator.recipe import SearchSpec
    from orchestrator.tuning.ray_tune import _scheduler

    class Trial:
        def __init__(self, trial_id):
            self.trial_id = trial_id

    search = SearchSpec(scheduler="hyperband", grace_period=1, reduction_factor=2, max_epochs=8)

    def brackets(seed):
        scheduler = _scheduler(search, seed)
        scheduler.set_search_properties("val_accuracy", "max")
        assert len(scheduler._brackets) == 4  # grace 1, 2, 4 and 8 epochs
        # With the recipe's reduction_factor (found by mutation testing: left out, Ray's
        # default 4 went unnoticed): a first bracket's rungs at 1, 2, 4, 8 epochs.
        assert scheduler._reduction_factor == 2
        assert sorted(rung for rung, _ in scheduler._brackets[0]._rungs) == [1, 2, 4, 8]
        for i in range(40):
            scheduler.on_trial_add(None, Trial(str(i)))
        return [scheduler._brackets.index(scheduler._trial_info[str(i)]) for i in range(40)]

    np.random.seed(0)
    expected_next = np.random.random()
    np.random.seed(0)
    first = brackets(5)
    assert np.random.random() == expected_next  # the global generator was not drawn from
    assert brackets(5) == first
    assert brackets(6) != first
    assert len(set(first)) > 1


@pytest.mark.parametrize(
    ("max_epochs", "factor", "count"), [(1000, 10, 4), (243, 3, 6), (8, 2, 4), (9, 2, 4)]
)
def test_hyperband_counts_its_brackets_whole_where_the_log_is_inexact(max_epochs, factor, count):
    """Found by mutation testing: log(1000, 10) is 2.9999999999999996 in floating point,
    and without its allowance Hyperband had one bracket fewer than max_epochs and
    reduction_factor give (no test had such a log)."""
    from orchestrator.recipe import SearchSpec
    from orchestrator.tuning.ray_tune import _scheduler

    search = SearchSpec(
        scheduler="hyperband", grace_period=1, reduction_factor=factor, max_epochs=max_epochs
    )
    assert len(_scheduler(search, 0)._brackets) == count


def test_time_budget_stops_the_search(ray_session, tmp_path):
    from orchestrator.leaderboard import read_leaderboard
    from orchestrator.reporters import read_events
    from orchestrator.trial import read_result

    # 20 s: Tune's budget counts from the search's start, and under load a fresh worker
    # took over 10 s to import TensorFlow, so that no trial started (a CI run beside
    # another search). Its trials wait after each epoch rather than train for 20 s: a
    # trial lasts as long, and the CPU is the rest of the session's.
    recipe = write_recipe(
        tmp_path,
        "{num_samples: 50, max_epochs: 12, time_budget_s: 20, max_concurrent_trials: 1}",
        "paced_mlp: {space: {hidden_layers: {choice: [1, 2]}, width: 16, lambda: 1.0e-5}}",
    )
    said = []
    # On a busy machine the budget may end before any trial does.
    with contextlib.suppress(RunFailed):
        run(recipe, echo=said.append)
    (run_dir,) = (tmp_path / "runs").iterdir()
    frame = read_leaderboard(run_dir)
    # The budget stopped the search; trials it left unstarted are not listed.
    assert 1 <= len(frame) < 50
    assert frame["hidden_layers"].notna().all()
    # The trial it cut midway (Tune calls no callback for it) was told of like the
    # others, and has its result, so a resume does not run it again.
    told = [e["trial_id"] for e in read_events(run_dir) if e["event"] == "trial_finished"]
    assert sorted(told) == sorted(frame["trial_id"]), frame[["trial_id", "status", "epochs"]]
    for trial_id in frame["trial_id"]:
        assert read_result(run_dir / "trials" / "paced_mlp" / trial_id) is not None
    if (frame["status"] == "pruned").any():  # and the run says why, as its other warnings
        assert any(
            line.startswith("warning: paced_mlp: search.time_budget_s (20 s) ran out: 1 trial")
            for line in said
        ), said
    # How many ran, as README says and keras_tuner's search says (found by QA: not said).
    ran = len(frame)
    assert (
        f"warning: paced_mlp: search.time_budget_s (20 s) ran out: {ran} of 50 trials ran, "
        f"the other {50 - ran} were not started"
    ) in said, said


def test_keras_tuner_backend_gives_the_same_columns_as_ray(wine_run, tmp_path):
    # The session's CSV run searched scratch_mlp's default space through Ray.
    from orchestrator.leaderboard import read_leaderboard

    ray_frame = read_leaderboard(wine_run.run_dir)
    kt_dir = tmp_path / "kt"
    kt_dir.mkdir()
    kt_outcome = run(
        write_recipe(
            kt_dir, "{backend: keras_tuner, num_samples: 2, max_epochs: 2}", "scratch_mlp: {}"
        )
    )
    kt_frame = kt_outcome.leaderboard
    assert list(kt_frame.columns) == list(ray_frame.columns)
    assert len(kt_frame) == 2
    assert (kt_frame["status"] == "ok").all()
    assert (kt_outcome.run_dir / "best" / "model.keras").is_file()
    assert not (kt_outcome.run_dir / "ray").exists()


@pytest.mark.parametrize(
    "search",
    [
        "{backend: keras_tuner, scheduler: hyperband, max_epochs: 3, reduction_factor: 3}",
        "{backend: keras_tuner, algorithm: grid, max_epochs: 1}",
        "{backend: keras_tuner, algorithm: bayesian, num_samples: 3, max_epochs: 1}",
    ],
    ids=["hyperband", "grid", "bayesian"],
)
def test_keras_tuner_oracles(tmp_path, search):
    strategies = "scratch_mlp: {space: {hidden_layers: {choice: [1, 2]}, width: 16, lambda: 1.0e-5"
    strategies += ", learning_rate: 0.01}}" if "grid" in search else "}}"

    class Caller:  # an object of the caller's, held in a reference cycle
        pass

    cycle = Caller()
    cycle.itself = cycle
    held = weakref.ref(cycle)
    frame = run(write_recipe(tmp_path, search, strategies)).leaderboard
    assert (frame["status"] == "ok").all()
    # The in-process trials left the caller's objects collectable: they had frozen
    # them for good (gc.freeze), and a cycle dropped after the run was never freed.
    assert gc.get_freeze_count() == 0
    del cycle
    gc.collect()
    assert held() is None
    if "grid" in search:
        assert sorted(frame["hidden_layers"]) == [1, 2]
    else:  # the first configuration is scratch_mlp's defaults
        first = frame.sort_values("trial_id").iloc[0]  # kt0..., in the order they ran
        assert (first["hidden_layers"], first["learning_rate"]) == (2, 1e-3)
    if "hyperband" in search:
        assert set(frame["epochs"]) >= {1, 3}
        # As many trials as the run's first line says (num_samples does not apply).
        assert len(frame) == 6


def test_a_strategy_that_calls_sys_exit_fails_its_trial_not_the_keras_tuner_run(tmp_path):
    # Found by QA: keras_tuner's one process ended with the strategy's message, no
    # leaderboard, and a resume ended the same way.
    from orchestrator.leaderboard import read_leaderboard

    recipe = write_recipe(
        tmp_path, "{backend: keras_tuner, algorithm: grid, max_epochs: 1}", "exiting_mlp: {}"
    )
    run(recipe)
    frame = read_leaderboard(next((tmp_path / "runs").iterdir())).set_index("width")
    assert sorted(frame.index) == [8, 9]
    assert frame.loc[9, "status"] == "error"
    assert frame.loc[9, "error"] == "SystemExit: exits on purpose at width 9"
    assert frame.loc[8, "status"] == "ok"


def test_a_keras_tuner_hyperband_that_runs_short_of_its_count_says_so(tmp_path):
    """Found by QA: it said "searching 6 trials", ran fewer, and said nothing (the
    other searches say so)."""
    from orchestrator.cli import app

    recipe = write_recipe(
        tmp_path,
        "{backend: keras_tuner, scheduler: hyperband, max_epochs: 3, reduction_factor: 3}",
        "scratch_mlp: {space: {hidden_layers: 1, width: {choice: [8, 16]}, lambda: 0.0, "
        "learning_rate: 0.01}}",  # two configurations for 6 trials
    )
    # --quiet too: a warning still says so, on stderr (found by QA: -q hid them all).
    result = CliRunner().invoke(app, ["run", str(recipe), "--quiet"])
    assert result.exit_code == 0, result.output
    board = next((tmp_path / "runs").iterdir()) / "leaderboard.csv"
    ran = len(board.read_text().splitlines()) - 1  # its header
    assert ran < 6
    assert (
        f"warning: scratch_mlp: keras-tuner ended the search after {ran} of 6 trials: its "
        "brackets had fewer configurations to draw or promote"
    ) in result.stderr
    assert "warning" not in result.stdout and "best: scratch_mlp" in result.stdout


@pytest.mark.parametrize(
    ("max_epochs", "factor"), [(1, 3), (3, 3), (9, 3), (30, 3), (8, 2), (20, 4)]
)
def test_the_run_says_how_many_trials_keras_tuners_hyperband_runs(max_epochs, factor):
    """The count is that of the oracle the search runs (found by mutation testing: an
    oracle that ignored reduction_factor, always 3, ran another count than said)."""
    from orchestrator.recipe import parse_recipe
    from orchestrator.run import _planned
    from orchestrator.space import Choice
    from orchestrator.tuning.keras_tuner import _oracle

    recipe = parse_recipe(
        "name: x\ndata: {source: 'sklearn:iris'}\nstrategies: {scratch_mlp: {}}\n"
        f"search: {{backend: keras_tuner, scheduler: hyperband, max_epochs: {max_epochs}, "
        f"reduction_factor: {factor}}}\n"
    )
    oracle = _oracle(recipe, {"width": Choice((8, 16))}, 1, None)
    assert (oracle.max_epochs, oracle.factor) == (max_epochs, factor)
    brackets = oracle._get_num_brackets()
    expected = sum(
        oracle._get_size(b, r) for b in range(brackets) for r in range(oracle._get_num_rounds(b))
    )
    count, said = _planned(recipe, "scratch_mlp", {})
    assert count == expected
    trials = "trial" if expected == 1 else "trials"  # found by QA: "1 trials"
    assert said.startswith(f"{expected} {trials} (keras-tuner's Hyperband")


def assert_validate_notes(recipe: Path, note: str) -> None:
    from orchestrator.cli import app

    checked = CliRunner().invoke(app, ["validate", str(recipe)])
    assert checked.exit_code == 0, checked.output
    assert note in " ".join(checked.output.split()), checked.output


def test_validate_and_run_note_that_a_ray_grid_with_no_continuous_dimension_repeats_alike(
    tmp_path,
):
    """Its repeats (num_samples) train each point with the same seed: the same scores
    (measured: two repeats of a two-point grid gave 0.5667 and 0.9333 twice)."""
    from orchestrator.cli import app
    from orchestrator.recipe import parse_recipe
    from orchestrator.run import _repeats_note
    from orchestrator.space import Choice, Fixed, LogFloat

    fixed = "scratch_mlp: {space: {hidden_layers: {choice: [1, 2]}, width: 16, lambda: 1.0e-5, "
    recipe = write_recipe(
        tmp_path, "{algorithm: grid, num_samples: 2}", fixed + "learning_rate: 0.01}}"
    )
    assert_validate_notes(
        recipe,
        "note: scratch_mlp's grid has no continuous dimension: its 2 repeats (num_samples) run "
        "the same configurations with the same seed, to the same scores; num_samples: 1 runs "
        "each point once",
    )
    # A continuous dimension is drawn anew each repeat; one repeat, or keras-tuner's
    # grid (each point once), repeats nothing.
    recipe = write_recipe(tmp_path, "{algorithm: grid, num_samples: 2}", fixed + "}}")
    checked = CliRunner().invoke(app, ["validate", str(recipe)])
    assert checked.exit_code == 0 and "note:" not in checked.output, checked.output

    text = "name: x\ndata: {source: 'sklearn:iris'}\nstrategies: {scratch_mlp: {}, b: {}}\n"
    discrete = {"a": Choice((1, 2)), "f": Fixed(0.1)}
    spaces = {"scratch_mlp": discrete, "b": discrete}
    both = parse_recipe(text + "search: {algorithm: grid, num_samples: 3}\n")
    assert _repeats_note(both, spaces).startswith(
        "note: the grids of scratch_mlp, b have no continuous dimension: their repeats"
    )
    mixed = {"scratch_mlp": discrete, "b": {**discrete, "c": LogFloat(1e-4, 1e-2)}}
    assert _repeats_note(both, mixed).startswith("note: scratch_mlp's grid has no")
    for search in ("{algorithm: grid}", "{algorithm: grid, backend: keras_tuner, num_samples: 3}"):
        assert _repeats_note(parse_recipe(text + f"search: {search}\n"), spaces) is None
    # Found by QA: a random search of a space that fixes every dimension ran num_samples
    # identical trials under Ray (keras-tuner one), without a word.
    all_fixed = fixed.replace("{choice: [1, 2]}", "1") + "learning_rate: 0.01}}"
    recipe = write_recipe(tmp_path, "{algorithm: random, num_samples: 2}", all_fixed)
    assert_validate_notes(
        recipe,
        "note: scratch_mlp's space has nothing to search (every dimension is fixed): its 2 "
        "trials (num_samples) run one configuration with the same seed, to the same scores; "
        "num_samples: 1 runs it once",
    )
    fixed_only = {"scratch_mlp": {"f": Fixed(0.1)}, "b": {"f": Fixed(0.2)}}
    for algorithm in ("random", "bayesian"):
        recipe = parse_recipe(text + f"search: {{algorithm: {algorithm}, num_samples: 3}}\n")
        assert _repeats_note(recipe, fixed_only).startswith(
            "note: the spaces of scratch_mlp, b have nothing to search"
        )
        # Found by QA: 3 trials of 2 configurations repeat one, to the same scores.
        assert _repeats_note(recipe, spaces) == (
            "note: scratch_mlp's space has 2 configurations for its 3 trials; b's space has 2 "
            "configurations for its 3 trials (num_samples): Ray draws them with repeats, and a "
            "repeat trains with the same seed to the same scores; num_samples no more than the "
            "configurations, or algorithm: grid, tries each once"
        )
        recipe = parse_recipe(text + f"search: {{algorithm: {algorithm}, num_samples: 2}}\n")
        assert _repeats_note(recipe, spaces) is None  # a choice to draw from
    recipe = write_recipe(tmp_path, "{num_samples: 5}", fixed + "learning_rate: 0.01}}")
    assert_validate_notes(recipe, "note: scratch_mlp's space has 2 configurations for its 5")
    # Found by QA: ranges of equal ends hold one value, and got no note.
    equal_ends = fixed.replace("{choice: [1, 2]}", "{int: [1, 1]}").replace(
        "1.0e-5", "{float: [1.0e-5, 1.0e-5]}"
    )
    equal_ends += "learning_rate: {loguniform: [0.01, 0.01]}}}"
    recipe = write_recipe(tmp_path, "{num_samples: 2}", equal_ends)
    assert_validate_notes(recipe, "note: scratch_mlp's space has nothing to search")
    grid = write_recipe(tmp_path, "{algorithm: grid, num_samples: 2}", equal_ends)
    assert_validate_notes(grid, "note: scratch_mlp's grid has no continuous dimension")
    # keras-tuner tries each configuration once: validate says so, as the run's first line.
    recipe = write_recipe(tmp_path, "{backend: keras_tuner, num_samples: 2}", equal_ends)
    assert_validate_notes(
        recipe,
        "note: scratch_mlp's space has 1 configuration, and keras-tuner tries each once: 1 of "
        "its 2 trials (num_samples) run",
    )
    recipe = write_recipe(tmp_path, "{backend: keras_tuner, num_samples: 3}", fixed + "}}")
    checked = CliRunner().invoke(app, ["validate", str(recipe)])
    assert checked.exit_code == 0 and "note:" not in checked.output, checked.output
    # A Ray budget shorter than a worker's start-up (found by QA: 0.001 s passed, and the
    # run failed with no trial); keras-tuner runs in this process: none.
    for search, note in (("{time_budget_s: 0.5}", True), ("{time_budget_s: 10}", False)):
        recipe = write_recipe(tmp_path, search, fixed + "}}")
        checked = CliRunner().invoke(app, ["validate", str(recipe)])
        said = "note: search.time_budget_s (0.5 s) counts from each strategy's search start"
        assert (said in " ".join(checked.output.split())) is note, checked.output
    recipe = write_recipe(tmp_path, "{time_budget_s: 0.5, backend: keras_tuner}", fixed + "}}")
    assert "time_budget_s" not in CliRunner().invoke(app, ["validate", str(recipe)]).output
    # keras-tuner's grid takes them as their values (found by QA: refused as continuous).
    recipe = write_recipe(tmp_path, "{backend: keras_tuner, algorithm: grid}", equal_ends)
    checked = CliRunner().invoke(app, ["validate", str(recipe)])
    assert checked.exit_code == 0, checked.output


def test_the_run_says_how_many_trials_a_grid_runs():
    from orchestrator.recipe import parse_recipe
    from orchestrator.run import _planned
    from orchestrator.space import Choice, Int, LogFloat

    space = {"a": Choice((1, 2)), "b": Int(1, 3), "c": LogFloat(1e-4, 1e-2)}
    text = "name: x\ndata: {source: 'sklearn:iris'}\nstrategies: {scratch_mlp: {}}\n"
    ray = parse_recipe(text + "search: {algorithm: grid, num_samples: 2}\n")
    assert _planned(ray, "scratch_mlp", space) == (
        12,
        "a grid of 6 configurations (each run 2 times)",
    )
    kt = parse_recipe(text + "search: {algorithm: grid, backend: keras_tuner}\n")
    assert _planned(kt, "scratch_mlp", space) == (6, "a grid of 6 configurations")
    kt = parse_recipe(text + "search: {algorithm: grid, backend: keras_tuner, num_samples: 2}\n")
    assert _planned(kt, "scratch_mlp", space) == (  # said, as Hyperband's is (found by QA)
        6,
        "a grid of 6 configurations (keras-tuner runs each once; num_samples 2 does not apply)",
    )
    plain = parse_recipe(text + "search: {num_samples: 1}\n")
    assert _planned(plain, "scratch_mlp", space) == (1, "1 trial")


@pytest.mark.parametrize("backend", ["ray", "keras_tuner"])
def test_a_search_told_not_to_start_from_the_defaults_draws_every_trial(
    ray_session, tmp_path, backend
):
    # One trial at a time on Ray: the second reuses the first's worker (what is tested is
    # the draw, and a second worker costs a TensorFlow import).
    at_once = ", max_concurrent_trials: 1" if backend == "ray" else ""
    search = f"{{backend: {backend}, num_samples: 2, max_epochs: 1, start_from_defaults: false{at_once}}}"
    frame = run(write_recipe(tmp_path, search)).leaderboard
    assert len(frame) == 2
    assert (frame["learning_rate"] != 1e-3).all()


def test_keras_tuner_values_come_back_as_the_space_declares_them():
    from orchestrator.space import Choice, Int
    from orchestrator.tuning.keras_tuner import as_declared, to_hyperparameters

    # keras-tuner keeps a choice of true/false as 0/1 (its default too).
    hp = to_hyperparameters({"two_phase": Choice((False, True))}, {"two_phase": True})
    assert hp.values == {"two_phase": 1}
    assert as_declared(Choice((False, True)), hp.values["two_phase"]) is True
    assert as_declared(Choice((False, True)), 0) is False
    assert type(as_declared(Choice((0, 1, True)), 1)) is int
    assert as_declared(Int(0, 3), 2) == 2


def test_keras_tuner_refuses_a_grid_over_continuous_dimensions_before_writing(tmp_path):
    from orchestrator.cli import app

    recipe = write_recipe(tmp_path, "{backend: keras_tuner, algorithm: grid}")
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 2
    assert "search.algorithm" in result.output
    assert "learning_rate" in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("search", "words"),
    [
        (
            "{backend: keras_tuner, algorithm: grid}",
            "search.algorithm: grid search with keras_tuner",
        ),
        (
            "{backend: keras_tuner, scheduler: asha}",
            "search.scheduler: the keras_tuner backend has",
        ),
        (  # keras-tuner's Hyperband never ended its bracket count for 1.4
            "{backend: keras_tuner, scheduler: hyperband, reduction_factor: 1.4}",
            "search.reduction_factor: keras-tuner's Hyperband takes a whole reduction factor",
        ),
        (  # was run as keras-tuner's Hyperband, random draws, without a word
            "{backend: keras_tuner, scheduler: hyperband, algorithm: bayesian}",
            "search.algorithm: keras-tuner's Hyperband draws its configurations at random; "
            "algorithm: bayesian with scheduler: hyperband needs backend: ray",
        ),
    ],
)
def test_validate_refuses_what_keras_tuner_cannot_search(tmp_path, search, words):
    from orchestrator.cli import app

    strategies = "scratch_mlp: {}\n              fine_tune: {}"  # asha is named once, not twice
    recipe = write_recipe(tmp_path, search, strategies)
    recipe.write_text(recipe.read_text() + "base: {pretrain: {data: {source: 'sklearn:digits'}}}\n")
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    assert result.output.count(words) == (2 if "grid" in search else 1), result.output


def test_keras_tuner_refuses_gpus_it_does_not_see_and_says_it_ignores_an_address(tmp_path):
    """Its trials run in this process: ``gpus_per_trial: 0.5`` on a machine without a
    GPU trained on the CPU in mixed_float16, and an address was ignored in silence."""
    import tensorflow as tf

    from orchestrator.cli import app

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this process sees a GPU: gpus_per_trial is honoured here")
    recipe = write_recipe(tmp_path, "{backend: keras_tuner, num_samples: 1, max_epochs: 1}")
    text = recipe.read_text()
    recipe.write_text(text + "resources: {gpus_per_trial: 0.5, mixed_precision: true}\n")
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 2, result.output
    assert (
        "resources.gpus_per_trial: 0.5 GPUs per trial, but this process sees no GPU "
        "(the keras_tuner backend trains here): set gpus_per_trial: 0"
    ) in result.output
    assert not (tmp_path / "runs").exists()
    checked = CliRunner().invoke(app, ["validate", str(recipe)])
    assert checked.exit_code == 0 and "`graftune run` here would refuse it" in checked.output

    recipe.write_text(text + "resources: {address: '127.0.0.1:1'}\n")
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 0, result.output
    assert (
        "resources.address (127.0.0.1:1) is not used (backend: ray runs there)"
    ) in result.output
    # Given on the command line, the note names the option the user typed.
    recipe.write_text(text)
    result = CliRunner().invoke(app, ["run", str(recipe), "--address", "127.0.0.1:2"])
    assert result.exit_code == 0, result.output
    assert "note: the keras_tuner backend trains every trial in this process; --address " in (
        result.output
    )
    assert "--address (127.0.0.1:2) is not used (backend: ray runs there)" in result.output

    # Found by QA: what only Ray's workers use was ignored without a word.
    for edited, unused in (
        (
            text.replace(
                "num_samples: 1", "num_samples: 1, max_concurrent_trials: 4, max_failures: 3"
            ),
            "search.max_concurrent_trials is",
        ),
        (
            text + "resources: {cpus_per_trial: 2, num_cpus: 1, dashboard: true}\n",
            "resources.cpus_per_trial, resources.num_cpus, resources.dashboard are",
        ),
    ):
        recipe.write_text(edited)
        checked = CliRunner().invoke(app, ["validate", str(recipe)])
        assert checked.exit_code == 0, checked.output
        assert (
            f"note: {unused} for backend: ray; "
            "the keras_tuner backend trains one trial at a time in this process"
        ) in checked.output
    recipe.write_text(text)
    checked = CliRunner().invoke(app, ["validate", str(recipe)])
    assert "are for backend: ray" not in checked.output and "is for" not in checked.output
    # Found by QA: Hyperband's grace_period, and an address of auto, went unsaid.
    recipe.write_text(
        text.replace("num_samples: 1, max_epochs: 1", "scheduler: hyperband, grace_period: 2")
        + "resources: {address: auto}\n"
    )
    checked = CliRunner().invoke(app, ["validate", str(recipe)])
    assert checked.exit_code == 0, checked.output
    assert "note: search.grace_period is for backend: ray; keras-tuner's Hyperband" in (
        checked.output
    )
    assert "resources.address (auto) is not used (backend: ray runs there)" in checked.output
    assert "runs on the Ray cluster" not in checked.output


def test_a_diverged_trial_gives_keras_tuner_the_worst_score_not_its_last_epochs(tmp_path):
    """Found by QA: keras-tuner was given a diverged trial's last val_accuracy (its
    NaN weights score at chance), and Hyperband promoted that configuration to its
    next round over healthy ones."""
    recipe = write_recipe(
        tmp_path,
        "{backend: keras_tuner, num_samples: 2, max_epochs: 1}",
        "exploding_mlp: {space: {learning_rate: {choice: [0.1, 1.0e+30]}}}",
    )
    outcome = run(recipe)
    (run_dir,) = (tmp_path / "runs").iterdir()
    told = {
        f"kt{json.loads(path.read_text())['trial_id']}": json.loads(path.read_text())["score"]
        for path in (run_dir / "keras_tuner").rglob("trial.json")
    }
    frame = outcome.leaderboard.set_index("trial_id")
    assert sorted(frame["status"]) == ["diverged", "ok"]
    for trial_id, row in frame.iterrows():
        # val_accuracy's worst for the diverged one (it had a chance-level last epoch).
        assert told[trial_id] == (row["val_accuracy"] if row["status"] == "ok" else 0.0)
    # Blown up in its only epoch, it has no score (found by QA: that epoch's NaN outputs,
    # every example the first class, were shown as val_accuracy 0.3333 on wine).
    assert frame.loc[frame["status"] == "diverged", ["val_accuracy", "val_loss"]].isna().all(None)


def test_a_diverged_trial_with_a_score_gives_keras_tuner_the_worst_score_still(tmp_path):
    """As above, where the trial diverged after a whole first epoch: its leaderboard
    row keeps that epoch's score, keras-tuner is given the worst (found by mutation
    testing: the trial above has no score, so the status check went untried)."""
    recipe = write_recipe(
        tmp_path,
        "{backend: keras_tuner, num_samples: 1, max_epochs: 3}",
        "late_exploding_mlp: {}",
    )
    from orchestrator.errors import RunFailed
    from orchestrator.leaderboard import read_leaderboard

    with pytest.raises(RunFailed, match="1 diverged"):
        run(recipe)
    (run_dir,) = (tmp_path / "runs").iterdir()
    (trial,) = (run_dir / "keras_tuner").rglob("trial.json")
    (row,) = read_leaderboard(run_dir).to_dict(orient="records")
    assert row["status"] == "diverged" and row["val_accuracy"] > 0, row
    assert json.loads(trial.read_text())["score"] == 0.0


def test_a_trials_peak_memory_is_its_own_not_its_workers_since_it_started(tmp_path):
    """keras_tuner runs every trial in one process (as a reused Ray worker runs many):
    the trial after one that held 600 MiB reported that peak as its own."""
    from orchestrator.cli import app

    recipe = write_recipe(
        tmp_path, "{backend: keras_tuner, algorithm: grid, max_epochs: 1}", "hungry_mlp: {}"
    )
    result = CliRunner().invoke(app, ["run", str(recipe), "--plugin", "tests.fixture_plugins"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    results = [
        json.loads(path.read_text()) for path in run_dir.glob("trials/hungry_mlp/*/result.json")
    ]
    hungry, light = sorted(results, key=lambda r: -r["config"]["hog_mb"])
    assert hungry["started_at"] < light["started_at"]  # the light one ran after it
    assert hungry["peak_memory_mb"] - light["peak_memory_mb"] > 400, results


def test_keras_tuner_searches_follow_the_recipes_seed(tmp_path):
    from orchestrator.testing import run_in_process
    from orchestrator.tuning.keras_tuner import oracle_seed

    # keras-tuner takes 0 for "draw a seed", and seeds its n-th draw with seed + n.
    assert oracle_seed(0) > 0 and abs(oracle_seed(5) - oracle_seed(1)) > 10_000
    # Each seed its own (found by QA: 0 and 4294967294 drew alike), within numpy's range.
    top = [oracle_seed(2**32 - 1 - n) for n in range(1, 4)]
    assert len({oracle_seed(0), oracle_seed(1), *top}) == 5
    assert 0 < max(top) <= 2**32 - 1
    recipe = {
        "name": "seeded",
        "data": {"source": "sklearn:iris"},
        "strategies": {"scratch_mlp": {}},
        "search": {"num_samples": 3, "max_epochs": 1, "start_from_defaults": False},
    }
    columns = ["hidden_layers", "width", "lambda", "learning_rate"]

    def drawn(seed, where):
        board = run_in_process({**recipe, "seed": seed}, run_dir=tmp_path / where)
        return sorted(board[columns].itertuples(index=False, name=None))

    first = drawn(0, "a")
    assert first == drawn(0, "b")  # seed 0, the default, included
    assert first != drawn(4, "c")


def test_keras_tuner_keeps_the_time_budget_between_trials_and_plans_a_small_space(tmp_path):
    from orchestrator.recipe import parse_recipe
    from orchestrator.run import _planned, run_recipe
    from orchestrator.space import Choice, Fixed

    said = []
    progress = EpochsHeard("val_accuracy", "max")
    board = run_recipe(
        {
            "name": "budget",
            "data": {"source": "sklearn:iris"},
            "strategies": {"scratch_mlp": {}},
            "search": {
                "backend": "keras_tuner",
                "num_samples": 4,
                "max_epochs": 2,
                "time_budget_s": 0.5,
            },
        },
        run_dir=tmp_path / "run",
        echo=said.append,
        listener=progress,
    ).leaderboard
    assert list(board["trial_id"]) == ["kt0"]  # the others never started: not listed
    # Its epochs were told as they ended, as under Ray.
    assert progress.heard == [("scratch_mlp", "kt0", 1, 2), ("scratch_mlp", "kt0", 2, 2)]
    # The live view plans what ran (3 trials that never run were left in its estimate).
    assert progress.strategies["scratch_mlp"].planned == 1 and progress.eta_seconds() == 0
    # Said, as under Ray (the search ended silently, short of its announced count).
    assert (
        "warning: scratch_mlp: search.time_budget_s (0.5 s) ran out: 1 of 4 trials ran, "
        "the other 3 were not run (keras_tuner checks the budget between trials)"
    ) in said, said
    text = "name: x\ndata: {source: 'sklearn:iris'}\nstrategies: {scratch_mlp: {}}\n"
    kt = parse_recipe(text + "search: {backend: keras_tuner, num_samples: 5}\n")
    space = {"width": Choice((16, 32)), "lambda": Fixed(0.0)}
    count, said = _planned(kt, "scratch_mlp", space)
    assert count == 2 and "keras-tuner tries each once; num_samples is 5" in said
    ray = parse_recipe(text + "search: {num_samples: 5}\n")
    assert _planned(ray, "scratch_mlp", space) == (5, "5 trials")  # Ray draws with repeats


def test_keras_tuner_says_nothing_of_a_small_space_it_searched_whole(tmp_path):
    """Found by mutation testing: a random search of a space with fewer configurations
    than num_samples, all tried, warned that keras-tuner "ended the search after 2 of 3
    trials" (it plans each configuration once, as the run says)."""
    from orchestrator.run import run_recipe

    said = []
    board = run_recipe(
        {
            "name": "small",
            "data": {"source": "sklearn:iris"},
            "strategies": {
                "scratch_mlp": {
                    "space": {
                        "hidden_layers": 1,
                        "width": {"choice": [8, 16]},
                        "lambda": 0.0,
                        "learning_rate": 0.01,
                    }
                }
            },
            "search": {"backend": "keras_tuner", "num_samples": 3, "max_epochs": 1},
        },
        run_dir=tmp_path / "run",
        echo=said.append,
    ).leaderboard
    assert sorted(board["width"]) == [8, 16]
    assert not [line for line in said if "warning" in line], said


def test_keras_tuners_gaussian_process_keeps_its_convergence_warnings_off_the_console():
    # Found by QA: "lbfgs failed to converge ... scale the data" on a Bayesian run's
    # console, from the oracle's fit to the hyperparameters (not the user's data).
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from orchestrator.tuning.keras_tuner import oracle_quiet

    def warned(module):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with oracle_quiet():
                warnings.warn_explicit("lbfgs failed", ConvergenceWarning, "x.py", 1, module)
        return [str(w.message) for w in caught]

    assert warned("sklearn.gaussian_process._gpr") == []
    assert warned("sklearn.gaussian_process.kernels") == []
    assert warned("my_strategy") == ["lbfgs failed"]  # a trial's own: kept


def test_keras_tuner_never_tries_a_configuration_twice_nor_stops_short(tmp_path):
    # keras-tuner's Bayesian oracle proposed the Gaussian process's optimum again
    # (kt3 = kt0), and random draws gave up after 20 collisions: a search of a
    # 30-value choice stopped at 26 trials, saying nothing.
    import keras_tuner as kt

    from orchestrator.recipe import parse_recipe
    from orchestrator.space import Choice
    from orchestrator.tuning.keras_tuner import _oracle, oracle_quiet

    def tried(algorithm, values, seed):
        recipe = parse_recipe(
            f"name: x\nseed: {seed}\ndata: {{source: 'sklearn:iris'}}\n"
            f"strategies: {{scratch_mlp: {{}}}}\nsearch: {{algorithm: {algorithm}}}\n"
        )

        class Scored(kt.Tuner):  # keras-tuner's own loop, without training
            def run_trial(self, trial, *args, **kwargs):
                return {"val_accuracy": 0.5}

        space = {"width": Choice(values)}
        folder = tmp_path / f"{algorithm}{seed}"
        tuner = Scored(oracle=_oracle(recipe, space, len(values), None), directory=str(folder))
        with oracle_quiet():  # as graftune searches (scores all alike: its fits warn)
            tuner.search(verbose=0)
        return [t.hyperparameters.values["width"] for t in tuner.oracle.trials.values()]

    for seed in (0, 2):  # seeds that did either before
        assert sorted(tried("bayesian", (8, 16, 32, 64), seed)) == [8, 16, 32, 64]
        assert sorted(tried("random", tuple(range(30)), seed)) == list(range(30))


def test_keras_tuners_fallback_draw_reaches_an_ints_upper_bound():
    """Found by mutation testing: the draw among configurations not yet tried (once
    random draws collide) never proposed an Int at its maximum, and the search ended
    "drawing no configuration it had not tried" while those remained untried."""
    from orchestrator.recipe import parse_recipe
    from orchestrator.space import Choice, Int
    from orchestrator.tuning.keras_tuner import _oracle

    recipe = parse_recipe(
        "name: x\ndata: {source: 'sklearn:iris'}\nstrategies: {scratch_mlp: {}}\n"
        "search: {algorithm: random}\n"
    )
    oracle = _oracle(recipe, {"n": Int(1, 3), "act": Choice(("relu",))}, 3, None)
    for n in (1, 2):
        oracle._tried_so_far.add(oracle._compute_values_hash({"n": n, "act": "relu"}))
    assert oracle._untried_values() == {"n": 3, "act": "relu"}
    oracle._tried_so_far.add(oracle._compute_values_hash({"n": 3, "act": "relu"}))
    assert oracle._untried_values() is None


def test_keras_tuner_state_is_written_whole_and_a_damaged_one_is_named(tmp_path):
    from orchestrator.run import FINISHED_FILE, SEARCH_DONE_FILE, resume_run
    from orchestrator.testing import run_in_process

    run_dir = tmp_path / "run"
    run_in_process(
        {
            "name": "torn",
            "data": {"source": "sklearn:iris"},
            "strategies": {"scratch_mlp": {}},
            "search": {"num_samples": 2, "max_epochs": 1},
        },
        run_dir=run_dir,
    )
    from keras_tuner.src import utils

    assert getattr(utils.save_json, "graftune", False)  # aside, then moved: whole or old
    assert not list((run_dir / "keras_tuner").rglob("*.tmp"))
    # What an older graftune, stopped while keras-tuner wrote, could leave.
    (run_dir / FINISHED_FILE).unlink()
    (run_dir / "trials" / "scratch_mlp" / SEARCH_DONE_FILE).unlink()  # its search goes on
    next((run_dir / "keras_tuner").rglob("trial.json")).write_text("")
    with pytest.raises(RunDirError, match=r"is damaged .* cannot be resumed; start it again"):
        resume_run(run_dir)


def test_a_trial_whose_worker_dies_is_retried(by_value, tmp_path):
    """Also (one run, each a worker that dies and a fresh one that imports TensorFlow):
    a retried trial keeps no TensorBoard events of its dead attempt. Found by QA: the
    attempt that died left its event files beside the retry's, and TensorBoard drew
    both attempts' epochs over one another. (A worker that dies before its trial's
    first report is retried in test_a_worker_that_always_dies_fails_after_its_retries.)"""
    marker = tmp_path / "died-once"
    recipe = write_recipe(
        tmp_path,
        "{num_samples: 1, max_epochs: 2, max_failures: 2}",
        # Its first attempt trains and reports an epoch, then its worker dies.
        f"dying_mlp: {{space: {{marker: '{marker}', trained: 1}}}}",
    )
    outcome = run(recipe)
    row = outcome.leaderboard.iloc[0]
    assert marker.exists()
    assert row["status"] == "ok"
    assert row["retries"] == 1
    # Its worker wrote result.json with no retries; a resume rebuilds the leaderboard
    # from that file, and read 0 (found by QA).
    from orchestrator.trial import read_result

    (written,) = (outcome.run_dir / "trials" / "dying_mlp").glob("*/result.json")
    assert read_result(written.parent).retries == 1
    events = sorted(written.parent.glob("tensorboard/*/events.out.tfevents.*"))
    # One file for training and one for validation: the retry's fit, not the dead one's.
    assert [p.parent.name for p in events] == ["train", "validation"], events


def test_a_run_whose_every_trial_died_runs_them_again_on_resume(by_value, tmp_path):
    """README: "A run in which every trial failed can be resumed too (trials whose
    worker died run again)". The resume read the ended search back, ran nothing,
    and failed again, however often it was resumed (found by QA)."""
    from orchestrator.run import resume_run

    marker = tmp_path / "died-once"
    recipe = write_recipe(
        tmp_path,
        "{num_samples: 1, max_epochs: 2, max_failures: 0}",
        f"dying_mlp: {{space: {{marker: '{marker}'}}}}",
    )
    with pytest.raises(RunFailed, match=r"every trial failed \(1 failed\)"):
        run(recipe)
    (run_dir,) = (tmp_path / "runs").iterdir()
    said: list[str] = []
    outcome = resume_run(run_dir, plugins=[fixture_plugins], echo=said.append)
    assert "dying_mlp: 1 trial whose worker died runs again" in said
    assert outcome.leaderboard["status"].tolist() == ["ok"]
    assert outcome.best["strategy"] == "dying_mlp"


def test_a_worker_that_always_dies_fails_after_its_retries(by_value, tmp_path):
    recipe = write_recipe(
        tmp_path,
        "{num_samples: 1, max_epochs: 2, max_failures: 1}",
        f"dying_mlp: {{space: {{die: always, marker: '{tmp_path / 'm'}'}}}}",
    )
    with pytest.raises(RunFailed) as info:
        run(recipe)
    assert "every trial failed (1 failed)" in str(info.value)
    (run_dir,) = (tmp_path / "runs").iterdir()
    frame_text = (run_dir / "leaderboard.md").read_text()
    assert "failed" in frame_text
    assert "worker died" in frame_text
    # It died twice: tried once more (max_failures 1), not twice (Tune counts deaths).
    from orchestrator.leaderboard import read_leaderboard

    assert read_leaderboard(run_dir)["retries"].tolist() == [1]
    # Ray's own word on each death, which a driver prints to stdout, is in ray.log.
    assert "(raylet) A worker died or was killed" in (run_dir / "ray.log").read_text()


def test_a_run_where_every_trial_fails_exits_non_zero_with_a_summary(tmp_path):
    from orchestrator.cli import app

    recipe = write_recipe(
        tmp_path, "{backend: keras_tuner, num_samples: 2, max_epochs: 1}", "raising: {}"
    )
    result = CliRunner().invoke(app, ["run", str(recipe), "--plugin", "tests.fixture_plugins"])
    assert result.exit_code == 1, result.output
    assert "every trial failed (2 errors)" in result.output
    assert "RuntimeError: deliberate failure in build" in result.output
    # Where the trial's traceback is (found by QA: nothing pointed at error.txt).
    (run_dir,) = (tmp_path / "runs").iterdir()
    said = re.search(r"traceback: (\S+)", result.output)
    assert said is not None, result.output
    traceback = Path(said.group(1))
    assert traceback.parent.parent.parent == run_dir / "trials"
    assert "deliberate failure in build" in traceback.read_text()
    shown = CliRunner().invoke(app, ["leaderboard", str(run_dir)])
    assert "each failed trial's traceback is its error.txt: " in shown.output


def test_a_run_leaves_the_callers_process_as_it_found_it(
    ray_session, tmp_path, monkeypatch, capsys
):
    """A notebook's later Ray records went to the finished run's ray.log, and the
    environment kept what the run set for Ray's workers."""
    import logging
    import os

    from ray._private import worker

    monkeypatch.delenv("RAY_DEDUP_LOGS", raising=False)
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", os.path.relpath(os.environ["GRAFTUNE_CACHE_DIR"]))
    env = dict(os.environ)
    ray_logger = logging.getLogger("ray")
    handlers, printer = list(ray_logger.handlers), worker.print_to_stdstream
    outcome = run(write_recipe(tmp_path, "{num_samples: 1, max_epochs: 1}"))
    assert (outcome.run_dir / "ray.log").is_file()
    # On a Ray the caller started, Tune printed its banners and a TensorBoard hint.
    assert "Configuration for experiment" not in capsys.readouterr().out
    assert ray_logger.handlers == handlers and worker.print_to_stdstream is printer
    # What the run sets for Ray (importing TensorFlow sets a few of its own besides).
    for key in ("RAY_DEDUP_LOGS", "RAY_AIR_NEW_OUTPUT", "PL_DISABLE_FORK", "GRAFTUNE_CACHE_DIR"):
        assert os.environ.get(key) == env.get(key), key


def test_trials_a_scheduler_stopped_reach_uri_storage(scheduler_runs):
    """Their workers never upload them (the driver writes their result): a fetched
    run had the leaderboard's pruned trials without their folders."""
    # The asha run of test_each_scheduler_and_searcher_runs, stored in file://.
    made = scheduler_runs("asha")
    frame = made.outcome.leaderboard
    assert (frame["status"] == "pruned").any(), frame[["status", "epochs"]]
    stored = made.store / "asha" / "trials" / "scratch_mlp"
    for trial_id in frame["trial_id"]:
        assert (stored / trial_id / "result.json").is_file(), trial_id
        assert (stored / trial_id / "history.csv").is_file(), trial_id


def test_keep_models_best_keeps_each_strategys_best_model_here_and_in_storage(
    scheduler_runs,
):
    """Found by QA: every trial kept its model (4.6 MB each on MobileNetV3, about
    100 MB fine-tuning ResNet50), and there was no way to keep the best alone."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    # The fifo run of test_each_scheduler_and_searcher_runs, with keep_models: best.
    made = scheduler_runs("fifo")
    outcome = made.outcome
    frame = outcome.leaderboard
    assert list(frame["status"]) == ["ok"] * 3
    best, *others = list(frame["trial_id"])
    for root in (outcome.run_dir, made.store / "fifo"):
        trials = root / "trials" / "scratch_mlp"
        assert (trials / best / "model.keras").is_file(), root
        assert (trials / best / "test_probabilities.npy").is_file(), root
        for trial_id in others:
            assert (trials / trial_id / "result.json").is_file(), (root, trial_id)
            assert not list(trials.glob(f"{trial_id}/*.keras")), (root, trial_id)
            assert not (trials / trial_id / "test_probabilities.npy").exists(), (root, trial_id)
    assert (outcome.run_dir / "best" / "model.keras").is_file()
    refused = CliRunner().invoke(
        app, ["predict", str(outcome.run_dir), "--data", "sklearn:iris", "--trial", others[0]]
    )
    assert refused.exit_code == 2, refused.output
    assert f"trial scratch_mlp/{others[0]}'s model was not kept: the run's recipe has " in (
        refused.output
    )


def test_the_live_view_counts_a_trial_once_and_times_only_trials_run_now():
    from orchestrator.progress import RunProgress, render_text
    from orchestrator.trial import TrialResult

    now = [100.0]
    view = RunProgress("val_accuracy", "max", clock=lambda: now[0])
    view.plan({"s": 4})
    before = TrialResult(strategy="s", trial_id="t1", status="ok", config={}, val_accuracy=0.5)
    view.trial_replayed(before)  # ended before the resume
    assert view.eta_seconds() is None  # nothing timed yet: no estimate from it
    view.trial_started("s", "t2")
    now[0] += 30.0
    view.trial_finished(TrialResult(strategy="s", trial_id="t2", status="pruned", config={}))
    view.trial_finished(before)  # Tune re-reads a stored result after a kill
    counts = view.strategies["s"]
    assert (counts.done, counts.pruned, counts.best) == (1, 1, 0.5)
    assert view.eta_seconds() == 60.0  # 30 s for the one trial run here, two to go
    # A pruned trial ranks by its last score, but has no model: said (found by QA).
    assert "best so far s t1 (0.5000)" in render_text(view)
    pruned = TrialResult(strategy="s", trial_id="t3", status="pruned", config={}, val_accuracy=0.7)
    view.trial_finished(pruned)
    assert "best so far s t3 (0.7000, pruned)" in " ".join(render_text(view).split())
    # The strategy's own best moves too (found by mutation testing: unchecked).
    assert view.strategies["s"].best == 0.7 and "0.7000" in render_text(view).splitlines()[1]
    # Found by QA: error and diverged trials were counted as "failed", the status of
    # a trial whose worker died, which the leaderboard tells apart.
    view = RunProgress("val_accuracy", "max", clock=lambda: now[0])
    view.plan({"s": 4})
    for status in ("ok", "error", "diverged", "failed"):
        view.trial_finished(TrialResult(strategy="s", trial_id=status, status=status, config={}))
    lines = render_text(view).splitlines()
    assert lines[0].split() == ["strategy", "done", "best", "val_accuracy", "running", "pruned",
                                "unranked"]  # fmt: skip
    assert lines[1].split() == ["s", "4/4", "0", "0", "3"]  # no best: nothing ranked
    # The best of a metric to minimise is its least (found by mutation testing: every
    # view here ranked by val_accuracy).
    view = RunProgress("val_loss", "min", clock=lambda: now[0])
    view.plan({"s": 3})
    for trial_id, loss in (("t1", 0.9), ("t2", 0.2), ("t3", 0.5)):
        view.trial_finished(
            TrialResult(strategy="s", trial_id=trial_id, status="ok", config={}, val_loss=loss)
        )
    assert view.best is not None and view.best[:3] == (0.2, "s", "t2")
    assert view.strategies["s"].best == 0.2
    assert "best so far s t2 (0.2000)" in " ".join(render_text(view).split())
    # Among equal scores the best is the leaderboard's rank 1 (found by QA: the first
    # to reach the score, where the leaderboard ranks the smaller model first).
    from orchestrator.leaderboard import build_leaderboard

    tied = [
        TrialResult("a", "t1", "ok", {}, val_accuracy=1.0, params_total=5251, epochs=8),
        TrialResult("a", "t2", "ok", {}, val_accuracy=1.0, params_total=547, epochs=8),
        TrialResult("a", "t3", "ok", {}, val_accuracy=1.0, params_total=547, epochs=6),
        TrialResult("b", "t0", "ok", {}, val_accuracy=1.0, params_total=547, epochs=6),
        TrialResult("a", "t4", "ok", {}, val_accuracy=1.0, params_total=547, epochs=6),
        TrialResult("a", "t5", "ok", {}, val_accuracy=0.5, params_total=10, epochs=1),
    ]
    for count in range(1, len(tied) + 1):
        view = RunProgress("val_accuracy", "max", clock=lambda: now[0])
        view.plan({"a": 5, "b": 1})
        for result in tied[:count]:
            view.trial_finished(result)
        first = build_leaderboard(tied[:count], metric="val_accuracy", mode="max").iloc[0]
        assert view.best[1:3] == (first["strategy"], first["trial_id"]), count
    assert view.best[1:3] == ("a", "t3")
    # Found by QA: on 50 columns the names were cut ("feature…") and the footer
    # wrapped to the table's width, centred.
    view = RunProgress("val_accuracy", "max", clock=lambda: now[0])
    view.plan({"feature_extraction": 4, "fine_tune": 12})
    view.trial_finished(
        TrialResult(strategy="feature_extraction", trial_id="a1b2c3d4", status="ok",
                    config={}, val_accuracy=0.91)
    )  # fmt: skip
    lines = render_text(view, width=50).splitlines()
    assert [line.split()[:2] for line in lines[1:3]] == [
        ["feature_extraction", "1/4"], ["fine_tune", "0/12"]
    ]  # fmt: skip
    assert "0.9100" in lines[1] and lines[3].startswith("elapsed ")
    assert " ".join(" ".join(lines[3:]).split()).endswith(
        "best so far feature_extraction a1b2c3d4 (val_accuracy 0.9100)"
    )
    # Found by QA: on 60 columns the counts' headers were cut ("runni…") for the
    # metric's name; it is said in the footer instead, and the counts stay whole.
    view.trial_started("fine_tune", "e5f6a7b8")
    lines = render_text(view, width=60).splitlines()
    assert lines[0].split() == ["strategy", "done", "best", "running", "pruned", "unranked"]
    assert lines[2].split() == ["fine_tune", "0/12", "1", "0", "0"]
    assert " ".join(lines[3:]).endswith("(val_accuracy 0.9100)")
    assert "(0.9100)" in render_text(view, width=80)  # room for "best val_accuracy"


def test_the_live_view_names_the_recipes_metric_from_its_start(tmp_path):
    """Found by QA: "best val_accuracy" over a val_loss run until its search began."""
    from orchestrator.cli import _searched_metric

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsearch: {metric: val_loss}\n")
    assert _searched_metric(recipe) == ("val_loss", "min")
    recipe.write_text("name: r\nsearch: {metric: val_loss, mode: max}\n")
    assert _searched_metric(recipe) == ("val_loss", "max")
    for text in ("name: r\n", "search: {metric: f1}\n", "[" * 5000, "- a\n", "a: !!python/x 1\n"):
        recipe.write_text(text)  # the run says what is wrong, if anything
        assert _searched_metric(recipe) == ("val_accuracy", "max")
    assert _searched_metric(None) == _searched_metric(tmp_path) == ("val_accuracy", "max")


def test_the_live_views_estimate_times_trials_only_shares_slots_and_keeps_to_the_budget():
    """It divided the time since the view was made (data, base, Ray's start) by the
    trials ended: 23 s in, one of 8 trials done, it said 2:44 left when 11 s were."""
    from orchestrator.progress import RunProgress, render_text
    from orchestrator.trial import TrialResult

    now = [0.0]

    def view(samples, budget=None):
        made = RunProgress("val_accuracy", "max", clock=lambda: now[0])
        made.plan(samples, time_budget_s=budget)
        return made

    def ended(progress, strategy, trial_id, at):
        now[0] = at
        progress.trial_finished(
            TrialResult(strategy=strategy, trial_id=trial_id, status="ok", config={})
        )

    # Set-up before the first trial is not trial time.
    one = view({"s": 8})
    now[0] = 20.0
    one.search_started("s")
    one.trial_started("s", "t0")
    ended(one, "s", "t0", 23.0)
    assert one.eta_seconds() == 21.0  # 3 s a trial, 7 to go
    one.trial_started("s", "t1")
    now[0] = 24.0
    assert one.eta_seconds() == 20.0  # the one under way is a second in

    # Two trials at a time: the trials left share two slots.
    two = view({"s": 8})
    now[0] = 0.0
    two.trial_started("s", "a")
    two.trial_started("s", "b")
    ended(two, "s", "a", 10.0)
    ended(two, "s", "b", 10.0)
    assert two.eta_seconds() == 30.0  # 10 s a trial, 6 to go, 2 at a time

    # No more than what is left of the search's time budget.
    capped = view({"s": 8}, budget=30)
    now[0] = 0.0
    capped.search_started("s")
    now[0] = 5.0
    capped.trial_started("s", "t0")
    ended(capped, "s", "t0", 15.0)
    assert capped.eta_seconds() == 15.0  # 70 s by the trials, 15 s by the budget

    # Strategies searched one after the other: a search that ended short plans no
    # more trials (its 8 left were counted for ever), and the next one's budget
    # counts in full before it begins.
    after = view({"a": 12, "b": 3}, budget=12)
    now[0] = 0.0
    after.search_started("a")
    for index in range(4):
        after.trial_started("a", f"t{index}")
        ended(after, "a", f"t{index}", now[0] + 2.5)
    after.search_finished("a", 4)
    assert after.eta_seconds() == 7.5  # b: 3 trials of 2.5 s (a's mean), within 12 s
    assert "4/4" in render_text(after)
    after.search_started("b")
    after.trial_started("b", "u0")
    ended(after, "b", "u0", now[0] + 10.0)
    assert after.eta_seconds() == 2.0  # 20 s by b's trials, 2 s left of its budget

    # Found by QA: a slower strategy's first trials ran 30-70 s after 2-6 s ones, and
    # the estimate stood at a's mean until one of them ended.
    slow = view({"a": 2, "b": 4})
    now[0] = 0.0
    for index in range(2):
        slow.trial_started("a", f"t{index}")
        ended(slow, "a", f"t{index}", now[0] + 3.0)
    slow.search_finished("a", 2)
    slow.trial_started("b", "u0")
    now[0] += 2.0
    assert slow.eta_seconds() == 10.0  # 3 s a trial (a's), 4 to go, one 2 s in
    now[0] += 28.0
    assert slow.eta_seconds() == 90.0  # at least 30 s a trial: 4 to go, one 30 s in


def test_the_live_view_estimates_from_epochs_before_a_trial_ends():
    """Found by QA: no estimate of what is left until a trial ended, a minute
    and more into a fine_tune search."""
    from orchestrator.progress import RunProgress, render_text

    now = [0.0]
    view = RunProgress("val_accuracy", "max", clock=lambda: now[0])
    view.plan({"a": 4, "b": 2})
    view.trial_started("a", "t0")
    view.trial_started("a", "t1")
    now[0] = 5.0
    view.trial_progressed("a", "t0", 1, 10)
    assert view.eta_seconds() is None  # one epoch: set-up and epoch are not told apart
    now[0] = 7.0
    view.trial_progressed("a", "t0", 2, 10)
    # 5 s to its first epoch, then 2 s an epoch: 23 s a trial, 7 in, of which
    # 4 trials of a and 2 of b (a's time) on two slots.
    assert view.eta_seconds() == (23.0 * 6 - 7.0 - 7.0) / 2
    assert "about 1:02 left" in render_text(view)
    now[0] = 8.0
    view.trial_progressed("a", "t1", 1, 10)
    view.trial_progressed("a", "t1", 1, 10)  # once more (its worker died, and it restarted)
    now[0] = 9.0
    view.trial_progressed("a", "t1", 2, 10)
    # t1: 8 s to its first epoch (this attempt's), then 1 s an epoch: 17 s.
    assert view.eta_seconds() == ((23.0 + 17.0) / 2 * 6 - 9.0 - 9.0) / 2
    # A trial that ends is timed as it took, and its epochs are forgotten.
    from orchestrator.trial import TrialResult

    now[0] = 10.0
    view.trial_finished(TrialResult(strategy="a", trial_id="t0", status="ok", config={}))
    assert ("a", "t0") not in view._epochs
    # a's one timed trial (10 s) for the 4 to start; t1, 10 s in, past that mean,
    # has 8 epochs of 1 s left (it was counted as done: "about 0:00 left").
    assert view.eta_seconds() == (10.0 * 4 + 7.0) / 2
    now[0] = 12.0
    view.trial_progressed("a", "t1", 4, 10)
    assert view.eta_seconds() == pytest.approx((10.0 * 4 + 6 * 4 / 3) / 2)  # 4/3 s an epoch
    now[0] = 20.0  # silent for 8 s: its epochs take at least that long
    assert view.eta_seconds() == pytest.approx((10.0 * 4 + 8.0 * 6 - 8.0) / 2)
    # A trial told of again after it ended (a stored result re-read) is not heard.
    view.trial_progressed("a", "t0", 3, 10)
    assert ("a", "t0") not in view._epochs


def test_the_live_view_times_a_restarted_trial_from_its_new_first_epoch():
    """Found by mutation testing (G16): a trial that starts over (its worker died,
    epoch 1 again) kept its first attempt's first epoch as its timing base, so the
    dead attempt's time was in its time per epoch; the test above restarts a trial
    at the very time of its first epoch, which both bases read alike."""
    from orchestrator.progress import RunProgress

    now = [0.0]
    view = RunProgress("val_accuracy", "max", clock=lambda: now[0])
    view.plan({"a": 1})
    view.trial_started("a", "t0")
    for epoch, at in ((1, 10.0), (2, 20.0), (3, 30.0), (1, 100.0), (2, 110.0)):
        now[0] = at
        view.trial_progressed("a", "t0", epoch, 10)
    assert view._epochs[("a", "t0")] == ((1, 100.0), (2, 110.0), 10)
    assert view._left(("a", "t0"), 110.0) == 10.0 * 8  # 10 s an epoch, not 100


def test_the_live_views_estimate_shares_the_slots_the_run_plans(tmp_path):
    """Found by QA: the estimate halved a second after it appeared, as the second
    of two trials started (it counted the slots it had seen)."""
    from orchestrator.progress import RunProgress
    from orchestrator.recipe import load_recipe
    from orchestrator.run import _slots

    now = [0.0]
    view = RunProgress("val_accuracy", "max", clock=lambda: now[0])
    view.plan({"a": 5, "b": 1}, slots={"a": 2, "b": 1})
    view.trial_started("a", "t0")
    now[0] = 5.0
    view.trial_progressed("a", "t0", 1, 10)
    now[0] = 7.0
    view.trial_progressed("a", "t0", 2, 10)
    # 23 s a trial, 7 in: a's 4 to start and t0's 16 s on two slots, b's one alone.
    assert view.eta_seconds() == (23.0 * 4 + 16.0) / 2 + 23.0
    view.trial_started("a", "t1")  # the second slot's trial: the estimate stands
    assert view.eta_seconds() == (23.0 * 3 + 16.0 + 23.0) / 2 + 23.0
    # What the run plans: its waves on embedded Ray, one at a time on keras-tuner,
    # nothing where a cluster's room or GPUs are found as trials start.
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: r\ndata: {source: sklearn:iris}\nstrategies:\n  scratch_mlp: {num_samples: 1}\n"
        "search: {num_samples: 6, max_concurrent_trials: 2}\nresources: {num_cpus: 4}\n"
    )
    loaded = load_recipe(recipe)
    names = list(loaded.strategies)
    assert _slots(loaded, names, embedded=True) == {"scratch_mlp": 1}
    assert _slots(loaded, names, embedded=False) == {}
    recipe.write_text(recipe.read_text().replace("{num_samples: 1}", "{}"))
    assert _slots(load_recipe(recipe), names, embedded=True) == {"scratch_mlp": 2}
    recipe.write_text(
        recipe.read_text().replace("max_concurrent_trials: 2", "backend: keras_tuner")
    )
    assert _slots(load_recipe(recipe), names, embedded=False) == {"scratch_mlp": 1}


def test_a_long_worker_error_is_cut_at_a_word():
    """Ray's out-of-memory message was cut at 500 characters, mid-word ("... OOMing no")."""
    from orchestrator.tuning.ray_tune import _short_error

    long = "Traceback\nRayActorError: " + "word " * 200
    cut = _short_error(RuntimeError(long))
    assert cut.endswith("word ...") and len(cut) <= 504
    assert _short_error(RuntimeError("one line")) == "one line"
    assert _short_error(RuntimeError("")) == "RuntimeError"
    # At a sentence's end where one is far enough in (found by QA: mid-sentence).
    died = (
        "The actor is dead because its worker process has died. Worker exit type: "
        "SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a connection error "
        "code 2. End of file. There are some potential root causes. (1) The process is "
        "killed by SIGKILL by OOM killer due to high memory usage. (2) ray stop --force is "
        "called. (3) The worker is crashed unexpectedly due to SIGSEGV or other unexpected "
        "errors. " + "More words here. " * 20
    )
    cut = _short_error(RuntimeError(died))
    assert cut.endswith(". ...") and len(cut) <= 504
    assert "(1) The process is killed by SIGKILL by OOM killer" in cut


GPU_SCRIPT = """
import json, sys
import ray, ray.cloudpickle
from tests import fixture_plugins
from orchestrator import run_recipe

ray.cloudpickle.register_pickle_by_value(fixture_plugins)
ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
outcome = run_recipe(sys.argv[1], plugins=[fixture_plugins])
rows = []
for path in sorted(outcome.run_dir.glob("trials/together_mlp/*/result.json")):
    rows.append(json.loads(path.read_text()))
print("RESULTS" + json.dumps(rows))
print("RUNDIR" + str(outcome.run_dir))
"""


@pytest.mark.parametrize(
    ("resources", "words"),
    [
        # (The GPU refusal's words: test_what_no_node_of_ray_can_run_is_named.)
        (
            "{num_cpus: 2, cpus_per_trial: 3}",
            "resources.cpus_per_trial: a trial asks for 3 CPUs, and Ray has at most 2 on a node",
        ),
    ],
    ids=["cpus"],
)
def test_a_trial_embedded_ray_cannot_place_is_refused_before_anything_is_written(
    tmp_path, resources, words
):
    # Tune would keep it pending for ever, saying so only in ray.log.
    recipe = write_recipe(tmp_path, "{num_samples: 1, max_epochs: 1}")
    recipe.write_text(recipe.read_text() + f"resources: {resources}\n")
    # A RAY_ADDRESS it does not use (found by QA: unsaid).
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:9"}
    completed = subprocess.run(
        [GRAFTUNE, "run", str(recipe)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert words in completed.stderr
    assert (
        "note: RAY_ADDRESS is set (127.0.0.1:9), and this run starts Ray of its own here"
        in completed.stdout
    )
    assert "(embedded Ray on this machine)" in completed.stderr
    assert "data: sklearn:iris" not in completed.stdout  # refused before the data is prepared
    assert not (tmp_path / "runs").exists()


def test_a_trial_the_callers_own_ray_cannot_place_is_refused_before_anything_is_written(
    ray_session, tmp_path
):
    """Found by QA: on a Ray the caller started with ray.init() (one node, which no
    other joins), a trial of more CPUs than it has waited for ever."""
    from orchestrator.errors import RecipeError

    recipe = write_recipe(tmp_path, "{num_samples: 1, max_epochs: 1}")
    recipe.write_text(recipe.read_text() + "resources: {cpus_per_trial: 3}\n")
    with pytest.raises(RecipeError) as info:
        run(recipe)
    assert info.value.path == "resources.cpus_per_trial"
    assert "the Ray this process started with ray.init(), one node" in str(info.value)
    assert not (tmp_path / "runs").exists()


def test_what_no_node_of_ray_can_run_is_named(ray_session):
    from orchestrator.cluster import trial_does_not_fit

    assert trial_does_not_fit(1, 0) is None
    assert trial_does_not_fit(2, 0) is None
    assert trial_does_not_fit(1, 1) == (
        "gpus_per_trial",
        "a trial asks for 1 GPU, and Ray has none",
    )
    assert trial_does_not_fit(4, 0)[0] == "cpus_per_trial"
    # What embedded Ray will have, before it is up.
    assert trial_does_not_fit(1, 0.5, [{"CPU": 2, "GPU": 1}]) is None
    assert trial_does_not_fit(1, 2, [{"CPU": 8, "GPU": 1}]) == (
        "gpus_per_trial",
        "a trial asks for 2 GPUs, and Ray has at most 1 on a node",
    )
    assert trial_does_not_fit(2, 2, [{"CPU": 8, "GPU": 1}, {"CPU": 1, "GPU": 2}]) == (
        "cpus_per_trial",
        "a trial asks for 2 CPUs and 2 GPUs on one node, and no node has both",
    )


def test_mixed_precision_without_gpus_is_said_to_change_nothing(scheduler_runs):
    """Found by QA: mixed_precision: true with gpus_per_trial: 0 was taken, and its
    trials trained in float32, by validate and run unsaid."""
    from orchestrator.cli import app

    # The grid run of test_each_scheduler_and_searcher_runs, with mixed_precision: true.
    made = scheduler_runs("grid")
    checked = CliRunner().invoke(app, ["validate", str(made.recipe)])
    assert checked.exit_code == 0, checked.output
    assert (
        "note: resources.mixed_precision changes nothing with gpus_per_trial: 0; the trials "
        "train in float32 on CPUs"
    ) in checked.output
    assert (
        list(made.outcome.leaderboard["note"])
        == ["mixed precision off: the trial has no GPU (gpus_per_trial: 0)"] * 2
    )


def test_fractional_gpus_pack_four_trials_on_two_logical_gpus(tmp_path):
    recipe = write_recipe(
        tmp_path,
        "{num_samples: 4, max_epochs: 1}",
        "together_mlp: {}",  # each trial waits until all four have started
    )
    text = recipe.read_text()
    text += "resources: {cpus_per_trial: 1, gpus_per_trial: 0.5, mixed_precision: true}\n"
    recipe.write_text(text)
    together = tmp_path / "together"
    together.mkdir()
    completed = subprocess.run(
        [sys.executable, "-c", GPU_SCRIPT, str(recipe)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "GRAFTUNE_TEST_TOGETHER": str(together)},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(x for x in completed.stdout.splitlines() if x.startswith("RESULTS"))
    rows = json.loads(line[len("RESULTS") :])
    assert len(rows) == 4
    # All four ran at once: each waited until the four had started.
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    # Each trial saw only the device Ray gave it, two trials per device.
    devices = sorted(r["devices"] for r in rows)
    assert devices == ["0", "0", "1", "1"]
    # Logical GPUs: TensorFlow sees none, so no trial trained in mixed_float16 on the
    # CPU (it did: slower, and less accurate), and each says so.
    assert all(r["note"] == "mixed precision off: tensorflow sees no GPU" for r in rows), rows
    run_dir = Path(next(x for x in completed.stdout.splitlines() if x.startswith("RUNDIR"))[6:])
    models = list(run_dir.glob("trials/together_mlp/*/model.keras"))
    assert len(models) == 4
    for path in models:
        with zipfile.ZipFile(path) as saved:
            assert "mixed_float16" not in saved.read("config.json").decode()


def test_the_failure_summary_says_why_when_no_trial_has_an_error(tmp_path):
    """Trials that a time budget or the scheduler stopped have no error text: the
    list of reasons was empty, and "no trial ran" did not name the budget."""
    from orchestrator.run import _failure_summary
    from orchestrator.trial import TrialResult

    pruned = TrialResult(
        strategy="s", trial_id="t", status="pruned", config={}, val_accuracy=0.5, epochs=1
    )
    error = TrialResult(strategy="s", trial_id="u", status="error", config={}, error="boom")
    said = _failure_summary([pruned, error], tmp_path, time_budget_s=6, metric="val_accuracy")
    assert "every trial failed (1 pruned, 1 error); the most frequent reasons:" in said
    assert "1x pruned: stopped before max_epochs by the scheduler, or search.time_budget_s" in (
        said
    )
    # Pruned alone: scored and ranked, not failed ("every trial failed" before).
    said = _failure_summary([pruned], tmp_path, time_budget_s=6, metric="val_accuracy")
    assert said.startswith(
        "no trial trained all its epochs (1 pruned: stopped by the scheduler or "
        "search.time_budget_s (6 s a strategy"
    )
    assert "so no best model was saved; the leaderboard ranks them: " in said
    # Found by QA: a resume keeps the search's settings: raised, it was refused.
    assert said.endswith(
        "; raise search.time_budget_s and run the recipe again (a resume keeps the search "
        "as it was)"
    )
    said = _failure_summary([], tmp_path, time_budget_s=1, metric="val_accuracy")
    assert said.startswith("no trial ended: search.time_budget_s (1 s a strategy")
    assert "ran out first; raise it and run the recipe again (a resume keeps the search" in said
    assert _failure_summary([], tmp_path, metric="val_loss") == f"no trial ran; see {tmp_path}"


def test_trials_stopped_before_their_first_epoch_ended_are_said_to_have_no_score(tmp_path):
    """The budget's warning promised "the scores of its last epoch", and the failure
    summary "the leaderboard ranks them", for trials with no score and no rank."""
    from orchestrator.builtin_plugins.scratch_mlp import ScratchMLP
    from orchestrator.run import _failure_summary
    from orchestrator.trial import TrialResult, TrialSpec, read_result
    from orchestrator.tuning.ray_tune import _Search, _tell_the_untold

    def pruned(trial_id, score=None):
        epochs = 0 if score is None else 1
        return TrialResult(
            strategy="scratch_mlp", trial_id=trial_id, status="pruned", config={},
            val_loss=score, epochs=epochs,
        )  # fmt: skip

    early, late = pruned("a"), pruned("b", 0.7)
    said = _failure_summary([early, pruned("c")], tmp_path, metric="val_loss")
    assert "so no best model was saved; none ended its first epoch (no score, no rank): " in said
    said = _failure_summary([early, late], tmp_path, metric="val_loss")
    assert "the leaderboard ranks the 1 with a score; 1 stopped before its first epoch" in said
    error = TrialResult(strategy="s", trial_id="u", status="error", config={}, error="boom")
    said = _failure_summary([early, error], tmp_path, metric="val_loss")
    assert "  1x pruned: stopped before max_epochs by the scheduler (1 before its first" in said

    class Listener:
        def __init__(self):
            self.warned, self.told = [], []

        def trial_finished(self, result):
            self.told.append(result.trial_id)

        def warn(self, message):
            self.warned.append(message)

    spec = TrialSpec(
        strategy=ScratchMLP(), base=None, max_epochs=5, batch_size=32, seed=0,
        metric="val_loss", run_dir=tmp_path,
    )  # fmt: skip

    def warned(results, interrupted=False):
        state = _Search(listener=Listener(), interrupted=interrupted)
        _tell_the_untold(state, results, spec, budget=4)
        assert sorted(state.listener.told) == sorted(r.trial_id for r in results)
        return state.listener.warned

    assert warned([early, pruned("c")]) == [
        "scratch_mlp: search.time_budget_s (4 s) ran out: 2 trials stopped before their "
        "first epoch ended (pruned, no score)"
    ]
    assert warned([early, late]) == [
        "scratch_mlp: search.time_budget_s (4 s) ran out: 1 trial stopped midway, shown as "
        "pruned with the scores of its last epoch; 1 trial stopped before its first epoch "
        "ended (pruned, no score)"
    ]
    assert read_result(tmp_path / "trials" / "scratch_mlp" / "a").epochs == 0
    # Found by mutation testing: neither a Ctrl+C (the budget did not stop these
    # trials) nor a trial pruned at its last epoch (not stopped midway: its worker
    # wrote its result.json) was tested to leave the warning unsaid.
    assert warned([pruned("d"), pruned("e", 0.7)], interrupted=True) == []
    last = TrialResult(
        strategy="scratch_mlp", trial_id="f", status="pruned", config={}, val_loss=0.6, epochs=5
    )
    assert warned([last]) == []
    assert not (tmp_path / "trials" / "scratch_mlp" / "f").exists()


def test_a_trial_line_counts_retries_and_leaves_no_gap_where_no_score_is():
    """It said "failed after 1 retries" and "error  (RuntimeError: ...)"."""
    from orchestrator.run import _trial_line
    from orchestrator.trial import TrialResult

    def line(**fields):
        return _trial_line(TrialResult(strategy="s", trial_id="t", config={}, **fields), "val_loss")

    assert line(status="failed", retries=1, error="worker died: boom") == (
        "  s t: failed after 1 retry (worker died: boom)"
    )
    assert line(status="failed", retries=2) == "  s t: failed after 2 retries"
    assert line(status="error", error="RuntimeError: no") == "  s t: error (RuntimeError: no)"
    assert line(status="ok", val_loss=0.25) == "  s t: ok val_loss=0.2500"


def test_bayesian_search_with_every_dimension_fixed_repeats_the_configuration(
    ray_session, tmp_path
):
    # Optuna refuses an empty space; there is nothing to model, so the trials repeat.
    strategies = (
        "scratch_mlp: {space: {hidden_layers: 1, width: 8, lambda: 1.0e-4, learning_rate: 1.0e-3}}"
    )
    search = "{algorithm: bayesian, num_samples: 2, max_epochs: 1, max_concurrent_trials: 1}"
    frame = run(write_recipe(tmp_path, search, strategies)).leaderboard
    assert list(frame["status"]) == ["ok", "ok"]
    assert set(frame["width"]) == {8}


def test_keras_tuner_refuses_a_choice_of_mixed_types_before_any_work(tmp_path):
    from orchestrator.errors import RecipeError
    from orchestrator.recipe import load_recipe
    from orchestrator.space import Choice, Fixed
    from orchestrator.tuning.keras_tuner import check_space

    recipe = load_recipe(write_recipe(tmp_path, "{backend: keras_tuner}"))
    with pytest.raises(
        RecipeError, match="keras_tuner takes choices of one type; s's w mixes int and str"
    ):
        check_space(recipe, {"w": Choice((8, "wide"))}, "s")
    with pytest.raises(RecipeError, match="keras_tuner fixes only numbers, text and true/false"):
        check_space(recipe, {"w": Fixed((8, 16))}, "s")
    check_space(recipe, {"w": Choice((8, 16)), "b": Choice((False, True))}, "s")
    # "all" is the base's count of cut points, a whole number once it is known.
    check_space(recipe, {"frozen_layers": Choice((0, 2, "all"))}, "s")
    # Whole numbers among floats (lambda: {choice: [0, 0.001]}) are floats to keras-tuner.
    from orchestrator.tuning.keras_tuner import as_declared, to_hyperparameters

    mixed = Choice((0, 1e-3))
    check_space(recipe, {"lambda": mixed}, "s")
    hp = to_hyperparameters({"lambda": mixed}, {"lambda": 0})
    assert hp.values == {"lambda": 0.0}
    assert as_declared(mixed, hp.values["lambda"]) == 0


def test_a_pruned_trials_row_comes_from_its_last_report(tmp_path):
    from orchestrator.tuning.ray_tune import collect

    last = {
        "val_accuracy": 0.5,
        "val_loss": 1.25,
        "training_iteration": 3,
        "fit_seconds": 2.5,
        "params_total": 900,
        "params_trainable": 100,
        "peak_memory_mb": 812.0,
        "cached_cut": 2,
        "note": "features from cache up to cut 2",
        "timestamp": 1795992422,
        "time_total_s": 3.5,
    }
    row = collect(tmp_path, "fine_tune", "t_00001", {"frozen_layers": 2}, last, None)
    assert (row.started_at, row.finished_at) == (1795992418.5, 1795992422)
    assert (row.status, row.epochs, row.val_accuracy, row.val_loss) == ("pruned", 3, 0.5, 1.25)
    assert (row.fit_seconds, row.params_total, row.params_trainable) == (2.5, 900, 100)
    assert (row.peak_memory_mb, row.cached_cut) == (812.0, 2)
    assert row.note == "features from cache up to cut 2"


def test_the_next_searchs_workers_are_asked_for_once_the_last_trials_run_with_room(
    tmp_path, monkeypatch
):
    """When a search asks Ray to prestart the next one's workers (the prestart itself:
    tests/test_ray_start.py)."""
    from types import SimpleNamespace

    from ray.tune.experiment import Trial

    from orchestrator.recipe import load_recipe
    from orchestrator.run import _planned, _prestart
    from orchestrator.tuning import ray_start, ray_tune

    asked = []
    monkeypatch.setattr(ray_start, "prestart_workers", lambda count: asked.append(count) or True)
    events = ray_tune._Events(tmp_path, "scratch_mlp")
    search = ray_tune._Search(prestart=ray_tune.Prestart(workers=2, planned=3, at_once=2))
    monkeypatch.setitem(ray_tune._SEARCHES, (str(tmp_path), "scratch_mlp"), search)

    def step(*statuses):
        trials = [SimpleNamespace(trial_id=str(i), status=s) for i, s in enumerate(statuses)]
        events.on_step_end(0, trials)
        return list(asked)

    running, pending, ended = Trial.RUNNING, Trial.PENDING, Trial.TERMINATED
    assert step(running, running) == []  # the third trial is not made yet
    assert step(ended, running, pending) == []  # made, not started
    assert step(ended, running, running) == []  # started, no room beside them
    assert step(ended, ended, running) == [2]  # the last runs, a slot is free
    assert step(ended, ended, ended) == [2]  # once a search
    # What the run asks for: the next strategy's first trials at once, on Ray only.
    strategies = "{scratch_mlp: {}, raising: {num_samples: 1}, exploding_mlp: {}}"
    recipe = load_recipe(write_recipe(tmp_path, "{num_samples: 4}", strategies))
    at_once = min(os.cpu_count() or 1, 4)

    def prestart(recipe, name):  # as the run asks: with the trials it plans
        return _prestart(recipe, name, _planned(recipe, name, {})[0])

    # raising runs one trial: one worker for it, once scratch_mlp's 4 trials are made.
    assert prestart(recipe, "scratch_mlp") == {
        "prestart": ray_tune.Prestart(workers=1, planned=4, at_once=at_once)
    }
    assert prestart(recipe, "raising") == {
        "prestart": ray_tune.Prestart(workers=at_once, planned=1, at_once=1)
    }
    assert prestart(recipe, "exploding_mlp") == {}  # the last
    tuner = load_recipe(write_recipe(tmp_path, "{backend: keras_tuner}", strategies))
    assert prestart(tuner, "scratch_mlp") == {}


def test_a_retried_trials_history_is_its_last_attempts(tmp_path):
    """Found by QA: Tune keeps the epochs every attempt of a trial reported, one after
    another; the history.csv the driver wrote for a trial that failed after its retries
    had epochs 1, 2, 1, 2 (and a learning curve that went back)."""
    import pandas as pd

    from orchestrator.tuning.ray_tune import write_reported_history

    reports = pd.DataFrame(
        {
            "epoch": [1, 2, 1, 2, 3, 1],
            "val_accuracy": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            "training_iteration": [1, 2, 1, 2, 3, 1],
            "config/width": [8] * 6,
        }
    )
    write_reported_history(tmp_path / "once", reports.iloc[:2])
    assert pd.read_csv(tmp_path / "once" / "history.csv").to_dict("list") == {
        "epoch": [1, 2],
        "val_accuracy": [0.1, 0.2],
    }
    write_reported_history(tmp_path / "retried", reports.iloc[:5])
    assert pd.read_csv(tmp_path / "retried" / "history.csv")["epoch"].tolist() == [1, 2, 3]
    write_reported_history(tmp_path / "again", reports)
    assert pd.read_csv(tmp_path / "again" / "history.csv")["val_accuracy"].tolist() == [0.6]
