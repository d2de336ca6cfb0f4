"""report.html of a real finished run, opened in headless Chromium; comparisons; charts."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.report import (
    REPORT_FILE,
    pareto_front,
    save_bar_chart,
    save_line_chart,
    write_report,
    write_report_safely,
)

#: One plot per parameter in report.PARAMETER_PLOTS, plus by-strategy, curves and Pareto.
ALL_PLOTS = 7
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def finished(e2e_run):
    """The session's real run (tests/conftest.py): five strategies, 8 trials, two failed."""
    return e2e_run.outcome.run_dir


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Run headless Chromium offline with a throw-away profile."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)")
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        # Lets the load event (after every image has decoded) run before the dump.
        "--virtual-time-budget=10000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def rendered(page: Path, tmp_path: Path) -> tuple[dict[str, str], str]:
    """The <body> attributes the page's script set on load, and the rendered DOM."""
    dom = chromium("--dump-dom", page.resolve().as_uri(), profile=tmp_path / "profile").stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:500]
    return dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1))), dom


def test_every_run_writes_a_report_and_says_how_to_open_tensorboard(finished, wine_run):
    assert (finished / REPORT_FILE).is_file()
    run_dir, output = wine_run.run_dir, wine_run.output
    assert (run_dir / REPORT_FILE).is_file()
    assert f"report: {run_dir.resolve() / REPORT_FILE}" in output
    assert f"tensorboard --logdir {run_dir.resolve() / 'trials'}" in output


def test_the_report_renders_in_chromium_with_every_row_and_plot(finished, tmp_path):
    run_dir = finished
    frame = pd.read_csv(run_dir / "leaderboard.csv")
    attributes, dom = rendered(run_dir / REPORT_FILE, tmp_path)
    assert attributes["data-ready"] == "1"
    assert int(attributes["data-rows"]) == len(frame) == 8
    assert int(attributes["data-images"]) == ALL_PLOTS
    assert attributes["data-images-loaded"] == attributes["data-images"]
    table = dom[dom.index('<table id="leaderboard"') : dom.index("</table>")]
    for trial_id in frame["trial_id"]:
        assert table.count(f">{trial_id}<") == 1
    assert "tiny-e2e" in dom and "frozen_layers" in dom


def test_the_report_is_self_contained(finished):
    text = (finished / REPORT_FILE).read_text()
    assert not re.search(r"https?://", text)
    assert "<link" not in text and "<script src" not in text
    sources = re.findall(r"src='([^']*)'", text)
    assert len(sources) == ALL_PLOTS
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    # The recipe is shown.
    assert "sklearn:digits" in text and "num_samples: 2" in text
    # The best trial's line says its test score, and its row alone is marked (found by
    # mutation testing: neither was checked).
    from orchestrator.report import _number

    frame = pd.read_csv(finished / "leaderboard.csv")
    best = frame[frame["status"] == "ok"].iloc[0]
    said = re.search(r"<dt>best</dt><dd>(.*?)</dd>", text).group(1)
    assert said == (
        f"{best.strategy} trial {best.trial_id}: val_accuracy {_number(best.val_accuracy, 4)}, "
        f"test_accuracy {_number(best.test_accuracy, 4)}"
    )
    assert best.val_accuracy != best.test_accuracy
    assert text.count("<tr class=best>") == 1
    assert f">{best.trial_id}<" in text.split("<tr class=best>")[1].split("</tr>")[0]


def test_clicking_a_header_sorts_the_leaderboard(finished, tmp_path):
    page = tmp_path / "sorted.html"
    probe = """<script>
    window.addEventListener('load', function () {
      var table = document.getElementById('leaderboard');
      var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
      function column(name) {
        var i = heads.findIndex(function (h) { return h.textContent === name; });
        heads[i].click();
        return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
          return r.cells[i].textContent;
        }).join('|');
      }
      document.body.setAttribute('data-up', column('val_accuracy'));
      document.body.setAttribute('data-down', column('val_accuracy'));
      document.body.setAttribute('data-frozen', column('frozen_layers'));
      document.body.setAttribute('data-names', column('strategy'));
    });
    </script></body>"""
    page.write_text((finished / REPORT_FILE).read_text().replace("</body>", probe))
    attributes, _ = rendered(page, tmp_path)

    def numbers_then_blanks(name: str, kind: type) -> list:
        values = attributes[name].split("|")
        numbers = [kind(v) for v in values if v]
        assert set(values[len(numbers) :]) <= {""}, values  # blanks last, either way
        return numbers

    # The raising trial has no val_accuracy, nor the diverged one (blown up in its
    # first epoch); the strategies other than fine_tune have no frozen_layers.
    up, down = numbers_then_blanks("data-up", float), numbers_then_blanks("data-down", float)
    assert len(up) == 6
    assert up == sorted(up) and down == sorted(up, reverse=True)
    frozen = numbers_then_blanks("data-frozen", int)
    assert len(frozen) == 2 and frozen == sorted(frozen)
    assert attributes["data-names"].split("|") == sorted(attributes["data-names"].split("|"))


