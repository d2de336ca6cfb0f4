"""Ranking trial results and writing the leaderboard files."""

from __future__ import annotations

import io
import json
import math
import os
import re

import numpy as np
import pandas as pd
import pytest

from orchestrator.leaderboard import (
    atomic_write_text,
    best_row,
    build_leaderboard,
    read_leaderboard,
    replacing,
    to_json,
    to_markdown,
    write_leaderboard,
)
from orchestrator.trial import TrialResult


def result(trial_id, status="ok", val=None, strategy="scratch_mlp", seconds=1.0, **config):
    return TrialResult(
        strategy=strategy,
        trial_id=trial_id,
        status=status,
        config=config,
        val_accuracy=val,
        val_loss=None if val is None else 1 - val,
        test_accuracy=val,
        epochs=3,
        fit_seconds=seconds,
        params_total=100,
        params_trainable=50,
        error="RuntimeError: x" if status == "error" else None,
    )


RESULTS = [
    result("a", val=0.5, width=32, learning_rate=0.01),
    result("b", val=0.9, width=64, learning_rate=0.001),
    result("c", status="error", width=16, learning_rate=0.1),
    result("d", status="pruned", val=0.7, width=128, learning_rate=0.003),
    result("e", val=0.9, seconds=0.5, strategy="fine_tune", frozen_layers=2, head_width=64),
    result("f", status="diverged", width=8, learning_rate=10.0),
]


def test_a_parameter_named_like_the_rankings_helper_keeps_its_column():
    """Found by QA: a strategy's parameter "_strategy" was dropped from the leaderboard
    (the ranking's own helper column of that name took its place, then was removed)."""
    results = [
        result("a", val=0.5, _strategy=7),
        result("b", val=0.9, strategy="fine_tune", _strategy=3),
        result("c", status="error", _strategy=5),
    ]
    frame = build_leaderboard(results, metric="val_accuracy", mode="max")
    assert list(frame["trial_id"]) == ["b", "a", "c"]
    assert list(frame["_strategy"]) == [3, 7, 5]
    assert list(frame["rank"][:2]) == [1, 2] and frame["rank"][2:].isna().all()


def test_ranked_by_metric_with_failures_last():
    frame = build_leaderboard(RESULTS, metric="val_accuracy", mode="max")
    # b and e tie: same size and epochs, so the recipe's first strategy's (not the faster).
    assert list(frame["trial_id"]) == ["b", "e", "d", "a", "c", "f"]
    assert list(frame["rank"][:4]) == [1, 2, 3, 4]
    assert frame["rank"][4:].isna().all()


def test_min_mode_ranks_small_first():
    frame = build_leaderboard(RESULTS, metric="val_loss", mode="min")
    assert list(frame["trial_id"][:4]) == ["b", "e", "d", "a"]


def test_ties_go_to_the_smaller_model_then_fewer_epochs_never_to_wall_time():
    import dataclasses

    tied = [
        dataclasses.replace(result("big", val=0.9, seconds=0.1), params_total=500),
        dataclasses.replace(result("long", val=0.9, seconds=0.2), epochs=9),
        result("late", val=0.9, seconds=9.0),
        result("early", val=0.9, seconds=5.0, strategy="fine_tune"),
    ]
    frame = build_leaderboard(tied, metric="val_accuracy", mode="max")
    assert list(frame["trial_id"]) == ["late", "early", "long", "big"]
    again = build_leaderboard(tied[::-1], metric="val_accuracy", mode="max")
    assert list(again["trial_id"]) == ["early", "late", "long", "big"]  # the recipe's order


def test_columns_and_types():
    frame = build_leaderboard(RESULTS, metric="val_accuracy", mode="max")
    assert list(frame.columns[:4]) == ["rank", "strategy", "trial_id", "status"]
    assert frame.columns.get_loc("frozen_layers") < frame.columns.get_loc("learning_rate")
    assert frame["width"].dtype == "Int64"
    assert frame["epochs"].dtype == "Int64"
    assert pd.isna(frame.set_index("trial_id").loc["e", "width"])


def test_best_row_skips_pruned_trials():
    results = [result("p", status="pruned", val=0.99), result("q", val=0.8)]
    frame = build_leaderboard(results, metric="val_accuracy", mode="max")
    assert frame.iloc[0]["trial_id"] == "p"
    assert best_row(frame)["trial_id"] == "q"


def test_no_successful_trial_has_no_best():
    frame = build_leaderboard([result("c", status="error")], metric="val_accuracy", mode="max")
    assert best_row(frame) is None


