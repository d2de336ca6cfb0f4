"""Send a recipe to a Ray cluster as a job; list, follow, stop jobs; fetch their results.

Everything goes through Ray's job API (``ray.job_submission.JobSubmissionClient``)
on the cluster's dashboard address, ``http://HEAD:8265``:

- :func:`stage` builds the job's working directory: ``recipe.yaml`` rewritten
  so every local file it names (data sources, ``base.path``, ``base.weights``)
  is a relative path to a copy under ``files/``, local wheels named by
  ``--pip`` under ``wheels/``, and ``--plugin`` modules at its top. It is
  refused when larger than Ray accepts.
- :func:`submit` sends it with a runtime environment that pip-installs the
  recipe's third-party plugin distributions; the job runs
  ``python -m orchestrator.cli run recipe.yaml --run-name JOB_ID [--plugin
  MODULE ...]`` against the cluster (the staged recipe says
  ``resources.address: auto``).
- The run is stored at ``STORAGE/JOB_ID/``; the job's metadata records that
  place (``graftune_run``), which is how :func:`fetch` finds it again.
- :func:`submit_resume` continues a stopped job's run as a new job, found by
  :func:`resume_target` from the job's id or the run's place in storage; it
  sends only ``--plugin`` modules and ``--pip`` files, and runs ``graftune run
  --resume-stored PLACE``, which fetches a URI's run into the job's working
  directory (stored back as it goes) or resumes a folder's where it is.
- The job's run keeps its staged files under ``inputs/`` and its recorded
  recipe names them there, relative to the run directory
  (:func:`keep_staged_inputs`): the working directory is gone when the job
  ends, and a fetched run resumes anywhere with what it was searched on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import shutil
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from orchestrator.cluster import check_token_path, speaks_at, token_fix, use_token_if_available
from orchestrator.errors import (
    AddressMissing,
    BadAddress,
    ClusterError,
    ClusterUnreachable,
    JobNotFound,
    StorageError,
    SubmitError,
)
from orchestrator.paths import expand_user
from orchestrator.storage import is_node_local, is_uri, join, node_local_message

if TYPE_CHECKING:
    from orchestrator.recipe import Recipe, StorageSpec

#: Job metadata keys graftune sets.
META_RUN = "graftune_run"
#: The job's ``--plugin`` modules, comma-separated: a resume of its run needs them.
META_PLUGINS = "graftune_plugins"
#: A resume job's: the job (or the place in storage) whose run it continues.
META_RESUMES = "graftune_resumes"
META_RECIPE = "graftune_recipe"
#: The staged recipe's name inside the working directory.
RECIPE_FILE = "recipe.yaml"
#: The working directory's folder of the recipe's files.
STAGED_DIR = "files"
#: The run directory's folder of a submitted run's staged files (kept with the run).
INPUTS_DIR = "inputs"
#: HTTP (connect, read) timeouts for the job server, in seconds.
HTTP_TIMEOUT = (10, 120)
#: For the client's first request, its version check, which any dashboard answers at
#: once: one that accepts and never answers (a hung head) is given up on in seconds,
#: not two minutes (found by QA).
FIRST_TIMEOUT = (10, 15)
#: Seconds between status checks while following a job's log.
POLL_S = 2.0
_CHATTY_LOGGERS = (
    "ray.dashboard.modules.dashboard_sdk",
    "ray.dashboard.modules.job.sdk",
    "ray._private.runtime_env.packaging",
)
NO_PYTHON = (
    "the cluster's shell has no `python` on its PATH: start Ray (`ray start`) with "
    "graftune's virtualenv activated"
)
_FAILED_HINTS = {
    "No module named 'orchestrator'": (
        "graftune is not installed in the Python the cluster runs jobs with: start Ray "
        "(`ray start`) with graftune's virtualenv activated, not just as .venv/bin/ray, "
        "or install graftune, the same version, on every node (or in the cluster's image)"
    ),
    # bash's words, and dash's (Debian's /bin/sh; found by QA: no hint).
    "command not found": NO_PYTHON,
    "python: not found": NO_PYTHON,
}


# -- the working directory --------------------------------------------------------


@dataclass
class Staged:
    """A job's working directory, ready to send."""

    folder: Path
    #: The staged recipe; ``None`` for a resume, whose recipe is its run's.
    recipe: Recipe | None
    pip: list[str]
    size: int
    copied: list[tuple[Path, str]] = field(default_factory=list)
    #: ``--plugin`` modules, copied to the working directory's top (on the job's path).
    plugins: list[str] = field(default_factory=list)


def working_dir_limit() -> int:
    """The largest working directory Ray accepts, in bytes (its gRPC message limit)."""
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

    return int(GCS_STORAGE_MAX_SIZE)


