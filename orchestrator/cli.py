"""The ``graftune`` command line: run, validate, plugins, leaderboard.

Errors graftune raises on purpose become one message on stderr and an exit
status (2 for a bad recipe, data or base; 3 for a broken plugin; 1 when every
trial failed); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from orchestrator.errors import (
    GraftuneError,
    RunDirError,
    RunInterrupted,
    ellipsized,
    first_few,
    missing_run_dir,
    no_leaderboard,
    one_line,
    printable,
    unfinished,
    without_credentials,
)

# TensorFlow's C++ start-up chatter is not for users; set before it can be imported.
# (What TensorFlow prints in spite of it: orchestrator.native_log.)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _Command(typer.core.TyperCommand):
    """A command whose help reads as graftune's docs write it, whatever Typer's version.

    Typer 0.2x puts a required argument in braces on the usage line
    (``validate [OPTIONS] {RECIPE}``), follows each argument with its Python
    type (``RUN_DIR <list[Path]>``), and prefixes a bad choice with pydantic's
    "Value error,"; graftune's usage lines, argument lists and errors are plain.
    (Options name their value with a ``metavar``, as Typer shows it then.)
    """

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [re.sub(r"^\{(.*)\}(\.\.\.)?$", r"\1\2", piece) for piece in pieces]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                name = (param.metavar or (param.name or "").upper()) + (
                    "..." if param.nargs != 1 else ""
                )
                arguments.append((name, record[1]))
            else:
                options.append(record)
        for title, records in (("Arguments", arguments), ("Options", options)):
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as exc:
            exc.message = exc.message.removeprefix("Value error, ")
            raise

    def get_short_help_str(self, limit: int = 45) -> str:
        return _first_sentence(self, limit)


def _first_sentence(command: Any, limit: int) -> str:
    """A command's line in its group's list: its help's first sentence, whole (Click
    cut it at about 60 characters: "Check a recipe without training: schema,...")."""
    return typer.core.TyperCommand.get_short_help_str(command, max(limit, 1000))


class _Group(typer.core.TyperGroup):
    """A group (``jobs``, ``cache``) listed by its help's first sentence, whole."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return _first_sentence(self, limit)


