"""Ray clusters: storage, staging, and a real two-node cluster driven through the CLI.

The ``cluster`` fixture starts a real Ray head (``ray start --head``) and a
second node joined to it, on free loopback ports with their own temp dirs and
token authentication on, and stops exactly the processes it started. Every
command runs as a subprocess with an environment of its own, as a user's
would: Ray caches its token and address per process, and the embedded Ray of
other tests runs in this one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.recipe import load_recipe, parse_recipe
from orchestrator.storage import (
    RunPlace,
    StorageError,
    fetch,
    is_node_local,
    join,
    plan_run,
    publish,
    pull_trial,
    push_trial,
)
from orchestrator.submit import (
    RECIPE_FILE,
    SubmitError,
    check_sendable,
    entrypoint,
    recipe_for_submit,
    runtime_env,
    stage,
    with_cluster_options,
)

BIN = Path(sys.executable).parent
WINE = Path(__file__).resolve().parents[1] / "recipes" / "data" / "wine.csv"


def write_recipe(folder: Path, text: str, name: str = "recipe.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


# -- storage and staging, no cluster ----------------------------------------------------

BASIC = """
name: basic
data: {source: sklearn:digits}
strategies: {scratch_mlp: {}}
"""


def test_storage_shorthand_paths_and_unknown_schemes(tmp_path):
    recipe = parse_recipe(BASIC + "storage: s3://bucket/runs?region=eu-west-1\n")
    assert recipe.storage.path == "s3://bucket/runs?region=eu-west-1"
    assert not recipe.storage.shared
    assert (
        join(recipe.storage.path, "job", "trials") == "s3://bucket/runs/job/trials?region=eu-west-1"
    )
    # Found by mutation testing: a trailing slash was kept, so runs were stored under
    # "runs//job" (an empty-named folder in an object store).
    assert join("s3://bucket/runs/", "job") == "s3://bucket/runs/job"
    assert (
        join("s3://bucket/runs/?region=eu-west-1", "job") == "s3://bucket/runs/job?region=eu-west-1"
    )

    file = write_recipe(tmp_path, BASIC + "storage: {path: shared/runs, shared: true}\n")
    recipe = load_recipe(file)
    assert recipe.storage.path == str(tmp_path / "shared" / "runs")
    assert recipe.storage.shared

    bad = write_recipe(tmp_path, BASIC + "storage: ftp://host/runs\n", "bad.yaml")
    result = subprocess.run(
        [BIN / "graftune", "validate", bad], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "bad.yaml:5: storage.path" in result.stderr
    assert "unknown storage scheme 'ftp://'" in result.stderr
    # A URI with no bucket, or a file:// one with a relative path (found by QA: "s3://"
    # passed validate and submit, and failed on the cluster as "s3:/NAME").
    from orchestrator.errors import RecipeError

    for uri, said in (
        ("s3://", "'s3://': no bucket after s3://; expected s3://BUCKET/PATH"),
        ("gs:///runs", "no bucket after gs://"),
        ("file://runs", "expected file:///ABSOLUTE/PATH"),
        # Found by mutation testing: a host in a file:// URI passed validate, and was
        # ignored (the run stored in the local /runs).
        ("file://nas/runs", "expected file:///ABSOLUTE/PATH"),
    ):
        bad.write_text(BASIC + f"storage: {uri}\n")
        with pytest.raises(RecipeError, match=re.escape(said)):
            load_recipe(bad)
    for uri in (
        "s3://bucket",
        "hdfs:///runs",
        "file:///runs",
        "file://localhost/runs",
        "abfs://c@a.dfs.core.windows.net/r",
    ):
        bad.write_text(BASIC + f"storage: {uri}\n")
        assert load_recipe(bad).storage.path == uri
    # Found by security QA: a password in the URI went into recipe.yaml, the report,
    # the stored copy and a job's metadata. Refused, and not shown in the refusal.
    for uri in ("s3://AKIA:wJal/K7MD@bucket/runs", "gs://u:pw@bucket/r"):
        bad.write_text(BASIC + f"storage: {uri}\n")
        with pytest.raises(RecipeError, match="give the credentials in the environment") as no:
            load_recipe(bad)
        assert "wJal" not in str(no.value) and ":pw@" not in str(no.value)
    with pytest.raises(StorageError, match="a password in the URI would be recorded"):
        with_cluster_options(parse_recipe(BASIC), storage="s3://KEY:SECRET@bucket/runs")
    assert load_recipe(write_recipe(tmp_path, BASIC + "storage: s3://KEY@b/r\n", "k.yaml"))


def test_node_local_storage_is_refused_on_several_nodes(tmp_path):
    def plan(storage: str | None, nodes: int, **kwargs) -> RunPlace:
        text = BASIC + (f"storage: {storage}\n" if storage else "")
        return plan_run(load_recipe(write_recipe(tmp_path, text)), nodes=nodes, **kwargs)

    # One node: anything goes, and a folder takes the place of output:.
    place = plan(str(tmp_path / "store"), 1, run_name="r1")
    assert place.local_dir == tmp_path / "store" / "r1"
    assert place.remote is None
    # Several nodes: no storage, a plain folder and a file:// URI are node-local ...
    for storage in (None, str(tmp_path / "store"), f"file://{tmp_path}/store"):
        with pytest.raises(StorageError, match="the Ray cluster has 3 nodes"):
            plan(storage, 3)
    # A resumed run is told what a resumed run can do (found by QA: --shared-storage,
    # which --resume refuses).
    with pytest.raises(StorageError) as resumed:
        plan(str(tmp_path / "store"), 3, run_dir=tmp_path / "store" / "r0", resume=True)
    said = str(resumed.value)
    assert "--shared-storage" not in said
    assert f"mark it shared there ({tmp_path / 'store' / 'r0' / 'recipe.yaml'}: storage:" in said
    assert "resume it on embedded Ray here (--address local)" in said
    # ... a folder or file:// URI marked shared, and a cloud URI, are not.
    shared = plan(f"{{path: {tmp_path}/store, shared: true}}", 3, run_name="r2")
    assert shared.local_dir == tmp_path / "store" / "r2"
    cloud = plan("gs://bucket/runs", 3, run_name="r3")
    assert cloud.remote == "gs://bucket/runs/r3"
    for name in ("", "..", "a/b"):  # "" made a run of the default name (found by QA)
        with pytest.raises(StorageError, match=f"run name '{name}': expected a folder name"):
            plan(None, 1, run_name=name)
    assert cloud.local_dir == tmp_path / "runs" / "r3"
    assert not cloud.stamped  # a name given is kept
    stamped = plan("s3://bucket/runs?region=eu-west-1", 3)
    assert stamped.stamped
    # A stamped name another run took meanwhile gives way, in storage too.
    taken = stamped.renamed(f"{stamped.local_dir.name}-2")
    assert taken.local_dir == stamped.local_dir.with_name(f"{stamped.local_dir.name}-2")
    assert taken.remote == f"s3://bucket/runs/{taken.local_dir.name}?region=eu-west-1"
    # One node on another machine: the same as several.
    with pytest.raises(StorageError, match=r"runs on another machine \(gpu-box\)"):
        plan(None, 1, elsewhere=["gpu-box"])
    # A shared folder does not cover a run directory elsewhere, which is said so (found
    # by QA: a fetched copy resumed there was told to mark the storage shared, as it was).
    with pytest.raises(StorageError) as outside:
        plan(f"{{path: {tmp_path}/store, shared: true}}", 3, run_dir=tmp_path / "elsewhere")
    assert str(outside.value).startswith(
        f"storage: the run directory {tmp_path / 'elsewhere'} is outside the shared folder "
        f"{tmp_path}/store, where the cluster's trials write their results"
    )
    assert "mark it shared" not in str(outside.value)
    assert is_node_local(None)


def test_storage_this_machine_cannot_reach_is_refused_before_any_work(tmp_path):
    """It was found when the first trial uploaded its folder (counted as a worker
    death, a retry), and said only after the whole run had trained."""
    from orchestrator import run_recipe

    recipe = write_recipe(
        tmp_path, BASIC + "storage: hdfs://localhost:1/runs\noutput: runs/\n"
    )  # (pyarrow finds no Java for HDFS here: refused in a moment, as offline S3 in seconds)
    with pytest.raises(StorageError, match="storage hdfs://localhost:1/runs: "):
        run_recipe(recipe)
    assert not (tmp_path / "runs").exists()


def test_google_storage_this_machine_cannot_reach_is_refused_in_seconds(tmp_path, monkeypatch):
    # Found by QA: offline, pyarrow retried for its default 15 minutes, in C++ where
    # Ctrl+C and SIGTERM do not reach; the run, a job and fetch all hung.
    from datetime import timedelta

    import orchestrator.storage
    from orchestrator.storage import GCS_RETRY_S, _filesystem, check_reachable, fetch

    def retry_limit(uri: str, **kwargs) -> timedelta:
        fs, path = _filesystem(uri, **kwargs)
        assert path == "b/runs"
        return fs.__reduce__()[1][0]["retry_time_limit"]  # its options, as pickled

    assert retry_limit("gs://b/runs", retry="check") == timedelta(seconds=GCS_RETRY_S["check"])
    assert retry_limit("gcs://b/runs") == timedelta(seconds=GCS_RETRY_S["transfer"])
    assert retry_limit("gs://b/runs?retry_limit_seconds=1") == timedelta(seconds=1)  # the user's
    began = time.monotonic()
    with pytest.raises(StorageError, match="storage gs://graftune-no-such-bucket/runs: "):
        check_reachable("gs://graftune-no-such-bucket/runs")
    assert time.monotonic() - began < GCS_RETRY_S["transfer"]  # the check's limit, not a copy's
    # fetch asks as check_reachable does, before it copies (a copy's retries take a
    # minute and say "cannot download"). The check's own limit is shortened here: its
    # default is checked above, and each offline check waits it out (about 10 s).
    monkeypatch.setitem(orchestrator.storage.GCS_RETRY_S, "check", 1)
    began = time.monotonic()
    with pytest.raises(StorageError, match="storage gs://graftune-no-such-bucket/runs/j: "):
        fetch("gs://graftune-no-such-bucket/runs/j", tmp_path / "fetched")  # as fetch's job
    assert time.monotonic() - began < GCS_RETRY_S["transfer"]
    assert not (tmp_path / "fetched").exists()


def test_uri_storage_round_trip(tmp_path, monkeypatch):
    """Publishing (after each trial) uploads no trial's folder: each was pushed as its
    trial ended (found by mutation testing: every trial was uploaded again each time,
    the transfer growing with the square of the trial count)."""
    import pyarrow.fs

    run = tmp_path / "local" / "run-1"
    (run / "best").mkdir(parents=True)
    (run / "leaderboard.csv").write_text("rank\n1\n")
    (run / "best" / "model.keras").write_bytes(b"model")
    trial = run / "trials" / "scratch_mlp" / "t1"
    trial.mkdir(parents=True)
    (trial / "result.json").write_text("{}")
    (run / "trials" / "scratch_mlp" / "search.json").write_text("[]")
    uri = f"file://{tmp_path}/bucket/run-1"

    push_trial(trial, uri, "scratch_mlp", "t1")
    copied = []
    real_copy = pyarrow.fs.copy_files

    def copy_files(source, *args, **kwargs):
        copied.append(source)
        return real_copy(source, *args, **kwargs)

    monkeypatch.setattr(pyarrow.fs, "copy_files", copy_files)
    publish(RunPlace(local_dir=run, remote=uri))
    monkeypatch.undo()
    assert sorted(copied) == [
        str(run / "best"),
        str(run / "leaderboard.csv"),
        str(run / "trials" / "scratch_mlp" / "search.json"),
    ]
    stored = tmp_path / "bucket" / "run-1"
    assert (stored / "leaderboard.csv").read_text() == "rank\n1\n"
    assert (stored / "best" / "model.keras").read_bytes() == b"model"
    assert (stored / "trials" / "scratch_mlp" / "t1" / "result.json").is_file()
    assert (stored / "trials" / "scratch_mlp" / "search.json").read_text() == "[]"

    elsewhere = tmp_path / "other-node" / "t1"
    assert pull_trial(uri, elsewhere, "scratch_mlp", "t1")
    assert (elsewhere / "result.json").read_text() == "{}"
    assert not pull_trial(uri, tmp_path / "none", "scratch_mlp", "never-ran")

    fetched = fetch(uri, tmp_path / "fetched")
    assert (fetched / "best" / "model.keras").read_bytes() == b"model"
    with pytest.raises(StorageError, match="not empty"):
        fetch(uri, fetched)
    # A file, or a folder under one (found by QA: internal NotADirectoryErrors).
    with pytest.raises(StorageError, match=r"model.keras is a file; choose another DEST"):
        fetch(uri, fetched / "best" / "model.keras")
    from orchestrator.cli import _path_problem

    with pytest.raises(StorageError, match="Not a directory"):
        fetch(uri, fetched / "best" / "model.keras" / "run")
    with pytest.raises(OSError) as caught:  # a folder's storage: Python's error, said in a line
        fetch(str(stored), fetched / "best" / "model.keras" / "run")
    assert _path_problem(caught.value) == (
        f"Not a directory: {fetched / 'best' / 'model.keras' / 'run'}",
        2,
    )
    with pytest.raises(StorageError, match="does not see"):
        fetch(str(tmp_path / "mounted-elsewhere" / "job-1"), tmp_path / "f2")
    # The storage folder is here, the run is not: no advice to mount what is mounted.
    (tmp_path / "store").mkdir()
    with pytest.raises(StorageError, match="nothing was stored there"):
        fetch(str(tmp_path / "store" / "job-1"), tmp_path / "f2")


def test_a_run_whose_storage_cannot_be_written_leaves_nothing(tmp_path):
    """Found by QA: a storage URI this machine reaches but cannot write (a file://
    under /proc) stopped the run (exit 2), and left its folder in ``output``."""
    from orchestrator.run import run_recipe

    recipe = write_recipe(
        tmp_path,
        "name: st\ndata: {source: sklearn:iris}\nstrategies: {scratch_mlp: {num_samples: 1}}\n"
        "search: {backend: keras_tuner, max_epochs: 1}\noutput: out/runs\n"
        "storage: file:///proc/graftune-cannot-be\n",
    )
    with pytest.raises(StorageError, match="Cannot create directory '/proc/graftune-cannot-be'"):
        run_recipe(recipe, plugins=[], echo=print)
    assert not (tmp_path / "out").exists()
    given = tmp_path / "given"  # an empty folder the run is given stays, empty
    given.mkdir()
    with pytest.raises(StorageError):
        run_recipe(recipe, run_dir=given, plugins=[], echo=print)
    assert given.is_dir() and not list(given.iterdir())


def test_stage_copies_local_files_and_rewrites_paths(tmp_path):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    shutil.copy(WINE, project / "data" / "wine.csv")
    (project / "models").mkdir()
    (project / "models" / "base.keras").write_bytes(b"not really a model")
    wheel = tmp_path / "dist" / "graftune_extra-0.1-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"wheel")
    recipe_file = write_recipe(
        project,
        """
        name: staged
        data: {source: csv:data/wine.csv, target: cultivar}
        base: {path: models/base.keras}
        strategies: {feature_extraction: {}}
        resources: {address: 10.0.0.1:6379}
        storage: s3://bucket/runs
        submit: {pip: [graftune-extra==0.1]}
        """,
    )
    recipe = recipe_for_submit(recipe_file, storage=None, shared=False)
    staged = stage(recipe, tmp_path / "job", pip=[str(wheel), "graftune-extra==0.1"])

    staged_recipe = load_recipe(tmp_path / "job" / RECIPE_FILE)
    assert staged_recipe.data.source == "csv:files/wine.csv"
    assert (tmp_path / "job" / "files" / "wine.csv").read_bytes() == WINE.read_bytes()
    assert staged_recipe.base.path == tmp_path / "job" / "files" / "base.keras"
    assert staged_recipe.resources.address == "auto"
    assert staged_recipe.output == tmp_path / "job" / "runs"
    assert staged_recipe.storage.path == "s3://bucket/runs"
    text = (tmp_path / "job" / RECIPE_FILE).read_text()
    assert str(project) not in text  # only relative paths travel
    assert (tmp_path / "job" / "wheels" / wheel.name).read_bytes() == b"wheel"
    assert staged.pip == [
        "graftune-extra==0.1",
        "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}/wheels/" + wheel.name,
    ]
    env = runtime_env(staged)
    assert env["working_dir"] == str(tmp_path / "job")
    assert env["pip"] == staged.pip
    assert entrypoint("job-1") == "exec python -m orchestrator.cli run recipe.yaml --run-name job-1"
    assert env["env_vars"]["GRAFTUNE_SUBMITTED"] == "1"


def test_three_staged_files_of_one_name_are_each_kept(tmp_path):
    """Found by mutation testing: only two files of one name were staged in a test;
    the third took the second's place with one ``if`` where a ``while`` is. (Only
    ``--pip`` files can be three: a recipe names at most two files under files/.)"""
    recipe = load_recipe(write_recipe(tmp_path, BASIC + "storage: s3://b/r\n"))
    wheels = []
    for n in range(3):
        wheel = tmp_path / f"dist{n}" / "graftune_extra-0.1-py3-none-any.whl"
        wheel.parent.mkdir()
        wheel.write_bytes(b"wheel %d" % n)
        wheels.append(str(wheel))

    staged = stage(recipe, tmp_path / "job", pip=wheels)

    prefix = "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}/"
    assert len(set(staged.pip)) == 3 and all(p.startswith(prefix) for p in staged.pip)
    contents = [(tmp_path / "job" / p.removeprefix(prefix)).read_bytes() for p in staged.pip]
    assert contents == [b"wheel 0", b"wheel 1", b"wheel 2"]
    # Each under its own name, which pip reads (found by QA: 2-NAME.whl is no wheel's).
    assert [p.removeprefix(prefix) for p in staged.pip] == [
        "wheels/graftune_extra-0.1-py3-none-any.whl",
        "wheels/2/graftune_extra-0.1-py3-none-any.whl",
        "wheels/3/graftune_extra-0.1-py3-none-any.whl",
    ]


def test_a_keras_tuner_job_is_staged_without_an_address(tmp_path):
    """Found by QA: every staged recipe said address: auto, and a keras_tuner job then
    noted that an address the user never set was not used."""
    recipe = load_recipe(
        write_recipe(tmp_path, BASIC + "search: {backend: keras_tuner}\nstorage: s3://b/r\n")
    )
    stage(recipe, tmp_path / "job")
    assert load_recipe(tmp_path / "job" / RECIPE_FILE).resources.address is None


def test_stage_sends_plugin_modules_found_here(tmp_path, monkeypatch):
    """A recipe naming a strategy of a --plugin module failed on the cluster with
    "unknown strategy": submit had no --plugin."""
    (tmp_path / "one_plugin.py").write_text("X = 1\n")
    (tmp_path / "pkg_plugin" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg_plugin" / "__init__.py").write_text("")
    (tmp_path / "pkg_plugin" / "strategies.py").write_text("Y = 2\n")
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(write_recipe(tmp_path, BASIC + "storage: s3://b/r\n"))
    staged = stage(recipe, tmp_path / "job", plugins=["one_plugin", "pkg_plugin.strategies"])
    assert (tmp_path / "job" / "one_plugin.py").read_text() == "X = 1\n"
    assert (tmp_path / "job" / "pkg_plugin" / "strategies.py").is_file()
    assert not (tmp_path / "job" / "pkg_plugin" / "__pycache__").exists()
    assert entrypoint("job-1", staged.plugins) == (
        "exec python -m orchestrator.cli run recipe.yaml --run-name job-1 "
        "--plugin one_plugin --plugin pkg_plugin.strategies"
    )
    with pytest.raises(SubmitError, match="--plugin no_such_plugin: no module no_such_plugin"):
        stage(recipe, tmp_path / "job2", plugins=["no_such_plugin"])
    with pytest.raises(SubmitError, match="import name, not a file path"):
        stage(recipe, tmp_path / "job3", plugins=["one_plugin.py/x"])
    # Worded as run's --plugin words it: the module's name, and where to run from.
    with pytest.raises(SubmitError) as info:
        stage(recipe, tmp_path / "job4", plugins=[str(tmp_path / "one_plugin.py")])
    assert f"'one_plugin' for {tmp_path / 'one_plugin.py'}, run from {tmp_path}" in str(info.value)
    # Two modules of one package: the package is sent once (found by QA: refused, as
    # if the second would take the place of the job's own files).
    (tmp_path / "pkg_plugin" / "sources.py").write_text("Z = 3\n")
    plugins = ["pkg_plugin.strategies", "pkg_plugin.sources"]
    staged = stage(recipe, tmp_path / "job5", plugins=plugins)
    assert (tmp_path / "job5" / "pkg_plugin" / "sources.py").read_text() == "Z = 3\n"
    assert entrypoint("job-5", staged.plugins).endswith(
        "--plugin pkg_plugin.strategies --plugin pkg_plugin.sources"
    )


@pytest.mark.slow
def test_a_jobs_run_names_its_data_as_recorded_and_its_results_where_stored(tmp_path, monkeypatch):
    """best/config.json, events.jsonl and the job's log named the data in the job's
    working directory (csv:/tmp/.../_ray_pkg_.../files/wine.csv), and the log's
    closing lines the run directory there: Ray deletes it."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    shutil.copy(WINE, project / "data" / "wine.csv")
    recipe_file = write_recipe(
        project,
        CSV_RECIPE.replace("num_samples: 2,", "backend: keras_tuner, num_samples: 1,"),
    )
    store = f"file://{tmp_path}/store"
    job = tmp_path / "working_dir_files" / "_ray_pkg_x"  # as Ray unpacks it on a node
    stage(recipe_for_submit(recipe_file, storage=store, shared=True), job)
    monkeypatch.setenv("GRAFTUNE_SUBMITTED", "1")
    monkeypatch.chdir(job)
    result = CliRunner().invoke(app, ["run", RECIPE_FILE, "--run-name", "job-1"])
    assert result.exit_code == 0, result.output
    stored = tmp_path / "store" / "job-1"
    best = json.loads((stored / "best" / "config.json").read_text())
    assert best["data_source"] == "csv:inputs/wine.csv"
    started = json.loads((stored / "events.jsonl").read_text().splitlines()[0])
    assert started["data"] == "csv:inputs/wine.csv"
    assert "data: csv:inputs/wine.csv: " in result.output
    assert f"leaderboard: {store}/job-1/leaderboard.md" in result.output
    assert f"report: {store}/job-1/report.html" in result.output
    assert f"model: {store}/job-1/best/model.keras" in result.output
    assert "_ray_pkg_x" not in result.output.split("best: ", 1)[1]