def stage(
    recipe: Recipe,
    folder: Path,
    *,
    pip: list[str] = (),  # type: ignore[assignment]
    plugins: list[str] = (),  # type: ignore[assignment]
    data_sources: Any = None,
    limit: int | None = None,
) -> Staged:
    """Build a job's working directory in ``folder`` (empty or missing).

    Every file or folder the recipe names that exists on this machine is copied
    under ``files/`` and named by a relative path; a path that does not exist
    here is sent unchanged (data that lives on the cluster). ``pip`` entries
    that are local files (wheels, sdists) are copied under ``wheels/``.

    Args:
        recipe: The loaded recipe (paths already resolved against its folder).
        folder: The working directory to fill.
        pip: Extra requirements for the job's runtime environment.
        plugins: ``--plugin`` modules found here (from this folder or
            ``PYTHONPATH``): each top-level module's file or package is copied
            to the working directory's top, where the job's ``python -m`` finds it.
        data_sources: The registry of data sources, to skip locations that are
            not paths (``sklearn:digits``); without it, any location that names
            an existing file is copied.
        limit: The largest size allowed, in bytes; default :func:`working_dir_limit`.

    Raises:
        SubmitError: The folder would be larger than Ray accepts, a ``pip``
            entry names a file that does not exist here, or a ``--plugin``
            module is not found here.
    """
    from orchestrator.data import split_source

    folder.mkdir(parents=True, exist_ok=True)
    copied: list[tuple[Path, str]] = []
    copy = _copier(folder, copied)

    def local_path(location: str) -> Path | None:
        try:
            candidate = expand_user(location)
        except ValueError:  # ~user of the cluster's nodes, not of this machine
            return None
        if not candidate.is_absolute():
            candidate = recipe.base_dir / candidate
        return candidate if candidate.exists() else None

    def data(spec: Any) -> Any:
        scheme, location = split_source(spec.source)
        known = data_sources is not None and scheme in data_sources
        if known and not getattr(data_sources.get(scheme), "location_is_path", True):
            return spec
        found = local_path(location)
        if found is None:
            return spec
        target = copy(found, STAGED_DIR)
        if location.endswith("/"):
            target += "/"
        return spec.model_copy(update={"source": f"{scheme}:{target}"})

    update: dict[str, Any] = {
        "data": data(recipe.data),
        "output": Path("runs"),
        # The job's driver runs on the cluster: it connects to the cluster it is on (under
        # keras_tuner it trains in itself: no address, whose note the user never asked
        # for, found by QA).
        "resources": recipe.resources.model_copy(
            update={
                "address": None if recipe.search.backend == "keras_tuner" else "auto",
                "dashboard": False,
            }
        ),
    }
    base = recipe.base
    if base is not None:
        base_update: dict[str, Any] = {}
        if base.path is not None and base.path.exists():
            base_update["path"] = Path(copy(base.path, STAGED_DIR))
        if base.weights not in (None, "imagenet", "none"):
            weights = local_path(str(base.weights))
            if weights is not None:
                base_update["weights"] = copy(weights, STAGED_DIR)
        if base.pretrain is not None:
            base_update["pretrain"] = base.pretrain.model_copy(
                update={"data": data(base.pretrain.data)}
            )
        if base_update:
            update["base"] = base.model_copy(update=base_update)

    staged = recipe.model_copy(update=update)
    (folder / RECIPE_FILE).write_text(staged.to_yaml(), encoding="utf-8")
    return _staged(folder, staged, _pip_entries(recipe, pip), plugins, copied, copy, limit)


def _staged(
    folder: Path,
    recipe: Recipe | None,
    pip: list[tuple[str, Path | None]],
    plugins: list[str],
    copied: list[tuple[Path, str]],
    copy: Callable[..., str],
    limit: int | None,
) -> Staged:
    """The working directory ``folder`` with its pip package files and ``--plugin``
    modules added, checked against Ray's limit."""
    staged_pip = _stage_pip(pip, copy)
    _stage_plugins(folder, plugins, copied)
    return Staged(
        folder=folder,
        recipe=recipe,
        pip=staged_pip,
        size=_checked_size(folder, copied, limit),
        copied=copied,
        plugins=list(dict.fromkeys(plugins)),
    )


def _copier(folder: Path, copied: list[tuple[Path, str]]) -> Callable[..., str]:
    """A function that copies a file or folder into ``folder`` and notes it in ``copied``."""
    taken: set[str] = set()

    def copy(path: Path, under: str, *, keep_name: bool = False) -> str:
        """``path`` copied under ``under``; one of a name taken already is ``N-NAME``,
        or with ``keep_name`` ``N/NAME`` (a wheel's name is read by pip: found by
        QA, ``2-NAME.whl`` is no wheel's)."""
        name = path.name or "data"
        target = f"{under}/{name}"
        n = 1
        while target in taken:
            n += 1
            target = f"{under}/{n}/{name}" if keep_name else f"{under}/{n}-{name}"
        taken.add(target)
        destination = folder / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, destination)
        else:
            shutil.copy2(path, destination)
        copied.append((path, target))
        return target

    return copy


def _stage_pip(entries: list[tuple[str, Path | None]], copy: Callable[..., str]) -> list[str]:
    """The job's pip requirements: each local package file copied under ``wheels/``."""
    staged: list[str] = []
    for requirement, wheel in entries:
        if wheel is not None:
            # Ray expands this variable to the working directory on each node.
            staged.append(_IN_WORKING_DIR + copy(wheel, "wheels", keep_name=True))
        else:
            staged.append(requirement)
    return staged


#: How a job's pip requirement names a file in its working directory.
_IN_WORKING_DIR = "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}/"


def _stage_plugins(folder: Path, plugins: list[str], copied: list[tuple[Path, str]]) -> None:
    """Copy each ``--plugin`` module's top-level file or package to ``folder``'s top."""
    plugin_sources: dict[str, Path] = {}  # what each copied top-level module came from
    for name in dict.fromkeys(plugins):
        source = _plugin_source(name)
        target = folder / source.name
        if plugin_sources.get(source.name) == source:
            continue  # another module of a package copied whole (found by QA: refused)
        if target.exists() or source.name.split(".")[0] in ("orchestrator", STAGED_DIR, "wheels"):
            raise SubmitError(
                f"--plugin {name}: its module {source.name} would take the place of the "
                "job's own files; rename it, or install it in the job with --pip"
            )
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
        copied.append((source, source.name))
        plugin_sources[source.name] = source


def _checked_size(folder: Path, copied: list[tuple[Path, str]], limit: int | None) -> int:
    """The working directory's size, refused when Ray would not take it.

    Raises:
        SubmitError: ``folder`` holds ``limit`` (default :func:`working_dir_limit`) or more.
    """
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    limit = working_dir_limit() if limit is None else limit
    if size >= limit:
        biggest = sorted(copied, key=lambda c: _size(c[0]), reverse=True)[:3]
        listed = ", ".join(f"{src} ({_mib(_size(src))})" for src, _ in biggest)
        raise SubmitError(
            f"the job's working directory would hold {_mib(size)}, and Ray accepts at most "
            f"{_mib(limit)} (its gRPC message limit, RAY_max_grpc_message_size); the largest "
            f"files: {listed}. Put large data where the cluster's nodes can read it and name "
            "it by a path that does not exist on this machine (it is then sent unchanged)"
        )
    return size


def check_sendable(recipe: Recipe | None, *, pip: list[str], plugins: list[str]) -> None:
    """Refuse, before the cluster is contacted, a job whose local files are not here.

    :func:`stage` checks the same as it copies; this says it without a cluster.
    ``recipe``: ``None`` for a resume (``--pip`` and ``--plugin`` alone).

    Raises:
        SubmitError: A ``pip`` entry names a file that does not exist here, or a
            ``--plugin`` module is not found here.
    """
    if recipe is None:
        _package_files(_pip_option(pip))
    else:
        _pip_entries(recipe, pip)
    for name in dict.fromkeys(plugins):
        _plugin_source(name)


