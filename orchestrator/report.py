"""A run's ``report.html``: the recipe, the sortable leaderboard and plots in one offline file.

The page is self-contained: plots are PNGs drawn with matplotlib's Agg canvas
and embedded as base64 ``data:`` URIs, the style sheet and the few lines of
script that sort the leaderboard are inline, and nothing is fetched from a
network. :func:`write_report` writes one run's page, :func:`write_comparison`
one page comparing several runs, and :func:`save_bar_chart` /
:func:`save_line_chart` write plain PNG charts for benchmark scripts.

A plot that cannot be drawn is logged and replaced by a note; it never fails a
run or the rest of the page.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import (
    OutputPathError,
    RunDirError,
    cannot_write_in,
    no_leaderboard,
    one_line,
    printable,
    raised,
    unreadable,
    written_again,
)
from orchestrator.paths import dangling_link, is_stream

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
#: Where ``graftune report RUN_A RUN_B ...`` writes by default (in the current folder).
COMPARE_FILE = "compare.html"
#: Searched parameters plotted against the metric, with the x-axis scale of each.
PARAMETER_PLOTS = (
    ("frozen_layers", "linear"),
    ("lambda", "log"),
    ("head_width", "log2"),
    ("learning_rate", "log"),
)
#: Statuses drawn, with their matplotlib marker; error and diverged trials have no score.
_MARKERS = {"ok": "o", "pruned": "v"}
_DPI = 100


class _Skip(Exception):
    """A plot that has nothing to show; its message is the note shown instead."""


@dataclass
class RunRecord:
    """What a report needs from one run directory."""

    run_dir: Path
    recipe: dict[str, Any]
    recipe_text: str
    metric: str
    mode: str
    leaderboard: pd.DataFrame
    strategies: list[str]
    best: dict[str, Any] | None

    @property
    def name(self) -> str:
        """The run directory's name, which is unique (recipe name and start time)."""
        return self.run_dir.resolve().name  # `graftune report .` names the folder too

    @property
    def test_metric(self) -> str:
        """The test-split counterpart of the metric (``val_accuracy`` -> ``test_accuracy``)."""
        return "test_" + self.metric.removeprefix("val_")

    def scored(self, metric: str | None = None) -> pd.DataFrame:
        """The trials with a value of the metric (``ok`` and ``pruned``).

        A ``diverged`` trial may have a value from before its loss blew up;
        it is not a result to compare, nor the cheapest on a Pareto front.

        Args:
            metric: The column to have a value of; default the run's metric.
        """
        frame = self.leaderboard
        metric = metric or self.metric
        return frame[frame[metric].notna() & frame["status"].isin(["ok", "pruned"])]


@dataclass
class Plot:
    """One figure of a page: an embedded PNG, or a note saying why there is none."""

    title: str
    caption: str = ""
    png: bytes | None = None
    note: str | None = None


def read_run(run_dir: str | Path) -> RunRecord:
    """Read what a report shows from a run directory.

    Raises:
        RunDirError: ``run_dir`` is not a graftune run directory.
    """
    import yaml

    from orchestrator.leaderboard import FILES, read_leaderboard

    run_dir = Path(run_dir)
    if not (run_dir / FILES["csv"]).is_file():
        raise RunDirError(no_leaderboard(run_dir))
    recipe_path = run_dir / "recipe.yaml"
    # Shown as it is, and read leniently: a damaged byte or YAML loses only what it holds.
    recipe_text = (
        recipe_path.read_text(encoding="utf-8", errors="replace") if recipe_path.is_file() else ""
    )
    try:
        recipe = yaml.safe_load(recipe_text) or {}
    except yaml.YAMLError:
        recipe = {}
    if not isinstance(recipe, dict):
        recipe = {}
    search = recipe.get("search") or {}
    metric = str(search.get("metric") or "val_accuracy")
    mode = str(search.get("mode") or ("min" if metric.endswith("loss") else "max"))
    frame = read_leaderboard(run_dir)
    if metric not in frame:
        raise RunDirError(f"{run_dir / FILES['csv']} has no column {metric!r}, the run's metric")
    order = [str(s) for s in (recipe.get("strategies") or {})]
    order += sorted(set(frame["strategy"].astype(str)) - set(order))
    best = None
    if (run_dir / "best" / "config.json").is_file():
        from orchestrator.run import read_best_config

        try:
            best = read_best_config(run_dir)
        except (OSError, ValueError) as exc:  # the report is drawn from the leaderboard
            log.warning(
                "%s; %s", unreadable(run_dir / "best" / "config.json", exc), written_again(run_dir)
            )
    return RunRecord(
        run_dir=run_dir,
        recipe=recipe,
        recipe_text=recipe_text,
        metric=metric,
        mode=mode,
        leaderboard=frame,
        strategies=[s for s in order if (frame["strategy"] == s).any()],
        best=best,
    )


def write_report(
    run_dir: str | Path, *, out: str | Path | None = None, stopped: bool | None = None
) -> Path:
    """Write a run's self-contained HTML report.

    Args:
        run_dir: A run directory.
        out: Where to write; default ``RUN_DIR/report.html``.
        stopped: Whether the run stopped before it finished (Ctrl+C, killed), which
            the page says at its top; default: read from the run directory (a run
            with a finished trial and no ``finished.json``, not running now).

    Returns:
        The path written.

    Raises:
        RunDirError: ``run_dir`` is not a graftune run directory.
        OutputPathError: With no ``out``, the run directory is not writable.
    """
    from orchestrator.leaderboard import atomic_write_text

    run = read_run(run_dir)
    path = Path(out) if out is not None else run.run_dir / REPORT_FILE
    problem = None if out is not None else cannot_write_in(run.run_dir)
    if problem is not None:  # a read-only run (found by QA: an internal error)
        raise OutputPathError(f"cannot write {path}: {problem}; give --out FILE.html")
    if stopped is None:
        stopped = _stopped(run)
    atomic_write_text(path, render_report(run, stopped=stopped))
    return path


