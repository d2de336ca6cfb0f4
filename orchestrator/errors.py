"""The one hierarchy of errors graftune raises on purpose.

The CLI turns each of them into one clear message and an exit status; nothing
here carries a traceback to the user unless ``--debug`` is given.
"""

from __future__ import annotations

import errno
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from difflib import get_close_matches
from pathlib import Path
from typing import Any


class GraftuneError(Exception):
    """Base class of every error graftune raises deliberately."""

    #: The exit status the CLI uses for this kind of error.
    exit_status: int = 1


class RecipeError(GraftuneError):
    """A recipe is wrong: names the file, the key path and what was expected.

    Args:
        message: What was expected, and what was found.
        file: The recipe file, when known.
        path: The key path inside the recipe, like ``search.scheduler``.
        line: The 1-based line of that key in the file, when known.
    """

    exit_status = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        path: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.path = path
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<recipe>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class RecipeErrors(RecipeError):
    """Several recipe errors found at once, reported together."""

    def __init__(self, errors: list[RecipeError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.message, file=first.file, path=first.path, line=first.line)

    def __str__(self) -> str:
        if len(self.errors) == 1:
            return str(self.errors[0])
        lines = [f"{len(self.errors)} problems in the recipe:"]
        # In the file's order (found in the order of the checks).
        ordered = sorted(self.errors, key=lambda e: (e.line is None, e.line or 0))
        lines += [f"  {e}" for e in ordered]
        return "\n".join(lines)


class DataError(GraftuneError):
    """A data source cannot be read or split as asked.

    Args:
        message: What went wrong and what was expected.
        key: The key of the data spec at fault (``source``, ``target``, ``split``,
            ``labels_per_class`` ...), so a recipe check can name its path.
        unset: The message is that ``key`` must be given (it has no default).
    """

    exit_status = 2

    def __init__(self, message: str, *, key: str | None = None, unset: bool = False) -> None:
        self.key = key
        self.unset = unset
        super().__init__(message)


class BaseModelError(GraftuneError):
    """A pretrained base cannot be loaded, downloaded or adapted to the data.

    Args:
        message: What went wrong and how to fix it.
        key: The key of the recipe's ``base:`` section at fault, when one is.
    """

    exit_status = 2

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


class PluginError(GraftuneError):
    """A plugin cannot be loaded or behaves against its contract.

    Args:
        message: What is wrong, naming the plugin.
        plugin: The plugin's name (its entry point's), when one plugin is at fault:
            ``graftune plugins`` lists the others without it.
    """

    exit_status = 3

    def __init__(self, message: str, *, plugin: str | None = None) -> None:
        self.plugin = plugin
        super().__init__(message)


class PluginLoadError(PluginError):
    """A plugin's entry point failed to import.

    Args:
        entry_point: The entry point's name.
        value: The entry point's value (``module:attr``).
        distribution: The distribution (and version) that declared it.
        cause: The exception raised on import.
    """

    def __init__(
        self, entry_point: str, value: str, distribution: str | None, cause: BaseException
    ):
        self.entry_point = entry_point
        self.value = value
        self.distribution = distribution
        where = (
            f"plugin {entry_point!r} ({value}) from distribution {distribution}"
            if distribution is not None
            else f"plugin module {entry_point!r} (--plugin)"
        )
        why = f"{type(cause).__name__}: {cause}"
        if isinstance(cause, SystemExit):
            why += " (it exits when imported: a script, not a plugin module?)"
        way_out = ""
        if distribution is not None:  # one broken plugin stops every command: say how on
            way_out = (
                f"; to do without it: pip uninstall {distribution.split()[0]}, or "
                f"plugins: {{disable: [{entry_point}]}} in a recipe"
            )
        super().__init__(f"{where} failed to import: {why}{way_out}", plugin=entry_point)


class DuplicateNameError(PluginError):
    """Two plugins registered the same name for a strategy, data source or base."""


class ClusterError(GraftuneError):
    """A Ray cluster cannot be reached, refuses us, or does not know a job."""

    exit_status = 4


class AddressMissing(ClusterError):
    """A command that talks to a cluster's dashboard was given no address: a
    usage error (nothing was tried), not a cluster that cannot be reached."""

    exit_status = 2


class BadAddress(ClusterError):
    """An address that cannot be a cluster's (empty, of another kind or scheme): a
    usage error (nothing was tried), not a cluster that cannot be reached."""

    exit_status = 2


class ClusterUnreachable(ClusterError):
    """Nothing answered at a cluster's address (it is down, or elsewhere now)."""


class RayStartError(ClusterError):
    """Embedded Ray did not start (a node that timed out on a busy machine, a
    temporary folder it cannot use); nothing was trained, ``--resume`` goes on."""


class JobNotFound(GraftuneError):
    """The cluster answered, and has no job of that id (a mistyped id, not a network fault)."""

    exit_status = 2


class StorageError(GraftuneError):
    """Storage cannot hold this run: node-local on a cluster, unreachable, or missing."""

    exit_status = 2


class SubmitError(StorageError):
    """A job cannot be submitted as asked (too large, no storage); nothing was sent."""


class CacheInUse(GraftuneError):
    """``graftune cache clear`` while a run on this machine uses the cache."""

    exit_status = 2


class BackendMissing(GraftuneError):
    """Keras' backend (``KERAS_BACKEND``, ``keras.json`` or TensorFlow) is not installed."""

    exit_status = 2


class RunFailed(GraftuneError):
    """A run finished but none of its trials succeeded.

    Args:
        message: How its trials ended, the most frequent errors, and its leaderboard.
        run_dir: The run directory (found by QA: from Python, only the message said it).
        leaderboard: Its leaderboard, every trial's row with its error.
    """

    exit_status = 1

    def __init__(self, message: str, *, run_dir: Path | None = None, leaderboard: Any = None):
        self.run_dir = run_dir
        self.leaderboard = leaderboard
        super().__init__(message)


class RunInProgress(GraftuneError):
    """A run was started in a process where another run is going on (in another thread)."""

    exit_status = 2


#: The exit status of a run stopped by SIGTERM: 128 + 15, as shells report it.
SIGTERM_STATUS = 143


class RunInterrupted(GraftuneError):
    """The user stopped a run (Ctrl+C, or SIGTERM): what ended is kept, ``--resume`` runs the rest.

    Args:
        message: What finished, what did not, and how to resume; the exception's
            text begins with how the run was stopped.
        run_dir: The run directory, or ``None`` if the run had made none yet.
        leaderboard: The finished trials' leaderboard, when it was written.
        by_sigterm: The run was sent SIGTERM, not Ctrl+C.
    """

    #: 128 + SIGINT: what a shell reports for a command stopped by Ctrl+C
    #: (:data:`SIGTERM_STATUS` for a run that was sent SIGTERM).
    exit_status = 130

    def __init__(
        self,
        message: str,
        *,
        run_dir: Path | None = None,
        leaderboard: Any = None,
        by_sigterm: bool = False,
    ) -> None:
        self.run_dir = run_dir
        self.leaderboard = leaderboard
        self.by_sigterm = by_sigterm  # found by QA: documented, and not kept
        if by_sigterm:
            self.exit_status = SIGTERM_STATUS
        how = "terminated (SIGTERM)" if by_sigterm else "interrupted"
        super().__init__(f"{how}: {message}")


class SearchInterrupted(Exception):
    """A search backend's search was stopped by the user before it ended.

    Raised by ``run_search`` of a backend (not a :class:`GraftuneError`: the
    run turns it into :class:`RunInterrupted` once it has written what finished).

    Args:
        finished: The results of the trials that ended, each once.
        stopped: How many trials were stopped midway (they run again on resume).
    """

    def __init__(self, finished: list[Any], stopped: int) -> None:
        self.finished = finished
        self.stopped = stopped
        super().__init__(f"search interrupted: {len(finished)} trials ended, {stopped} stopped")


class RunDirError(GraftuneError):
    """A run directory lacks what a command needs, or the path it would write to is taken."""

    exit_status = 2


class DiskFull(GraftuneError):
    """The disk (or the user's quota) filled while a run wrote its files.

    The message names the file and the run directory to resume once there is
    room again: the trials that ended are kept.
    """

    exit_status = 1


#: The errors of a write the machine has no room for: a full disk, a full quota, and
#: a file past the largest this process may write (EFBIG: ``ulimit -f``, a per-file
#: quota, a file system's own limit; found by QA: a trial's model cut off there was
#: ranked as the trial's error, and the run ended as if that trial had run).
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is the system saying the disk (or the user's quota) is full, or
    that a file outgrew the size this process may write."""
    return disk_full_error(exc) is not None


def disk_full_error(exc: BaseException) -> OSError | None:
    """The full disk's :class:`OSError` that ``exc`` is, or was raised from or while
    handling (a library that says it in its own exception); None if none is."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
            return exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


def no_room(exc: BaseException, where: str | Path) -> str:
    """What stopped a write to ``where`` that :func:`is_disk_full` says had no room,
    and what to do: ``no space left on the device of WHERE; free some``, for the
    caller to go on (``, then ...``, ``, or write elsewhere``)."""
    full = disk_full_error(exc)
    code = full.errno if full is not None else errno.ENOSPC
    if code == errno.EFBIG:
        return (
            f"a file grew past the largest this process may write, writing {where} "
            "(File too large: a file-size limit, as `ulimit -f` sets, a quota, or the file "
            "system's own); raise the limit"
        )
    if code == errno.EDQUOT:
        return f"the disk quota is exceeded on the device of {where}; free some of it"
    return f"no space left on the device of {where}; free some"


class OutputPathError(GraftuneError):
    """A file a command was told to write (``--out``) cannot be written there."""

    exit_status = 2


def check_output_file(path: Path, option: str = "--out") -> None:
    """Refuse, before any work, a file path that cannot be written as a new or replaced file.

    Raises:
        OutputPathError: ``path`` is a folder, or its folder does not exist, is
            a file, or is not writable.
    """
    from orchestrator.paths import is_stream, written_path

    path = Path(path)
    folder = written_path(path).absolute().parent
    if path.is_dir():
        problem = "is a folder; give a file name"
    elif is_stream(path):  # a FIFO or /dev/stdout: written into, in a folder of its own
        problem = None if os.access(path, os.W_OK) else "is not writable"
    elif not folder.exists():
        problem = f"its folder {folder} does not exist"
    else:
        problem = cannot_write_in(folder)
    if problem is not None:
        raise OutputPathError(f"{option} {path}: {problem}")


def ellipsized(text: str, limit: int, ellipsis: str = "…") -> str:
    """``text`` whole if it has at most ``limit`` characters, else cut to ``limit``
    with ``ellipsis`` at the end (a long error or value in a line)."""
    return text if len(text) <= limit else text[: limit - len(ellipsis)] + ellipsis


def ellipsized_in_middle(text: str, limit: int, ellipsis: str = "…") -> str:
    """``text`` whole if it has at most ``limit`` characters, else its start and end
    around ``ellipsis``, ``limit`` characters in all: a path, whose end names the file
    (found by QA: a run directory past the path limit was said whole, 4,000 characters)."""
    if len(text) <= limit:
        return text
    head = (limit - len(ellipsis)) // 2
    tail = limit - len(ellipsis) - head
    return text[:head] + ellipsis + text[len(text) - tail :]


def without_credentials(text: str) -> str:
    """``text`` with the password of any URL in it masked (``s3://KEY:***@bucket``,
    ``http://alice:***@host``): an error printed to a console ends up in logs."""
    import re

    # The password runs to the last "@" of the URL: it may hold "/" or "@" itself
    # (AWS secret keys hold "/").
    return re.sub(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@'\"]*):[^\s'\"]*@", r"\1:***@", text)


#: Unicode's bidirectional controls (embeddings, overrides, isolates, marks): text
#: with them shows in another order than it is written ("Trojan Source"), in a
#: terminal and in a browser alike. Found by security QA: a strategy's error with
#: U+202E reached the live view, the leaderboard's files and report.html raw.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def printable(text: str) -> str:
    """``text`` with its control characters (a terminal's escape sequences, which
    could clear the screen or fake output) shown as escapes (``\\x1b``), and
    Unicode's bidirectional controls too (``\\u202e``, which would show the text
    around it in another order); its line breaks and tabs kept."""
    return "".join(
        f"\\x{ord(ch):02x}"
        if (ord(ch) < 32 or 127 <= ord(ch) < 160) and ch not in "\n\t"
        else f"\\u{ord(ch):04x}"
        if ch in BIDI_CONTROLS
        else ch
        for ch in text
    )


def one_line(text: str) -> str:
    """``text`` on one line for a terminal or a table cell: its whitespace runs
    as one space, and control characters (a terminal's escape sequences, which
    could clear the screen or fake output) shown as escapes (``\\x1b``)."""
    return " ".join(printable(text).split())


def echoed(value: Any, limit: int = 160) -> str:
    """``repr(value)`` as an error message quotes it, cut to ``limit`` characters:
    a value that is a long list (a choice of 5000 numbers, a list YAML aliases
    repeat) made a line of tens of KB, or megabytes."""
    return ellipsized(repr(value), limit)


def written(value: Any, limit: int = 160) -> str:
    """A recipe's value as a message quotes it, in YAML's spelling where Python's
    differs (``null``, ``true``, ``2024-01-01``: found by QA, "got
    datetime.date(2024, 1, 1)" for a name YAML reads as a date), cut to ``limit``
    characters as :func:`echoed` cuts it."""
    return ellipsized(_as_yaml(value), limit)


def _as_yaml(value: Any) -> str:
    import datetime

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.date):  # a datetime too: YAML reads both
        return f"{value} (a date, as YAML reads it unquoted)"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_as_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_as_yaml(k)}: {_as_yaml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def first_few(items: Sequence[str], few: int) -> str:
    """``items`` joined by commas, the first ``few`` of them and ``...`` for the rest."""
    return ", ".join(items[:few]) + (", ..." if len(items) > few else "")


def quoted(names: Sequence[Any], limit: int = 20) -> str:
    """``names`` quoted for a message, all but the first ``limit`` elided with their
    count: a table of thousands of columns made an error of tens of KB (found by QA),
    and each cut in its middle past :data:`NAME_LIMIT` characters (:func:`short_repr`)."""
    shown = ", ".join(short_repr(n) for n in names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names) - limit} more)"