class _App(typer.Typer):
    """A Typer app whose commands are :class:`_Command` s and groups :class:`_Group` s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("cls", _Group)
        super().__init__(*args, **kwargs)

    def command(self, *args: Any, cls: Any = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or _Command, **kwargs)


app = _App(
    name="graftune",
    help="A plugin-based AutoML orchestrator for transfer learning (Keras 3 + Ray Tune).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class _Console(Console):
    """Rich's console, which notes when its reader has gone (``| head``), and
    prints ``:name:`` as it is (found by QA: a data source ``bad:cat`` was said
    as ``bad🐱``), never as an emoji."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("emoji", False)
        super().__init__(*args, **kwargs)

    def on_broken_pipe(self) -> None:
        _state["reader_gone"] = True
        if not _state["goes_on"]:
            super().on_broken_pipe()  # quiet from here on, and SystemExit(1)
        # A run goes on, printing nothing more (found by QA: `run | head`, a pager
        # quit, ended the search midway); its status is still SIGPIPE's at the end.
        _reader_left()
        if not self.quiet:
            self.quiet = True
            err.print(
                "note: the output's reader has gone; the run goes on without printing "
                "its progress (its leaderboard is written in its run directory)",
                markup=False,
            )


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has gone (not another pipe of the
    command's, a socket to a cluster, broken)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def _reader_left() -> None:
    """Send what stdout is still given to ``/dev/null``: its reader has gone, or it
    cannot be written."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        _null_onto(sys.stdout.fileno())


def _null_onto(fd: int) -> None:
    """Make the descriptor ``fd`` ``/dev/null``, open or closed."""
    null = os.open(os.devnull, os.O_WRONLY)
    if null != fd:
        os.dup2(null, fd)
        os.close(null)


_state: dict[str, Any] = {
    "debug": False,
    "command": None,
    "reader_gone": False,
    "output_error": None,  # what a write to stdout met (see _Stdout)
    "goes_on": False,  # a run: it goes on when its output's reader has gone
    "stdout_closed": False,  # started with ``>&-`` (see _closed_streams_opened)
    "run_plugins": [],  # a run directory's --plugin modules this command lacks
}


def _write_data(text: str) -> None:
    """Write data (CSV, JSON, Markdown) to stdout as UTF-8, as its files are, whatever
    the console's encoding: under ``PYTHONIOENCODING=ascii`` or a C locale without
    UTF-8 mode a class ``Barolò`` came out as the text ``Barol\\xf2`` (found by QA)."""
    stream = sys.stdout
    raw = getattr(stream, "buffer", None)
    if raw is None or (stream.encoding or "").lower().replace("-", "") == "utf8":
        stream.write(text)
        return
    stream.flush()
    raw.write(text.encode("utf-8"))
    raw.flush()


def _product_to_stdout(what: str, fix: str) -> None:
    """Refuse, before any work, a command whose product goes to a stdout that was
    closed (``>&-``): it would say it wrote ``what`` where nothing can read it
    (found by QA: predict said "1797 predictions" and exited 0)."""
    if _state["stdout_closed"]:
        from orchestrator.errors import OutputPathError

        raise OutputPathError(f"stdout is closed (>&-), where {what} would go; {fix}")


# Piped output keeps whole table rows rather than rich's 80 columns.
_TERMINAL = sys.stdout is not None and sys.stdout.isatty()  # None: closed (``>&-``)
out = _Console(highlight=False, soft_wrap=True, width=None if _TERMINAL else 200)
err = _Console(stderr=True, highlight=False, soft_wrap=True)


def _print_rich_table(table: Any, console: Console | None = None) -> None:
    """A table on stdout. Piped or redirected, whole cells, none wrapped onto a
    line of its own, and no spaces after a row's last cell (found by QA: cache
    info's rows were padded to 200 characters, its descriptions wrapped, so that
    ``grep`` lost their ends)."""
    console = console or out
    if console.is_terminal:
        console.print(table)
        return
    wide = _Console(highlight=False, width=max(1000, console.width))
    with wide.capture() as captured:
        wide.print(table)
    for line in captured.get().splitlines():
        # The cells' text as it is: no markup, and no :name: turned into an emoji.
        console.print(line.rstrip(), markup=False, emoji=False, highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    """graftune's version on the first line; then what a bug report needs (found by
    QA: the version alone): its code's fingerprint, Python, the Keras backend and
    the versions of the packages a run records in environment.json."""
    if value is True:  # not a truthy string an older typer passed (found by QA: 'False')
        from orchestrator import __version__
        from orchestrator.environment import environment

        here = environment()  # as a run records it in environment.json
        packages = {k: v for k, v in here["packages"].items() if k != "graftune"}
        out.print(f"graftune {__version__}", markup=False)
        out.print(
            f"code: {here['graftune_code']} (graftune's own files, as installed)", markup=False
        )
        out.print(
            f"Python {here['python']} on {here['platform']}; "
            f"Keras backend: {here['keras_backend']}",
            markup=False,
        )
        out.print(", ".join(f"{k} {v}" for k, v in packages.items()), markup=False)
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show tracebacks of errors, and TensorFlow's start-up lines."),
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """graftune: search transfer-learning strategies with Ray Tune, ranked in a leaderboard."""
    from orchestrator import native_log

    _state["debug"] = debug
    _state["command"] = ctx.invoked_subcommand
    _state["goes_on"] = False  # until `run` says it goes on
    _state["run_plugins"] = []  # a run directory's --plugin modules not given (see _fail)
    native_log.keep_all = debug
    _console_logging()
    # A plugin's event hook that raised: its traceback with the warning under --debug.
    logging.getLogger("orchestrator.plugin_manager").setLevel(
        logging.DEBUG if debug else logging.NOTSET
    )
    from orchestrator.bases import cache_dir

    try:
        here = os.getcwd()
    except FileNotFoundError:
        # Found by QA: a run made its run directory and then failed in Ray, each time;
        # a relative path was an internal error.
        _fail(
            RunDirError("the current folder no longer exists (it was deleted): cd to one that does")
        )
    if not all(_decoded(text) for text in (here, *sys.argv[1:])):
        # Bytes the locale's encoding could not read (LC_ALL=C with PYTHONUTF8=0): found
        # by QA, a run made its run directory, then embedded Ray failed (exit 4).
        _fail(
            RunDirError(
                "the current folder's path or an argument holds characters this locale "
                f"cannot read (its encoding is {sys.getfilesystemencoding()}): run it again "
                "with LC_ALL=C.UTF-8 (or PYTHONUTF8=1)"
            )
        )
    try:
        cache_dir()  # every command may need it: a wrong $GRAFTUNE_CACHE_DIR is said first
    except GraftuneError as exc:
        _fail(exc)


def _decoded(text: str) -> bool:
    """Whether ``text`` (a path, an argument) was read whole in the locale's encoding:
    Python keeps bytes it could not read as lone surrogates, which no file name written
    as UTF-8 (a recipe, Ray's job config) can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _home(value: Any) -> Any:
    """A path argument (or a list of them) with a leading ``~`` made the home folder,
    as in a recipe: the shell leaves it in quotes and after ``--out=``, and export
    made a folder named ``~`` in the current one (found by QA)."""
    from orchestrator.paths import expand_user

    if value is None:
        return None
    try:
        if isinstance(value, list | tuple):
            return [expand_user(v) for v in value]
        return expand_user(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _run_path(text: str) -> Path:
    """A RUN_DIR argument's value; a place in storage (a URI of a scheme storage
    reads) is refused with how to copy it here (found by QA: ``file:///runs/x`` was
    said as "file:/runs/x does not exist", the run stored there)."""
    if _in_storage(text):
        raise typer.BadParameter(
            f"{text} is a place in storage; a run directory is read on this machine: "
            f"copy the run here first with: graftune fetch {text} DEST"
        )
    return Path(text)


def _export_dest(text: str) -> Path:
    """``export``'s DEST: a folder on this machine (found by QA: ``s3://bucket/model``
    made a local folder ``s3:`` and said it had exported)."""
    if _in_storage(text):
        raise typer.BadParameter(
            f"{text} is a place in storage; export writes a folder on this machine: "
            "export here, then copy the folder there"
        )
    return Path(text)


def _in_storage(text: str) -> bool:
    """Whether ``text`` is a URI of a scheme graftune's storage reads."""
    from orchestrator.storage import SCHEMES, is_uri

    return is_uri(text) and text.split("://", 1)[0].lower() in SCHEMES


def _resume_path(text: str) -> Path:
    """``--resume``'s value: as :func:`_path`, and not a place in storage (:func:`_run_path`)."""
    _run_path(text)
    return _path(text)


def _path(text: str) -> Path:
    """A path option's value, refused when empty: ``--run-dir "$DIR"`` with ``DIR``
    unset was the current folder, where a run wrote itself unsaid (found by QA)."""
    if not text.strip():
        raise typer.BadParameter("is empty: give a path (is a shell variable unset?)")
    path = Path(text)
    if text != "-" and path == Path("-"):
        # "./-" names a file "-"; only "-" itself is stdin or stdout (found by QA:
        # Path made them one, and a file "-" was read for stdin, stdout written for it).
        return Path.cwd() / "-"
    return path


class _ConsoleFormatter(logging.Formatter):
    """``warning: MESSAGE`` for graftune's own records, as its other warnings are
    said (found by QA: ``WARNING orchestrator.data.sources: ...`` from run and
    validate, the bare message from other commands); another library's record
    keeps its logger's name."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        level = record.levelname.lower()
        if record.name == "orchestrator" or record.name.startswith("orchestrator."):
            return f"{level}: {message}"
        return f"{level}: {record.name}: {message}"


class _StderrHandler(logging.StreamHandler):
    """A handler that writes to ``sys.stderr`` as it is when a record comes: the live
    view puts its own there, which prints a line above the view's table. Found by
    QA: a warning written to the stderr of the start ran into the view's last line,
    and its next refresh erased the warning's end."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _console_logging() -> None:
    """Warnings and errors of every command to stderr, as :class:`_ConsoleFormatter`
    says them (nothing changes where the root logger has a handler already)."""
    handler = _StderrHandler()
    handler.setFormatter(_ConsoleFormatter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def _fail(exc: BaseException, writing: Path | None = None) -> None:
    """Say ``exc`` in one line (its traceback with ``--debug``) and exit with its status.

    ``writing``: the file or folder the command writes, named where the disk had no
    room for it and the error does not name it (a stream's, a copy's source).
    """
    if _state["debug"]:
        # The traceback, then the exit status the error has without --debug
        # (Python's 1 for every error misread a bad recipe in scripts).
        import traceback

        if exc.__traceback__ is None:  # made here, not raised: where it was made
            print("Traceback (most recent call last):", file=sys.stderr)
            traceback.print_stack(sys._getframe(1), file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
        raise typer.Exit(exc.exit_status if isinstance(exc, GraftuneError) else 1)
    if isinstance(exc, GraftuneError):
        err.print(f"error: {printable(without_credentials(str(exc)))}", markup=False)
        from orchestrator.errors import PluginError

        # Where the error speaks of plugins, what it lacks may be the module's; one
        # whose fix names the module already (a resume command) says it (found in CI).
        flags = [f"--plugin {shlex.quote(m)}" for m in _state.get("run_plugins") or ()]
        if "plugin" in str(exc) and any(flag not in str(exc) for flag in flags):
            err.print(f"(the run was made with {' '.join(flags)}, not given now: pass it again)")
        if isinstance(exc, PluginError) and exc.exit_status != 2:
            # (exit 2: the command line named no module; no plugin code ran)
            _plugin_traceback_hint([exc])
        raise typer.Exit(exc.exit_status)
    if isinstance(exc, BrokenPipeError) and _stdout_reader_gone():
        # The reader of a page or log written to stdout (`report --out - | head`) has
        # gone: quietly, with SIGPIPE's status, as every other command (found by QA).
        _state["reader_gone"] = True
        _reader_left()
        raise typer.Exit(1)
    problem = _path_problem(exc, writing)
    if problem is not None:  # a path no file can be at (2), or a full disk (1, as a run's)
        said, status = problem
        err.print(f"error: {printable(said)}", markup=False)
        raise typer.Exit(status)
    command = _state.get("command") or "COMMAND"
    from orchestrator.submit import SUBMITTED_ENV

    if os.environ.get(SUBMITTED_ENV):  # a job: the user can submit it again, not run it here
        command = "submit"
    err.print(
        f"internal error: {type(exc).__name__}: {printable(without_credentials(str(exc)))}\n"
        f"(for the traceback, run it again as: graftune --debug {command} ...)",
        markup=False,
    )
    raise typer.Exit(1)


def _plugin_traceback_hint(errors: list[Any]) -> None:
    """Say how to see the traceback of what a plugin raised, where one of ``errors``
    has a cause: its traceback runs into the plugin's code (found by QA: unsaid)."""
    if any(exc.__cause__ is not None for exc in errors):
        command = _state.get("command") or "COMMAND"
        err.print(
            f"(for the plugin's traceback, run it again as: graftune --debug {command} ...)",
            markup=False,
        )


def _path_problem(exc: BaseException, writing: Path | str | None = None) -> tuple[str, int] | None:
    """What Python says of a path no file can be at (a NUL byte, a name too long, a
    symbolic link loop), or this process may not read or write (exit status 2), or
    of a full disk (1, as a run's), as the
    user's error, with its exit status; ``None`` for any other exception. Found by
    QA: each was an internal error of export, predict, report and others."""
    import errno

    from orchestrator.errors import is_disk_full, no_room

    if is_disk_full(exc):
        # A copy's error names its source first (export named the run's model, on a
        # disk with room); the file written is its second name, or ``writing``.
        full = exc if isinstance(exc, OSError) else None
        where = writing or (full and (full.filename2 or full.filename)) or "the file written"
        return f"{no_room(exc, where)}, or write elsewhere", 1
    if isinstance(exc, ValueError) and "embedded null byte" in str(exc):
        return "a path holds a NUL byte, which no path may", 2
    if isinstance(exc, RuntimeError) and str(exc).startswith("Symlink loop from "):
        path = str(exc).removeprefix("Symlink loop from ").strip("'")
        return f"{path} is a symbolic link loop", 2
    if not isinstance(exc, OSError):
        return None
    from orchestrator.errors import ellipsized_in_middle

    # A path past the system's limit is thousands of characters: its start and end.
    where = f": {ellipsized_in_middle(str(exc.filename), 160)}" if exc.filename else ""
    if exc.errno in (errno.ENAMETOOLONG, errno.ELOOP) or (
        exc.errno in (errno.ENOTDIR, errno.EISDIR) and exc.filename
    ):  # (a file where a folder is asked, as fetch's DEST/run under a file: found by QA)
        return f"{exc.strerror}{where}", 2
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and exc.filename:
        # Another user's file, or a read-only one (found by QA: `cache info` on a
        # cache another user made was an internal error).
        return f"{exc.strerror}{where}", 2
    return None


def _host(plugins: list[str] | None = None, recipe: Path | None = None) -> Any:
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.preflight import disabled_plugins

    # A recipe's plugins.disable must hold before any plugin is registered.
    return get_plugin_manager(extra_plugins=plugins or (), disable=disabled_plugins(recipe))


def _run_host(plugins: list[str] | None, run_dir: Path) -> Any:
    """The host for a command on a finished run: the plugins its recipe disabled stay so."""
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.preflight import run_disabled_plugins

    _note_run_plugins(plugins, run_dir)
    return get_plugin_manager(extra_plugins=plugins or (), disable=run_disabled_plugins(run_dir))


def _note_run_plugins(plugins: list[str] | None, run_dir: Path) -> None:
    """Keep, for an error of this command, the ``--plugin`` modules the run was made
    with and this command was not given (found by QA: a resume said "unknown
    strategy", a predict "pass the module that registers it", of a module the run
    records by name)."""
    from orchestrator.environment import recorded_plugin_modules

    given = set(plugins or ())
    _state["run_plugins"] = [m for m in recorded_plugin_modules(run_dir) if m not in given]


#: validate's and plugins' --plugin: a module to load as run --plugin does.
_Plugins = Annotated[
    list[str] | None,
    typer.Option("--plugin", help="Also load this plugin module (trusted code).", metavar="MODULE"),
]


@app.command()
def validate(
    recipes: Annotated[
        list[Path],
        typer.Argument(
            help="The recipe files to check (each in turn).",
            metavar="RECIPE",
            parser=_path,
            callback=_home,
        ),
    ],
    plugin: _Plugins = None,
    data: Annotated[
        bool,
        typer.Option(
            "--data",
            help="Also load the data and split it as a run would (catches non-numeric "
            "columns, classes too small to split).",
        ),
    ] = False,
    here: Annotated[
        bool,
        typer.Option(
            "--here",
            help="Also refuse (exit 2) what `graftune run` on this machine would refuse: "
            "the Keras backend, resources embedded Ray cannot give (otherwise notes).",
        ),
    ] = False,
) -> None:
    """Check a recipe without training: schema, names, files, columns, spaces."""
    # Found by QA: `validate recipes/*.yaml` in a CI job was refused. Each is said
    # of; the exit status is the highest of theirs (2: a recipe is wrong).
    status = 0
    for recipe in recipes:
        try:
            _validate(recipe, plugin, data=data, here=here)
        except typer.Exit as stopped:
            status = max(status, stopped.exit_code)
    if status:
        raise typer.Exit(status)


def _validate(recipe: Path, plugin: list[str] | None, *, data: bool, here: bool) -> None:
    """``graftune validate`` of one recipe (exits with its status where it fails)."""
    from orchestrator.recipe import check_pretrain_input, check_recipe_data, validate_recipe

    try:
        host = _host(plugin, recipe)
        loaded = validate_recipe(recipe, host)
        # A hook returning what Keras cannot register stops every run, and Ray must send
        # each strategy to its workers pickled (found by QA: validate said ok to both).
        host.keras_objects()
        if loaded.search.backend == "ray":
            from orchestrator.preflight import check_pickles

            for name in loaded.strategies:
                check_pickles(host.strategy(name), name, host.strategies.owner(name))
        if loaded.submit.pip:  # the files submit would send (found by QA: ok, then refused)
            from orchestrator.submit import check_sendable

            check_sendable(loaded, pip=[], plugins=[])
        dataset = check_recipe_data(loaded, host) if data else None
        pretrain_notes: list[str] = []
        if dataset is not None:
            check_pretrain_input(loaded, host, dataset, said=pretrain_notes.append)
            if loaded.base is not None and loaded.base.path is not None:
                _check_base_file(loaded, host, dataset)
            elif loaded.base is not None and loaded.base.application is not None:
                _check_application_cuts(loaded, host)
    except Exception as exc:
        _fail(exc)
        return
    from orchestrator.preflight import recipe_notes

    try:
        notes = recipe_notes(loaded, host)
    except Exception as exc:
        _fail(exc)
        return
    refused = _what_run_here_refuses(loaded, host, notes.append)
    repeated = _repeats_note(loaded, host)
    if repeated is not None:
        notes.append(repeated)
    if here and refused:
        for reason in refused:
            err.print(f"error: {reason}", markup=False)
        raise typer.Exit(2)
    out.print(
        f"{recipe}: ok ({', '.join(loaded.strategies)} on {loaded.data.source})", markup=False
    )
    if dataset is not None:
        from orchestrator.data import data_notes
        from orchestrator.predict import table_features

        out.print(f"data: {dataset.describe()}", markup=False)
        for line in data_notes(dataset, table_features(loaded.data, loaded.base_dir)):
            out.print(f"note: data: {line}", markup=False)
    for line in pretrain_notes:
        out.print(f"note: {line}", markup=False)
    if loaded.resources.address not in (None, "local") and loaded.search.backend == "ray":
        # A recipe's cluster gets the data and the Ray token at hand: said, never a surprise.
        out.print(
            f"runs on the Ray cluster at {loaded.resources.address} (resources.address), "
            "which is sent the data (and a Ray token at hand, if it asks for one)",
            markup=False,
        )
    # Found by QA: what else a recipe sends elsewhere went unsaid.
    from orchestrator.storage import is_uri

    if loaded.storage is not None and is_uri(loaded.storage.path):
        out.print(
            f"stores the run at {loaded.storage.path} (storage), uploading its models, "
            "predictions and recipe with the credentials at hand",
            markup=False,
        )
    if loaded.submit.pip:
        out.print(
            f"`graftune submit` has the cluster install {', '.join(loaded.submit.pip)} "
            "(submit.pip), and loads the graftune plugins they bring",
            markup=False,
        )
    for line in notes:
        out.print(line, markup=False)
    for reason in refused:
        out.print(f"note: {reason}; `graftune run` here would refuse it", markup=False)


def _check_base_file(recipe: Any, host: Any, dataset: Any) -> None:
    """``validate --data`` of a ``base.path`` model: loaded, and refused at its key
    where the run would refuse it (:func:`orchestrator.bases.check_base_file`), as
    is a ``frozen_layers`` past its cut points."""
    from orchestrator.bases import check_base_file
    from orchestrator.errors import BaseModelError
    from orchestrator.preflight import refuse_cuts_past

    try:
        cuts = check_base_file(recipe.base, dataset.task)
    except BaseModelError as exc:
        raise recipe.error(("base", exc.key or "path"), str(exc)) from None
    refuse_cuts_past(recipe, host, lambda: cuts)


def _check_application_cuts(recipe: Any, host: Any) -> None:
    """``validate --data`` of a ``keras.applications`` base: a ``frozen_layers``
    past its cut points is refused as the run would refuse it (its architecture
    is built, without weights, only where the recipe gives one)."""
    from orchestrator.bases import application_cut_points
    from orchestrator.errors import BaseModelError
    from orchestrator.preflight import refuse_cuts_past

    try:
        refuse_cuts_past(recipe, host, lambda: application_cut_points(recipe.base))
    except BaseModelError as exc:
        raise recipe.error(("base", exc.key or "application"), str(exc)) from None


def _repeats_note(recipe: Any, host: Any) -> str | None:
    """The run's note on Ray trials that come out the same (a grid's repeats, the
    trials of a space that fixes every dimension), from the recipe's spaces over
    each strategy's own (no base is needed to tell)."""
    from orchestrator.preflight import strategy_space
    from orchestrator.run import _repeats_note as note
    from orchestrator.space import merge_spaces
    from orchestrator.strategy import SpaceContext

    spaces = {}
    for name in recipe.strategies:
        own = strategy_space(host.strategy(name), SpaceContext(), host.strategies.owner(name))
        spaces[name] = merge_spaces(own, recipe.shared_space(), recipe.strategy_space(name))
    return note(recipe, spaces) or _few_for_keras_tuner(recipe, spaces)


def _few_for_keras_tuner(recipe: Any, spaces: dict[str, Any]) -> str | None:
    """What the run's first line says of a keras-tuner search whose space holds
    fewer configurations than its ``num_samples`` (found by QA: said by the run,
    not by validate, as a Ray search's repeats are)."""
    from orchestrator.space import distinct_configurations

    search = recipe.search
    if search.backend != "keras_tuner" or search.algorithm == "grid":
        return None
    if search.scheduler == "hyperband":  # its brackets, not num_samples, count its trials
        return None
    said = []
    for name, space in spaces.items():
        try:
            distinct = distinct_configurations(space)
        except (TypeError, ValueError):  # frozen_layers up to "all": the base's to say
            continue
        samples = recipe.strategy_samples(name)
        if distinct is not None and distinct < samples:
            said.append(
                f"note: {name}'s space has {distinct} configuration{'s' * (distinct != 1)}, "
                f"and keras-tuner tries each once: {distinct} of its {samples} trials "
                "(num_samples) run"
            )
    return "\n".join(said) or None


def _what_run_here_refuses(recipe: Any, host: Any, note: Callable[[str], None]) -> list[str]:
    """Why `graftune run` here, on embedded Ray, would refuse a valid recipe.

    Said, not refused, unless ``validate --here``: the recipe may be meant for a
    cluster (``submit``, ``--address``), which validate cannot know of.
    """
    from orchestrator.accelerator import check_backend
    from orchestrator.errors import BackendMissing, RecipeError

    refused = []
    try:
        check_backend()
    except BackendMissing as exc:
        refused.append(str(exc))
    if recipe.base is not None and any(
        host.strategy(name).requires_base for name in recipe.strategies
    ):
        # The base is made or found in the cache here, wherever the trials run (found by
        # QA: --here passed a $GRAFTUNE_CACHE_DIR that is a file, and run refused it).
        from orchestrator.feature_cache import cache_folder_problem

        problem = cache_folder_problem()
        if problem is not None:
            refused.append(problem)
    if recipe.search.backend == "keras_tuner":
        from orchestrator.tuning.keras_tuner import check_resources

        try:
            check_resources(recipe, note)
        except RecipeError as exc:
            refused.append(str(exc))
        return refused
    if recipe.resources.address:
        return refused
    from orchestrator.run import _check_a_trial_fits
    from orchestrator.tuning.ray_start import embedded_cpus, embedded_gpus

    try:  # the run's own check, before Ray is up
        _check_a_trial_fits(recipe, has=(embedded_cpus(recipe.resources), embedded_gpus()))
    except RecipeError as exc:
        refused.append(str(exc))
    return refused


def _stopped_at_once(
    resume: Path | None, plugins: list[str] | None, *, by_sigterm: bool
) -> RunInterrupted:
    """A run stopped outside its search (before it, or as the run is saved), where the
    run said nothing itself. A resume's run directory is there to continue (found by
    QA: Ctrl+C as a resume read its data said only "stopped at once"); a new run's
    is not made before its search."""
    from orchestrator.run import resume_hint

    message = "stopped at once"
    if resume is not None:
        message += "; " + resume_hint(resume, tuple(plugins or ()))
    return RunInterrupted(message, run_dir=resume, by_sigterm=by_sigterm)


@app.command()
def run(
    recipe: Annotated[
        Path | None,
        typer.Argument(
            help="The recipe file to run (not with --resume).",
            metavar="RECIPE",
            parser=_path,
            callback=_home,
        ),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            help="Write here instead of OUTPUT/NAME-TIME.",
            metavar="RUN_DIR",
            parser=_path,
            callback=_home,
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue the run in this run directory, killed or stopped (Ctrl+C).",
            metavar="RUN_DIR",
            parser=_resume_path,
            callback=_home,
        ),
    ] = None,
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin",
            help="Load a plugin module that is not installed (trusted code).",
            metavar="MODULE",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only print the result.")] = False,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Drive an existing Ray cluster from here: its GCS address HEAD:6379, or "
            "auto: the one started on this machine (overrides resources.address; local: "
            "embedded Ray here). Also with --resume.",
            metavar="ADDRESS",
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="Store the run here: a folder or a URI (overrides storage:).",
            metavar="STORAGE",
        ),
    ] = None,
    shared_storage: Annotated[
        bool,
        typer.Option("--shared-storage", help="The storage folder is mounted on every node."),
    ] = False,
    run_name: Annotated[
        str | None,
        typer.Option(
            "--run-name", help="The run directory's name (default NAME-TIME).", metavar="RUN_NAME"
        ),
    ] = None,
    resume_stored: Annotated[
        str | None,
        typer.Option(
            "--resume-stored",
            hidden=True,
            help="A resume job's (graftune submit --resume): the run's place in storage.",
            metavar="LOCATION",
        ),
    ] = None,
) -> None:
    """Run a recipe: search every strategy and rank the trials in a leaderboard."""
    from orchestrator.run import resume_run, run_recipe

    if resume_stored is not None:
        if recipe is not None or resume is not None:
            err.print("error: --resume-stored is a job's, alone (graftune submit --resume)")
            raise typer.Exit(2)
        resume, address = _stored_resume(resume_stored, address)
    if (recipe is None) == (resume is None):
        err.print("error: give a RECIPE to run, or --resume RUN_DIR to continue a run (not both)")
        raise typer.Exit(2)
    _state["goes_on"] = True
    live, progress = _live_view(quiet, recipe if resume is None else resume / "recipe.yaml")

    def echo(line: str) -> None:
        # Warnings go to stderr, --quiet or not, as logged ones do (found by QA: -q
        # hid that a time budget left 4 of 5 trials unrun); progress and notes to
        # stdout, unless --quiet. The live view shows both above its table.
        if live is not None:
            live.console.print(line, markup=False)
        elif line.startswith("warning: "):
            err.print(line, markup=False)
        elif not quiet:
            out.print(line, markup=False)

    if resume is not None:
        # The run keeps its directory and storage; only where it runs may change.
        fixed = [
            option
            for option, given in (
                ("--run-dir", run_dir),
                ("--storage", storage),
                ("--shared-storage", shared_storage or None),
                ("--run-name", run_name),
            )
            if given is not None
        ]
        if fixed:
            err.print(
                f"error: {', '.join(fixed)} with --resume: a resumed run stays in its run "
                "directory and storage (--address may change where it runs)",
                markup=False,
            )
            raise typer.Exit(2)
    try:
        if resume is not None and not (resume / "recipe.yaml").is_file():
            missing = missing_run_dir(resume)
            _fail(
                RunDirError(missing or f"{resume} is not a graftune run directory (no recipe.yaml)")
            )
    except OSError as exc:  # a path past the system's limit (found by QA: a traceback)
        _fail(exc)
    from orchestrator.feature_cache import feature_stamps
    from orchestrator.tuning.ray_start import sigterm_stops_the_run

    cached_before = feature_stamps()
    with sigterm_stops_the_run():
        try:
            if resume is not None:
                _note_run_plugins(plugin, resume)
            host = _host(plugin, recipe if recipe is not None else resume / "recipe.yaml")
            kwargs: dict[str, Any] = {"host": host, "echo": echo, "listener": progress}
            if live is not None:
                live.start()
            if resume is not None:
                outcome = resume_run(resume, address=address, **kwargs)
            else:
                assert recipe is not None
                chosen = _with_cluster_options(recipe, address, storage, shared_storage)
                outcome = run_recipe(chosen, run_dir=run_dir, run_name=run_name, **kwargs)
        except RunInterrupted as exc:
            if live is not None:
                live.stop()
            if exc.leaderboard is not None and len(exc.leaderboard):
                _print_table(exc.leaderboard, exc.run_dir)
            err.print(str(exc), markup=False)
            raise typer.Exit(exc.exit_status) from None
        except Exception as exc:
            from orchestrator.tuning.ray_start import terminated

            if live is not None:
                live.stop()
            if not terminated():
                _fail(exc)
                return
            # What the SIGTERM cut short raised, not its KeyboardInterrupt: an import it
            # stopped (TensorFlow's, in a pretrain) says "ImportError: initialization failed".
            stopped = _stopped_at_once(resume, plugin, by_sigterm=True)
            err.print(str(stopped), markup=False)
            raise typer.Exit(stopped.exit_status) from None
        except KeyboardInterrupt:  # outside a search: before it, or while the run is saved
            from orchestrator.tuning.ray_start import terminated

            if live is not None:
                live.stop()
            stopped = _stopped_at_once(resume, plugin, by_sigterm=terminated())
            err.print(str(stopped), markup=False)
            raise typer.Exit(stopped.exit_status) from None
    if live is not None:
        live.stop()
    _print_table(outcome.leaderboard, outcome.run_dir)
    best = outcome.best or {}
    # The metric it was chosen by first (val_loss: its accuracy alone hid why).
    shown = dict.fromkeys([best.get("metric") or "val_accuracy", "val_accuracy", "test_accuracy"])
    out.print(
        f"best: {best.get('strategy')} trial {best.get('trial_id')} "
        + " ".join(f"{key}={_fmt(best.get(key))}" for key in shown),
        markup=False,
    )
    config = best.get("config") or {}
    if config:  # found by QA: at 80 columns the table keeps no searched column
        values = (f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())
        out.print(printable("config: " + " ".join(values)), markup=False)
    from orchestrator.storage import join
    from orchestrator.submit import SUBMITTED_ENV

    # A job's run directory is in its working directory, which Ray deletes: its
    # results are named where they are stored.
    stored = outcome.stored if os.environ.get(SUBMITTED_ENV) else None

    def at(*parts: str) -> str:
        return join(stored, *parts) if stored is not None else str(outcome.run_dir.joinpath(*parts))

    out.print(f"model: {at('best', 'model.keras')}", markup=False)
    out.print(f"leaderboard: {at('leaderboard.md')}", markup=False)
    if (outcome.run_dir / "report.html").is_file():
        out.print(f"report: {at('report.html')}", markup=False)
    from orchestrator.trial import has_tensorboard

    if has_tensorboard(outcome.run_dir):  # none where TensorFlow is not installed
        if stored is not None:
            job = shlex.quote(outcome.run_dir.name)
            out.print(
                f"tensorboard: graftune fetch {job} DEST --address DASHBOARD, then "
                "tensorboard --logdir DEST/trials",
                markup=False,
            )
        else:
            logdir = shlex.quote(str(outcome.run_dir / "trials"))
            out.print(f"tensorboard: tensorboard --logdir {logdir}", markup=False)
    _say_features_cached(cached_before, outcome.run_dir)
    if _reader_gone() or _state["output_error"] is not None:
        # Found by QA: with its output gone (`| head`, a full disk), nothing said where.
        err.print(f"note: the run's results are in {outcome.run_dir}", markup=False)


def _stored_resume(location: str, address: str | None) -> tuple[Path, str | None]:
    """In a job of ``graftune submit --resume``: the run directory to resume and the
    address to run on, for the run at ``location`` in storage.

    A run stored at a URI is fetched into the job's working directory (its resume
    stores it back); one in a folder the nodes mount is resumed there. A run on
    Ray's backend runs on the job's cluster (``auto``), whatever its recipe says.
    """
    from orchestrator.run import recorded_section
    from orchestrator.storage import is_uri
    from orchestrator.submit import SUBMITTED_ENV

    if not os.environ.get(SUBMITTED_ENV):
        err.print("error: --resume-stored is for a job of graftune submit --resume")
        raise typer.Exit(2)
    try:
        if is_uri(location):
            where, _, stored = _fetch_stored(location, None)
            out.print(f"fetched {location}: {where}", markup=False)
            run_dir = stored or where
        else:
            run_dir = Path(location)
    except Exception as exc:
        _fail(exc)
        raise  # (_fail exits)
    search = recorded_section(run_dir, "search")
    # Ray's by default; a run directory without a recipe is said so next.
    backend = search.get("backend") if isinstance(search, dict) else None
    return run_dir, address or (None if backend == "keras_tuner" else "auto")


def _say_features_cached(before: dict[str, tuple[int, int] | None], run_dir: Path) -> None:
    """Say how much the run's frozen features added to this machine's cache, if any.

    Found by QA: a run of 7,800 images of 32x32 cached 1.1 GiB of features (its
    run directory: 7 MB), and nothing said so. ``before``: :func:`feature_stamps`
    as the run began; an entry it computed again (a damaged one) counts too.
    """
    from orchestrator.bases import cache_dir
    from orchestrator.feature_cache import made_by, size_text

    made = made_by(before, run_dir)
    if made:
        out.print(
            f"cache: {size_text(made)} of frozen features made in {cache_dir()} "
            "(`graftune cache clear --features` frees them; `cache: false` in a recipe "
            "makes none)",
            markup=False,
        )


def _with_cluster_options(
    recipe: Path, address: str | None, storage: str | None, shared: bool
) -> Any:
    """The recipe file, or the loaded recipe with ``--address`` / ``--storage`` applied."""
    if address is None and storage is None and not shared:
        return recipe
    from orchestrator.recipe import load_recipe
    from orchestrator.submit import with_cluster_options

    return with_cluster_options(
        load_recipe(recipe), address=address, storage=storage, shared=shared
    )


def _live_view(quiet: bool, recipe: Path | None) -> tuple[Any, Any]:
    """A live progress table on a terminal; plain lines elsewhere; nothing when quiet."""
    if quiet or not out.is_terminal:
        return None, None
    from rich.live import Live

    from orchestrator.progress import RunProgress

    progress = RunProgress(*_searched_metric(recipe))
    return Live(progress, console=out, refresh_per_second=2, transient=True), progress


def _searched_metric(recipe: Path | None) -> tuple[str, str]:
    """The metric and mode of a recipe file, as the live view names its best score
    before the run has read the recipe (found by QA: "best val_accuracy" over a
    val_loss run until its search began, through a pretrain stage); the defaults
    where the file cannot tell (a recipe on stdin is not read twice)."""
    import yaml

    from orchestrator.recipe import METRICS, SearchSpec

    default = SearchSpec.model_fields["metric"].default
    try:
        if recipe is not None and recipe.is_file():
            search = yaml.safe_load(recipe.read_text(encoding="utf-8")).get("search") or {}
            metric = search.get("metric", default)
            mode = search.get("mode") or METRICS.get(metric)
            if metric in METRICS and mode in ("max", "min"):
                return metric, mode
    except (OSError, ValueError, AttributeError, TypeError, RecursionError, yaml.YAMLError):
        pass  # the run says what is wrong with it
    return default, METRICS[default]


class Format(StrEnum):
    table = "table"
    csv = "csv"
    md = "md"
    json = "json"


class Listing(StrEnum):
    table = "table"
    json = "json"


# For scripts: `plugins`, `cache info` and `jobs list` as JSON (found by QA: tables alone).
_ListingFormat = Annotated[
    Listing,
    typer.Option("--format", "-f", help="Output format: table or json.", metavar="FORMAT"),
]


def _json_goes_out(format: Listing) -> None:
    """Refuse ``--format json`` into a closed stdout, before any work, in one line
    (found by QA: a traceback, exit 1, after the work)."""
    if format is Listing.json:
        try:
            _product_to_stdout("the list", "give stdout a file or a pipe")
        except GraftuneError as exc:
            _fail(exc)


def _write_json(value: Any) -> None:
    import json

    _write_data(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


@app.command()
def plugins(
    format: _ListingFormat = Listing.table,
    plugin: _Plugins = None,
) -> None:
    """List every plugin with its distribution, version and what it adds.

    A plugin that fails to import or to register is named after the table
    (exit 3; a --plugin module that does not exist, 2); the others are still
    listed. Two plugins that register one name are neither's fault alone: that
    error is shown without a table.
    """
    _json_goes_out(format)
    from orchestrator.errors import PluginError
    from orchestrator.plugin_manager import autoload_disabled, get_plugin_manager

    broken: list[PluginError] = []
    while True:
        try:
            # Found by QA: a module given to run with --plugin could not be listed.
            host = get_plugin_manager(
                extra_plugins=plugin or (), disable=[str(e.plugin) for e in broken]
            )
        except PluginError as exc:
            if exc.plugin is None or exc.plugin in [e.plugin for e in broken]:
                _fail(exc)  # not one plugin's fault, or blocking it did not help
                return
            broken.append(exc)
        except Exception as exc:
            _fail(exc)
            return
        else:
            break
    infos = host.infos()
    if format is Listing.json:
        _write_json(
            [
                {
                    "plugin": info.name,
                    "distribution": info.distribution,
                    "version": info.version,
                    # One entry a name or hook (found by QA: a plugin's hooks were one
                    # string, "hooks run_finished, run_started", for scripts to split).
                    "adds": [a for a in info.adds if not a.startswith("hooks ")]
                    + [f"hook {hook}" for hook in info.hooks],
                    "descriptions": dict(info.described),
                }
                for info in infos
            ]
        )
    else:
        table = Table("plugin", "distribution", "version", "adds", box=None, header_style="bold")
        for info in infos:
            cells = (info.name, info.distribution, info.version, ", ".join(info.adds) or "-")
            table.add_row(*map(_text, cells))
        # Piped, rows as whole lines with no spaces after them (found by QA: padded
        # to 200 columns, where cache info's and the leaderboard's are not).
        _print_rich_table(table)
        # What each name is, in its class's words (its `description`).
        names = Table("name", "plugin", "description", box=None, header_style="bold")
        for info in infos:
            for added, text in info.described:
                names.add_row(*map(_text, (added, info.name, text or "-")))
        if names.row_count:
            out.print()
            _print_rich_table(names)
    for owner, took in host.heavy_imports.items():
        # Found by QA: a reporter that imported TensorFlow at its module's top made
        # `graftune plugins` take 3.6 s instead of 0.4 s, and nothing said whose it was.
        # (Keras itself imports TensorFlow lazily: its first use pays, found by QA.)
        seconds = "" if took is None or took < 0.1 else f" ({took:.1f} s)"
        err.print(
            f"note: plugin {owner} imports TensorFlow or Keras as it is loaded{seconds}, "
            "which every command that loads the plugins (run, validate, plugins, predict ...) "
            "waits for: import them inside its hooks and methods",
            markup=False,
        )
    off = autoload_disabled()
    if off is not None:
        err.print(
            f"note: {off}: plugins installed by entry point, graftune's own strategies "
            "among them, are not loaded",
            markup=False,
        )
    for exc in broken:
        if _state["debug"]:
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        err.print(f"error: {exc}", markup=False)
    if broken:
        if not _state["debug"]:
            _plugin_traceback_hint(broken)
        raise typer.Exit(broken[0].exit_status)


@app.command()
def leaderboard(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="A run directory.", metavar="RUN_DIR", parser=_run_path, callback=_home
        ),
    ],
    format: Annotated[
        Format,
        typer.Option(
            "--format", "-f", help="Output format: table, csv, md or json.", metavar="FORMAT"
        ),
    ] = Format.table,
) -> None:
    """Show a run's leaderboard again."""
    from orchestrator import leaderboard as lb

    try:
        if not (run_dir / lb.FILES["csv"]).is_file():
            # Raised, for --debug's traceback (found by QA: none, here alone).
            raise RunDirError(no_leaderboard(run_dir))
    except (OSError, RunDirError) as exc:  # a name too long (found by QA: a traceback)
        _fail(exc)
    try:
        _product_to_stdout("the leaderboard", f"its files are {run_dir / 'leaderboard.*'}")
        frame = lb.read_leaderboard(run_dir)
    except GraftuneError as exc:
        _fail(exc)
        return
    if frame.empty:  # found by QA: a bare header row, and nothing said
        err.print(f"note: {run_dir}'s leaderboard lists no trial: none ended in it", markup=False)
    elif (frame["status"] == "ok").any():  # one that failed in every trial says so itself
        stopped = unfinished(run_dir)
        if stopped is not None:  # found by QA: a killed run's table, as if whole
            err.print(f"note: {stopped}; this leaderboard may lack trials", markup=False)
        else:
            _after_run_notes(run_dir)
    if format is Format.csv:
        _write_data(frame.to_csv(index=False))
    elif format is Format.md:
        _write_data(lb.to_markdown(frame) + "\n")
    elif format is Format.json:
        _write_data(lb.to_json(frame) + "\n")
    else:
        _print_table(frame, run_dir)


