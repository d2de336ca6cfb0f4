"""The frozen-feature cache: a frozen prefix's outputs, computed once, memory-mapped.

A base frozen up to a cut point is a pure function of its input, so its
outputs on a dataset depend only on (the base's weights, the cut point, the
data, the input adapter, the dtype), and in their last digits on Keras' backend
and TensorFlow's kernels (:func:`numerics`). They are computed once, saved as ``.npy``
files under ``CACHE/features/KEY/`` and opened memory-mapped by every trial of
every run that needs them; the trial then trains only what lies above the cut.

A file lock makes concurrent trials that need the same entry compute it once;
an entry is complete when its ``meta.json`` exists (written last).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.bases import (
    BASE_ENTRY_NAME,
    IN_USE_LOCK,
    cache_dir,
    damaged_base_file,
    describe_cached_base,
    lock_in_use,
    locked,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import numpy as np

    from orchestrator.bases import LoadedBase
    from orchestrator.data import Dataset

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DTYPE = "float32"


def feature_key(base: LoadedBase, frozen_layers: int, dataset: Dataset) -> str:
    """The cache key of one frozen prefix applied to one dataset."""
    index = base.cut_layer(frozen_layers)
    payload = {
        "base": base.info.fingerprint,
        # The prefix itself, not the cut's number: how cut points are counted may change.
        "cut_layer": [index, base.info.cut_names[frozen_layers - 1]],
        "data": dataset.task.fingerprint,
        "adapter": [list(step) for step in base.info.adapter],
        "dtype": DTYPE,
        "numerics": numerics(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def numerics() -> dict[str, str]:
    """What decides the last digits of a prefix's outputs besides its inputs: Keras'
    backend and, on TensorFlow, the settings that choose its kernels. Found by QA:
    features cached with oneDNN on (graftune's default) were served to a run with
    ``TF_ENABLE_ONEDNN_OPTS=0``, whose own prefix differed by up to 1e-6, so its
    leaderboard with the cache on and off differed in the eighth digit."""
    from orchestrator.accelerator import backend
    from orchestrator.environment import VARIABLES

    chosen = backend()
    if chosen != "tensorflow":
        return {"backend": chosen}
    return {"backend": chosen, **{name: _switch(name) for name in VARIABLES}}


#: What TensorFlow does where a switch of :func:`numerics` is unset, empty or not a
#: boolean: oneDNN's default depends on the CPU (on with AVX-512 or AMX).
_SWITCH_DEFAULTS = {"TF_DETERMINISTIC_OPS": "off"}


def _switch(name: str) -> str:
    """A TensorFlow switch as TensorFlow reads it (found by QA: ``1``, ``true`` and
    ``TRUE`` made an entry each; so did ``0`` and an unset ``TF_DETERMINISTIC_OPS``):
    ``on``, ``off``, or ``default`` where TensorFlow decides."""
    said = os.environ.get(name, "").strip().lower()
    if said in ("1", "true"):
        return "on"
    if said in ("0", "false"):
        return "off"
    return _SWITCH_DEFAULTS.get(name, "default")


def features_dir() -> Path:
    """Where cached features live."""
    return cache_dir() / "features"


def feature_entries() -> dict[str, Path]:
    """Each feature entry's folder by name (none: ``{}``)."""
    try:
        return {p.name: p for p in _entry_folders(features_dir(), "features")}
    except (OSError, ValueError):  # no cache yet, or a $GRAFTUNE_CACHE_DIR of no user
        return {}


def feature_stamps() -> dict[str, tuple[int, int] | None]:
    """Each feature entry's name, with the identity of its ``meta.json`` (written
    last, and replaced when a damaged entry is computed again): ``None`` where it
    cannot be read."""
    stamps: dict[str, tuple[int, int] | None] = {}
    for name, folder in feature_entries().items():
        try:
            status = (folder / "meta.json").stat()
        except OSError:
            stamps[name] = None
        else:
            stamps[name] = (status.st_ino, status.st_mtime_ns)
    return stamps


def made_by(before: dict[str, tuple[int, int] | None], run_dir: Path) -> int:
    """The bytes of the feature entries the trials of the run in ``run_dir``
    computed since :func:`feature_stamps` gave ``before`` (found by QA: two runs
    at once each claimed what either computed)."""
    made = []
    for name, stamp in feature_stamps().items():
        if before.get(name, 0) == stamp:
            continue
        folder = features_dir() / name
        try:
            made_for = _read_meta(folder).get("made_for")
        except DamagedEntry:
            made_for = None  # unreadable: counted, as one made before graftune kept it
        if made_for is None or Path(made_for) in (run_dir.absolute(), run_dir.resolve()):
            made.append(folder)
    return entries_size(made)


def entries_size(folders: Iterable[Path]) -> int:
    """The bytes the entries in ``folders`` take."""
    return sum(_size(folder) for folder in folders)


def cached_features(
    base: LoadedBase,
    frozen_layers: int,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    damaged: Callable[[str], None] | None = None,
    made_for: str | None = None,
) -> tuple[dict[str, np.ndarray], bool]:
    """The prefix's outputs on the train, val and test splits, from the cache or computed now.

    An entry that cannot be read (a file cut short, a ``meta.json`` that is not
    graftune's) is computed again, as a missing one is.

    Args:
        damaged: Told, in words naming the entry, when it is computed again
            because it could not be read.
        made_for: The run directory of the trial computing it, kept in its
            ``meta.json``: the run says what it added to the cache
            (:func:`made_by`), not what others running beside it did.

    Returns:
        The three arrays (memory-mapped, read-only) and whether they were computed by this call.
    """
    import numpy as np

    key = feature_key(base, frozen_layers, dataset)
    folder = features_dir() / key[:32]
    try:
        return _read_entry(folder, verify=True), False
    except DamagedEntry as exc:
        problem = None if exc.missing else str(exc)
    # Held while the entry is made: concurrent trials that need it make it once.
    # Trials reading the damaged files meanwhile keep them (each is replaced, not
    # written over), and come here too.
    with locked(folder.with_suffix(".lock")):
        try:
            # Made, or made again, while this one waited.
            return _read_entry(folder, verify=True), False
        except DamagedEntry:
            pass
        if problem is not None:
            log.warning(
                "the cached features %s cannot be read (%s): computing them again", folder, problem
            )
            if damaged is not None:
                damaged(f"the cached features {folder} could not be read ({problem})")
            (folder / "meta.json").unlink(missing_ok=True)  # incomplete until made again
        prefix = base.prefix_model(dataset.task.input_shape, frozen_layers)
        folder.mkdir(parents=True, exist_ok=True)
        _check_room(folder, tuple(prefix.output.shape[1:]), dataset)
        for left in folder.glob("*.tmp*"):  # by a computation killed midway (we hold the lock)
            left.unlink()
        started = time.perf_counter()
        shapes, digests = {}, {}
        for split in SPLITS:
            x = getattr(dataset, f"x_{split}")
            out = prefix.predict(x, batch_size=batch_size, verbose=0).astype(DTYPE)
            tmp = folder / f"{split}.{os.getpid()}.tmp.npy"
            try:
                np.save(tmp, out)
            except OSError:  # a full disk: no half-written file keeps it full
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, folder / f"{split}.npy")
            shapes[split] = list(out.shape)
            digests[split] = _written_digest(folder / f"{split}.npy")
        meta = {
            "key": key,
            "base": base.info.description,
            # Which cached base: pretrain up to cut 4 read alike for every pretrain (QA).
            "base_entry": base.info.path.parent.name,
            "base_fingerprint": base.info.fingerprint,
            "cut": frozen_layers,
            "cut_layer": base.info.cut_names[frozen_layers - 1],
            "data": dataset.source,
            "data_fingerprint": dataset.task.fingerprint,
            "shapes": shapes,
            "digests": digests,
            "dtype": DTYPE,
            "numerics": numerics(),
            "seconds": round(time.perf_counter() - started, 3),
            "created": time.time(),
            "made_for": made_for,
        }
        tmp = folder / "meta.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, folder / "meta.json")
        return _read_entry(folder), True