def test_a_job_stop_still_pending_says_when_ray_will_stop_it():
    # Found by QA: "still PENDING after 30 s" read as a stop that had failed; Ray hands
    # the stop to the job's supervisor, which waits for the job's pip install.
    from ray.job_submission import JobStatus

    from orchestrator.cli import _not_stopped

    said = _not_stopped("j-1", str(JobStatus.PENDING))
    assert said == (
        "job j-1 is still PENDING after 30 s: Ray stops it once its runtime environment is "
        "set up (pip installing its packages); see it end with: graftune jobs status j-1"
    )
    assert _not_stopped("j-1", str(JobStatus.RUNNING)) == "job j-1 is still RUNNING after 30 s"


def test_a_stopped_jobs_hint_is_to_resume_it_as_a_job_not_its_working_folder(monkeypatch):
    """A job said "graftune run --resume /tmp/ray/session_.../working_dir_files/...",
    a folder Ray deletes, on a machine the user does not work on. One stopped before
    it recorded its place in storage is named by its job's id."""
    from orchestrator.run import _resume_hint

    run_dir = Path("/tmp/ray/session_x/runtime_resources/working_dir_files/pkg/runs/job-1")
    monkeypatch.delenv("GRAFTUNE_SUBMITTED", raising=False)
    assert _resume_hint(run_dir) == f"continue it with: graftune run --resume {run_dir}"
    monkeypatch.setenv("GRAFTUNE_SUBMITTED", "1")
    assert _resume_hint(run_dir, ("my_plugin",)) == (
        "continue it with: graftune submit --resume job-1 --address DASHBOARD --plugin my_plugin"
    )


def test_a_job_runs_with_debug_when_submitted_with_it(monkeypatch, capsys):
    """Found by QA: a job's internal error said to run it again with ``graftune --debug
    run``, which a job's user cannot, and ``graftune --debug submit`` did not pass
    ``--debug`` on."""
    import typer

    from orchestrator import cli

    assert entrypoint("job-1", debug=True) == (
        "exec python -m orchestrator.cli --debug run recipe.yaml --run-name job-1"
    )
    monkeypatch.setenv("GRAFTUNE_SUBMITTED", "1")
    monkeypatch.setitem(cli._state, "command", "run")
    with pytest.raises(typer.Exit):
        cli._fail(RuntimeError("boom"))
    said = capsys.readouterr().err
    assert "internal error: RuntimeError: boom" in said
    assert "run it again as: graftune --debug submit ..." in said


