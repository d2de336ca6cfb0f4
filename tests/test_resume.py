"""Resume: killed, stopped and interrupted runs continue without repeating what ended;
what a resume refuses; where a run directory cannot be made or is taken."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from orchestrator.errors import RunDirError
from tests import fixture_plugins
from tests.helpers import file_size_limited
from tests.search_helpers import GRAFTUNE, run, write_recipe

pytestmark = pytest.mark.slow


#: What a resume of a run the fixture plugins ran in needs, which its hints say.
FIXTURES = "--plugin tests.fixture_plugins"

#: Four one-at-a-time trials: long enough to stop a run after two, with two left for
#: the resume to run.
FOUR_TRIALS = (
    "{num_samples: 4, max_epochs: 8, max_concurrent_trials: 1}",
    "scratch_mlp: {space: {hidden_layers: 1, width: 16}}",
)


#: Starts the command after it with Ctrl+C as at a terminal: a process inherits an
#: ignored SIGINT (a pytest-xdist worker's, a script's background job's), and a run
#: that starts with it ignored goes on ignoring it (README).
AS_AT_A_TERMINAL = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]


@contextlib.contextmanager
def run_until_trials_end(recipe: Path, run_dir: Path, ended: int = 2):
    """``graftune run`` in a session of its own, yielded once ``ended`` trials have
    written their results; its driver and the Ray processes it started (one
    process group) are killed at the end if still running. Its stdout and stderr
    are in ``run_dir.parent / "stdout.txt"`` and ``"stderr.txt"``."""
    results_dir = run_dir / "trials" / "scratch_mlp"
    with (
        open(run_dir.parent / "stdout.txt", "w") as stdout,
        open(run_dir.parent / "stderr.txt", "w") as stderr,
    ):
        process = subprocess.Popen(
            [*AS_AT_A_TERMINAL, GRAFTUNE, "run", str(recipe), "--run-dir", str(run_dir), "--quiet"],
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        deadline = time.monotonic() + 240
        try:
            while len(list(results_dir.glob("*/result.json"))) < ended:
                assert process.poll() is None, "the run ended before it could be stopped"
                assert time.monotonic() < deadline, "no trial finished in time"
                time.sleep(0.2)
            yield process
        finally:
            if process.poll() is None:
                kill_session(process.pid)
                process.wait()


def ended_trials(results_dir: Path) -> dict[str, int]:
    """Trial id -> its ``result.json``'s modification time, in nanoseconds."""
    return {p.parent.name: p.stat().st_mtime_ns for p in results_dir.glob("*/result.json")}


def assert_not_run_again(results_dir: Path, ended: dict[str, int]) -> None:
    """None of ``ended`` (from :func:`ended_trials`) wrote its ``result.json`` again."""
    for trial_id, mtime in ended.items():
        assert (results_dir / trial_id / "result.json").stat().st_mtime_ns == mtime, trial_id


def assert_resumes_to_every_trial_once(run_dir, ended, trials, plugins=()):
    """Resume the run; every trial is in the leaderboard once, and none of
    ``ended`` (from :func:`ended_trials`) ran again."""
    from orchestrator.progress import RunProgress
    from orchestrator.run import resume_run

    half_saved = run_dir / "best" / "model.99999.tmp.keras"  # as a kill while it saved leaves
    half_saved.parent.mkdir(exist_ok=True)
    half_saved.write_bytes(b"half a model")
    progress = RunProgress("val_accuracy", "max")
    frame = resume_run(run_dir, plugins=list(plugins), echo=print, listener=progress).leaderboard
    # The live view counts every trial once, those that ended before the resume too
    # (it showed 0/6 done after a resume), but times only those run now.
    (counts,) = progress.strategies.values()
    assert (counts.done, counts.planned, counts.running) == (trials, trials, set())
    assert progress._replayed == len(ended)
    assert [p.name for p in (run_dir / "best").glob("*.keras")] == ["model.keras"]
    assert len(frame) == trials
    assert frame["trial_id"].is_unique
    assert (frame["status"] == "ok").all()
    assert_not_run_again(run_dir / "trials" / frame["strategy"].iloc[0], ended)
    # The hooks heard of each trial once, across the kill (events.jsonl, MLflow).
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    told = [e["trial_id"] for e in events if e["event"] == "trial_finished"]
    assert sorted(told) == sorted(frame["trial_id"]), told


def test_a_trial_reported_before_a_kill_is_not_reported_again(tmp_path):
    """Tune saves its state every few seconds: a trial that ended just before the
    driver was killed is run again on resume, and re-reads its stored result."""
    from orchestrator.markers import hookimpl
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.run import REPORTED_FILE, _RunEvents
    from orchestrator.trial import TrialResult

    heard = []

    class Listener:
        @hookimpl
        def graftune_trial_finished(self, result, run_dir):
            heard.append(result.trial_id)

    host = get_plugin_manager(extra_plugins=[Listener()])
    said = []
    first = _RunEvents(host, tmp_path, "val_accuracy", said.append, None)
    first.trial_finished(TrialResult(strategy="s", trial_id="t1", status="ok", config={}))
    # Killed here; the resumed run's driver starts afresh.
    again = _RunEvents(host, tmp_path, "val_accuracy", said.append, None)
    again.trial_finished(TrialResult(strategy="s", trial_id="t1", status="ok", config={}))
    again.trial_finished(TrialResult(strategy="s", trial_id="t2", status="ok", config={}))
    assert heard == ["t1", "t2"] and len(said) == 2
    assert (tmp_path / REPORTED_FILE).read_text().split() == ["s/t1", "s/t2"]


def session_running(sid: int) -> list[Any]:
    """The processes of session ``sid`` still running (``psutil.Process``): a run's
    driver and the Ray processes it started are one process group, but each Ray
    worker is a group of its own, and goes on until it sees its raylet gone (found
    in CI: one ended its trial after a kill of the group). Zombies are left out: a
    container's first process may never reap them."""
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == sid and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (OSError, psutil.Error):
            pass  # gone meanwhile
    return found


def kill_session(sid: int, wait_s: float = 30.0) -> None:
    """SIGKILL every process of session ``sid`` (a run started in one of its own:
    driver, Ray's processes and Ray's workers) and wait until none runs."""
    import psutil

    deadline = time.monotonic() + wait_s
    while left := session_running(sid):
        assert time.monotonic() < deadline, f"still running after SIGKILL: {left}"
        for process in left:
            with contextlib.suppress(psutil.Error):
                process.kill()
        time.sleep(0.1)


@pytest.mark.parametrize("how", ["SIGKILL to every process", "SIGTERM to the driver"])
def test_a_killed_run_resumes_without_repeating_finished_trials(ray_session, tmp_path, how):
    from orchestrator.run import resume_run, run_recipe

    recipe = write_recipe(tmp_path, *FOUR_TRIALS)
    run_dir = tmp_path / "killed"
    with run_until_trials_end(recipe, run_dir) as process:
        if how.startswith("SIGKILL"):
            # While it runs, its directory is its own.
            with pytest.raises(RunDirError, match=f"{run_dir} is in use by another graftune run"):
                resume_run(run_dir, plugins=[], echo=print)
            # A new run there is told so, not to resume it (refused in turn: above).
            with pytest.raises(RunDirError, match=f"{run_dir} is in use by a graftune run going"):
                run_recipe(recipe, run_dir=run_dir, plugins=[], echo=print)
            # Worded for Python too (found by QA: --run-dir and --resume alone).
            with pytest.raises(RunDirError, match="from Python, run_dir= or run_name="):
                run_recipe(recipe, run_dir=run_dir, plugins=[], echo=print)
            kill_session(process.pid)
            process.wait()
        else:  # what `timeout`, systemd, Kubernetes and `ray job stop` send
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
            stderr = (tmp_path / "stderr.txt").read_text()
            assert process.returncode == 143, stderr[-3000:]
            assert "terminated (SIGTERM): stopped at once" in stderr
            assert f"graftune run --resume {run_dir}" in stderr
            # Not reported as a crash (Ray's crash reporter prints a stack for it).
            assert "SIGTERM received" not in stderr
            # The Ray processes the driver started are gone with it, its workers too.
            deadline = time.monotonic() + 30
            while session_running(process.pid):
                assert time.monotonic() < deadline, "Ray's processes outlived the driver"
                time.sleep(0.5)
    ended = ended_trials(run_dir / "trials" / "scratch_mlp")
    assert 2 <= len(ended) < 4
    assert not (run_dir / "leaderboard.csv").exists()
    if how.startswith("SIGTERM"):
        # Its table lists the trials of the search it stopped that the driver heard
        # had ended (found by QA: none, where a first Ctrl+C lists them); the last
        # may have ended in its worker as the signal came.
        table = (tmp_path / "stdout.txt").read_text()
        listed = {trial for trial in ended if re.search(rf"\bscratch_mlp +{trial} ", table)}
        assert len(listed) >= len(ended) - 1 >= 1, (ended, table)
        # It leaves what a kill leaves (the SIGKILL case resumes that) and lets go of
        # its directory.
        from orchestrator.run import holding_run_dir

        with holding_run_dir(run_dir):
            assert not (run_dir / "trials" / "scratch_mlp" / "search.json").exists()
        # A new run there is told to resume it, in the caller's words too.
        with pytest.raises(RunDirError, match="continues it; from Python, resume_run"):
            run_recipe(recipe, run_dir=run_dir, plugins=[], echo=print)
        return
    assert_resumes_to_every_trial_once(run_dir, ended, 4)


def test_a_ctrl_c_while_tune_sets_its_search_up_stops_it_as_interrupted():
    """Found by QA: a Ctrl+C in the first moments of a search reached Tune's own
    handler before graftune watched it (from the first step): Tune ended the search
    with no trial, and the run wrote it as finished, lost for good on resume."""
    from orchestrator.tuning.ray_tune import _note_interrupts, _Search

    original = signal.getsignal(signal.SIGINT)  # a test worker's may be SIG_IGN

    def before(signum, frame):  # the run's handler, as the search began
        pass

    def signal_interrupt_tune_run(signum, frame):
        fired.append(signum)

    fired = []
    signal.signal(signal.SIGINT, before)
    try:
        # Tune's handler ran and put back the one before it: interrupted.
        search = _Search(sigint_before=before)
        _note_interrupts(search)
        assert search.interrupted
        # Tune's handler is up: watched, and a Ctrl+C through it is noted, then Tune's runs.
        signal.signal(signal.SIGINT, signal_interrupt_tune_run)
        search = _Search(sigint_before=before)
        _note_interrupts(search)
        assert not search.interrupted
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        assert search.interrupted and fired == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, original)


def test_ctrl_c_stops_a_ray_search_keeps_what_ended_and_resume_runs_the_rest(ray_session, tmp_path):
    from orchestrator.leaderboard import read_leaderboard

    recipe = write_recipe(tmp_path, *FOUR_TRIALS)
    run_dir = tmp_path / "stopped"
    with run_until_trials_end(recipe, run_dir) as process:
        process.send_signal(signal.SIGINT)  # Ctrl+C, to the driver alone
        process.wait(timeout=120)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert process.returncode == 130, stderr[-3000:]
    assert "interrupted: scratch_mlp: " in stderr
    assert f"continue it with: graftune run --resume {run_dir}" in stderr
    results_dir = run_dir / "trials" / "scratch_mlp"
    ended = ended_trials(results_dir)
    assert 2 <= len(ended) < 4
    # What ended is ranked and saved as in any run; the search is not marked done.
    frame = read_leaderboard(run_dir)
    assert sorted(frame["trial_id"]) == sorted(ended)
    assert (frame["status"] == "ok").all()
    assert (run_dir / "best" / "model.keras").is_file()
    assert not (results_dir / "search.json").exists()

    handler = signal.getsignal(signal.SIGINT)
    # Moved (as `graftune fetch` puts a stopped job's run elsewhere): Tune's restored
    # state held the old folder, where the scheduler's trials were then written.
    moved = tmp_path / "moved"
    shutil.move(run_dir, moved)
    assert_resumes_to_every_trial_once(moved, ended, 4)
    assert not run_dir.exists()
    # Tune leaves its Ctrl+C handler behind after a search; the run puts ours back.
    assert signal.getsignal(signal.SIGINT) is handler


def forget_the_end(run_dir: Path, trial_id: str, strategy: str = "scratch_mlp") -> None:
    """Make a trial of a finished run look killed while it trained: no result.json,
    and its end never told (no record in .reported nor events.jsonl)."""
    from orchestrator.run import REPORTED_FILE

    (run_dir / "trials" / strategy / trial_id / "result.json").unlink()
    key = f"{strategy}/{trial_id}"
    reported = run_dir / REPORTED_FILE
    reported.write_text("".join(f"{k}\n" for k in reported.read_text().split() if k != key))
    events = run_dir / "events.jsonl"
    kept = [
        line
        for line in events.read_text().splitlines()
        if not (
            json.loads(line).get("event") == "trial_finished"
            and json.loads(line).get("trial_id") == trial_id
        )
    ]
    events.write_text("".join(f"{line}\n" for line in kept))


@pytest.fixture(scope="module")
def ended_run(ray_session, tmp_path_factory) -> Path:
    """One finished run of three one-width trials, one at a time, of two epochs: the
    tests that damage a run in a way of their own take a copy (:func:`copy_of`)
    rather than pay for a run each."""
    recipe = write_recipe(
        tmp_path_factory.mktemp("ended"),
        "{num_samples: 3, max_epochs: 2, max_concurrent_trials: 1, scheduler: fifo}",
        "scratch_mlp: {space: {hidden_layers: 1, width: 16}}",
    )
    return run(recipe).run_dir


def copy_of(ended_run: Path, folder: Path, *, unfinished: bool, search_ended: bool = False) -> Path:
    """A copy of :func:`ended_run` in ``folder`` (as ``graftune fetch`` copies one);
    with ``unfinished``, made to look as :func:`unfinished_run` makes it."""
    run_dir = folder / ended_run.name
    shutil.copytree(ended_run, run_dir)
    if unfinished:
        _unfinish(run_dir, search_ended=search_ended)
    return run_dir


def _unfinish(run_dir: Path, *, search_ended: bool) -> None:
    from orchestrator.run import FINISHED_FILE, SEARCH_DONE_FILE

    for name in (FINISHED_FILE, "leaderboard.csv", "leaderboard.md", "leaderboard.html"):
        (run_dir / name).unlink()
    if not search_ended:
        (run_dir / "trials" / "scratch_mlp" / SEARCH_DONE_FILE).unlink()


def unfinished_run(
    folder: Path,
    search: str,
    *,
    search_ended: bool = False,
    strategies: str = "scratch_mlp: {space: {hidden_layers: 1, width: 16}}",
) -> Path:
    """A finished run of one-width trials, made to look as if its search had
    not ended (no leaderboard, no marks of an end): what a resume takes up. With
    ``search_ended``, its search's mark of an end (search.json) is kept."""
    recipe = write_recipe(folder, search, strategies)
    run_dir = run(recipe).run_dir
    _unfinish(run_dir, search_ended=search_ended)
    return run_dir