#: The most characters of one name (a class, a column) a message quotes.
NAME_LIMIT = 60


def short_repr(value: Any) -> str:
    """``repr(value)``, cut in its middle past :data:`NAME_LIMIT` characters: a text
    column taken as the target has class names of thousands of characters, and an
    error quoting four of them was one line of 20 KB (found by QA)."""
    return ellipsized_in_middle(repr(value), NAME_LIMIT)


def shortened(name: str) -> str:
    """``name`` cut to at most 200 bytes (whole characters): room for what a
    temporary name adds within a file system's 255 bytes."""
    import os

    return os.fsencode(name)[:200].decode(errors="ignore")


def temporary_name(name: str) -> str:
    """A hidden name, unique to this process, to write ``name`` under before it is
    renamed into place; short enough for a file system's 255 bytes whatever
    ``name`` is (the whole of a long legal name, with the suffix, was not).
    :data:`TEMPORARY_NAME` matches it."""
    import os

    return f".{shortened(name)}.{os.getpid()}.tmp"


#: What :func:`temporary_name` gives, its writer's process id in group 1.
TEMPORARY_NAME = re.compile(r"\..+\.(\d+)\.tmp")


def cannot_make_in(path: Path, *, writable: bool = True) -> str | None:
    """Why this process cannot make ``path`` (or what it holds), folders above it
    included: the nearest of ``path`` and its folders that exists must be a folder
    it may write in (:func:`cannot_write_in`; a folder at all, where not
    ``writable``), and none on the way a link to nothing. ``None``: it can."""
    import os

    path = Path(path).absolute()
    for place in (path, *path.parents):
        if place.exists():
            if not writable:
                return None if place.is_dir() else f"{place} is a file, not a folder"
            return cannot_write_in(place)
        if place.is_symlink():  # a link to nothing: making it would say "File exists"
            target = os.readlink(place)
            end = Path(os.path.realpath(place))  # the last of a chain of links
            if end != Path(os.path.abspath(place.parent / target)):
                return f"{place} is a link to {target}, which leads to {end}, which does not exist"
            return f"{place} is a link to {target}, which does not exist"
    return None  # unreachable: "/" exists


