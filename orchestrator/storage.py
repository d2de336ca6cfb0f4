"""Where a run's results go: ``storage:``, a folder every node reaches or a filesystem URI.

A run is stored as ``STORAGE/RUN_NAME/`` (the run directory's own name:
``NAME-YYYYmmdd-HHMMSS``, or the job id for a submitted run), laid out like
any run directory.

- A **folder** (``storage: /mnt/nfs/runs``) replaces ``output:``: the driver
  and every trial write straight into ``STORAGE/RUN_NAME/``.
- A **URI** (``s3://bucket/runs``, ``gs://...``, ``hdfs://...``, ``file:///...``:
  any filesystem ``pyarrow.fs`` understands) is written through: the driver
  writes its run directory under ``output:`` as usual; each trial uploads its
  own folder as soon as it ends, the driver downloads the folders of trials
  that ran on other nodes, and uploads the rest: its recipe as the run
  starts, its state (events, Ray's experiment) after each trial and when it
  is stopped, and everything (leaderboard, report, best model) when it ends.
  The run directory records its id and its name in storage
  (:data:`STORED_FILE`): a fetched copy resumed from a folder of another name
  is stored back where it was, and a folder in storage that holds another run
  is never written over.

Trials on another node cannot write to a path on the driver's machine. On a
cluster of more than one node, or one whose node is another machine than the
driver's (``graftune run --address`` from a laptop), a plain path (or a
``file://`` URI), and ``output:`` when there is no storage, therefore count as
node-local and are refused before anything is written, unless the recipe
marks the folder shared (``storage: {path: /mnt/nfs/runs, shared: true}``, or
``--storage PATH --shared-storage``): graftune cannot see from one node
whether another node mounts the same folder. One node on the driver's own
machine (embedded Ray, a job's driver on a one-node cluster) needs nothing.

This module imports nothing heavy at import time (pyarrow only when copying).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from orchestrator.errors import RunDirError, StorageError

if TYPE_CHECKING:
    from orchestrator.recipe import Recipe, StorageSpec

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: URI schemes pyarrow's filesystems understand (``pyarrow.fs.FileSystem.from_uri``).
SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
#: The folder of trial folders, which each trial uploads itself as soon as it ends.
_TRIALS = "trials"


def is_uri(location: str | Path) -> bool:
    """Whether ``location`` is a URI (``scheme://...``) rather than a path."""
    return bool(_URI.match(str(location)))


def check_location(location: str) -> None:
    """Check that a ``storage:`` value is a path or a URI with a known scheme.

    Raises:
        ValueError: The URI's scheme is not one pyarrow's filesystems read.
    """
    if not is_uri(location):
        return
    scheme = location.split("://", 1)[0].lower()
    from orchestrator.errors import without_credentials

    # (A password as errors mask one: up to the URI's last "@", "/" and all.)
    if (masked := without_credentials(location)) != location:
        # Found by security QA: the URI went into recipe.yaml, .stored.json, the
        # report, the storage itself and a job's metadata, readable by all of them.
        raise ValueError(
            f"{masked!r}: a password in the URI would be recorded "
            "with the run (its recipe.yaml, report and stored copy) and shown as it runs; "
            "give the credentials in the environment instead (AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY for s3://, GOOGLE_APPLICATION_CREDENTIALS for gs://, "
            "your Hadoop configuration for hdfs://)"
        )
    if scheme not in SCHEMES:
        raise ValueError(
            f"{location!r}: unknown storage scheme {scheme + '://'!r}; expected a folder "
            f"or a URI of one of: {', '.join(s + '://' for s in SCHEMES)}"
        )
    # Found by QA: "s3://" passed validate and submit, and the job failed on the
    # cluster ("Missing bucket name"), naming "s3:/..." as joined without one.
    split = urlsplit(location)
    if scheme == "file":
        if not split.path.startswith("/") or split.netloc not in ("", "localhost"):
            raise ValueError(
                f"{location!r}: expected file:///ABSOLUTE/PATH (three slashes: file:// "
                "and the path's own)"
            )
    elif not split.netloc and scheme not in ("hdfs", "viewfs"):  # (those: the default host)
        raise ValueError(
            f"{location!r}: no bucket after {scheme}://; expected {scheme}://BUCKET/PATH"
        )


def local_folder(location: str) -> Path:
    """The folder a path, or a ``file://`` URI, names on this machine: the URI's path
    percent-decoded, as pyarrow's filesystem reads it (``%20`` is a space)."""
    if not is_uri(location):
        return Path(location)
    return Path(unquote(urlsplit(location).path))


def last_part(location: str) -> str:
    """The last folder name of a URI's path or of a path (a run's name in storage)."""
    return urlsplit(location).path.rstrip("/").rsplit("/", 1)[-1]


def join(location: str, *parts: str) -> str:
    """``location/part/...`` for a path or a URI (a URI keeps its ``?query``)."""
    if not is_uri(location):
        return str(Path(location).joinpath(*parts))
    split = urlsplit(location)
    path = "/".join([split.path.rstrip("/"), *parts])
    return urlunsplit((split.scheme, split.netloc, path, split.query, split.fragment))


def is_node_local(storage: StorageSpec | None) -> bool:
    """Whether results in ``storage`` may be visible on one node only (see the module doc)."""
    if storage is None:
        return True
    if storage.shared:
        return False
    return not is_uri(storage.path) or storage.path.lower().startswith("file://")


def node_local_message(
    storage: StorageSpec | None,
    where: str,
    nodes: int,
    elsewhere: list[str] | None = None,
    *,
    resume: bool = False,
) -> str:
    """Why a run cannot keep its results in ``where`` on a cluster of ``nodes`` nodes
    (``resume``: a resumed run, which keeps the storage its ``recipe.yaml`` names)."""
    what = (
        f"results would go to {where}, on this machine only (no storage: is set)"
        if storage is None
        else f"storage {storage.path} is a path on one machine unless you mark it shared"
    )
    cluster = (
        f"the Ray cluster has {nodes} nodes"
        if nodes > 1
        else f"the Ray cluster runs on another machine ({', '.join(elsewhere or [])})"
    )
    problem = (
        f"storage: {cluster} and {what}; trials running elsewhere could not write their "
        "results there."
    )
    if resume:
        # Found by QA: told to pass --shared-storage, which --resume refuses.
        return (
            f"{problem} A resumed run keeps the storage its recipe.yaml names: where every "
            "node mounts that folder at the same path, mark it shared there "
            f"({Path(where) / 'recipe.yaml'}: storage: {{path: ..., shared: true}}); else "
            "resume it on embedded Ray here (--address local)"
        )
    return (
        f"{problem} Use a URI every node can reach "
        "(storage: s3://bucket/runs, gs://..., hdfs://...), or a folder every node mounts "
        "at the same path, marked shared (storage: {path: /mnt/nfs/runs, shared: true}, "
        "or --storage /mnt/nfs/runs --shared-storage)"
    )


@dataclass(frozen=True)
class RunPlace:
    """Where one run writes (``local_dir``) and where it is stored (``remote``, a URI)."""

    local_dir: Path
    remote: str | None = None
    #: ``local_dir``'s name was made here (``NAME-YYYYmmdd-HHMMSS``), not given:
    #: a run that finds it taken when it creates it takes the next free one.
    stamped: bool = False
    #: The storage URI ``remote`` is in.
    remote_parent: str | None = None
    #: The id of the run stored at ``remote`` that this one is (a resume), as
    #: :func:`check_stored_place` read it; ``None``: none stored there, or no id.
    stored_run_id: str | None = None

    def renamed(self, name: str) -> RunPlace:
        """The same place under another run directory name."""
        remote = join(self.remote_parent, name) if self.remote_parent is not None else None
        return replace(self, local_dir=self.local_dir.with_name(name), remote=remote)

    @property
    def remote_name(self) -> str | None:
        """The run's folder name in storage (``remote``'s last part)."""
        if self.remote is None:
            return None
        return last_part(self.remote)

    @property
    def location(self) -> str:
        """The run's final place: the URI in storage, or the local run directory."""
        return self.remote if self.remote is not None else str(self.local_dir)


def plan_run(
    recipe: Recipe,
    *,
    run_dir: str | Path | None = None,
    run_name: str | None = None,
    nodes: int | None = None,
    elsewhere: list[str] | None = None,
    resume: bool = False,
) -> RunPlace:
    """Decide a run's directory and its place in storage; refuse node-local storage.

    With ``resources.address`` (and the Ray backend) this first checks, within
    seconds, that the cluster answers and accepts us, and counts its nodes.

    Args:
        recipe: The recipe (its ``storage``, ``output`` and ``resources.address``).
        run_dir: An explicit run directory (``--run-dir``, a resumed run).
        run_name: The folder name under storage/output; default ``NAME-YYYYmmdd-HHMMSS``.
        nodes: How many nodes the Ray cluster has; default: ask the cluster at
            ``resources.address``, or 1 for embedded local Ray.
        elsewhere: The hosts of nodes that are not this machine (where trials
            could not write to this machine's disk); default: as ``nodes``.
        resume: The run is resumed (its refusal says how a resumed run's storage
            is marked shared).

    Raises:
        StorageError: The cluster has more than one node and the results would
            land on one node only.
        ClusterError: The cluster cannot be reached or refuses us.
    """
    if nodes is None:
        nodes, elsewhere = 1, []
        if recipe.resources.address and recipe.search.backend == "ray":
            from orchestrator.cluster import probe

            info = probe(recipe.resources.address)
            nodes, elsewhere = info.nodes, info.elsewhere
    # An empty one too (found by QA: --run-name "" made a run of the default name),
    # and one a recipe's name could not be (spaces, a leading '-', '%': found by QA).
    from orchestrator.recipe import RUN_NAME

    if run_name is not None and not RUN_NAME.fullmatch(run_name):
        what = ", not a path" if "/" in run_name or os.sep in run_name else ""
        raise StorageError(
            f"run name {run_name!r}: expected a folder name{what}, of ASCII letters, digits, "
            "'.', '_' and '-', from a letter or digit (as a recipe's name)"
        )
    if run_name is not None and run_dir is not None:
        raise StorageError(
            f"a run name ({run_name!r}) and a run directory ({run_dir}) both: the run "
            "directory is the run's folder, name and all; give one of them"
        )
    storage = recipe.storage
    if run_dir is not None:
        local = Path(run_dir)
    else:
        parent = recipe.output
        if storage is not None and not is_uri(storage.path):
            parent = Path(storage.path)
        # A name given is kept as is (a job's run is found again by its job id).
        # A name made here may be taken when the run makes the directory (another
        # run of the recipe started in the same second): run._open_run_dir then
        # takes the next free one.
        local = parent / (run_name or _stamped(recipe.name))
    from orchestrator.paths import run_dir_problem

    # The recipe's output was checked with the recipe; a folder given here was not.
    if (problem := run_dir_problem(local, list(recipe.strategies))) is not None:
        raise RunDirError(problem)
    if nodes > 1 or elsewhere:
        inside = (
            storage is not None
            and not is_uri(storage.path)
            and local.resolve().is_relative_to(Path(storage.path).resolve())
        )
        if is_node_local(storage):
            raise StorageError(
                node_local_message(storage, str(local), nodes, elsewhere, resume=resume)
            )
        if storage is not None and not is_uri(storage.path) and not inside:
            # Found by QA: a fetched copy of a shared-folder run, resumed on the cluster,
            # was told to mark its storage shared, which it was.
            raise StorageError(
                f"storage: the run directory {local} is outside the shared folder "
                f"{storage.path}, where the cluster's trials write their results: run or "
                f"resume the run inside it (a run stored there is resumed there: "
                f"graftune run --resume {storage.path}/NAME)"
            )
    remote = remote_parent = None
    if storage is not None and is_uri(storage.path):
        remote_parent = storage.path
        # A resumed run keeps its name in storage, whatever folder it was fetched into.
        name = _recorded_name(local) or local.name
        if set(name) & set(_URI_MARKS):
            # In a URI's path they end it ('#', '?') or escape ('%'): h#1 was stored as h.
            raise StorageError(
                f"run name {name!r}: a run stored in {storage.path} takes a folder name "
                f"without {', '.join(map(repr, _URI_MARKS))}; choose another"
            )
        remote = join(storage.path, name)
    return RunPlace(
        local_dir=local,
        remote=remote,
        stamped=run_dir is None and not run_name,
        remote_parent=remote_parent,
    )


#: Characters a folder name in a storage URI cannot hold as they are.
_URI_MARKS = ("#", "?", "%")


def _stamped(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


# -- which run a stored folder holds ------------------------------------------------

#: In a run directory stored in a URI (and so in its stored and fetched copies): the
#: run's id and its folder's name in storage, where a resume stores it again.
STORED_FILE = ".stored.json"
_EVENTS_FILE = "events.jsonl"
_SEARCHED_FILE = ".searched"
_RECIPE_FILE = "recipe.yaml"


def _read_record(text: str | None) -> dict[str, str]:
    try:
        record = json.loads(text or "")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def stored_uri(run_dir: Path) -> str | None:
    """The URI a run is stored at (its ``.stored.json`` says); ``None`` for a run
    stored in a folder, whose run directory is its place in storage (it keeps no
    record), or a run without storage."""
    stored = _read_record(_read_local(run_dir, STORED_FILE)).get("stored")
    return stored if isinstance(stored, str) and is_uri(stored) else None


def _recorded_name(run_dir: Path) -> str | None:
    """The folder name in storage a run directory records, if any (a valid one)."""
    from orchestrator.recipe import RUN_NAME

    name = _read_record(_read_local(run_dir, STORED_FILE)).get("name")
    # A name a run could have (found by security QA: ".ssh" was taken as one).
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        return None
    return name


def record_stored(place: RunPlace) -> None:
    """Record in the run directory its place in storage and its id (kept if it has one).

    Written as the run starts (and when a run made before graftune kept this record
    is resumed); uploaded with the run, so a fetched copy has it too.
    """
    if place.remote is None:
        return
    path = place.local_dir / STORED_FILE
    run_id = _read_record(_read_local(place.local_dir, STORED_FILE)).get("run_id")
    if not (isinstance(run_id, str) and run_id):
        # A copy without the record that check_stored_place found to be the stored
        # run takes the stored run's id: a new one would make the run's other copies
        # "another run" there.
        run_id = place.stored_run_id
    record = {
        "run_id": run_id if isinstance(run_id, str) and run_id else uuid.uuid4().hex,
        "name": place.remote_name,
        "stored": place.remote,
    }
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def check_stored_place(place: RunPlace, *, resume: bool) -> RunPlace:
    """Refuse to store a run where storage holds another run, before anything is written.

    A new run's folder in storage must hold no run. A resumed run's may hold only
    this run: the same recorded id or, for a run made before graftune recorded
    one, the same first event (its start, with its time), else the same
    searched digest.

    Returns:
        ``place`` with the stored run's id (:attr:`RunPlace.stored_run_id`), which a
        copy without its own record takes (:func:`record_stored`).

    Raises:
        StorageError: The folder holds another run (nothing was written).
    """
    if place.remote is None:
        return place
    fs, path = _filesystem(place.remote)
    read: dict[str, str | None] = {}

    def remote(name: str) -> str | None:  # each file read once
        if name not in read:
            read[name] = _read_remote(fs, f"{path.rstrip('/')}/{name}", place.remote)
        return read[name]

    if remote(STORED_FILE) is None and remote(_RECIPE_FILE) is None:
        # No run there (yet): a folder that holds anything else is not the run's to
        # fill (found by security QA: a crafted run directory, resumed, stored its
        # files in "file:///home/USER" under the name ".ssh").
        held = _entries(fs, path, place.remote)
        if held:
            more = f" and {len(held) - 3} more" if len(held) > 3 else ""
            raise StorageError(
                f"storage: {place.remote} holds {', '.join(held[:3])}{more}, and no graftune "
                "run, which storing this run there would overwrite; "
                + (
                    "move them away in storage to resume it"
                    if resume
                    else "choose another --run-name (or --run-dir)"
                )
            )
        return place
    if not resume:
        raise StorageError(
            f"storage: {place.remote} already holds a run, which this run would "
            "overwrite; choose another --run-name (or --run-dir)"
        )
    if _same_run(lambda name: _read_local(place.local_dir, name), remote):
        run_id = _read_record(remote(STORED_FILE)).get("run_id")
        return replace(place, stored_run_id=run_id if isinstance(run_id, str) else None)
    raise StorageError(
        f"storage: {place.remote} holds another run than {place.local_dir} (another run id, "
        "or another start), which storing this one there would overwrite; move the other "
        "run away in storage, or resume a copy of the run stored there"
    )


def _entries(fs: Any, path: str, uri: str) -> list[str]:
    """The names in the folder ``path`` of ``fs`` (none where it does not exist)."""
    import pyarrow.fs

    try:
        found = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    except Exception as exc:  # pyarrow raises OSError, ArrowInvalid ... by backend
        raise StorageError(f"storage {uri}: {' '.join(str(exc).split())}") from exc
    return sorted(info.base_name for info in found)


def _same_run(here: Callable[[str], str | None], there: Callable[[str], str | None]) -> bool:
    """Whether two run directories hold the same run, by the first mark both have."""
    marks: tuple[tuple[str, Callable[[str | None], str | None]], ...] = (
        (STORED_FILE, lambda text: _read_record(text).get("run_id") or None),
        (_EVENTS_FILE, lambda text: (text or "").split("\n", 1)[0] or None),
        (_SEARCHED_FILE, lambda text: (text or "").strip() or None),
    )
    for name, mark in marks:
        ours, theirs = mark(here(name)), mark(there(name))
        if ours is not None and theirs is not None:
            return ours == theirs
    return True  # nothing to tell them apart by (a run stopped as it began)


#: Enough of a file to tell a run by: a record, the first event, a digest.
_READ_LIMIT = 1 << 16


def _read_local(folder: Path, name: str) -> str | None:
    try:
        with open(folder / name, "rb") as handle:
            return handle.read(_READ_LIMIT).decode("utf-8", "replace")
    except OSError:
        return None


def _read_remote(fs: Any, path: str, uri: str) -> str | None:
    import pyarrow.fs

    try:
        if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
            return None
        with fs.open_input_stream(path) as handle:
            return handle.read(_READ_LIMIT).decode("utf-8", "replace")
    except Exception as exc:  # pyarrow raises OSError, ArrowInvalid ... by backend
        raise StorageError(f"storage {uri}: {' '.join(str(exc).split())}") from exc


# -- copying ----------------------------------------------------------------------


#: How long a Google Cloud Storage call retries what fails before it gives up, in
#: seconds: for :func:`check_reachable`, and for the rest. pyarrow's default is 15
#: minutes, in C++ where neither Ctrl+C nor SIGTERM reach it: offline, a run with
#: ``gs://`` storage waited 17 minutes and more (found by QA). A retry limit in the
#: URI (``?retry_limit_seconds=``) is the user's and is kept.
GCS_RETRY_S = {"check": 5, "transfer": 60}


def _filesystem(uri: str, *, retry: str = "transfer") -> tuple[Any, str]:
    import pyarrow.fs

    parts = urlsplit(uri)
    opened = uri
    if parts.scheme in ("gs", "gcs") and "retry_limit_seconds" not in parse_qs(parts.query):
        limit = f"retry_limit_seconds={GCS_RETRY_S[retry]}"
        opened = urlunsplit(parts._replace(query="&".join(filter(None, (parts.query, limit)))))
    try:
        return pyarrow.fs.FileSystem.from_uri(opened)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError ... by backend
        raise StorageError(f"storage {uri}: {' '.join(str(exc).split())}") from exc


def check_reachable(uri: str) -> None:
    """Refuse storage this machine cannot reach, before a run does any work.

    Each trial uploads its folder as it ends: storage that cannot be reached
    was found at the first trial's end, counted as its worker's death (a
    retry), and said only when the whole run had trained. The filesystem's own
    answer takes seconds (an unknown S3 host: about 6).

    Raises:
        StorageError: The filesystem cannot be made, or cannot be asked for ``uri``.
    """
    fs, path = _filesystem(uri, retry="check")
    try:
        fs.get_file_info(path)
    except Exception as exc:  # pyarrow raises OSError, ArrowInvalid ... by backend
        raise StorageError(f"storage {uri}: {' '.join(str(exc).split())}") from exc


def upload(local: Path, uri: str, *, skip: tuple[str, ...] = (), files_only: bool = False) -> None:
    """Copy the folder ``local`` to ``uri`` (created as needed), leaving out ``skip`` entries.

    With ``files_only``, the folders inside ``local`` are left out too.

    Raises:
        StorageError: The storage cannot be reached or written.
    """
    import pyarrow.fs

    fs, path = _filesystem(uri)
    source = pyarrow.fs.LocalFileSystem()
    try:
        fs.create_dir(path, recursive=True)
        for entry in sorted(Path(local).iterdir()):
            if entry.name in skip or (files_only and entry.is_dir()):
                continue
            target = f"{path.rstrip('/')}/{entry.name}"
            if entry.is_dir():
                fs.create_dir(target, recursive=True)
            pyarrow.fs.copy_files(
                str(entry), target, source_filesystem=source, destination_filesystem=fs
            )
    except StorageError:
        raise
    except Exception as exc:
        raise StorageError(f"cannot upload {local} to {uri}: {exc}") from exc


def download(uri: str, local: Path) -> bool:
    """Copy the folder at ``uri`` into ``local``; ``False`` when there is none.

    Raises:
        StorageError: The storage cannot be reached or read.
    """
    import pyarrow.fs

    fs, path = _filesystem(uri)
    try:
        if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
            return False
        Path(local).mkdir(parents=True, exist_ok=True)
        pyarrow.fs.copy_files(
            path,
            str(local),
            source_filesystem=fs,
            destination_filesystem=pyarrow.fs.LocalFileSystem(),
        )
    except Exception as exc:
        raise StorageError(f"cannot download {uri} to {local}: {exc}") from exc
    return True


def remove_stored(uri: str, paths: list[str]) -> None:
    """Delete the files ``paths`` (relative to ``uri``) from storage; gone ones are fine.

    Raises:
        StorageError: The storage cannot be reached or written.
    """
    import pyarrow.fs

    fs, root = _filesystem(uri)
    try:
        for relative in paths:
            path = f"{root.rstrip('/')}/{relative}"
            if fs.get_file_info(path).type == pyarrow.fs.FileType.File:
                fs.delete_file(path)
    except Exception as exc:
        raise StorageError(f"cannot remove files from {uri}: {exc}") from exc


def push_trial(folder: Path, storage: str, strategy: str, trial_id: str) -> None:
    """Upload one trial's folder to ``STORAGE_RUN/trials/STRATEGY/TRIAL_ID``."""
    upload(folder, join(storage, _TRIALS, strategy, trial_id))


def pull_trial(storage: str, folder: Path, strategy: str, trial_id: str) -> bool:
    """Download a trial's folder that another node uploaded; ``False`` if it has none."""
    return download(join(storage, _TRIALS, strategy, trial_id), folder)


#: The lock file in a run directory, held by the process that runs or resumes it.
LOCK_FILE = ".graftune.lock"


def publish(
    place: RunPlace,
    echo: Callable[[str], None] | None = None,
    *,
    leave_out: tuple[str, ...] = (),
) -> None:
    """Upload a run to its place in storage (nothing to do for a folder).

    Called as the run starts, after each trial and at its end, so that a run
    stopped or killed on the way can be fetched and resumed from storage.

    Args:
        leave_out: Entries of the run directory not to upload this time (ones
            that do not change, uploaded before).
    """
    if place.remote is None:
        return
    # The lock names this host and process: nothing for the stored copy to keep.
    upload(place.local_dir, place.remote, skip=(_TRIALS, LOCK_FILE, *leave_out))
    trials = place.local_dir / _TRIALS
    # Each trial's folder is there already; what the driver wrote next to them is not.
    for strategy in sorted(trials.iterdir()) if trials.is_dir() else []:
        if strategy.is_dir():
            upload(strategy, join(place.remote, _TRIALS, strategy.name), files_only=True)
    if echo is not None:
        echo(f"stored: {place.remote}")


def _nothing_stored(location: str) -> str:
    return (
        f"there is no run at {location}: nothing was stored there (a job that failed "
        "before its run began stores nothing; its log says why)"
    )


def stored_run_missing(location: str) -> str | None:
    """Why a resume of the run stored at ``location`` (a URI or a folder) would find
    no run there, where this machine can tell; else ``None``.

    ``None`` also where this machine cannot see that storage (a folder only the
    cluster's nodes mount, a URI it has no access to): a job resuming it is the
    judge then. A place holds a run once the run stored its recipe (its first
    upload) or its record of where it is stored, as :func:`check_stored_place` reads it.
    """
    if is_uri(location) and urlsplit(location).scheme.lower() != "file":
        import pyarrow.fs

        try:
            fs, path = _filesystem(location, retry="check")
            kinds = [
                fs.get_file_info(f"{path.rstrip('/')}/{name}").type
                for name in (_RECIPE_FILE, STORED_FILE)
            ]
        except Exception:  # not reachable, or not readable, from here
            return None
        return None if pyarrow.fs.FileType.File in kinds else _nothing_stored(location)
    # A folder (or a file:// URI of one): seen here only where its parent is.
    folder = local_folder(location)
    if not folder.parent.is_dir():
        return None
    if any((folder / name).is_file() for name in (_RECIPE_FILE, STORED_FILE)):
        return None
    return _nothing_stored(location)


def fetch(location: str, dest: Path) -> Path:
    """Copy a stored run (a URI or a folder) to ``dest``.

    Raises:
        StorageError: The run is not there, or ``dest`` is not empty.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():  # found by QA: an internal NotADirectoryError
        raise StorageError(f"{dest} is a file; choose another DEST (a new or empty folder)")
    if dest.exists() and any(dest.iterdir()):
        raise StorageError(f"{dest} exists and is not empty; choose another DEST")
    if is_uri(location):
        check_reachable(location)  # in seconds, where a copy's retries take a minute
        if not download(location, dest):
            raise StorageError(f"there is no run at {location} (yet)")
        return dest
    source = Path(location)
    if not source.is_dir() and source.parent.is_dir():  # the storage is seen: nothing there
        raise StorageError(_nothing_stored(location))
    if not source.is_dir():
        raise StorageError(
            f"the run is stored in {location} on the cluster, which this machine does not "
            "see; mount that shared folder here (at the same path), or fetch on a node "
            "that has it, or use a URI storage (s3://, gs://, ...) next time"
        )
    for folder, dirs, files in os.walk(source):
        for name in dirs + files:
            if os.path.islink(os.path.join(folder, name)):
                # Found by security QA: followed, a link in a shared folder copied the
                # fetching user's files into the run (and a loop recursed until ELOOP).
                raise StorageError(
                    f"{os.path.join(folder, name)} is a symbolic link; a run graftune "
                    "stores holds none, and a fetch follows none: nothing was copied"
                )
    shutil.copytree(source, dest, dirs_exist_ok=True)
    return dest


__all__ = [
    "SCHEMES",
    "STORED_FILE",
    "RunPlace",
    "StorageError",
    "check_location",
    "check_stored_place",
    "download",
    "fetch",
    "is_node_local",
    "is_uri",
    "join",
    "last_part",
    "node_local_message",
    "plan_run",
    "publish",
    "pull_trial",
    "push_trial",
    "record_stored",
    "stored_run_missing",
    "upload",
]
