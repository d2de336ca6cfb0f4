"""Trial results -> a ranked pandas DataFrame; CSV, Markdown and HTML files.

One row per trial of every strategy. Trials with a value of the metric are
ranked by it (``ok`` and ``pruned`` alike: a pruned trial's value is the one it
had when the scheduler stopped it); ``error`` and ``diverged`` rows have no rank
and come last. Files are written atomically, so a crash never leaves a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import html
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import one_line, shortened, temporary_name
from orchestrator.paths import is_stream, written_path

if TYPE_CHECKING:
    import pandas as pd

    from orchestrator.trial import TrialResult

#: Columns before the searched parameters.
LEAD_COLUMNS = ["rank", "strategy", "trial_id", "status"]
#: Metric columns, validation then test.
METRIC_COLUMNS = ["val_accuracy", "test_accuracy", "val_loss", "test_loss"]
#: Cost and diagnosis columns, after the parameters.
TAIL_COLUMNS = [
    "epochs",
    "fit_seconds",
    "params_total",
    "params_trainable",
    "peak_memory_mb",
    "retries",
    # The Ray node (IP/NODEID8) the trial ran on.
    "node",
    "error",
    "note",
]
#: The order searched parameters are shown in; others follow alphabetically.
PARAMETER_ORDER = [
    "frozen_layers",
    "head_width",
    "head_depth",
    "hidden_layers",
    "width",
    "regularizer",
    "lambda",
    "learning_rate",
]
FILES = {"csv": "leaderboard.csv", "md": "leaderboard.md", "html": "leaderboard.html"}
#: The type of each of graftune's own columns, in a leaderboard built and one
#: read back: counts ``Int64`` (missing: ``<NA>``), measures ``float64``
#: (``NaN``), text ``object`` (missing: ``None``).
COLUMN_TYPES: dict[str, str] = {
    "rank": "Int64",
    "strategy": "object",
    "trial_id": "object",
    "status": "object",
    **dict.fromkeys(METRIC_COLUMNS, "float64"),
    "epochs": "Int64",
    "fit_seconds": "float64",
    "params_total": "Int64",
    "params_trainable": "Int64",
    "peak_memory_mb": "float64",
    "retries": "Int64",
    "node": "object",
    "error": "object",
    "note": "object",
}


def parameter_columns(results: Iterable[TrialResult]) -> list[str]:
    """Every searched parameter that appears in some trial's configuration."""
    seen: set[str] = set()
    for result in results:
        seen.update(result.config)
    ordered = [p for p in PARAMETER_ORDER if p in seen]
    return ordered + sorted(seen - set(ordered))


def build_leaderboard(results: list[TrialResult], *, metric: str, mode: str) -> pd.DataFrame:
    """Rank every trial by ``metric`` (``max`` or ``mode``) into one DataFrame."""
    import pandas as pd

    params = parameter_columns(results)
    rows = []
    for result in results:
        row: dict[str, Any] = {
            "strategy": result.strategy,
            "trial_id": result.trial_id,
            "status": result.status,
        }
        for column in METRIC_COLUMNS:
            row[column] = getattr(result, column)
        for param in params:
            row[param] = result.config.get(param)
        for column in TAIL_COLUMNS:
            row[column] = getattr(result, column)
        rows.append(row)
    columns = LEAD_COLUMNS + METRIC_COLUMNS + params + TAIL_COLUMNS
    frame = pd.DataFrame(rows, columns=[c for c in columns if c != "rank"])
    types = {**COLUMN_TYPES, **_parameter_types(results, params)}
    if frame.empty:
        frame.insert(0, "rank", pd.Series(dtype="Int64"))
        return _typed(frame, types)
    frame[METRIC_COLUMNS] = frame[METRIC_COLUMNS].astype("float64")
    rankable = frame["status"].isin(["ok", "pruned"]) & frame[metric].notna()
    ascending = mode == "min"
    # Among equal scores the smaller model ranks first, then the one that trained
    # fewer epochs, then the earlier strategy (in the order the results came:
    # the recipe's) and trial. Never wall time: one seed ranks one way.
    strategies = {name: i for i, name in enumerate(dict.fromkeys(frame["strategy"]))}
    # The strategies' order, held for the sort in the one column no parameter can be
    # named, "rank", which is not there yet (a parameter "_strategy" lost its column).
    frame["rank"] = frame["strategy"].map(strategies)
    keys = [metric, "params_total", "epochs", "rank", "trial_id"]
    order = frame[rankable].sort_values(
        keys, ascending=[ascending, True, True, True, True], na_position="last", kind="stable"
    )
    rest = frame[~rankable].sort_values(["rank", "trial_id"])
    order, rest = order.drop(columns="rank"), rest.drop(columns="rank")
    frame = pd.concat([order, rest], ignore_index=True)
    ranks = pd.array([*range(1, len(order) + 1), *([pd.NA] * len(rest))], dtype="Int64")
    frame.insert(0, "rank", ranks)
    return _typed(frame, types)