def cannot_write_in(folder: Path) -> str | None:
    """Why this process cannot make files in the existing ``folder`` (``None``: it can)."""
    import os

    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # root passes os.access everywhere, on /proc and /sys too (found by QA:
        # validate said ok, and the run failed after its data): a folder made and
        # removed at once says it.
        import tempfile

        try:
            os.rmdir(tempfile.mkdtemp(prefix=".graftune-check-", dir=folder))
        except OSError as exc:
            # "/proc is not writable (No such file or directory)" read as if the
            # folder was missing (found by QA): say what was tried.
            return f"{folder} is not writable (making a folder in it failed: {exc.strerror or exc})"
    return None


def missing_run_dir(path: Path) -> str | None:
    """What to say when ``path`` is not even a folder (``None`` when it is one).

    Commands given a run directory say this before what the folder lacks.
    """
    path = Path(path)
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_dir():
        return f"{path} is a file, not a run directory"
    if not (path / "recipe.yaml").is_file():
        try:  # a run's output folder (runs/), named for one of its runs
            runs = sorted(p.parent for p in path.glob("*/recipe.yaml"))
        except OSError:
            runs = []
        if runs:
            many = f"{len(runs)} run directories" if len(runs) > 1 else "a run directory"
            return f"{path} holds {many}, and is none: name one, as {runs[-1]}"
    return None