def _pip_entries(recipe: Recipe, pip: list[str]) -> list[tuple[str, Path | None]]:
    """Each pip entry (the recipe's ``submit.pip``, then ``--pip``) with the package
    file here it names (``None``: a requirement for the cluster's pip).

    A recipe's entries are paths from its folder, as its other paths are; ``--pip``'s
    from the current folder.

    Raises:
        SubmitError: An entry names a file that does not exist here, a folder, or
            a file that is no wheel, sdist or zip: sent on, it failed on the
            cluster naming a path in the job's runtime environment.
    """
    return _package_files(
        [
            *((r, "submit.pip", recipe.base_dir) for r in recipe.submit.pip),
            *_pip_option(pip),
        ]
    )


def _pip_option(pip: list[str]) -> list[tuple[str, str, Path]]:
    """``--pip``'s entries for :func:`_package_files`: paths from the current folder."""
    return [(requirement, "--pip", Path.cwd()) for requirement in pip]


def _package_files(given: list[tuple[str, str, Path]]) -> list[tuple[str, Path | None]]:
    """:func:`_pip_entries` of ``(requirement, where it was given, its folder)``."""
    entries: dict[str, Path | None] = {}
    for requirement, where, base in given:
        if not requirement.strip():  # found by QA: sent on to the cluster's pip
            raise SubmitError(
                f"{where} {requirement!r}: an empty entry; give a requirement (name==version) "
                "or a wheel, sdist or zip that exists here"
            )
        if requirement in entries or not _names_a_file(requirement):
            entries.setdefault(requirement, None)
            continue
        try:
            path = Path(base, expand_user(requirement))
        except ValueError:  # ~user of the cluster's nodes: pip's to read there
            entries[requirement] = None
            continue
        problem = None
        if not path.exists():
            problem = f"no such file {path.absolute()}"
        elif path.is_dir():
            problem = (
                f"{path.absolute()} is a folder (build a wheel of it: pip wheel {path} -w DIR)"
            )
        elif not path.name.endswith(_PACKAGE_SUFFIXES):
            problem = f"{path.absolute()} is no wheel, sdist or zip"
        if problem:
            raise SubmitError(
                f"{where} {requirement}: {problem}; give a wheel, sdist or zip that exists "
                "here, or a requirement (name==version) for the cluster's pip"
            )
        entries[requirement] = path
    return list(entries.items())


#: The package files a pip entry may name here, sent with the job.
_PACKAGE_SUFFIXES = (".whl", ".tar.gz", ".zip")


def _names_a_file(requirement: str) -> bool:
    """Whether a pip requirement names a file here (a wheel, an sdist, a path), not a
    distribution or a URL (``name==1.0``, ``name @ https://...``, ``git+https://...``)."""
    if "://" in requirement or "@" in requirement:
        return False
    return requirement.endswith((".whl", ".tar.gz", ".zip")) or any(
        separator in requirement for separator in {"/", os.sep}
    )


def _plugin_source(name: str) -> Path:
    """The file or package folder of a ``--plugin`` module's top-level module, found as
    ``graftune run --plugin`` finds it (its import path, then this folder).

    Raises:
        SubmitError: ``name`` is not a module name, or no such module is found here.
    """
    import importlib.machinery
    import sys

    from orchestrator.plugin_manager import not_a_module_name

    top = name.split(".", 1)[0]
    problem = not_a_module_name(name) if top else not_a_module_name("")
    if problem is not None:
        raise SubmitError(problem)
    spec = importlib.machinery.PathFinder.find_spec(top, [*sys.path, os.getcwd()])
    if spec is None or spec.origin is None or not Path(spec.origin).is_file():
        raise SubmitError(
            f"--plugin {name}: no module {top} here (in this folder or on PYTHONPATH) to "
            "send with the job; an installed distribution goes with --pip REQUIREMENT"
        )
    origin = Path(spec.origin)
    return origin.parent if spec.submodule_search_locations else origin


def keep_staged_inputs(recipe: Recipe, run_dir: Path) -> Recipe:
    """In a submitted job: copy the staged files the recipe names into ``RUN/inputs/``.

    Returns the recipe to record in the run directory, naming those files by
    paths relative to it (``csv:inputs/wine.csv``), and ``output`` as the run
    directory's parent: a recorded recipe that named the job's working
    directory could not be resumed once Ray deleted it, nor anywhere else.
    Outside a job, or with nothing staged, ``recipe`` itself.
    """
    if not os.environ.get(SUBMITTED_ENV):
        return recipe
    from orchestrator.data import split_source

    staged = (recipe.base_dir / STAGED_DIR).resolve()
    inputs = run_dir / INPUTS_DIR

    def kept(location: str | Path) -> str | None:
        inside = _staged_part(recipe, location)
        if inside is None:
            return None
        source, target = staged / inside, inputs / inside
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copy2(source, target)
        return f"{INPUTS_DIR}/{inside.as_posix()}" + ("/" if str(location).endswith("/") else "")

    def data(spec: Any) -> Any:
        scheme, location = split_source(spec.source)
        target = kept(location) if Path(location).is_absolute() else None
        return spec if target is None else spec.model_copy(update={"source": f"{scheme}:{target}"})

    update: dict[str, Any] = {"data": data(recipe.data), "output": Path("..")}
    base = recipe.base
    if base is not None:
        base_update: dict[str, Any] = {}
        if base.path is not None and (target := kept(base.path)) is not None:
            base_update["path"] = Path(target)
        weights = base.weights
        if weights not in (None, "imagenet", "none") and (target := kept(str(weights))):
            base_update["weights"] = target
        if base.pretrain is not None:
            base_update["pretrain"] = base.pretrain.model_copy(
                update={"data": data(base.pretrain.data)}
            )
        update["base"] = base.model_copy(update=base_update)
    return recipe.updated(**update)