def _stopped(run: RunRecord) -> bool:
    """Whether a run stopped midway, as ``graftune leaderboard`` tells (found by QA:
    the page of a run stopped by Ctrl+C looked like a finished run's)."""
    from orchestrator.errors import unfinished

    ended = (run.leaderboard["status"] == "ok").any()  # one failed in every trial says so
    return bool(ended and unfinished(run.run_dir) is not None)


def write_report_safely(run_dir: str | Path, *, stopped: bool | None = None) -> Path | None:
    """:func:`write_report`, warning instead of raising: a report never fails a run.

    The warning is one line with the reason (found by QA: a full disk's traceback
    ended a run that had finished well); ``graftune report`` writes the page again,
    and says the traceback with ``--debug``.
    """
    try:
        return write_report(run_dir, stopped=stopped)
    except Exception as exc:
        log.warning(
            "could not write %s in %s (%s); `graftune report %s` writes it again",
            REPORT_FILE,
            run_dir,
            one_line(raised(exc)),
            shlex.quote(str(run_dir)),
        )
        return None


#: What ``report --out`` may be called: the page is HTML, and other suffixes are
#: more often a recipe, a table or a model typed by mistake.
OUT_SUFFIXES = (".html", ".htm")


#: The page's ``generator``: a file that says it is graftune's page is replaced freely.
_GENERATOR = "graftune report"


def check_replaceable(path: str | Path, *, force: bool) -> None:
    """Refuse to write a page over a file that is not one graftune wrote, unless ``force``.

    ``report`` rewrites its own pages (a run's ``report.html``, a comparison
    run again), and pages of earlier versions (which end "Written by graftune");
    anything else at ``path`` (someone's own ``compare.html``) is kept.

    Raises:
        OutputPathError: ``path`` exists and is another file, and not ``force``.
    """
    from orchestrator.errors import OutputPathError

    path = Path(path)
    if not force and (target := dangling_link(path)) is not None:
        raise OutputPathError(
            f"{path} is a link to {target}, which does not exist; give --force to write "
            "there, or --out another file"
        )
    if force or not path.exists() or is_stream(path):  # a FIFO is written into, not replaced
        return
    try:
        with open(path, "rb") as file:
            head = file.read(4096)
            file.seek(max(0, path.stat().st_size - 4096))
            tail = file.read()
    except OSError:
        head = tail = b""
    if f"content='{_GENERATOR}'".encode() in head or b"Written by graftune" in tail:
        return
    raise OutputPathError(
        f"{path} exists and is not a page graftune wrote; give --force to replace it, "
        "or --out another file"
    )


def check_report_out(path: str | Path, run_dirs: Sequence[str | Path]) -> None:
    """Refuse, before any work, an ``--out`` the page must not replace.

    An HTML file only; inside a run directory (one named here, or any other)
    only the page the command writes there by default: a run's own
    ``report.html`` for its report, ``compare.html`` for a comparison. Never the
    leaderboard, recipe or models other commands read, nor another run's page.

    Raises:
        OutputPathError: ``path`` has another suffix, or is another file of a run.
    """
    from orchestrator.errors import OutputPathError
    from orchestrator.paths import is_stream
    from orchestrator.recipe import recorded_recipe

    path = Path(path)
    # A FIFO or a device (/dev/stdout) is written into, whatever its name (found by QA).
    if path.suffix.lower() not in OUT_SUFFIXES and not is_stream(path):
        raise OutputPathError(
            f"--out {path}: the report is an HTML page; give a name ending in .html"
        )
    where = path.resolve()
    named = {Path(d).resolve(): Path(d) for d in run_dirs}
    for folder in where.parents:
        if folder in named or recorded_recipe(folder / "recipe.yaml"):
            break
    else:
        return
    page = REPORT_FILE if len(run_dirs) == 1 and folder in named else COMPARE_FILE
    if where != folder / page:
        shown = named.get(folder, folder)
        raise OutputPathError(
            f"--out {path} is inside the run directory {shown}, whose files graftune "
            f"reads; write the page elsewhere, or as {shown / page}"
        )


def write_comparison(
    run_dirs: Sequence[str | Path], *, out: str | Path = COMPARE_FILE, metric: str | None = None
) -> Path:
    """Write one page comparing the best trial of each strategy across runs.

    Args:
        run_dirs: The run directories, at least one.
        out: Where to write; default ``compare.html`` in the current folder.
        metric: The column to compare by; default the first run's metric.

    Returns:
        The path written.

    Raises:
        RunDirError: A folder is not a run directory, or lacks the metric.
    """
    from orchestrator.leaderboard import atomic_write_text

    path = Path(out)
    atomic_write_text(path, comparison_page(run_dirs, metric))
    return path


def comparison_page(run_dirs: Sequence[str | Path], metric: str | None = None) -> str:
    """The HTML of :func:`write_comparison`'s page."""
    runs = [read_run(d) for d in run_dirs]
    if not runs:
        raise RunDirError("name at least one run directory to compare")
    metric = metric or runs[0].metric
    for run in runs:
        if metric not in run.leaderboard:
            raise RunDirError(f"run {run.run_dir} has no column {metric!r} to compare by")
    return render_comparison(runs, metric)


# ---------------------------------------------------------------- pages


