"""The docs keep up with the code: every hook, every contract method, the example, the CLI help.

Signatures are read from the document (a heading naming the hook or method,
followed by a ```python block holding one ``def`` line) and compared with
``inspect.signature`` of the code: parameter names, kinds, annotations,
defaults and the return annotation.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from orchestrator import hookspecs
from orchestrator.bases import BaseProvider
from orchestrator.data import DataSource
from orchestrator.strategy import Strategy

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "plugins.md"
TEXT = DOC.read_text(encoding="utf-8")
#: The contracts whose public methods the reference documents, by the name it uses.
CONTRACTS = {"Strategy": Strategy, "DataSource": DataSource, "BaseProvider": BaseProvider}

_SIGNATURE = re.compile(
    r"^#{2,4} `(?P<name>[\w.]+)`\n+```python\n(?P<line>def [^\n]+)\n```", re.MULTILINE
)


def documented() -> dict[str, str]:
    """Heading name -> the ``def`` line under it."""
    found: dict[str, str] = {}
    for match in _SIGNATURE.finditer(TEXT):
        name = match["name"]
        assert name not in found, f"{name} is documented twice"
        found[name] = match["line"]
    return found


def canonical_doc(line: str) -> tuple[str, str]:
    """``(arguments, return annotation)`` of a documented ``def`` line, normalised by ast."""
    function = ast.parse(line.rstrip(":") + ": ...").body[0]
    assert isinstance(function, ast.FunctionDef), line
    return ast.unparse(function.args), ast.unparse(function.returns) if function.returns else ""


def _annotation(value: object) -> str:
    return value if isinstance(value, str) else inspect.formatannotation(value)


def canonical_code(function: object) -> tuple[str, str]:
    """``(arguments, return annotation)`` of a function, in the same normal form."""
    signature = inspect.signature(function)  # type: ignore[arg-type]
    parts: list[str] = []
    keyword_only = False
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and not keyword_only:
            parts.append("*")
            keyword_only = True
        text = parameter.name
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            text, keyword_only = f"*{text}", True
        elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
            text = f"**{text}"
        if parameter.annotation is not inspect.Parameter.empty:
            text += f": {_annotation(parameter.annotation)}"
        if parameter.default is not inspect.Parameter.empty:
            text += f" = {parameter.default!r}"
        parts.append(text)
    returns = signature.return_annotation
    returns_text = "" if returns is inspect.Signature.empty else f" -> {_annotation(returns)}"
    return canonical_doc(f"def f({', '.join(parts)}){returns_text}")


def hook_specs() -> dict[str, object]:
    """Every hook specification in orchestrator/hookspecs.py."""
    return {
        name: function
        for name, function in vars(hookspecs).items()
        if callable(function) and hasattr(function, "graftune_spec")
    }


def contract_methods() -> dict[str, object]:
    """``Class.method`` -> function, for every public method a plugin may implement."""
    methods = {}
    for label, cls in CONTRACTS.items():
        for name, member in vars(cls).items():
            if inspect.isfunction(member) and not name.startswith("_"):
                methods[f"{label}.{name}"] = member
    return methods


def test_the_parser_finds_signatures():
    assert len(documented()) >= 6


def test_every_hook_is_documented():
    specs = hook_specs()
    assert specs, "no hook specifications found"
    missing = sorted(set(specs) - set(documented()))
    assert not missing, f"hooks missing from {DOC.name}: {missing}"


def test_every_documented_hook_exists():
    names = {n for n in documented() if n.startswith("graftune_")}
    unknown = sorted(names - set(hook_specs()))
    assert not unknown, f"{DOC.name} documents hooks the code does not have: {unknown}"


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_a_documented_hook_signature_matches_the_code(name):
    line = documented().get(name)
    assert line is not None, f"{name} is not documented"
    assert canonical_doc(line) == canonical_code(hook_specs()[name]), (
        f"{DOC.name} documents {line!r}; the code has {name}{inspect.signature(hook_specs()[name])}"  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_a_hook_says_when_it_is_called_what_it_returns_and_whether_it_may_raise(name):
    start = TEXT.index(f"### `{name}`")
    end = TEXT.find("\n### ", start + 1)
    section = TEXT[start : end if end != -1 else None]
    for label in ("**When:**", "**Arguments:**", "**Returns:**", "**Raises:**"):
        assert label in section, f"the section of {name} has no {label}"
    raises = section.split("**Raises:**", 1)[1]
    assert "may raise" in raises or "may not raise" in raises, name


@pytest.mark.parametrize("name", sorted(contract_methods()))
def test_a_contract_method_is_documented_as_in_the_code(name):
    line = documented().get(name)
    assert line is not None, f"{name} is missing from {DOC.name}"
    assert canonical_doc(line) == canonical_code(contract_methods()[name]), (
        f"{DOC.name} documents {name} as {line!r}; the code has "
        f"{inspect.signature(contract_methods()[name])}"  # type: ignore[arg-type]
    )


def test_every_documented_contract_method_exists():
    names = {n for n in documented() if "." in n}
    unknown = sorted(names - set(contract_methods()))
    assert not unknown, f"{DOC.name} documents methods the code does not have: {unknown}"


def test_the_space_types_are_all_documented():
    from orchestrator.space import DIMENSION_TYPES

    for cls in DIMENSION_TYPES:
        assert f"`{cls.__name__}(" in TEXT, cls.__name__


_INCLUDE = re.compile(r"<!-- include: (?P<path>\S+) -->\n```\w*\n(?P<body>.*?)```\n", re.DOTALL)


def test_the_worked_example_is_the_example_package_verbatim():
    included = list(_INCLUDE.finditer(TEXT))
    assert len(included) >= 4
    for match in included:
        path = ROOT / match["path"]
        assert path.is_file(), match["path"]
        assert match["body"] == path.read_text(encoding="utf-8"), (
            f"{DOC.name} shows an outdated copy of {match['path']}"
        )


def test_the_testing_kit_fixtures_are_all_documented():
    from orchestrator import testing

    # Every graftune_* name the kit defines is a fixture.
    fixtures = [name for name, value in vars(testing).items() if name.startswith("graftune_")]
    assert len(fixtures) >= 6, fixtures
    for name in fixtures:
        assert f"`{name}`" in TEXT, name


def test_the_readme_recipe_passes_validate(tmp_path):
    """README's annotated recipe, every key in it, is a recipe graftune accepts."""
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.recipe import check_recipe, parse_recipe

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Recipes\n", 1)[1]
    block = re.search(r"```yaml\n(?P<body>.*?)```", section, re.DOTALL)["body"]
    assert "strategies:" in block and "search:" in block
    (tmp_path / "recipe.yaml").write_text(block)
    recipe = parse_recipe(block, file=tmp_path / "recipe.yaml")
    check_recipe(recipe, get_plugin_manager())