@app.command()
def report(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="A run directory, or several to compare.",
            metavar="RUN_DIR",
            parser=_run_path,
            callback=_home,
        ),
    ],
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write here, an .html file (default RUN_DIR/report.html; compare.html "
            "for several); never another file of a run.",
            metavar="PATH",
            parser=_path,
            callback=_home,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace a file at --out that is not a graftune page."),
    ] = False,
) -> None:
    """Write a run's report.html again, or one page comparing several runs."""
    from orchestrator.errors import check_output_file
    from orchestrator.paths import is_stream
    from orchestrator.report import (
        COMPARE_FILE,
        REPORT_FILE,
        check_replaceable,
        check_report_out,
        comparison_page,
        read_run,
        render_report,
        write_comparison,
        write_report,
    )

    if out_path in (Path("-"), Path("/dev/stdout")):
        # Into stdout itself, as predict's --out - is: through /dev/stdout, a `> page.html`
        # was a file of no .html name to the check below, and refused (found by QA).
        try:
            _product_to_stdout("the page", "give --out FILE.html")
            if len(run_dirs) == 1:
                page = render_report(read_run(run_dirs[0]))
            else:
                page = comparison_page(run_dirs)
        except Exception as exc:
            _fail(exc)
            return
        _write_data(page)
        err.print("report: /dev/stdout", markup=False)  # beside the page, not in it
        return
    default = run_dirs[0] / REPORT_FILE if len(run_dirs) == 1 else Path(COMPARE_FILE)
    try:
        if out_path is not None:
            check_output_file(out_path)
            check_report_out(out_path, run_dirs)
        check_replaceable(out_path or default, force=force)
        if len(run_dirs) == 1:
            path = write_report(run_dirs[0], out=out_path)
            _after_run_notes(run_dirs[0], unfinished_too=False)  # the page says that one
        else:
            path = write_comparison(run_dirs, out=out_path or Path(COMPARE_FILE))
    except Exception as exc:
        _fail(exc, writing=out_path or default)
        return
    # Beside a page written into stdout, not after it.
    (err if is_stream(path) else out).print(f"report: {path}", markup=False)


