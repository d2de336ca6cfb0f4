"""The ``graftune`` command line: run, validate, plugins, leaderboard.

Errors graftune raises on purpose become one message on stderr and an exit
status (2 for a bad recipe, data or base; 3 for a broken plugin; 1 when every
trial failed); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from orchestrator.errors import GraftuneError

# TensorFlow's C++ start-up chatter is not for users; set before it can be imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = typer.Typer(
    name="graftune",
    help="A plugin-based AutoML orchestrator for transfer learning (Keras 3 + Ray Tune).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# Piped output keeps whole table rows rather than rich's 80 columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        from orchestrator import __version__

        out.print(f"graftune {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """graftune: search transfer-learning strategies with Ray Tune, ranked in a leaderboard."""
    _state["debug"] = debug


def _fail(exc: BaseException) -> None:
    if _state["debug"]:
        raise exc
    if isinstance(exc, GraftuneError):
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(exc.exit_status)
    err.print(
        f"internal error: {type(exc).__name__}: {exc}\n(run with --debug for the traceback)",
        markup=False,
    )
    raise typer.Exit(1)


def _host(plugins: list[str] | None = None) -> Any:
    from orchestrator.plugin_manager import get_plugin_manager

    return get_plugin_manager(extra_plugins=plugins or ())


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(help="The recipe file to check.")],
    plugin: Annotated[
        list[str] | None, typer.Option("--plugin", help="Also load this plugin module.")
    ] = None,
) -> None:
    """Check a recipe without training: schema, names, files, columns, spaces."""
    from orchestrator.recipe import validate_recipe

    try:
        loaded = validate_recipe(recipe, _host(plugin))
    except Exception as exc:
        _fail(exc)
        return
    out.print(
        f"{recipe}: ok ({', '.join(loaded.strategies)} on {loaded.data.source})", markup=False
    )


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="The recipe file to run.")],
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Write here instead of OUTPUT/NAME-TIME.")
    ] = None,
    plugin: Annotated[
        list[str] | None,
        typer.Option("--plugin", help="Load a plugin module that is not installed (trusted code)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only print the result.")] = False,
) -> None:
    """Run a recipe: search every strategy with Ray Tune and rank the trials."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from orchestrator.run import run_recipe

    def echo(line: str) -> None:
        if not quiet:
            out.print(line, markup=False)

    try:
        outcome = run_recipe(recipe, run_dir=run_dir, host=_host(plugin), echo=echo)
    except Exception as exc:
        _fail(exc)
        return
    _print_table(outcome.leaderboard)
    best = outcome.best or {}
    out.print(
        f"best: {best.get('strategy')} trial {best.get('trial_id')} "
        f"val_accuracy={_fmt(best.get('val_accuracy'))} test_accuracy={_fmt(best.get('test_accuracy'))}",
        markup=False,
    )
    out.print(f"model: {outcome.run_dir / 'best' / 'model.keras'}", markup=False)
    out.print(f"leaderboard: {outcome.run_dir / 'leaderboard.md'}", markup=False)


@app.command()
def plugins() -> None:
    """List every plugin with its distribution, version and what it adds."""
    try:
        host = _host()
    except Exception as exc:
        _fail(exc)
        return
    table = Table("plugin", "distribution", "version", "adds", box=None, header_style="bold")
    for info in host.infos():
        table.add_row(info.name, info.distribution, info.version, ", ".join(info.adds) or "-")
    out.print(table)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    md = "md"
    json = "json"


@app.command()
def leaderboard(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
) -> None:
    """Show a run's leaderboard again."""
    from orchestrator import leaderboard as lb

    if not (run_dir / lb.FILES["csv"]).is_file():
        err.print(f"error: {run_dir} has no {lb.FILES['csv']} (is it a graftune run directory?)")
        raise typer.Exit(2)
    frame = lb.read_leaderboard(run_dir)
    if format is Format.csv:
        sys.stdout.write(frame.to_csv(index=False))
    elif format is Format.md:
        sys.stdout.write(lb.to_markdown(frame) + "\n")
    elif format is Format.json:
        sys.stdout.write(lb.to_json(frame) + "\n")
    else:
        _print_table(frame)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or value != value:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def _print_table(frame: Any) -> None:
    from orchestrator.leaderboard import METRIC_COLUMNS

    hidden = {"val_loss", "test_loss", "peak_memory_mb", "params_total", "params_trainable"}
    columns = [c for c in frame.columns if c not in hidden]
    if not frame["error"].notna().any():
        columns.remove("error")
    table = Table(*columns, box=None, header_style="bold")
    for _, row in frame.iterrows():
        cells = []
        for column in columns:
            value = row[column]
            if column == "error" and isinstance(value, str):
                value = value[:60]
            digits = 4 if column in METRIC_COLUMNS else 3
            cells.append(_fmt(None if _isna(value) else value, digits))
        table.add_row(*cells)
    out.print(table)


def _isna(value: Any) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