def test_files_round_trip(tmp_path):
    frame = build_leaderboard(RESULTS, metric="val_accuracy", mode="max")
    paths = write_leaderboard(frame, tmp_path)
    assert sorted(p.name for p in paths.values()) == [
        "leaderboard.csv",
        "leaderboard.html",
        "leaderboard.md",
    ]
    back = read_leaderboard(tmp_path)
    assert list(back["trial_id"]) == list(frame["trial_id"])
    assert back["rank"].dtype == "Int64"
    assert math.isclose(back.loc[0, "val_accuracy"], 0.9)
    assert not list(tmp_path.glob(".*tmp")), "temporary files must not be left behind"
    markdown = (tmp_path / "leaderboard.md").read_text()
    assert markdown.splitlines()[0].startswith("|   rank")
    assert "RuntimeError: x" in markdown
    assert "<table" in (tmp_path / "leaderboard.html").read_text()


def test_an_error_longer_than_the_csv_modules_field_limit_reads_back(tmp_path):
    """Found by QA: a run made before errors were cut kept one of 140,000 characters,
    and reading its leaderboard back raised _csv.Error (field larger than field limit)."""
    import csv

    failed = result("c", status="error")
    failed.error = "RuntimeError: " + "x" * 140_000
    frame = build_leaderboard([*RESULTS, failed], metric="val_accuracy", mode="max")
    write_leaderboard(frame, tmp_path)
    limit = csv.field_size_limit()
    back = read_leaderboard(tmp_path)
    assert back["error"].str.len().max() == 140_014
    assert csv.field_size_limit() == limit  # the process's limit is put back


def test_parameters_graftune_does_not_know_follow_its_own_alphabetically():
    """A plugin's own parameters come after graftune's, in the order of their names,
    whatever order its trials' configurations hold them in: the leaderboard's columns
    are the same from one run (or resume) to the next (found by mutation testing: set
    order, which string hashing changes from one process to the next, passed)."""
    from orchestrator.leaderboard import parameter_columns

    results = [
        result("a", val=0.9, zeta=1, mid=2, kappa=3, beta=4),
        result(
            "b", val=0.8, alpha=3, omega=1, delta=2, gamma=3, learning_rate=0.1, **{"lambda": 0.5}
        ),
    ]
    mine = ["alpha", "beta", "delta", "gamma", "kappa", "mid", "omega", "zeta"]
    expected = ["lambda", "learning_rate", *mine]  # 8! orders of them: none by chance
    assert parameter_columns(results) == expected
    columns = list(build_leaderboard(results, metric="val_accuracy", mode="max").columns)
    assert [c for c in columns if c in expected] == expected


def test_parameters_keep_their_types_when_read_back(tmp_path):
    # Two strategies: each one's parameters are missing in the other's rows.
    results = [
        result("a", val=0.9, width=64, learning_rate=0.001, two_phase=True, offset=-2),
        result("b", val=0.8, strategy="fine_tune", head_width=128, frozen_layers=0, lam=1.0),
    ]
    frame = build_leaderboard(results, metric="val_accuracy", mode="max")
    write_leaderboard(frame, tmp_path)

    back = read_leaderboard(tmp_path)

    # A negative whole number too (found by mutation testing: unchecked).
    for column in ("width", "head_width", "frozen_layers", "offset"):
        assert back[column].dtype == "Int64", column
    assert back.loc[back["trial_id"] == "b", "frozen_layers"].iloc[0] == 0
    assert back.loc[back["trial_id"] == "a", "offset"].iloc[0] == -2
    assert back["learning_rate"].dtype == "float64"
    assert back["lam"].dtype == "float64"  # 1.0 is a float, though whole
    assert back.loc[back["trial_id"] == "a", "two_phase"].iloc[0] is True