def _after_run_notes(run_dir: Path, *, unfinished_too: bool = True) -> None:
    """Say on stderr what is gone or damaged in a run the command could still read
    (:func:`orchestrator.errors.after_run_notes`), with the command that mends it."""
    from orchestrator.errors import after_run_notes

    try:
        notes = after_run_notes(run_dir)
    except OSError:  # a look only: the command's own work is done
        return
    if not unfinished_too and not (Path(run_dir) / "finished.json").is_file():
        return
    for note in notes:
        err.print(f"note: {note}", markup=False)


#: predict's and export's --plugin: a module that registers the model's custom Keras layers.
_ModelPlugins = Annotated[
    list[str] | None,
    typer.Option(
        "--plugin",
        help="Also load this plugin module (trusted code), e.g. one that registers the "
        "model's custom Keras layers.",
        metavar="MODULE",
    ),
]


@app.command()
def predict(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="A run directory.", metavar="RUN_DIR", parser=_run_path, callback=_home
        ),
    ],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="The data to predict, like csv:new.csv or sklearn:digits.",
            metavar="DATA",
        ),
    ],
    trial: Annotated[
        str | None,
        typer.Option(
            "--trial", help="A trial id or STRATEGY/ID (default: the best).", metavar="TRIAL"
        ),
    ] = None,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write here, as its suffix says: .csv, .parquet or .json "
            "(default, or -: CSV on stdout). Never the data read or a file of the run.",
            metavar="PATH",
            parser=_path,
            callback=_home,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
    target: Annotated[
        str | None,
        typer.Option(
            "--target", help="A table's label column (default: the run's).", metavar="TARGET"
        ),
    ] = None,
    ignore_column: Annotated[
        list[str] | None,
        typer.Option(
            "--ignore-column",
            help="A table's column that is no feature (an ID): copied to the output, as "
            "the run's data.ignore_columns are. Repeatable.",
            metavar="COLUMN",
        ),
    ] = None,
    plugin: _ModelPlugins = None,
) -> None:
    """Predict every example of a data source with the run's best (or a named) model."""
    from orchestrator.errors import check_output_file
    from orchestrator.paths import is_stream
    from orchestrator.predict import check_out, write_predictions
    from orchestrator.predict import predict as run_predict

    # "-", the usual name for stdout (it made a file named "-"); /dev/stdout as it: a
    # `> preds.csv` made it that file, which was refused as one that exists (found by QA).
    if out_path in (Path("-"), Path("/dev/stdout")):
        out_path = None
    try:
        if out_path is None:
            _product_to_stdout("the predictions", "give --out FILE")
        if out_path is not None:  # before the model is loaded and run
            check_output_file(out_path)
            check_out(out_path, run_dir, data, replace=force)
        # The predictions alone on stdout: what a plugin prints (a data source, a
        # module at its import) goes to stderr, or pandas read it as the CSV's header.
        aside = sys.stderr if out_path is None else sys.stdout
        with contextlib.redirect_stdout(aside):
            result = run_predict(
                run_dir, data, trial=trial, host=_run_host(plugin, run_dir), target=target,
                ignore=ignore_column or (),
            )  # fmt: skip
        if out_path is not None:
            write_predictions(result.frame, out_path, replace=force)
    except Exception as exc:
        _fail(exc, writing=out_path)
        return
    where = err  # the summary goes beside the predictions, not into them
    if out_path is None:
        _write_data(result.frame.to_csv(index=False))
    elif not is_stream(out_path):  # -o /dev/stdout or a FIFO: the predictions' stream
        where = out
    ref = result.model
    line = f"{len(result.frame)} predictions by {ref.strategy} trial {ref.trial_id}"
    if out_path is not None:
        line += f" written to {out_path}"
    unlabelled = int(result.frame["label"].isna().sum()) if "label" in result.frame else 0
    # Labelled with a class the model does not have: predicted, not scored.
    foreign = len(result.frame) - unlabelled - result.n_scored if "label" in result.frame else 0
    unscored = [
        f"{n} {why}"
        for n, why in (
            (unlabelled, "without a label"),
            (foreign, "with a label the model has no class for"),
        )
        if n
    ]
    if result.accuracy is not None:
        line += f"; accuracy {result.accuracy:.4f} on {result.n_scored} labelled examples"
        if unscored:
            line += f" ({' and '.join(unscored)}: predicted only)"
    elif "label" in result.frame:  # labelled, but with no class the model knows
        labels = sorted({str(label) for label in result.frame["label"].dropna()}, key=_label_order)
        line += (
            f"; no accuracy: none of the labels ({first_few(labels, 10)}) is one of the "
            f"model's classes ({first_few(ref.class_names, 10)})"
        )
        if unlabelled:
            line += f"; {unlabelled} without a label"
    where.print(line, markup=False)
    _after_run_notes(run_dir)