def recorded_source(recipe: Recipe, run_dir: Path) -> str:
    """The recipe's data source as the run's recorded recipe names it.

    A file the run keeps in its directory (a submitted job's staged files,
    under ``inputs/``) by its path there (``csv:inputs/wine.csv``), not in the
    job's working directory, which Ray deletes, nor where a fetched copy lies;
    any other source as it is.
    """
    from orchestrator.data import split_source

    source = recipe.data.source
    scheme, location = split_source(source)
    if not location or not Path(location).is_absolute():
        return source
    slash = "/" if location.endswith("/") else ""
    inside = _staged_part(recipe, location) if os.environ.get(SUBMITTED_ENV) else None
    if inside is not None:
        return f"{scheme}:{INPUTS_DIR}/{inside.as_posix()}{slash}"
    try:
        kept = Path(location).resolve().relative_to(Path(run_dir).resolve())
    except (ValueError, OSError):
        return source
    return f"{scheme}:{kept.as_posix()}{slash}"


def _staged_part(recipe: Recipe, location: str | Path) -> Path | None:
    """Where ``location`` is inside the job's staged files, or ``None`` if it is not."""
    try:
        return Path(location).resolve().relative_to((recipe.base_dir / STAGED_DIR).resolve())
    except (ValueError, OSError):
        return None


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


#: Set in a submitted job's environment.
SUBMITTED_ENV = "GRAFTUNE_SUBMITTED"


def runtime_env(staged: Staged) -> dict[str, Any]:
    """The job's runtime environment: its working directory and pip requirements."""
    env: dict[str, Any] = {
        "working_dir": str(staged.folder),
        # GRAFTUNE_SUBMITTED: the job's own messages say how to continue it from outside.
        "env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2", "RAY_AIR_NEW_OUTPUT": "0", SUBMITTED_ENV: "1"},
    }
    if staged.pip:
        env["pip"] = list(staged.pip)
    return env


def entrypoint(
    run_name: str,
    plugins: list[str] = (),  # type: ignore[assignment]
    *,
    debug: bool = False,
) -> str:
    """The job's command: ``graftune run`` through the Python of the job's environment.

    ``python -m`` rather than the ``graftune`` script: with ``--pip``, Ray puts
    the job in a virtualenv whose ``python`` sees both graftune and the plugins;
    and it imports ``--plugin`` modules staged in the working directory, its
    current folder. ``exec``: the run is the job's process, not a child of Ray's
    shell (found by QA: with the shell killed, Ray said FAILED and ``jobs stop``
    had nothing to stop while the run went on). ``debug``: ``graftune --debug``
    (``graftune --debug submit``: an internal error's traceback is in the job's log).
    """
    return _job_command([RECIPE_FILE, "--run-name", run_name], plugins, debug=debug)


def _job_command(args: list[str], plugins: list[str], *, debug: bool) -> str:
    """``exec python -m orchestrator.cli [--debug] run ARGS [--plugin MODULE ...]``."""
    command = ["python", "-m", "orchestrator.cli", *(["--debug"] * debug), "run", *args]
    for name in plugins:
        command += ["--plugin", name]
    return "exec " + shlex.join(command)


def new_job_id(recipe_name: str) -> str:
    """``graftune-NAME-YYYYmmdd-HHMMSS-XXXX``: readable, sortable, unique."""
    return f"graftune-{recipe_name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


# -- talking to the job server ------------------------------------------------------


def dashboard_url(address: str | None) -> str:
    """The dashboard URL from ``--address`` or ``RAY_API_SERVER_ADDRESS`` / ``RAY_ADDRESS``.

    Raises:
        AddressMissing: No address is given.
        ClusterError: The address is not a dashboard address.
    """
    if address is not None and not address.strip():
        raise BadAddress(
            "--address is empty: give the cluster's dashboard address http://HEAD:8265"
        )
    variable = "" if address else _address_variable()
    text = address or (os.environ[variable].strip() if variable else "")
    # Where it came from, said with it (found by QA: RAY_ADDRESS, read unasked).
    source = f" (from ${variable})" if variable else ""
    if not text or text == "auto":
        raise AddressMissing(
            "give the cluster's dashboard address: --address http://HEAD:8265 "
            "(or set RAY_API_SERVER_ADDRESS)"
            + (f"; ${variable} is {text}, which names none" if variable else "")
        )
    if text.startswith("ray://"):
        raise BadAddress(
            f"{text}{source} is a Ray Client address; jobs are submitted to the dashboard, "
            "--address http://HEAD:8265"
        )
    if "://" not in text:
        text = f"http://{text}"
    scheme = text.partition("://")[0]
    if scheme.lower() not in ("http", "https") and not _is_module(scheme):
        # Ray takes another scheme as the module of a cluster provider's client;
        # found by QA: "Module: ftp does not exist", as a cluster not reached (exit 4).
        raise BadAddress(
            f"{text}{source}: a Ray dashboard is reached over http:// or https://, not "
            f"{scheme}://; --address http://HEAD:8265"
        )
    return text.rstrip("/")


def _address_variable() -> str:
    """The variable :func:`dashboard_url` took the address from, with no ``--address``."""
    if (os.environ.get("RAY_API_SERVER_ADDRESS") or "").strip():
        return "RAY_API_SERVER_ADDRESS"
    return "RAY_ADDRESS" if (os.environ.get("RAY_ADDRESS") or "").strip() else ""