def still_running(run_dir: Path) -> str | None:
    """What to say of a run directory a run is still writing (``None`` when none is).

    Its leaderboard and best model come when it ends: ``--resume`` would be refused.
    """
    from orchestrator.run import run_holder

    holder = run_holder(run_dir)
    if holder is None:
        return None
    return (
        f"the run in {run_dir} is still in progress ({holder}); it ranks its trials and "
        "saves the best model when it ends: try again then"
    )


#: What a plugin's code may raise that graftune says as that plugin's fault: any
#: error, and ``sys.exit()`` (``SystemExit``), which ended graftune without a word of
#: why, with exit status 0 for ``sys.exit(0)``. Ctrl+C still stops graftune.
PLUGIN_FAULTS = (Exception, SystemExit)


def raised(exc: BaseException) -> str:
    """``Type: message`` of what a plugin raised, the type alone where the message
    cannot be had (its ``__str__`` raised: "internal error" from the message's
    own error hid the plugin's)."""
    try:
        text = str(exc)
    except Exception:
        return f"{type(exc).__name__} (its message cannot be shown: its __str__ raised)"
    return f"{type(exc).__name__}: {text}"


def resume_command(run_dir: Path) -> str:
    """``graftune run --resume RUN_DIR``, quoted for a shell: what the messages of a
    stopped, killed or damaged run tell the user to type; with the ``--plugin``
    modules the run was given, which its resume needs too (found by QA: a killed
    run's hint left them out, and the resume said its strategy was unknown)."""
    import shlex

    from orchestrator.environment import recorded_plugin_modules

    plugins = "".join(f" --plugin {shlex.quote(m)}" for m in recorded_plugin_modules(run_dir))
    return f"graftune run --resume {shlex.quote(str(run_dir))}{plugins}"