def test_a_leaderboard_read_back_is_the_one_the_run_returned(tmp_path):
    """README: ``read_leaderboard(run_dir)`` is ``outcome.leaderboard`` read back later.
    Integer parameters read back as int64 (Int64 built), empty text columns as
    float NaN (None built)."""
    import dataclasses

    from orchestrator.errors import RunDirError

    runs = {
        "one strategy": [
            result("a", val=0.5, width=32, learning_rate=0.01, reg="l2", two_phase=True),
            result("b", val=0.1 / 3, width=64, learning_rate=0.001, reg="l1", two_phase=False),
        ],
        "each its own": [
            result("a", val=0.5, width=32, learning_rate=0.01, reg="l2", tag=None),
            dataclasses.replace(
                result("b", status="error", strategy="ft", head_width=3),
                node="10.0.0.2/ab12cd34",
                note="retried",
                peak_memory_mb=3.5,
            ),
        ],
        "no trial": [],
    }
    for name, results in runs.items():
        built = build_leaderboard(results, metric="val_accuracy", mode="max")
        (tmp_path / name).mkdir()
        write_leaderboard(built, tmp_path / name)
        back = read_leaderboard(tmp_path / name)
        assert back.dtypes.to_dict() == built.dtypes.to_dict(), name
        assert back.equals(built), name
        for column in ("node", "error", "note"):  # missing text is None in both
            assert all(v is None or isinstance(v, str) for v in back[column]), (name, column)
    assert back.empty and back["rank"].dtype == "Int64"
    # A folder that has no leaderboard: the error graftune leaderboard prints, raised.
    with pytest.raises(RunDirError, match=r"^\S*nope does not exist$"):
        read_leaderboard(tmp_path / "nope")
    with pytest.raises(RunDirError, match=r"has no leaderboard\.csv"):
        read_leaderboard(tmp_path)


def test_markdown_leaves_missing_values_blank():
    frame = build_leaderboard([result("c", status="error")], metric="val_accuracy", mode="max")
    text = to_markdown(frame)
    assert "nan" not in text.lower()
    assert "<NA>" not in text