def render_report(run: RunRecord, *, stopped: bool = False) -> str:
    """The HTML of one run's report; ``stopped``: the run stopped before it finished."""
    from orchestrator.leaderboard import best_row

    frame = run.leaderboard
    counts = frame["status"].value_counts().to_dict()
    status_text = ", ".join(f"{n} {s}" for s, n in counts.items())
    best = best_row(frame) if not frame.empty else None
    summary = [
        ("run directory", str(run.run_dir.resolve())),
        ("metric", f"{run.metric} ({'higher' if run.mode == 'max' else 'lower'} is better)"),
        ("trials", f"{len(frame)} ({status_text})" if len(frame) else "none"),
    ]
    search = run.recipe.get("search")
    if isinstance(search, dict) and search.get("backend"):  # found by QA: never said
        said = ", ".join(
            f"{key} {search[key]}" for key in ("algorithm", "scheduler") if search.get(key)
        )
        summary.append(("search", f"{search['backend']}" + (f" ({said})" if said else "")))
    if best is not None:
        summary.append(
            (
                "best",
                f"{best['strategy']} trial {best['trial_id']}: {run.metric} "
                f"{_number(best[run.metric], 4)}, {run.test_metric} "
                f"{_number(best.get(run.test_metric), 4)}",
            )
        )
    ran_with = _ran_with(run.run_dir, run.recipe)
    if ran_with:
        summary.append(("ran with", ran_with))
    from orchestrator.trial import has_tensorboard

    if has_tensorboard(run.run_dir):
        logdir = shlex.quote(str(run.run_dir.resolve() / "trials"))
        summary.append(("TensorBoard", f"tensorboard --logdir {logdir}"))
    plots = [_draw(title, caption, fn) for title, caption, fn in _run_plots(run)]
    recipe = _compact_recipe(run.recipe) if run.recipe else run.recipe_text
    best_key = (best["strategy"], best["trial_id"]) if best is not None else None
    body = [f"<h1>{_e(run.name)}</h1>"]
    if stopped:
        from orchestrator.errors import resume_command

        body.append(
            "<p class='note'>This run stopped before it finished (interrupted, or killed): "
            "its leaderboard and plots show only the trials that had ended. "
            f"<code>{_e(resume_command(run.run_dir))}</code> runs the rest and writes "
            "this page again.</p>"
        )
    body += [
        _definition_list(summary),
        "<h2>Leaderboard</h2>",
        "<p class='hint'>Click a column header to sort; click again to reverse.</p>",
        _leaderboard_table(frame, best_key),
        "<h2>Plots</h2>",
        *(_figure_html(p) for p in plots),
        "<h2>Recipe</h2>",
        "<p class='hint'>The resolved recipe of the run, without unset keys "
        "(the full text is in <code>recipe.yaml</code>).</p>",
        f"<pre class='recipe'>{_e(recipe)}</pre>",
    ]
    return _page(f"graftune report: {run.name}", body)