def written_again(run_dir: Path) -> str:
    """How a run's leaderboard or best model is written again when gone or damaged:
    a finished run's from its trials' results, a stopped one's as it finishes."""
    resume = resume_command(run_dir)
    if (Path(run_dir) / "finished.json").is_file():
        return f"{resume} writes it again from the trials' results (no trial runs again)"
    # Stopped (Ctrl+C, SIGTERM) with what had ended ranked: the rest run on resume.
    return f"{resume} finishes the run, whose trials that ended do not run again, and writes it"


def unreadable(path: Path, exc: BaseException) -> str:
    """``PATH cannot be read (JSONDecodeError: ...)``: a run's file that was edited
    or damaged (a disk, a copy cut short)."""
    return f"{path} cannot be read ({type(exc).__name__}: {one_line(str(exc))})"


def no_leaderboard(run_dir: Path) -> str:
    """What to say of a folder without ``leaderboard.csv``: not a run, one still going,
    one not ranked yet, or a finished one whose file was deleted."""
    run_dir = Path(run_dir)
    missing = missing_run_dir(run_dir)
    if missing is not None:
        return missing
    going = still_running(run_dir)
    if going is not None:
        return going
    ranked = (run_dir / "finished.json").is_file() or (run_dir / "leaderboard.md").is_file()
    if ranked and (run_dir / "trials").is_dir():  # it was written with leaderboard.md
        return f"{run_dir / 'leaderboard.csv'} is gone; {written_again(run_dir)}"
    if (run_dir / "recipe.yaml").is_file() and (run_dir / "trials").is_dir():
        return (
            f"the run in {run_dir} stopped before it ranked its trials (killed?); "
            f"{resume_command(run_dir)} ranks the trials that ended and runs the rest"
        )
    early = stopped_before_trials(run_dir)
    if early is not None:
        return early
    return f"{run_dir} has no leaderboard.csv (is it a graftune run directory?)"


