"""Data sources and the dataset a run trains on.

A recipe's ``data.source`` is ``scheme:location`` (``sklearn:digits``,
``csv:data/wine.csv``). Plugins add a :class:`DataSource` class per scheme through the
``graftune_register_data_sources`` hook; :func:`prepare_dataset` asks the source for
labelled arrays, keeps the classes the recipe names, splits them (stratified, seeded),
subsamples the training split for few-shot runs and describes the task in a
:class:`TaskSpec` whose ``fingerprint`` identifies the data for caching.

This module imports neither TensorFlow nor Ray, and pandas, scikit-learn and PIL only
when data is actually read, so that ``import orchestrator.data`` stays cheap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np

from orchestrator.data import split as _split
from orchestrator.errors import PLUGIN_FAULTS, DataError, GraftuneError, echoed, raised

if TYPE_CHECKING:
    from collections.abc import Sequence

    from orchestrator.registry import Registry

__all__ = [
    "DataSource",
    "Dataset",
    "LabelledArrays",
    "TaskSpec",
    "check_data_spec",
    "prepare_dataset",
    "split_source",
    "without_examples",
]

_SCHEME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

# Suffixes that say which built-in scheme a bare path was probably meant for.
_SCHEME_BY_SUFFIX = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npz": "npz",
}


@dataclass(frozen=True, eq=False)
class LabelledArrays:
    """What a :meth:`DataSource.load` returns: every example with its class code.

    Compared by identity; compare the arrays themselves when needed.

    Attributes:
        x: float32 features; images are ``(n, h, w, c)`` scaled to [0, 1], tables ``(n, d)``.
        y: int64 class codes ``0 .. k-1``, shape ``(n,)``.
        class_names: ``class_names[code]`` is the human name of a class.
    """

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    #: Optional: a name for each example (an image's path in its folder), which a
    #: run's ``split.csv`` lists beside the example's row.
    names: tuple[str, ...] | None = None


class Rows(NamedTuple):
    """Each split's examples as row numbers of what its source read (0 for the first
    example it returned: a table's first row under its header), in the order of the
    split's arrays."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass(frozen=True, eq=False)
class TaskSpec:
    """What a model needs to know about the data, and a content hash of it.

    Two task specs are equal when their fingerprints are: every other field is
    derived from the arrays and class names the fingerprint covers.

    Attributes:
        input_shape: The shape of one example, ``x.shape[1:]``.
        n_classes: The number of classes.
        class_names: ``class_names[code]`` is the human name of a class.
        feature_mean: float32 per-feature mean over the final training split.
        feature_var: float32 per-feature variance over the final training split.
        fingerprint: sha256 hex digest over all six split arrays and the class names.
    """

    input_shape: tuple[int, ...]
    n_classes: int
    class_names: tuple[str, ...]
    feature_mean: np.ndarray
    feature_var: np.ndarray
    fingerprint: str

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskSpec):
            return NotImplemented
        return self.fingerprint == other.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)