def test_the_readmes_anchor_example_shares_a_head(tmp_path):
    """README's x- key and merge example means what its words say."""
    from orchestrator.recipe import parse_recipe

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL) if "x-" in b]
    head = "name: r\ndata: {source: 'sklearn:digits'}\nbase: {path: m.keras}\n"
    recipe = parse_recipe(head + block, file=tmp_path / "recipe.yaml")
    spaces = {name: section.space for name, section in recipe.strategies.items()}
    assert spaces == {
        "feature_extraction": {"head_width": 64, "learning_rate": 1.0e-3},
        "fine_tune": {"head_width": 128, "learning_rate": 1.0e-3},
    }


def test_run_recipes_docstring_names_every_error_readme_says_it_raises():
    """README's "From Python" lists what run_recipe raises; its docstring left out
    DiskFull, RunDirError and BackendMissing."""
    import orchestrator

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]
    said = section.split("`run_recipe` does what", 1)[1].split(". ", 1)[0]
    promised = set(re.findall(r"`([A-Z]\w+)`", said))
    assert {"RecipeError", "DiskFull", "RunDirError", "BackendMissing"} <= promised
    raises = orchestrator.run_recipe.__doc__.split("Raises:", 1)[1]
    documented = set(re.findall(r"^\s{8}(\w+):", raises, re.MULTILINE))
    assert promised == documented
    assert documented <= set(orchestrator.__all__)