class CacheTooLarge(OSError):
    """The features would take more than half the free space of the cache's disk.

    Caught by the trial, which trains through the frozen prefix instead.
    """


def _check_room(folder: Path, shape: tuple[Any, ...], dataset: Dataset) -> None:
    """Refuse to make an entry that would take more than half the free space left.

    Features of an early cut of a convolutional base are many times larger than
    the images (a 32x32 image of 3 numbers gives 32x32x16 after one layer of 16
    filters), and such a prefix is cheap to run again; an entry is never the
    thing that fills the disk.

    Raises:
        CacheTooLarge: Saying how much the entry needs and how much is free.
    """
    import math

    import numpy as np

    if not all(isinstance(d, int) for d in shape):
        return  # not known before the features are computed
    rows = sum(len(getattr(dataset, f"x_{split}")) for split in SPLITS)
    need = rows * math.prod(shape) * np.dtype(DTYPE).itemsize
    free = shutil.disk_usage(folder).free
    if need > free / 2:
        with contextlib.suppress(OSError):
            folder.rmdir()  # made for this entry (a damaged entry's files stay)
        raise CacheTooLarge(
            f"its features ({rows} examples of {list(shape)}) would take {size_text(need)}, "
            f"more than half the {size_text(free)} free where the cache is ({folder.parent})"
        )