def _ran_with(run_dir: Path, recipe: Mapping[str, Any] | None = None) -> str | None:
    """The versions that shape a run's results, from its ``environment.json``
    (``None`` for a run made before graftune recorded them): the search backend's
    (Ray's or keras-tuner's, as the recipe says) and the plugins' too."""
    from orchestrator.environment import ENVIRONMENT_FILE, recorded_environment

    search = (recipe or {}).get("search")
    searcher = search.get("backend") if isinstance(search, dict) else None
    try:
        recorded = recorded_environment(run_dir)
        packages = recorded["packages"]
        backend = recorded.get("keras_backend") or "tensorflow"
        if searcher == "keras_tuner":  # found by QA: Ray's version, for a run without Ray
            search_with = f"keras-tuner {packages.get('keras-tuner', '?')}"
        else:
            search_with = f"Ray {packages['ray']}" if "ray" in packages else ""
        plugins = recorded.get("plugins") or {}
        modules = recorded.get("plugin_modules") or []
        parts = [
            f"graftune {packages.get('graftune', '?')}",
            f"Keras {packages.get('keras', '?')} on {backend} {packages.get(backend, '')}".rstrip(),
            search_with,
            f"Python {recorded.get('python', '?')}",
            *(f"plugin {name} {version}" for name, version in dict(plugins).items()),
            *(f"plugin module {module}" for module in list(modules)),
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    resumed = len(recorded.get("resumed") or [])
    times = "once" if resumed == 1 else f"{resumed} times"
    again = f"; resumed {times} with other versions" if resumed else ""
    return ", ".join(p for p in parts if p) + f" (see {ENVIRONMENT_FILE}){again}"


def render_comparison(runs: Sequence[RunRecord], metric: str) -> str:
    """The HTML of a page comparing the best trial per strategy across ``runs``."""
    mode = "min" if metric.endswith("loss") else "max"
    test_metric = "test_" + metric.removeprefix("val_")
    columns = [
        "run",
        "strategy",
        "trial_id",
        "status",
        metric,
        test_metric,
        "fit_seconds",
        "params_trainable",
        "trials",
    ]
    labels = _run_labels(runs)
    rows: list[dict[str, Any]] = []
    for run, label in zip(runs, labels, strict=True):
        for strategy, best in _best_per_strategy(run, metric, mode).items():
            trials = run.leaderboard[run.leaderboard["strategy"] == strategy]
            row = {"run": label, "strategy": strategy, "trials": len(trials)}
            for column in columns[2:-1]:
                row[column] = best.get(column) if best is not None else None
            if best is None:
                row["status"] = "no score"
            rows.append(row)
    many = len(runs) > MAX_BAR_RUNS
    plot = _draw(
        f"Best {metric} per strategy and run",
        "The best trial of each strategy in each run: its best finished (ok) trial, or "
        f"where none finished its best pruned one; a missing {'point' if many else 'bar'} "
        "means the strategy has no trial with a score in that run"
        + (", and the runs are in the order given." if many else "."),
        lambda: _comparison_chart(runs, labels, metric, mode),
    )
    header = [
        f"<h1>graftune: {len(runs)} runs compared</h1>",
        _definition_list(
            [
                ("metric", f"{metric} ({'higher' if mode == 'max' else 'lower'} is better)"),
                *((f"run {i + 1}", str(r.run_dir.resolve())) for i, r in enumerate(runs)),
            ]
        ),
        "<h2>Best trial per strategy per run</h2>",
        "<p class='hint'>Each strategy's best finished (ok) trial in each run, as the "
        "run's own leaderboard ranks them, or where none finished its best pruned one "
        "(no test score, no model); <i>no score</i>: no trial of it has one. "
        "<code>trials</code> counts all of the strategy's trials, failed ones too. "
        "Click a column header to sort; click again to reverse.</p>",
        _table("leaderboard", columns, rows, best_keys=set()),
        "<h2>Plot</h2>",
        _figure_html(plot),
    ]
    return _page("graftune: runs compared", header)


def _run_labels(runs: Sequence[RunRecord]) -> list[str]:
    """Each run's folder name, numbered where two runs share one."""
    labels = []
    for run in runs:
        label, n = run.name, 1
        while label in labels:
            n += 1
            label = f"{run.name} #{n}"
        labels.append(label)
    return labels


def _best_per_strategy(run: RunRecord, metric: str, mode: str) -> dict[str, dict | None]:
    """Each strategy's best finished (``ok``) trial, as a run's leaderboard names its
    best, or where none finished its best pruned one (never a diverged or failed
    one), or ``None``. Found by QA: a pruned trial's score, from before the scheduler
    stopped it, made it a strategy's best over a finished trial with a model."""
    frame = run.scored(metric)
    found: dict[str, dict | None] = {}
    for strategy in run.strategies:
        rows = frame[frame["strategy"] == strategy]
        if rows.empty:
            found[strategy] = None
            continue
        rows = rows.sort_values(metric, ascending=mode == "min", kind="stable")
        finished = rows[rows["status"] == "ok"]
        found[strategy] = (finished if not finished.empty else rows).iloc[0].to_dict()
    return found


_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2em auto;
max-width:1400px;padding:0 1em;color:#1d1d1f;background:#fff}
h1{font-size:1.6em;margin-bottom:.3em;overflow-wrap:anywhere}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:600}
dd{margin:0;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em;
overflow-wrap:anywhere;min-width:0}
.hint{color:#666;font-size:.9em}.note{color:#8a5a00;background:#fff8e6;padding:.5em .8em;
border-left:3px solid #e0a800}
.wrap{overflow:auto;max-height:85vh}table{border-collapse:collapse;font-size:.88em;white-space:nowrap}
th,td{padding:.3em .6em;border-bottom:1px solid #eee;text-align:right}
th{position:sticky;top:0;background:#f4f4f6;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:' \\25B2'}th[aria-sort=descending]::after{content:' \\25BC'}
td.text,th.text{text-align:left}tr.best td{background:#eaf7ea;font-weight:600}
.status-error,.status-diverged,.status-failed{color:#b00020}.status-pruned{color:#666}
td details{white-space:normal}td summary{white-space:nowrap;cursor:pointer}
td .full{white-space:pre-wrap;overflow-wrap:anywhere;max-width:60em;margin:.3em 0}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#444;font-size:.9em}pre.recipe{background:#f6f6f8;padding:1em;overflow-x:auto}
"""

# Sorts tables by clicking a header (numbers numerically, blanks last in both
# directions) and, once every image has loaded, records on <body> how many rows
# the leaderboard has and how many images rendered, for automated checks.
_SCRIPT = """
(function () {
  function key(cell) {
    var v = cell.getAttribute('data-sort');
    return v === null ? cell.textContent.trim() : v;
  }
  function sortBy(table, index, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var ascending = th.getAttribute('aria-sort') !== 'ascending';
    rows.sort(function (a, b) {
      var x = key(a.cells[index]), y = key(b.cells[index]);
      if (x === '' || y === '') return (x === '') - (y === '');
      var nx = Number(x), ny = Number(y), c;
      if (!isNaN(nx) && !isNaN(ny)) c = nx - ny;
      else c = x.localeCompare(y, undefined, {numeric: true});
      return ascending ? c : -c;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      h.removeAttribute('aria-sort');
    });
    th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.tabIndex = 0;
      th.addEventListener('click', function () { sortBy(table, index, th); });
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(table, index, th); }
      });
    });
  });
  window.addEventListener('load', function () {
    var images = Array.prototype.slice.call(document.images);
    var table = document.getElementById('leaderboard');
    document.body.setAttribute('data-rows', table ? table.tBodies[0].rows.length : 0);
    document.body.setAttribute('data-images', images.length);
    document.body.setAttribute('data-images-loaded', images.filter(function (i) {
      return i.complete && i.naturalWidth > 0;
    }).length);
    document.body.setAttribute('data-ready', '1');
  });
})();
"""


def _page(title: str, body: list[str]) -> str:
    from orchestrator import __version__

    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            "<html lang='en'><head><meta charset='utf-8'>",
            f"<meta name='generator' content='{_GENERATOR}'>",  # what report may replace
            "<meta name='viewport' content='width=device-width, initial-scale=1'>",
            # Nothing on this page may be fetched: it must read the same offline.
            "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
            "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
            f"<title>{_e(title)}</title>",
            f"<style>{_STYLE}</style>",
            "</head><body>",
            *body,
            f"<p class='hint'>Written by graftune {_e(__version__)} on {stamp}.</p>",
            f"<script>{_SCRIPT}</script>",
            "</body></html>",
            "",
        ]
    )


def _e(text: Any) -> str:
    """``text`` for the page: HTML's marks escaped, and control characters (an
    error's terminal colours, a NUL) shown as escapes (``\\x1b``), which HTML
    does not allow and browsers drop or show as boxes."""
    return html.escape(printable(str(text)), quote=True)


def _definition_list(items: list[tuple[str, str]]) -> str:
    inner = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    return f"<dl>{inner}</dl>"


def _leaderboard_table(frame: pd.DataFrame, best: tuple[str, str] | None) -> str:
    rows = [dict(r) for r in frame.to_dict(orient="records")]
    return _table("leaderboard", list(frame.columns), rows, best_keys={best} if best else set())


def _table(table_id: str, columns: list[str], rows: list[dict[str, Any]], *, best_keys: set) -> str:
    text = {c for c in columns if any(isinstance(r.get(c), str) for r in rows)}
    head = "".join(
        f"<th scope='col'{' class=text' if c in text else ''}>{_e(c)}</th>" for c in columns
    )
    decimals = {c: _decimals([r.get(c) for r in rows]) for c in columns if c not in text}
    lines = []
    for row in rows:
        is_best = (row.get("strategy"), row.get("trial_id")) in best_keys
        cells = "".join(
            _cell(column, row.get(column), decimals.get(column, 3)) for column in columns
        )
        lines.append(f"<tr{' class=best' if is_best else ''}>{cells}</tr>")
    return (
        f"<div class='wrap'><table id='{_e(table_id)}' class='sortable'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table></div>"
    )


def _decimals(values: list[Any], most: int = 3) -> int:
    """The decimals that show every number of a column as it is, up to ``most``: a
    column's numbers alike (``1010.0``, ``1016.4``; were ``1010``, ``1016.400``)."""
    numbers = [
        float(v)
        for v in values
        if not _missing(v) and not isinstance(v, str) and type(v).__name__ not in ("bool", "bool_")
    ]
    for digits in range(most):
        if all(abs(round(v, digits) - v) <= 1e-9 * max(1.0, abs(v)) for v in numbers):
            return digits
    return most