def _command_paths(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group of the CLI, as the words that invoke it."""
    found = [path]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found += _command_paths(sub, (*path, name))
    return found


def test_every_commands_help_reads_plainly():
    """Typer 0.2x put required arguments in braces on the usage line and Python
    types after arguments and options (RUN_DIR <list[Path]>, --address <str>)."""
    import typer
    from typer.testing import CliRunner

    from orchestrator.cli import app

    paths = _command_paths(typer.main.get_command(app))
    assert ("jobs", "list") in paths and ("validate",) in paths
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        usage = result.output.splitlines()[0]
        assert usage.startswith("Usage: graftune"), (path, usage)
        assert not re.search(r"[{}]", usage), usage
        types = re.findall(r"<[\w\[\]|., ]+>|\b(?:list|str|int|float|Path)\[", result.output)
        assert not types, (path, types)
        # Each command and group is listed by its first sentence, whole (Click cut
        # them at about 60 characters: "Check a recipe without training: schema,...").
        if "Commands:" in result.output:
            listed = result.output.split("Commands:", 1)[1]
            assert "..." not in listed, (path, listed)


def test_leaderboard_help_lists_its_formats_and_a_bad_one_is_said_plainly(tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app

    result = CliRunner().invoke(app, ["leaderboard", "--help"])
    assert "table, csv, md or json" in " ".join(result.output.split())
    bad = CliRunner().invoke(app, ["leaderboard", str(tmp_path), "--format", "xml"])
    assert bad.exit_code == 2
    assert "Invalid value for '--format' / '-f': 'xml' is not one of" in bad.output
    assert "Value error" not in bad.output


def test_fetch_help_says_it_fetches_stopped_and_failed_jobs_too():
    """README says fetch gives a stopped or failed job's run; its help said "a finished job's"."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    text = " ".join(CliRunner().invoke(app, ["fetch", "--help"]).output.split())
    assert "finished job" not in text
    assert "stopped or failed job" in text


def test_every_public_name_is_documented():
    """What ``orchestrator.__all__`` exports is the contract: CacheInUse was exported
    and said nowhere."""
    import orchestrator

    text = "".join(
        path.read_text(encoding="utf-8")
        for path in (ROOT / "README.md", DOC, ROOT / "docs" / "architecture.md")
    )
    missing = [
        name
        for name in orchestrator.__all__
        if f"`{name}" not in text and f"`orchestrator.{name}" not in text
    ]
    assert not missing, f"exported but not in README.md or docs/: {missing}"


def test_every_module_is_in_the_architecture_table():
    """docs/architecture.md's module table lacked orchestrator/paths.py and errors.py."""
    table = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([\w/.]+)` \|", table, re.MULTILINE))
    missing = []
    for path in sorted((ROOT / "orchestrator").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        folders = {p.relative_to(ROOT).as_posix() + "/" for p in path.parents if ROOT in p.parents}
        if name in listed or folders & listed:
            continue
        if path.name == "__init__.py" and path.parent.name != "orchestrator":
            continue  # a subpackage's marker: its modules are listed one by one
        missing.append(name)
    assert not missing, f"modules missing from architecture.md: {missing}"


def test_every_trial_result_field_is_in_graftune_trial_finished():
    """The list of TrialResult's fields lacked earlier_id."""
    import dataclasses

    from orchestrator.trial import TrialResult

    start = TEXT.index("### `graftune_trial_finished`")
    section = TEXT[start : TEXT.index("\n### ", start + 1)]
    missing = [f.name for f in dataclasses.fields(TrialResult) if f"`{f.name}`" not in section]
    assert not missing, f"TrialResult fields missing from graftune_trial_finished: {missing}"


def test_readmes_list_of_hooks_names_every_hook():
    """README's one-line list of hooks lacked graftune_keras_objects."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = readme.split("Hooks (`orchestrator/hookspecs.py`):", 1)[1].split("\n\n", 1)[0]
    missing = [name for name in sorted(hook_specs()) if f"`{name}" not in listed]
    assert not missing, f"hooks missing from README's list: {missing}"


def test_version_says_what_a_bug_report_needs():
    """Found by QA: `--version` said graftune's version alone, where a report needs
    its code, Python and the packages; the first line stays for scripts."""
    import platform
    from importlib import metadata

    from typer.testing import CliRunner

    from orchestrator import __version__
    from orchestrator.cli import app
    from orchestrator.environment import graftune_code

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == f"graftune {__version__}"
    assert lines[1].startswith(f"code: {graftune_code()} ")
    assert lines[2].startswith(f"Python {platform.python_version()} on ")
    assert "Keras backend: " in lines[2]
    for name in ("keras", "ray", "pluggy", "pandas"):
        assert f"{name} {metadata.version(name)}" in lines[3]
    # "## Reporting a problem" says what to give.
    assert "## Reporting a problem" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("given", [False, None, "False"])
def test_version_is_said_only_when_asked(given, capsys):
    """Found by QA: typer 0.12.4-0.12.5 with click 8.2+ passed the string 'False'
    to the callback, and every command printed the version and exited 0, having
    done nothing (the floor is 0.13 now; the callback takes True alone too)."""
    from orchestrator.cli import _version

    _version(given)  # not typer.Exit
    assert capsys.readouterr().out == ""