def stopped_before_trials(run_dir: Path) -> str | None:
    """What to say of a run directory whose run stopped before any trial had a
    folder (killed as Ray started; found by QA: "is it a graftune run
    directory?"), ``None`` if it is none: it has the ``recipe.yaml`` and
    ``.searched`` a run writes first, a project's folder a recipe alone."""
    run_dir = Path(run_dir)
    if not ((run_dir / "recipe.yaml").is_file() and (run_dir / ".searched").is_file()):
        return None
    if (run_dir / "trials").is_dir():
        return None
    return (
        f"the run in {run_dir} stopped before any trial ran (killed?); "
        f"{resume_command(run_dir)} runs its trials"
    )


def unfinished(run_dir: Path) -> str | None:
    """What to say of a run that stopped (Ctrl+C, killed) after it ranked the trials
    that had ended, ``None`` for a finished one or one still running: its leaderboard
    may lack trials, and its best model may not be saved yet (found by QA: a kill
    between the two, and predict said no trial finished with a saved model)."""
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file():  # no run's folder: a leaderboard alone
        return None
    if (run_dir / "finished.json").is_file() or still_running(run_dir) is not None:
        return None
    return (
        f"the run in {run_dir} stopped before it finished (interrupted, or killed?); "
        f"{resume_command(run_dir)} runs the trials that did not end and saves its best model"
    )


def after_run_notes(run_dir: Path) -> list[str]:
    """What ``leaderboard``, ``report``, ``predict`` and ``export`` say of a run whose
    state files are gone or damaged, where they can go on (found by QA: a
    ``finished.json`` cut short, a deleted ``best/``, went unsaid): a run that
    stopped before it finished (:func:`unfinished`), a ``finished.json`` that
    cannot be read, a finished run's ``best/model.keras`` that is gone."""
    import json

    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file() or still_running(run_dir) is not None:
        return []
    finished = run_dir / "finished.json"
    if not finished.is_file():
        said = unfinished(run_dir)
        return [said] if said else []
    try:
        json.loads(finished.read_text())
    except (OSError, ValueError) as exc:
        return [f"{unreadable(finished, exc)}; {written_again(run_dir)}"]
    best = run_dir / "best" / "model.keras"
    if not best.is_file() and ranks_an_ok_trial(run_dir):
        return [f"{best} is gone; {written_again(run_dir)}"]
    return []


def ranks_an_ok_trial(run_dir: Path) -> bool:
    """Whether a run's ``leaderboard.csv`` ranks a trial that ended ``ok``."""
    import pandas as pd

    try:
        statuses = pd.read_csv(Path(run_dir) / "leaderboard.csv", usecols=["status"])["status"]
    except (OSError, ValueError):
        return False
    return bool((statuses == "ok").any())


def bad_leaderboard(run_dir: Path, problem: str) -> str:
    """What to say of a ``leaderboard.csv`` graftune cannot read (edited, torn, emptied).

    Args:
        run_dir: The run directory.
        problem: What is wrong with the file, like ``is empty``.
    """

    run_dir = Path(run_dir)
    path = run_dir / "leaderboard.csv"
    if (run_dir / "finished.json").is_file():
        # A finished run is never ranked again: resume has nothing to do.
        fix = (
            "restore it from a copy (leaderboard.md and leaderboard.html show the same "
            f"table), or delete it: {written_again(run_dir)}"
        )
    else:
        fix = f"{resume_command(run_dir)} ranks the trials that ended again and writes it"
    return f"{path} {problem}; {fix}"


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest option, or an empty string.

    An option that differs in case alone comes first (``ID`` for ``id``: too short
    for a close match); one that differs in its Unicode form alone (``größe``
    composed or not, as some macOS tools write it) is said to look the same.
    """
    word, options = str(word), [str(o) for o in options]

    def folded(text: str) -> str:
        return unicodedata.normalize("NFC", text).casefold()

    same = [o for o in options if o != word and folded(o) == folded(word)]
    if same:
        if unicodedata.normalize("NFC", same[0]) == unicodedata.normalize("NFC", word):
            return (
                f" (did you mean {same[0]!r}? it looks the same, written in another Unicode "
                "form: copy the name from the file)"
            )
        return f" (did you mean {same[0]!r}?)"
    matches = get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""