def _cell(column: str, value: Any, decimals: int = 3) -> str:
    if _missing(value):
        return "<td data-sort=''></td>"
    if isinstance(value, str):
        classes = "text" + (f" status-{_e(value)}" if column == "status" else "")
        if len(value) <= _SHOWN:
            return f"<td class='{classes}'>{_e(value)}</td>"
        # Found by QA: the rest was in a title= tooltip alone, which a keyboard or a
        # touch screen cannot open and nobody can copy; <details> opens with either.
        shown = value[: _SHOWN - 1] + "\u2026"
        return (
            f"<td class='{classes}' data-sort='{_e(value)}'><details><summary>{_e(shown)}"
            f"</summary><div class='full'>{_e(value)}</div></details></td>"
        )
    if type(value).__name__ in ("bool", "bool_"):  # True/False, as the other files show them
        return f"<td class='text' data-sort='{int(value)}'>{value}</td>"
    number = float(value)
    if column in ("lambda", "learning_rate"):
        shown = f"{number:.3g}"
    elif column in _FOUR_DIGITS:
        shown = _number(number, 4)
    elif decimals == 0:
        shown = str(int(number)) if abs(number) < 1e15 else f"{number:.3g}"
    elif decimals < 3:  # every number of the column is exact at these decimals
        shown = f"{number:.{decimals}f}"
    else:
        shown = _number(number, 3)
    return f"<td data-sort='{number!r}'>{_e(shown)}</td>"


#: The characters of a text cell shown before it is opened (the terminal table's cut).
_SHOWN = 80

_FOUR_DIGITS = {"val_accuracy", "test_accuracy", "val_loss", "test_loss"}


def _number(value: Any, digits: int) -> str:
    if _missing(value):
        return "-"
    value = float(value)
    if value != 0 and abs(value) < 10 ** -(digits - 1):
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN and pandas.NA
    except TypeError:
        return True


def _compact_recipe(recipe: dict[str, Any]) -> str:
    import yaml

    def compact(value: Any) -> Any:
        if isinstance(value, dict):
            kept = {k: compact(v) for k, v in value.items()}
            return {k: v for k, v in kept.items() if v is not None and v != {}}
        if isinstance(value, list):
            return [compact(v) for v in value]
        return value

    shown = compact(recipe)
    if isinstance(recipe.get("strategies"), dict):  # one left at its defaults ({}) ran too
        shown["strategies"] = {k: compact(v) for k, v in recipe["strategies"].items()}
    return yaml.safe_dump(shown, sort_keys=False, default_flow_style=None, allow_unicode=True)


def _figure_html(plot: Plot) -> str:
    caption = f"<figcaption><b>{_e(plot.title)}.</b> {_e(plot.caption)}</figcaption>"
    if plot.png is None:
        return (
            f"<figure><figcaption><b>{_e(plot.title)}.</b></figcaption>"
            f"<p class='note'>{_e(plot.note or 'Not drawn.')}</p></figure>"
        )
    data = base64.b64encode(plot.png).decode("ascii")
    return (
        f"<figure><img alt='{_e(plot.title)}' src='data:image/png;base64,{data}'>{caption}</figure>"
    )


# ---------------------------------------------------------------- plots


def _draw(title: str, caption: str, draw: Callable[[], Figure]) -> Plot:
    """Draw one plot; a plot with nothing to show or a failure becomes a note.

    Its text is drawn as it is written: a ``$`` in a run's folder name is no
    maths (found by QA: ``$x^$`` failed the chart with mathtext's parse error).
    """
    from matplotlib import rc_context

    try:
        with rc_context({"text.parse_math": False}):
            return Plot(title, caption, png=_png(draw()))
    except _Skip as skip:
        return Plot(title, caption, note=f"Left out: {skip}.")
    except Exception as exc:
        log.warning("could not draw the plot %r: %s: %s", title, type(exc).__name__, exc)
        log.debug("the plot %r", title, exc_info=True)  # where, for a debug log
        return Plot(
            title, caption, note=f"This plot could not be drawn: {type(exc).__name__}: {exc}"
        )


