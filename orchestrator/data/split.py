"""Turn labelled arrays into seeded, stratified train/validation/test splits.

Also the steps around the split: keeping only some classes before it, the
few-shot subsample of the training split after it, the training statistics and
the fingerprint of the result.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from orchestrator.errors import DataError, did_you_mean, quoted, short_repr


class Splits(NamedTuple):
    """The six arrays of a split dataset."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def check_fractions(val: float, test: float) -> None:
    """Check the validation and test fractions of the whole dataset.

    Args:
        val: The validation fraction, in [0, 1).
        test: The test fraction, in [0, 1).

    Raises:
        DataError: If a fraction is out of range or they leave nothing to train on
            (key ``split``).
    """
    for name, value in (("val", val), ("test", test)):
        if not (0.0 <= value < 1.0):
            raise DataError(
                f"split {name} must be a fraction of the whole dataset in [0, 1), got {value}",
                key="split",
            )
    if val + test >= 1.0:
        raise DataError(
            f"split val + test must be below 1 to leave examples to train on, got "
            f"{val} + {test} = {val + test:g}",
            key="split",
        )


def select_classes(
    x: np.ndarray, y: np.ndarray, class_names: tuple[str, ...], wanted: Sequence[object]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Keep only the examples of some classes and re-code them ``0 .. k-1``.

    The kept classes stay in the source's order, not the order ``wanted`` lists
    them in, so that listing them differently does not change the class codes.

    Args:
        x: Features, one example per row.
        y: Class codes into ``class_names``.
        class_names: The source's class names.
        wanted: Class names to keep, compared as strings.

    Returns:
        ``(x, y, class_names)`` for the kept classes.

    Raises:
        DataError: If a wanted class is not among ``class_names`` (key ``classes``).
    """
    # Compared as the sources name classes, accents composed (NFC).
    wanted_names = list(dict.fromkeys(unicodedata.normalize("NFC", str(c)) for c in wanted))
    unknown = [name for name in wanted_names if name not in class_names]
    if unknown:
        first = unknown[0]
        raise DataError(
            f"unknown class {first!r}{did_you_mean(first, class_names)} in classes; the data "
            f"has {len(class_names)} classes: {quoted(class_names)}",
            key="classes",
        )
    wanted_set = set(wanted_names)
    kept_codes = [code for code, name in enumerate(class_names) if name in wanted_set]
    recode = np.full(len(class_names), -1, dtype=np.int64)
    recode[kept_codes] = np.arange(len(kept_codes))
    mask = recode[y] >= 0
    return x[mask], recode[y[mask]], tuple(class_names[c] for c in kept_codes)


def stratified_split(
    x: np.ndarray,
    y: np.ndarray,
    class_names: tuple[str, ...],
    *,
    val: float,
    test: float,
    seed: int,
) -> Splits:
    """Split into train, validation and test sets with every class in each.

    The test set is drawn from the whole, then the validation set from the rest,
    with the fraction scaled so both are fractions of the whole. A fraction of 0
    gives an empty split.

    Args:
        x: Features, one example per row.
        y: Class codes into ``class_names``.
        class_names: The class names, for messages.
        val: The validation fraction of the whole.
        test: The test fraction of the whole.
        seed: Seeds the shuffles, in [0, 2**32).

    Returns:
        The six arrays.

    Raises:
        DataError: If the fractions are invalid or a class is too small to appear in
            every split (key ``split``).
    """
    check_fractions(val, test)
    counts = np.bincount(y, minlength=len(class_names))
    fractions = {"train": 1.0 - val - test, "val": val, "test": test}
    used = {name: f for name, f in fractions.items() if f > 0}
    # Each non-empty split needs one example per class, and sklearn's stratified
    # split needs at least two per class; the fraction bound makes the expected
    # share of every split at least one example.
    tiniest = min(used, key=used.__getitem__)
    if 1.0 / used[tiniest] >= 2**53:  # no data holds that many of a class
        # Found by QA: 5e-324 ended in an internal OverflowError, 1e-300 was said in
        # 300 digits, and val 0.4999999999999999 with test 0.5 as "val 0.5 and test 0.5".
        what, fix = f"split {tiniest} {used[tiniest]!r}", f"make it 0 (no {tiniest} split)"
        if tiniest == "train":
            what = f"the train split, 1 - val {val!r} - test {test!r} = {used['train']:.3g},"
            fix = "lower val or test"
        raise DataError(
            f"{what} is too small for every class to get an example in it: {fix}, or give "
            "it a fraction that holds one",
            key="split",
        )
    needed = max(3, *(math.ceil(1.0 / f - 1e-9) for f in used.values()))
    small = [code for code, count in enumerate(counts) if count < needed]
    if small:
        first = small[0]
        which = f"class {short_repr(class_names[first])} has {counts[first]} example(s)"
        leave = ", leave the class out with 'classes', "
        if len(small) > 1:  # found by QA: one named of 300, left out one run at a time
            how_many = f"{len(small)} of {len(class_names)} classes have"
            leave = ", leave those classes out with 'classes', "
            if len(small) == len(class_names):
                how_many, leave = "every class has", " "
            which = (
                f"{how_many} fewer than {needed} examples (the first, "
                f"{short_repr(class_names[first])}, has {counts[first]})"
            )
        looks = ""
        if len(class_names) * 2 > len(y):  # an id or free text: a class per row, nearly
            looks = (
                f" (the data has {len(class_names)} classes for {len(y)} examples: is its "
                "target a column of labels, not of ids or text?)"
            )
        raise DataError(
            f"{which}; a stratified split with val {val!r} and test {test!r} needs at "
            f"least {needed} per class so that every split gets one; add examples{leave}"
            f"or change the fractions{looks}",
            key="split",
        )

    # The sizes sklearn's stratified draws take (each rounded up, the validation share
    # of what the test draw leaves): each split needs one example per class, and a
    # split short of that got sklearn's words (found by QA: 50 rows, 10 classes, val
    # 0.4 and test 0.4 left train 9).
    n = len(y)
    n_test = math.ceil(test * n) if test > 0 else 0
    n_val = math.ceil(val / (1.0 - test) * (n - n_test)) if val > 0 else 0
    sizes = {"train": n - n_test - n_val, "val": n_val, "test": n_test}
    k = int(np.count_nonzero(counts))
    for name in used:
        if sizes[name] < k:
            raise DataError(
                f"{n} examples of {k} classes, split with val {val:g} and test {test:g}, "
                f"leave the {name} split {max(sizes[name], 0)} example(s), fewer than one per "
                f"class (the val and test sizes are rounded up); add examples, or change the "
                f"fractions",
                key="split",
            )

    index = np.arange(n)
    try:
        rest, test_index = _draw(index, y, test, seed)
        train_index, val_index = _draw(rest, y[rest], val / (1.0 - test), seed)
    except ValueError as exc:
        raise DataError(f"cannot split the data stratified: {exc}", key="split") from exc

    parts = {"train": train_index, "val": val_index, "test": test_index}
    for name in used:
        present = np.bincount(y[parts[name]], minlength=len(class_names))
        missing = np.flatnonzero(present == 0)
        if missing.size:
            # Rare: sklearn's rounding of per-class shares can starve a class
            # at the minimum size when there are many such classes.
            code = int(missing[0])
            raise DataError(
                f"class {class_names[code]!r} ({counts[code]} examples) got no examples in the "
                f"{name} split with val {val:g} and test {test:g}; add examples, leave the "
                f"class out with 'classes', or change the fractions",
                key="split",
            )
    return Splits(
        x[train_index], y[train_index], x[val_index], y[val_index], x[test_index], y[test_index]
    )


def take_labels_per_class(
    parts: Splits, class_names: tuple[str, ...], labels_per_class: int, seed: int
) -> Splits:
    """Keep exactly ``labels_per_class`` training examples of each class.

    The kept examples are a seeded random choice, in their training-split order;
    validation and test splits are unchanged.

    Args:
        parts: The split dataset.
        class_names: The class names, for messages.
        labels_per_class: How many training examples to keep per class.
        seed: Seeds the choice, in [0, 2**32).

    Returns:
        The splits with the smaller training set.

    Raises:
        DataError: If a class has fewer training examples than asked (key
            ``labels_per_class``).
    """
    rng = np.random.default_rng(seed)
    y_train = parts.y_train
    keep = []
    for code, name in enumerate(class_names):
        members = np.flatnonzero(y_train == code)
        if len(members) < labels_per_class:
            raise DataError(
                f"class {name!r} has {len(members)} training example(s), fewer than "
                f"labels_per_class {labels_per_class}; lower labels_per_class or the val/test "
                f"fractions",
                key="labels_per_class",
            )
        keep.append(rng.choice(members, size=labels_per_class, replace=False))
    kept = np.sort(np.concatenate(keep))
    return parts._replace(x_train=parts.x_train[kept], y_train=y_train[kept])


def feature_stats(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the float32 per-feature mean and variance over the training split."""
    # Summing in float64 keeps large or many-pixel splits from losing precision.
    mean = x_train.mean(axis=0, dtype=np.float64)
    var = x_train.var(axis=0, dtype=np.float64)
    # A spread past float32's range (a standard deviation above ~1.8e19) is kept at its
    # largest finite value: an infinite variance zeroed the feature (found by QA).
    var = np.minimum(var, np.finfo(np.float32).max)
    return mean.astype(np.float32), var.astype(np.float32)


def fingerprint(parts: Splits, class_names: Sequence[str]) -> str:
    """Return a sha256 hex digest of the six arrays and the class names.

    Shapes and dtypes are hashed with the bytes, so arrays with the same bytes
    but a different layout differ.
    """
    digest = hashlib.sha256(b"graftune-dataset-v1\0")
    for name, array in zip(Splits._fields, parts, strict=True):
        array = np.ascontiguousarray(array)
        digest.update(f"{name}:{array.dtype.str}:{array.shape}\0".encode())
        digest.update(array.tobytes())
    for class_name in class_names:
        digest.update(f"class:{class_name}\0".encode())
    return digest.hexdigest()


def _draw(
    index: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``index`` in two, stratified, the second part ``fraction`` of it."""
    if fraction <= 0:
        return index, index[:0]
    from sklearn.model_selection import train_test_split

    kept, drawn = train_test_split(index, test_size=fraction, stratify=y, random_state=seed)
    return kept, drawn