def _label_order(label: str) -> tuple[int, float, str]:
    """Numbers by value (5 before 42 before 100), then the rest by their text."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


class ExportFormat(StrEnum):
    keras = "keras"
    savedmodel = "savedmodel"


@app.command()
def export(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="A run directory.", metavar="RUN_DIR", parser=_run_path, callback=_home
        ),
    ],
    dest: Annotated[
        Path,
        typer.Argument(
            help="The folder to create.", metavar="DEST", parser=_export_dest, callback=_home
        ),
    ],
    format: Annotated[
        ExportFormat,
        typer.Option("--format", "-f", help="keras (.keras file) or savedmodel.", metavar="FORMAT"),
    ] = ExportFormat.keras,
    trial: Annotated[
        str | None,
        typer.Option(
            "--trial", help="A trial id or STRATEGY/ID (default: the best).", metavar="TRIAL"
        ),
    ] = None,
    plugin: _ModelPlugins = None,
) -> None:
    """Export the run's best (or a named) model with its class names, usable without graftune."""
    from orchestrator.export import export_model
    from orchestrator.tuning.ray_start import sigterm_stops_the_run

    try:
        # Ctrl+C and SIGTERM remembered where Python drops them (export_model).
        with sigterm_stops_the_run():
            # Imported, and the plugins' graftune_keras_objects registered: the model
            # loads. The plugins the run's recipe disabled stay so (a broken one
            # stopped export).
            _run_host(plugin, run_dir).keras_objects()
            path = export_model(run_dir, dest, format=format.value, trial=trial)
    except Exception as exc:
        _fail(exc, writing=dest)
        return
    out.print(f"exported ({format.value}): {path}", markup=False)
    _after_run_notes(run_dir)