def _run_plots(run: RunRecord) -> list[tuple[str, str, Callable[[], Figure]]]:
    metric = run.metric
    unscored = ""
    frame = run.leaderboard
    statuses = frame.loc[~frame.index.isin(run.scored().index), "status"]
    if len(statuses):  # by status: "failed or diverged" named an error neither (found by QA)
        counts = statuses.fillna("no status").astype(str).value_counts()
        said = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        were = "trial without a score is" if len(statuses) == 1 else "trials without a score are"
        unscored = f" {len(statuses)} {were} not shown ({said})."
    plots: list[tuple[str, str, Callable[[], Figure]]] = [
        (
            f"{metric} of every trial by strategy",
            "One point per trial (circles finished, triangles pruned by the scheduler); "
            f"the star marks each strategy's best.{unscored}",
            lambda: _metric_by_strategy(run),
        ),
        (
            "Learning curves",
            f"{metric} per epoch of every trial, one panel per strategy (solid: validation, "
            f"dashed: {training_twin(metric)} on the training data), from each trial's "
            "history.csv.",
            lambda: _learning_curves(run),
        ),
    ]
    for parameter, scale in PARAMETER_PLOTS:
        axis = {"log": "log scale", "log2": "log2 scale", "linear": "linear scale"}[scale]
        plots.append(
            (
                f"{metric} against {parameter}",
                f"One point per scored trial of the strategies that search {parameter} ({axis}).",
                lambda parameter=parameter, scale=scale: _metric_against(run, parameter, scale),
            )
        )
    plots.append(
        (
            f"{metric} against fit time",
            "One point per trial with a fit time; the line and the rings mark the Pareto "
            f"front: trials no other trial beats on both {metric} and fit time.",
            lambda: _pareto(run),
        )
    )
    return plots


def _new_figure(width: float = 7.0, height: float = 4.2) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A Figure with its own Agg canvas: no pyplot, so no global backend or state.
    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    import warnings

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # A run or class name in a script DejaVu Sans lacks (中文): drawn as boxes, and
        # said over the console three times a page.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


#: Past this many runs, a comparison draws a line per strategy over the runs, not
#: a bar per run and strategy.
MAX_BAR_RUNS = 10
#: The widest a chart is drawn (inches, at ``_DPI``).
MAX_FIGURE_INCHES = 30.0


def _colours(names: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: palette(i % palette.N) for i, name in enumerate(names)}


def _metric_by_strategy(run: RunRecord) -> Figure:
    import numpy as np

    frame = run.scored()
    if frame.empty:
        raise _Skip(f"no trial has a value of {run.metric}")
    strategies = [s for s in run.strategies if (frame["strategy"] == s).any()]
    colours = _colours(run.strategies)
    figure = _new_figure(max(5.0, 1.4 * len(strategies) + 2.5), 4.2)
    ax = figure.subplots()
    rng = np.random.default_rng(0)
    for x, strategy in enumerate(strategies):
        rows = frame[frame["strategy"] == strategy]
        for status, marker in _MARKERS.items():
            part = rows[rows["status"] == status]
            if part.empty:
                continue
            jitter = rng.uniform(-0.12, 0.12, len(part)) if len(part) > 1 else np.zeros(1)
            ax.scatter(
                x + jitter,
                part[run.metric],
                marker=marker,
                s=36,
                color=colours[strategy],
                alpha=0.8,
                edgecolors="white",
                linewidths=0.5,
            )
        best = _best_value(rows[run.metric], run.mode)
        ax.scatter([x], [best], marker="*", s=220, color=colours[strategy], edgecolors="black")
    ax.set_xticks(range(len(strategies)), strategies)
    ax.set_xlim(-0.6, len(strategies) - 0.4)
    ax.set_ylabel(run.metric)
    ax.grid(axis="y", alpha=0.3)
    return figure


def _best_value(values: pd.Series, mode: str) -> float:
    return float(values.max() if mode == "max" else values.min())


#: A validation metric's training twin in a history.csv, where the names differ:
#: ``val_loss`` is the cross-entropy alone (graftune's), Keras' training ``loss``
#: adds lambda * R(theta); ``val_objective`` is Keras' own, with the penalty.
_TRAINING_TWINS = {"val_loss": "cross_entropy", "val_objective": "loss"}


def training_twin(metric: str) -> str:
    """The history.csv column that measures on the training data what ``metric``
    measures on the validation data (so the curves compare like with like)."""
    return _TRAINING_TWINS.get(metric, metric.removeprefix("val_"))