def _parameter_types(results: list[TrialResult], params: list[str]) -> dict[str, str]:
    """The types of the parameter columns that pandas would not keep as written:
    whole numbers ``Int64`` (a missing one would make them floats), and a column
    with no value at all ``object`` (as text, read back)."""
    types = {}
    for column in params:
        values = [r.config[column] for r in results if r.config.get(column) is not None]
        if not values:
            types[column] = "object"
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            types[column] = "Int64"
    return types


def _typed(frame: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    """``frame`` with its columns in ``types`` of their type, and every text column's
    missing values ``None`` (pandas reads them as ``NaN``)."""
    for column in frame.columns:
        kind = types.get(column, str(frame[column].dtype))
        if kind == "object":
            values = frame[column].astype(object)
            frame[column] = values.where(values.notna(), None)
        elif kind != str(frame[column].dtype):
            frame[column] = frame[column].astype(kind)
    return frame


def best_row(frame: pd.DataFrame) -> pd.Series | None:
    """The best-ranked trial that finished and saved its model, or ``None``."""
    finished = frame[(frame["status"] == "ok") & frame["rank"].notna()]
    return None if finished.empty else finished.iloc[0]


#: An underscore that Markdown may read as emphasis: not between two letters or digits.
_EMPHASIS_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")


def to_markdown(frame: pd.DataFrame) -> str:
    """The leaderboard as a Markdown table (blank cells for missing values).

    Cells are shown as :func:`_display` formats them (no re-reading of
    numbers), on one line, with ``|``, Markdown's marks (``*``, ``~``, an ``_``
    outside a word, ``[``, backticks) and HTML's ``<``, ``>`` and ``&`` escaped:
    an error message cannot split a row or render as markup.
    """

    def cell(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        escaped = html.escape(value, quote=False)
        for mark in ("\\", "|", "*", "~", "`", "["):  # a cell's text, never markup (links)
            escaped = escaped.replace(mark, "\\" + mark)
        # An underscore inside a word (scratch_mlp) is no emphasis: kept as it is.
        return _EMPHASIS_UNDERSCORE.sub(r"\\_", escaped)

    from pandas.api.types import is_numeric_dtype

    shown = _display(frame).apply(lambda column: column.map(cell))
    align = ["right" if is_numeric_dtype(frame[c]) else "left" for c in frame.columns]
    # The column names too: a plugin's dimension (found by security QA: raw HTML).
    shown.columns = [cell(str(name)) for name in shown.columns]
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def _number(value: Any, digits: int) -> str:
    """A score with ``digits`` decimals, or in e-notation where that would mislead."""
    if value == 0 or 10 ** -(digits - 1) <= abs(value) < 1e6:
        return f"{value:.{digits}f}"
    return f"{value:.2e}"  # tiny, or huge (a diverging loss of 1e20)


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard as the Markdown and HTML files show it: numbers as text,
    text on one line (the CSV keeps every character)."""
    shown = frame.copy()
    for column in METRIC_COLUMNS:
        shown[column] = shown[column].map(lambda v: "" if v != v or v is None else _number(v, 4))
    if "lambda" in shown:
        shown["lambda"] = shown["lambda"].map(lambda v: "" if v != v or v is None else f"{v:.3g}")
    if "learning_rate" in shown:
        shown["learning_rate"] = shown["learning_rate"].map(
            lambda v: "" if v != v or v is None else f"{v:.3g}"
        )
    from pandas.api.types import is_numeric_dtype

    for column in shown.columns:  # errors, notes, and a plugin's text dimensions
        if not is_numeric_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: one_line(v) if isinstance(v, str) else v)
    return shown.astype(object).where(shown.notna(), "")


#: ``leaderboard.html``: a page of its own (opened from a file, a fragment
#: without a charset shows non-ASCII text as the browser guesses).
_HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>table{{border-collapse:collapse;font:13px sans-serif}}
th,td{{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}}</style>
</head><body>
{table}
</body></html>
"""


def write_leaderboard(frame: pd.DataFrame, run_dir: Path) -> dict[str, Path]:
    """Write ``leaderboard.csv``, ``.md`` and ``.html`` into ``run_dir``, atomically."""
    paths = {}
    table = _display(frame).to_html(index=False, border=0, classes="leaderboard")
    title = html.escape(f"graftune leaderboard: {Path(run_dir).name}")
    texts = {
        "csv": frame.to_csv(index=False),
        "md": to_markdown(frame) + "\n",
        "html": _HTML_PAGE.format(title=title, table=table),
    }
    for kind, text in texts.items():
        path = Path(run_dir) / FILES[kind]
        atomic_write_text(path, text)
        paths[kind] = path
    return paths


def read_leaderboard(run_dir: Path) -> pd.DataFrame:
    """Read a run's ``leaderboard.csv`` back with its column types.

    The columns have the types :func:`build_leaderboard` gives them: the frame
    equals the one the run returned.

    Raises:
        RunDirError: ``run_dir`` has no ``leaderboard.csv`` (or does not exist),
            or the file is not a leaderboard as graftune writes it (emptied, cut
            short, edited: another separator, a column gone, text where numbers
            belong).
    """
    import pandas as pd

    from orchestrator.errors import RunDirError, bad_leaderboard, no_leaderboard

    path = Path(run_dir) / FILES["csv"]
    if not path.is_file():
        raise RunDirError(no_leaderboard(Path(run_dir)))  # as `graftune leaderboard` says
    text_columns = {c: str for c, kind in COLUMN_TYPES.items() if kind == "object"}
    try:
        written = path.read_text(encoding="utf-8")  # read once, parsed twice
        # Only an empty cell is missing: a searched choice may be the text "nan",
        # "None" or "NA", which pandas would otherwise read as missing too.
        frame = pd.read_csv(
            io.StringIO(written), keep_default_na=False, na_values=[""], dtype=text_columns
        )
        text = pd.read_csv(io.StringIO(written), dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise RunDirError(bad_leaderboard(run_dir, "is empty")) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        why = " ".join(str(exc).split())
        raise RunDirError(bad_leaderboard(run_dir, f"cannot be read as CSV ({why})")) from None
    missing = [c for c in LEAD_COLUMNS + METRIC_COLUMNS if c not in frame]
    if missing:
        problem = f"has no column {', '.join(map(repr, missing))}"
        if len(frame.columns) == 1:
            problem = "is not comma-separated (its header reads as one column)"
        raise RunDirError(bad_leaderboard(run_dir, problem))
    problem = _cut_short(written, path, len(frame))
    if problem:
        raise RunDirError(bad_leaderboard(run_dir, problem))
    for column in [*METRIC_COLUMNS, "fit_seconds", "peak_memory_mb"]:
        numeric = column not in frame or pd.api.types.is_numeric_dtype(frame[column])
        if not numeric and frame[column].notna().any():  # (no row: a header's text)
            problem = f"has other than numbers in its column {column!r}"
            raise RunDirError(bad_leaderboard(run_dir, problem))
    for column in ("rank", "epochs", "params_total", "params_trainable", "retries"):
        if column in frame:
            try:
                frame[column] = frame[column].astype("Int64")
            except (TypeError, ValueError):
                problem = f"has other than whole numbers in its column {column!r}"
                raise RunDirError(bad_leaderboard(run_dir, problem)) from None
    # The parameters' types as build_leaderboard gives them: an integer one that
    # some rows lack (another strategy's) reads as floats, but written as Int64,
    # its text has no decimal point, which a float column's always has.
    types = {}
    for column in frame.columns:
        if column in COLUMN_TYPES:
            continue
        written = text[column].dropna()
        if not len(written):
            types[column] = "object"
        elif frame[column].dtype == "int64" or (
            frame[column].dtype == "float64" and written.str.fullmatch(r"-?\d+").all()
        ):
            types[column] = "Int64"
    return _typed(frame, {**COLUMN_TYPES, **types})


def _cut_short(text: str, path: Path, rows: int) -> str | None:
    """How a ``leaderboard.csv`` that pandas reads shows that it was cut short, if it does.

    pandas fills a row's missing cells as empty, so a file cut inside a row read
    as one whose last trial has no scores. graftune writes every line whole (and
    atomically), and ``finished.json`` counts the rows of a finished run's.
    """
    import csv

    if not text.endswith("\n"):
        return "is cut short (its last line has no end)"
    # A cell as long as the file (an older run kept errors of any length): the csv
    # module's default limit of 128 KiB raised on one (found by QA).
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))
    try:
        records = list(csv.reader(io.StringIO(text)))
    finally:
        csv.field_size_limit(limit)
    for number, record in enumerate(records[1:], start=1):
        if len(record) != len(records[0]):
            return (
                f"is cut short or edited: its row {number} has {len(record)} cells, its header "
                f"{len(records[0])}"
            )
    try:
        trials = json.loads((path.parent / "finished.json").read_text())["trials"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(trials, int) and trials != rows:
        return f"is cut short or edited: it has {rows} rows, and its run ended with {trials} trials"
    return None


def to_json(frame: pd.DataFrame) -> str:
    """The leaderboard as a JSON list of rows (missing and infinite values as null).

    Numbers keep every digit the CSV gives them (``DataFrame.to_json`` rounds to
    10 decimal places: a ``lambda`` of 1.1999049779393521e-05 became 1.1999e-05,
    a probability of 1e-27 became 0); a float32 column's values are written as
    float32 shows them, as in the CSV (0.1, not 0.10000000149011612).
    """
    columns = [_json_values(frame.iloc[:, i]) for i in range(frame.shape[1])]
    names = [str(name) for name in frame.columns]
    rows = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    return json.dumps(rows, indent=2, default=str)


def _json_values(column: pd.Series) -> list[Any]:
    """A column's values as JSON takes them: Python numbers, ``None`` for missing."""
    import math

    import pandas as pd

    if column.dtype.kind == "f":
        # str() of a numpy float is its shortest exact form, in the column's precision.
        return [float(str(v)) if math.isfinite(v) else None for v in column.to_numpy()]
    import numpy as np

    values = []
    for value in column.to_numpy(dtype=object):
        if isinstance(value, np.ndarray):
            value = value.tolist()  # a list cell of a Parquet file, as pandas reads it
        if isinstance(value, (list, tuple, dict)):
            values.append(value)
            continue
        if hasattr(value, "item"):
            value = value.item()  # a numpy scalar in an object column
        missing = pd.isna(value) or (isinstance(value, float) and math.isinf(value))
        values.append(None if missing else value)
    return values


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to, moved onto ``path`` in one step.

    For files written by a library (a Keras model): readers see the old file or
    the whole new one, never half of one. What an earlier writer killed midway
    left there is removed first, so the caller must be the only writer (it holds
    the folder or a lock on it). If the ``with`` block raises, the temporary
    file is removed and ``path`` is left as it was.
    """
    if is_stream(path):  # a FIFO or /dev/stdout: written into, not replaced
        yield Path(path)  # by its own name: /dev/stdout's link to a pipe leads nowhere
        return
    path = written_path(path)
    stem = shortened(path.stem)
    for left in path.parent.glob(f"{glob.escape(stem)}.*.tmp{glob.escape(path.suffix)}"):
        left.unlink()
    tmp = path.with_name(f"{stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        synced(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    synced(path.parent)


def synced(path: Path) -> None:
    """Have the system put ``path`` (a file, or a folder's entries) on the disk now.

    Before a temporary file is renamed onto the real one, and the folder after:
    renamed first, a power loss could leave the new name on an empty file
    (the kill of a process cannot; only a machine that stops can). A file system
    that cannot (some network ones) is left to do as it does.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so readers never see half a file
    (:func:`atomic_write`)."""
    atomic_write(path, lambda to: to.write_text(text, encoding="utf-8"))


def atomic_write(path: str | Path, write: Callable[[Path], Any], *, replace: bool = True) -> None:
    """``write(a path)`` through a temporary file put in place in one step, so readers
    never see half a file.

    If a step fails, the temporary file is removed and ``path`` is as it was. A
    symbolic link stays one (its target is replaced), and a FIFO or a device
    (``/dev/stdout``) is written into. Without ``replace``, nothing that is at
    ``path`` by then (a file, a link) is replaced or followed: the file is put
    there by a hard link, which fails where a name is (a file system without hard
    links is looked at, then renamed onto).

    Raises:
        FileExistsError: Without ``replace``, ``path`` is there.
    """
    if is_stream(path):  # by its own name: /dev/stdout's link to a pipe leads nowhere
        write(Path(path))
        return
    target = written_path(path) if replace else Path(path)
    tmp = target.with_name(temporary_name(target.name))
    try:
        write(tmp)
        synced(tmp)
        if replace:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # fails where a name is: never replaces one
            except FileExistsError:
                raise
            except OSError:  # no hard links here: looked at, then renamed
                if os.path.lexists(target):
                    raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
                os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # never a stray temporary file beside the target
    synced(target.parent)