# -- Ray clusters: submit, jobs, fetch (logic in orchestrator.submit) -------------------

_DashboardAddress = Annotated[
    str | None,
    typer.Option(
        "--address",
        help=(
            "The cluster's dashboard, http://HEAD:8265 "
            "(default: $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS)."
        ),
        metavar="ADDRESS",
    ),
]


@app.command()
def submit(
    recipe: Annotated[
        Path | None,
        typer.Argument(
            help="The recipe file to send (not with --resume).",
            metavar="RECIPE",
            parser=_path,
            callback=_home,
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            help="Continue a stopped or failed run as a new job: its job id, or its place "
            "in storage (s3://bucket/runs/JOB, or a folder every node mounts).",
            metavar="JOB",
        ),
    ] = None,
    address: _DashboardAddress = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Stream the job's log; exit with its status.")
    ] = False,
    pip: Annotated[
        list[str] | None,
        typer.Option(
            "--pip",
            help="Also pip-install this requirement or local wheel in the job (repeat).",
            metavar="REQUIREMENT",
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="Store the run here: a URI or a folder every node mounts.",
            metavar="STORAGE",
        ),
    ] = None,
    shared_storage: Annotated[
        bool,
        typer.Option("--shared-storage", help="The storage folder is mounted on every node."),
    ] = False,
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin",
            help="Send this plugin module that is not installed with the job (trusted code).",
            metavar="MODULE",
        ),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Print the job id alone (JOB=$(graftune submit -q ...))."
        ),
    ] = False,
) -> None:
    """Send a recipe to a Ray cluster as a job (Ray's job API) and print its id; with
    --resume, continue a stopped or failed job's run as a new job."""
    from orchestrator import submit as jobs

    if (recipe is None) == (resume is None):
        err.print("error: give a RECIPE to submit, or --resume JOB to continue a run (not both)")
        raise typer.Exit(2)
    if resume is not None and (storage is not None or shared_storage):
        given = "--storage" if storage is not None else "--shared-storage"
        err.print(f"error: {given} with --resume: a resumed run stays in its storage", markup=False)
        raise typer.Exit(2)
    echo = (lambda line: None) if quiet else (lambda line: out.print(line, markup=False))
    try:
        if resume is not None:
            client, job = _submit_resume(resume, address, pip or [], plugin or [], echo)
            if job is None:
                return
        else:
            assert recipe is not None
            loaded = jobs.recipe_for_submit(recipe, storage=storage, shared=shared_storage)
            jobs.check_sendable(loaded, pip=pip or [], plugins=plugin or [])
            client = jobs.JobClient(address)
            job = jobs.submit(
                loaded,
                client,
                pip=pip or [],
                plugins=plugin or [],
                data_sources=_data_sources(),
                echo=echo,
                debug=_state["debug"],
            )
    except Exception as exc:
        _fail(exc)
        return
    if quiet:  # for a script to keep (found by QA: only parsing the line gave it)
        out.print(job.job_id, markup=False)
    else:
        out.print(f"submitted job {job.job_id} to {job.address}", markup=False)
        out.print(f"results: {job.location}", markup=False)
    if quiet and not follow:
        return
    if not follow:
        out.print(f"follow: graftune jobs logs {job.job_id} --follow --address {job.address}")
        out.print(f"fetch:  graftune fetch {job.job_id} --address {job.address}")
        return
    _follow_job(client, job.job_id)


def _submit_resume(
    given: str, address: str | None, pip: list[str], plugins: list[str], echo: Any
) -> tuple[Any, Any]:
    """``submit --resume``: the client and the job submitted (``None``: the job had
    succeeded, its run is complete, and nothing was sent)."""
    from orchestrator import submit as jobs

    jobs.check_sendable(None, pip=pip, plugins=plugins)
    # A place in storage needs no cluster to find: looked at before any cluster is asked.
    target = jobs.resume_target(None, given) if jobs.names_a_place(given) else None
    if target is not None:
        jobs.check_stored(target, given)
    client = jobs.JobClient(address)
    if target is None:  # a job's id: the job says where its run is stored
        target = jobs.resume_target(client, given)
        if not target.finished:
            jobs.check_stored(target, given)
    if target.finished:
        out.print(
            f"job {target.job} succeeded: its run is complete, nothing to resume\n"
            f"fetch: graftune fetch {target.job} --address {client.address}",
            markup=False,
        )
        return client, None
    job = jobs.submit_resume(
        target, client, pip=pip, plugins=plugins, echo=echo, debug=_state["debug"]
    )
    return client, job


#: A terminal's colour sequences (SGR), harmless, which Ray's log lines may hold.
_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


def _log_text(text: str) -> str:
    """A job's log as it is shown: without colours, and its other control characters
    (escape sequences that set a terminal's title or clear it, found by security QA)
    shown as escapes, as the other commands show text from data and clusters."""
    return printable(_COLOURS.sub("", text))


def _data_sources() -> Any:
    """The data sources installed here (to tell paths from names), or ``None``."""
    try:
        return _host().data_sources
    except Exception:
        return None


def _follow_job(client: Any, job_id: str) -> None:
    from orchestrator.submit import failure_message

    def write(chunk: str) -> None:
        sys.stdout.write(_log_text(chunk))
        sys.stdout.flush()

    def stop_following(signum: int, frame: Any) -> None:
        # Ctrl+C stops the watching, not the job. At once: asyncio's own
        # interrupt handling waits for the log stream and a status request to
        # wind down, which can take a minute or hang. A flush the signal came in
        # the middle of cannot be entered again (RuntimeError: reentrant call):
        # what it held is left, and the handler goes on to exit.
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        err.print(
            f"stopped following; job {job_id} goes on on the cluster\n"
            f"follow it again: graftune jobs logs {job_id} --follow --address {client.address}\n"
            f"stop it: graftune jobs stop {job_id} --address {client.address}",
            markup=False,
        )
        sys.stderr.flush()
        os._exit(RunInterrupted.exit_status)

    previous = signal.signal(signal.SIGINT, stop_following)
    try:
        info = client.follow(job_id, write)
    except Exception as exc:
        _fail(exc)
        return
    finally:
        signal.signal(signal.SIGINT, previous)
    if str(info.status) != "SUCCEEDED":
        err.print(f"error: {failure_message(client, info)}", markup=False)
        raise typer.Exit(1)
    out.print(f"job {job_id} succeeded", markup=False)
    out.print(f"fetch: graftune fetch {job_id} --address {client.address}", markup=False)


jobs_app = _App(
    help="List, follow and stop jobs on a Ray cluster.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(jobs_app, name="jobs")


def _job_client(address: str | None) -> Any:
    from orchestrator.submit import JobClient

    return JobClient(address)


@jobs_app.command("list")
def jobs_list(
    address: _DashboardAddress = None,
    all_: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Also list drivers that connected without the job API "
            "(graftune run --address, ray.init); a driver that has gone shows ENDED, "
            "however it exited (Ray does not know).",
        ),
    ] = False,
    format: _ListingFormat = Listing.table,
) -> None:
    """Every job submitted to the cluster, oldest first, and where graftune stored each run."""
    _json_goes_out(format)
    from orchestrator.submit import META_RECIPE, run_location

    try:
        found = _job_client(address).list()
    except Exception as exc:
        _fail(exc)
        return
    # A driver that connected by itself has no submission id; logs, stop and fetch
    # take submission ids only, so such rows are noise unless asked for.
    drivers = [job for job in found if not job.submission_id]
    if not all_:
        found = [job for job in found if job.submission_id]

    if format is Listing.json:
        _write_json(
            [
                {
                    "job": job.submission_id,
                    "driver": None if job.submission_id else job.job_id,
                    "status": _job_status(job),
                    # Ray's 0 for a driver still running is no time (found by QA: 1970).
                    "started": job.start_time / 1000 if job.start_time else None,
                    "ended": job.end_time / 1000 if job.end_time else None,
                    "recipe": (job.metadata or {}).get(META_RECIPE),
                    "results": run_location(job),
                }
                for job in found
            ]
        )
        return
    table = Table("job", "status", "started", "recipe", "results", box=None, header_style="bold")
    for job in found:
        started = job.start_time and time.strftime(
            "%Y-%m-%d %H:%M:%S", time.localtime(job.start_time / 1000)
        )
        cells = (
            job.submission_id or f"{job.job_id} (driver)",
            _job_status(job),
            started or "",
            (job.metadata or {}).get(META_RECIPE, ""),
            run_location(job) or "",
        )
        table.add_row(*map(_text, cells))
    if found or not drivers:
        # Piped, whole cells (a script reads the results' location), not rich's ellipses.
        _print_rich_table(table)
    if drivers and not all_:
        some = f"{len(drivers)} driver{'s' if len(drivers) > 1 else ''}"
        out.print(
            f"({'no submitted jobs; ' if not found else ''}{some} that connected without the "
            "job API, like `graftune run --address`, not shown: --all lists them)",
            markup=False,
            style="dim",
        )


def _job_status(job: Any) -> str:
    """A job's status as Ray's ``JobDetails`` says it, but ``ENDED`` for a driver
    that connected without the job API and has gone: Ray marks one that
    disconnected SUCCEEDED, a killed one or one that exited 1 too (found by QA),
    knowing only that it ended."""
    said = str(job.status)
    return "ENDED" if not job.submission_id and said == "SUCCEEDED" else said


@jobs_app.command("status")
def jobs_status(
    job: Annotated[str, typer.Argument(help="The job id.", metavar="JOB")],
    address: _DashboardAddress = None,
) -> None:
    """A job's status, Ray's message about it, and where its run is stored."""
    from orchestrator.submit import run_location

    try:
        info = _job_client(address).info(job)
    except Exception as exc:
        _fail(exc)
        return
    # Found by QA: a driver killed with kill -9 was "SUCCEEDED" here, "ENDED" in the list.
    out.print(f"{job}: {_job_status(info)}", markup=False)
    if info.message:
        out.print(f"message: {info.message.strip()}", markup=False)
    if run_location(info):
        out.print(f"results: {run_location(info)}", markup=False)