def size_text(size: float) -> str:
    """A number of bytes for people: ``512 B``, ``3.4 MiB``, ``1.1 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


class DamagedEntry(Exception):
    """A feature entry cannot be read: said in words, or ``missing`` (not made yet)."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        self.missing = missing
        super().__init__(message)


def _read_meta(folder: Path) -> dict[str, Any]:
    """An entry's ``meta.json``, checked to be one graftune wrote.

    Raises:
        DamagedEntry: It is missing (the entry is not made yet), unreadable, or not graftune's.
    """
    path = folder / "meta.json"
    if not path.is_file():
        raise DamagedEntry("incomplete", missing=True)
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DamagedEntry(
            f"meta.json is unreadable: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    shapes = meta.get("shapes") if isinstance(meta, dict) else None
    if not isinstance(shapes, dict) or not all(
        isinstance(shapes.get(split), list) for split in SPLITS
    ):
        raise DamagedEntry("meta.json lacks the shapes of its arrays")
    return meta


#: The entries' files whose digest this process checked: (path, size, mtime).
_VERIFIED: set[tuple[str, int, int]] = set()


def _file_digest(path: Path) -> str:
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def _written_digest(path: Path) -> str:
    """The digest of a file this process just wrote, which it need not check again."""
    _VERIFIED.add(_stamp(path))
    return _file_digest(path)


def _check_digest(path: Path, expected: Any) -> None:
    """Refuse a file whose bytes are not those written (found by QA: a test.npy of
    zeros of the right shape was used by every later run, its scores wrong); each
    file once a process, while it is unchanged."""
    if not isinstance(expected, str):  # an entry of a graftune before digests
        return
    seen = _stamp(path)
    if seen in _VERIFIED:
        return
    if _file_digest(path) != expected:
        raise DamagedEntry(f"{path.name} is not what was written (its digest differs)")
    _VERIFIED.add(seen)


def _read_entry(folder: Path, *, verify: bool = False) -> dict[str, np.ndarray]:
    """An entry's three arrays, memory-mapped, each checked against its ``meta.json``:
    its shape and dtype, and with ``verify`` its bytes' digest (what a trial reads;
    ``cache info`` does not read every byte).

    Raises:
        DamagedEntry: The entry is missing, or cannot be read as made.
    """
    import numpy as np

    meta = _read_meta(folder)
    digests = meta.get("digests") if isinstance(meta.get("digests"), dict) else {}
    arrays = {}
    for split in SPLITS:
        path = folder / f"{split}.npy"
        expected = meta["shapes"][split]
        try:
            array = np.load(path, mmap_mode="r")
        except FileNotFoundError:
            raise DamagedEntry(f"{path.name} is missing") from None
        except ValueError as exc:
            if "pickled" in str(exc):  # numpy's advice to unpickle it: not for a cache file
                raise DamagedEntry(f"{path.name} is not an array file numpy wrote") from None
            raise DamagedEntry(f"{path.name} cannot be read (cut short?): {exc}") from None
        except (OSError, EOFError) as exc:
            # numpy says "mmap length is greater than file size" of a file cut short.
            raise DamagedEntry(f"{path.name} cannot be read (cut short?): {exc}") from None
        if list(array.shape) != expected or array.dtype != DTYPE:
            raise DamagedEntry(
                f"{path.name} holds {array.dtype} {list(array.shape)}, "
                f"its meta.json says {meta.get('dtype')} {expected}"
            )
        if verify:
            _check_digest(path, digests.get(split))
        arrays[split] = array
    return arrays


@dataclass(frozen=True)
class CacheEntry:
    """One entry of graftune's cache, for ``graftune cache info``."""

    kind: str
    path: Path
    size_bytes: int
    description: str


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cache_folder_problem() -> str | None:
    """Why graftune's cache folder cannot be one: it, or the nearest of the folders
    above it that exists, is a file, or it is a link to nothing, or so is its
    ``bases/`` or ``features/`` (``None``: it can; a cache this process cannot
    write in is read, as a shared one is)."""
    from orchestrator.bases import CACHE_ENV
    from orchestrator.errors import cannot_make_in

    root = cache_dir()
    problem = cannot_make_in(root, writable=False)
    if problem is None:
        # Its own folders too (found by QA: a features/ that was a file turned the
        # cache off in every trial, "File exists", and clear said "freed 0 B").
        for inside in (root / "bases", features_dir()):
            if inside.is_file() or (inside.is_symlink() and not inside.exists()):
                kind = "a file" if inside.is_file() else "a link to nothing"
                problem = f"{inside} is {kind}, where graftune keeps its entries: remove it"
                return f"graftune's cache folder {root} cannot be used: {problem}"
    if problem is None:
        return None
    return (
        f"graftune's cache folder {root} (${CACHE_ENV}, default ~/.cache/graftune) "
        f"cannot be made: {problem}"
    )


def _cache_root() -> Path:
    """:func:`cache_dir`, refused where :func:`cache_folder_problem` finds one:
    listing a file said "empty" and clearing it "freed 0 B".

    Raises:
        OutputPathError: It cannot be a folder.
    """
    from orchestrator.errors import OutputPathError

    problem = cache_folder_problem()
    if problem is not None:
        raise OutputPathError(problem)
    return cache_dir()


#: The names of the entries graftune makes (:data:`orchestrator.bases.BASE_ENTRY_NAME`;
#: ``features/`` and 32 hex digits of the key, :func:`cached_features`): ``cache info``
#: lists and ``cache clear`` removes no other folder (found by QA: a
#: $GRAFTUNE_CACHE_DIR set to a folder of the user's own, with a ``features/``
#: in it, lost it to ``cache clear``).
_ENTRY_NAMES = {"base": BASE_ENTRY_NAME, "features": re.compile(r"[0-9a-f]{32}")}


def _entry_folders(parent: Path, kind: str) -> list[Path]:
    return sorted(
        p for p in parent.iterdir() if p.is_dir() and _ENTRY_NAMES[kind].fullmatch(p.name)
    )


def cache_entries() -> list[CacheEntry]:
    """Every cached base and feature set.

    Raises:
        OutputPathError: The cache folder is a file.
    """
    entries = []
    bases = _cache_root() / "bases"
    if bases.is_dir():
        for folder in _entry_folders(bases, "base"):
            # What a killed save left: removed by the next run that needs the base.
            path = folder / "base.keras"
            problem = damaged_base_file(path) if path.is_file() else _incomplete(folder)
            if problem is None:
                text = describe_cached_base(folder)
            elif path.is_file():
                text = f"damaged: {problem} (made again by the next run that needs it)"
            else:
                text = problem
            entries.append(CacheEntry("base", folder, _size(folder), text))
    features = features_dir()
    if features.is_dir():
        for folder in _entry_folders(features, "features"):
            try:
                meta = _read_meta(folder)
                _read_entry(folder)
            except DamagedEntry as exc:
                text = (
                    _incomplete(folder)
                    if exc.missing
                    else f"damaged: {exc} (computed again by the next run that needs it)"
                )
            else:
                shapes = meta["shapes"]
                rows = "/".join(str(shapes[split][0]) for split in SPLITS if split in shapes)
                entry = (
                    meta.get("base_entry") or f"weights {str(meta.get('base_fingerprint'))[:12]}"
                )
                # And the data's digest: data changed in place under one name read alike.
                data = str(meta.get("data_fingerprint") or "")[:12]
                text = (
                    f"{meta.get('base')} ({entry}) up to cut {meta.get('cut')} "
                    f"({meta.get('cut_layer')}) "
                    f"on {meta.get('data')}{f' (data {data})' if data else ''}: {rows} examples "
                    f"(train/val/test) of {shapes['train'][1:]}{_numerics_text(meta)}"
                )
                if "numerics" not in meta:
                    # Found by upgrade QA: keyed without them, no run finds it again,
                    # and it was listed as any live entry.
                    text = (
                        "unused (made by an earlier graftune, before features were keyed by "
                        "their numerics; no run reads it again: graftune cache clear "
                        f"--features frees it): {text}"
                    )
            entries.append(CacheEntry("features", folder, _size(folder), text))
    return entries


def _incomplete(folder: Path) -> str:
    """What ``cache info`` says of an entry without its last file: one a process
    on this machine is making now holds its lock (found by QA: an entry being
    computed by a run going was listed as "incomplete", as a killed one is)."""
    import fcntl

    try:
        handle = open(folder.with_suffix(".lock"))  # noqa: SIM115 (closed below)
    except OSError:
        return "incomplete"  # no lock, or one this user cannot read
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return "being made now, by a graftune process on this machine"
        except OSError:
            return "incomplete"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return "incomplete"


def _numerics_text(meta: dict[str, Any]) -> str:
    """What an entry's numerics were where they are not graftune's defaults (an
    entry of each told apart in ``cache info``)."""
    said = meta.get("numerics")
    if not isinstance(said, dict):
        return ""
    usual = {"backend": "tensorflow", "TF_ENABLE_ONEDNN_OPTS": "on", "TF_DETERMINISTIC_OPS": "off"}
    other = [f"{name}={value}" for name, value in sorted(said.items()) if value != usual.get(name)]
    return f", made with {' '.join(other)}" if other else ""


def clear_cache(kinds: tuple[str, ...] = ("base", "features")) -> tuple[int, list[str]]:
    """Remove cached entries of the given kinds.

    Refused while a run on this machine uses the cache (:func:`using_cache`):
    its trials would find their base or features gone.

    Returns:
        The bytes freed (measured after), and what could not be removed, why.

    Raises:
        CacheInUse: A run is using the cache.
        OutputPathError: The cache folder is a file.
    """
    import fcntl

    from orchestrator.errors import CacheInUse

    root = _cache_root()
    if not root.is_dir():
        return 0, []
    try:
        handle = lock_in_use(root, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CacheInUse(
            f"the cache {root} is in use by a graftune run on this machine; "
            "clear it when no run is going"
        ) from None
    except OSError as exc:  # a read-only cache: its lock cannot be made
        if not any(entry.kind in kinds for entry in cache_entries()):
            return 0, []  # nothing to remove (found by QA: "could not remove" the cache)
        return 0, [f"{root}: its lock {IN_USE_LOCK} cannot be made ({exc.strerror or exc})"]
    with handle:
        freed, failed = 0, []
        linked = {
            kind: parent
            for kind, parent in (("base", root / "bases"), ("features", features_dir()))
            if kind in kinds and parent.is_symlink()
        }
        for parent in linked.values():
            failed.append(
                f"{parent}: a symbolic link (to {os.readlink(parent)}), not followed: "
                "remove the entries where it leads yourself"
            )
        for entry in cache_entries():
            if entry.kind not in kinds or entry.kind in linked:
                continue
            errors = _remove_tree(entry.path)
            try:
                entry.path.with_suffix(".lock").unlink(missing_ok=True)
            except OSError as exc:
                errors.append(f"{entry.path.with_suffix('.lock')}: {exc.strerror or exc}")
            freed += entry.size_bytes - (_size(entry.path) if entry.path.exists() else 0)
            failed += errors[:1]
        return freed, failed


def _remove_tree(path: Path) -> list[str]:
    """``shutil.rmtree`` that goes on past what it cannot remove, and says what and why."""
    errors: list[str] = []

    def failed(_function: object, where: str, exc: BaseException) -> None:
        errors.append(f"{where}: {getattr(exc, 'strerror', None) or exc}")

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=failed)
    else:
        shutil.rmtree(path, onerror=lambda f, where, info: failed(f, where, info[1]))
    return errors