def _is_module(name: str) -> bool:
    """Whether ``name`` is an importable module's (Ray's client takes such a scheme)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def _environ_without(*names: str) -> Iterator[None]:
    """Leave ``names`` out of the environment inside the block, and put them back after."""
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


class JobClient:
    """Ray's ``JobSubmissionClient`` with timeouts and errors that say what to do."""

    #: Where the address came from, said with it in errors (found by QA: one read
    #: from RAY_ADDRESS, which Ray's drivers take, was refused with no word of it).
    given_by = ""

    def __init__(self, address: str | None) -> None:
        import logging

        self.address = dashboard_url(address)
        self.given_by = "" if address else _address_variable()
        check_token_path()
        use_token_if_available()
        client_class = _client_class()
        # Ray's client logs every upload and websocket at INFO; our own lines say enough.
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        # Ray lets RAY_API_SERVER_ADDRESS and RAY_ADDRESS win over the address it
        # is given; the one chosen above (--address first) must be the one used.
        with self.errors(), _environ_without("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
            self.client = client_class(self.address)

    @contextlib.contextmanager
    def errors(self, job_id: str | None = None) -> Iterator[None]:
        """Turn Ray's and requests' exceptions into :class:`ClusterError`."""
        import requests
        from ray.exceptions import AuthenticationError

        where = f" (from ${self.given_by})" if self.given_by else ""
        try:
            yield
        except AuthenticationError as exc:
            raise ClusterError(
                f"the Ray cluster at {self.address} refused the request "
                f"({str(exc).splitlines()[0]}): {token_fix()}"
            ) from None
        except requests.exceptions.Timeout:
            raise ClusterError(
                f"the Ray dashboard at {self.address}{where} did not answer in time; is the head "
                "node up and is that its dashboard port (8265 by default)?"
            ) from None
        except (requests.exceptions.ConnectionError, ConnectionError) as exc:
            reason = _reason(exc).rstrip(".")  # (Ray's ends in one: found by QA, "..")
            url = urllib.parse.urlsplit(self.address)
            if url.hostname and url.port and speaks_at(url.hostname, url.port) == "grpc":
                raise ClusterError(
                    f"{url.hostname}:{url.port}{where} is the address of a Ray cluster's GCS (port "
                    "6379 by default), which `graftune run --address` takes; jobs go to the "
                    "cluster's dashboard, the http://HEAD:8265 that `ray start --head` prints"
                ) from None
            if url.scheme == "https" and _said_in_chain(exc, "SSL"):
                # Found by QA: https:// to a dashboard that speaks http was "cannot reach".
                plain = urllib.parse.urlunsplit(("http", *url[1:]))
                raise ClusterError(
                    f"the Ray dashboard at {self.address} does not answer in https (an SSL "
                    f"error); Ray's dashboard speaks http unless a proxy in front of it "
                    f"does https: give {plain}"
                ) from None
            raise ClusterUnreachable(
                f"cannot reach the Ray dashboard at {self.address}{where}: {reason}. Is the cluster "
                "running, and is this the dashboard address `ray start --head` prints "
                "(http://HEAD:8265)? From outside the cluster's network, forward the port "
                "(ssh -L 8265:localhost:8265 HEAD)"
            ) from None
        except RuntimeError as exc:
            text = str(exc)
            if job_id is not None and "404" in text:
                raise JobNotFound(self._no_job(job_id)) from None
            if "Version check returned 404" in text or "Jobs API is not supported" in text:
                raise ClusterError(
                    f"{self.address} answered, but is not a Ray dashboard with the job API; "
                    "give the dashboard address (http://HEAD:8265)"
                ) from None
            raise ClusterError(f"the Ray cluster at {self.address}: {text}") from None

    def info(self, job_id: str) -> Any:
        """Ray's ``JobDetails`` of a job."""
        if not job_id.strip() or "/" in job_id:
            # Found by QA: "" and "ID/.." asked Ray's list of jobs, and its answer
            # failed to parse (an internal error); no job id has a "/" in it.
            raise JobNotFound(self._no_job(job_id))
        with self.errors(job_id):
            return self.client.get_job_info(job_id)

    def _no_job(self, job_id: str) -> str:
        said = job_id if job_id.strip() else repr(job_id)
        return (
            f"there is no job {said} on the Ray cluster at {self.address} "
            f"(graftune jobs list --address {self.address})"
        )

    def submitted(self, job_id: str, doing: str) -> Any:
        """A submitted job's details, for a command that only such jobs take.

        Raises:
            JobNotFound: No such job, or ``job_id`` is a driver that connected
                without the job API (``jobs list --all`` lists them), which Ray
                keeps no log of and cannot stop (found by QA: Ray's "Can only get
                logs of submission type jobs", as a cluster that refused us).
        """
        info = self.info(job_id)
        if not info.submission_id:
            raise JobNotFound(
                f"{job_id} is a driver that connected without the job API (graftune run "
                f"--address, ray.init), not a submitted job: {doing}; its output and "
                "run are where it was started, and Ctrl+C there stops it"
            )
        return info

    def list(self) -> list[Any]:
        """Every job the cluster knows, oldest first."""
        with self.errors():
            jobs = self.client.list_jobs()
        return sorted(jobs, key=lambda j: j.start_time or 0)

    def logs(self, job_id: str) -> str:
        """A job's whole log so far."""
        self.submitted(job_id, "Ray keeps no log of it")
        return self._logs(job_id)

    def _logs(self, job_id: str) -> str:
        with self.errors(job_id):
            return self.client.get_job_logs(job_id)

    def stop(self, job_id: str, *, wait_s: float = 30.0) -> tuple[Any, bool]:
        """Ask a job to stop and wait (up to ``wait_s``) until it has; returns its
        details, and whether it was asked (not a job that had ended already)."""
        info = self.submitted(job_id, "Ray cannot stop it")
        if info.status.is_terminal():
            return info, False
        with self.errors(job_id):
            self.client.stop_job(job_id)
        deadline = time.monotonic() + wait_s
        info = self.info(job_id)
        while not info.status.is_terminal() and time.monotonic() < deadline:
            time.sleep(0.5)
            info = self.info(job_id)
        return info, True

    def nodes(self) -> int | None:
        """How many live nodes the cluster has (``None`` if its state API does not say)."""
        from ray.util.state import list_nodes

        try:
            with self.errors():
                alive = list_nodes(
                    address=self.address,
                    filters=[("state", "=", "ALIVE")],
                    timeout=HTTP_TIMEOUT[1],
                    raise_on_missing_output=False,
                )
        except ClusterError:
            raise
        except Exception:
            return None
        return len(alive)

    def follow(self, job_id: str, write: Callable[[str], None]) -> Any:
        """Stream a job's log until it ends; returns its final details.

        The status is polled next to the log stream, so a job that ends (or a
        cluster that goes away) is noticed within seconds even if the stream
        stays open.
        """
        return asyncio.run(self._follow(job_id, write))

    async def _follow(self, job_id: str, write: Callable[[str], None]) -> Any:
        info = self.submitted(job_id, "Ray keeps no log of it")
        if info.status.is_terminal():
            # Found by QA: 5 s more than without --follow, waiting for a stream's end.
            write(self._logs(job_id))
            return info

        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(job_id):
                write(chunk)

        stream = asyncio.create_task(tail())
        try:
            while True:
                done, _ = await asyncio.wait({stream}, timeout=POLL_S)
                info = await asyncio.to_thread(self.info, job_id)
                if info.status.is_terminal():
                    # Let the stream deliver the job's last lines before it closes.
                    if not done:
                        await asyncio.wait({stream}, timeout=5)
                    break
                if stream.done():
                    # The stream ended or broke while the job runs: poll the status alone.
                    with contextlib.suppress(BaseException):
                        stream.exception()
                    stream = asyncio.create_task(asyncio.sleep(3600))
        finally:
            if not stream.done():
                stream.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await stream
            elif not stream.cancelled():
                # A stream broken as the cluster went, then the status poll's error:
                # its exception, never retrieved, was logged with a traceback (found by QA).
                with contextlib.suppress(BaseException):
                    stream.exception()
        return info


def _client_class() -> type:
    from ray.job_submission import JobSubmissionClient

    class _TimedClient(JobSubmissionClient):
        """Ray's client never times out a request; an unreachable head would hang it."""

        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            first = endpoint == "/api/version"
            kwargs.setdefault("timeout", FIRST_TIMEOUT if first else HTTP_TIMEOUT)
            return super()._do_request(method, endpoint, **kwargs)

    return _TimedClient


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes and contexts (eight at most): Ray re-raises requests'
    error as a bare ConnectionError, whose cause says what happened."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _said_in_chain(exc: BaseException, word: str) -> bool:
    """Whether ``word`` is in an exception of ``exc``'s chain, or in one's class name."""
    return any(word in str(e) or word in type(e).__name__ for e in _chain(exc))


def _reason(exc: BaseException) -> str:
    text = " ".join(str(e) for e in _chain(exc))
    markers = (
        "Connection refused",
        "Name or service not known",
        "No route to host",
        "timed out",
        "Connection aborted",
        "RemoteDisconnected",
    )
    for marker in markers:
        if marker in text:
            return marker.lower()
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


# -- submit, fetch ------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    """A job that was accepted."""

    job_id: str
    address: str
    location: str


def submit(
    recipe: Recipe,
    client: JobClient,
    *,
    pip: list[str] = (),  # type: ignore[assignment]
    plugins: list[str] = (),  # type: ignore[assignment]
    data_sources: Any = None,
    echo: Callable[[str], None] = print,
    debug: bool = False,
) -> Submitted:
    """Stage ``recipe`` and submit it as a job to ``client``'s cluster (``debug``:
    its run shows tracebacks, :func:`entrypoint`).

    Raises:
        SubmitError: No storage, node-local storage on a cluster of several
            nodes, or a working directory too large (nothing is sent).
        ClusterError: The cluster cannot be reached or refuses us.
    """
    import tempfile

    storage = check_submittable(recipe)
    job_id = new_job_id(recipe.name)
    location = join(storage.path, job_id)
    with tempfile.TemporaryDirectory(prefix="graftune-job-") as tmp:
        staged = stage(
            recipe, Path(tmp) / job_id, pip=pip, plugins=plugins, data_sources=data_sources
        )
        nodes = client.nodes()
        if nodes is not None and nodes > 1 and is_node_local(storage):
            raise SubmitError(node_local_message(storage, location, nodes))
        echo(
            f"staged: {RECIPE_FILE} and {len(staged.copied)} file(s), {_mib(staged.size)}"
            + (f"; pip: {', '.join(staged.pip)}" if staged.pip else "")
        )
        if recipe.resources.dashboard:
            # Staged without it, the job's run cannot say so (found by QA: dropped unsaid).
            echo(
                "note: resources.dashboard is for embedded Ray; the cluster's own dashboard "
                f"is {client.address}"
            )
        with client.errors():
            client.client.submit_job(
                entrypoint=entrypoint(job_id, staged.plugins, debug=debug),
                submission_id=job_id,
                runtime_env=runtime_env(staged),
                metadata={
                    META_RUN: location,
                    META_RECIPE: recipe.name,
                    META_PLUGINS: ",".join(staged.plugins),
                },
            )
    return Submitted(job_id=job_id, address=client.address, location=location)


# -- resuming a stopped run as a job -------------------------------------------------


class ResumeTarget(NamedTuple):
    """A run to continue as a job: found by its job's id, or by its place in storage."""

    #: The run's place in storage: a URI, or a folder the cluster's nodes mount.
    location: str
    #: The id of the job it was found by; ``None`` when given by its place.
    job: str | None = None
    #: The ``--plugin`` modules that job was submitted with.
    plugins: tuple[str, ...] = ()
    #: That job's pip requirements (``None``: not known).
    pip: tuple[str, ...] | None = None
    #: That job succeeded: its run is complete, there is nothing to resume.
    finished: bool = False
    #: The recipe's name, as that job's metadata says.
    recipe: str | None = None

    @property
    def name(self) -> str:
        """The run's folder name in storage."""
        from orchestrator.storage import last_part

        return last_part(self.location)


def resume_target(client: JobClient | None, given: str) -> ResumeTarget:
    """What ``graftune submit --resume GIVEN`` continues: a job id (``client`` asked
    where its run is stored), a storage URI, or a folder path (``/mnt/nfs/runs/JOB``).

    Raises:
        StorageError: A URI graftune cannot read, a job not submitted by graftune.
        RunInProgress: The job has not ended.
        JobNotFound, ClusterError: As :meth:`JobClient.submitted`.
    """
    from orchestrator.errors import RunInProgress
    from orchestrator.storage import check_location

    if is_uri(given):
        try:
            check_location(given)
        except ValueError as exc:
            raise StorageError(f"--resume {exc}") from None
        target = ResumeTarget(location=given.rstrip("/"))
    elif names_a_place(given):
        try:  # a folder every node mounts at the same path, as --storage's
            target = ResumeTarget(location=str(expand_user(given).resolve()))
        except ValueError as exc:
            raise StorageError(f"--resume {exc}") from None
    else:
        if client is None:
            raise SubmitError(f"--resume {given}: a job id needs the cluster's --address")
        info = client.submitted(given, "graftune stores no run of it")
        location = run_location(info)
        if location is None:
            raise StorageError(
                f"job {given} was not submitted by graftune (no {META_RUN} metadata)"
            )
        if not info.status.is_terminal():
            raise RunInProgress(
                f"job {given} is {info.status}: a run is resumed once its job has ended; "
                f"stop it first (graftune jobs stop {given} --address {client.address}) or "
                "let it end"
            )
        plugins = (info.metadata or {}).get(META_PLUGINS, "")
        target = ResumeTarget(
            location=location,
            job=given,
            plugins=tuple(name for name in plugins.split(",") if name),
            pip=_job_pip(info),
            finished=str(info.status) == "SUCCEEDED",
            recipe=(info.metadata or {}).get(META_RECIPE),
        )
    if not target.name or target.name in (".", ".."):
        raise StorageError(f"--resume {given}: give the run's folder in storage, not its root")
    return target


def names_a_place(given: str) -> bool:
    """Whether ``submit --resume GIVEN`` names the run's place in storage (a URI or a
    folder), not a job id: no cluster need be asked where the run is."""
    return is_uri(given) or "/" in given or os.sep in given or given.startswith("~")


def check_stored(target: ResumeTarget, given: str) -> None:
    """Refuse to resume a run of which nothing is stored, where this machine sees
    that storage (:func:`orchestrator.storage.stored_run_missing`), before a job is sent.

    Without it, a job stopped before its run stored anything was resumed as a new
    job, which installed its requirements on the cluster and only then failed
    ("there is no run ... (yet)"), noticed in stop 67's review.

    Raises:
        StorageError: Nothing is stored at the target's place.
    """
    from orchestrator.storage import stored_run_missing

    missing = stored_run_missing(target.location)
    if missing is not None:
        recipe = f", {target.recipe}," if target.recipe else ""
        raise StorageError(
            f"--resume {given}: {missing}; no job was sent: submit its recipe{recipe} again"
        )


def _job_pip(info: Any) -> tuple[str, ...]:
    """The pip requirements of a job's runtime environment (a list, or Ray's dict form)."""
    pip = (info.runtime_env or {}).get("pip") or ()
    if isinstance(pip, dict):
        pip = pip.get("packages") or ()
    return tuple(str(requirement) for requirement in pip)


def check_not_running(client: JobClient, target: ResumeTarget) -> None:
    """Refuse to resume a run that a job on the cluster is running (its own, or
    another resume of it): two runs would write one run directory.

    Raises:
        RunInProgress: Such a job has not ended.
    """
    from orchestrator.errors import RunInProgress

    for job in client.list():
        if run_location(job) == target.location and not job.status.is_terminal():
            name = job.submission_id or job.job_id
            raise RunInProgress(
                f"job {name} is {job.status} and runs the run at {target.location}: a run is "
                f"resumed once it has stopped; stop it first (graftune jobs stop {name} "
                f"--address {client.address}) or let it end"
            )


def resume_requirements(
    target: ResumeTarget, *, pip: list[str], plugins: list[str]
) -> list[tuple[str, Path | None]]:
    """The resume job's pip entries: ``--pip``'s, else the first job's requirements.

    Raises:
        SubmitError: The job was submitted with a ``--plugin`` module not given
            again, or with a package file sent from the machine that submitted it
            and no ``--pip``: both went in its working directory, which is gone.
    """
    missing = [name for name in target.plugins if name not in plugins]
    if missing:
        again = " ".join(f"--plugin {shlex.quote(name)}" for name in missing)
        raise SubmitError(
            f"job {target.job} was submitted with {again}, a module sent from the machine "
            f"that submitted it: give it again ({again}), from the folder it was sent from"
        )
    if pip:
        return _package_files(_pip_option(pip))
    sent = [r.removeprefix(_IN_WORKING_DIR) for r in target.pip or () if _IN_WORKING_DIR in r]
    if sent:
        raise SubmitError(
            f"job {target.job} installed {', '.join(sent)}, sent from the machine that "
            "submitted it: give its pip requirements again with --pip (all of them: --pip "
            "replaces the job's)"
        )
    return [(requirement, None) for requirement in target.pip or ()]


def resume_entrypoint(
    location: str,
    plugins: list[str] = (),  # type: ignore[assignment]
    *,
    debug: bool = False,
) -> str:
    """A resume job's command: ``graftune run --resume-stored LOCATION`` (the run
    fetched into the job's working directory from a URI, or resumed in its folder),
    otherwise as :func:`entrypoint`."""
    return _job_command(["--resume-stored", location], plugins, debug=debug)


def resume_job_id(run_name: str) -> str:
    """``RUN_NAME-resume-XXXX`` (``graftune-`` before a run name not made by submit)."""
    prefix = "" if run_name.startswith("graftune-") else "graftune-"
    return f"{prefix}{run_name}-resume-{secrets.token_hex(2)}"


def submit_resume(
    target: ResumeTarget,
    client: JobClient,
    *,
    pip: list[str] = (),  # type: ignore[assignment]
    plugins: list[str] = (),  # type: ignore[assignment]
    echo: Callable[[str], None] = print,
    debug: bool = False,
) -> Submitted:
    """Submit a job that continues the stopped run at ``target`` on ``client``'s cluster.

    Its working directory holds the ``--plugin`` modules and local package files
    alone: the run's recipe and inputs are in its run directory, in storage.

    Raises:
        SubmitError: As :func:`resume_requirements` and :func:`stage`.
        RunInProgress: A job on the cluster is running that run.
        ClusterError: The cluster cannot be reached or refuses us.
    """
    import tempfile

    entries = resume_requirements(target, pip=pip, plugins=plugins)
    check_not_running(client, target)
    job_id = resume_job_id(target.name)
    with tempfile.TemporaryDirectory(prefix="graftune-job-") as tmp:
        folder = Path(tmp) / job_id
        folder.mkdir()
        copied: list[tuple[Path, str]] = []
        staged = _staged(folder, None, entries, plugins, copied, _copier(folder, copied), None)
        echo(
            f"resuming {target.location}"
            + (f"; pip: {', '.join(staged.pip)}" if staged.pip else "")
        )
        with client.errors():
            client.client.submit_job(
                entrypoint=resume_entrypoint(target.location, staged.plugins, debug=debug),
                submission_id=job_id,
                runtime_env=runtime_env(staged),
                metadata={
                    META_RUN: target.location,
                    **({META_RECIPE: target.recipe} if target.recipe else {}),
                    META_PLUGINS: ",".join(staged.plugins),
                    META_RESUMES: target.job or target.location,
                },
            )
    return Submitted(job_id=job_id, address=client.address, location=target.location)


def check_submittable(recipe: Recipe) -> StorageSpec:
    """The recipe's storage, which a submitted run cannot do without.

    Raises:
        SubmitError: The recipe has no storage.
    """
    if recipe.storage is None:
        raise SubmitError(
            f"{recipe.file or 'the recipe'}: a submitted run needs storage: its results "
            "must outlive the job's working directory, which Ray deletes. Set storage: in "
            "the recipe or --storage: a URI (s3://bucket/runs, gs://...) or a folder every "
            "node mounts"
        )
    return recipe.storage


def run_location(info: Any) -> str | None:
    """Where a graftune job stores its run, from its metadata (``None``: not graftune's)."""
    return (info.metadata or {}).get(META_RUN)


class Fetched(NamedTuple):
    """A job's run, copied here."""

    path: Path
    #: The job's ``--plugin`` modules, which its resume needs too.
    plugins: list[str]
    #: The run's folder in storage, where storage is a folder (not a URI): a resume
    #: there goes on in storage; one of the copy stays in the copy.
    stored: Path | None = None


def fetch(client: JobClient, job_id: str, dest: Path | None = None) -> Fetched:
    """Copy a finished job's run directory from storage to ``dest`` (default ``./JOB_ID``).

    Raises:
        ClusterError: The cluster cannot be reached.
        JobNotFound: No such job.
        StorageError: The job is still running, is not graftune's, or its run is
            not in storage.
    """
    from orchestrator.storage import fetch as copy_run

    info = client.submitted(job_id, "graftune stores no run of it")
    location = run_location(info)
    if location is None:
        raise StorageError(f"job {job_id} was not submitted by graftune (no {META_RUN} metadata)")
    if not info.status.is_terminal():
        raise StorageError(
            f"job {job_id} is {info.status}; its results are stored when it ends "
            f"(graftune jobs logs {job_id} --follow --address {client.address})"
        )
    dest = Path(dest) if dest is not None else Path(job_id)
    plugins = [name for name in (info.metadata or {}).get(META_PLUGINS, "").split(",") if name]
    try:
        from orchestrator.storage import is_uri

        stored = None if is_uri(location) else Path(location)
        return Fetched(copy_run(location, dest), plugins, stored)
    except StorageError as exc:
        if str(info.status) != "SUCCEEDED":
            raise StorageError(
                f"job {job_id} ended {info.status} ({_ray_reason(info)}); {exc}"
            ) from None
        raise


def failure_message(client: JobClient, info: Any) -> str:
    """Why a job did not succeed, with the likely fix when the log shows one."""
    job_id = info.submission_id or info.job_id
    lines = [f"job {job_id} on {client.address} ended {info.status}"]
    if info.message:
        lines[0] += f": {_ray_reason(info)}"
    with contextlib.suppress(ClusterError):
        logs = client._logs(job_id)
        for marker, hint in _FAILED_HINTS.items():
            if marker in logs:
                lines.append(hint)
                break
    lines.append(f"the whole log: graftune jobs logs {job_id} --address {client.address}")
    return "\n".join(lines)


def _ray_reason(info: Any) -> str:
    # Ray appends the log's tail to its message; the log was shown or is one command away.
    text = (info.message or "").strip()
    if not text:
        return ""
    reason = text.splitlines()[0].split(", last available logs")[0]
    if reason.startswith("runtime_env setup failed"):
        # The job never started, so its log is empty: pip's own words are only here.
        said = [line.strip() for line in text.splitlines() if line.strip().startswith("ERROR:")]
        if said:
            reason += " " + " ".join(dict.fromkeys(said[:3]))
    return reason


def recipe_for_submit(path: Path, *, storage: str | None, shared: bool) -> Recipe:
    """Load a recipe for submission, with ``--storage`` / ``--shared-storage`` applied.

    Raises:
        RecipeError: The recipe breaks the schema (plugins are checked on the cluster).
    """
    from orchestrator.recipe import load_recipe

    recipe = with_cluster_options(load_recipe(path), storage=storage, shared=shared)
    check_submittable(recipe)
    return recipe


def with_cluster_options(
    recipe: Recipe,
    *,
    address: str | None = None,
    storage: str | None = None,
    shared: bool = False,
) -> Recipe:
    """The recipe with ``--address``, ``--storage`` and ``--shared-storage`` applied.

    Raises:
        StorageError: ``--storage`` is not a path or a URI graftune can write to.
    """
    from orchestrator.recipe import StorageSpec
    from orchestrator.storage import check_location

    update: dict[str, Any] = {}
    # Found by QA: --address "$HEAD" with HEAD unset ran a cluster's search here, unsaid.
    if address is not None and not address.strip():
        raise BadAddress(
            "--address is empty: give the cluster's GCS address HEAD:6379 (or auto), or "
            "local for embedded Ray here"
        )
    if storage is not None and not storage.strip():
        raise StorageError("--storage is empty: give a folder, or a URI such as s3://bucket/runs")
    if address is not None:
        # "local", as for ray.init: embedded Ray here, whatever the recipe says.
        chosen = None if address.strip() == "local" else address
        update["resources"] = recipe.resources.with_address_option(chosen)
    spec = recipe.storage
    if storage is not None:
        try:
            check_location(storage)
        except ValueError as exc:
            raise StorageError(f"--storage {exc}") from None
        if not is_uri(storage):
            try:
                storage = str(expand_user(storage).resolve())
            except ValueError as exc:
                raise StorageError(f"--storage {exc}") from None
        spec = StorageSpec(path=storage, shared=shared)
    elif shared:
        if spec is None:
            raise StorageError(
                "--shared-storage marks the recipe's storage as shared, and it has none; "
                "give --storage too"
            )
        spec = spec.model_copy(update={"shared": True})
    if spec is not recipe.storage:
        update["storage"] = spec
    if not update:
        return recipe
    return recipe.updated(**update)


__all__ = [
    "META_RECIPE",
    "META_RESUMES",
    "META_RUN",
    "JobClient",
    "ResumeTarget",
    "Staged",
    "SubmitError",
    "Submitted",
    "check_not_running",
    "check_stored",
    "check_submittable",
    "dashboard_url",
    "entrypoint",
    "failure_message",
    "fetch",
    "keep_staged_inputs",
    "names_a_place",
    "new_job_id",
    "recipe_for_submit",
    "resume_entrypoint",
    "resume_job_id",
    "resume_requirements",
    "resume_target",
    "run_location",
    "runtime_env",
    "stage",
    "submit",
    "submit_resume",
    "with_cluster_options",
    "working_dir_limit",
]