def _learning_curves(run: RunRecord) -> Figure:
    import pandas as pd
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    from orchestrator.trial import trial_dir

    curves: dict[str, list[tuple[str, pd.DataFrame]]] = {}
    for row in run.leaderboard.itertuples(index=False):
        path = trial_dir(run.run_dir, str(row.strategy), str(row.trial_id)) / "history.csv"
        if not path.is_file():
            continue
        try:
            history = pd.read_csv(path)
        except (OSError, ValueError) as exc:  # emptied, cut short, edited (pandas' errors)
            # That trial's curve alone is left out; the others are drawn. A failed
            # trial's process died as it wrote the file: nothing to warn of (found by QA).
            if str(row.status) != "failed":
                log.warning("%s, left out of the learning curves", unreadable(path, exc))
            continue
        if run.metric in history and not history.empty:
            # Found by QA: a diverged trial's curve looked like a finished one's.
            label = str(row.trial_id) + ("" if row.status == "ok" else f" ({row.status})")
            curves.setdefault(str(row.strategy), []).append((label, history))
    if not curves:
        raise _Skip(f"no trial has a history.csv with {run.metric}")
    strategies = [s for s in run.strategies if s in curves]
    columns = min(3, len(strategies))
    lines = math.ceil(len(strategies) / columns)
    figure = _new_figure(4.2 * columns + 0.6, 3.4 * lines + 0.4)
    axes = figure.subplots(lines, columns, squeeze=False, sharey=True)
    train_metric = training_twin(run.metric)
    palette = colormaps["viridis"]
    for ax, strategy in zip(axes.flat, strategies, strict=False):
        trials = curves[strategy]
        for i, (trial_id, history) in enumerate(trials):
            colour = palette(i / max(1, len(trials) - 1) * 0.9)
            epochs = history["epoch"] if "epoch" in history else range(1, len(history) + 1)
            ax.plot(epochs, history[run.metric], color=colour, marker=".", label=trial_id)
            if train_metric in history:
                ax.plot(epochs, history[train_metric], color=colour, linestyle="--", alpha=0.6)
        ax.set_title(strategy)
        ax.set_xlabel("epoch")
        # Whole epochs, one tick too (found by QA: a 1-epoch search's axis read 0.945 ...
        # 1.050, MaxNLocator's fallback where fewer than two whole numbers are in view).
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        first = min(float(h["epoch"].min()) if "epoch" in h else 1.0 for _, h in trials)
        last = max(float(h["epoch"].max()) if "epoch" in h else float(len(h)) for _, h in trials)
        ax.set_xlim(first - 0.5, last + 0.5)
        ax.grid(alpha=0.3)
        if len(trials) <= 8:
            ax.legend(fontsize=7, loc="best")
    for ax in axes.flat[len(strategies) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(run.metric)
    return figure


def _metric_against(run: RunRecord, parameter: str, scale: str) -> Figure:
    import pandas as pd

    frame = run.scored()
    if parameter not in run.leaderboard or run.leaderboard[parameter].isna().all():
        raise _Skip(f"no trial of this run has the parameter {parameter}")
    values = pd.to_numeric(frame[parameter], errors="coerce")
    rows = frame[values.notna()]
    if rows.empty:
        raise _Skip(f"no trial with {parameter} has a value of {run.metric}")
    colours = _colours(run.strategies)
    figure = _new_figure(6.4, 4.0)
    ax = figure.subplots()
    for strategy in run.strategies:
        part = rows[rows["strategy"] == strategy]
        if part.empty:
            continue
        for status, marker in _MARKERS.items():
            sub = part[part["status"] == status]
            if not sub.empty:
                ax.scatter(
                    pd.to_numeric(sub[parameter]),
                    sub[run.metric],
                    marker=marker,
                    s=40,
                    color=colours[strategy],
                    alpha=0.85,
                    label=strategy if status == "ok" or part["status"].ne("ok").all() else None,
                )
    x = pd.to_numeric(rows[parameter])
    # One value (a range of equal ends): no log scale of one point (matplotlib
    # warned of singular limits on the console, found by QA).
    if scale in ("log", "log2") and (x > 0).all() and x.nunique() > 1:
        ax.set_xscale("log", base=2 if scale == "log2" else 10)
        if scale == "log2":
            ticks = sorted(set(x.tolist()))
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
    elif scale == "linear":
        from matplotlib.ticker import MaxNLocator

        # Integer ticks, with room around a single value (all trials at one depth).
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(float(x.min()) - 0.5, float(x.max()) + 0.5)
    ax.set_xlabel(parameter)
    ax.set_ylabel(run.metric)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # none when no trial has a score
        ax.legend(fontsize=8)
    return figure


def pareto_front(points: Sequence[tuple[float, float]], mode: str = "max") -> list[int]:
    """The indices of the points no other point beats on both cost and score.

    Args:
        points: ``(cost, score)`` pairs; lower cost is better.
        mode: ``max`` if a larger score is better, ``min`` if smaller.

    Returns:
        The indices of the Pareto-optimal points, cheapest first.
    """
    sign = 1.0 if mode == "max" else -1.0
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -sign * points[i][1]))
    front: list[int] = []
    best = -math.inf
    for i in order:
        score = sign * points[i][1]
        if score > best:
            front.append(i)
            best = score
    return front


def _pareto(run: RunRecord) -> Figure:
    frame = run.scored()
    frame = frame[frame["fit_seconds"].notna()]
    if frame.empty:
        raise _Skip(f"no trial has both a fit time and a value of {run.metric}")
    colours = _colours(run.strategies)
    figure = _new_figure(6.8, 4.2)
    ax = figure.subplots()
    for strategy in run.strategies:
        part = frame[frame["strategy"] == strategy]
        if not part.empty:
            ax.scatter(
                part["fit_seconds"], part[run.metric], s=40, color=colours[strategy], label=strategy
            )
    points = list(
        zip(frame["fit_seconds"].astype(float), frame[run.metric].astype(float), strict=True)
    )
    front = [points[i] for i in pareto_front(points, run.mode)]
    xs = [p[0] for p in front]
    ys = [p[1] for p in front]
    ax.step(xs, ys, where="post", color="black", linewidth=1, alpha=0.7, label="Pareto front")
    ax.scatter(xs, ys, s=150, facecolors="none", edgecolors="black", linewidths=1.2)
    ids = frame["trial_id"].astype(str).tolist()
    if len(set(ids)) < len(ids):  # keras-tuner's kt0, kt1, ... of each strategy (found by QA)
        ids = (frame["strategy"].astype(str) + "/" + frame["trial_id"].astype(str)).tolist()
    for i in pareto_front(points, run.mode):
        ax.annotate(ids[i], points[i], textcoords="offset points", xytext=(6, 4), fontsize=7)
    ax.set_xlabel("fit seconds")
    ax.set_ylabel(run.metric)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # none when no trial has a score
        ax.legend(fontsize=8)
    return figure


def _comparison_chart(
    runs: Sequence[RunRecord], labels: Sequence[str], metric: str, mode: str
) -> Figure:
    strategies: list[str] = []
    for run in runs:
        strategies += [s for s in run.strategies if s not in strategies]
    series: dict[str, list[float | None]] = {}
    for run, label in zip(runs, labels, strict=True):
        best = _best_per_strategy(run, metric, mode)
        series[label] = [
            float(best[s][metric]) if best.get(s) is not None else None for s in strategies
        ]
    if all(v is None for values in series.values() for v in values):
        raise _Skip(f"no run has a trial with a value of {metric}")
    if len(runs) > MAX_BAR_RUNS:
        return _runs_chart(labels, strategies, series, metric)
    figure = _new_figure(max(6.0, 1.2 * len(strategies) * max(1, len(runs)) / 2 + 3), 4.4)
    _bars(figure.subplots(), strategies, series, ylabel=metric, errors=None)
    return figure