def test_the_printed_table_shows_nodes_only_for_a_run_over_several_machines(tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    def table(nodes):
        results = [result(f"t{i}", val=0.5 + i / 10, width=8) for i in range(len(nodes))]
        for trial, node in zip(results, nodes, strict=True):
            trial.node = node
        write_leaderboard(build_leaderboard(results, metric="val_accuracy", mode="max"), tmp_path)
        outcome = CliRunner().invoke(app, ["leaderboard", str(tmp_path)])
        assert outcome.exit_code == 0, outcome.output
        return outcome.output.splitlines()[0].split()

    # Resumed on one machine: a new Ray node there, nothing to show.
    assert "node" not in table(["10.0.0.1/aaaaaaaa", "10.0.0.1/bbbbbbbb", None])
    assert "node" in table(["10.0.0.1/aaaaaaaa", "10.0.0.2/cccccccc", None])
    # No Ray at all (the keras-tuner backend): the column reads back as numbers.
    assert "node" not in table([None, None])


def test_replacing_moves_the_whole_file_in_and_clears_a_killed_writers_leftovers(tmp_path):
    target = tmp_path / "model.keras"
    target.write_text("old")
    (tmp_path / "model.99999.tmp.keras").write_text("half")  # a writer killed midway
    (tmp_path / "other.99999.tmp.keras").write_text("not ours")

    with replacing(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # readers see the old file until the move

    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "other.99999.tmp.keras"]


def test_replacing_leaves_the_file_as_it_was_when_the_writer_fails(tmp_path):
    target = tmp_path / "model.keras"
    target.write_text("old")

    with pytest.raises(RuntimeError, match="disk full"), replacing(target) as tmp:
        tmp.write_text("ha")
        raise RuntimeError("disk full")

    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_a_link_stays_a_link_and_a_fifo_is_written_into(tmp_path):
    """Found by QA: ``--out link.csv --force`` made the link a file (the target kept
    its old text), and ``--out fifo --force`` put a file where the FIFO was, its reader
    left waiting for ever."""
    import os
    import threading

    target = tmp_path / "target.csv"
    target.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    with replacing(link) as tmp:
        tmp.write_text("newer")
    assert link.is_symlink() and target.read_text() == "newer"

    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    for write in (
        lambda: atomic_write_text(fifo, "through"),
        lambda: replacing_write(fifo, "through"),
    ):
        got: list[str] = []
        reader = threading.Thread(target=lambda got=got: got.append(fifo.read_text()), daemon=True)
        reader.start()
        write()
        reader.join(timeout=30)
        assert got == ["through"] and fifo.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.csv", "link.csv", "target.csv"]
    # /dev/stdout on a pipe: its link leads to no path ("/proc/PID/fd/pipe:[...]").
    import subprocess
    import sys

    code = (
        "from orchestrator.leaderboard import atomic_write_text, replacing\n"
        "atomic_write_text('/dev/stdout', 'a\\n')\n"
        "with replacing('/dev/stdout') as tmp:\n    tmp.write_text('b\\n')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "a\nb\n"), done.stderr


def replacing_write(path, text):
    with replacing(path) as tmp:
        tmp.write_text(text)


def test_atomic_write_text_that_cannot_move_its_file_leaves_no_temporary_file(tmp_path):
    folder = tmp_path / "taken"
    folder.mkdir()  # os.replace cannot put a file over a folder

    with pytest.raises(OSError):
        atomic_write_text(folder, "text")

    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_commands_on_a_run_killed_before_ranking_say_how_to_rank_it(tmp_path):
    """It said "has no leaderboard.csv (is it a graftune run directory?)" or, from
    predict and export, "no trial finished", with two trials ended in it."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    run_dir = tmp_path / "killed"
    (run_dir / "trials" / "scratch_mlp" / "t1").mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text("name: killed\n")
    for args in (
        ["leaderboard", str(run_dir)],
        ["report", str(run_dir)],
        ["predict", str(run_dir), "--data", "sklearn:digits"],
        ["export", str(run_dir), str(tmp_path / "out")],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert f"the run in {run_dir} stopped before it ranked its trials" in result.output
        assert f"graftune run --resume {run_dir} ranks the trials that ended" in result.output
    (tmp_path / "empty").mkdir()
    not_a_run = CliRunner().invoke(app, ["leaderboard", str(tmp_path / "empty")])
    assert "has no leaderboard.csv (is it a graftune run directory?)" in not_a_run.output
    # The folder above it, where runs are written, names it (found by QA).
    above = CliRunner().invoke(app, ["leaderboard", str(tmp_path)])
    assert f"{tmp_path} holds a run directory, and is none: name one, as {run_dir}\n" in (
        above.output
    )


def test_commands_on_a_run_still_going_say_so(tmp_path):
    """They said the run stopped (killed?) and to resume it, which was refused: the
    run was in use."""
    from typer.testing import CliRunner

    from orchestrator.cli import app
    from orchestrator.run import holding_run_dir

    run_dir = tmp_path / "going"
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text("name: going\n")
    commands = (
        ["leaderboard", str(run_dir)],
        ["report", str(run_dir)],
        ["predict", str(run_dir), "--data", "sklearn:digits"],
        ["export", str(run_dir), str(tmp_path / "out")],
    )
    with holding_run_dir(run_dir):  # as a run does, before its first trial and after
        for has_trials in (False, True):
            if has_trials:
                (run_dir / "trials" / "scratch_mlp" / "t1").mkdir(parents=True)
            for args in commands:
                result = CliRunner().invoke(app, args)
                assert result.exit_code == 2, (args, result.output)
                assert result.output.startswith(
                    f"error: the run in {run_dir} is still in progress (pid {os.getpid()} on "
                ), (args, result.output)
                assert "--resume" not in result.output
    result = CliRunner().invoke(app, commands[0])  # the run has gone: killed, say so
    assert f"the run in {run_dir} stopped before it ranked its trials" in result.output


def test_the_printed_table_keeps_huge_and_tiny_numbers_short():
    from orchestrator.cli import _fmt

    assert _fmt(1e38, 3) == "1.00e+38"  # was 39 digits and ".000"
    assert _fmt(2.5e-5, 3) == "2.50e-05"
    assert _fmt(0.91784, 4) == "0.9178"
    assert _fmt(128.0, 3) == "128.000"
    assert _fmt(0.0) == "0.0000"


def test_markdown_and_html_keep_an_error_in_its_cell(tmp_path):
    failed = result("x", status="error")
    failed.error = "ValueError: bad | pipe\nsecond line <b>bold</b> & more *star* _em_ ~~s~~"
    frame = build_leaderboard([failed, result("y", val=0.5)], metric="val_accuracy", mode="max")
    lines = to_markdown(frame).splitlines()
    assert len(lines) == 4  # header, rule, two rows: the newline did not split the row
    assert lines[0].count("|") == lines[-1].count("|") - 1  # one escaped pipe more, no column
    assert (
        r"bad \| pipe second line &lt;b&gt;bold&lt;/b&gt; &amp; more \*star\* \_em\_ \~\~s\~\~"
        in lines[-1]
    )
    write_leaderboard(frame, tmp_path)
    page = (tmp_path / "leaderboard.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert "second line &lt;b&gt;bold&lt;/b&gt;" in page and "\\n" not in page
    assert read_leaderboard(tmp_path).loc[1, "error"] == failed.error  # the CSV keeps it whole


def test_text_from_trials_keeps_every_table_on_one_line_a_row(tmp_path):
    """A plugin's text dimension with a newline split its row in leaderboard.md and
    the printed table; an error holding ``[/tmp/x]`` was read as rich's markup (a
    closing tag) and ended `graftune leaderboard` (and the run's last print) in a
    traceback."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    failed = result("x", status="error", tag="line1\nline2")
    failed.error = "FileNotFoundError: [/tmp/x] [bold]not bold[/bold]"
    frame = build_leaderboard(
        [failed, result("y", val=0.5, tag="safe")], metric="val_accuracy", mode="max"
    )
    assert len(to_markdown(frame).splitlines()) == 4  # header, rule, two rows
    write_leaderboard(frame, tmp_path)
    shown = CliRunner().invoke(app, ["leaderboard", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "[/tmp/x] [bold]not bold[/bold]" in shown.output
    (row,) = [line for line in shown.output.splitlines() if "FileNotFoundError" in line]
    assert "line1 line2" in row
    assert read_leaderboard(tmp_path).loc[1, "tag"] == "line1\nline2"  # the CSV keeps it whole


def test_an_errors_terminal_escapes_and_markdown_links_are_shown_as_text(tmp_path):
    """Found by security QA: a strategy's error with a terminal's escape sequences
    (set the window's title, clear the screen, fake a line) reached the terminal
    raw in the run's lines and `graftune leaderboard`; a Markdown link or image
    in it was live in leaderboard.md (an image is fetched when the file is shown)."""
    from typer.testing import CliRunner

    from orchestrator.cli import app
    from orchestrator.run import _trial_line

    failed = result("x", status="error")
    failed.error = (
        "ValueError: \x1b]0;TITLE\x07\x1b[2Jfake ![img](http://e.example/t.png) [a](b) "
        "\u202etxt.exe"  # shown as "exe.txt" (found by security QA: bidi controls raw)
    )
    frame = build_leaderboard([failed, result("y", val=0.5)], metric="val_accuracy", mode="max")
    write_leaderboard(frame, tmp_path)
    shown = CliRunner().invoke(app, ["leaderboard", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    markdown = to_markdown(frame)
    html = (tmp_path / "leaderboard.html").read_text()
    for text in (shown.output, _trial_line(failed, "val_accuracy"), markdown, html):
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert r"\u202etxt.exe" in _trial_line(failed, "val_accuracy")
    assert r"\u202etxt.exe" in markdown and r"\u202etxt.exe" in html
    assert r"\x1b]0;TITLE\x07\x1b[2Jfake" in _trial_line(failed, "val_accuracy")
    assert r"\x1b]0;TITLE\x07\x1b[2Jfake" in " ".join(shown.output.split())
    assert r"!\[img](http://e.example/t.png) \[a](b)" in markdown
    # And in a column's name, a plugin's dimension (found by security QA: raw HTML).
    named = to_markdown(frame.rename(columns={"error": "<img src=x onerror=alert(1)>"}))
    assert "<img" not in named and "&lt;img src=x onerror=alert(1)&gt;" in named
    assert read_leaderboard(tmp_path).loc[1, "error"] == failed.error  # the CSV keeps it whole
    # C1 controls as well: U+009B is a one-character CSI to terminals that take 8-bit
    # controls, U+0085 a line break (found by mutation testing: unchecked).
    from orchestrator.errors import printable

    assert printable("a\x9b2Jb\x85c\x7fd\u00a0e\n\t") == "a\\x9b2Jb\\x85c\\x7fd\u00a0e\n\t"


def test_the_pre_flights_warning_shows_a_build_error_as_the_trials_lines_do(tmp_path, caplog):
    """Found by QA: the pre-flight's "raised in build()" warning printed a strategy's
    error raw (a terminal's escapes, bidi controls), the trial's line below it escaped."""
    import logging

    from orchestrator import Strategy, run_recipe
    from orchestrator.space import Fixed
    from tests.broken_strategies import Registers
    from tests.search_helpers import write_recipe

    class HostileBuild(Strategy):
        name = "hostile_build"
        description = "raises a hostile error"

        def search_space(self, context):
            return {"width": Fixed(8), "learning_rate": Fixed(0.01)}

        def build(self, config, task, base):
            raise RuntimeError("\x1b]0;TITLE\x07 \u202etxt.exe\nsecond line")

    recipe = write_recipe(
        tmp_path, "{backend: keras_tuner, num_samples: 1, max_epochs: 1}", "hostile_build: {}"
    )
    with caplog.at_level(logging.WARNING), pytest.raises(Exception, match="every trial failed"):
        run_recipe(recipe, plugins=[Registers(HostileBuild)])
    (said,) = [r.getMessage() for r in caplog.records if "raised in build()" in r.getMessage()]
    assert said.endswith(r"RuntimeError: \x1b]0;TITLE\x07 \u202etxt.exe second line"), said


def test_the_consoles_print_a_name_between_colons_as_it_is():
    """Found by QA: a plugin's data source `bad:cat` was said as `data: bad🐱 36 train`
    and `noseedrandom:x` as `noseedrandom❌` (rich's emoji codes), on a run's lines,
    its warnings and the live view alike."""
    from orchestrator.cli import _Console, err, out

    for console in (out, err, _Console(width=80)):
        with console.capture() as captured:
            console.print("data: bad:cat: 36 train; noseedrandom:x: 36", markup=False)
        assert captured.get() == "data: bad:cat: 36 train; noseedrandom:x: 36\n"


def test_the_printed_table_says_where_it_cut_an_error_short(tmp_path):
    """Found by QA: `graftune leaderboard RUN | cat` cut an error at 60 characters
    with nothing to say the message went on."""
    import subprocess
    import sys
    from pathlib import Path

    from typer.testing import CliRunner

    from orchestrator.cli import app

    failed = result("x", status="error")
    failed.error = "ValueError: " + " ".join(f"word{i}" for i in range(30))
    short = result("z", status="error")  # 60 characters: whole, no ellipsis
    short.error = "RuntimeError: " + "y" * 46
    frame = build_leaderboard(
        [failed, short, result("y", val=0.5)], metric="val_accuracy", mode="max"
    )
    write_leaderboard(frame, tmp_path)
    shown = CliRunner().invoke(app, ["leaderboard", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert failed.error[:59] + "…" in shown.output, shown.output
    assert failed.error[:60] not in shown.output
    # Whole at the end of its line (piped, no padding after a row's last cell).
    assert short.error + "\n" in shown.output and short.error + "…" not in shown.output
    # A cell's text as it is: no :name: made an emoji, no [markup] taken.
    short.error = "KeyError: ':smile: [bold]'"
    (tmp_path / "as-is").mkdir()
    write_leaderboard(
        build_leaderboard([short], metric="val_accuracy", mode="max"), tmp_path / "as-is"
    )
    shown = CliRunner().invoke(app, ["leaderboard", str(tmp_path / "as-is")])
    assert short.error + "\n" in shown.output, shown.output
    # A console that cannot show "…" (it would be escaped as \u2026) gets "...".
    graftune = str(Path(sys.executable).with_name("graftune"))
    done = subprocess.run(
        [graftune, "leaderboard", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONIOENCODING": "ascii"},
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert failed.error[:57] + "..." in done.stdout, done.stdout
    assert "\\u2026" not in done.stdout


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda text: text.replace(",", ";"), "is not comma-separated"),
        (lambda text: text[:40], "has no column 'val_accuracy', 'test_accuracy'"),
        (lambda text: "", "is empty"),
        # Found by QA: cut inside a row, or inside the header past the columns checked
        # above, it read as a leaderboard with a trial's scores missing.
        (lambda text: text[: text.index("\n", text.index("\n") + 1) + 30], "is cut short (its"),
        (lambda text: text[: text.index("\n") - 3], "is cut short (its last line has no end)"),
        (
            lambda text: re.sub(r"^(1,.*),[^,\n]*$", r"\1", text, count=1, flags=re.M),
            "is cut short or edited: its row 1 has",
        ),
        (
            lambda text: text + "x,y,z,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22\n",
            "cannot be read as CSV",
        ),
        (
            lambda text: text.replace("\n1,", "\nfirst,", 1),
            "has other than whole numbers in its column 'rank'",
        ),
        (  # it was "internal error: ValueError" from report, a traceback from a comparison
            lambda text: re.sub(
                r"^(1,[^,]*,[^,]*,[^,]*,)[^,]*", r"\1abc", text, count=1, flags=re.M
            ),
            "has other than numbers in its column 'val_accuracy'",
        ),
    ],
)
def test_an_edited_or_damaged_leaderboard_is_one_line_naming_the_file(tmp_path, damage, problem):
    """`graftune leaderboard` ended in a traceback (KeyError: 'error', EmptyDataError)."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    frame = build_leaderboard(RESULTS, metric="val_accuracy", mode="max")
    write_leaderboard(frame, tmp_path)
    csv = tmp_path / "leaderboard.csv"
    csv.write_text(damage(csv.read_text()))
    (tmp_path / "recipe.yaml").write_text("name: edited\n")
    for finished, fix in ((False, "graftune run --resume"), (True, "restore it from a copy")):
        if finished:
            (tmp_path / "finished.json").write_text("{}")
        for command in ("leaderboard", "report"):
            result = CliRunner().invoke(app, [command, str(tmp_path)])
            assert result.exit_code == 2, result.output
            (line,) = result.output.splitlines()
            assert line.startswith(f"error: {csv} {problem}") and fix in line, line


def test_a_finished_runs_leaderboard_short_of_its_rows_is_refused(tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    frame = build_leaderboard(RESULTS, metric="val_accuracy", mode="max")
    write_leaderboard(frame, tmp_path)
    (tmp_path / "finished.json").write_text(json.dumps({"trials": len(frame)}))
    assert CliRunner().invoke(app, ["leaderboard", str(tmp_path)]).exit_code == 0
    csv = tmp_path / "leaderboard.csv"
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(lines[:-1]))  # cut at a line's end: every row it has is whole
    result = CliRunner().invoke(app, ["leaderboard", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert (
        f"{csv} is cut short or edited: it has {len(frame) - 1} rows, and its run ended with "
        f"{len(frame)} trials; "
    ) in " ".join(result.output.split())


def test_an_empty_leaderboard_is_said_to_list_no_trial(tmp_path):
    """Found by QA: a run whose time budget ran out before any trial ended showed
    a bare header row, and nothing said why."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    frame = build_leaderboard(RESULTS, metric="val_accuracy", mode="max")
    write_leaderboard(frame.iloc[:0], tmp_path)
    for fmt in ("table", "csv"):
        result = CliRunner().invoke(app, ["leaderboard", str(tmp_path), "-f", fmt])
        assert result.exit_code == 0, result.output
        assert f"note: {tmp_path}'s leaderboard lists no trial: none ended in it" in (
            " ".join(result.stderr.split())
        )
        assert "note:" not in result.stdout


def test_a_leaderboard_without_its_error_column_is_still_shown(tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    frame = build_leaderboard(RESULTS, metric="val_accuracy", mode="max")
    frame.drop(columns="error").to_csv(tmp_path / "leaderboard.csv", index=False)
    result = CliRunner().invoke(app, ["leaderboard", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "fine_tune" in result.output


@pytest.mark.parametrize("width", [100, 80, 40])
def test_a_narrow_terminal_keeps_the_key_columns_whole_and_drops_the_rest(
    tmp_path, monkeypatch, width
):
    """At 80 columns every cell was ellipsized (`87f2…` for every trial id, `0.…` for
    the scores); at 40 every cell was `…`."""
    from io import StringIO

    from rich.console import Console
    from typer.testing import CliRunner

    from orchestrator import cli

    rows = [
        result(f"87f2{i}_0000{i}", val=0.9 - i / 100, frozen_layers=i, head_width=64, lambda_=1e-4)
        for i in range(4)
    ]
    rows.append(result("87f29_00009", status="error", width=32, learning_rate=1e30))
    frame = build_leaderboard(rows, metric="val_accuracy", mode="max")
    write_leaderboard(frame, tmp_path)
    piped = CliRunner().invoke(cli.app, ["leaderboard", str(tmp_path)])
    assert "…" not in piped.output and "more column" not in piped.output
    assert all(c in piped.output for c in ("learning_rate", "fit_seconds", "RuntimeError: x"))
    screen = StringIO()
    terminal = Console(  # as cli.out on a terminal of that width
        file=screen, width=width, force_terminal=True, color_system=None, soft_wrap=True
    )
    monkeypatch.setattr(cli, "out", terminal)
    shown = CliRunner().invoke(cli.app, ["leaderboard", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    text = screen.getvalue()
    assert "…" not in text, text
    lines = text.splitlines()
    key = ["rank", "strategy", "trial_id", "status", "val_accuracy", "test_accuracy"]
    # Then the others in their order while they fit whole (frozen_layers: 15 columns).
    assert lines[0].split() == key + (["frozen_layers", "head_width"] if width == 100 else [])
    for i in range(4):
        assert f"{i + 1}     scratch_mlp  87f2{i}_0000{i}  ok      {0.9 - i / 100:.4f}" in text
    assert "87f29_00009  error" in text
    note = lines[-1]
    assert note.startswith("(") and "more columns on a wider terminal: " in note
    assert "learning_rate" in note and "epochs" in note and "fit_seconds" in note
    assert f"{tmp_path / 'leaderboard.md'} or graftune leaderboard {tmp_path} --format md" in note


def test_an_error_cut_to_the_terminals_width_is_said_to_be_cut(tmp_path, monkeypatch):
    """Found by QA: "RuntimeError: del…", and no line said it was cut or where it is whole."""
    from io import StringIO

    from rich.console import Console
    from typer.testing import CliRunner

    from orchestrator import cli

    rows = [result("a_00000", val=0.9), result("a_00001", status="error")]
    rows[1].error = "RuntimeError: " + "deliberate failure " * 5
    frame = build_leaderboard(rows, metric="val_accuracy", mode="max")
    write_leaderboard(frame, tmp_path)
    piped = CliRunner().invoke(cli.app, ["leaderboard", str(tmp_path)]).output
    width = max(map(len, piped.splitlines())) - 25  # every column but the error's whole
    screen = StringIO()
    terminal = Console(
        file=screen, width=width, force_terminal=True, color_system=None, soft_wrap=True
    )
    monkeypatch.setattr(cli, "out", terminal)
    assert CliRunner().invoke(cli.app, ["leaderboard", str(tmp_path)]).exit_code == 0
    lines = screen.getvalue().splitlines()
    assert "RuntimeError: deliberate" in lines[2] and lines[2].rstrip().endswith("…")
    assert re.fullmatch(
        r"\(errors cut to \d+ characters, longer on a wider terminal; errors whole: "
        + re.escape(f"{tmp_path / 'leaderboard.md'} or graftune leaderboard {tmp_path}")
        + r" --format md\)",
        lines[-1],
    ), lines[-1]


def test_a_file_of_a_long_legal_name_is_written_through_a_short_temporary_one(tmp_path):
    """Found by QA: a 254-byte name, legal, failed with "File name too long": the
    temporary name added its dot, process id and suffix."""
    from orchestrator.leaderboard import atomic_write_text, replacing

    for name in ("p" * 250 + ".csv", "é" * 125 + ".csv"):
        path = tmp_path / name
        atomic_write_text(path, "a,b\n")
        assert path.read_text() == "a,b\n"
        with replacing(path) as tmp:
            tmp.write_text("c,d\n")
        assert path.read_text() == "c,d\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["p" * 250 + ".csv", "é" * 125 + ".csv"]
    )


def test_json_keeps_every_digit_the_csv_has(tmp_path):
    """Found by QA: `graftune leaderboard RUN -f json` gave "lambda": 1.1999e-05 where
    the CSV has 1.1999049779393521e-05 (pandas' to_json rounds to 10 decimal places)."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    results = [
        result("a", val=0.1 / 3, width=32, lam=1.1999049779393521e-05, tag="x"),
        result("b", status="error", width=64, lam=2.5e-300, tag=None),
    ]
    write_leaderboard(build_leaderboard(results, metric="val_accuracy", mode="max"), tmp_path)
    shown = {
        form: CliRunner().invoke(app, ["leaderboard", str(tmp_path), "-f", form])
        for form in ("json", "csv")
    }
    assert all(r.exit_code == 0 for r in shown.values()), shown
    rows = json.loads(shown["json"].stdout)
    assert rows[0]["lam"] == 1.1999049779393521e-05 and rows[1]["lam"] == 2.5e-300
    assert rows[0]["val_accuracy"] == 0.1 / 3 and rows[1]["val_accuracy"] is None
    pd.testing.assert_frame_equal(
        pd.DataFrame(rows),
        pd.read_csv(io.StringIO(shown["csv"].stdout)),
        check_dtype=False,
        check_exact=True,
    )
    # predict's float32 probabilities, as its CSV writes them (1.9e-27 was 0.0).
    probabilities = pd.DataFrame({"p": np.array([1.9222266e-27, 0.1, np.nan], np.float32)})
    assert [row["p"] for row in json.loads(to_json(probabilities))] == [1.9222266e-27, 0.1, None]


def test_files_written_whole_are_on_the_disk_before_their_name(tmp_path, monkeypatch):
    """Found by QA: no fsync before the rename, so a power loss (not a kill) could
    leave result.json or leaderboard.csv named but empty, and a resume lose it."""
    from orchestrator import leaderboard as module
    from orchestrator.trial import write_result

    events: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def spy_fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def spy_replace(src: str, dst: str) -> None:
        events.append(("replace", str(src)))
        replace(src, dst)

    monkeypatch.setattr(module.os, "fsync", spy_fsync)
    monkeypatch.setattr(module.os, "replace", spy_replace)

    def written(write) -> None:
        events.clear()
        write()
        ((_, synced_file), (_, renamed), (_, synced_folder)) = events
        assert synced_file == renamed, events  # the new file's bytes, then its name
        assert synced_folder == str(tmp_path), events

    written(lambda: module.atomic_write_text(tmp_path / "a.csv", "a\n"))
    written(lambda: write_result(tmp_path, TrialResult("s", "t", "ok", {})))

    def through_replacing() -> None:
        with module.replacing(tmp_path / "m.keras") as tmp:
            tmp.write_bytes(b"model")

    written(through_replacing)