@pytest.mark.parametrize(
    ("log", "hint"),
    [
        ("/bin/sh: 1: python: not found\n", "no `python` on its PATH: start Ray"),  # dash
        ("/bin/sh: line 1: python: command not found\n", "no `python` on its PATH"),  # bash
        ("ModuleNotFoundError: No module named 'orchestrator'\n", "virtualenv activated"),
    ],
)
def test_a_failed_jobs_log_gives_its_likely_fix(log, hint):
    """Found by QA: Debian's shell says "python: not found", and no hint was given;
    a job without graftune was told to add ``--pip graftune`` (any version)."""
    from types import SimpleNamespace

    from orchestrator.submit import failure_message

    class Client:  # what failure_message asks of a JobClient: its address and a job's log
        address = "http://127.0.0.1:8265"

        def _logs(self, job_id: str) -> str:
            return log

    info = SimpleNamespace(
        submission_id="job-1", job_id=None, status="FAILED", message="exit code 127"
    )
    said = failure_message(Client(), info).splitlines()
    assert said[0] == "job job-1 on http://127.0.0.1:8265 ended FAILED: exit code 127"
    assert hint in said[1] and "--pip graftune" not in said[1]
    assert said[2] == "the whole log: graftune jobs logs job-1 --address http://127.0.0.1:8265"


def test_a_stopped_job_stored_in_a_folder_is_to_be_resumed_there(tmp_path, monkeypatch):
    """Found by QA: its log said to fetch a copy and resume that, which stays a copy,
    where fetch and README say to resume it where it is stored. A job resumes it
    from its place in storage, which outlives the cluster's record of the job."""
    from orchestrator.run import _resume_hint
    from orchestrator.storage import record_stored

    monkeypatch.setenv("GRAFTUNE_SUBMITTED", "1")
    for i, (storage, said) in enumerate((
        (tmp_path / "store", "continue it with: graftune submit --resume "
         f"{tmp_path / 'store' / 'job-1'} --address DASHBOARD"),
        ("s3://bucket/runs", "continue it with: graftune submit --resume s3://bucket/runs/job-1 "
         "--address DASHBOARD"),
    )):  # fmt: skip
        # Placed as a submitted job's run is (found by QA: a first fix was tested on
        # a place made by hand, a URI record for a folder that no run keeps).
        output = tmp_path / "working_dir_files" / str(i)  # where the job ran
        text = BASIC + f"storage: {storage}\noutput: {output}\n"
        place = plan_run(parse_recipe(text), run_name="job-1", nodes=1)
        place.local_dir.mkdir(parents=True)
        record_stored(place)
        (place.local_dir / "recipe.yaml").write_text(text)  # as the run keeps it
        assert _resume_hint(place.local_dir) == said


def test_a_stored_run_made_before_run_records_is_not_overwritten_by_a_new_run(tmp_path):
    """Found by mutation testing: a storage folder holding a run from before
    ``.stored.json`` existed (its recipe.yaml, events, ...) was taken as empty only
    by the record's absence, and a new run of that name was stored over it."""
    from orchestrator.storage import check_stored_place

    store = tmp_path / "store"
    (store / "job-1").mkdir(parents=True)
    (store / "job-1" / "recipe.yaml").write_text(BASIC)
    place = RunPlace(local_dir=tmp_path / "runs" / "job-1", remote=f"file://{store}/job-1")
    with pytest.raises(StorageError, match="already holds a run"):
        check_stored_place(place, resume=False)
    empty = RunPlace(local_dir=tmp_path / "runs" / "job-2", remote=f"file://{store}/job-2")
    assert check_stored_place(empty, resume=False) is empty
    # Found by security QA: a folder holding anything but a run is not one to fill (a
    # crafted run directory, resumed, stored its files into "file:///home/USER/.ssh").
    (store / "home").mkdir()
    (store / "home" / "authorized_keys").write_text("the user's")
    for resume, fix in ((True, "move them away in storage"), (False, "choose another")):
        held = RunPlace(local_dir=tmp_path / "runs" / "home", remote=f"file://{store}/home")
        with pytest.raises(
            StorageError, match=f"holds authorized_keys, and no graftune run.*{fix}"
        ):
            check_stored_place(held, resume=resume)


def test_runs_are_told_apart_by_the_first_mark_both_have():
    """Found by mutation testing: a run with no marks to tell it by (stopped as it
    began: no events, no .searched, no run id) was refused on resume as "another
    run" in its own storage folder."""
    from orchestrator.storage import _same_run

    def files(**named: str) -> Callable[[str], str | None]:
        names = {".stored.json": "stored", "events.jsonl": "events", ".searched": "searched"}
        return lambda name: named.get(names[name])

    assert _same_run(files(), files())
    # A mark on one side only tells nothing: the next one both have decides.
    assert _same_run(files(stored='{"run_id": "a"}'), files())
    assert _same_run(files(events="start 1\nmore"), files(searched="d1"))
    assert _same_run(files(events="start 1\nx"), files(events="start 1\ny"))
    assert not _same_run(files(events="start 1"), files(events="start 2"))
    assert not _same_run(files(searched="d1"), files(searched="d2"))
    assert not _same_run(
        files(stored='{"run_id": "a"}', events="start 1"),
        files(stored='{"run_id": "b"}', events="start 1"),
    )


@pytest.mark.parametrize("name", ["../other-run", "a/b", "..", ".", "", 3, ".ssh"])
def test_a_stored_record_naming_another_folder_is_not_followed(tmp_path, name):
    """Found by mutation testing: a (damaged or hand-edited) ``.stored.json`` naming
    ``../other-run`` or ``a/b`` made the run store outside its own folder in storage
    (over another run); the run directory's own name is used instead."""
    from orchestrator.storage import _recorded_name

    run_dir = tmp_path / "runs" / "job-1"
    run_dir.mkdir(parents=True)
    (run_dir / ".stored.json").write_text(json.dumps({"run_id": "a", "name": name}))
    assert _recorded_name(run_dir) is None
    recipe = parse_recipe(BASIC + "storage: s3://bucket/runs\n")
    assert plan_run(recipe, run_dir=run_dir).remote == "s3://bucket/runs/job-1"
    (run_dir / ".stored.json").write_text(json.dumps({"run_id": "a", "name": "job-0"}))
    assert _recorded_name(run_dir) == "job-0"  # a fetched copy keeps its stored name


def test_stage_refuses_a_working_dir_larger_than_ray_allows(tmp_path):
    (tmp_path / "big.csv").write_bytes(b"x" * 4096)
    recipe = load_recipe(
        write_recipe(
            tmp_path,
            BASIC.replace("sklearn:digits", "csv:big.csv") + "storage: s3://b/r\n",
        )
    )
    with pytest.raises(SubmitError, match=r"Ray accepts at most 0\.0 MiB.*big\.csv") as caught:
        stage(recipe, tmp_path / "job", limit=1024)
    assert "RAY_max_grpc_message_size" in str(caught.value)


def test_a_job_whose_runtime_env_failed_says_pips_reason():
    """Its log is empty (the job never started): pip's error is only in Ray's message."""
    from types import SimpleNamespace

    from orchestrator.submit import _ray_reason

    message = (
        "runtime_env setup failed: Failed to set up runtime environment.\n"
        "Could not create the pip runtime env\n"
        "ERROR: Could not find a version that satisfies the requirement nope==9.9\n"
        "ERROR: No matching distribution found for nope==9.9\n"
    )
    reason = _ray_reason(SimpleNamespace(message=message))
    assert reason.startswith("runtime_env setup failed: Failed to set up runtime environment.")
    assert "ERROR: No matching distribution found for nope==9.9" in reason
    assert _ray_reason(SimpleNamespace(message="Job failed, last available logs: x")) == (
        "Job failed"
    )