@jobs_app.command("logs")
def jobs_logs(
    job: Annotated[str, typer.Argument(help="The job id.", metavar="JOB")],
    follow: Annotated[
        bool, typer.Option("--follow", help="Stream until the job ends; exit with its status.")
    ] = False,
    address: _DashboardAddress = None,
) -> None:
    """A job's log (its driver's output)."""
    try:
        client = _job_client(address)
        if not follow:
            sys.stdout.write(_log_text(client.logs(job)))
            return
    except Exception as exc:
        _fail(exc)
        return
    _follow_job(client, job)


@jobs_app.command("stop")
def jobs_stop(
    job: Annotated[str, typer.Argument(help="The job id.", metavar="JOB")],
    address: _DashboardAddress = None,
) -> None:
    """Stop a job (its driver and trials) and wait until it has stopped."""
    try:
        info, asked = _job_client(address).stop(job)
    except Exception as exc:
        _fail(exc)
        return
    if not asked:  # found by QA: "stop", then "SUCCEEDED", read as done by it
        out.print(f"{job}: {info.status} (it had ended: nothing to stop)", markup=False)
        return
    out.print(f"{job}: {info.status}", markup=False)
    if not info.status.is_terminal():
        err.print(f"error: {_not_stopped(job, str(info.status))}", markup=False)
        raise typer.Exit(1)


def _not_stopped(job: str, status: str) -> str:
    """What to say of a job ``jobs stop`` asked to stop and that has not, after 30 s."""
    said = f"job {job} is still {status} after 30 s"
    if status == "PENDING":
        # Ray hands the stop to the job's supervisor, which starts only once the job's
        # runtime environment is set up (found by QA: said as if the stop had failed).
        return (
            f"{said}: Ray stops it once its runtime environment is set up (pip installing "
            f"its packages); see it end with: graftune jobs status {job}"
        )
    return said


@app.command()
def fetch(
    job: Annotated[
        str,
        typer.Argument(
            help="The job id, or the run's URI in storage (s3://bucket/runs/JOB; no cluster).",
            metavar="JOB",
        ),
    ],
    dest: Annotated[
        Path | None,
        typer.Argument(
            help="Copy the run directory here (default ./JOB).", metavar="DEST", callback=_home
        ),
    ] = None,
    address: _DashboardAddress = None,
) -> None:
    """Copy a job's run directory (leaderboard, report, best model) from storage; a
    stopped or failed job's gives what it stored, and how to resume it."""
    import shlex

    from orchestrator.run import FINISHED_FILE
    from orchestrator.storage import is_uri
    from orchestrator.submit import fetch as fetch_run

    by_uri = is_uri(job)
    try:
        if by_uri:
            # Found by QA: a run safe in storage could not be fetched once the cluster
            # that ran it was gone or restarted (its job's record with it).
            where, plugins, stored = _fetch_stored(job, dest)
        else:
            where, plugins, stored = fetch_run(_job_client(address), job, dest)
    except Exception as exc:
        _fail(exc)
        return
    out.print(f"fetched {job}: {where}", markup=False)
    if not (where / FINISHED_FILE).is_file():  # stopped, failed or killed midway
        ended = (
            ", and its leaderboard and model cover only the trials that ended"
            if (where / "leaderboard.csv").is_file()
            else ""
        )
        # A run stored in a folder goes on there: a copy resumed stays a copy (one
        # stored in a URI is stored back from wherever it is resumed).
        resumed, there = (where, "") if stored is None else (stored, " where it is stored")
        flags = "".join(f" --plugin {shlex.quote(name)}" for name in plugins)
        # Fetched with no cluster asked, it may be going still (found by QA: a resume
        # of the copy then wrote its storage beside the run).
        state = (
            "the run has not finished (if it is still going, let it end first)"
            if by_uri
            else "the job's run did not finish"
        )
        err.print(
            f"note: {state}: {where} holds what it had stored{ended}; "
            f"continue it{there} with: graftune run --resume {shlex.quote(str(resumed))} "
            f"--address HEAD:6379{flags} (or --address local: embedded Ray here), or as a "
            f"job: graftune submit --resume {shlex.quote(job)} --address DASHBOARD{flags}",
            markup=False,
        )
    if (where / "leaderboard.md").is_file():
        out.print(f"leaderboard: {where / 'leaderboard.md'}", markup=False)
    if (where / "best" / "model.keras").is_file():
        out.print(f"model: {where / 'best' / 'model.keras'}", markup=False)


def _fetch_stored(uri: str, dest: Path | None) -> tuple[Path, list[str], Path | None]:
    """Copy the run at ``uri`` in storage to ``dest`` (default ``./NAME``): where it
    went, the ``--plugin`` modules the run records, and the folder it is stored in
    where that is where it is resumed (a ``file://`` one, not stored at a URI)."""
    from urllib.parse import urlsplit

    from orchestrator.environment import recorded_plugin_modules
    from orchestrator.storage import StorageError, check_location, last_part, stored_uri
    from orchestrator.storage import fetch as copy_run

    try:
        check_location(uri)
    except ValueError as exc:
        raise StorageError(str(exc)) from None
    split = urlsplit(uri)
    name = last_part(uri)
    if not name:
        raise StorageError(f"{uri}: give the run's folder in storage, not its root")
    where = copy_run(uri, dest if dest is not None else Path(name))
    # A run stored at a URI records it, and a copy resumed anywhere is stored back
    # there; one made in a folder (storage: /path) is resumed in that folder.
    stored = None
    if split.scheme.lower() == "file" and stored_uri(where) is None:
        stored = Path(split.path)
    return where, list(recorded_plugin_modules(where)), stored


