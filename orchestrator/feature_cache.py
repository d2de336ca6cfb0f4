"""The frozen-feature cache: a frozen prefix's outputs, computed once, memory-mapped.

A base frozen up to a cut point is a pure function of its input, so its
outputs on a dataset depend only on (the base's weights, the cut point, the
data, the input adapter, the dtype). They are computed once, saved as ``.npy``
files under ``CACHE/features/KEY/`` and opened memory-mapped by every trial of
every run that needs them; the trial then trains only what lies above the cut.

A file lock makes concurrent trials that need the same entry compute it once;
an entry is complete when its ``meta.json`` exists (written last).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.bases import IN_USE_LOCK, cache_dir, locked_unless

if TYPE_CHECKING:
    import numpy as np

    from orchestrator.bases import LoadedBase
    from orchestrator.data import Dataset

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
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def features_dir() -> Path:
    """Where cached features live."""
    return cache_dir() / "features"


def cached_features(
    base: LoadedBase, frozen_layers: int, dataset: Dataset, *, batch_size: int = 256
) -> tuple[dict[str, np.ndarray], bool]:
    """The prefix's outputs on the train, val and test splits, from the cache or computed now.

    Returns:
        The three arrays (memory-mapped, read-only) and whether they were computed by this call.
    """
    import numpy as np

    key = feature_key(base, frozen_layers, dataset)
    folder = features_dir() / key[:32]
    computed = False
    with locked_unless(folder / "meta.json", folder.with_suffix(".lock")):
        if not (folder / "meta.json").is_file():
            prefix = base.prefix_model(dataset.task.input_shape, frozen_layers)
            folder.mkdir(parents=True, exist_ok=True)
            for left in folder.glob("*.tmp*"):  # by a computation killed midway (we hold the lock)
                left.unlink()
            started = time.perf_counter()
            shapes = {}
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
            meta = {
                "key": key,
                "base": base.info.description,
                "base_fingerprint": base.info.fingerprint,
                "cut": frozen_layers,
                "cut_layer": base.info.cut_names[frozen_layers - 1],
                "data": dataset.source,
                "data_fingerprint": dataset.task.fingerprint,
                "shapes": shapes,
                "dtype": DTYPE,
                "seconds": round(time.perf_counter() - started, 3),
                "created": time.time(),
            }
            tmp = folder / "meta.json.tmp"
            tmp.write_text(json.dumps(meta, indent=2))
            os.replace(tmp, folder / "meta.json")
            computed = True
    arrays = {split: np.load(folder / f"{split}.npy", mmap_mode="r") for split in SPLITS}
    return arrays, computed


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


def cache_entries() -> list[CacheEntry]:
    """Every cached base and feature set."""
    entries = []
    bases = cache_dir() / "bases"
    if bases.is_dir():
        for folder in sorted(p for p in bases.iterdir() if p.is_dir()):
            # What a killed save left: removed by the next run that needs the base.
            whole = (folder / "base.keras").is_file()
            text = folder.name if whole else "incomplete"
            entries.append(CacheEntry("base", folder, _size(folder), text))
    features = features_dir()
    if features.is_dir():
        for folder in sorted(p for p in features.iterdir() if p.is_dir()):
            meta_path = folder / "meta.json"
            if meta_path.is_file():
                meta = json.loads(meta_path.read_text())
                text = (
                    f"{meta['base']} up to cut {meta['cut']} ({meta['cut_layer']}) "
                    f"on {meta['data']}, train {meta['shapes']['train']}"
                )
            else:
                text = "incomplete"
            entries.append(CacheEntry("features", folder, _size(folder), text))
    return entries


def clear_cache(kinds: tuple[str, ...] = ("base", "features")) -> tuple[int, list[str]]:
    """Remove cached entries of the given kinds.

    Refused while a run on this machine uses the cache (:func:`using_cache`):
    its trials would find their base or features gone.

    Returns:
        The bytes freed (measured after), and what could not be removed, why.

    Raises:
        CacheInUse: A run is using the cache.
    """
    import fcntl

    from orchestrator.errors import CacheInUse

    root = cache_dir()
    if not root.is_dir():
        return 0, []
    try:
        handle = open(root / IN_USE_LOCK, "a")  # noqa: SIM115 (closed below)
    except OSError as exc:
        return 0, [f"{root}: {exc.strerror or exc}"]
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CacheInUse(
                f"the cache {root} is in use by a graftune run on this machine; "
                "clear it when no run is going"
            ) from None
        freed, failed = 0, []
        for entry in cache_entries():
            if entry.kind not in kinds:
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