def test_submit_needs_storage_before_contacting_a_cluster(tmp_path):
    recipe = write_recipe(tmp_path, BASIC)
    result = subprocess.run(
        [BIN / "graftune", "submit", recipe, "--address", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert "a submitted run needs storage" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(StorageError, match="give --storage too"):
        with_cluster_options(load_recipe(recipe), shared=True)


def test_submit_refuses_a_pip_file_that_is_not_here_before_contacting_a_cluster(
    tmp_path, monkeypatch
):
    """It was sent on as a requirement (exit 0), and the job failed on the cluster
    naming a path in its runtime environment."""
    recipe = write_recipe(tmp_path, BASIC + "storage: s3://b/r\n")
    for pip in ("./nosuch-1.0-py3-none-any.whl", "dist/nosuch.tar.gz", "wheels/nosuch"):
        result = subprocess.run(
            [BIN / "graftune", "submit", recipe, "--address", "http://127.0.0.1:9", "--pip", pip],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            cwd=tmp_path,
        )
        assert result.returncode == 2, result.stderr
        missing = tmp_path / pip.removeprefix("./")
        assert f"error: --pip {pip}: no such file {missing};" in result.stderr
        assert "Traceback" not in result.stderr
    # A requirement, a direct reference and a wheel that exists are not files to refuse.
    wheel = tmp_path / "graftune_extra-0.1-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    recipe = load_recipe(write_recipe(tmp_path, BASIC + "storage: s3://b/r\n"))
    pip = ["graftune-extra==0.1", "extra @ https://host/extra-0.1.tar.gz", str(wheel)]
    assert len(stage(recipe, tmp_path / "job", pip=pip).pip) == 3
    gone = recipe.submit.model_copy(update={"pip": ["../gone.zip"]})
    with pytest.raises(SubmitError, match=r"^submit\.pip \.\./gone\.zip: no such file"):
        stage(recipe.updated(submit=gone), tmp_path / "job2")
    # A folder, or a file that is no package, was passed on to the cluster's pip too.
    monkeypatch.chdir(tmp_path)  # --pip's paths are from the current folder
    (tmp_path / "pkg").mkdir()
    (tmp_path / "reqs.txt").write_text("numpy\n")
    for entry, problem in (("./pkg", "is a folder (build a wheel"), ("./reqs.txt", "is no wheel")):
        with pytest.raises(SubmitError, match=re.escape(f"--pip {entry}: {tmp_path}")) as said:
            check_sendable(recipe, pip=[entry], plugins=[])
        assert problem in str(said.value)
    with pytest.raises(SubmitError, match="--pip ' ': an empty entry"):  # sent on (found by QA)
        check_sendable(recipe, pip=[" "], plugins=[])
    # The recipe's entries are paths from its folder, as its other paths are.
    (tmp_path / "sub" / "wheels").mkdir(parents=True)
    shutil.copy(wheel, tmp_path / "sub" / "wheels" / wheel.name)
    inner = load_recipe(write_recipe(tmp_path / "sub", BASIC + "storage: s3://b/r\n"))
    there = inner.submit.model_copy(update={"pip": [f"wheels/{wheel.name}"]})
    (staged,) = stage(inner.updated(submit=there), tmp_path / "job3").pip
    assert staged.endswith(f"wheels/{wheel.name}") and "RAY_RUNTIME_ENV" in staged
    # validate checks what submit would send (found by QA: it said ok, submit refused).
    from typer.testing import CliRunner

    from orchestrator.cli import app

    def validate(pip: str) -> tuple[int, str]:
        recipe = write_recipe(tmp_path / "v", BASIC + f"submit: {{pip: ['{pip}']}}\n")
        result = CliRunner().invoke(app, ["validate", str(recipe)])
        return result.exit_code, " ".join(result.output.split())

    assert validate("graftune-extra==0.1")[0] == 0
    code, said = validate(f"wheels/{wheel.name}")
    assert code == 2, said
    missing = tmp_path / "v" / "wheels" / wheel.name
    assert said.startswith(f"error: submit.pip wheels/{wheel.name}: no such file {missing};")


def test_a_missing_dashboard_address_is_a_usage_error(tmp_path, monkeypatch):
    """Exit status 4 is for a cluster that cannot be reached; no address at all
    was given it too, though nothing was tried."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    for variable in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(variable, raising=False)
    recipe = write_recipe(tmp_path, BASIC + f"storage: {{path: {tmp_path}/store, shared: true}}\n")
    for command in (
        ["submit", str(recipe)],
        ["jobs", "list"],
        ["jobs", "status", "raysubmit_0"],
        ["jobs", "logs", "raysubmit_0"],
        ["jobs", "stop", "raysubmit_0"],
        ["fetch", "raysubmit_0", str(tmp_path / "fetched")],
    ):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert "give the cluster's dashboard address: --address http://HEAD:8265" in (
            result.output
        ), command
    # One taken from the environment is said to be (found by QA: RAY_ADDRESS, which
    # Ray's drivers read, was refused with no word of where it came from).
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    for variable in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.setenv(variable, f"127.0.0.1:{port}")
        result = CliRunner().invoke(app, ["jobs", "list"])
        assert result.exit_code == 4, result.output
        assert f"dashboard at http://127.0.0.1:{port} (from ${variable}):" in result.output
        monkeypatch.delenv(variable)
    result = CliRunner().invoke(app, ["jobs", "list", "--address", f"127.0.0.1:{port}"])
    assert f"dashboard at http://127.0.0.1:{port}: " in result.output
    # Also where the address is not a dashboard's (found by the re-check).
    for value, said in (
        ("ray://127.0.0.1:10001", "ray://127.0.0.1:10001 (from $RAY_ADDRESS) is a Ray Client"),
        ("ftp://127.0.0.1:1", "ftp://127.0.0.1:1 (from $RAY_ADDRESS): a Ray dashboard is"),
        ("auto", "$RAY_ADDRESS is auto, which names none"),
    ):
        monkeypatch.setenv("RAY_ADDRESS", value)
        result = CliRunner().invoke(app, ["jobs", "list"])
        assert result.exit_code == 2, result.output
        assert said in " ".join(result.output.split()), result.output


# -- a real two-node cluster ------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    gcs: str
    dashboard: str
    token: str
    node_ids: tuple[str, ...]
    env: dict[str, str]
    """The environment a user of the cluster has: the token, graftune on PATH."""
    rejoin: Callable[[], tuple[list[str], str]] = field(repr=False, compare=False)
    """Starts the second node again (see ``two_nodes``): the live nodes' ids, and
    what the raylet of the node that died last logged."""


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), int(fields[2]))
    return table


def _stop_process_groups(groups: set[int]) -> None:
    """Stop every process in ``groups`` and all their descendants (workers, job drivers)."""
    table = _process_table()
    mine = {pid for pid, (_, group) in table.items() if group in groups}
    grew = True
    while grew:
        more = {pid for pid, (parent, _) in table.items() if parent in mine} - mine
        mine |= more
        grew = bool(more)
    mine.discard(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and any(_alive(pid) for pid in mine):
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_for(what: str, check, timeout: float = 90.0, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    extra = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{extra}")


_NODES = """
import json, sys
from ray._raylet import GcsClient
nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10).values()
alive = sorted(n.node_id.hex() for n in nodes if n.state == type(n).ALIVE)
dead = [f"{n.node_id.hex()[:8]}: {n.death_info}".strip() for n in nodes if n.state != type(n).ALIVE]
print(json.dumps([alive, dead]))
"""


def _nodes(gcs: str, env: dict[str, str]) -> tuple[list[str], list[str]]:
    """The ids of the cluster's live nodes, and its dead ones with Ray's word on why."""
    found = subprocess.run(
        [sys.executable, "-c", _NODES, gcs],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if found.returncode != 0:
        return [], []
    alive, dead = json.loads(found.stdout)
    return alive, dead


def _start_cluster(
    root: Path, token: str | None, base: dict[str, str], groups: set[int], *, nodes: int = 2
) -> Cluster:
    """Start a head and (``nodes=2``) a second node on fresh ports under ``root``; adds
    their groups. ``token=None``: a cluster without token authentication."""
    if token is None:
        node_env = {**base, "RAY_AUTH_MODE": "disabled"}
    else:
        node_env = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    (gcs_port, dash_port, client_port, *agent_ports) = _free_ports(9)
    root.mkdir(parents=True)

    def start(args: list[str], log: Path) -> None:
        with log.open("w") as out:
            # A session of its own: the daemons `ray start` leaves behind keep its group id.
            process = subprocess.Popen(
                [str(BIN / "ray"), "start", "--disable-usage-stats", *args],
                env=node_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            groups.add(process.pid)
            if process.wait(timeout=120) != 0:
                raise AssertionError(f"ray start failed:\n{log.read_text()[-3000:]}")

    start(
        [
            "--head",
            f"--port={gcs_port}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash_port}",
            f"--ray-client-server-port={client_port}",
            f"--dashboard-agent-listen-port={agent_ports[0]}",
            f"--metrics-export-port={agent_ports[1]}",
            f"--runtime-env-agent-port={agent_ports[2]}",
            f"--temp-dir={root / 'head'}",
            "--num-cpus=2",
        ],
        root / "head.log",
    )
    gcs = f"127.0.0.1:{gcs_port}"
    dashboard = f"http://127.0.0.1:{dash_port}"

    def join(ports: list[int]) -> None:
        # Its own temp dir, as on another machine: nodes sharing one would delete each
        # other's copies of a job's working directory.
        start(
            [
                f"--address={gcs}",
                "--node-ip-address=127.0.0.1",
                f"--dashboard-agent-listen-port={ports[0]}",
                f"--metrics-export-port={ports[1]}",
                f"--runtime-env-agent-port={ports[2]}",
                f"--temp-dir={root / 'worker'}",
                "--num-cpus=1",
            ],
            root / "worker.log",
        )

    def two_nodes() -> list[str] | None:
        ids, _ = _nodes(gcs, node_env)
        return ids if len(ids) == nodes else None

    def rejoin() -> tuple[list[str], str]:
        # Each raylet of a session logs to a file of its own (raylet.out, raylet.1.out).
        logs = sorted((root / "worker").glob("session_*/logs/raylet*.out"), key=os.path.getmtime)
        said = logs[-1].read_text(errors="replace").splitlines() if logs else []
        last = "\n".join([line for line in said if "[state-dump]" not in line][-15:])
        join(_free_ports(3))
        return _wait_for("two live nodes", two_nodes, log=root / "worker.log"), last or "(none)"

    if nodes == 2:
        join(agent_ports[3:])

    def jobs_api() -> bool:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"{dashboard}/api/jobs/", headers=headers)
        # Straight to the cluster, whatever proxy the environment names.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    dashboard_log = root / "head" / "session_latest" / "logs" / "dashboard.log"
    node_ids = _wait_for(f"{nodes} live nodes", two_nodes, log=root / "worker.log")
    _wait_for("the job API", jobs_api, timeout=60, log=dashboard_log)
    # A user of the cluster holds the token; RAY_AUTH_MODE is left for graftune to set.
    env = {**base, "RAY_AUTH_TOKEN": token} if token else dict(base)
    return Cluster(gcs, dashboard, token or "", tuple(node_ids), env, rejoin)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A real Ray head (2 CPUs) and a second node (1 CPU) on this machine, token auth on."""
    # Short: Ray's socket paths under it must stay within 107 bytes (AF_UNIX).
    root = Path(tempfile.mkdtemp(prefix="gt-ray-", dir="/tmp"))
    token = secrets.token_hex(32)
    # Nothing of another Ray (the embedded one of other tests) leaks in, and the
    # loopback cluster is reached directly, whatever proxy the environment names.
    proxies = {"http_proxy", "https_proxy", "all_proxy"}
    base = {
        k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k.lower() not in proxies
    }
    base.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        RAY_USAGE_STATS_ENABLED="0",
        # The cluster's trials compete with the rest of the suite as equals (conftest.py).
        RAY_worker_niceness="0",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    groups: set[int] = set()
    try:
        try:
            started = _start_cluster(root / "1", token, base, groups)
        except AssertionError as first:
            # Ports picked free can be taken by another process before Ray binds them
            # (other Ray instances run on this machine): one more try on fresh ports.
            _stop_process_groups(groups)
            print(f"the test cluster did not start, trying again: {first}")
            started = _start_cluster(root / "2", token, base, groups)
        yield started
    finally:
        _stop_process_groups(groups)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def two_nodes(cluster: Cluster) -> Cluster:
    """The cluster, with both its nodes alive, for a test that needs two.

    A CI run found the second node dead (the tests before it had passed), on a
    machine busy with the rest of the suite: the test then said only that the
    cluster had one node. A node that has died is started again, with a warning
    that says what Ray recorded of its death and what its raylet last logged.
    """
    env = {**cluster.env, "RAY_AUTH_MODE": "token"}
    alive, dead = _nodes(cluster.gcs, env)
    if len(alive) == 2:
        return replace(cluster, node_ids=tuple(alive))
    if len(alive) != 1:  # the head is gone (or cannot be asked): nothing to rejoin
        pytest.fail(f"the test cluster has {len(alive)} live nodes; dead: {dead}")
    alive_now, raylet = cluster.rejoin()
    warnings.warn(
        f"the test cluster had {len(alive)} live node(s), started the second again; "
        f"dead: {dead}; the raylet log of the second node ended:\n{raylet}",
        stacklevel=1,
    )
    return replace(cluster, node_ids=tuple(alive_now))


def _environ(cluster: Cluster, env: dict[str, object]) -> dict[str, str]:
    environ = dict(cluster.env)
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = str(value)
    return environ


def graftune(
    cluster: Cluster,
    *args: object,
    timeout: float = 300,
    cwd: Path | None = None,
    **env: str | None,
) -> subprocess.CompletedProcess:
    """Run the graftune CLI as a user of ``cluster`` (``env`` adds or, with None, removes)."""
    return subprocess.run(
        [str(BIN / "graftune"), *map(str, args)],
        env=_environ(cluster, env),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


CSV_RECIPE = """
name: wine-job
seed: 0
data: {source: csv:data/wine.csv, target: cultivar}
strategies:
  scratch_mlp:
    space: {hidden_layers: 1, width: 8}
search: {num_samples: 2, max_epochs: 1, batch_size: 32, scheduler: fifo}
resources: {cpus_per_trial: 1}
"""

SPREAD_RECIPE = """
name: spread
seed: 1
data: {source: sklearn:digits}
strategies:
  scratch_mlp:
    space: {hidden_layers: 1, width: 8}
search: {num_samples: 4, max_epochs: 1, batch_size: 64, scheduler: fifo}
resources: {cpus_per_trial: 1}
"""


@pytest.mark.slow
def test_submit_follow_and_fetch(cluster, tmp_path):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    shutil.copy(WINE, project / "data" / "wine.csv")
    recipe = write_recipe(
        project, CSV_RECIPE.replace("{cpus_per_trial: 1}", "{cpus_per_trial: 1, dashboard: true}")
    )
    store = f"file://{tmp_path}/store"

    submitted = graftune(
        cluster,
        "submit",
        recipe,
        "--address",
        cluster.dashboard,
        "--storage",
        store,
        "--shared-storage",
        "--follow",
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "staged: recipe.yaml and 1 file(s)" in submitted.stdout
    # Embedded Ray's dashboard is not the job's (found by QA: dropped unsaid).
    assert (
        "note: resources.dashboard is for embedded Ray; the cluster's own dashboard is "
        f"{cluster.dashboard}"
    ) in submitted.stdout
    job = submitted.stdout.split("submitted job ", 1)[1].split()[0]
    assert f"job {job} succeeded" in submitted.stdout
    assert "scratch_mlp" in submitted.stdout  # the job's log was streamed

    listed = graftune(cluster, "jobs", "list", "--address", cluster.dashboard)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if job in line)
    assert "SUCCEEDED" in row and f"{store}/{job}" in row

    fetched = graftune(cluster, "fetch", job, tmp_path / "fetched", "--address", cluster.dashboard)
    assert fetched.returncode == 0, fetched.stderr
    assert "did not finish" not in fetched.stderr
    board = pd.read_csv(tmp_path / "fetched" / "leaderboard.csv")
    assert list(board["status"]) == ["ok", "ok"]
    assert board["node"].notna().all()
    assert (tmp_path / "fetched" / "best" / "model.keras").is_file()
    assert (tmp_path / "fetched" / "recipe.yaml").is_file()
    # Stored finished: resumed, the fetched run says so and runs nothing.
    assert (tmp_path / "fetched" / "finished.json").is_file()
    again = graftune(cluster, "run", "--resume", tmp_path / "fetched")
    assert again.returncode == 0, again.stderr
    assert "nothing to resume" in again.stdout


WINE_PLUGIN = """
from orchestrator import hookimpl
from orchestrator.builtin_plugins.scratch_mlp import ScratchMLP


class WineMLP(ScratchMLP):
    name = "wine_mlp"
    description = "scratch_mlp, from a --plugin module"


@hookimpl
def graftune_register_strategies(registry):
    registry.add(WineMLP)
"""


@pytest.mark.slow
def test_driver_here_spreads_trials_over_both_nodes(two_nodes, tmp_path):
    cluster = two_nodes
    # Three trials at once on the 2 + 1 CPUs: each waits until three have started, so
    # none ends before the second node's has started (a trial ended on the head while
    # the second node's worker still started took it over, Tune reusing the head's
    # actor: every trial ran on the head, found by QA).
    together = tmp_path / "together"
    together.mkdir()
    recipe = write_recipe(
        tmp_path,
        SPREAD_RECIPE.replace(
            "scratch_mlp:\n    space: {hidden_layers: 1, width: 8}",
            f"together_mlp:\n    space: {{together: 3, folder: '{together}'}}",
        ).replace("{cpus_per_trial: 1}", "{cpus_per_trial: 1, num_cpus: 1, dashboard: true}"),
    )
    shared = tmp_path / "shared"

    plugin = ("--plugin", "tests.fixture_plugins")
    repo = Path(__file__).resolve().parents[1]  # where tests.fixture_plugins is found
    refused = graftune(
        cluster, "run", recipe, "--address", cluster.gcs, "--storage", shared, *plugin, cwd=repo
    )
    assert refused.returncode == 2
    assert "the Ray cluster has 2 nodes" in refused.stderr
    assert "--shared-storage" in refused.stderr
    assert not shared.exists()

    # On JAX where the run starts. Found by QA: the cluster's trials ran on
    # TensorFlow (their nodes' default; KERAS_BACKEND is not sent to other
    # nodes), and nothing said so.
    assert "KERAS_BACKEND" not in cluster.env
    ran = graftune(
        cluster,
        "run",
        recipe,
        "--address",
        cluster.gcs,
        "--storage",
        shared,
        "--shared-storage",
        "--run-name",
        "spread-1",
        *plugin,
        cwd=repo,
        KERAS_BACKEND="jax",
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # Embedded Ray's settings are said to be unused here (found by QA: silently).
    assert (
        "note: resources.num_cpus and resources.dashboard are for embedded Ray; a cluster "
        "has its own CPUs and dashboard"
    ) in ran.stdout + ran.stderr
    board = pd.read_csv(shared / "spread-1" / "leaderboard.csv")
    assert len(board) == 4 and set(board["status"]) == {"ok"}
    results = shared.glob("spread-1/trials/*/*/result.json")
    assert [json.loads(path.read_text())["backend"] for path in results] == ["jax"] * 4
    # 4 trials of 1 CPU on 2 + 1 CPUs: the second node gets some.
    nodes = {label.split("/")[1] for label in board["node"]}
    assert nodes == {node_id[:8] for node_id in cluster.node_ids}
    # A run driven from here is a driver, not a submitted job: listed with --all only
    # (logs, stop and fetch take submission ids).
    listed = graftune(cluster, "jobs", "list", "--address", cluster.dashboard)
    assert listed.returncode == 0, listed.stderr
    assert "(driver)" not in listed.stdout
    assert "like `graftune run --address`, not shown: --all lists them" in listed.stdout
    listed = graftune(cluster, "jobs", "list", "--all", "--address", cluster.dashboard)
    assert "(driver)" in listed.stdout
    # Ray says SUCCEEDED of a driver however it exited (found by QA): graftune, ENDED.
    driver_rows = [line for line in listed.stdout.splitlines() if "(driver)" in line]
    assert all("SUCCEEDED" not in line for line in driver_rows), listed.stdout
    listed = graftune(
        cluster, "jobs", "list", "--all", "-f", "json", "--address", cluster.dashboard
    )
    assert listed.returncode == 0, listed.stderr
    drivers = [job for job in json.loads(listed.stdout) if job["job"] is None]
    assert drivers and all(job["driver"] and job["started"] for job in drivers)
    assert "SUCCEEDED" not in {job["status"] for job in drivers}


@pytest.mark.slow
def test_sigterm_stops_a_run_driven_from_here_and_says_so(cluster, tmp_path):
    """``ray.init`` to a cluster, called in the main thread, installs Ray's SIGTERM
    handler (``sys.exit``), which ended the run with status 1 and no word."""
    recipe = write_recipe(
        tmp_path,
        SPREAD_RECIPE.replace(
            "{num_samples: 4, max_epochs: 1,",
            "{num_samples: 6, max_epochs: 8, max_concurrent_trials: 1,",
        ),
    )
    run_dir = tmp_path / "shared" / "stopped"
    args = ["run", recipe, "--address", cluster.gcs, "--storage", run_dir.parent]
    args += ["--shared-storage", "--run-name", run_dir.name, "--quiet"]
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(
            [str(BIN / "graftune"), *map(str, args)],
            env=cluster.env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 180
            while not list(run_dir.glob("trials/scratch_mlp/*/result.json")):
                assert process.poll() is None, "the run ended before it could be stopped"
                assert time.monotonic() < deadline, "no trial finished in time"
                time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    said = (tmp_path / "stderr.txt").read_text()
    assert process.returncode == 143, said[-3000:]
    assert "terminated (SIGTERM)" in said
    assert f"graftune run --resume {run_dir}" in said
    assert "SIGTERM received" not in said  # no crash report


@pytest.mark.slow
def test_probe_counts_the_nodes_and_sees_they_are_here(two_nodes):
    cluster = two_nodes
    code = (
        "import json, sys; from orchestrator.cluster import probe; info = probe(sys.argv[1]); "
        "print(json.dumps([info.address, info.nodes, info.elsewhere]))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code, cluster.gcs],
        env=cluster.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout.splitlines()[-1]) == [cluster.gcs, 2, []]


@pytest.mark.slow
def test_wrong_address_fails_fast_with_the_fix(cluster, tmp_path):
    recipe = write_recipe(tmp_path, SPREAD_RECIPE)
    (closed,) = _free_ports(1)

    ran = graftune(cluster, "run", recipe, "--address", f"127.0.0.1:{closed}", timeout=30)
    assert ran.returncode == 4
    assert f"cannot reach the Ray cluster at 127.0.0.1:{closed}" in ran.stderr
    assert "GCS address" in ran.stderr and "Traceback" not in ran.stderr
    assert not (tmp_path / "runs").exists()

    listed = graftune(
        cluster, "jobs", "list", "--address", f"http://127.0.0.1:{closed}", timeout=30
    )
    assert listed.returncode == 4
    assert f"cannot reach the Ray dashboard at http://127.0.0.1:{closed}" in listed.stderr
    # --address wins over the environment (Ray's client lets the environment win).
    # Both variables in one process: either one left to Ray reaches the live
    # dashboard, and the listing succeeds.
    both = dict.fromkeys(("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"), cluster.dashboard)
    overridden = graftune(
        cluster, "jobs", "list", "--address", f"http://127.0.0.1:{closed}", timeout=30, **both
    )
    assert overridden.returncode == 4, overridden.stdout
    assert f"cannot reach the Ray dashboard at http://127.0.0.1:{closed}" in overridden.stderr

    swapped = graftune(cluster, "run", recipe, "--address", cluster.dashboard, timeout=30)
    assert swapped.returncode == 2  # the wrong kind of address: nothing was tried
    assert "is a dashboard address" in swapped.stderr and "graftune submit" in swapped.stderr
    # Without its http://, the dashboard's address is told apart by what answers there
    # (before: the GCS check waited its whole 10 s for an answer and said "not healthy?").
    bare = cluster.dashboard.removeprefix("http://")
    swapped = graftune(cluster, "run", recipe, "--address", bare, timeout=30)
    assert swapped.returncode == 4
    assert f"{bare} is a web server, as a Ray dashboard" in swapped.stderr
    assert f"graftune submit RECIPE --address http://{bare}" in swapped.stderr
    # And the GCS's address where a dashboard's belongs (before: "connection aborted").
    for command in (("jobs", "list"), ("jobs", "status", "raysubmit_0")):
        swapped = graftune(cluster, *command, "--address", cluster.gcs, timeout=30)
        assert swapped.returncode == 4, command
        assert f"{cluster.gcs} is the address of a Ray cluster's GCS" in swapped.stderr
        assert "http://HEAD:8265" in swapped.stderr and "Traceback" not in swapped.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_cluster_without_token_authentication_is_not_sent_the_token(tmp_path):
    """Found by QA: once embedded Ray had left a token in ~/.ray/auth_token, a run on
    a cluster started without token authentication sent it, its driver refused the
    cluster's own calls ("Missing authorization header"), and every trial was
    cancelled before it ran, with nothing said of the token."""
    root = Path(tempfile.mkdtemp(prefix="gt-open-", dir="/tmp"))
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        RAY_USAGE_STATS_ENABLED="0",
        TF_CPP_MIN_LOG_LEVEL="2",
        HOME=str(home),
    )
    groups: set[int] = set()
    try:
        open_cluster = _start_cluster(root / "1", None, base, groups, nodes=1)
        recipe = write_recipe(tmp_path, SPREAD_RECIPE.replace("num_samples: 4", "num_samples: 1"))
        ran = graftune(open_cluster, "run", recipe, "--address", open_cluster.gcs, "--quiet")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        board = pd.read_csv(next((tmp_path / "runs").glob("spread-*")) / "leaderboard.csv")
        assert list(board["status"]) == ["ok"]
    finally:
        _stop_process_groups(groups)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_wrong_or_missing_token_fails_fast_with_the_fix(cluster, tmp_path):
    recipe = write_recipe(tmp_path, SPREAD_RECIPE)

    ran = graftune(
        cluster, "run", recipe, "--address", cluster.gcs, timeout=30, RAY_AUTH_TOKEN="x" * 64
    )
    assert ran.returncode == 4
    assert f"the Ray cluster at {cluster.gcs} refused the connection" in ran.stderr
    assert "RAY_AUTH_TOKEN is not the cluster's" in ran.stderr
    assert "ray get-auth-token" in ran.stderr

    wrong = graftune(
        cluster, "jobs", "list", "--address", cluster.dashboard, timeout=30, RAY_AUTH_TOKEN="x" * 64
    )
    assert wrong.returncode == 4
    assert f"the Ray cluster at {cluster.dashboard} refused the request" in wrong.stderr
    assert "Invalid authentication token" in wrong.stderr

    # No token anywhere: an empty home, no RAY_AUTH_TOKEN.
    home = tmp_path / "home"
    home.mkdir()
    missing = graftune(
        cluster,
        "jobs",
        "list",
        "--address",
        cluster.dashboard,
        timeout=30,
        RAY_AUTH_TOKEN=None,
        HOME=str(home),
    )
    assert missing.returncode == 4
    assert "Missing authentication token" in missing.stderr
    assert "no token was found here" in missing.stderr


@pytest.mark.slow
def test_jobs_stop_ends_a_running_job(cluster, tmp_path):
    # A data file and a --plugin module, as a project has them (found by QA: the
    # fetched recipe of a stopped job named the data in the job's working directory,
    # which Ray deletes, and submit had no --plugin: "unknown strategy" on the cluster).
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    shutil.copy(WINE, project / "data" / "wine.csv")
    (project / "wine_plugin.py").write_text(WINE_PLUGIN)
    recipe = write_recipe(
        project,
        # One trial, which never ends: a second (CSV_RECIPE's) trained beside it on
        # this machine's few CPUs while the job was followed, stopped and fetched.
        CSV_RECIPE.replace("scratch_mlp:", "wine_mlp:")
        .replace("max_epochs: 1", "max_epochs: 100000")
        .replace("num_samples: 2", "num_samples: 1"),
    )
    submitted = graftune(
        cluster,
        "submit",
        recipe,
        "--address",
        cluster.dashboard,
        "--storage",
        tmp_path / "store",  # a folder (a URI's resume is stored back: not said here)
        "--shared-storage",
        "--plugin",
        "wine_plugin",
        cwd=project,
    )
    assert submitted.returncode == 0, submitted.stderr
    assert "staged: recipe.yaml and 2 file(s)" in submitted.stdout
    job = submitted.stdout.split("submitted job ", 1)[1].split()[0]
    assert f"graftune jobs logs {job} --follow" in submitted.stdout

    def running() -> bool:
        status = graftune(cluster, "jobs", "status", job, "--address", cluster.dashboard)
        assert "FAILED" not in status.stdout, status.stdout
        return f"{job}: RUNNING" in status.stdout

    _wait_for("the job to run", running, timeout=120)
    # Not a cluster fault (exit 4): a job still running, or an id the cluster lacks.
    early = graftune(cluster, "fetch", job, tmp_path / "early", "--address", cluster.dashboard)
    assert early.returncode == 2, early.stdout + early.stderr
    assert f"job {job} is RUNNING; its results are stored when it ends" in early.stderr
    unknown = graftune(cluster, "jobs", "status", "raysubmit_x", "--address", cluster.dashboard)
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert "there is no job raysubmit_x on the Ray cluster" in unknown.stderr
    # Ctrl+C while following stops the following, not the job.
    follower = subprocess.Popen(
        [str(BIN / "graftune"), "jobs", "logs", job, "--follow", "--address", cluster.dashboard],
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout.readline()  # following: the job's log so far is coming
        follower.send_signal(signal.SIGINT)
        _, stderr = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 130, stderr
    assert f"stopped following; job {job} goes on on the cluster" in stderr
    assert f"graftune jobs stop {job}" in stderr
    assert running()
    # The run stores its recipe as it begins (before: only at its end, so a job stopped
    # midway had stored nothing to resume from).
    stored = tmp_path / "store" / job / "recipe.yaml"
    _wait_for("the run's recipe in storage", stored.is_file, timeout=120)
    stopped = graftune(cluster, "jobs", "stop", job, "--address", cluster.dashboard, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert f"{job}: STOPPED" in stopped.stdout
    status = graftune(cluster, "jobs", "status", job, "--address", cluster.dashboard)
    assert f"{job}: STOPPED" in status.stdout
    # Stopped before any trial ended: what it stored is its recipe, to resume from.
    fetched = graftune(cluster, "fetch", job, tmp_path / "partial", "--address", cluster.dashboard)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert "the job's run did not finish" in fetched.stderr
    assert "cover only the trials that ended" not in fetched.stderr  # there is no leaderboard
    # With the --plugin it was submitted with (the resume said "unknown strategy").
    # Stored in a folder, it goes on there: a fetched copy resumed was never stored back
    # (found by QA).
    resume = (
        f"continue it where it is stored with: graftune run --resume {tmp_path / 'store' / job} "
        "--address HEAD:6379 --plugin wine_plugin"
    )
    assert resume in fetched.stderr
    # Its recipe names the data the run keeps, in the run directory, which moves
    # with it: the job's working directory is gone (here, on another machine).
    moved = (tmp_path / "partial").rename(tmp_path / "moved")
    recorded = (moved / "recipe.yaml").read_text()
    assert "source: csv:inputs/wine.csv" in recorded, recorded
    assert "working_dir_files" not in recorded
    assert (moved / "inputs" / "wine.csv").read_bytes() == WINE.read_bytes()
    checked = graftune(
        cluster, "validate", moved / "recipe.yaml", "--data", "--plugin", "wine_plugin", cwd=project
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


GATED_PLUGIN = """
import time
from pathlib import Path

from orchestrator import hookimpl
from orchestrator.builtin_plugins.scratch_mlp import ScratchMLP

STARTS = Path({starts!r})
GATE = Path({gate!r})


class GatedMLP(ScratchMLP):
    name = "gated_mlp"
    description = "scratch_mlp whose 16-wide trials wait for the gate file to train"

    def fit(self, model, config, data, **kwargs):
        with STARTS.open("a") as log:
            log.write(f"{{config['width']}}\\n")
        while config["width"] == 16 and not GATE.exists():
            time.sleep(0.2)
        return super().fit(model, config, data, **kwargs)


@hookimpl
def graftune_register_strategies(registry):
    registry.add(GatedMLP)
"""


@pytest.mark.slow
def test_a_stopped_job_is_resumed_as_a_job_without_repeating_its_ended_trials(cluster, tmp_path):
    """A user who reaches the cluster's dashboard alone (no driver's GCS address)
    continues a stopped job as a job: ``submit --resume JOB``, which fetches the run
    from its URI in the new job and stores it back; the trial that had ended is not
    trained again, the one cut short is."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    shutil.copy(WINE, project / "data" / "wine.csv")
    starts, gate = tmp_path / "starts.txt", tmp_path / "gate"
    (project / "gated_plugin.py").write_text(
        GATED_PLUGIN.format(starts=str(starts), gate=str(gate))
    )
    recipe = write_recipe(
        project,
        CSV_RECIPE.replace("scratch_mlp:", "gated_mlp:")
        .replace("width: 8", "width: {choice: [8, 16]}")
        .replace("num_samples: 2", "algorithm: grid, num_samples: 1"),
    )
    store = f"file://{tmp_path}/store"
    dashboard = ("--address", cluster.dashboard)
    submitted = graftune(
        cluster, "submit", recipe, *dashboard, "--storage", store, "--shared-storage",
        "--plugin", "gated_plugin", "-q", cwd=project,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip()
    trials = tmp_path / "store" / job / "trials" / "gated_mlp"
    _wait_for(
        "the 8-wide trial's result in storage",
        lambda: any(trials.glob("*/result.json")) and "16" in starts.read_text().split(),
        timeout=180,
    )
    early = graftune(
        cluster, "submit", "--resume", job, *dashboard, "--plugin", "gated_plugin", cwd=project
    )
    assert early.returncode == 2, early.stdout + early.stderr
    assert f"job {job} is RUNNING: a run is resumed once its job has ended" in early.stderr
    stopped = graftune(cluster, "jobs", "stop", job, *dashboard, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    logs = graftune(cluster, "jobs", "logs", job, *dashboard)
    hint = f"graftune submit --resume {store}/{job} --address DASHBOARD --plugin gated_plugin"
    assert hint in " ".join(logs.stdout.split()), logs.stdout
    # Its --plugin module went in its working directory, which is gone: it is sent again.
    bare = graftune(cluster, "submit", "--resume", job, *dashboard, cwd=project)
    assert bare.returncode == 2, bare.stdout + bare.stderr
    assert "give it again (--plugin gated_plugin)" in bare.stderr
    gate.touch()
    resumed = graftune(
        cluster, "submit", "--resume", job, *dashboard, "--plugin", "gated_plugin", "--follow",
        cwd=project,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming {store}/{job}" in resumed.stdout
    again = resumed.stdout.split("submitted job ", 1)[1].split()[0]
    assert again.startswith(f"{job}-resume-") and f"job {again} succeeded" in resumed.stdout
    # The ended trial trained once; the one the stop cut short, again.
    assert sorted(map(int, starts.read_text().split())) == [8, 16, 16]
    board = pd.read_csv(tmp_path / "store" / job / "leaderboard.csv")
    assert sorted(board["width"]) == [8, 16] and list(board["status"]) == ["ok", "ok"]
    assert (tmp_path / "store" / job / "finished.json").is_file()
    listed = graftune(cluster, "jobs", "list", *dashboard)
    assert f"{store}/{job}" in next(line for line in listed.stdout.splitlines() if again in line)
    # Its run is complete: a job that succeeded has nothing to resume.
    done = graftune(cluster, "submit", "--resume", again, *dashboard)
    assert done.returncode == 0, done.stderr
    assert f"job {again} succeeded: its run is complete, nothing to resume" in done.stdout


@pytest.mark.slow
def test_a_job_that_fails_ends_follow_with_its_status(cluster, tmp_path):
    # A path that does not exist here is sent unchanged, and fails on the cluster.
    recipe = write_recipe(
        tmp_path,
        BASIC.replace("sklearn:digits", f"csv:{tmp_path}/elsewhere/data.csv, target: y"),
    )
    (tmp_path / "store").mkdir()  # a shared folder, mounted here as on the nodes
    followed = graftune(
        cluster,
        "submit",
        recipe,
        "--address",
        cluster.dashboard,
        "--storage",
        f"file://{tmp_path}/store",
        "--shared-storage",
        "--follow",
        timeout=120,
    )
    assert followed.returncode == 1
    assert "does not exist" in followed.stdout  # the driver's own error, streamed
    assert "ended FAILED: Job entrypoint command failed with exit code 2" in followed.stderr
    assert "graftune jobs logs graftune-basic-" in followed.stderr
    # It stored nothing: its resume is refused here, and no job is sent.
    failed = followed.stderr.split("graftune jobs logs ", 1)[1].split()[0]
    resumed = graftune(cluster, "submit", "--resume", failed, "--address", cluster.dashboard)
    assert resumed.returncode == 2, resumed.stdout + resumed.stderr
    said = " ".join(resumed.stderr.split())
    assert f"there is no run at file://{tmp_path}/store/{failed}: nothing was stored" in said
    assert said.endswith("no job was sent: submit its recipe, basic, again"), said
    listed = graftune(cluster, "jobs", "list", "--address", cluster.dashboard)
    assert f"{failed}-resume-" not in listed.stdout
    # For a script: the job id alone, which the job commands take.
    quiet = graftune(
        cluster,
        "submit",
        recipe,
        "-q",
        "--address",
        cluster.dashboard,
        "--storage",
        f"file://{tmp_path}/store",
        "--shared-storage",
    )
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    job = quiet.stdout.strip()
    assert quiet.stdout == job + "\n" and job.startswith("graftune-basic-"), quiet.stdout
    status = graftune(cluster, "jobs", "status", job, "--address", cluster.dashboard)
    assert status.returncode == 0 and status.stdout.startswith(f"{job}: "), status.stdout


def _listening(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port``, from /proc/net."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(address)
    return found


@pytest.mark.slow
def test_the_clusters_dashboard_listens_on_loopback_only(cluster):
    port = int(cluster.dashboard.rsplit(":", 1)[1])
    # 127.0.0.1 in /proc/net/tcp's little-endian hex; nothing on 0.0.0.0 or another address.
    assert _listening(port) == {"0100007F"}


def test_a_stale_cluster_found_by_address_auto_says_how_to_run_here(monkeypatch):
    """A stopped job's resume said only "cannot reach the Ray cluster at 192.0.2.2:6390":
    an address the user never typed, that auto found in a stale file."""
    from orchestrator import cluster
    from orchestrator.errors import ClusterError

    (closed,) = _free_ports(1)
    monkeypatch.setattr(cluster, "gcs_address", lambda address: f"127.0.0.1:{closed}")
    with pytest.raises(ClusterError) as caught:
        cluster.probe("auto")
    assert f"cannot reach the Ray cluster at 127.0.0.1:{closed} (what address auto found" in (
        str(caught.value)
    )
    assert "--address local runs on embedded Ray here" in str(caught.value)
    with pytest.raises(ClusterError) as caught:
        cluster.probe(f"127.0.0.1:{closed}")
    assert "address auto" not in str(caught.value)


def test_address_auto_with_no_cluster_is_said_so_not_an_internal_error(monkeypatch):
    """Found by QA: with no cluster running, address auto (a submitted job's recorded
    recipe has it) ended in "internal error: ConnectionError", exit 1: Ray 2.60 raises
    where it returned nothing. Ray's own search finds the test session's Ray here, so
    it is made to find none, as on a machine without one."""
    import ray._private.services as services

    from orchestrator import cluster
    from orchestrator.errors import ClusterError

    def none_running(address):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(services, "canonicalize_bootstrap_address", none_running)
    with pytest.raises(ClusterError) as caught:
        cluster.gcs_address("auto")
    assert str(caught.value).startswith("address auto: no running Ray cluster was found")
    assert caught.value.exit_status == 4


def test_following_a_job_whose_cluster_goes_says_so_without_a_traceback(caplog, monkeypatch):
    """Found by QA: after the right error (exit 4), asyncio logged "Task exception was
    never retrieved" with the log stream's WebSocket traceback. Here the stream breaks
    and the next status poll finds no cluster, in that order, as when the head went."""
    import gc
    from types import SimpleNamespace

    from orchestrator import submit
    from orchestrator.errors import ClusterError

    class Gone:
        async def tail_job_logs(self, job_id):
            yield "first line\n"
            raise RuntimeError("WebSocket connection closed unexpectedly with close code 1006")

    polls = []

    def info(job_id):
        polls.append(job_id)
        if len(polls) > 1:
            raise ClusterError("cannot reach the Ray dashboard: connection refused")
        return SimpleNamespace(
            submission_id=job_id, status=SimpleNamespace(is_terminal=lambda: False)
        )

    monkeypatch.setattr(submit, "POLL_S", 0.1)
    client = object.__new__(submit.JobClient)  # what follow uses: its Ray client, info()
    client.client, client.info = Gone(), info
    written = []
    with pytest.raises(ClusterError):
        client.follow("job-1", written.append)
    gc.collect()  # asyncio logs a task's unretrieved exception when it is collected
    assert written == ["first line\n"]
    assert "never retrieved" not in caplog.text


class _Status(str):
    def is_terminal(self) -> bool:
        return self in ("SUCCEEDED", "FAILED", "STOPPED")


class _FakeRay:
    """What JobClient asks of Ray's job client, for jobs that ended or are drivers."""

    def __init__(self, jobs):
        self.jobs, self.asked = jobs, []

    def get_job_info(self, job_id):
        self.asked.append(("info", job_id))
        return self.jobs[job_id]

    def get_job_logs(self, job_id):
        self.asked.append(("logs", job_id))
        return "the whole log\n"

    def stop_job(self, job_id):
        self.asked.append(("stop", job_id))

    def list_jobs(self):
        return list(self.jobs.values())

    async def tail_job_logs(self, job_id):  # never reached for an ended job
        raise AssertionError("tailed an ended job's log")
        yield


def _fake_jobs(monkeypatch):
    from types import SimpleNamespace

    from orchestrator import cli, submit

    def job(submission_id, job_id, status, end_time):
        return SimpleNamespace(
            submission_id=submission_id, job_id=job_id, status=_Status(status), message="",
            start_time=1_700_000_000_000, end_time=end_time, metadata={}, type="x",
        )  # fmt: skip

    ray = _FakeRay(
        {
            "done-1": job("done-1", "02000000", "SUCCEEDED", 1_700_000_060_000),
            "03000000": job(None, "03000000", "SUCCEEDED", 1_700_000_090_000),  # a driver gone
            "04000000": job(None, "04000000", "RUNNING", 0),  # a driver running
        }
    )
    client = object.__new__(submit.JobClient)
    client.client, client.address = ray, "http://127.0.0.1:8265"
    monkeypatch.setattr(cli, "_job_client", lambda address: client)
    return client, ray


def test_commands_on_a_job_that_ended_or_a_driver_say_what_they_are(monkeypatch):
    """Found by QA: a killed driver was SUCCEEDED to jobs status, its logs and stop gave
    Ray's HTTP 400 as a cluster that refused us (exit 4); an ended job's stop said its
    status as if it had stopped it, and its logs --follow waited 5 s for a stream."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    _, ray = _fake_jobs(monkeypatch)
    runner = CliRunner()
    said = runner.invoke(app, ["jobs", "stop", "done-1"])
    assert said.exit_code == 0, said.output
    assert said.stdout == "done-1: SUCCEEDED (it had ended: nothing to stop)\n"
    assert ("stop", "done-1") not in ray.asked
    said = runner.invoke(app, ["jobs", "logs", "done-1", "--follow"])
    assert said.exit_code == 0, said.output
    assert said.stdout.startswith("the whole log\njob done-1 succeeded\n")
    said = runner.invoke(app, ["jobs", "status", "03000000"])
    assert said.stdout == "03000000: ENDED\n", said.output
    ray.asked.clear()
    for command in (["jobs", "logs"], ["jobs", "logs", "--follow"], ["jobs", "stop"], ["fetch"]):
        said = runner.invoke(app, [*command, "03000000"])
        assert said.exit_code == 2, said.output
        assert said.stderr.startswith(
            "error: 03000000 is a driver that connected without the job API (graftune run "
        ), said.stderr
    assert not [asked for asked in ray.asked if asked[0] in ("logs", "stop")]
    # A driver still running has no end: null, not Ray's 0 (1970).
    said = runner.invoke(app, ["jobs", "list", "--all", "-f", "json"])
    ended = {job["driver"] or job["job"]: job["ended"] for job in json.loads(said.stdout)}
    assert ended == {"done-1": 1_700_000_060, "03000000": 1_700_000_090, "04000000": None}
    # An id no job has, without asking Ray: "" and "ID/.." asked for its list of
    # jobs, whose answer failed to parse (an internal error, exit 1).
    ray.asked.clear()
    for job in ("", " ", "done-1/..", "a/b"):
        for command in (["jobs", "status"], ["fetch"]):
            said = runner.invoke(app, [*command, job])
            assert said.exit_code == 2, said.output
            assert "there is no job " in said.stderr and "internal" not in said.stderr
    assert "there is no job '' on the Ray cluster" in runner.invoke(app, ["fetch", ""]).stderr
    assert ray.asked == []


def test_a_token_path_naming_no_token_is_said_before_any_cluster_is_asked(tmp_path, monkeypatch):
    """Found by QA: run --address said the GCS "answered, but not as a Ray cluster's",
    quoting a line of Ray's C++ stack dump; jobs said the token was not the cluster's."""
    from orchestrator import cluster, submit
    from orchestrator.errors import ClusterError

    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    (tmp_path / "empty").write_text("\n")
    (closed,) = _free_ports(1)
    for name, problem in (("missing", "No such file or directory"), ("empty", "the file is empty")):
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / name))
        said = f"RAY_AUTH_TOKEN_PATH names {tmp_path / name}, which holds no token ({problem})"
        for ask in (
            lambda: cluster.probe(f"127.0.0.1:{closed}"),
            lambda: submit.JobClient(f"http://127.0.0.1:{closed}"),
        ):
            with pytest.raises(ClusterError) as caught:
                ask()
            assert str(caught.value).startswith(said), str(caught.value)
    (tmp_path / "token").write_text("abc\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    cluster.check_token_path()  # a token: Ray reads it


def test_a_resume_goes_to_no_cluster_its_run_directory_alone_names(tmp_path, monkeypatch):
    """Found by security QA: a run directory from someone else, resumed, sent the
    user's Ray token to the address its recipe.yaml named (and before, found by QA:
    `run --resume RUN` of a run whose cluster had gone said "cannot reach
    127.0.0.1:6390", an address the user had not typed). The address is the user's
    to give; the stop hint gives it."""
    from orchestrator.errors import AddressMissing, ClusterError
    from orchestrator.run import _resume_hint, resume_run

    (closed,) = _free_ports(1)
    run_dir = tmp_path / "run"
    write_recipe(run_dir, BASIC + f"resources: {{address: '127.0.0.1:{closed}'}}\n")
    asked = []
    monkeypatch.setattr("orchestrator.cluster.probe", lambda *a, **k: asked.append(a))
    with pytest.raises(AddressMissing) as caught:
        resume_run(run_dir, plugins=[], echo=print)
    assert str(caught.value) == (
        f"{run_dir} ran on the Ray cluster at 127.0.0.1:{closed} (its recipe.yaml says): a "
        "resume goes to no cluster that its run directory alone names, which would be given "
        f"your Ray token; resume with --address 127.0.0.1:{closed} to go on there (or "
        "HEAD:6379 where the cluster is now), or --address local for embedded Ray here "
        "(from Python, address=)"
    )
    assert caught.value.exit_status == 2 and asked == []
    assert _resume_hint(run_dir) == (
        f"continue it with: graftune run --resume {run_dir} --address 127.0.0.1:{closed}"
    )
    monkeypatch.undo()
    with pytest.raises(ClusterError) as caught:  # an address given: the user's, said as is
        resume_run(run_dir, address=f"127.0.0.1:{closed}", plugins=[], echo=print)
    assert str(caught.value).startswith(f"cannot reach the Ray cluster at 127.0.0.1:{closed}: ")


def test_https_to_a_dashboard_that_speaks_http_is_told_to_use_http():
    """Found by QA: said as "cannot reach" a dashboard that answered, with ".." in it."""
    import http.server
    import threading

    from orchestrator import submit
    from orchestrator.errors import ClusterError

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        with pytest.raises(ClusterError) as caught:
            submit.JobClient(f"https://127.0.0.1:{port}")
    finally:
        server.shutdown()
        server.server_close()
    assert str(caught.value) == (
        f"the Ray dashboard at https://127.0.0.1:{port} does not answer in https (an SSL "
        "error); Ray's dashboard speaks http unless a proxy in front of it does https: give "
        f"http://127.0.0.1:{port}"
    )


def test_a_gcs_address_given_with_http_is_told_to_drop_it():
    """Found by QA: `run --address http://HEAD:6379` was called a dashboard address
    and sent to `graftune submit --address http://HEAD:6379`, the GCS's port."""
    from orchestrator.cluster import gcs_address
    from orchestrator.errors import ClusterError

    with pytest.raises(ClusterError) as info:
        gcs_address("http://127.0.0.1:6379")
    assert str(info.value) == (
        "http://127.0.0.1:6379: a driver connects to the cluster's GCS address without "
        "http://, HEAD:6379 (what `ray start --head` prints); did you mean --address "
        "127.0.0.1:6379?"
    )
    with pytest.raises(ClusterError) as info:
        gcs_address("http://127.0.0.1:8265")
    assert "is a dashboard address" in str(info.value)


def test_a_dashboard_address_is_kept_without_its_trailing_slash():
    """Found by mutation testing: ``--address http://head:8265/`` was kept as given, and
    the hints and Ray's API addresses made from it got ``//``."""
    from orchestrator.submit import dashboard_url

    assert dashboard_url("http://head:8265/") == "http://head:8265"
    assert dashboard_url("head:8265/") == "http://head:8265"
    assert dashboard_url("https://head/ray/") == "https://head/ray"


def _fetch_client(status: str, metadata: dict[str, str]):
    from types import SimpleNamespace

    from orchestrator import submit

    job = SimpleNamespace(
        submission_id="job-1", job_id="02000000", status=_Status(status), message="",
        start_time=1_700_000_000_000, end_time=0, metadata=metadata, type="SUBMISSION",
    )  # fmt: skip
    client = object.__new__(submit.JobClient)
    client.client, client.address = _FakeRay({"job-1": job}), "http://127.0.0.1:8265"
    return client


def test_fetch_refuses_a_running_job(tmp_path, monkeypatch):
    """Found by mutation testing: nothing tested that fetch refuses a job still running,
    whose run in storage is half written (and a resume of it would run beside the job)."""
    import orchestrator.storage
    from orchestrator import submit

    copied = []
    monkeypatch.setattr(orchestrator.storage, "fetch", lambda *args: copied.append(args))
    for status in ("RUNNING", "PENDING"):
        client = _fetch_client(status, {submit.META_RUN: "s3://bucket/runs/job-1"})
        with pytest.raises(StorageError) as info:
            submit.fetch(client, "job-1", tmp_path / "copy")
        assert str(info.value) == (
            f"job job-1 is {status}; its results are stored when it ends (graftune jobs "
            "logs job-1 --follow --address http://127.0.0.1:8265)"
        )
    assert not copied


def test_a_dashboard_that_never_answers_is_given_up_on_at_the_first_request(monkeypatch):
    """Found by QA: a hung head (a dashboard that accepts and never answers) held
    each job command two minutes, the read timeout of every request."""
    import socket

    from typer.testing import CliRunner

    from orchestrator import submit
    from orchestrator.cli import app

    # Longer than the test may take (pytest-timeout): only the first request's own
    # timeout ends it.
    monkeypatch.setattr(submit, "HTTP_TIMEOUT", (10, 3600))
    monkeypatch.setattr(submit, "FIRST_TIMEOUT", (10, 1))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections wait in its backlog, unanswered
        address = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = CliRunner().invoke(app, ["jobs", "list", "--address", address])
    assert result.exit_code == 4, result.output
    assert f"the Ray dashboard at {address} did not answer in time" in result.output


def test_fetch_takes_a_runs_place_in_storage_and_needs_no_cluster(tmp_path, monkeypatch):
    """Found by QA: a run safe in storage could not be fetched once the cluster that
    ran it was restarted (its job's record gone), and the commands that read a run
    directory said of its URI "file:/... does not exist". Its note says where to
    resume and with which plugins, as fetch of a job does (found by the re-check)."""
    from typer.testing import CliRunner

    from orchestrator.cli import app
    from orchestrator.environment import ENVIRONMENT_FILE
    from orchestrator.storage import STORED_FILE

    for variable in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(variable, raising=False)
    store = tmp_path / "store"
    for name in ("job-1", "job-2"):
        (store / name / "trials").mkdir(parents=True)
        (store / name / "recipe.yaml").write_text(BASIC)
        (store / name / ENVIRONMENT_FILE).write_text('{"plugin_modules": ["my_plugins"]}')
    # job-2 was stored at a URI, which its record names: a copy resumed is stored back.
    (store / "job-2" / STORED_FILE).write_text(f'{{"stored": "file://{store}/job-2"}}')
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)

    def fetched(name: str) -> str:
        result = CliRunner().invoke(app, ["fetch", f"file://{store}/{name}"])
        assert result.exit_code == 0, result.output
        assert (here / name / "recipe.yaml").read_text() == BASIC
        said = " ".join(result.output.split())
        assert f"fetched file://{store}/{name}: {name}" in said
        assert "the run has not finished (if it is still going, let it end first)" in said
        return said

    # job-1 was stored in the folder (storage: /path): resumed there, not the copy.
    assert (
        f"continue it where it is stored with: graftune run --resume {store / 'job-1'} "
        "--address HEAD:6379 --plugin my_plugins"
    ) in fetched("job-1")
    assert (
        "continue it with: graftune run --resume job-2 --address HEAD:6379 --plugin my_plugins"
    ) in fetched("job-2")
    uri = f"file://{store}/job-1"
    again = CliRunner().invoke(app, ["fetch", uri])
    assert again.exit_code == 2 and "job-1 exists and is not empty" in again.output
    unknown = CliRunner().invoke(app, ["fetch", "ftp://host/runs/job-1"])
    assert unknown.exit_code == 2 and "unknown storage scheme 'ftp://'" in unknown.output
    for command in (["leaderboard", uri], ["report", uri], ["run", "--resume", uri]):
        refused = CliRunner().invoke(app, command)
        assert refused.exit_code == 2, (command, refused.output)
        assert f"copy the run here first with: graftune fetch {uri} DEST" in " ".join(
            refused.output.split()
        ), command
    # Nor is one a folder export writes (found by QA: a local folder "s3:" was made).
    refused = CliRunner().invoke(app, ["export", str(store / "job-1"), "s3://bucket/model"])
    assert refused.exit_code == 2 and "export writes a folder on this machine" in " ".join(
        refused.output.split()
    )
    assert not (here / "s3:").exists()
    # Only a place storage reads: a missing C:/x or runs:/x is a path that is not there.
    for path in ("C:/runs/x", "runs:/x"):
        refused = CliRunner().invoke(app, ["leaderboard", path])
        assert refused.exit_code == 2 and "place in storage" not in refused.output, path


def test_fetch_names_the_jobs_plugins_and_where_a_folder_stored_run_lives(tmp_path, monkeypatch):
    """Found by mutation testing: a job without --plugin was fetched with plugins
    ``[""]`` (its resume hint said ``--plugin ''``, which fails), and a job stored in a
    folder (no URI) was fetched without that folder, so its hint said to resume the
    copy rather than the run where it is stored."""
    import orchestrator.storage
    from orchestrator import submit

    monkeypatch.setattr(orchestrator.storage, "fetch", lambda location, dest: Path(dest))
    stored = tmp_path / "shared" / "runs" / "job-1"
    dest = tmp_path / "copy"
    for metadata in ({}, {submit.META_PLUGINS: ""}):
        fetched = submit.fetch(
            _fetch_client("STOPPED", {submit.META_RUN: str(stored), **metadata}), "job-1", dest
        )
        assert fetched == submit.Fetched(dest, [], stored)
    metadata = {submit.META_RUN: "s3://bucket/runs/job-1", submit.META_PLUGINS: "a.b,c"}
    fetched = submit.fetch(_fetch_client("SUCCEEDED", metadata), "job-1", dest)
    assert fetched == submit.Fetched(dest, ["a.b", "c"], None)


def _resume_client(*jobs: tuple[str, str, dict[str, str], dict]):
    """A JobClient over fake jobs of ``(id, status, metadata, runtime_env)``."""
    from types import SimpleNamespace

    from orchestrator import submit

    found = {}
    for job_id, status, metadata, environment in jobs:
        found[job_id] = SimpleNamespace(
            submission_id=job_id, job_id="02000000", status=_Status(status), message="",
            start_time=1_700_000_000_000, end_time=0, metadata=metadata,
            runtime_env=environment, type="SUBMISSION",
        )  # fmt: skip
    client = object.__new__(submit.JobClient)
    client.client, client.address = _FakeRay(found), "http://127.0.0.1:8265"
    return client


def test_what_submit_resume_continues_and_what_it_sends(tmp_path, monkeypatch):
    """``submit --resume`` takes a job id (its run's place read from the job), a URI,
    or a folder; a job that has not ended is refused, one that succeeded has nothing
    to resume; the first job's pip requirements go again, its --plugin modules and
    package files (sent from the machine that submitted it) must be given again."""
    from orchestrator import submit
    from orchestrator.errors import RunInProgress

    run = {submit.META_RUN: "s3://bucket/runs/job-1", submit.META_RECIPE: "wine"}
    env = {"pip": ["graftune-plugin==1.0"]}
    client = _resume_client(
        ("job-1", "STOPPED", {**run, submit.META_PLUGINS: "my_plugin"}, env),
        ("job-2", "RUNNING", run, {}),
        ("job-3", "SUCCEEDED", {submit.META_RUN: "/mnt/nfs/runs/job-3"}, {}),
        ("job-4", "FAILED", {submit.META_RUN: "s3://bucket/runs/job-4"},
         {"pip": {"packages": ["${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}/wheels/p-1.0.whl"]}}),
        ("other", "FAILED", {}, {}),
    )  # fmt: skip
    target = submit.resume_target(client, "job-1")
    assert target == submit.ResumeTarget(
        "s3://bucket/runs/job-1", "job-1", ("my_plugin",), ("graftune-plugin==1.0",), False, "wine"
    )
    assert target.name == "job-1"
    with pytest.raises(submit.SubmitError, match=r"give it again \(--plugin my_plugin\)"):
        submit.resume_requirements(target, pip=[], plugins=[])
    assert submit.resume_requirements(target, pip=[], plugins=["my_plugin"]) == [
        ("graftune-plugin==1.0", None)
    ]
    assert submit.resume_requirements(target, pip=["other==2"], plugins=["my_plugin"]) == [
        ("other==2", None)
    ]
    # job-2 runs the same run (a resume of it still going): two runs in one directory.
    with pytest.raises(RunInProgress, match="job job-2 is RUNNING and runs the run at s3://"):
        submit.check_not_running(client, target)
    with pytest.raises(RunInProgress, match="stop it first"):
        submit.resume_target(client, "job-2")
    assert submit.resume_target(client, "job-3").finished
    wheel = submit.resume_target(client, "job-4")
    with pytest.raises(submit.SubmitError, match=r"installed wheels/p-1\.0\.whl, sent from"):
        submit.resume_requirements(wheel, pip=[], plugins=[])
    with pytest.raises(StorageError, match="not submitted by graftune"):
        submit.resume_target(client, "other")
    # By its place: no job asked, nothing known of its plugins.
    uri = submit.resume_target(None, "s3://bucket/runs/job-1/")
    assert uri == submit.ResumeTarget("s3://bucket/runs/job-1") and uri.name == "job-1"
    monkeypatch.chdir(tmp_path)
    assert submit.resume_target(None, "runs/job-5").location == str(tmp_path / "runs" / "job-5")
    for bad, said in (("ftp://host/runs/x", "unknown storage scheme"), ("s3://bucket/", "root")):
        with pytest.raises(StorageError, match=said):
            submit.resume_target(None, bad)
    assert submit.resume_entrypoint("s3://b/r/job-1", ["my_plugin"], debug=True) == (
        "exec python -m orchestrator.cli --debug run --resume-stored s3://b/r/job-1 "
        "--plugin my_plugin"
    )
    assert submit.resume_job_id("job-1").startswith("graftune-job-1-resume-")
    assert submit.resume_job_id("graftune-x-1").startswith("graftune-x-1-resume-")


def test_submit_resume_of_a_run_nothing_stored_is_refused_before_any_job_is_sent(tmp_path):
    """A job stopped before its run stored anything was resumed as a new job, which
    installed its requirements on the cluster and only then failed (noticed in
    stop 67's review)."""
    from typer.testing import CliRunner

    from orchestrator import submit
    from orchestrator.cli import app
    from orchestrator.storage import STORED_FILE, stored_run_missing

    store = tmp_path / "store"
    (store / "job-2").mkdir(parents=True)
    (store / "job-2" / "output.txt").write_text("what a job left before its run began")
    (store / "job-3").mkdir()
    (store / "job-3" / "recipe.yaml").write_text(BASIC)  # a run's first upload
    (store / "job-4").mkdir()
    (store / "job-4" / STORED_FILE).write_text("{}")
    nothing = "nothing was stored there (a job that failed before its run began stores nothing"
    for place in (store / "job-1", store / "job-2", f"file://{store}/job-1"):
        assert nothing in stored_run_missing(str(place))
    assert stored_run_missing(str(store / "job-3")) is None
    assert stored_run_missing(f"file://{store}/job-4") is None
    # Storage this machine does not see is the job's to judge: a folder only the
    # nodes mount, a URI it cannot read (one it cannot reach takes pyarrow's retries,
    # seconds, to say so).
    assert stored_run_missing(str(tmp_path / "mounted-elsewhere" / "job-1")) is None
    assert stored_run_missing("s3://bucket/runs/job-1?allow_bucket_creation=maybe") is None
    # From the command line: refused before any cluster is asked (none answers here).
    for place in (str(store / "job-1"), f"file://{store}/job-2"):
        result = CliRunner().invoke(
            app, ["submit", "--resume", place, "--address", "http://127.0.0.1:9"]
        )
        assert result.exit_code == 2, result.output
        said = " ".join(result.output.split())
        assert f"error: --resume {place}: there is no run at {place}: {nothing}" in said, said
        assert said.endswith("no job was sent: submit its recipe again")
    # A job's run, where the job says it is stored: the recipe is named.
    client = _resume_client(
        ("job-1", "STOPPED", {submit.META_RUN: str(store / "job-1"), submit.META_RECIPE: "wine"}, {}),
        ("job-3", "FAILED", {submit.META_RUN: str(store / "job-3")}, {}),
    )  # fmt: skip
    with pytest.raises(StorageError, match=r"no job was sent: submit its recipe, wine, again$"):
        submit.check_stored(submit.resume_target(client, "job-1"), "job-1")
    submit.check_stored(submit.resume_target(client, "job-3"), "job-3")  # stored: goes on
    # A run that is stored goes on to the cluster (which is not there).
    result = CliRunner().invoke(
        app, ["submit", "--resume", str(store / "job-3"), "--address", "http://127.0.0.1:9"]
    )
    assert result.exit_code != 0 and "no run at" not in result.output, result.output
    assert "127.0.0.1:9" in result.output, result.output


def test_submit_resume_is_refused_with_a_recipe_or_storage_and_resume_stored_outside_a_job(
    tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    recipe = write_recipe(tmp_path, BASIC)
    for args, said in (
        (["submit"], "give a RECIPE to submit, or --resume JOB"),
        (["submit", str(recipe), "--resume", "job-1"], "not both"),
        (["submit", "--resume", "job-1", "--storage", "s3://b/r"], "--storage with --resume"),
        (["submit", "--resume", "job-1", "--shared-storage"], "a resumed run stays in its"),
        (["run", "--resume-stored", str(tmp_path)], "for a job of graftune submit --resume"),
        (["run", str(recipe), "--resume-stored", str(tmp_path)], "a job's, alone"),
    ):
        monkeypatch.delenv("GRAFTUNE_SUBMITTED", raising=False)
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert said in " ".join(result.output.split()), (args, result.output)


def test_a_resume_job_resumes_a_folder_in_place_and_fetches_a_uris_run(tmp_path, monkeypatch):
    """In the job: a folder-stored run goes on where it is; a URI's is copied into the
    job's working directory (its resume stores it back); on the job's cluster, but a
    keras_tuner run, which trains in the job's own process."""
    from orchestrator.cli import _stored_resume
    from orchestrator.storage import STORED_FILE

    monkeypatch.setenv("GRAFTUNE_SUBMITTED", "1")
    store = tmp_path / "store"
    for name, text in (("job-1", BASIC), ("job-2", BASIC + "search: {backend: keras_tuner}\n")):
        (store / name).mkdir(parents=True)
        (store / name / "recipe.yaml").write_text(text)
    (store / "job-1" / STORED_FILE).write_text(f'{{"stored": "file://{store}/job-1"}}')
    working = tmp_path / "working"
    working.mkdir()
    monkeypatch.chdir(working)
    assert _stored_resume(str(store / "job-1"), None) == (store / "job-1", "auto")
    assert _stored_resume(str(store / "job-2"), None) == (store / "job-2", None)
    assert _stored_resume(f"file://{store}/job-1", None) == (Path("job-1"), "auto")
    assert (working / "job-1" / "recipe.yaml").read_text() == BASIC
    # A file:// URI of a folder-stored run (no record of a URI) is that folder.
    assert _stored_resume(f"file://{store}/job-2", "auto") == (store / "job-2", "auto")


def test_a_stored_run_holding_a_link_is_not_fetched(tmp_path):
    """Found by security QA: fetch followed a link in a run stored in a shared
    folder, so the copy held the fetching user's file as the run's own (which the
    resume's check for links no longer saw), and a link loop recursed until ELOOP."""
    from orchestrator.storage import fetch

    store = tmp_path / "shared" / "job-1"
    (store / "trials").mkdir(parents=True)
    (store / "recipe.yaml").write_text(BASIC)
    secret = tmp_path / "secret.txt"
    secret.write_text("the fetching user's")
    (store / "notes.txt").symlink_to(secret)
    with pytest.raises(StorageError, match=r"notes.txt is a symbolic link.*nothing was copied"):
        fetch(str(store), tmp_path / "dest")
    (store / "notes.txt").unlink()
    (store / "trials" / "loop").symlink_to(store)
    with pytest.raises(StorageError, match="loop is a symbolic link"):
        fetch(str(store), tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    (store / "trials" / "loop").unlink()
    assert (fetch(str(store), tmp_path / "dest") / "recipe.yaml").read_text() == BASIC


def test_a_jobs_log_is_shown_without_its_terminal_escapes():
    """Found by security QA: ``jobs logs`` wrote a job's output raw, whose escape
    sequences set the terminal's title or cleared it; colours are dropped."""
    from orchestrator.cli import _log_text

    raw = "before\x1b]0;TITLE\x07\x1b[2J\x1b[31mRED\x1b[0m after\n\tnext \u202eline\n"
    assert _log_text(raw) == "before\\x1b]0;TITLE\\x07\\x1b[2JRED after\n\tnext \\u202eline\n"