@dataclass(frozen=True, eq=False)
class Dataset:
    """The train, validation and test splits of one recipe's data, ready to fit.

    The arrays are read-only: they are shared between trials (and, under Ray,
    through the object store, which hands out read-only arrays anyway), so a
    strategy that changes them in place must copy them first.

    Attributes:
        x_train: float32 training features.
        y_train: int64 training class codes.
        x_val: float32 validation features.
        y_val: int64 validation class codes.
        x_test: float32 test features.
        y_test: int64 test class codes.
        task: The task these splits define.
        source: The data spec's ``source`` string.
        rows: Each split's examples as rows of what the source read (``train``,
            ``val``, ``test``, in the arrays' order), where known.
        names: The source's name of each row it read (an image's path), where it
            gave them.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: TaskSpec
    source: str
    rows: Rows | None = None
    names: tuple[str, ...] | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dataset):
            return NotImplemented
        return self.source == other.source and self.task == other.task

    def __hash__(self) -> int:
        return hash((self.source, self.task.fingerprint))

    def describe(self) -> str:
        """``N train / N val / N test, K classes, inputs SHAPE``: what a run prints."""
        return (
            f"{len(self.y_train)} train / {len(self.y_val)} val / {len(self.y_test)} test, "
            f"{self.task.n_classes} classes, inputs {self.task.input_shape}"
        )


class DataSource:
    """Base class of data-source plugins (built-in and third-party).

    A subclass handles one ``scheme`` of a recipe's ``data.source``. The host
    creates it with no arguments, so keep the constructor free of work; all
    input comes through the ``location`` (the part after ``scheme:``), the data
    spec and the recipe's folder.

    A source whose data depend on a random seed (generated data, such as
    ``glyphs:``) sets :attr:`uses_seed`; its ``load`` then also receives the
    recipe's seed as the keyword argument ``seed``, so the same recipe gives the
    same data.
    """

    #: The part before the colon in ``source:``, e.g. ``"sklearn"`` for ``sklearn:digits``.
    scheme: ClassVar[str] = ""
    #: One line, shown by ``graftune plugins``.
    description: ClassVar[str] = ""
    #: Whether :meth:`load` takes the keyword argument ``seed`` (an int in ``[0, 2**32)``).
    uses_seed: ClassVar[bool] = False

    def absolute_location(self, location: str, base_dir: Path) -> str:
        """The location made independent of the recipe's folder.

        A run directory keeps the resolved recipe; sources whose location is a
        relative path override this so that copy still finds the data. The
        default returns ``location`` unchanged.
        """
        return location

    def check(self, location: str, spec: Any, base_dir: Path) -> None:
        """Check cheaply, without loading all data, that ``load`` can succeed.

        Called by ``graftune validate`` and before every load. The default checks nothing.

        Args:
            location: The source string after ``scheme:``.
            spec: The recipe's data spec (``target``, ``split``, ``classes``, ``options`` ...).
            base_dir: The folder relative paths in ``location`` resolve against.

        Raises:
            DataError: With ``key`` set to the data spec key at fault.
        """

    def load(self, location: str, spec: Any, base_dir: Path) -> LabelledArrays:
        """Read every example with its label.

        A source with ``uses_seed = True`` also takes ``seed: int`` as a keyword
        argument.

        Args:
            location: The source string after ``scheme:``.
            spec: The recipe's data spec.
            base_dir: The folder relative paths in ``location`` resolve against.

        Returns:
            All examples; the host filters classes and splits them.

        Raises:
            DataError: With ``key`` set to the data spec key at fault.
        """
        raise NotImplementedError(f"{type(self).__qualname__} does not implement load()")


def split_source(source: str) -> tuple[str, str]:
    """Split a ``source:`` string into its scheme and location.

    Args:
        source: Like ``"csv:data/wine.csv"``.

    Returns:
        ``(scheme, location)``, like ``("csv", "data/wine.csv")``.

    Raises:
        DataError: If there is no ``scheme:`` prefix or no location (key ``source``).
    """
    text = str(source).strip()
    scheme, colon, location = text.partition(":")
    if colon and scheme != scheme.lower() and len(scheme) > 1 and _SCHEME_RE.match(scheme.lower()):
        raise DataError(
            f"data source {text!r}: schemes are lower case (did you mean "
            f"{scheme.lower() + ':' + location!r}?)",
            key="source",
        )
    if not colon or not _SCHEME_RE.match(scheme):
        hint = ""
        guessed = _SCHEME_BY_SUFFIX.get(Path(text).suffix.lower())
        if guessed is not None:
            hint = f" (did you mean {guessed + ':' + text!r}?)"
        elif text.endswith(("/", "\\")):
            hint = f" (did you mean {'images:' + text!r}?)"
        raise DataError(
            f"data source {text!r} needs a 'scheme:' prefix, like 'sklearn:digits', "
            f"'csv:data.csv' or 'images:photos/'{hint}",
            key="source",
        )
    location = location.strip()
    if not location:
        raise DataError(
            f"data source {text!r} names no location after {scheme + ':'!r}", key="source"
        )
    return scheme, location


def check_data_spec(
    spec: Any, sources: Registry, base_dir: Path, disabled: Sequence[str] = ()
) -> None:
    """Check a data spec without loading its data.

    Checks that the scheme is registered, that the split fractions, ``classes``
    and ``labels_per_class`` make sense on their own, and runs the source's own
    :meth:`DataSource.check`.

    Args:
        spec: The recipe's data spec.
        sources: The registry of data sources, keyed by scheme.
        base_dir: The folder relative paths resolve against (the recipe's folder).
        disabled: The plugins the recipe's ``plugins.disable`` blocks, named where the
            scheme is unknown.

    Raises:
        DataError: With ``key`` set to the data spec key at fault.
    """
    _check_spec_values(spec)
    scheme, location = split_source(spec.source)
    source = _make_source(scheme, sources, disabled)
    _call_source(source.check, scheme, location, spec, Path(base_dir), sources)


def prepare_dataset(spec: Any, sources: Registry, *, seed: int, base_dir: Path) -> Dataset:
    """Load a data spec's data and turn it into train, validation and test splits.

    Steps: check the spec, load through the source, keep the ``classes`` named
    (re-coded ``0 .. k-1`` in the source's order), split stratified into test
    and validation fractions of the whole, keep ``labels_per_class`` training
    examples per class, then compute the training statistics and the fingerprint.

    Args:
        spec: The recipe's data spec.
        sources: The registry of data sources, keyed by scheme.
        seed: Seeds the split and the few-shot subsample; the same seed gives the same
            dataset.
        base_dir: The folder relative paths resolve against (the recipe's folder).

    Returns:
        The dataset, with read-only arrays.

    Raises:
        DataError: With ``key`` set to the data spec key at fault.
    """
    base_dir = Path(base_dir)
    _check_spec_values(spec)
    scheme, location = split_source(spec.source)
    source = _make_source(scheme, sources)
    _call_source(source.check, scheme, location, spec, base_dir, sources)
    # sklearn and numpy take seeds in [0, 2**32); folding keeps any int usable.
    seed = int(seed) % 2**32
    seeded = {"seed": seed} if getattr(source, "uses_seed", False) else {}
    loaded = _call_source(source.load, scheme, location, spec, base_dir, sources, **seeded)
    x, y, class_names = _validated(loaded, scheme, sources)
    names = _names(loaded, len(y), scheme, sources)

    # The steps below choose rows, whose examples are taken from x once at the end:
    # the run records each split's rows (split.csv) beside its arrays.
    rows = np.arange(len(y))
    classes = getattr(spec, "classes", None)
    if classes is not None:
        rows, y, class_names = _split.select_classes(rows, y, class_names, classes)
    present = np.unique(y)
    if len(present) < 2:
        seen = f"only class {class_names[int(present[0])]!r}" if len(present) else "no examples"
        raise DataError(
            f"{spec.source}: the data has {seen}; a classifier needs examples of at least "
            "two classes to tell apart",
            key="source",
        )

    val, test = float(spec.split.val), float(spec.split.test)
    chosen = _split.stratified_split(rows, y, class_names, val=val, test=test, seed=seed)
    labels_per_class = getattr(spec, "labels_per_class", None)
    if labels_per_class is not None:
        chosen = _split.take_labels_per_class(chosen, class_names, int(labels_per_class), seed)
    parts = _split.Splits(
        x[chosen.x_train], chosen.y_train, x[chosen.x_val], chosen.y_val, x[chosen.x_test],
        chosen.y_test,
    )  # fmt: skip
    rows = Rows(chosen.x_train, chosen.x_val, chosen.x_test)
    return _dataset(parts, class_names, str(spec.source), rows=rows, names=names)


def _names(loaded: Any, n: int, scheme: str, sources: Registry) -> tuple[str, ...] | None:
    """A source's names of its examples, one string each, or ``None``."""
    names = getattr(loaded, "names", None)
    if names is None:
        return None
    try:
        # One string is no names; a set has no order to match the examples'.
        if isinstance(names, str | bytes | set | frozenset):
            raise TypeError
        listed = tuple(str(name) for name in names)
    except TypeError:
        listed = None
    if listed is None or len(listed) != n:
        raise DataError(
            f"data source {scheme!r} from {sources.owner(scheme)} returned names "
            f"{echoed(names, 60)}; expected a tuple of one string per example ({n})",
            key="source",
        )
    return listed


def _dataset(
    parts: _split.Splits,
    class_names: tuple[str, ...],
    source: str,
    *,
    rows: Rows | None = None,
    names: tuple[str, ...] | None = None,
) -> Dataset:
    """The dataset of these splits: read-only arrays, and the task they define (its
    statistics over the training split, its fingerprint over all six arrays)."""
    mean, var = _split.feature_stats(parts.x_train)
    task = TaskSpec(
        input_shape=tuple(int(d) for d in parts.x_train.shape[1:]),
        n_classes=len(class_names),
        class_names=class_names,
        feature_mean=_read_only(mean),
        feature_var=_read_only(var),
        fingerprint=_split.fingerprint(parts, class_names),
    )
    return Dataset(
        x_train=_read_only(parts.x_train),
        y_train=_read_only(parts.y_train),
        x_val=_read_only(parts.x_val),
        y_val=_read_only(parts.y_val),
        x_test=_read_only(parts.x_test),
        y_test=_read_only(parts.y_test),
        task=task,
        source=source,
        rows=None if rows is None else Rows(*map(_read_only, rows)),
        names=names,
    )


def without_examples(
    dataset: Dataset, others: Sequence[np.ndarray], *, seen_as: Dataset | None = None
) -> tuple[Dataset, int]:
    """``dataset`` without the training examples that are also in ``others`` (the
    same values, byte for byte), and how many it left out. ``seen_as``: the same
    examples, split alike, at the shape of ``others`` (the same source read at
    another ``image_size`` or ``channels``), compared in its stead.

    A ``pretrain:`` stage on the run's own source learned the run's test examples
    with their labels when the two split it apart differently (other ``classes``
    or fractions), and the test score was no held-out score (found by QA). Its
    validation and test splits only measure it and are kept. The statistics and
    fingerprint are those of what is left, so a base pretrained on less is
    another base.

    Raises:
        DataError: Every training example is one of ``others``.
    """
    x = dataset.x_train
    if seen_as is not None and np.array_equal(seen_as.y_train, dataset.y_train):
        x = seen_as.x_train  # row for row the same examples (their labels say so)
    others = [a for a in others if len(a) and a.shape[1:] == x.shape[1:] and a.dtype == x.dtype]
    if not others:
        return dataset, 0

    seen = {d for array in others for d in _digests(array)}
    keep = np.array([d not in seen for d in _digests(x)], dtype=bool)
    left_out = int((~keep).sum())
    if not left_out:
        return dataset, 0
    if not keep.any():
        raise DataError(
            f"{dataset.source}: every one of its {len(x)} training examples is one of the run's "
            "validation or test examples, which nothing may learn before they score it",
            key="source",
        )
    parts = _split.Splits(
        dataset.x_train[keep], dataset.y_train[keep], dataset.x_val, dataset.y_val, dataset.x_test,
        dataset.y_test,
    )  # fmt: skip
    rows = dataset.rows
    if rows is not None:
        rows = rows._replace(train=rows.train[keep])
    fewer = _dataset(
        parts, dataset.task.class_names, dataset.source, rows=rows, names=dataset.names
    )
    return fewer, left_out


def _digests(array: np.ndarray) -> list[bytes]:
    """A digest of each example's values, byte for byte."""
    import hashlib

    rows = np.ascontiguousarray(array).reshape(len(array), -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]


#: The share of validation and test examples copied from training ones that is said:
#: a stray duplicate (iris has one) changes no score worth a word.
COPIES_SAID = 0.05

#: The least standard deviation Keras' Normalization divides by (``keras.config.epsilon()``).
SMALLEST_STD = 1e-7


def data_notes(dataset: Dataset, features: Sequence[str] | None = None) -> list[str]:
    """What a run and ``validate --data`` say of data that trains, but not as it
    should: validation and test examples that are copies of training ones (their
    scores are not held out), features too small or too large in their unit for
    float32 standardisation (found by QA: such data trained with no word).

    Args:
        dataset: The prepared dataset.
        features: The feature names (a table's columns), else features are numbered.
    """
    notes = []
    held_out = len(dataset.x_val) + len(dataset.x_test)
    if held_out and len(dataset.x_train):
        seen = set(_digests(dataset.x_train))
        copies = sum(
            d in seen for array in (dataset.x_val, dataset.x_test) for d in _digests(array)
        )
        if copies >= 2 and copies >= COPIES_SAID * held_out:
            notes.append(
                f"{copies} of the {held_out} validation and test examples are copies of "
                "training examples (the same values): their scores are not held out; drop "
                "the duplicate rows or images for an honest test score"
            )
    var = np.asarray(dataset.task.feature_var, dtype=np.float64).reshape(-1)
    names = list(features) if features is not None and len(features) == len(var) else None

    def named(which: np.ndarray) -> str:
        picked = np.flatnonzero(which)
        said = [repr(names[i]) if names else str(i + 1) for i in picked[:5]]
        more = f" and {len(picked) - 5} more" if len(picked) > 5 else ""
        return ("feature(s) " if names else "feature(s) number ") + ", ".join(said) + more

    tiny = (var > 0) & (var < SMALLEST_STD**2)
    if tiny.any():
        notes.append(
            f"{named(tiny)} vary by less than {SMALLEST_STD:g} (a standard deviation over "
            f"the training split); standardising divides by {SMALLEST_STD:g} at least, so "
            "they reach the models hardly varying: give them in a larger unit (multiply them)"
        )
    huge = var >= np.finfo(np.float32).max
    if huge.any():
        largest = float(np.sqrt(np.finfo(np.float32).max))
        notes.append(
            f"{named(huge)} vary by more than {largest:.2g} (a standard deviation over the "
            f"training split), past what float32 holds squared; standardising divides them "
            f"by {largest:.2g} only, so they reach the models too large: give them in a "
            "smaller unit (divide them)"
        )
    return notes


def _check_spec_values(spec: Any) -> None:
    """Check the data spec keys whose meaning does not depend on the data."""
    _split.check_fractions(float(spec.split.val), float(spec.split.test))
    labels_per_class = getattr(spec, "labels_per_class", None)
    if labels_per_class is not None and int(labels_per_class) < 1:
        raise DataError(
            f"labels_per_class must be a positive number of training examples per class, "
            f"got {labels_per_class!r}",
            key="labels_per_class",
        )
    classes = getattr(spec, "classes", None)
    if classes is not None and len({str(c) for c in classes}) < 2:
        raise DataError(
            f"classes must name at least two classes to tell apart, got {list(classes)!r}",
            key="classes",
        )


def _make_source(scheme: str, sources: Registry, disabled: Sequence[str] = ()) -> DataSource:
    """Instantiate the source registered for ``scheme``, or name the known ones (and
    the plugins ``disabled`` by the recipe's ``plugins.disable``)."""
    if scheme not in sources:
        raise DataError(sources.unknown_message(scheme, disabled), key="source")
    item = sources.get(scheme)
    if not isinstance(item, type):
        return item
    try:
        return item()
    except PLUGIN_FAULTS as exc:  # an __init__ with parameters, or one that raises
        raise DataError(
            f"data source {scheme!r} from {sources.owner(scheme)} cannot be made with no "
            f"arguments, as graftune makes it: {raised(exc)}",
            key="source",
        ) from exc


def _call_source(
    method: Any,
    scheme: str,
    location: str,
    spec: Any,
    base_dir: Path,
    sources: Registry,
    **kwargs: Any,
) -> Any:
    """Call a source's ``check`` or ``load``, so any failure names the source."""
    try:
        return method(location, spec, base_dir, **kwargs)
    except GraftuneError:
        raise
    except PLUGIN_FAULTS as exc:
        # A plugin's own bug or an unexpected library error: keep the cause
        # chained (``--debug`` shows it) but say which plugin it came from.
        hint = ""
        if "seed" in kwargs and isinstance(exc, TypeError) and "'seed'" in str(exc):
            hint = " (its uses_seed = True has graftune pass load() a seed: int keyword argument)"
        raise DataError(
            f"data source {scheme!r} from {sources.owner(scheme)} failed on {location!r}: "
            f"{raised(exc)}{hint}",
            key="source",
        ) from exc


def _validated(
    loaded: Any, scheme: str, sources: Registry
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Check a source's result against the :class:`LabelledArrays` contract."""
    where = f"data source {scheme!r} from {sources.owner(scheme)}"
    if not isinstance(loaded, LabelledArrays):
        raise DataError(
            f"{where} returned {type(loaded).__name__}, expected LabelledArrays", key="source"
        )
    try:
        x = np.asarray(loaded.x)
        y = np.asarray(loaded.y)
    except (ValueError, TypeError) as exc:  # a list of arrays of different shapes
        raise DataError(
            f"{where} returned x or y that is not one array ({str(exc).rstrip('.')}); "
            "expected x of shape (n, ...), every example of one shape",
            key="source",
        ) from None
    names = loaded.class_names
    try:
        # "abc" is not ("a", "b", "c"); a set has no order for codes to index.
        if isinstance(names, str | bytes | set | frozenset):
            raise TypeError
        class_names = tuple(names)
    except TypeError:
        raise DataError(
            f"{where} returned class_names {echoed(names, 60)}; expected a tuple of one "
            "string per class",
            key="source",
        ) from None
    if x.dtype.kind not in "biuf":
        raise DataError(
            f"{where} returned x of dtype {x.dtype}; expected numbers (float32)", key="source"
        )
    if x.ndim < 2:
        raise DataError(f"{where} returned x of shape {x.shape}; expected (n, ...)", key="source")
    if 0 in x.shape[1:]:  # TensorFlow's oneDNN aborted the process on it
        raise DataError(
            f"{where} returned x of shape {x.shape}: examples with no values; expected "
            "(n, features) or (n, height, width, channels)",
            key="source",
        )
    if y.shape != (x.shape[0],):
        raise DataError(
            f"{where} returned y of shape {y.shape} for x of shape {x.shape}; expected "
            f"({x.shape[0]},)",
            key="source",
        )
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"{where} returned y of dtype {y.dtype}; expected integer class codes (int64, "
            "or another integer type)",
            key="source",
        )
    if not all(isinstance(name, str) for name in class_names):
        raise DataError(f"{where} returned class names that are not strings", key="source")
    if len(set(class_names)) != len(class_names):
        raise DataError(f"{where} returned duplicate class names {class_names}", key="source")
    if y.size and (y.min() < 0 or y.max() >= len(class_names)):
        raise DataError(
            f"{where} returned class codes {int(y.min())}..{int(y.max())} for "
            f"{len(class_names)} class names",
            key="source",
        )
    x = x.astype(np.float32, copy=False)
    if x.ndim >= 3 and x.size and not sources.is_builtin(scheme):
        # The contract: images in [0, 1], which a base's preprocessing scales from.
        # (A resize's overshoot is a little outside; the built-ins check their own.)
        top, bottom = float(np.nanmax(x)), float(np.nanmin(x))
        if top > 1.25 or bottom < -0.25:
            raise DataError(
                f"{where} returned images with values from {bottom:g} to {top:g}; a data "
                "source returns images scaled to [0, 1] (0..255 pixels divided by 255), "
                "which graftune's bases scale for themselves",
                key="source",
            )
    if not np.isfinite(x).all():
        rows, first, value = bad_examples(x, ~np.isfinite(x))
        raise DataError(
            f"{where} returned {len(rows)} example{'s' * (len(rows) != 1)} with NaN or inf "
            f"(missing or overflowed values), the first at index {first} ({value}); "
            "graftune takes no missing values: drop those examples or fill the values first",
            key="source",
        )
    return x, y.astype(np.int64, copy=False), class_names


def bad_examples(x: np.ndarray, bad: np.ndarray) -> tuple[np.ndarray, int, Any]:
    """The examples (first axis) of ``x`` where ``bad``, a mask of its shape, holds
    anywhere; the first of them, and its first bad value (as stored: a long double's
    1e400 is not made inf)."""
    flat = bad.reshape(len(bad), -1)
    rows = np.flatnonzero(flat.any(axis=1))
    first = int(rows[0])
    return rows, first, x.reshape(len(x), -1)[first, int(np.flatnonzero(flat[first])[0])]


def _read_only(array: np.ndarray) -> np.ndarray:
    """Return ``array`` contiguous and no longer writeable."""
    array = np.ascontiguousarray(array)
    array.flags.writeable = False
    return array