cache_app = _App(
    help="Show or free graftune's cache of pretrained bases and frozen features.",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
def cache_info(format: _ListingFormat = Listing.table) -> None:
    """List cached bases and frozen-feature sets with their sizes."""
    _json_goes_out(format)
    from orchestrator.bases import cache_dir
    from orchestrator.feature_cache import cache_entries, size_text

    try:
        entries = cache_entries()
    except Exception as exc:  # a cache folder no file can be at: _fail says so (found by QA)
        _fail(exc)
        return
    if format is Listing.json:
        _write_json(
            {
                "cache": str(cache_dir()),
                "entries": [
                    {
                        "kind": entry.kind,
                        "size_bytes": entry.size_bytes,
                        "entry": entry.path.name,
                        "path": str(entry.path),
                        "what": entry.description,
                    }
                    for entry in entries
                ],
                "total_bytes": sum(e.size_bytes for e in entries),
            }
        )
        return
    out.print(f"cache: {cache_dir()}", markup=False)
    if not entries:
        out.print("empty", markup=False)
        return
    table = Table("kind", "size", "entry", "what", box=None, header_style="bold")
    for entry in entries:
        cells = (entry.kind, size_text(entry.size_bytes), entry.path.name, entry.description)
        table.add_row(*map(_text, cells))
    _print_rich_table(table)
    out.print(f"total: {size_text(sum(e.size_bytes for e in entries))}", markup=False)


@cache_app.command("clear")
def cache_clear(
    features: Annotated[bool, typer.Option("--features", help="Only frozen features.")] = False,
    bases: Annotated[bool, typer.Option("--bases", help="Only pretrained bases.")] = False,
) -> None:
    """Free the cache (both kinds unless --features or --bases)."""
    from orchestrator.feature_cache import clear_cache, size_text

    kinds = tuple(k for k, chosen in (("features", features), ("base", bases)) if chosen)
    try:
        freed, failed = clear_cache(kinds or ("base", "features"))
    except Exception as exc:  # as cache info: _fail says what is wrong, in one line
        _fail(exc)
        return
    out.print(f"freed {size_text(freed)}", markup=False)
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        err.print(f"error: could not remove {failed[0]}{more}", markup=False)
        raise typer.Exit(1)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or value != value:
        return ""
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            return f"{value:.{digits}f}"
        return f"{value:.2e}"  # tiny, or huge (a λ of 1e38 printed 39 digits)
    return str(value)


def _ranked_by(run_dir: Path) -> str:
    """The metric a run directory's leaderboard is ranked by (its recipe's)."""
    import yaml

    try:
        recipe = yaml.safe_load((Path(run_dir) / "recipe.yaml").read_text(encoding="utf-8"))
        return str(recipe["search"]["metric"])
    except Exception:  # an old or damaged run: the default metric
        return "val_accuracy"


def _print_table(frame: Any, run_dir: Path | None = None) -> None:
    from orchestrator.leaderboard import LEAD_COLUMNS, METRIC_COLUMNS, TAIL_COLUMNS

    hidden = {"val_loss", "test_loss", "peak_memory_mb", "params_total", "params_trainable", "note"}
    metric = _ranked_by(run_dir) if run_dir is not None else "val_accuracy"
    hidden.discard(metric)  # the column the ranks come from stays
    columns = [c for c in frame.columns if c not in hidden]
    parameters = set(frame.columns) - set(LEAD_COLUMNS + METRIC_COLUMNS + TAIL_COLUMNS)
    if "error" in frame and not frame["error"].notna().any():
        columns.remove("error")
    if "retries" in frame and not (frame["retries"].fillna(0) > 0).any():
        columns.remove("retries")
    # One machine (one IP) says nothing: a resumed run has a new Ray node id there.
    nodes = frame["node"].dropna().astype(str) if "node" in frame else None
    if nodes is not None and nodes.str.split("/").str[0].nunique() <= 1:
        columns.remove("node")
    # Piped, a wide leaderboard keeps whole cells rather than rich's ellipses.
    console = out if out.is_terminal else _Console(highlight=False, width=1000)
    ellipsis = _ellipsis(console.encoding)
    rows = []
    for _, row in frame.iterrows():
        cells = {}
        for column in columns:
            value = row[column]
            if column == "error" and isinstance(value, str):
                value = ellipsized(
                    one_line(value), _ERROR_CELL, ellipsis
                )  # whole in leaderboard.md
            value = None if _isna(value) else value
            if column in parameters and isinstance(value, float):
                # Three significant digits: learning rates 0.00648 and 0.00624 differ.
                cells[column] = f"{value:.3g}"
                continue
            cells[column] = _fmt(value, 4 if column in METRIC_COLUMNS else 3)
        rows.append({column: _text(cell) for column, cell in cells.items()})
    keep = [*LEAD_COLUMNS, metric, "test_accuracy"]
    shown, cut = _fitting_columns(columns, rows, console.width, keep=keep)
    table = Table(box=None, header_style="bold")
    for column in shown:
        table.add_column(column, no_wrap=True, max_width=cut.get(column))
    for row in rows:
        table.add_row(*(row[column] for column in shown))
    needed = sum(cut.get(column, _cell_width(column, rows)) + 2 for column in shown)
    if needed > console.width:  # the key columns alone: whole, and the terminal wraps
        console = _Console(
            file=console.file,
            width=needed,
            highlight=False,
            soft_wrap=True,
            force_terminal=console.is_terminal,
            color_system=console.color_system,  # type: ignore[arg-type]
        )
    _print_rich_table(table, console)
    dropped = [column for column in columns if column not in shown]
    said = []
    if dropped:
        more = f"{len(dropped)} more column{'s' if len(dropped) > 1 else ''}"
        said.append(f"{more} on a wider terminal: {', '.join(dropped)}")
    if "error" in cut:  # found by QA: "RuntimeError: del…", and no word of why
        said.append(f"errors cut to {cut['error']} characters, longer on a wider terminal")
    failed = frame[frame["status"] == "error"] if "status" in frame else frame.iloc[:0]
    if run_dir is not None and len(failed):  # found by QA: nothing pointed at error.txt
        from orchestrator.trial import ERROR_FILE, trial_dir

        first = trial_dir(run_dir, str(failed["strategy"].iloc[0]), str(failed["trial_id"].iloc[0]))
        if (first / ERROR_FILE).is_file():
            console.print(
                f"(each failed trial's traceback is its {ERROR_FILE}: {first / ERROR_FILE})",
                markup=False,
                style="dim",
                soft_wrap=True,  # the path whole, to copy
            )
    if said:
        where = run_dir / "leaderboard.md" if run_dir is not None else "leaderboard.md"
        command = f"graftune leaderboard {shlex.quote(str(run_dir or 'RUN_DIR'))} --format md"
        whole = "all of them" if not cut else "errors whole" if not dropped else "all, whole"
        console.print(
            f"({'; '.join(said)}; {whole}: {where} or {command})",
            markup=False,
            style="dim",
        )


#: The most characters of an error the printed leaderboard shows, its ellipsis included.
_ERROR_CELL = 60


def _ellipsis(encoding: str) -> str:
    """``…``, or ``...`` where the console's encoding cannot show it (it would be
    escaped as ``\\u2026``)."""
    try:
        "…".encode(encoding)
    except (LookupError, UnicodeEncodeError):
        return "..."
    return "…"


def _fitting_columns(
    columns: list[str], rows: list[dict[str, Any]], width: int, *, keep: list[str]
) -> tuple[list[str], dict[str, int]]:
    """The columns that fit in ``width``, in their order, and the width of any cut short.

    The ``keep`` columns are always shown whole (on a terminal too narrow for
    them, the lines run on); the others whole, in their order, up to the first
    that does not fit (a cell cut to ``0.…`` or ``87f2…`` tells nothing). An
    error message is shown cut short (ellipsized) where a useful part fits.
    """
    sizes = {column: _cell_width(column, rows) + 2 for column in columns}  # padding 1+1
    chosen = {column for column in columns if column in keep}
    room = width - sum(sizes[column] for column in chosen)
    for column in columns:
        if column in chosen or column == "error":
            continue
        if sizes[column] > room:
            break
        chosen.add(column)
        room -= sizes[column]
    cut = {}
    if "error" in columns and "error" not in chosen and room >= 20:
        chosen.add("error")
        if sizes["error"] > room:  # a useful part of the message
            cut["error"] = room - 2
    return [column for column in columns if column in chosen], cut


def _cell_width(column: str, rows: list[dict[str, Any]]) -> int:
    """The width of a column's widest cell, its header included."""
    return max([len(column), *(row[column].cell_len for row in rows)])


def _text(value: str) -> Any:
    """A table cell as it is: on one line, and never read as rich's markup (an
    error's ``[/tmp/x]`` was a closing tag that ended the command in a traceback)."""
    from rich.text import Text

    return Text(one_line(value))


def _isna(value: Any) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def main() -> None:
    """Console-script entry point."""
    from orchestrator.native_log import quiet_tensorflow_start

    _closed_streams_opened()
    _buffered_stdout()
    # A console that cannot show a character (PYTHONIOENCODING=ascii, a Latin-1
    # terminal) ended commands in a UnicodeEncodeError's traceback: shown escaped.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")
    quiet_tensorflow_start()
    try:
        try:
            app(args=debug_first(sys.argv[1:]))
        except OSError as exc:  # Click ends a closed pipe's itself, not a full disk's
            if _state["output_error"] is None:
                raise
            if _state["debug"]:
                import traceback

                traceback.print_exception(exc, file=sys.stderr)
            raise SystemExit(1) from None
    except SystemExit as exc:
        code = exc.code
        _no_colour_reset()
        if _reader_gone() or not _flushed(sys.stdout):
            code = 128 + signal.SIGPIPE
        elif _state["output_error"] is not None:
            code = _output_failed(_state["output_error"])
        if "tensorflow" not in sys.modules:
            raise SystemExit(code) from None
        _exit_now(code)


def _no_colour_reset() -> None:
    """Take back the exit hook of the colorama Ray bundles (its CLI logger calls
    ``colorama.init(strip=False)`` when imported), which wrote ``ESC[0m`` at the end
    of every run on a terminal, ``TERM=dumb`` and ``--quiet`` too (found by QA):
    graftune leaves no colour set."""
    import atexit

    module = sys.modules.get("colorama.initialise")  # ray/thirdparty_files is on sys.path
    if module is not None and hasattr(module, "reset_all"):
        atexit.unregister(module.reset_all)


def debug_first(args: list[str]) -> list[str]:
    """The command line with ``--debug`` moved before the command, where Click reads it.

    ``--debug`` is graftune's own option, and ``graftune run r.yaml --debug``,
    as users write it after other tools, was a usage error ("No such option").
    Nothing after a ``--`` is moved: that is an argument.
    """
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[1:end]:
        return args
    return ["--debug", *(a for a in args[:end] if a != "--debug"), *args[end:]]


def _closed_streams_opened() -> None:
    """Open ``/dev/null`` as stdout or stderr where the command started without it
    (``>&-``): its output goes nowhere, as with ``> /dev/null``. Found by QA: the
    import itself ended in a traceback. The descriptor is taken too, so no file
    opened later (a log, which Ray's processes would then write into) becomes it."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is not None:
            continue
        _state["stdout_closed"] = _state["stdout_closed"] or fd == 1
        _null_onto(fd)
        setattr(sys, name, open(fd, "w", encoding="utf-8", closefd=False))  # noqa: SIM115


class _Stdout(io.FileIO):
    """stdout's file, which keeps the error a write to it met (``_state``), so that
    the command ends saying it: a full disk under ``> file`` or ``> /dev/full`` gave
    a traceback, and Python's own exit status 120 (found by QA)."""

    def write(self, data: Any) -> int | None:
        try:
            return super().write(data)
        except OSError as exc:
            first = _state["output_error"] is None
            _state["output_error"] = exc
            if not _state["goes_on"] or isinstance(exc, BrokenPipeError):
                raise
            # A run goes on, printing nothing more, as when its reader has gone (found
            # by QA: a log on a full disk stopped the search, blaming the run's disk);
            # it ends saying that stdout failed (exit 1).
            _reader_left()
            if first:
                err.print(
                    f"note: the output (stdout) cannot be written ({exc.strerror or exc}); "
                    "the run goes on without printing its progress",
                    markup=False,
                )
            return len(data)


def _buffered_stdout() -> None:
    """Write stdout through :class:`_Stdout`, with a buffer even where ``-u`` or
    ``PYTHONUNBUFFERED`` took it away.

    Unbuffered, Python's text stream writes to the file itself and takes a
    short write (a pipe whose reader left midway) as the whole: the rest was
    dropped without an error, and ``predict | head`` exited 0, saying every
    example was predicted. A buffer writes the rest, and meets the closed pipe.
    Lines still go out as they are written where they did (``-u``, a terminal).
    """
    stream = sys.stdout
    try:
        stream.flush()
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # closed (``>&-``), or not a file
        return
    unbuffered = isinstance(getattr(stream, "buffer", None), io.RawIOBase)
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(_Stdout(fd, "w", closefd=False)),
        encoding=stream.encoding,
        errors=stream.errors,
        line_buffering=unbuffered or stream.line_buffering,
    )


def _output_failed(exc: OSError) -> int:
    """Say that stdout could not be written, and why; the exit status (1, as a full
    disk ends a run). What is left unwritten goes to ``/dev/null`` (_reader_left):
    Python's own flush at exit would meet the error again."""
    _reader_left()
    what = "the output (stdout)"
    problem = _path_problem(exc, writing=what)  # a full disk's, as other commands say it
    said = problem[0] if problem is not None else f"cannot write {what}: {exc.strerror or exc}"
    err.print(f"error: {said}", markup=False)
    return 1


def _flushed(stream: Any) -> bool:
    """Flush ``stream``; False where its reader has gone (what is left is dropped)."""
    try:
        stream.flush()
    except BrokenPipeError:
        _reader_left()
        return False
    except (OSError, ValueError):
        pass
    return True


def _reader_gone() -> bool:
    """Whether the command stopped because its output's reader had gone (``| head``).

    Rich and Click end such a command quietly with status 1 (Click after
    putting its flush-pacifying wrapper on stdout); 1 is graftune's "every
    trial failed". The status a shell gives a program that SIGPIPE ended (141)
    says what happened, as ``yes | head`` does: a ``set -o pipefail`` script
    still sees it.
    """
    # Typer carries its own copy of Click (typer._click): the wrapper is known by name.
    return _state["reader_gone"] or type(sys.stdout).__name__ == "PacifyFlushWrapper"


def _exit_now(code: int | str | None) -> None:
    """End this process without tearing the interpreter down.

    With TensorFlow loaded, Python's own shutdown takes 1.5-2.5 s after the
    command has finished. Everything a shutdown does that matters happens
    here: threads that are not daemons are waited for, the exit hooks run
    (logging's, Ray's, plugins'), and every file still open is flushed; only
    the freeing of memory is left to the system.
    """
    import atexit
    import gc
    import io
    import threading

    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    try:
        for thread in threading.enumerate():  # as Python's shutdown does, first
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
    except KeyboardInterrupt:  # a thread that does not end: Ctrl+C ends the wait
        # What the command printed goes out first (found by QA: a finished run's
        # leaderboard, in a file or a pipe, was lost); its result is its status.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code or 0)
    # The command's result is out: a Ctrl+C now would only tear the exit, with a
    # traceback and the status of a stopped run (found by QA: pressed as the
    # prompt was slow to come back, after a finished run).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    atexit._run_exitfuncs()
    # By type, once each: io.IOBase is an ABC, whose isinstance() on each of the
    # million objects TensorFlow leaves took 0.5 s of every such command (found by QA).
    is_file: dict[type, bool] = {}
    for obj in gc.get_objects():
        kind = type(obj)
        if kind not in is_file:
            is_file[kind] = issubclass(kind, io.IOBase)
        if is_file[kind]:
            try:
                if not obj.closed:
                    obj.flush()
            except Exception:
                pass
    os._exit(code or 0)


if __name__ == "__main__":
    main()