def _runs_chart(
    labels: Sequence[str],
    strategies: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    metric: str,
) -> Figure:
    """Many runs: a run per place along the x axis, in the order given, a line
    of markers per strategy (a bar per run and strategy drew 25 runs 48 inches
    wide, ten colours for 25 runs, and a legend taller than the plot)."""
    import numpy as np

    shown = _tick_labels(labels)
    # The labels, turned 60 degrees, take about 0.05 inches of height a character.
    height = 3.5 + 0.05 * max(len(label) for label in shown)
    figure = _new_figure(min(MAX_FIGURE_INCHES, max(7.0, 0.3 * len(labels) + 3)), height)
    ax = figure.subplots()
    positions = np.arange(len(labels))
    colours = _colours(strategies)
    handles = []
    for index, strategy in enumerate(strategies):
        values = [series[label][index] for label in labels]
        (line,) = ax.plot(
            positions,
            [np.nan if v is None else v for v in values],
            marker="o",
            markersize=4,
            linewidth=1,
            color=colours[strategy],
        )
        handles.append(line)
    ax.set_xticks(positions, shown, rotation=60, ha="right", rotation_mode="anchor", fontsize=7)
    ax.set_ylabel(metric)
    ax.set_xlabel("run")
    ax.grid(alpha=0.3)
    # Given: a "_name" is shown too; beside the plot, not over its points.
    ax.legend(handles, list(strategies), fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def _tick_labels(labels: Sequence[str], longest: int = 40) -> list[str]:
    """Run names to set along an axis: one longer than ``longest`` characters
    keeps its start and its end (where a run's time is), unless two would then
    read alike (found by QA: 40 names of 80 characters left the plot an inch)."""
    head = longest // 2 - 1
    tail = longest - head - 1
    cut = [
        label if len(label) <= longest else f"{label[:head]}\u2026{label[-tail:]}"
        for label in labels
    ]
    return cut if len(set(cut)) == len(set(labels)) else list(labels)


# ---------------------------------------------------------------- charts for benchmarks


def _bars(
    ax: Axes,
    categories: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    ylabel: str,
    errors: Mapping[str, Sequence[float | None]] | None,
    log_scale: bool = False,
) -> None:
    import numpy as np

    n = max(1, len(series))
    width = 0.8 / n
    positions = np.arange(len(categories))
    handles = []
    for i, (label, values) in enumerate(series.items()):
        heights = [np.nan if v is None else float(v) for v in values]
        error = None
        if errors is not None and label in errors:
            error = [0.0 if e is None else float(e) for e in errors[label]]
        bars = ax.bar(
            positions + (i - (n - 1) / 2) * width,
            heights,
            width * 0.95,
            yerr=error,
            capsize=3 if error else 0,
        )
        handles.append(bars)
        ax.bar_label(
            bars, labels=["" if h != h else f"{h:.3g}" for h in heights], fontsize=7, padding=2
        )
    ax.set_xticks(positions, list(categories))
    ax.set_ylabel(ylabel)
    if log_scale:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        # Handles and labels given: a label with a leading "_" (a run folder's name)
        # is shown, where matplotlib leaves such a label out of a legend it finds.
        # Beside the plot, not over it (found by QA: over bars and their values).
        ax.legend(handles, list(series), fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def save_bar_chart(
    path: str | Path,
    categories: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str = "",
    ylabel: str = "",
    errors: Mapping[str, Sequence[float | None]] | None = None,
    log_scale: bool = False,
) -> Path:
    """Write a (grouped) bar chart as a PNG, for benchmark scripts.

    Args:
        path: The PNG file to write (folders are created).
        categories: The labels along the x axis.
        series: One bar per category for each series, e.g. ``{"median s": [...]}`` or
            ``{"cached": [...], "uncached": [...]}``; ``None`` leaves a gap.
        title: The chart's title.
        ylabel: The y axis label.
        errors: Optional error-bar half-lengths, keyed like ``series``.
        log_scale: A logarithmic y axis.

    Returns:
        The path written.

    Example:
        >>> save_bar_chart("bench.png", ["fifo", "asha"], {"median s": [12.0, 7.5]})  # doctest: +SKIP
    """
    figure = _new_figure(max(5.0, 0.9 * len(categories) * max(1, len(series)) + 2.0), 4.0)
    ax = figure.subplots()
    _bars(ax, categories, series, ylabel=ylabel, errors=errors, log_scale=log_scale)
    if title:
        ax.set_title(title)
    return _save(figure, path)


def save_line_chart(
    path: str | Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    log_x: bool = False,
    log_y: bool = False,
) -> Path:
    """Write a line chart of one or more ``(x, y)`` series as a PNG, for benchmark scripts.

    Args:
        path: The PNG file to write (folders are created).
        series: ``{label: (xs, ys)}``, one line with markers each.
        title: The chart's title.
        xlabel: The x axis label.
        ylabel: The y axis label.
        log_x: A logarithmic x axis.
        log_y: A logarithmic y axis.

    Returns:
        The path written.
    """
    figure = _new_figure(6.4, 4.0)
    ax = figure.subplots()
    for label, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker="o", label=label)
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _save(figure, path)


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png(figure))
    return path


__all__ = [
    "COMPARE_FILE",
    "REPORT_FILE",
    "RunRecord",
    "pareto_front",
    "read_run",
    "render_comparison",
    "render_report",
    "save_bar_chart",
    "save_line_chart",
    "write_comparison",
    "write_report",
    "write_report_safely",
]