def test_a_screenshot_of_the_report_is_not_blank(finished, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    chromium(
        "--hide-scrollbars",
        "--window-size=1280,2400",
        f"--screenshot={shot}",
        (finished / REPORT_FILE).resolve().as_uri(),
        profile=tmp_path / "profile",
    )
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 2400)
    low, high = image.getextrema()
    assert high - low > 100  # text and plots, not an empty page


def test_report_command_rebuilds_the_page(finished, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(finished, run_dir, ignore=shutil.ignore_patterns("ray", "*.keras"))
    (run_dir / REPORT_FILE).unlink()
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / REPORT_FILE).is_file()
    assert str(run_dir / REPORT_FILE) in result.output


def test_report_writes_into_stdout_or_a_device_and_names_it_on_stderr(finished, tmp_path):
    """Found by QA: --out /dev/stdout and --out - were refused as "no name ending in
    .html", though README says a device is written into, as predict's --out is."""
    from tests.search_helpers import GRAFTUNE

    for out in ("-", "/dev/stdout"):
        done = subprocess.run(
            [GRAFTUNE, "report", str(finished), "--out", out],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.lstrip().lower().startswith("<!doctype html")
        assert done.stdout.rstrip().endswith("</html>")  # the page alone
        assert "report: /dev/stdout" in done.stderr
    assert list(tmp_path.iterdir()) == []  # no file named "-"
    # Into a file the shell opened (found by QA: /dev/stdout was then that file, of no
    # .html name, and the page was refused, leaving it empty).
    for out in ("-", "/dev/stdout"):
        with open(tmp_path / "page.html", "w") as page:
            done = subprocess.run(
                [GRAFTUNE, "report", str(finished), str(finished), "--out", out],
                stdout=page,
                stderr=subprocess.PIPE,
                text=True,
                timeout=300,
                cwd=tmp_path,
            )
        assert done.returncode == 0, done.stderr
        written = (tmp_path / "page.html").read_text()
        assert written.lstrip().lower().startswith("<!doctype html") and "</html>" in written


def test_plots_without_their_parameter_are_left_out_with_a_note(finished, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(finished, run_dir, ignore=shutil.ignore_patterns("ray", "*.keras"))
    frame = pd.read_csv(run_dir / "leaderboard.csv")
    frame.drop(columns=["frozen_layers", "head_width"]).to_csv(
        run_dir / "leaderboard.csv", index=False
    )
    text = write_report(run_dir).read_text()
    assert text.count("data:image/png;base64,") == ALL_PLOTS - 2
    assert "Left out: no trial of this run has the parameter frozen_layers" in text
    assert "Left out: no trial of this run has the parameter head_width" in text


def test_a_plot_that_fails_becomes_a_note_and_is_logged(finished, tmp_path, caplog, monkeypatch):
    from orchestrator import report

    def broken(run):  # a plot's own bug, or a library's surprise
        raise RuntimeError("the plot broke")

    monkeypatch.setattr(report, "_learning_curves", broken)
    run_dir = tmp_path / "copy"
    shutil.copytree(finished, run_dir, ignore=shutil.ignore_patterns("ray", "*.keras"))
    with caplog.at_level(logging.WARNING, logger="orchestrator.report"):
        text = write_report(run_dir).read_text()
    assert "Learning curves.</b></figcaption><p class='note'>This plot could not be drawn" in text
    assert "RuntimeError: the plot broke" in text
    assert text.count("data:image/png;base64,") == ALL_PLOTS - 1
    assert any("Learning curves" in r.getMessage() for r in caplog.records)


def test_a_damaged_history_leaves_out_its_curve_alone(finished, tmp_path, caplog):
    """Found by QA: one history.csv cut short (or not UTF-8) lost every trial's learning
    curve, with a 25-line traceback that named no file."""
    run_dir = tmp_path / "copy"
    shutil.copytree(finished, run_dir, ignore=shutil.ignore_patterns("ray", "*.keras"))
    histories = sorted(run_dir.glob("trials/*/*/history.csv"))
    histories[0].write_text("")
    histories[1].write_bytes(b"epoch,val_accuracy\n1,\xff\xfe\n")
    # A failed trial's process died as it wrote its history: that one is not warned of.
    died = histories[2]
    died.write_text("")
    board = pd.read_csv(run_dir / "leaderboard.csv")
    board.loc[board["trial_id"] == died.parent.name, "status"] = "failed"
    board.to_csv(run_dir / "leaderboard.csv", index=False)
    (run_dir / "recipe.yaml").write_bytes((run_dir / "recipe.yaml").read_bytes() + b"# \xff\n")
    with caplog.at_level(logging.WARNING, logger="orchestrator.report"):
        result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    text = (run_dir / REPORT_FILE).read_text()
    assert text.count("data:image/png;base64,") == ALL_PLOTS  # the curves are drawn
    for history in histories[:2]:
        assert f"{history} cannot be read (" in caplog.text
    assert "left out of the learning curves" in caplog.text
    assert str(died) not in caplog.text
    assert "Traceback" not in caplog.text


def test_a_report_that_cannot_be_written_never_raises(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="orchestrator.report"):
        assert write_report_safely(tmp_path) is None
    assert "could not write report.html" in caplog.text


def test_report_refuses_an_out_file_it_cannot_write_and_leaves_nothing(finished, tmp_path):
    # A folder: the page was once written beside it, then not moved, and left there.
    for out, words in ((tmp_path, "is a folder"), (tmp_path / "no" / "r.html", "does not exist")):
        result = CliRunner().invoke(app, ["report", str(finished), "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert f"error: --out {out}: " in result.output and words in result.output
    assert list(tmp_path.iterdir()) == []
    assert not list(tmp_path.parent.glob(f".{tmp_path.name}.*.tmp"))


def test_report_never_writes_over_a_file_of_the_run_or_a_non_html_file(finished, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(finished, run_dir, ignore=shutil.ignore_patterns("ray", "*.keras"))
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    mine = tmp_path / "recipe.yaml"
    mine.write_text("mine")
    for out, words in (
        (run_dir / "leaderboard.csv", "is an HTML page"),
        (run_dir / "trials" / "page.html", "inside the run directory"),
        (mine, "is an HTML page"),
    ):
        result = CliRunner().invoke(app, ["report", str(run_dir), "-o", str(out)])
        assert result.exit_code == 2, result.output
        assert f"error: --out {out}" in result.output and words in result.output
    # Another run's page, or a comparison over a run's own page (found by QA).
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    for args in (
        [run_dir, "-o", other / REPORT_FILE],
        [run_dir, other, "-o", run_dir / REPORT_FILE],
    ):
        result = CliRunner().invoke(app, ["report", *map(str, args)])
        assert result.exit_code == 2, result.output
        assert "inside the run directory" in result.output
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert mine.read_text() == "mine"
    # The run's own page may be named, and a page beside it.
    for out in (run_dir / REPORT_FILE, tmp_path / "page.HTML"):
        result = CliRunner().invoke(app, ["report", str(run_dir), "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert out.read_text().startswith("<!DOCTYPE html>")


def test_an_internal_error_says_where_debug_goes(tmp_path, monkeypatch):
    # The hint said "run with --debug", and `graftune report --debug` is a usage error.
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("orchestrator.report.write_report", broken)
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert "internal error: RuntimeError: a bug" in result.output
    assert "run it again as: graftune --debug report ..." in result.output
    result = CliRunner().invoke(app, ["--debug", "report", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" in result.output


def test_report_on_a_folder_that_is_no_run_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "leaderboard.csv" in result.output
    assert not (tmp_path / REPORT_FILE).exists()


def test_comparing_runs_writes_one_page_in_the_current_folder(finished, tmp_path, monkeypatch):
    first = finished
    second = tmp_path / "second-run"
    shutil.copytree(first, second, ignore=shutil.ignore_patterns("ray", "*.keras"))
    frame = pd.read_csv(second / "leaderboard.csv")
    frame["val_accuracy"] = frame["val_accuracy"] / 2
    frame.to_csv(second / "leaderboard.csv", index=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    page = work / "compare.html"
    # Someone's own compare.html is kept (found by QA: replaced without a word) ...
    page.write_text("MY IMPORTANT PAGE")
    result = CliRunner().invoke(app, ["report", str(first), str(second)])
    assert result.exit_code == 2, result.output
    assert "compare.html exists and is not a page graftune wrote; give --force" in result.output
    assert page.read_text() == "MY IMPORTANT PAGE"
    # So is a link to no page yet (found by security QA: written through, unasked).
    link = work / "link.html"
    link.symlink_to(work / "made.html")
    result = CliRunner().invoke(app, ["report", str(first), str(second), "-o", str(link)])
    assert result.exit_code == 2, result.output
    assert f"{link} is a link to {work / 'made.html'}, which does not exist; give --force" in (
        " ".join(result.output.split())
    )
    assert not (work / "made.html").exists()
    link.unlink()
    result = CliRunner().invoke(app, ["report", str(first), str(second), "--force"])
    assert result.exit_code == 0, result.output
    # ... and graftune's own page is written again freely.
    result = CliRunner().invoke(app, ["report", str(first), str(second)])
    assert result.exit_code == 0, result.output
    attributes, dom = rendered(page, tmp_path)
    assert int(attributes["data-rows"]) == 10  # 2 runs x 5 strategies
    assert attributes["data-images"] == attributes["data-images-loaded"] == "1"
    assert first.name in dom and "second-run" in dom
    best = frame[frame["status"] == "ok"].groupby("strategy")["val_accuracy"].max()
    assert len(best) == 3
    for value in best:
        assert f"{value:.4f}" in dom


def test_pareto_front_keeps_trials_no_other_beats_on_cost_and_score():
    points = [(1.0, 0.5), (2.0, 0.4), (3.0, 0.9), (4.0, 0.9), (0.5, 0.1)]
    assert pareto_front(points, "max") == [4, 0, 2]
    assert pareto_front([(1.0, 2.0), (2.0, 1.0), (3.0, 1.5)], "min") == [0, 1]


def test_benchmark_charts_are_pngs(tmp_path):
    from PIL import Image

    bars = save_bar_chart(
        tmp_path / "figs" / "bars.png",
        ["fifo", "asha"],
        {"median s": [12.0, 7.5], "p90 s": [14.0, None]},
        title="search time",
        ylabel="seconds",
        errors={"median s": [1.0, 0.5]},
    )
    lines = save_line_chart(
        tmp_path / "lines.png",
        {"cached": ([1, 2, 4], [3.0, 2.0, 1.5]), "uncached": ([1, 2, 4], [6.0, 4.0, 3.0])},
        xlabel="trials",
        ylabel="seconds",
        log_x=True,
    )
    for path in (bars, lines):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300


def test_trials_log_their_curves_for_tensorboard(finished):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = finished
    frame = pd.read_csv(run_dir / "leaderboard.csv")
    assert (frame["status"] == "ok").sum() == 6
    for row in frame[frame["status"] == "ok"].itertuples():
        logs = run_dir / "trials" / row.strategy / row.trial_id / "tensorboard"
        for split in ("train", "validation"):
            events = EventAccumulator(str(logs / split))
            events.Reload()
            tags = events.Tags()["tensors"]
            assert "epoch_loss" in tags and "epoch_accuracy" in tags, tags
            assert [e.step for e in events.Tensors("epoch_loss")] == [1, 2] == [1, row.epochs]


def test_diverged_trials_are_not_scored_and_default_strategies_are_shown(tmp_path):
    from orchestrator.report import RunRecord, _cell, _compact_recipe

    frame = pd.DataFrame(
        {
            "strategy": ["a", "a", "a"],
            "trial_id": ["ok", "pruned", "blew"],
            "status": ["ok", "pruned", "diverged"],
            "val_accuracy": [0.9, 0.5, 0.1],  # the diverged one kept an early score
        }
    )
    run = RunRecord(tmp_path, {}, "", "val_accuracy", "max", frame, ["a"], None)
    assert list(run.scored()["trial_id"]) == ["ok", "pruned"]
    shown = _compact_recipe({"name": "r", "strategies": {"scratch_mlp": {}, "fine_tune": {"x": 1}}})
    assert "scratch_mlp: {}" in shown and "fine_tune: {x: 1}" in shown
    assert "é" in _compact_recipe({"name": "é", "strategies": {"a": {}}})
    assert ">True<" in _cell("two_phase", True) and ">False<" in _cell("two_phase", False)


def test_the_first_plot_says_how_many_trials_of_which_status_it_leaves_out(tmp_path):
    """Found by QA: an ``error`` trial was said to be "failed or diverged"."""
    from orchestrator.report import RunRecord, _run_plots

    def caption(statuses: list[str], scores: list[float | None]) -> str:
        frame = pd.DataFrame(
            {
                "strategy": ["a"] * len(statuses),
                "trial_id": [f"t{i}" for i in range(len(statuses))],
                "status": statuses,
                "val_accuracy": scores,
            }
        )
        run = RunRecord(tmp_path, {}, "", "val_accuracy", "max", frame, ["a"], None)
        return _run_plots(run)[0][1]

    said = caption(["ok", "error"], [0.9, None])
    assert said.endswith("1 trial without a score is not shown (1 error).")
    # A diverged trial's early score is not shown either (RunRecord.scored).
    said = caption(["ok", "error", "diverged", "failed", "pruned"], [0.9, None, 0.2, None, 0.5])
    assert said.endswith("3 trials without a score are not shown (1 diverged, 1 error, 1 failed).")
    assert "not shown" not in caption(["ok", "pruned"], [0.9, 0.5])


def test_a_columns_numbers_are_shown_with_the_same_decimals():
    """Found by QA: peak_memory_mb read `1010 | 1016.400 | 973.900` in the report."""
    import re

    from orchestrator.report import _table

    rows = [
        {"peak_memory_mb": 1010.0, "fit_seconds": 1.5921, "width": 64, "lambda": 1e-4},
        {"peak_memory_mb": 1016.4, "fit_seconds": 2.0, "width": 128, "lambda": 3.3e-3},
        {"peak_memory_mb": 973.9, "fit_seconds": None, "width": 32, "lambda": 0.01},
    ]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", _table("t", list(rows[0]), rows, best_keys=set()))
    assert cells == [
        *("1010.0", "1.592", "64", "0.0001"),
        *("1016.4", "2.000", "128", "0.0033"),
        *("973.9", "", "32", "0.01"),
    ]


def test_parameter_values_pandas_reads_as_missing_stay_text(tmp_path):
    from orchestrator.leaderboard import build_leaderboard, read_leaderboard, write_leaderboard
    from orchestrator.trial import TrialResult

    rows = [
        TrialResult("s", f"t{i}", "ok", {"mode": mode}, val_accuracy=0.5)
        for i, mode in enumerate(["nan", "None", "NA", "null"])
    ]
    write_leaderboard(build_leaderboard(rows, metric="val_accuracy", mode="max"), tmp_path)
    back = read_leaderboard(tmp_path)
    assert sorted(back["mode"]) == ["NA", "None", "nan", "null"]
    assert back["test_accuracy"].isna().all()  # an empty cell is still missing


def test_a_report_of_the_current_folder_names_the_run(tmp_path, monkeypatch):
    """`graftune report .` from inside the run had a blank <h1>, <title> and run cell."""
    from orchestrator.leaderboard import build_leaderboard, write_leaderboard
    from orchestrator.trial import TrialResult

    for name in ("my-run", "other-run"):
        rows = [TrialResult("scratch_mlp", "t0", "ok", {}, val_accuracy=0.5, fit_seconds=1.0)]
        (tmp_path / name).mkdir()
        write_leaderboard(
            build_leaderboard(rows, metric="val_accuracy", mode="max"), tmp_path / name
        )
    monkeypatch.chdir(tmp_path / "my-run")
    result = CliRunner().invoke(app, ["report", "."])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "my-run" / REPORT_FILE).read_text()
    assert "<title>graftune report: my-run</title>" in page and "<h1>my-run</h1>" in page
    out = tmp_path / "compare.html"
    result = CliRunner().invoke(app, ["report", ".", "../other-run", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert ">my-run</td>" in out.read_text() and ">other-run</td>" in out.read_text()


def test_a_comparison_never_shows_a_diverged_trial_as_a_strategys_best(tmp_path):
    """Its early score made it the strategy's best in the table and the bar chart."""
    from orchestrator.report import RunRecord, _best_per_strategy, render_comparison

    frame = pd.DataFrame(
        {
            "strategy": ["a", "a", "b", "b"],
            "trial_id": ["ok1", "blew", "blew2", "failed"],
            "status": ["ok", "diverged", "diverged", "error"],
            "val_accuracy": [0.4321, 0.9876, 0.8765, 0.7654],
            "test_accuracy": [0.4, 0.9, 0.8, 0.7],
        }
    )
    run = RunRecord(tmp_path / "r1", {}, "", "val_accuracy", "max", frame, ["a", "b"], None)
    best = _best_per_strategy(run, "val_accuracy", "max")
    assert best["a"] is not None and best["a"]["trial_id"] == "ok1"
    assert best["b"] is None  # no scored trial: no bar
    page = render_comparison([run], "val_accuracy")
    assert "0.4321" in page and "0.9876" not in page and "0.8765" not in page


def test_a_name_in_a_script_the_font_lacks_draws_without_console_warnings():
    """Found by QA: a run named in Chinese printed matplotlib's "Glyph ... missing
    from font(s) DejaVu Sans" three times over the console for each page."""
    import warnings

    from orchestrator.report import _new_figure, _png

    figure = _new_figure()
    figure.add_subplot().set_title("run 中文")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _png(figure).startswith(b"\x89PNG")
    assert not [w for w in caught if "missing from font" in str(w.message)], caught


def test_learning_curves_set_each_validation_metric_beside_its_training_twin(finished):
    """val_loss (the cross-entropy alone) was drawn beside Keras' training ``loss``,
    which adds lambda * R(theta): training looked far worse than validation."""
    from orchestrator.report import training_twin

    assert training_twin("val_loss") == "cross_entropy"
    assert training_twin("val_objective") == "loss"
    assert training_twin("val_accuracy") == "accuracy"
    frame = pd.read_csv(finished / "leaderboard.csv")
    row = frame[(frame["strategy"] == "scratch_mlp") & (frame["lambda"] > 0)].iloc[0]
    history = pd.read_csv(finished / "trials" / "scratch_mlp" / row["trial_id"] / "history.csv")
    # Each twin is in a trial's history; with lambda > 0 the two losses differ.
    assert {training_twin(m) for m in ("val_loss", "val_objective", "val_accuracy")} <= set(
        history.columns
    )
    assert (history["loss"] > history["cross_entropy"]).all()


def test_learning_curves_tick_whole_epochs_also_of_a_one_epoch_search(tmp_path):
    # Found by QA: a 1-epoch search's axis read 0.945 ... 1.050.
    from orchestrator.report import _learning_curves

    for epochs in (1, 2, 30):
        frame = pd.DataFrame(
            {"strategy": ["a"], "trial_id": ["t"], "status": ["ok"], "val_accuracy": [0.5]}
        )
        run = record(f"run{epochs}", frame, tmp_path)
        folder = tmp_path / f"run{epochs}" / "trials" / "a" / "t"
        folder.mkdir(parents=True)
        pd.DataFrame({"epoch": range(1, epochs + 1), "val_accuracy": [0.5] * epochs}).to_csv(
            folder / "history.csv", index=False
        )
        (ax,) = [ax for ax in _learning_curves(run).axes if ax.get_visible()]
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), (epochs, ticks)
        assert low < 1 and high > epochs


def test_the_page_of_a_run_that_stopped_midway_says_so_and_how_to_go_on(finished, tmp_path):
    """Found by QA: `graftune report` on a run stopped by Ctrl+C (no finished.json)
    drew a page like a finished run's, where `graftune leaderboard` said it stopped."""
    stopped = tmp_path / "stopped run"
    shutil.copytree(finished, stopped)
    (stopped / "finished.json").unlink()
    result = CliRunner().invoke(app, ["report", str(stopped)])
    assert result.exit_code == 0, result.output
    page = (stopped / REPORT_FILE).read_text()
    assert "This run stopped before it finished (interrupted, or killed)" in page
    assert f"graftune run --resume &#x27;{stopped}&#x27;" in page
    write_report(finished, out=tmp_path / "whole.html")
    assert "stopped before it finished" not in (tmp_path / "whole.html").read_text()


def record(name: str, frame: pd.DataFrame, tmp_path: Path, **recipe) -> object:
    from orchestrator.report import RunRecord

    strategies = list(dict.fromkeys(frame["strategy"]))
    return RunRecord(tmp_path / name, recipe, "", "val_accuracy", "max", frame, strategies, None)


def test_a_comparison_names_each_strategys_finished_best_and_its_status(tmp_path):
    """Found by QA: a pruned trial's early score made it a strategy's best over the
    finished trial its run names best, and nothing on the page said it was pruned."""
    from orchestrator.report import render_comparison

    # A strategy's best of several finished trials, whatever their order (found by
    # mutation testing: no strategy here had two finished trials).
    frame = pd.DataFrame(
        {
            "strategy": ["a", "a", "a", "b", "c"],
            "trial_id": ["worse", "done", "cut", "cut2", "broke"],
            "status": ["ok", "ok", "pruned", "pruned", "error"],
            "val_accuracy": [0.3, 0.5, 0.7, 0.6, None],
            "test_accuracy": [0.35, 0.45, None, None, None],
            "val_loss": [0.9, 0.2, 0.1, 0.3, None],
            "test_loss": [0.8, 0.25, None, None, None],
        }
    )

    def shown(metric: str) -> list[list[str]]:
        page = render_comparison([record("r1", frame, tmp_path)], metric)
        rows = re.findall(r"<tr>(.*?)</tr>", page.split("<tbody>")[1])
        return [re.findall(r"<td[^>]*>([^<]*)</td>", row)[:5] for row in rows]

    assert shown("val_accuracy") == [
        ["r1", "a", "done", "ok", "0.5000"],
        ["r1", "b", "cut2", "pruned", "0.6000"],  # none finished: its best pruned one
        ["r1", "c", "", "no score", ""],
    ]
    assert shown("val_loss")[0] == ["r1", "a", "done", "ok", "0.2000"]  # the least
    frame.loc[0:1, "val_loss"] = [0.1, 0.2]
    assert shown("val_loss")[0] == ["r1", "a", "worse", "ok", "0.1000"]


def test_comparison_chart_labels_are_run_folder_names_as_they_are(tmp_path):
    """Found by QA: a folder named `_x` was left out of the legend (matplotlib hides
    such labels), and one with `$x^$` in its name became a mathtext parse error."""
    import warnings

    from orchestrator.report import _comparison_chart, _draw

    frame = pd.DataFrame(
        {"strategy": ["a"], "trial_id": ["t"], "status": ["ok"], "val_accuracy": [0.5]}
    )
    labels = ["_under", "$x^$", "$5$"]
    runs = [record(name, frame, tmp_path) for name in labels]
    seen = {}

    def chart():
        figure = _comparison_chart(runs, labels, "val_accuracy", "max")
        seen["legend"] = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
        seen["maths"] = [t._parse_math for t in figure.axes[0].get_legend().get_texts()]
        return figure

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot = _draw("title", "", chart)
    assert plot.note is None and plot.png is not None
    assert seen == {"legend": labels, "maths": [False, False, False]}


def test_a_comparison_of_many_runs_draws_a_line_per_strategy_over_the_runs(tmp_path):
    """25 runs drew 75 bars on a chart 48 inches wide, in ten colours for 25 runs,
    with a legend taller than the plot over the bars."""
    from orchestrator.report import MAX_BAR_RUNS, _comparison_chart, render_comparison

    labels = [f"run-{i:02d}" for i in range(MAX_BAR_RUNS + 15)]
    runs = []
    for i, name in enumerate(labels):
        frame = pd.DataFrame(
            {
                "strategy": ["a", "b"],
                "trial_id": ["t", "u"],
                "status": ["ok", "error" if i == 3 else "ok"],
                "val_accuracy": [0.5 + i / 100, 0.9 - i / 100],
            }
        )
        runs.append(record(name, frame, tmp_path))
    figure = _comparison_chart(runs, labels, "val_accuracy", "max")
    (ax,) = figure.axes
    assert figure.get_size_inches()[0] <= 12
    assert [t.get_text() for t in ax.get_xticklabels()] == labels
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    a, b = ax.get_lines()
    assert list(a.get_ydata()) == pytest.approx([0.5 + i / 100 for i in range(len(labels))])
    assert np.isnan(b.get_ydata()[3])  # no scored trial of b in run-03: a gap
    page = render_comparison(runs, "val_accuracy")
    assert "a missing point means" in page and "in the order given" in page
    # Long names keep their start and end (where a run's time is) along the axis,
    # unless two would then read alike (found by QA: 80 characters each left the
    # plot an inch of its five).
    from orchestrator.report import _tick_labels

    long = [
        f"digits-transfer-fine-tune-vs-feature-extraction-seed{i}-20261206-0915{i}"
        for i in (10, 11)
    ]
    assert _tick_labels(long) == [
        "digits-transfer-fin\u2026ed10-20261206-091510",
        "digits-transfer-fin\u2026ed11-20261206-091511",
    ]
    alike = ["a" * 50 + "-1" + "b" * 30, "a" * 50 + "-2" + "b" * 30]
    assert _tick_labels(alike) == alike
    # Up to MAX_BAR_RUNS runs, a bar per run and strategy, as before.
    few = _comparison_chart(runs[:MAX_BAR_RUNS], labels[:MAX_BAR_RUNS], "val_accuracy", "max")
    assert len(few.axes[0].patches) == 2 * MAX_BAR_RUNS
    assert "a missing bar means" in render_comparison(runs[:2], "val_accuracy")


def test_a_long_text_cell_opens_to_its_whole_text(tmp_path):
    """Found by QA: a long error was cut at 77 characters with the rest in a title=
    tooltip, which a keyboard or a touch screen cannot open and nobody can copy."""
    from orchestrator.report import _cell

    error = "ValueError: " + "x" * 200 + " <b>"
    cell = _cell("error", error)
    assert "<details><summary>ValueError: xxx" in cell and "\u2026</summary>" in cell
    assert "<div class='full'>" + error.replace("<", "&lt;").replace(">", "&gt;") in cell
    assert "title=" not in cell
    assert _cell("error", "short") == "<td class='text'>short</td>"
    assert "status-failed" in _cell("status", "failed")


def test_control_characters_in_a_cell_are_shown_as_escapes(tmp_path):
    """An error carrying a terminal's colours (or a NUL) put raw control characters
    into report.html, which HTML does not allow: browsers drop them or show boxes."""
    from orchestrator.report import _cell, _e

    error = "ValueError: \x1b[31mred\x1b[0m\x00 <b> \u202etxt.exe"
    cell = _cell("error", error)
    assert "\\x1b[31mred\\x1b[0m\\x00 &lt;b&gt; \\u202etxt.exe" in cell
    # Unicode's bidi controls too (found by security QA): "exe.txt" in a browser.
    assert "\u202e" not in cell
    assert not any(ord(ch) < 32 for ch in cell)
    assert _e("two\nlines\tand a tab") == "two\nlines\tand a tab"  # kept in a <pre>
    # Quotes too: cells' attributes are quoted with ' (found by mutation testing: an
    # error's "can't" ended its data-sort early, and a crafted one added onmouseover).
    crafted = "RuntimeError: can't allocate tensor' onmouseover='alert(1)" + "x" * 60
    cell = _cell("error", crafted)
    tag = cell[: cell.index(">") + 1]
    assert "&#x27;" in cell and "onmouseover='" not in cell
    assert tag.count("'") % 2 == 0 and "can't" not in tag
    assert _e('say "hi"') == "say &quot;hi&quot;"


def test_ran_with_names_the_search_backend_and_the_plugins(tmp_path):
    """Found by QA: a keras-tuner run said "Ray 2.60.0", and no plugin was named."""
    import json

    from orchestrator.report import _ran_with

    (tmp_path / "environment.json").write_text(
        json.dumps(
            {
                "python": "3.11.7",
                "packages": {
                    "graftune": "0.1",
                    "keras": "3.15",
                    "tensorflow": "2.21",
                    "ray": "2.60.0",
                    "keras-tuner": "1.4.8",
                },
                "plugins": {"graftune-linear-probe": "0.1.0"},
                "plugin_modules": ["qaplug"],
            }
        )
    )
    tuner = _ran_with(tmp_path, {"search": {"backend": "keras_tuner"}})
    assert "keras-tuner 1.4.8" in tuner and "Ray" not in tuner
    assert "plugin graftune-linear-probe 0.1.0" in tuner and "plugin module qaplug" in tuner
    assert "Ray 2.60.0" in _ran_with(tmp_path, {"search": {"backend": "ray"}})