def test_a_resume_whose_tune_state_is_unreadable_runs_every_trial_and_none_twice(
    ended_run, tmp_path
):
    """A kill while Tune wrote its experiment state (or a full disk) left it torn, or
    missing (killed in the instant after tuner.pkl). Tune then started the search
    over from its first point alone: the resume ran 1 of 3 trials, exited 0 and
    marked the run finished."""
    from orchestrator.progress import RunProgress
    from orchestrator.run import resume_run
    from orchestrator.trial import read_result

    run_dir = copy_of(ended_run, tmp_path, unfinished=True)
    results_dir = run_dir / "trials" / "scratch_mlp"
    unfinished = sorted(results_dir.iterdir())[-1]
    (unfinished / "result.json").unlink()
    ended = {
        json.dumps(r.config, sort_keys=True): r.started_at
        for r in map(read_result, results_dir.iterdir())
        if r is not None
    }
    assert len(ended) == 2
    (experiment_state,) = (run_dir / "ray" / "scratch_mlp").glob("experiment_state-*.json")
    text = experiment_state.read_text()
    experiment_state.write_text(text[: len(text) // 2])  # torn (see the test above)
    said = []
    progress = RunProgress("val_accuracy", "max")
    frame = resume_run(
        run_dir, plugins=[fixture_plugins], echo=said.append, listener=progress
    ).leaderboard
    assert len(frame) == 3 and frame["trial_id"].is_unique, frame
    # Counted once each, and the hooks heard of each trial once, across the two ids.
    (counts,) = progress.strategies.values()
    assert (counts.done, counts.planned) == (3, 3)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    told = [
        json.dumps(e["config"], sort_keys=True) for e in events if e["event"] == "trial_finished"
    ]
    assert all(told.count(config) == 1 for config in ended), told
    assert (frame["status"] == "ok").all(), frame[["status", "error"]]
    again = {
        json.dumps(r.config, sort_keys=True): r.started_at
        for r in (read_result(results_dir / t) for t in frame["trial_id"])
    }
    # The two that had ended were not run again; the third was.
    assert {k: again[k] for k in ended} == ended
    assert len(again) == 3
    assert sorted(p.name for p in results_dir.glob("*/")) == sorted(frame["trial_id"])


class _Planted:
    """Unpickled, it makes the file named: what a pickle planted in a run folder could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_resume_runs_no_code_planted_in_the_runs_folder_and_keeps_the_trials_ids(
    ended_run, tmp_path
):
    """Found by security QA: ``--resume`` restored Tune's saved state, pickles, so a
    run folder fetched from shared storage (or copied) ran code that anyone who
    could write there had put in ``ray/STRATEGY/tuner.pkl``. A resume now starts
    the search again from the seed, under the same trial ids, and never reads them."""
    import pickle

    from orchestrator.run import resume_run

    run_dir = copy_of(ended_run, tmp_path, unfinished=True)
    results_dir = run_dir / "trials" / "scratch_mlp"
    trial_ids = sorted(p.name for p in results_dir.iterdir())
    forget_the_end(run_dir, trial_ids[-1])  # killed while it trained
    ended = ended_trials(results_dir)
    experiment = run_dir / "ray" / "scratch_mlp"
    marker = tmp_path / "planted-code-ran"
    for name in ("tuner.pkl", "searcher-state-2026-11-30_08-00-00.pkl", "trainable.pkl"):
        (experiment / name).write_bytes(pickle.dumps(_Planted(marker)))
    frame = resume_run(run_dir, plugins=[], echo=print).leaderboard
    assert not marker.exists()
    assert sorted(frame["trial_id"]) == trial_ids, frame[["trial_id", "status"]]
    assert (frame["status"] == "ok").all(), frame[["trial_id", "status"]]
    assert (frame["epochs"] == 2).all() and frame["test_accuracy"].notna().all()
    assert sorted(p.name for p in results_dir.glob("*/")) == trial_ids
    for trial_id, mtime in ended.items():  # the two that had ended were not run again
        assert (results_dir / trial_id / "result.json").stat().st_mtime_ns == mtime, trial_id
        # Their epochs were told to the search again, as a scheduler's rungs held them.
        progress = pd.read_csv(experiment / trial_id / "progress.csv")
        history = pd.read_csv(results_dir / trial_id / "history.csv")
        assert progress["val_accuracy"].tolist()[:-1] == history["val_accuracy"].tolist()[:-1]
        assert progress["training_iteration"].tolist() == [1, 2]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    told = [e["trial_id"] for e in events if e["event"] == "trial_finished"]
    assert sorted(told) == trial_ids, told


@pytest.mark.parametrize(
    ("linked", "finished"), [("trials/scratch_mlp", False), ("ray", False), ("best", True)]
)
def test_a_resume_refuses_a_run_directory_holding_a_link_and_touches_nothing(
    ended_run, tmp_path, linked, finished
):
    """Found by QA: a resume followed a link in the run directory (``cp -r`` keeps
    one) and deleted the folders of where it led, then wrote its trials there."""
    from orchestrator.errors import RunDirError
    from orchestrator.run import resume_run

    run_dir = copy_of(ended_run, tmp_path / "copy", unfinished=not finished)
    outside = tmp_path / "outside"
    shutil.move(run_dir / linked, outside)
    (outside / "scratch_mlp" / "precious").mkdir(parents=True)  # deleted before, via ray/
    (outside / "precious").mkdir()  # deleted before, via trials/scratch_mlp
    (run_dir / linked).symlink_to(outside)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(RunDirError, match="is a symbolic link") as raised:
        resume_run(run_dir, plugins=[], echo=print)
    assert str(run_dir / linked) in str(raised.value)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("damaged", [False, True])
def test_a_resume_takes_no_trial_id_of_a_run_directory_as_a_path_outside_it(
    ended_run, tmp_path, damaged
):
    """Found by security QA: a run directory's ``result.json`` naming its trial
    ``../../../../victim`` made a resume with ``keep_models: best`` delete the user's
    files there (and a bayesian resume move a folder of theirs into the run). A
    result whose names are not its folder's is set aside and its trial runs again."""
    from orchestrator.run import resume_run

    run_dir = copy_of(ended_run, tmp_path / "copy", unfinished=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "model.keras").write_text("the user's")
    recorded = (run_dir / "recipe.yaml").read_text()
    assert "keep_models: all\n" in recorded
    (run_dir / "recipe.yaml").write_text(
        recorded.replace("keep_models: all\n", "keep_models: best\n")
    )
    results_dir = run_dir / "trials" / "scratch_mlp"
    trial_ids = sorted(p.name for p in results_dir.iterdir() if p.is_dir())
    crafted = results_dir / trial_ids[0] / "result.json"
    record = json.loads(crafted.read_text())
    outside = os.path.relpath(victim, results_dir)
    record["trial_id"] = outside
    crafted.write_text(json.dumps(record))
    if damaged:  # a trial whose folder is kept for its damaged result (QA's way in)
        (results_dir / trial_ids[0] / "result.json.damaged").write_text("{")
    frame = resume_run(run_dir, plugins=[], echo=print).leaderboard
    assert (victim / "model.keras").read_text() == "the user's"
    assert sorted(frame["trial_id"]) == trial_ids, frame[["trial_id", "status"]]
    assert (frame["status"] == "ok").all()
    # Trained again, under its folder's own id.
    assert json.loads(crafted.read_text())["trial_id"] == trial_ids[0]


def test_no_trial_folder_is_made_of_a_name_that_is_no_folders(tmp_path):
    """The last line against names read back from a run directory: keras-tuner's
    ``trial.json`` id becomes ``kt{id}`` (found by security QA: ``1/../../x`` made a
    resume write a trial's files into any folder)."""
    from orchestrator.errors import RunDirError
    from orchestrator.trial import trial_dir

    assert trial_dir(tmp_path, "scratch_mlp", "kt1") == tmp_path / "trials/scratch_mlp/kt1"
    for strategy, trial_id in (
        ("scratch_mlp", "kt1/../../../../x"),
        ("scratch_mlp", ".."),
        ("..", "a"),
        ("scratch_mlp", ""),
        ("scratch_mlp", "a\0b"),
    ):
        with pytest.raises(RunDirError, match="is no folder name"):
            trial_dir(tmp_path, strategy, trial_id)


def resumed_grid(tmp_path: Path, search: str, space: str, killed: int):
    """A grid run twice over ``space``, one trial at a time, whose last ``killed``
    trials were killed while they trained, resumed: every trial is listed once
    under its id, and none that had ended ran again or had its result.json
    written again. Returns the leaderboard, the ended trials' statuses and the
    trials' folder."""
    from orchestrator.run import resume_run

    run_dir = unfinished_run(
        tmp_path,
        f"{{algorithm: grid, num_samples: 2, max_concurrent_trials: 1, {search}}}",
        strategies=f"scratch_mlp: {{space: {space}}}",
    )
    results_dir = run_dir / "trials" / "scratch_mlp"
    trial_ids = sorted(p.name for p in results_dir.iterdir() if p.is_dir())
    for trial_id in trial_ids[-killed:]:
        shutil.rmtree(results_dir / trial_id)
    ended = ended_trials(results_dir)
    statuses = {t: json.loads((results_dir / t / "result.json").read_text()) for t in ended}
    frame = resume_run(run_dir, plugins=[], echo=print).leaderboard
    assert sorted(frame["trial_id"]) == trial_ids
    assert_not_run_again(results_dir, ended)
    return frame, {t: r["status"] for t, r in statuses.items()}, results_dir


def test_a_resumed_grid_whose_configurations_repeat_takes_each_trials_own_result_back(tmp_path):
    """Found by QA: a grid run twice (or a choice drawn twice) resumed, and a later
    trial of a configuration took an earlier one's folder by that configuration;
    the earlier one was listed 'pruned' after 1 epoch, with no model."""
    from orchestrator.trial import read_result

    frame, _, results_dir = resumed_grid(
        tmp_path,
        "max_epochs: 2, scheduler: fifo",
        "{hidden_layers: {choice: [1, 2]}, width: 8, lambda: 1.0e-5, learning_rate: 0.01}",
        killed=2,  # the two that ended were (1, 2); killed in the repeats
    )
    assert len(frame) == 4
    assert (frame["status"] == "ok").all() and (frame["epochs"] == 2).all(), frame
    assert all(read_result(results_dir / t).earlier_id is None for t in frame["trial_id"])


def test_a_resume_keeps_the_results_of_trials_asha_stopped_as_they_were(tmp_path):
    """Found by QA: a trial the scheduler had stopped, taken back on resume, had its
    result.json written again (the same, a new time), as if it had just been stopped."""
    frame, before, _ = resumed_grid(
        tmp_path,
        "max_epochs: 3, scheduler: asha, grace_period: 1, reduction_factor: 2",
        "{hidden_layers: 1, width: 8, lambda: 1.0e-5, learning_rate: {choice: [0.05, 1.0e-5]}}",
        killed=1,
    )
    assert "pruned" in before.values(), before  # what this test is about
    statuses = dict(zip(frame["trial_id"], frame["status"], strict=True))
    assert {t: statuses[t] for t in before} == before


def test_a_resume_on_another_keras_backend_is_refused_before_any_work(
    ended_run, tmp_path, monkeypatch
):
    """Found by QA: a run resumed with another KERAS_BACKEND trained its other trials
    there and ranked the two backends' models in one leaderboard, in silence."""
    from orchestrator.run import resume_run

    run_dir = copy_of(ended_run, tmp_path, unfinished=True)
    results_dir = run_dir / "trials" / "scratch_mlp"
    (first, *others) = sorted(results_dir.iterdir())
    for other in others:
        shutil.rmtree(other)  # killed while they trained
    record = json.loads((first / "result.json").read_text())
    assert record["backend"] == "tensorflow"  # this process's Keras
    record["backend"] = "jax"  # as a run started on JAX records it
    (first / "result.json").write_text(json.dumps(record))
    before = sorted(p.name for p in run_dir.rglob("*"))
    with pytest.raises(RunDirError) as info:
        resume_run(run_dir, plugins=[], echo=print)
    assert str(info.value).startswith(
        f"{run_dir}: its trials trained on jax, and this resume would train the rest on tensorflow"
    )
    assert str(info.value).endswith("resume it with KERAS_BACKEND=jax")
    assert sorted(p.name for p in run_dir.rglob("*")) == before
    # On a machine with no keras.json and no KERAS_BACKEND (Keras' default), a local
    # run too (found by mutation testing: this machine's keras.json hid that branch).
    import orchestrator.accelerator

    monkeypatch.setattr(orchestrator.accelerator, "chosen_backend", lambda: None)
    with pytest.raises(RunDirError) as info:
        resume_run(run_dir, plugins=[], echo=print)
    assert "would train the rest on tensorflow (Keras' default)" in str(info.value)
    assert sorted(p.name for p in run_dir.rglob("*")) == before


def test_a_resumed_bayesian_search_learns_the_trials_that_ended_and_runs_none_twice(
    ray_session, tmp_path
):
    """Started again, a Bayesian search is given the ended trials' configurations
    first: each takes its result back, and only the rest are drawn and run."""
    from orchestrator.reporters import read_events
    from orchestrator.run import resume_run
    from orchestrator.trial import read_result

    run_dir = unfinished_run(
        tmp_path, "{num_samples: 4, max_epochs: 1, max_concurrent_trials: 1, algorithm: bayesian}"
    )
    results_dir = run_dir / "trials" / "scratch_mlp"
    trial_ids = sorted(p.name for p in results_dir.iterdir())
    for trial_id in trial_ids[2:]:  # two ended, two killed
        shutil.rmtree(results_dir / trial_id)
    ended = {
        json.dumps(r.config, sort_keys=True): r.started_at
        for r in (read_result(results_dir / t) for t in trial_ids[:2])
    }
    frame = resume_run(run_dir, plugins=[], echo=print).leaderboard
    assert len(frame) == 4 and frame["trial_id"].is_unique, frame
    assert (frame["status"] == "ok").all(), frame[["trial_id", "status", "error"]]
    again = {
        json.dumps(r.config, sort_keys=True): r.started_at
        for r in (read_result(results_dir / t) for t in frame["trial_id"])
    }
    assert {k: again[k] for k in ended} == ended  # taken back, not run again
    assert len(again) == 4  # nor drawn again: four configurations
    # Under new ids (what it draws next is not what it drew): each says its earlier one.
    earlier = {read_result(results_dir / t).earlier_id for t in frame["trial_id"]}
    assert set(trial_ids[:2]) <= earlier
    # Killed and resumed again: each still names the id the hooks were told (found
    # by QA: earlier_id goes one resume back, and that id was nowhere in the run).
    _unfinish(run_dir, search_ended=False)
    told = [e["trial_id"] for e in read_events(run_dir) if e["event"] == "trial_finished"]
    before = set(frame["trial_id"])
    frame = resume_run(run_dir, plugins=[], echo=print).leaderboard
    results = [read_result(results_dir / t) for t in frame["trial_id"]]
    assert not {r.trial_id for r in results} & before  # new ids again, none run again
    assert {r.first_id for r in results} <= set(told)
    assert {r.first_id for r in results} >= set(trial_ids[:2])
    assert [e["trial_id"] for e in read_events(run_dir) if e["event"] == "trial_finished"] == (
        told  # none told twice
    )


def test_a_resumed_bayesian_search_of_the_largest_seed_seeds_optuna_within_its_range():
    """Found by QA (reading): a resumed Bayesian search seeds Optuna's TPE with the
    recipe's seed plus the trials that ended, so seed 2**32 - 1 (the largest a
    recipe takes) gave numpy a seed past its range, and the resume failed."""
    from orchestrator.recipe import SearchSpec
    from orchestrator.tuning.ray_tune import _Restart, _searcher

    ended = [{"learning_rate": 0.001}, {"learning_rate": 0.01}]
    restart = _Restart(earlier={}, ended=ended, prefix="abcde")
    searcher = _searcher(SearchSpec(algorithm="bayesian"), seed=2**32 - 1, restart=restart)
    sampler = searcher.searcher._sampler  # Ray: the SearchGenerator's OptunaSearch
    assert sampler._rng.rng.randint(0, 2**31) == _tpe_draw(seed=1)  # (2**32 - 1 + 2) % 2**32


def _tpe_draw(seed: int) -> int:
    import optuna

    return optuna.samplers.TPESampler(seed=seed)._rng.rng.randint(0, 2**31)


@contextlib.contextmanager
def ctrl_c_raises():
    """Ctrl+C raises KeyboardInterrupt meanwhile, as at a terminal: a process started in
    the background by a script (CI), and a pytest-xdist worker, ignore SIGINT."""
    sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, sigint)


def test_interrupts_held_handles_a_ctrl_c_once_the_block_ends():
    from orchestrator.tuning.ray_start import interrupts_held

    went_on = False
    with ctrl_c_raises(), pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the handler would have raised here
            went_on = True
        raise AssertionError("not raised as the block ended")
    assert went_on
    with ctrl_c_raises():
        with interrupts_held():
            pass  # nothing came: nothing raised
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # A second one is handled at once: an import that hangs can still be stopped.
    went_on = False
    with ctrl_c_raises(), pytest.raises(KeyboardInterrupt), interrupts_held():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        went_on = True
    assert not went_on


#: A Ctrl+C in the middle of Ray's import (sent as a finder meets one of Ray's later
#: modules), then a run in the same process: it must run (each later run had failed).
CTRL_C_IN_RAYS_IMPORT = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal


class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "ray.runtime_env":  # half of ray/__init__ has run
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None


from orchestrator import run_recipe

sys.meta_path.insert(0, CtrlC())
try:
    run_recipe(sys.argv[1], echo=lambda line: None)
    print("FIRST ran whole")
except KeyboardInterrupt:
    print("FIRST interrupted")
outcome = run_recipe(sys.argv[1], run_dir=sys.argv[2], echo=lambda line: None)
print("AGAIN", list(outcome.leaderboard["status"]))
"""


def test_a_ctrl_c_in_rays_import_leaves_no_half_imported_ray(tmp_path):
    """Found by QA, from Python: a Ctrl+C 0.3 s into run_recipe, while it imported
    Ray, left a half-imported Ray, and every later run in the process failed with
    "partially initialized module 'ray' has no attribute '_private'"."""
    import sys

    recipe = write_recipe(tmp_path, "{num_samples: 1, max_epochs: 1}")
    ran = subprocess.run(
        [sys.executable, "-c", CTRL_C_IN_RAYS_IMPORT, str(recipe), str(tmp_path / "again")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr[-3000:]
    assert ran.stdout.splitlines() == ["FIRST interrupted", "AGAIN ['ok']"], ran.stdout


@pytest.mark.parametrize("backend", ["ray", "keras_tuner"])
def test_a_run_that_ignores_ctrl_c_goes_on_to_its_end_on_both_backends(
    ray_session, tmp_path, backend
):
    """Found by QA: a shell script's background job (``graftune run r.yaml &``)
    starts with SIGINT ignored; a ``kill -INT`` went unheeded on keras_tuner, as
    Python and POSIX have it, and stopped the search on Ray, whose Tune installed
    its own handler over the ignore."""
    import threading

    recipe = write_recipe(
        tmp_path, f"{{backend: {backend}, num_samples: 3, max_epochs: 2, max_concurrent_trials: 1}}"
    )
    results = tmp_path / "runs"
    ended_when_sent = []

    def interrupt() -> None:
        deadline = time.monotonic() + 240
        while not (ended := list(results.glob("*/trials/scratch_mlp/*/result.json"))):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        ended_when_sent.append(len(ended))
        os.kill(os.getpid(), signal.SIGINT)

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    sender = threading.Thread(target=interrupt, daemon=True)
    sender.start()
    try:
        outcome = run(recipe)
        sender.join(timeout=5)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # still ignored after
    finally:
        signal.signal(signal.SIGINT, before)
    assert ended_when_sent and ended_when_sent[0] < 3  # sent while the search went on
    assert list(outcome.leaderboard["status"]) == ["ok"] * 3


# The finaliser's dropped KeyboardInterrupt is what the test makes happen.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_python_drops_stops_a_run_from_python_too(tmp_path):
    """Found by QA: from Python, a Ctrl+C raised in a garbage collection's callback
    (JAX's) was dropped, and the run went on to its end as if never pressed; only
    ``graftune run`` noted it."""
    from orchestrator.errors import RunInterrupted
    from orchestrator.run import run_recipe

    marker = tmp_path / "interrupted"
    recipe = write_recipe(
        tmp_path,
        "{backend: keras_tuner, num_samples: 3, max_epochs: 2}",
        f"interrupted_mlp: {{space: {{marker: '{marker}', signal: SIGINT-dropped}}}}",
    )
    with ctrl_c_raises():
        with pytest.raises(RunInterrupted) as info:
            run_recipe(recipe, plugins=[fixture_plugins])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    assert marker.exists()
    assert info.value.by_sigterm is False  # Ctrl+C (found by QA: no such attribute)
    assert RunInterrupted("x", by_sigterm=True).by_sigterm is True
    frame = pd.read_csv(info.value.run_dir / "leaderboard.csv")
    assert len(frame) < 3  # stopped: the third trial did not run


def test_a_ctrl_c_while_hooks_hear_of_a_keras_tuner_trial_waits_for_them(tmp_path):
    """Found by QA: on keras_tuner a Ctrl+C while the hooks heard of a trial cut them
    off; the event log missed a trial the stopped run ranked, and the resume told
    the other hooks of it again. Ray Tune's handler waits for them; so does this one."""
    from orchestrator import hookimpl, run_recipe
    from orchestrator.errors import RunInterrupted
    from orchestrator.leaderboard import read_leaderboard
    from orchestrator.reporters import read_events
    from orchestrator.run import resume_run

    heard: list[str] = []

    class Reporter:  # a third-party reporter: its hook runs after graftune's own
        @hookimpl
        def graftune_trial_finished(self, result):
            if not heard:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl+C, in the middle of the hooks
                time.sleep(0.2)  # (a handler runs between two bytecodes: here, at once)
            heard.append(result.trial_id)

    recipe = write_recipe(tmp_path, "{backend: keras_tuner, num_samples: 2, max_epochs: 1}")
    with ctrl_c_raises(), pytest.raises(RunInterrupted) as info:
        run_recipe(recipe, plugins=[Reporter()], echo=print)
    run_dir = info.value.run_dir
    assert heard == ["kt0"]  # the hook ran to its end, and the search stopped after it
    logged = [e["trial_id"] for e in read_events(run_dir) if e["event"] == "trial_finished"]
    assert logged == list(read_leaderboard(run_dir)["trial_id"]) == ["kt0"]
    resume_run(run_dir, plugins=[Reporter()], echo=print)
    assert heard == ["kt0", "kt1"]  # told of each trial once
    logged = [e["trial_id"] for e in read_events(run_dir) if e["event"] == "trial_finished"]
    assert logged == ["kt0", "kt1"]


@pytest.mark.parametrize(
    ("signal_name", "status", "said"),
    [
        ("SIGINT", 130, "interrupted"),
        ("SIGTERM", 143, "terminated (SIGTERM)"),
        ("SIGTERM-dropped", 143, "terminated (SIGTERM)"),
        # Found by QA: a Ctrl+C that Keras' code turned into a ValueError was the
        # trial's error, and resume never ran it again.
        ("SIGINT-converted", 130, "interrupted"),
    ],
    ids=["Ctrl+C", "SIGTERM", "SIGTERM-in-a-finaliser", "Ctrl+C-turned-into-an-error"],
)
# The finaliser's dropped KeyboardInterrupt is what the test makes happen.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_keras_tuner_search_stopped_by_a_signal_keeps_what_ended_and_resume_runs_the_rest(
    tmp_path, signal_name, status, said, capsys
):
    """The backend without Ray: a real signal to this process, in the second trial.

    SIGTERM's default action would end the process with nothing written; ``graftune
    run`` handles it as it does Ctrl+C, and puts the default back when it ends. A
    SIGTERM that arrives during a garbage collection runs its handler in a finaliser,
    where Python drops the KeyboardInterrupt it raises (the run went on to its end,
    exit 0); the search stops at the trial's next epoch instead.
    """
    from orchestrator.cli import app
    from orchestrator.leaderboard import read_leaderboard

    marker = tmp_path / "interrupted"
    folder = tmp_path / "my runs"  # the command it prints must survive a copy and paste
    folder.mkdir()
    recipe = write_recipe(
        folder,
        "{backend: keras_tuner, num_samples: 2, max_epochs: 2}",
        f"interrupted_mlp: {{space: {{marker: '{marker}', signal: {signal_name}}}}}",
    )
    sigterm = signal.getsignal(signal.SIGTERM)
    with ctrl_c_raises():
        result = CliRunner().invoke(app, ["run", str(recipe), "--plugin", "tests.fixture_plugins"])
    assert result.exit_code == status, result.output
    assert signal.getsignal(signal.SIGTERM) is sigterm
    assert marker.exists()
    (run_dir,) = (folder / "runs").iterdir()
    assert f"{said}: interrupted_mlp: 1 trial ended, 1 stopped midway" in result.output
    # With the --plugin it ran with (without, the resume said "unknown strategy").
    assert f"graftune run --resume '{run_dir}' --plugin tests.fixture_plugins" in result.output
    results_dir = run_dir / "trials" / "interrupted_mlp"
    ended = ended_trials(results_dir)
    assert list(read_leaderboard(run_dir)["trial_id"]) == list(ended)
    assert not (results_dir / "search.json").exists()
    assert not (run_dir / "finished.json").exists()
    # Its page says it stopped (found by QA: it looked like a finished run's) ...
    stopped = "This run stopped before it finished"
    assert stopped in (run_dir / "report.html").read_text()
    # Resumed without it, the error names it (found by QA: "unknown strategy", alone).
    without = CliRunner().invoke(app, ["run", "--resume", str(run_dir)])
    assert without.exit_code == 2, without.output
    assert "unknown strategy 'interrupted_mlp'" in without.output
    assert (
        "(the run was made with --plugin tests.fixture_plugins, not given now: pass it again)"
    ) in without.output
    assert ended_trials(results_dir) == ended
    capsys.readouterr()
    assert_resumes_to_every_trial_once(run_dir, ended, 2, plugins=[fixture_plugins])
    assert stopped not in (run_dir / "report.html").read_text()  # ... until it finishes
    assert "Reloading Tuner" not in capsys.readouterr().out  # keras-tuner's own print: logged

    # Finished now: resumed again, it runs nothing and calls no hook again.
    events = (run_dir / "events.jsonl").read_text()
    board = (run_dir / "leaderboard.csv").stat().st_mtime_ns
    again = CliRunner().invoke(
        app, ["run", "--resume", str(run_dir), "--plugin", "tests.fixture_plugins"]
    )
    assert again.exit_code == 0, again.output
    assert "the run finished at" in again.output and "nothing to resume" in again.output
    assert "best: interrupted_mlp trial kt" in again.output
    assert (run_dir / "events.jsonl").read_text() == events
    assert (run_dir / "leaderboard.csv").stat().st_mtime_ns == board


def test_an_interrupted_runs_summary_counts_the_strategies_searched_before(tmp_path):
    """Found by QA: Ctrl+C in the third strategy's search said
    "interrupted: fine_tune: 1 trial ended, 2 stopped midway" when 17 had ended."""
    from orchestrator.errors import SearchInterrupted
    from orchestrator.run import _interrupted_message

    stop = SearchInterrupted(finished=["t"], stopped=2)
    said = _interrupted_message(
        tmp_path,
        "fine_tune",
        stop,
        earlier=["scratch_mlp", "feature_extraction"],
        later=[],
        ended=17,
    )
    assert said.splitlines()[0] == (
        "fine_tune: 1 trial ended, 2 stopped midway (they run again on resume); searched "
        "before it: scratch_mlp, feature_extraction (16 trials ended)"
    )
    alone = _interrupted_message(tmp_path, "a", stop, earlier=[], later=["b"], ended=1)
    assert alone.splitlines()[0] == (
        "a: 1 trial ended, 2 stopped midway (they run again on resume); not started: b"
    )


def test_a_keras_tuner_grid_search_resumes_to_every_point_once(tmp_path):
    """Found by QA: keras-tuner's grid oracle keeps its order in memory only; a
    resumed grid search raised KeyError after the trial it ran again, and the next
    resume ended the search with half the grid untried, without a word."""
    from orchestrator.cli import app
    from orchestrator.leaderboard import read_leaderboard
    from orchestrator.trial import read_result

    marker = tmp_path / "interrupted"
    recipe = write_recipe(
        tmp_path,
        "{backend: keras_tuner, algorithm: grid, max_epochs: 1}",
        "interrupted_mlp: {space: {hidden_layers: {choice: [1, 2]}, width: {choice: [8, 16]}, "
        f"learning_rate: {{choice: [0.001, 0.01]}}, marker: '{marker}'}}}}",
    )
    with ctrl_c_raises():
        result = CliRunner().invoke(app, ["run", str(recipe), "--plugin", "tests.fixture_plugins"])
    assert result.exit_code == 130, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    results_dir = run_dir / "trials" / "interrupted_mlp"
    ended = ended_trials(results_dir)
    assert list(ended) == ["kt0000"]
    first = read_result(results_dir / "kt0000").config

    assert_resumes_to_every_trial_once(run_dir, ended, 8, plugins=[fixture_plugins])
    ids = sorted(read_leaderboard(run_dir)["trial_id"])
    assert ids == [f"kt{n:04d}" for n in range(8)]
    configs = [read_result(results_dir / trial_id).config for trial_id in ids]
    assert configs[0] == first  # the same point under the same id
    points = {(c["hidden_layers"], c["width"], c["learning_rate"]) for c in configs}
    assert len(points) == 8  # every point of the grid, once


def test_a_keras_tuner_trial_whose_result_is_gone_runs_again_on_resume(tmp_path):
    """Found by QA: keras-tuner's saved state still listed such trials as ended, so it
    never proposed them again; they showed as ``failed`` ("keras-tuner recorded the
    trial but it left no result") and the run was sealed without them."""
    from orchestrator.errors import RunInterrupted
    from orchestrator.leaderboard import read_leaderboard
    from orchestrator.run import resume_run

    marker = tmp_path / "interrupted"
    recipe = write_recipe(
        tmp_path,
        "{backend: keras_tuner, num_samples: 3, max_epochs: 1}",
        "{scratch_mlp: {space: {hidden_layers: 1, width: {choice: [8, 16, 32]}}}, "
        f"interrupted_mlp: {{space: {{marker: '{marker}'}}}}}}",
    )
    with ctrl_c_raises(), pytest.raises(RunInterrupted):
        run(recipe)
    (run_dir,) = (tmp_path / "runs").iterdir()
    results_dir = run_dir / "trials" / "scratch_mlp"
    assert (results_dir / "search.json").is_file()
    shutil.rmtree(results_dir / "kt1")
    (results_dir / "kt2" / "result.json").write_text('{"broken')

    frame = resume_run(run_dir, plugins=[fixture_plugins], echo=print).leaderboard
    assert len(frame) == 6 and (frame["status"] == "ok").all(), frame
    assert (results_dir / "kt1" / "result.json").is_file()
    assert (results_dir / "kt2" / "result.json.damaged").is_file()
    assert (run_dir / "finished.json").is_file()
    assert len(read_leaderboard(run_dir)) == 6

    # Found by QA: a stored copy (URI storage) of a run killed just after a trial ended
    # keeps that trial's `running` file (uploaded before it was removed here), and
    # keras-tuner, its state saved before the trial ended, retries it on resume: it
    # was counted as a death (`failed`, its scores gone, with max_failures 0; here
    # `retries 1`). A trial with its result.json ended, whatever the file says.
    state = run_dir / "keras_tuner" / "scratch_mlp"
    oracle = json.loads((state / "oracle.json").read_text())
    oracle["ongoing_trials"], oracle["end_order"] = {"tuner0": "0"}, ["1", "2"]
    (state / "oracle.json").write_text(json.dumps(oracle))
    trial = json.loads((state / "trial_0" / "trial.json").read_text())
    (state / "trial_0" / "trial.json").write_text(json.dumps({**trial, "status": "RUNNING"}))
    for folder in results_dir.glob("kt*"):
        (folder / "running").write_text("1")
    kept = (results_dir / "kt0" / "result.json").read_bytes()
    shutil.rmtree(results_dir / "kt2")  # the search was not over when it was killed
    (run_dir / "finished.json").unlink()
    frame = resume_run(run_dir, plugins=[fixture_plugins], echo=print).leaderboard
    assert len(frame) == 6 and (frame["status"] == "ok").all(), frame
    assert (frame["retries"] == 0).all(), frame
    assert (results_dir / "kt0" / "result.json").read_bytes() == kept
    assert not list(results_dir.glob("kt*/running"))


#: A keras_tuner trial's error once its process died twice while it ran.
DIED_TWICE = (
    "the process died while running it 2 times (killed, or out of memory); to train it "
    "again, delete its folder (and the run's finished.json, once the run finished) and "
    "resume the run"
)


def run_with_fixture_plugins(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``graftune run ARGS --plugin tests.fixture_plugins`` in a process of its own
    (``env``: variables to set in it)."""
    repo = Path(fixture_plugins.__file__).parents[1]
    plugin = ("--plugin", "tests.fixture_plugins")
    return subprocess.run(
        [GRAFTUNE, "run", *args, *plugin],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )


def refuse_self_kill(monkeypatch) -> list[int]:
    """For a resume in this process of a run whose trial kills its process, once that
    trial died twice and may not run again: a SIGKILL this process (pytest) sends
    itself raises instead, and is listed, for the test to assert that none was sent
    (the trial ran again) rather than be killed with its session."""
    sent: list[int] = []
    kill = os.kill

    def guarded(pid: int, signum: int) -> None:
        if pid == os.getpid() and signum == signal.SIGKILL:
            sent.append(signum)
            raise AssertionError("a trial that died twice ran again")
        kill(pid, signum)

    monkeypatch.setattr(os, "kill", guarded)
    return sent


def test_a_keras_tuner_trial_that_kills_the_process_fails_after_max_failures(tmp_path, monkeypatch):
    """Found by QA: a trial that killed the process (as an out-of-memory kill does) ran
    first on every resume of a keras_tuner search, and killed it again: the run could
    never finish. It is tried again up to ``max_failures`` times, as on Ray, then
    shows as ``failed`` and the search goes on."""
    from orchestrator.cli import app
    from orchestrator.leaderboard import read_leaderboard
    from orchestrator.run import resume_run
    from orchestrator.trial import read_result

    recipe = write_recipe(
        tmp_path,
        "{backend: keras_tuner, num_samples: 2, max_epochs: 2}",
        "killing_mlp: {space: {kill_after: 1}}",
    )
    graftune = run_with_fixture_plugins
    killed = graftune(str(recipe))
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    spared = shutil.copytree(run_dir, tmp_path / "spared")  # its trial ends well (below)
    # Tried again once (max_failures: 1, the default), and killed again.
    again = graftune("--resume", str(run_dir))
    assert again.returncode == -signal.SIGKILL, again.stdout + again.stderr
    # Its trial may not run again: resumed in this process (no TensorFlow import of its
    # own), with the CLI's exit status and words.
    killed_again = refuse_self_kill(monkeypatch)
    done = CliRunner().invoke(app, ["run", "--resume", str(run_dir), *FIXTURES.split()])
    assert not killed_again
    assert done.exit_code == 0, done.output
    assert (run_dir / "finished.json").is_file()
    frame = read_leaderboard(run_dir).set_index("width")
    assert frame.loc[8, "status"] == "ok" and frame.loc[8, "retries"] == 0
    assert frame.loc[16, "status"] == "failed" and frame.loc[16, "retries"] == 1
    assert frame.loc[16, "error"] == DIED_TWICE
    assert not list(run_dir.glob("trials/*/*/running"))
    # With the epoch it reported before its process died, as on Ray (found by QA: an
    # empty row, epochs 0, and no history.csv for its learning curve).
    assert frame.loc[16, "epochs"] == 1 and 0 <= frame.loc[16, "val_accuracy"] <= 1
    assert frame.loc[16, "val_loss"] > 0 and frame.loc[16, "params_total"] > 0
    died = run_dir / "trials" / "killing_mlp" / frame.loc[16, "trial_id"]
    history = pd.read_csv(died / "history.csv")
    assert list(history["epoch"]) == [1]
    assert history["val_accuracy"].iloc[0] == frame.loc[16, "val_accuracy"]
    assert "fit_seconds" not in history.columns  # costs are the row's, as a trial's own
    assert not list(run_dir.glob("trials/*/*/reported.jsonl"))
    # Killed by its user, not by the trial (found by QA): trained again as its error says.
    ended = ended_trials(run_dir / "trials" / "killing_mlp")
    shutil.rmtree(run_dir / "trials" / "killing_mlp" / frame.loc[16, "trial_id"])
    (run_dir / "finished.json").unlink()
    # Spared, no trial kills its process: resumed in this one (a process each costs a
    # TensorFlow import), which raises if the run does not finish.
    monkeypatch.setenv("GRAFTUNE_TEST_SPARE", "1")
    resume_run(run_dir, plugins=[fixture_plugins], echo=print)
    assert (run_dir / "finished.json").is_file()
    frame = read_leaderboard(run_dir).set_index("width")
    assert list(frame["status"]) == ["ok", "ok"]
    assert (
        ended_trials(run_dir / "trials" / "killing_mlp").items()
        >= {frame.loc[8, "trial_id"]: ended[frame.loc[8, "trial_id"]]}.items()
    )  # the other did not run again
    # A trial that ends well on the resume after its process died once counts a retry,
    # as on Ray (found by mutation testing: retries 0, unnoticed).
    resume_run(spared, plugins=[fixture_plugins], echo=print)
    frame = read_leaderboard(spared).set_index("width")
    assert list(frame["status"]) == ["ok", "ok"]
    assert frame.loc[8, "retries"] == 0 and frame.loc[16, "retries"] == 1
    ended = spared / "trials" / "killing_mlp" / frame.loc[16, "trial_id"]
    assert read_result(ended).retries == 1


def test_a_stopped_run_is_stored_before_it_says_so(tmp_path):
    """A stopped job (SIGTERM) with URI storage stored nothing: its run directory is in
    the job's working folder, which Ray deletes; fetch then had nothing to resume."""
    from orchestrator.cli import app
    from orchestrator.leaderboard import read_leaderboard

    marker = tmp_path / "interrupted"
    recipe = write_recipe(
        tmp_path,
        "{backend: keras_tuner, num_samples: 3, max_epochs: 2}",
        f"interrupted_mlp: {{space: {{marker: '{marker}', signal: SIGTERM}}}}",
    )
    store = tmp_path / "store"
    recipe.write_text(recipe.read_text() + f"storage: file://{store}/\n")
    sigterm = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(
        app, ["run", str(recipe), "--run-name", "job", "--plugin", "tests.fixture_plugins"]
    )
    assert signal.getsignal(signal.SIGTERM) is sigterm
    assert result.exit_code == 143, result.output
    stored = store / "job"
    assert (stored / "recipe.yaml").is_file()
    assert list(read_leaderboard(stored)["status"]) == ["ok"]  # the trial that ended


def test_a_pruned_trial_is_stored_before_its_end_is_recorded(ray_session, tmp_path, monkeypatch):
    """Found by upgrade QA: a pruned trial's folder reached storage only when its
    search ended, its end's record (``.reported``, ``events.jsonl``) at once: a run
    killed between them was resumed from storage training it again, and its hooks
    heard of it twice. It is stored before the run is told it ended, and once: it
    was uploaded again, the same, when its search ended (noticed in stop 67); one
    whose upload failed then is uploaded at the search's end."""
    import orchestrator.storage
    from orchestrator.errors import StorageError
    from orchestrator.progress import RunProgress
    from orchestrator.tuning.ray_tune import folder_state

    store = tmp_path / "store"
    recipe = write_recipe(
        tmp_path,
        "{num_samples: 6, max_epochs: 3, max_concurrent_trials: 1, scheduler: asha, "
        "grace_period: 1}",
        "scratch_mlp: {space: {hidden_layers: 1, width: {choice: [4, 8, 16, 32]}}}",
    )
    recipe.write_text(recipe.read_text() + f"storage: file://{store}\n")

    def stored_files(trial_id: str) -> dict[str, int]:
        """Each stored file of the trial (its path in the trial's folder) and when written."""
        state = folder_state(store / "job" / "trials" / "scratch_mlp" / trial_id) or ()
        return {name: written for name, _, written in state}

    class Heard(RunProgress):
        stored_when_told: dict[str, dict[str, int]] = {}

        def trial_finished(self, result) -> None:
            if result.status == "pruned":
                self.stored_when_told[result.trial_id] = stored_files(result.trial_id)
            super().trial_finished(result)

    # The driver uploads only the trials it writes (a worker uploads its own): the
    # first of them meets storage that fails for a moment.
    real, failed = orchestrator.storage.push_trial, []

    def first_fails(folder, storage, strategy, trial_id) -> None:
        if not failed:
            failed.append(trial_id)
            raise StorageError("storage unreachable for a moment (as a test makes it)")
        real(folder, storage, strategy, trial_id)

    monkeypatch.setattr(orchestrator.storage, "push_trial", first_fails)
    heard = Heard("val_accuracy", "max")
    frame = run(recipe, run_name="job", listener=heard).leaderboard
    pruned = set(frame.loc[frame["status"] == "pruned", "trial_id"])
    assert len(pruned) >= 2 and set(heard.stored_when_told) == pruned, frame
    told = heard.stored_when_told
    (missed,) = failed
    assert told.pop(missed) == {}  # not stored as it ended, and so at the search's end:
    assert {"result.json", "history.csv"} <= set(stored_files(missed))
    pruned.remove(missed)
    assert all({"result.json", "history.csv"} <= set(files) for files in told.values()), told
    # Not written there again when the search ended.
    assert {trial_id: stored_files(trial_id) for trial_id in pruned} == told


def test_a_run_whose_last_upload_failed_is_not_finished_and_its_resume_uploads_it(
    tmp_path, monkeypatch
):
    """Storage that fails at the run's end (expired credentials, a full bucket): the
    run is not marked finished, so that --resume uploads it (found by mutation
    testing: with finished.json kept, the resume said "nothing to resume" and the
    stored copy never got its leaderboard or best model)."""
    import orchestrator.storage
    from orchestrator.errors import StorageError
    from orchestrator.run import FINISHED_FILE, resume_run, run_recipe

    real = orchestrator.storage.publish

    def failing_at_the_end(place, *args, **kwargs):
        if (place.local_dir / FINISHED_FILE).is_file():
            raise StorageError("storage unreachable at the end (as a test makes it)")
        return real(place, *args, **kwargs)

    store = tmp_path / "store"
    recipe = write_recipe(tmp_path, "{backend: keras_tuner, num_samples: 1, max_epochs: 1}")
    recipe.write_text(recipe.read_text() + f"storage: file://{store}/\n")
    monkeypatch.setattr(orchestrator.storage, "publish", failing_at_the_end)
    with pytest.raises(StorageError, match="unreachable at the end"):
        run_recipe(recipe, run_name="ended")
    run_dir = tmp_path / "runs" / "ended"
    assert not (run_dir / FINISHED_FILE).exists()
    assert not (store / "ended" / "leaderboard.csv").exists()
    monkeypatch.setattr(orchestrator.storage, "publish", real)
    resume_run(run_dir)
    for name in ("leaderboard.csv", "best/model.keras", FINISHED_FILE):
        assert (store / "ended" / name).is_file(), name


def test_a_fetched_run_resumes_into_its_own_place_in_storage_and_never_over_another(tmp_path):
    """A fetched job resumed from a folder named f6 was stored in STORAGE/f6 (its own
    STORAGE/JOB_ID stayed unfinished), over whatever run was stored there."""
    from orchestrator.cli import app
    from orchestrator.storage import STORED_FILE, StorageError, fetch

    store = tmp_path / "store"

    def stopped_run(name: str) -> Path:
        marker = tmp_path / f"{name}-interrupted"
        recipe = write_recipe(
            tmp_path,
            "{backend: keras_tuner, num_samples: 2, max_epochs: 1}",
            f"interrupted_mlp: {{space: {{marker: '{marker}', signal: SIGTERM}}}}",
        )
        recipe.write_text(recipe.read_text() + f"storage: file://{store}/\n")
        result = CliRunner().invoke(
            app, ["run", str(recipe), "--run-name", name, "--plugin", "tests.fixture_plugins"]
        )
        assert result.exit_code == 143, result.output
        return recipe

    def resume(run_dir: Path):
        return CliRunner().invoke(
            app, ["run", "--resume", str(run_dir), "--plugin", "tests.fixture_plugins"]
        )

    recipe = stopped_run("job-1")
    fetched = fetch(f"file://{store}/job-1", tmp_path / "f6")
    resumed = resume(fetched)
    assert resumed.exit_code == 0, resumed.output
    assert f"stored: file://{store}/job-1" in resumed.output
    assert not (store / "f6").exists()
    assert (store / "job-1" / "finished.json").is_file()
    assert len(pd.read_csv(store / "job-1" / "leaderboard.csv")) == 2

    # Another run, fetched into a folder named as the first, from before graftune
    # recorded where a run is stored: STORAGE/job-1 is the first run's, and kept.
    stopped_run("job-2")
    other = fetch(f"file://{store}/job-2", tmp_path / "other" / "job-1")
    (other / STORED_FILE).unlink()
    kept = {path: path.read_bytes() for path in (store / "job-1").rglob("*") if path.is_file()}
    refused = resume(other)
    assert refused.exit_code == 2, refused.output
    assert f"storage: file://{store}/job-1 holds another run than {other}" in refused.output
    assert kept == {p: p.read_bytes() for p in (store / "job-1").rglob("*") if p.is_file()}
    assert not (other / STORED_FILE).exists() and not (other / ".graftune.lock").exists()
    # In a folder of its own name in storage, it resumes there, as before.
    own = other.rename(other.with_name("job-2"))
    stored_id = json.loads((store / "job-2" / STORED_FILE).read_text())["run_id"]
    resumed = resume(own)
    assert resumed.exit_code == 0, resumed.output
    assert f"stored: file://{store}/job-2" in resumed.output
    assert (store / "job-2" / "finished.json").is_file() and (
        store / "job-2" / STORED_FILE
    ).is_file()
    # It takes the stored run's id (a new one made the run's other copies "another run").
    assert json.loads((own / STORED_FILE).read_text())["run_id"] == stored_id
    assert json.loads((store / "job-2" / STORED_FILE).read_text())["run_id"] == stored_id
    # A new run is never stored over one either.
    from orchestrator.run import run_recipe

    with pytest.raises(StorageError, match=f"file://{store}/job-1 already holds a run"):
        run_recipe(recipe, run_dir=tmp_path / "new" / "job-1", plugins=[fixture_plugins])
    assert not (tmp_path / "new").exists()
    # A name a URI would cut ('h#1' was stored in STORAGE/h) is refused before any work:
    # a run directory's (--run-name is held to a recipe name's rule, '#' refused).
    with pytest.raises(StorageError, match=r"run name 'h#1': a run stored in .* without '#'"):
        run_recipe(recipe, run_dir=tmp_path / "h#1", plugins=[fixture_plugins])
    assert not (store / "h").exists() and not (tmp_path / "h#1").exists()
    with pytest.raises(StorageError, match=r"run name 'h#1': expected a folder name, of"):
        run_recipe(recipe, run_name="h#1", plugins=[fixture_plugins])


def test_ctrl_c_while_the_run_is_saved_says_how_to_resume_and_resume_saves_it(
    tmp_path, monkeypatch
):
    """After the last search (a first Ctrl+C there, or a second one), nothing said how
    to go on: "stopped at once", and a run directory without a leaderboard. The Ctrl+C
    comes as the run's report is written, a step of its saving. (In the hooks that hear
    the run finished, it stops them, not the run: test_reporters.)"""
    from orchestrator import report
    from orchestrator.errors import RunInterrupted
    from orchestrator.run import resume_run, run_recipe

    written = report.write_report_safely
    calls = []

    def ctrl_c_the_first_time(run_dir, **options):
        calls.append(run_dir)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return written(run_dir, **options)

    monkeypatch.setattr(report, "write_report_safely", ctrl_c_the_first_time)
    recipe = write_recipe(tmp_path, "{backend: keras_tuner, num_samples: 2, max_epochs: 1}")
    with pytest.raises(RunInterrupted) as caught:
        run_recipe(recipe)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert "stopped at once; the trials that had ended are kept" in str(caught.value)
    assert f"continue it with: graftune run --resume {run_dir}" in str(caught.value)
    assert caught.value.run_dir == run_dir and not (run_dir / "finished.json").exists()
    # The trials that ended, ranked (found by QA: None, where a stop in a search gave
    # a leaderboard, so that `e.leaderboard.head()` raised in one case of two).
    assert len(caught.value.leaderboard) == 2
    assert set(caught.value.leaderboard["status"]) == {"ok"}

    # Ctrl+C as its resume reads the data, before any search (found by QA: it said only
    # "interrupted: stopped at once"): the run directory is there to continue.
    from orchestrator import submit
    from orchestrator.cli import app

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(submit, "recorded_source", ctrl_c)
        stopped = CliRunner().invoke(app, ["run", "--resume", str(run_dir), *FIXTURES.split()])
    assert stopped.exit_code == 130, stopped.output
    assert (
        f"interrupted: stopped at once; continue it with: graftune run --resume {run_dir} "
        f"{FIXTURES}"
    ) in " ".join(stopped.output.split())

    outcome = resume_run(run_dir)
    assert len(outcome.leaderboard) == 2 and (run_dir / "finished.json").is_file()
    assert len(calls) == 2 and (run_dir / "report.html").is_file()


def test_resume_refuses_a_folder_that_is_no_run(tmp_path):
    from orchestrator.cli import app

    result = CliRunner().invoke(app, ["run", "--resume", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a graftune run directory" in result.output
    # From Python: the same words, as the run directory's error (not "<recipe>: ...").
    from orchestrator import resume_run

    with pytest.raises(RunDirError) as caught:
        resume_run(tmp_path)
    assert str(caught.value) == f"{tmp_path} is not a graftune run directory (no recipe.yaml)"
    with pytest.raises(RunDirError, match=r"^\S*nope does not exist$"):
        resume_run(tmp_path / "nope")


@pytest.fixture
def small_disk(tmp_path):
    """A real file system of 640 KiB (a tmpfs; mounting one needs root, as here and in
    CI): full within a few trials, so a search of four shows the one that filled it."""
    from tests.helpers import tmpfs

    with tmpfs(tmp_path / "small", "640k") as disk:
        yield disk


@pytest.mark.parametrize("backend", ["keras_tuner", "ray"])
def test_a_full_disk_stops_the_run_with_what_to_do_and_the_resume_ends_it(
    request, tmp_path, small_disk, backend
):
    """It printed a trial's traceback, then "internal error: OSError", exit 1, with no
    word of the resume (on Ray: dozens of logging tracebacks, then EOFError). On Ray
    it then started every trial left, each failing on the full disk (and tried
    again, search.max_failures) before the run stopped: the search stops now at
    the first trial that cannot write its files."""
    from orchestrator.cli import app
    from orchestrator.reporters import read_events

    if backend == "ray":
        request.getfixturevalue("ray_session")  # the session's Ray: not one started per run
    recipe = write_recipe(
        tmp_path,
        f"{{backend: {backend}, num_samples: 4, max_epochs: 2, max_concurrent_trials: 1}}",
        "scratch_mlp: {space: {width: 256}}",
    )
    recipe.write_text(recipe.read_text().replace("output: runs/", f"output: {small_disk}"))
    result = CliRunner().invoke(app, ["run", str(recipe), "--quiet"])
    (run_dir,) = small_disk.iterdir()
    assert result.exit_code == 1, result.output
    assert "no space left on the device" in result.output
    assert f"free some, then continue it with: graftune run --resume {run_dir}" in result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    started = sorted((run_dir / "trials" / "scratch_mlp").iterdir())
    unended = [p.name for p in started if not (p / "result.json").is_file()]
    # The disk is small enough to fill before the last trial (on Ray in the second,
    # on keras_tuner in the third), or none could have started after it.
    assert len(started) < 4, started
    assert unended == [started[-1].name], unended  # none started after it
    assert not list(run_dir.rglob("result.json.*.tmp"))  # a half-written copy is removed
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    resumed = CliRunner().invoke(app, ["run", "--resume", str(run_dir), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    frame = pd.read_csv(run_dir / "leaderboard.csv")
    assert len(frame) == 4 and (frame["status"] == "ok").all(), frame
    told = [e for e in read_events(run_dir) if e["event"] == "trial_finished"]
    assert sorted(e["trial_id"] for e in told) == sorted(frame["trial_id"])


def test_a_file_past_the_size_limit_stops_the_run_as_a_full_disk_does(
    tmp_path, monkeypatch, caplog
):
    """Found by QA: under `ulimit -f` the trial whose model.keras outgrew the limit
    was ranked as an error, its cut-off model left, the run ended with status 0
    ranking a worse trial best, and --resume said there was nothing to resume.
    The check that a strategy's model saves was blamed on the plugin (status 3).

    Run in this process, under its own limit meanwhile; a traceback could be logged
    (pytest's handler takes the records, not stderr) as well as printed: neither."""
    from orchestrator.cli import app

    fixed = "hidden_layers: 2, lambda: 1.0e-5, learning_rate: 0.001"
    (tmp_path / "big").mkdir()
    big = write_recipe(
        tmp_path / "big", "{backend: keras_tuner, num_samples: 1, max_epochs: 1}",
        f"scratch_mlp: {{space: {{{fixed}, width: 512}}}}",
    )  # fmt: skip
    # A 2 x 512 network's model.keras is about 3 MB.
    with file_size_limited(512):
        done = CliRunner().invoke(app, ["run", str(big), "--quiet"])
    assert done.exit_code == 1, done.output
    assert "a file grew past the largest this process may write" in done.stderr, done.stderr
    assert "then run the command again (a model is saved in $TMPDIR" in done.stderr
    assert "plugin" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "Traceback" not in caplog.text, caplog.text

    recipe = write_recipe(
        tmp_path, "{backend: keras_tuner, algorithm: grid, max_epochs: 1}",
        f"scratch_mlp: {{space: {{{fixed}, width: {{choice: [16, 512]}}}}}}",
    )  # fmt: skip
    monkeypatch.chdir(tmp_path)
    caplog.clear()
    with file_size_limited(512):
        done = CliRunner().invoke(app, ["run", str(recipe), "--quiet"])
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert done.exit_code == 1, done.output
    (said,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert said.startswith("error: a file grew past the largest this process may write, "), said
    assert said.endswith(
        "(File too large: a file-size limit, as `ulimit -f` sets, a quota, or the file system's "
        f"own); raise the limit, then continue it with: graftune run --resume {run_dir}"
    ), said
    # The file, not the run's folder, and not left cut off (found by QA).
    (cut,) = [p for p in run_dir.glob("trials/scratch_mlp/*") if not (p / "result.json").exists()]
    assert f"writing {cut / 'model.keras'} (File too large" in said, said
    assert not (cut / "model.keras").exists()
    assert "Traceback" not in done.stderr and "Traceback" not in caplog.text
    assert not (run_dir / "finished.json").exists()
    resumed = CliRunner().invoke(app, ["run", "--resume", str(run_dir), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    frame = pd.read_csv(run_dir / "leaderboard.csv")
    assert sorted(frame["width"]) == [16, 512] and (frame["status"] == "ok").all(), frame


def test_a_resume_refuses_a_run_directory_with_something_read_only_inside(ended_run, tmp_path):
    """Found by QA: a run restored from a read-only copy, its folder made writable
    again, got a hook's warning and then "internal error: PermissionError" midway."""
    from orchestrator.cli import app
    from tests.helpers import tmpfs

    run_dir = copy_of(ended_run, tmp_path, unfinished=True)
    trials = run_dir / "trials"
    trials.rename(tmp_path / "aside")
    with tmpfs(trials, "16m"):
        shutil.copytree(tmp_path / "aside", trials, dirs_exist_ok=True)
        subprocess.run(["mount", "-o", "remount,ro", str(trials)], check=True)
        before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
        result = CliRunner().invoke(app, ["run", "--resume", str(run_dir)])
        assert result.exit_code == 2, result.output
        assert result.output == (
            f"error: {trials} is not writable, and a resume writes in the run directory: make "
            f"it all writable (chmod -R u+w {run_dir}), or copy it where you may write and "
            "resume the copy\n"
        )
        assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before


def test_a_run_directory_that_cannot_be_made_stops_the_run_before_any_work(tmp_path):
    from orchestrator.cli import app

    recipe = write_recipe(tmp_path, "{backend: keras_tuner, num_samples: 1, max_epochs: 1}")
    recipe.write_text(recipe.read_text().replace("output: runs/", "output: recipe.yaml/runs"))
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 2, result.output
    assert f"{recipe}:8: output: cannot make a run directory in" in result.output
    assert f"{recipe} is a file, not a folder" in result.output
    assert "data:" not in result.output  # refused before the data was loaded
    assert sorted(tmp_path.rglob("*")) == before
    # A --run-dir that is a link to nothing: it said "[Errno 17] File exists".
    recipe.write_text(recipe.read_text().replace("output: recipe.yaml/runs", "output: runs/"))
    (tmp_path / "latest").symlink_to(tmp_path / "gone")
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(app, ["run", str(recipe), "--run-dir", str(tmp_path / "latest")])
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'latest'} is a link to {tmp_path / 'gone'}, which does not exist" in (
        result.output
    )
    assert "File exists" not in result.output and "data:" not in result.output
    assert sorted(tmp_path.rglob("*")) == before


def test_a_run_whose_directory_another_run_took_meanwhile_takes_the_next_name(
    tmp_path, monkeypatch
):
    """Two runs of one recipe started in the same second plan the same directory."""
    from orchestrator import storage
    from orchestrator.run import run_recipe

    recipe = write_recipe(tmp_path, "{backend: keras_tuner, num_samples: 1, max_epochs: 1}")
    monkeypatch.setattr(storage, "_stamped", lambda name: f"{name}-20261129-120000")
    planned = tmp_path / "runs" / "search-test-20261129-120000"

    def echo(line: str) -> None:
        if line.startswith("data:"):  # after the run planned its directory, before it made it
            planned.mkdir(parents=True)
            (planned / "recipe.yaml").write_text("the other run's")

    outcome = run_recipe(recipe, echo=echo)
    assert outcome.run_dir == planned.with_name(planned.name + "-2")
    assert len(outcome.leaderboard) == 1
    assert [p.name for p in planned.iterdir()] == ["recipe.yaml"]
    assert (planned / "recipe.yaml").read_text() == "the other run's"


def test_run_needs_a_recipe_or_resume():
    from orchestrator.cli import app

    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 2
    assert "--resume" in result.output


def test_a_resume_whose_data_file_moved_says_to_put_it_back(tmp_path):
    """Editing the path in the run's recipe.yaml is refused as a change of what
    it searches: the message said only that the file does not exist."""
    from orchestrator.errors import RecipeError
    from orchestrator.run import resume_run

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    gone = tmp_path / "project" / "wine.csv"
    (run_dir / "recipe.yaml").write_text(
        f"name: moved\ndata: {{source: 'csv:{gone}', target: cultivar}}\n"
        "strategies: {scratch_mlp: {}}\nsearch: {num_samples: 1, max_epochs: 1}\n"
    )
    with pytest.raises(RecipeError) as info:
        resume_run(run_dir)
    assert f"CSV file {gone} does not exist" in str(info.value)
    assert "put the file back there, or a link to it, to resume" in str(info.value)
    assert sorted(p.name for p in run_dir.iterdir()) == ["recipe.yaml"]


def killed_wine_run(folder: Path, name: str, data: Path, sections: str) -> Path:
    """A one-trial keras_tuner run of the wine table ``data`` (a recipe in ``folder``
    with ``sections`` too), made to look killed before it finished."""
    from orchestrator.run import run_recipe

    recipe = folder / "recipe.yaml"
    recipe.write_text(
        f"name: {name}\ndata: {{source: 'csv:{data}', target: cultivar}}\n{sections}"
        "search: {backend: keras_tuner, num_samples: 1, max_epochs: 1}\noutput: runs/\n"
    )
    run_dir = run_recipe(recipe).run_dir
    (run_dir / "finished.json").unlink()  # as if killed before it finished
    return run_dir


def test_a_resume_refuses_data_that_changed_since_the_run_started(tmp_path):
    """Found by QA: images moved between class folders after a kill, and the resume
    trained the rest of the trials on the relabelled data, ranked in one
    leaderboard with those scored on the old, in silence."""
    from orchestrator.errors import RunDirError
    from orchestrator.run import DATA_FILE, resume_run

    data = tmp_path / "wine.csv"
    shutil.copy(Path(__file__).parents[1] / "recipes" / "data" / "wine.csv", data)
    run_dir = killed_wine_run(tmp_path, "edited", data, "strategies: {scratch_mlp: {}}\n")
    recorded = json.loads((run_dir / DATA_FILE).read_text())
    assert recorded["described"].startswith("106 train / 36 val / 36 test, 3 classes")
    original = data.read_text()
    lines = original.splitlines(keepends=True)
    data.write_text(lines[0] + lines[1].replace(",barolo", ",barbera") + "".join(lines[2:]))
    assert original != data.read_text()
    with pytest.raises(RunDirError) as info:
        resume_run(run_dir)
    said = str(info.value)
    assert f"{run_dir}: its data changed since the run started" in said
    assert "Put the data back as it was, or start a new run" in said
    assert not (run_dir / "finished.json").exists()
    data.write_text(original)  # put back: the resume goes on
    assert len(resume_run(run_dir).leaderboard) == 1
    assert json.loads((run_dir / DATA_FILE).read_text()) == recorded


def test_a_resume_of_a_run_made_before_data_json_checks_its_trials_test_split(tmp_path, caplog):
    """Found by QA: a run made before graftune wrote data.json resumed on its CSV cut
    short in silence, ranking trials tested on 36 rows beside ones tested on fewer."""
    from orchestrator.errors import RunDirError
    from orchestrator.run import DATA_FILE, SPLIT_FILE, resume_run

    data = tmp_path / "wine.csv"
    shutil.copy(Path(__file__).parents[1] / "recipes" / "data" / "wine.csv", data)
    run_dir = killed_wine_run(tmp_path, "older", data, "strategies: {scratch_mlp: {}}\n")
    for name in (DATA_FILE, SPLIT_FILE):  # as a run made before graftune wrote them
        (run_dir / name).unlink()
    original = data.read_text()
    lines = original.splitlines(keepends=True)
    data.write_text(lines[0] + "".join(lines[1::2]))  # every other row: each class kept
    with pytest.raises(RunDirError) as info:
        resume_run(run_dir)
    said = str(info.value)
    assert f"{run_dir}: its data changed since the run started: the trial in " in said
    assert "was tested on 36 examples of 3 classes, the data's test split has 18 of 3" in said
    assert not (run_dir / DATA_FILE).exists() and not (run_dir / "finished.json").exists()
    data.write_text(original)
    # Its classes too (found by mutation testing: only the rows were checked).
    import numpy as np

    (predictions,) = run_dir.glob("trials/*/*/test_probabilities.npy")
    kept = predictions.read_bytes()
    tested = np.load(predictions)
    np.save(predictions, np.hstack([tested, np.zeros((len(tested), 1), tested.dtype)]))
    with pytest.raises(RunDirError) as info:
        resume_run(run_dir)
    assert "was tested on 36 examples of 4 classes, the data's test split has 36 of 3" in str(
        info.value
    )
    predictions.write_bytes(kept)  # put back: the resume goes on, and says what it checked
    with caplog.at_level(logging.WARNING, logger="orchestrator.run"):
        assert len(resume_run(run_dir).leaderboard) == 1
    assert "was made before graftune recorded its data (data.json)" in caplog.text


def test_a_resume_refuses_a_base_that_changed_since_the_run_started(tmp_path):
    """The file of ``base.path`` replaced (or a pretrain: base made anew by another
    graftune) after a kill: the resume trained the rest of the trials on another
    base, ranked with the finished ones, in silence."""
    import keras

    from orchestrator.errors import RunDirError
    from orchestrator.run import BASE_FILE, resume_run

    def save_base(seed: int) -> None:
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((13,))
        hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
        outputs = keras.layers.Dense(4, activation="relu", name="features")(hidden)
        keras.Model(inputs, outputs).save(tmp_path / "base.keras")

    save_base(1)
    wine = Path(__file__).parents[1] / "recipes" / "data" / "wine.csv"
    sections = "base: {path: base.keras}\nstrategies: {feature_extraction: {}}\n"
    run_dir = killed_wine_run(tmp_path, "rebased", wine, sections)
    recorded = json.loads((run_dir / BASE_FILE).read_text())
    original = (tmp_path / "base.keras").read_bytes()
    save_base(2)
    with pytest.raises(RunDirError) as info:
        resume_run(run_dir)
    said = str(info.value)
    assert f"{run_dir}: its base changed since the run started (now: " in said
    assert f"then {recorded['fingerprint'][:12]}" in said
    assert "Put the base back as it was, or start a new run (delete" in said
    assert json.loads((run_dir / BASE_FILE).read_text()) == recorded  # nothing written
    assert not (run_dir / "finished.json").exists()
    (tmp_path / "base.keras").write_bytes(original)  # put back: the resume goes on
    assert len(resume_run(run_dir).leaderboard) == 1
    assert json.loads((run_dir / BASE_FILE).read_text())["fingerprint"] == recorded["fingerprint"]
    # Its cache entry made again where arithmetic differs in the last bits (a pretrain
    # on another machine): the same base, whose weights' bytes differ (found by review).
    (run_dir / "finished.json").unlink()
    (run_dir / BASE_FILE).write_text(json.dumps({**recorded, "fingerprint": "0" * 64}))
    assert len(resume_run(run_dir).leaderboard) == 1


class _FileBase:
    """A plugin whose base provider reads a weights file named by a path relative to
    the recipe (``base.options.weights``), and makes it absolute for the run's copy."""

    from orchestrator import hookimpl

    @hookimpl
    def graftune_register_bases(self, registry):
        import hashlib

        from orchestrator.bases import BaseProvider

        class FromFile(BaseProvider):
            name = "from_file"

            def absolute_options(self, options, base_dir):
                return {**options, "weights": str((base_dir / options["weights"]).resolve())}

            def cache_key(self, spec, context):
                path = context.base_dir / spec.options["weights"]
                return hashlib.sha256(path.read_bytes()).hexdigest()

            def build(self, spec, context):
                import keras
                import numpy as np

                inputs = keras.Input((13,))
                model = keras.Model(inputs, keras.layers.Dense(4, name="features")(inputs))
                weights = np.load(context.base_dir / spec.options["weights"])
                model.set_weights([weights["kernel"], weights["bias"]])
                return model

        registry.add(FromFile)


def test_a_providers_relative_paths_are_made_absolute_for_the_runs_recipe(tmp_path, monkeypatch):
    """Found by QA: base.options' paths, relative to the recipe, were kept as they were
    in the run's recipe.yaml, whose folder is the run directory: a resume looked for
    the provider's file there and failed. BaseProvider.absolute_options makes them
    absolute, as DataSource.absolute_location does a source's."""
    import numpy as np
    import yaml

    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.run import resume_run, run_recipe

    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "w.npz", kernel=rng.normal(size=(13, 4)), bias=np.zeros(4))
    host = get_plugin_manager(extra_plugins=[_FileBase()])
    wine = Path(__file__).parents[1] / "recipes" / "data" / "wine.csv"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: filebase\ndata: {{source: 'csv:{wine}', target: cultivar}}\n"
        "base: {provider: from_file, options: {weights: w.npz}}\n"
        "strategies: {feature_extraction: {}}\n"
        "search: {backend: keras_tuner, num_samples: 1, max_epochs: 1}\noutput: runs/\n"
    )
    run_dir = run_recipe(recipe, host=host).run_dir
    kept = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    assert kept["base"]["options"] == {"weights": str(tmp_path / "w.npz")}
    (run_dir / "finished.json").unlink()  # as if killed before it finished
    assert len(resume_run(run_dir, host=host).leaderboard) == 1


class _Unseeded:
    """A plugin whose data source and base provider draw at random without the
    recipe's seed, as a plugin author may forget to."""

    from orchestrator import hookimpl

    @hookimpl
    def graftune_register_data_sources(self, registry):
        import numpy as np

        from orchestrator.data import DataSource, LabelledArrays

        class Coin(DataSource):
            scheme = "coin"

            def load(self, location, spec, base_dir):
                x = np.random.default_rng().random((60, 4)).astype("float32")
                return LabelledArrays(x, np.arange(60) % 2, ("heads", "tails"))

        registry.add(Coin)

    @hookimpl
    def graftune_register_bases(self, registry):
        from orchestrator.bases import BaseProvider

        class Drifting(BaseProvider):
            name = "drifting"

            def build(self, spec, context):
                import keras
                import numpy as np

                inputs = keras.Input((13,))
                model = keras.Model(inputs, keras.layers.Dense(4, name="features")(inputs))
                rng = np.random.default_rng()  # not from context.seed
                model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
                return model

        class DriftingKeyed(Drifting):
            name = "drifting_keyed"

            def cache_key(self, spec, context):
                return "drifting_keyed-1"  # one model, it says

        registry.add(Drifting)
        registry.add(DriftingKeyed)


@pytest.mark.parametrize(
    ("sections", "words"),
    [
        (
            "data: {source: 'coin:flips'}\nstrategies: {scratch_mlp: {}}\n",
            "; data source 'coin' from _Unseeded (not installed) read them: if it draws them at "
            "random, it reads the same again only with uses_seed = True, from load()'s seed",
        ),
        (  # no cache_key: its entry is named by its weights, which may have other causes
            "data: {source: 'csv:WINE', target: cultivar}\nbase: {provider: drifting}\n"
            "strategies: {feature_extraction: {}}\n",
            ": base provider 'drifting' from _Unseeded (not installed) built it anew, from "
            "other inputs (a file it reads, its options or its version changed) or, if its "
            "build() draws weights at random, not from context.seed): the trials still to run",
        ),
        (  # its cache_key() named the same model, rebuilt after a cache clear
            "data: {source: 'csv:WINE', target: cultivar}\nbase: {provider: drifting_keyed}\n"
            "strategies: {feature_extraction: {}}\n",
            ": base provider 'drifting_keyed' from _Unseeded (not installed) built other "
            "weights under the same cache_key(): its cache_key() should change with whatever "
            "build() reads (a file, its options, its version), and build() draw random "
            "weights from context.seed, the same each time): the trials",
        ),
        (  # a pretrain on a plugin's source that draws at random (found by QA: unnamed)
            "data: {source: 'sklearn:iris'}\n"
            "base: {pretrain: {data: {source: 'coin:flips'}, epochs: 1, architecture: mlp}}\n"
            "strategies: {feature_extraction: {}}\n",
            ": its pretrain's data, read by data source 'coin' from _Unseeded (not installed), "
            "changed: if it draws them at random, it reads the same again only with uses_seed "
            "= True, from load()'s seed): the trials",
        ),
    ],
)
def test_a_resume_refused_for_a_plugins_data_or_base_names_the_plugin(
    sections, words, tmp_path, monkeypatch
):
    """Found by QA: a plugin's data source that drew at random without uses_seed, or
    its base provider whose build() did, had the resume refused (rightly) with no word
    of the plugin or the likely cause."""
    from orchestrator.errors import RunDirError
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.run import resume_run, run_recipe

    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(tmp_path / "cache"))
    host = get_plugin_manager(extra_plugins=[_Unseeded()])
    wine = Path(__file__).parents[1] / "recipes" / "data" / "wine.csv"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: unseeded\n" + sections.replace("WINE", str(wine))
        + "search: {backend: keras_tuner, num_samples: 1, max_epochs: 1}\noutput: runs/\n"
    )  # fmt: skip
    run_dir = run_recipe(recipe, host=host).run_dir
    (run_dir / "finished.json").unlink()  # as if killed before it finished
    shutil.rmtree(tmp_path / "cache" / "bases", ignore_errors=True)  # made again on resume
    with pytest.raises(RunDirError) as info:
        resume_run(run_dir, host=host)
    assert words in " ".join(str(info.value).split())


def test_a_resume_refused_for_a_pretrain_whose_data_were_edited_names_them(tmp_path):
    """Found by QA: a pretrain's CSV edited after a kill had the resume refused with
    "its file or weights changed, or it was made again otherwise", naming neither
    the pretrain nor its data."""
    from orchestrator.errors import RunDirError
    from orchestrator.run import resume_run

    data = tmp_path / "pretrain.csv"
    wine = Path(__file__).parents[1] / "recipes" / "data" / "wine.csv"
    shutil.copy(wine, data)
    sections = (
        f"base: {{pretrain: {{data: {{source: 'csv:{data}', target: cultivar}}, epochs: 1, "
        "architecture: mlp}}\nstrategies: {feature_extraction: {}}\n"
    )
    run_dir = killed_wine_run(tmp_path, "repretrained", wine, sections)
    lines = data.read_text().splitlines(keepends=True)
    data.write_text("".join(lines[:-1]))  # one row fewer
    with pytest.raises(RunDirError) as info:
        resume_run(run_dir)
    said = " ".join(str(info.value).split())
    assert (
        f"it is pretrained in the run on csv:{data}, and made anew when those data change (a "
        "file edited, added or removed), or the Keras or graftune that trains it): the trials"
    ) in said, said


def test_a_resume_refuses_a_recipe_edited_in_what_it_searches(tmp_path):
    """It mixed 40-epoch and 10-epoch trials in one leaderboard, and said nothing."""
    from orchestrator.errors import RecipeError
    from orchestrator.run import resume_run, run_recipe

    recipe = write_recipe(tmp_path, "{backend: keras_tuner, num_samples: 1, max_epochs: 1}")
    run_dir = run_recipe(recipe).run_dir
    (run_dir / "finished.json").unlink()  # as if killed before it finished
    stored = run_dir / "recipe.yaml"
    original = stored.read_text()
    edited = original.replace("max_epochs: 1", "max_epochs: 2")
    stored.write_text(edited)
    with pytest.raises(RecipeError) as info:
        resume_run(run_dir)
    # Found by QA: it named six sections, no key, and "only resources and storage
    # may change" where name, output, plugins and submit may too.
    line = 1 + edited.splitlines().index("  max_epochs: 2")
    said = str(info.value)
    assert f"recipe.yaml:{line}: search.max_epochs: changed since the run started (1 -> 2)" in said
    assert (
        "(a resume may change only name, resources, output, keep_models, plugins, storage, submit)"
        in said
    )
    two = edited.replace("num_samples: 1", "num_samples: 3", 1)  # the strategy's
    stored.write_text(two)
    with pytest.raises(RecipeError, match=r"\(1 -> 3, and 1 more change\): a resume goes on"):
        resume_run(run_dir)
    stored.write_text(edited)
    # A run made before the values were kept has the digest alone: still refused, by section.
    (run_dir / ".searched.json").unlink()
    with pytest.raises(RecipeError) as info:
        resume_run(run_dir)
    assert "changed since the run started in what it searches (seed, data, base, strategies, " in (
        str(info.value)
    )
    assert "a resume may change only name, resources" in str(info.value)
    # Where it runs may change.
    stored.write_text(original.replace("cpus_per_trial: 1", "cpus_per_trial: 2"))
    assert stored.read_text() != original
    assert len(resume_run(run_dir).leaderboard) == 1


def test_a_run_made_before_a_recipe_key_existed_resumes_with_it_at_its_default(tmp_path):
    """Found by QA: data.ignore_columns, new, refused every resume of a run made
    before it ("(not set) -> []"), which the user could not put back; and the same
    columns in another order were refused as a change."""
    from orchestrator.errors import RecipeError
    from orchestrator.recipe import SEARCHED_FILE, SEARCHED_VALUES_FILE, load_recipe
    from orchestrator.run import _check_resumed_recipe, _digest, _searched

    recipe = load_recipe(write_recipe(tmp_path, "{num_samples: 1}"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    before = _searched(recipe, run_dir)
    del before["data"]["ignore_columns"]  # as a run made before the key recorded it
    (run_dir / SEARCHED_VALUES_FILE).write_text(json.dumps(before))
    (run_dir / SEARCHED_FILE).write_text(_digest(before) + "\n")
    _check_resumed_recipe(recipe, run_dir)
    # Found by the QA pass on that fix: a run recorded with its digest alone (made
    # before the values were kept beside it) was still refused.
    (run_dir / SEARCHED_VALUES_FILE).unlink()
    _check_resumed_recipe(recipe, run_dir)
    (run_dir / SEARCHED_VALUES_FILE).write_text(json.dumps(before))
    # Its columns in another order are the same search (found by QA: refused).
    (run_dir / SEARCHED_VALUES_FILE).unlink()
    listed = recipe.data.model_copy(update={"ignore_columns": ["id", "name"]})
    before = _searched(recipe.model_copy(update={"data": listed}), run_dir)
    (run_dir / SEARCHED_VALUES_FILE).write_text(json.dumps(before))
    (run_dir / SEARCHED_FILE).write_text(_digest(before) + "\n")
    reordered = recipe.data.model_copy(update={"ignore_columns": ["name", "id"]})
    _check_resumed_recipe(recipe.model_copy(update={"data": reordered}), run_dir)
    # Set to something else, it is a change.
    data = recipe.data.model_copy(update={"ignore_columns": ["x"]})
    with pytest.raises(RecipeError, match=r'data.ignore_columns: changed since the run started '
                       r'\(\["id", "name"\] -> \["x"\]\)'):  # fmt: skip
        _check_resumed_recipe(recipe.model_copy(update={"data": data}), run_dir)


def test_resume_takes_where_to_run_and_refuses_where_to_write(tmp_path):
    """--address was ignored with --resume (a submitted job's run said auto: another
    cluster, or none); --storage, --run-dir and --run-name were ignored silently."""
    from orchestrator.cli import app
    from orchestrator.recipe import load_recipe
    from orchestrator.submit import with_cluster_options

    recipe = load_recipe(write_recipe(tmp_path, "{num_samples: 1}"))
    on_cluster = with_cluster_options(recipe, address="auto")
    assert on_cluster.resources.address == "auto"
    assert with_cluster_options(on_cluster, address="local").resources.address is None
    for option in (["--storage", str(tmp_path)], ["--run-name", "x"], ["--shared-storage"]):
        result = CliRunner().invoke(app, ["run", "--resume", str(tmp_path), *option])
        assert result.exit_code == 2, result.output
        assert f"{option[0]} with --resume: a resumed run stays in its run directory" in (
            result.output
        )


def test_a_damaged_result_of_an_ended_trial_is_kept_aside_and_that_trial_runs_again(
    ended_run, tmp_path, caplog
):
    """Found by QA: a result.json cut short (a damaged disk, a copy that stopped)
    crashed every resume with a JSONDecodeError from inside Tune's callback; one
    edited to hold "val_accuracy": "high" ended every resume in "internal error:
    could not convert string to float" once the trials were ranked. One resume takes
    both (one trial's result cut short, another's score made text): one search on Ray
    rather than one each; the third trial, whole, is kept. Its search had ended (found
    by QA: its search.json ranked the damaged trials, and the files stayed as they
    were): the search resumes, as one that had not."""
    from orchestrator.run import resume_run

    run_dir = copy_of(ended_run, tmp_path, unfinished=True, search_ended=True)
    results_dir = run_dir / "trials" / "scratch_mlp"
    trial_ids = sorted(p.name for p in results_dir.iterdir() if p.is_dir())
    damaged = {}  # trial id -> what its result.json was made to hold
    cut_short, made_text = trial_ids[:2]
    for trial_id in (cut_short, made_text):
        path = results_dir / trial_id / "result.json"
        text = path.read_text()
        if trial_id == cut_short:
            damaged[trial_id] = text[:200]
        else:
            damaged[trial_id] = json.dumps({**json.loads(text), "val_accuracy": "high"})
        path.write_text(damaged[trial_id])
    ended = {t: m for t, m in ended_trials(results_dir).items() if t not in damaged}
    assert len(ended) == 1
    said = []
    frame = resume_run(run_dir, plugins=[], echo=said.append).leaderboard
    assert sorted(frame["trial_id"]) == trial_ids, frame[["trial_id", "status"]]
    assert (frame["status"] == "ok").all(), frame[["trial_id", "status", "error"]]
    assert f"search.json lists trial scratch_mlp/{cut_short}, whose " in caplog.text
    for trial_id, text in damaged.items():
        path = results_dir / trial_id / "result.json"
        assert f"{path} cannot be read" in caplog.text, trial_id
        assert (results_dir / trial_id / "result.json.damaged").read_text() == text
        assert json.loads(path.read_text())["status"] == "ok"  # it ran again
    assert_not_run_again(results_dir, ended)  # the other was not run again
    # Its new end is said and told, as any trial's (found by QA: neither, as if told before).
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    told = [e["trial_id"] for e in events if e["event"] == "trial_finished"]
    for trial_id in damaged:
        assert any(line.startswith(f"  scratch_mlp {trial_id}: ok") for line in said), said
        assert told.count(trial_id) == 2, told
    assert all(told.count(t) == 1 for t in ended), told


def test_a_result_damaged_while_its_search_ran_is_set_aside_not_raised_in_tunes_callback(
    tmp_path, caplog
):
    """collect runs in Tune's callback: its JSONDecodeError ended tune.fit, every time."""
    from orchestrator.trial import trial_dir
    from orchestrator.tuning.ray_tune import collect

    folder = trial_dir(tmp_path, "scratch_mlp", "t1")
    folder.mkdir(parents=True)
    (folder / "result.json").write_text('{"strategy": "scratch_mlp", "trial_id": "t')
    last = {"val_accuracy": 0.5, "training_iteration": 1}
    result = collect(tmp_path, "scratch_mlp", "t1", {"width": 16}, last, error=None)
    assert (result.status, result.epochs) == ("pruned", 1)
    assert (folder / "result.json.damaged").is_file() and not (folder / "result.json").exists()
    assert f"{folder / 'result.json'} cannot be read (JSONDecodeError" in caplog.text


def test_a_damaged_end_of_a_search_makes_it_resume_and_run_only_what_is_gone(
    ended_run, tmp_path, caplog
):
    """Found by QA: a search.json cut short failed every resume with a JSONDecodeError
    naming no file. (One listing a trial whose folder was deleted: the test of a best
    model deleted from its trial, below, whose advice is to delete that folder.)"""
    from orchestrator.run import SEARCH_DONE_FILE, resume_run

    run_dir = copy_of(ended_run, tmp_path, unfinished=True, search_ended=True)
    results_dir = run_dir / "trials" / "scratch_mlp"
    marker = results_dir / SEARCH_DONE_FILE
    trial_ids = sorted(p.name for p in results_dir.iterdir() if p.is_dir())
    marker.write_text(marker.read_text()[:300])
    ended = ended_trials(results_dir)
    frame = resume_run(run_dir, plugins=[], echo=print).leaderboard
    assert f"{marker} cannot be read (JSONDecodeError" in caplog.text
    assert sorted(frame["trial_id"]) == trial_ids, frame[["trial_id", "status"]]
    assert (frame["status"] == "ok").all(), frame[["trial_id", "status", "error"]]
    assert (run_dir / "best" / "model.keras").is_file()
    assert len(json.loads(marker.read_text())) == 3
    assert_not_run_again(results_dir, ended)


@pytest.mark.parametrize(
    ("strategy", "trial_id"), [("scratch_mlp", "../../../victim"), ("other", "a_00000")]
)
def test_a_search_json_listing_a_trial_that_is_no_folder_of_it_is_read_as_damaged(
    tmp_path, caplog, strategy, trial_id
):
    """Found by security QA: the trial ids a search.json lists become paths."""
    from orchestrator.run import SEARCH_DONE_FILE, _read_search, _write_search
    from orchestrator.trial import TrialResult

    marker = tmp_path / "trials" / "scratch_mlp" / SEARCH_DONE_FILE
    _write_search(marker, [TrialResult(strategy, trial_id, "pruned", {})])
    assert _read_search(marker) is None  # the search resumes
    assert not marker.exists()
    assert f"it lists trial {strategy}/{trial_id}, which is no trial of scratch_mlp" in (
        caplog.text
    )


def test_a_failed_trial_that_never_had_a_folder_runs_again_without_a_damage_warning(
    tmp_path, caplog
):
    """Found by QA: resuming a run whose trials' workers all died before they started
    warned, per strategy, that a folder "is gone" (it never was made)."""
    import logging

    from orchestrator.run import SEARCH_DONE_FILE, _read_search, _write_search
    from orchestrator.trial import TrialResult

    marker = tmp_path / "trials" / "scratch_mlp" / SEARCH_DONE_FILE
    never = TrialResult("scratch_mlp", "a_00000", "failed", {}, error="worker died")
    _write_search(marker, [never])
    with caplog.at_level(logging.INFO, logger="orchestrator.run"):
        assert _read_search(marker) is None  # the search resumes: the trial runs again
    assert not marker.exists()
    assert "is gone" not in caplog.text and "without a folder: it runs again" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_search_marker_that_is_a_folder_is_named_before_the_search_runs(ended_run, tmp_path):
    """Found by QA: the search ran again, then ended in "internal error:
    IsADirectoryError" writing its mark."""
    from orchestrator.run import SEARCH_DONE_FILE, resume_run

    run_dir = copy_of(ended_run, tmp_path, unfinished=True, search_ended=True)
    results_dir = run_dir / "trials" / "scratch_mlp"
    (results_dir / SEARCH_DONE_FILE).unlink()
    (results_dir / SEARCH_DONE_FILE).mkdir()
    ended = ended_trials(results_dir)
    with pytest.raises(RunDirError) as info:
        resume_run(run_dir, plugins=[])
    assert str(info.value) == (
        f"{results_dir / SEARCH_DONE_FILE} is a folder, where graftune marks that scratch_mlp's "
        "search ended: remove it to resume (the trials that ended are kept)"
    )
    assert ended_trials(results_dir) == ended  # none ran again


def test_a_best_model_deleted_from_its_trial_is_named_and_the_advice_given_works(
    ended_run, tmp_path, caplog
):
    """Found by QA: the best trial's model.keras deleted, a resume failed with an
    internal FileNotFoundError, and best/ stayed empty on every resume after. The
    advice, its trial's folder deleted, is also a search.json that lists a trial whose
    folder was deleted (found by QA: "not run again", then every resume failed on the
    best model's FileNotFoundError, best/ empty): that trial alone runs again."""
    from orchestrator.run import SEARCH_DONE_FILE, resume_run

    run_dir = copy_of(ended_run, tmp_path, unfinished=True, search_ended=True)
    results_dir = run_dir / "trials" / "scratch_mlp"
    marker = results_dir / SEARCH_DONE_FILE
    trial_ids = sorted(p.name for p in results_dir.iterdir() if p.is_dir())
    best = json.loads((run_dir / "best" / "config.json").read_text())["trial_id"]
    folder = results_dir / best
    (folder / "model.keras").unlink()
    with pytest.raises(RunDirError) as caught:
        resume_run(run_dir, plugins=[], echo=print)
    assert str(caught.value) == (
        f"the best trial scratch_mlp/{best} has no model to save in {run_dir / 'best'}: "
        f"{folder / 'model.keras'} is missing (deleted since the trial ended); delete the "
        f"trial's folder {folder} and resume the run to train it again"
    )
    shutil.rmtree(folder)
    ended = {t: m for t, m in ended_trials(results_dir).items() if t != best}
    assert len(ended) == 2
    frame = resume_run(run_dir, plugins=[], echo=print).leaderboard
    assert f"{marker} lists trial scratch_mlp/{best}, whose folder {folder} is gone" in (
        caplog.text
    )
    assert sorted(frame["trial_id"]) == trial_ids, frame[["trial_id", "status"]]
    assert len(frame) == 3 and (frame["status"] == "ok").all()
    assert (run_dir / "best" / "model.keras").is_file()
    assert len(json.loads(marker.read_text())) == 3
    assert_not_run_again(results_dir, ended)


def test_a_finished_run_whose_best_model_was_deleted_saves_it_again_on_resume(ended_run, tmp_path):
    """Found by QA: "nothing to resume", then an internal FileNotFoundError for
    best/config.json, and no leaderboard."""
    from orchestrator.run import resume_run

    run_dir = copy_of(ended_run, tmp_path, unfinished=False)
    best = json.loads((run_dir / "best" / "config.json").read_text())
    ended = ended_trials(run_dir / "trials" / "scratch_mlp")
    shutil.rmtree(run_dir / "best")
    said = []
    outcome = resume_run(run_dir, plugins=[], echo=said.append)
    assert f"{run_dir}: the run finished, but {run_dir / 'best' / 'config.json'} is gone" in said[0]
    assert len(outcome.leaderboard) == 3 and outcome.best == best
    assert json.loads((run_dir / "best" / "config.json").read_text()) == best
    assert (run_dir / "best" / "model.keras").is_file()
    assert ended_trials(run_dir / "trials" / "scratch_mlp") == ended  # none ran again
    again = resume_run(run_dir, plugins=[], echo=said.append)  # finished: nothing to do
    assert "nothing to resume" in said[-1] and again.best == best


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("best/config.json", "garbage"),
        ("best/config.json", '{"strategy": "scratch_mlp"}'),
        ("best/config.json", None),
        ("best/model.keras", None),
        ("leaderboard.csv", None),
    ],
    ids=["config-not-json", "config-without-keys", "config-gone", "model-gone", "leaderboard-gone"],
)
def test_a_finished_runs_damaged_or_deleted_file_is_named_and_resume_writes_it_again(
    ended_run, tmp_path, caplog, name, damage
):
    """Found by QA: a damaged best/config.json was "internal error: JSONDecodeError",
    exit 1, from predict (with --trial too), export and report; a deleted one was "no
    trial finished with a saved model"; a deleted leaderboard.csv was to be written by
    --resume, which said "nothing to resume"."""
    from orchestrator.cli import app
    from orchestrator.run import resume_run

    run_dir = copy_of(ended_run, tmp_path, unfinished=False)
    best = json.loads((run_dir / "best" / "config.json").read_text())
    leaderboard = (run_dir / "leaderboard.csv").read_text()
    ended = ended_trials(run_dir / "trials" / "scratch_mlp")
    path = run_dir / name
    if damage is None:
        path.unlink()
    else:
        path.write_text(damage)
    problem = "is gone" if damage is None else "cannot be read ("
    fix = f"graftune run --resume {run_dir} {FIXTURES} writes it again"
    commands = {
        "best/config.json": [
            ["predict", run_dir, "--data", "sklearn:iris"],
            ["predict", run_dir, "--data", "sklearn:iris", "--trial", best["trial_id"]],
            ["export", run_dir, tmp_path / "out"],
        ],
        "best/model.keras": [["predict", run_dir, "--data", "sklearn:iris"]],
        "leaderboard.csv": [["leaderboard", run_dir], ["report", run_dir]],
    }[name]
    for command in commands:
        said = CliRunner().invoke(app, [str(a) for a in command])
        assert said.exit_code == 2, (command, said.output)
        (line,) = said.output.splitlines()
        assert line.startswith(f"error: {path} {problem}") and fix in line, line
    assert not (tmp_path / "out").exists()
    if name == "best/config.json" and damage is not None:  # a report needs no best model
        caplog.clear()
        said = CliRunner().invoke(app, ["report", str(run_dir)])
        assert said.exit_code == 0, said.output
        assert f"{path} {problem}" in caplog.text and fix in caplog.text, caplog.text

    lines = []
    outcome = resume_run(run_dir, plugins=[], echo=lines.append)
    assert lines[0].startswith(f"{run_dir}: the run finished, but {path} {problem}"), lines[0]
    assert (
        outcome.best == best and json.loads((run_dir / "best" / "config.json").read_text()) == best
    )
    assert (run_dir / "leaderboard.csv").read_text() == leaderboard
    assert ended_trials(run_dir / "trials" / "scratch_mlp") == ended  # none ran again
    said = CliRunner().invoke(app, ["predict", str(run_dir), "--data", "sklearn:iris"])
    assert said.exit_code == 0, said.output


def test_a_damaged_model_is_never_saved_as_the_best_and_a_damaged_best_is_saved_again(
    ended_run, tmp_path
):
    """Found by QA: a best trial's model.keras cut short was copied to best/, the run
    said it finished, and predict then said "File not found" of a file that was there,
    with every resume "nothing to resume"."""
    from orchestrator.cli import app
    from orchestrator.run import resume_run

    run_dir = copy_of(ended_run, tmp_path, unfinished=False)
    best = json.loads((run_dir / "best" / "config.json").read_text())
    saved = run_dir / "best" / "model.keras"
    whole = saved.read_bytes()
    saved.write_bytes(whole[: len(whole) // 2])
    said = CliRunner().invoke(app, ["predict", str(run_dir), "--data", "sklearn:iris"])
    assert said.exit_code == 2, said.output
    (line,) = said.output.splitlines()
    assert line.startswith(f"error: cannot load {saved}: model.keras is not a whole .keras file")
    assert f"graftune run --resume {run_dir} {FIXTURES} writes it again" in line
    lines = []
    resume_run(run_dir, plugins=[], echo=lines.append)
    assert lines[0].startswith(f"{run_dir}: the run finished, but {saved} is not a whole")
    assert saved.read_bytes() == whole  # the trial's, again
    # The best trial's own model cut short: refused, never copied.
    trial = run_dir / "trials" / best["strategy"] / best["trial_id"] / "model.keras"
    trial.write_bytes(whole[: len(whole) // 2])
    shutil.rmtree(run_dir / "best")
    with pytest.raises(RunDirError) as info:
        resume_run(run_dir, plugins=[], echo=lines.append)
    assert f"{trial} is not a whole .keras file" in str(info.value)
    assert f"delete the trial's folder {trial.parent} and resume" in str(info.value)
    assert not (run_dir / "best").exists()  # found by QA: left empty by each refusal


def test_a_stopped_runs_missing_or_damaged_file_is_written_as_it_finishes(ended_run, tmp_path):
    """Found by QA: a run stopped by SIGTERM (its ended trials ranked) with a damaged
    best/config.json was to be resumed "(no trial runs again)", and the resume ran the
    rest; with leaderboard.csv deleted it was said never to have ranked its trials."""
    from orchestrator.cli import app
    from orchestrator.run import FINISHED_FILE

    run_dir = copy_of(ended_run, tmp_path, unfinished=False)
    (run_dir / FINISHED_FILE).unlink()  # as a stop leaves it: ranked, not finished
    (run_dir / "best" / "config.json").write_text("{")
    (run_dir / "leaderboard.csv").unlink()
    fix = (
        f"graftune run --resume {run_dir} {FIXTURES} finishes the run, whose trials that "
        "ended do not"
    )
    for command in (["predict", run_dir, "--data", "sklearn:iris"], ["leaderboard", run_dir]):
        said = CliRunner().invoke(app, [str(a) for a in command])
        assert said.exit_code == 2, said.output
        assert fix in " ".join(said.output.split()), said.output
        assert "no trial runs again" not in said.output and "killed?" not in said.output


def test_a_damaged_record_of_what_the_run_searches_is_named_not_taken_for_a_change(
    ended_run, tmp_path
):
    """Found by QA: garbage in .searched said recipe.yaml had "changed since the run
    started"; invalid bytes there or in .reported were "internal error"."""
    from orchestrator.recipe import SEARCHED_FILE
    from orchestrator.run import REPORTED_FILE, resume_run

    run_dir = copy_of(ended_run, tmp_path, unfinished=True, search_ended=True)
    (run_dir / REPORTED_FILE).write_bytes(b"scratch_mlp/\xff\xfe\n")
    record = run_dir / SEARCHED_FILE
    digest = record.read_bytes()
    record.write_bytes(b"\xff garbage")
    with pytest.raises(RunDirError, match=f"{record} is damaged .* delete it to resume"):
        resume_run(run_dir, plugins=[], echo=print)
    record.write_bytes(digest)
    assert len(resume_run(run_dir, plugins=[], echo=print).leaderboard) == 3


def test_a_finished_run_whose_finished_json_is_damaged_is_ranked_again_on_resume(
    ended_run, tmp_path
):
    """Found by QA: --resume of a run whose finished.json was cut short was "internal
    error: JSONDecodeError", exit 1, each time."""
    from orchestrator.run import FINISHED_FILE, resume_run

    run_dir = copy_of(ended_run, tmp_path, unfinished=False)
    best = json.loads((run_dir / "best" / "config.json").read_text())
    ended = ended_trials(run_dir / "trials" / "scratch_mlp")
    (run_dir / FINISHED_FILE).write_text('{"time":')
    lines = []
    outcome = resume_run(run_dir, plugins=[], echo=lines.append)
    assert lines[0].startswith(f"{run_dir / FINISHED_FILE} cannot be read (JSONDecodeError")
    assert "the trials that ended are ranked again" in lines[0]
    assert outcome.best == best and len(outcome.leaderboard) == 3
    assert ended_trials(run_dir / "trials" / "scratch_mlp") == ended  # none ran again
    assert json.loads((run_dir / FINISHED_FILE).read_text())["trials"] == 3
    resume_run(run_dir, plugins=[], echo=lines.append)
    assert "nothing to resume" in lines[-1]


def test_a_run_is_never_made_inside_another_runs_directory(ended_run, tmp_path):
    """Found by QA: `run --run-dir OLD_RUN/trials/scratch_mlp/new` was accepted, and
    predict of the old run then took the new run for one of its trials (export
    refused the same place)."""
    from orchestrator.cli import app

    old = copy_of(ended_run, tmp_path, unfinished=False)
    recipe = write_recipe(tmp_path, "{backend: keras_tuner, num_samples: 1, max_epochs: 1}")
    before = sorted(tmp_path.rglob("*"))
    for inside in (old / "trials" / "scratch_mlp" / "new", old / "new"):
        result = CliRunner().invoke(app, ["run", str(recipe), "--run-dir", str(inside)])
        assert result.exit_code == 2, result.output
        (line,) = result.output.splitlines()
        assert line == (
            f"error: cannot make the run directory {inside}: it is inside the run directory "
            f"{old}, whose files graftune reads; choose a folder elsewhere"
        )
    # The recipe's output there: said at its key, by the recipe's checks (validate's).
    recipe.write_text(recipe.read_text().replace("output: runs/", f"output: {old / 'runs'}"))
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 2, result.output
    assert f"{recipe}:8: output: cannot make a run directory in {old / 'runs'}: " in result.output
    assert f"inside the run directory {old}, whose files" in result.output
    assert sorted(tmp_path.rglob("*")) == before


def test_a_run_another_run_starts_around_meanwhile_is_refused_as_it_is_made(
    ended_run, tmp_path, monkeypatch
):
    """Found by QA: the check came before the data and the base, seconds before the
    folder was made; a run started at the same moment as one around it was made in
    the other's trials/, and that run's resume deleted it as a trial's folder."""
    from orchestrator import run as run_module
    from orchestrator.cli import app

    old = copy_of(ended_run, tmp_path, unfinished=False)
    outer = tmp_path / "outer"
    outer.mkdir()
    check = run_module._check_run_dir_can_be_made

    def another_run_starts_after_the_check(recipe, place):
        check(recipe, place)
        shutil.copyfile(old / "recipe.yaml", outer / "recipe.yaml")  # it writes its recipe

    monkeypatch.setattr(
        run_module, "_check_run_dir_can_be_made", another_run_starts_after_the_check
    )
    recipe = write_recipe(tmp_path, "{backend: keras_tuner, num_samples: 1, max_epochs: 1}")
    inside = outer / "trials" / "scratch_mlp" / "new"
    result = CliRunner().invoke(app, ["run", str(recipe), "--run-dir", str(inside)])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == (
        f"error: cannot make the run directory {inside}: it is inside the run directory "
        f"{outer}, whose files graftune reads; choose a folder elsewhere"
    )
    assert not (outer / "trials").exists()  # nor the folders made for it (found by QA)


def test_a_run_directory_whose_lock_cannot_be_opened_is_named_with_why(tmp_path):
    """Found by QA: --resume of a read-only run folder said "internal error: OSError:
    [Errno 30] Read-only file system". A lock that is a folder fails the same way."""
    from orchestrator.cli import app
    from orchestrator.run import LOCK_FILE, holding_run_dir

    (tmp_path / LOCK_FILE).mkdir()
    expected = (
        f"{tmp_path} cannot be written: its lock file {LOCK_FILE} cannot be opened "
        "(Is a directory); a run writes in its run directory (copy it where you may "
        "write, and resume the copy)"
    )
    with pytest.raises(RunDirError) as caught, holding_run_dir(tmp_path):
        pass
    assert str(caught.value) == expected
    write_recipe(tmp_path, "{num_samples: 1, max_epochs: 1}")
    result = CliRunner().invoke(app, ["run", "--resume", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "cannot be written: its lock file" in result.output


@pytest.mark.parametrize("metric", ["val_accuracy", "val_loss"])
def test_a_worker_that_died_after_its_worst_score_report_leaves_no_score(tmp_path, metric):
    """Found by QA: a trial whose strategy raised reports the worst score for its
    searcher before it writes result.json; its worker killed in between, the
    failed trial showed val_accuracy=-1.0 (or val_loss 1e12) everywhere."""
    from orchestrator.trial import WORST_SCORES
    from orchestrator.tuning.ray_tune import collect

    last = {metric: WORST_SCORES[metric], "training_iteration": 2}
    result = collect(tmp_path, "scratch_mlp", "t1", {}, last, error="RayActorError: died")
    assert (result.status, result.epochs) == ("failed", 2)
    assert (result.val_accuracy, result.val_loss) == (None, None)
    # A score it did report stays.
    last = {"val_accuracy": 0.75, "val_loss": 0.5, "training_iteration": 1}
    result = collect(tmp_path, "scratch_mlp", "t2", {}, last, error="RayActorError: died")
    assert (result.val_accuracy, result.val_loss) == (0.75, 0.5)


def test_a_keras_tuner_search_whose_first_trial_kills_the_process_fails_it_too(
    tmp_path, monkeypatch
):
    """Found by QA: killed in a search's first trial, keras-tuner had saved no state
    yet, so the resume did not see the trial it had been running and ran it again,
    past ``max_failures``, on every resume: the run could never finish."""
    from orchestrator.cli import app
    from orchestrator.leaderboard import read_leaderboard

    recipe = write_recipe(
        tmp_path,
        "{backend: keras_tuner, num_samples: 1, max_epochs: 1}",
        "killing_mlp: {space: {width: 16}}",
    )
    graftune = run_with_fixture_plugins
    killed = graftune(str(recipe))
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    again = graftune("--resume", str(run_dir))  # tried again once (max_failures: 1)
    assert again.returncode == -signal.SIGKILL, again.stdout + again.stderr
    # Its trial may not run again: resumed in this process (see the test above).
    killed_again = refuse_self_kill(monkeypatch)
    done = CliRunner().invoke(app, ["run", "--resume", str(run_dir), *FIXTURES.split()])
    assert not killed_again
    assert done.exit_code == 1, done.output
    assert "every trial failed (1 failed)" in done.output
    (row,) = read_leaderboard(run_dir).itertuples()
    assert (row.status, row.retries) == ("failed", 1)
    assert row.error == DIED_TWICE


def test_a_run_killed_before_it_ended_says_resume_in_every_command(ended_run, tmp_path):
    """Found by QA: killed between its leaderboard and best/, predict and export said
    no trial finished with a saved model and leaderboard showed the table as whole;
    killed before any trial had a folder, leaderboard asked "is it a graftune run
    directory?"; and a killed write's ``.leaderboard.md.PID.tmp`` stayed for good."""
    import subprocess

    from orchestrator.cli import app

    run_dir = copy_of(ended_run, tmp_path, unfinished=False)
    shutil.rmtree(run_dir / "best")
    (run_dir / "finished.json").unlink()
    writer = subprocess.Popen(["true"])  # a writer that is no more
    writer.wait()
    stray = run_dir / f".leaderboard.md.{writer.pid}.tmp"
    stray.write_text("half a table")
    resume = (
        f"graftune run --resume {run_dir} {FIXTURES} runs the trials that did not end and saves"
    )
    said = CliRunner().invoke(app, ["predict", str(run_dir), "--data", "sklearn:iris"])
    assert said.exit_code == 2, said.output
    assert f"the run in {run_dir} stopped before it finished (interrupted, or killed?); " in (
        said.output
    )
    assert resume in said.output
    shown = CliRunner().invoke(app, ["leaderboard", str(run_dir)])
    assert shown.exit_code == 0, shown.output
    assert f"{resume} its best model; this leaderboard may lack trials" in shown.stderr

    from orchestrator.run import resume_run

    resume_run(run_dir)
    assert (run_dir / "best" / "config.json").is_file() and not stray.exists()
    shown = CliRunner().invoke(app, ["leaderboard", str(run_dir)])
    assert "note:" not in shown.stderr  # finished: nothing to say

    early = tmp_path / "early"
    early.mkdir()
    for name in ("recipe.yaml", ".searched", "environment.json"):  # written at its start
        shutil.copy(ended_run / name, early / name)
    for command in (["leaderboard", str(early)], ["predict", str(early), "--data", "x:y"]):
        said = CliRunner().invoke(app, command)
        assert said.exit_code == 2, said.output
        assert (
            f"the run in {early} stopped before any trial ran (killed?); "
            f"graftune run --resume {early} {FIXTURES} runs its trials"
        ) in said.output
    (early / ".searched").unlink()  # a project's folder with its recipe: no run
    said = CliRunner().invoke(app, ["leaderboard", str(early)])
    assert "is it a graftune run directory?" in said.output


def test_tune_writes_no_tensorboard_log_of_its_own(ended_run):
    """Found by QA: Tune's TensorBoard logger left an atexit callback per trial in the
    driver (a process of many runs grew by megabytes a run); the trials write their
    own TensorBoard logs. Tune's CSV and JSON logs stay."""
    assert list(ended_run.glob("ray/*/*/progress.csv"))
    assert list(ended_run.glob("ray/*/*/result.json"))
    assert not list(ended_run.glob("ray/**/events.out.tfevents*"))


def test_a_plugins_base_made_again_otherwise_under_one_key_is_refused(tmp_path):
    """Found by QA: a base provider whose build() drew other weights under the same
    cache key (the cache cleared) was taken as the same base, and the resume ranked
    trials on two bases in one leaderboard. A built-in one, seeded, is the same base
    whose last bits differ on another machine."""
    from orchestrator.bases import BaseInfo
    from orchestrator.errors import RunDirError
    from orchestrator.run import BASE_FILE, _check_resumed_base

    built_in = (("pretrain", False), ("application", False), ("path", False))
    for kind, refused in (("tinynet", True), *built_in):
        path = tmp_path / "cache" / "bases" / f"{kind}-0123456789abcdef" / "base.keras"
        info = BaseInfo(path, "1" * 64, (4,), (8,), (1,), ("dense",), description=kind)
        (tmp_path / BASE_FILE).write_text(json.dumps({**info.to_json(), "fingerprint": "0" * 64}))
        if refused:
            with pytest.raises(RunDirError, match="base provider whose build\\(\\) is not"):
                _check_resumed_base(info, tmp_path)
        else:
            _check_resumed_base(info, tmp_path)


def test_a_run_that_ends_as_its_resume_takes_the_lock_is_not_run_again(ended_run, tmp_path):
    """Found by QA: a resume started as the run ended looked for finished.json before
    it held the run directory; the run then ended, and the resume called the hooks a
    second time (run_started, run_finished) over the finished run."""
    from orchestrator.run import RECIPE_FILE
    from orchestrator.run import run_recipe as internal_run

    run_dir = copy_of(ended_run, tmp_path, unfinished=False)
    events = (run_dir / "events.jsonl").read_text()
    board = (run_dir / "leaderboard.csv").stat().st_mtime_ns
    said: list[str] = []
    # What resume_run calls once it found no finished.json (the run ended since).
    outcome = internal_run(run_dir / RECIPE_FILE, run_dir=run_dir, resume=True, echo=said.append)
    assert any("nothing to resume" in line for line in said), said
    assert len(outcome.leaderboard) == 3
    assert (run_dir / "events.jsonl").read_text() == events
    assert (run_dir / "leaderboard.csv").stat().st_mtime_ns == board


def test_a_run_directory_a_reader_looks_at_that_instant_is_held_all_the_same(tmp_path):
    """`leaderboard`, `report`, `predict` and `export` ask run_holder, which holds the
    lock shared for an instant; a resume in that instant was refused as "in use"
    (found by QA, in the code). One held longer, by a run, is refused still."""
    import fcntl
    import threading

    from orchestrator.run import LOCK_FILE, holding_run_dir

    def held_shared(seconds):
        handle = open(tmp_path / LOCK_FILE, "a+")  # noqa: SIM115 (closed in the thread)
        fcntl.flock(handle, fcntl.LOCK_SH)
        threading.Timer(seconds, handle.close).start()  # closing it lets it go

    held_shared(0.2)  # a reader's instant, made long
    with holding_run_dir(tmp_path):
        pass
    held_shared(3)
    with (
        pytest.raises(RunDirError, match="is in use by another graftune run"),
        holding_run_dir(tmp_path),
    ):
        pass
