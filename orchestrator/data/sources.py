"""The built-in data sources: ``sklearn:``, ``csv:``, ``parquet:``, ``npz:`` and ``images:``.

They register through the same hook a third-party plugin implements, and so
does ``glyphs:`` (in :mod:`orchestrator.data.glyphs`). Relative paths resolve
against the recipe's folder. None of the sources here takes ``options``; an
``image_size`` or ``channels`` is honoured wherever the data are images and
refused where they are a table.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import logging
import os
import re
import unicodedata
import warnings
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestrator.data import DataSource, LabelledArrays, bad_examples
from orchestrator.errors import DataError, did_you_mean, quoted
from orchestrator.markers import hookimpl
from orchestrator.paths import expand_user, not_a_file

if TYPE_CHECKING:
    import pandas as pd

    from orchestrator.registry import Registry

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
#: Image files of kinds not read: left out, but said to be.
UNREAD_IMAGE_SUFFIXES = frozenset({".jfif", ".heic", ".heif", ".avif", ".jxl"})

log = logging.getLogger(__name__)

# The grey level PIL's "L" mode gives an RGB pixel (ITU-R 601-2 luma).
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class _BuiltinSource(DataSource):
    """Checks every built-in source shares: no ``options``, sensible image settings."""

    #: Whether the location is a file or folder path (resolved against the recipe).
    location_is_path: bool = True

    def absolute_location(self, location: str, base_dir: Path) -> str:
        if not self.location_is_path:
            return location
        resolved = str(_resolve(location, base_dir))
        # Keep the trailing slash that marks a folder source such as ``images:dir/``.
        return resolved + "/" if location.endswith("/") else resolved

    def check(self, location: str, spec: Any, base_dir: Path) -> None:
        options = getattr(spec, "options", None) or {}
        if options:
            raise DataError(
                f"the {self.scheme!r} data source takes no options, got "
                f"{', '.join(repr(str(k)) for k in options)}",
                key="options",
            )
        if getattr(spec, "target", None) and self.scheme not in ("csv", "parquet"):
            raise DataError(
                f"the {self.scheme!r} data source has its own labels; target: applies to "
                "csv and parquet sources",
                key="target",
            )
        if ignored_columns(spec) and self.scheme not in ("csv", "parquet"):
            raise DataError(
                f"the {self.scheme!r} data source has no columns to leave out; ignore_columns: "
                "applies to csv and parquet sources",
                key="ignore_columns",
            )
        _image_settings(spec)


class SklearnSource(_BuiltinSource):
    """Small classification datasets bundled with scikit-learn (offline)."""

    location_is_path = False

    scheme = "sklearn"
    description = "scikit-learn's bundled datasets: digits (8x8 images), iris, wine, breast_cancer"

    #: Dataset name -> the ``sklearn.datasets`` loader.
    LOADERS = {
        "digits": "load_digits",
        "iris": "load_iris",
        "wine": "load_wine",
        "breast_cancer": "load_breast_cancer",
    }

    def check(self, location: str, spec: Any, base_dir: Path) -> None:
        super().check(location, spec, base_dir)
        if location not in self.LOADERS:
            raise DataError(
                f"unknown scikit-learn dataset {location!r}{did_you_mean(location, self.LOADERS)}"
                f"; available: {', '.join(sorted(self.LOADERS))}",
                key="source",
            )
        if location != "digits":
            _refuse_image_settings(spec, f"sklearn:{location}")

    #: The label column of scikit-learn's own frames (``load_wine(as_frame=True).frame``).
    TARGET = "target"

    @classmethod
    def class_names(cls, location: str) -> tuple[str, ...] | None:
        """A dataset's class names, in the order of its class codes (``None``: unknown)."""
        if location not in cls.LOADERS:
            return None
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, cls.LOADERS[location])()
        return tuple(str(name) for name in bunch.target_names)

    @classmethod
    def feature_names(cls, location: str) -> list[str] | None:
        """The feature columns of a table dataset, in its order (``None`` for digits,
        images, or a name that is none of these)."""
        if location == "digits" or location not in cls.LOADERS:
            return None
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, cls.LOADERS[location])()
        return [str(name) for name in bunch.feature_names]

    def load(self, location: str, spec: Any, base_dir: Path) -> LabelledArrays:
        self.check(location, spec, base_dir)
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, self.LOADERS[location])()
        y = np.asarray(bunch.target, dtype=np.int64)
        class_names = tuple(str(name) for name in bunch.target_names)
        if location == "digits":
            # Pixel values are counts 0..16 of a 4x4 block of the original bitmap.
            x = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[..., np.newaxis]
            x = _conform_images(x, spec)
        else:
            x = np.asarray(bunch.data, dtype=np.float32)
        return LabelledArrays(x=x, y=y, class_names=class_names)


class CsvSource(_BuiltinSource):
    """A CSV table: numeric feature columns and a label column (the spec's ``target``)."""

    scheme = "csv"
    description = "a CSV file of numeric feature columns and a label column (data.target)"

    def check(self, location: str, spec: Any, base_dir: Path) -> None:
        super().check(location, spec, base_dir)
        path = _existing_file(location, base_dir, "CSV file")
        _refuse_image_settings(spec, f"csv:{location}")
        _check_target(spec, table_columns("csv", path), path)

    def load(self, location: str, spec: Any, base_dir: Path) -> LabelledArrays:
        self.check(location, spec, base_dir)
        path = _resolve(location, base_dir)
        target, ignored = str(spec.target), ignored_columns(spec)
        frame = read_table("csv", path, target=target, ignore=ignored).drop(columns=ignored)
        labels = _csv_labels(path, target)
        return _table_arrays(
            frame, target, path, labels, read_as=csv_read_as(path, target, ignored)
        )


class ParquetSource(_BuiltinSource):
    """A Parquet table: numeric feature columns and a label column (the spec's ``target``)."""

    scheme = "parquet"
    description = "a Parquet file of numeric feature columns and a label column (data.target)"

    def check(self, location: str, spec: Any, base_dir: Path) -> None:
        super().check(location, spec, base_dir)
        path = _existing_file(location, base_dir, "Parquet file")
        _refuse_image_settings(spec, f"parquet:{location}")
        _check_target(spec, table_columns("parquet", path), path, "parquet")

    def load(self, location: str, spec: Any, base_dir: Path) -> LabelledArrays:
        self.check(location, spec, base_dir)
        path = _resolve(location, base_dir)
        frame = read_table("parquet", path)
        frame = frame.drop(columns=[c for c in ignored_columns(spec) if c in frame])
        return _table_arrays(frame, str(spec.target), path)


class NpzSource(_BuiltinSource):
    """A NumPy ``.npz`` archive with arrays ``x``, ``y`` and optionally ``class_names``."""

    scheme = "npz"
    description = "a NumPy .npz file with arrays x, y (codes or names) and optional class_names"

    def check(self, location: str, spec: Any, base_dir: Path) -> None:
        super().check(location, spec, base_dir)
        path = _existing_file(location, base_dir, "npz file")
        # Only the archive's directory is read here; arrays load lazily.
        with _open_npz(path) as archive:
            _check_npz_keys(archive.files, path)

    def load(self, location: str, spec: Any, base_dir: Path) -> LabelledArrays:
        self.check(location, spec, base_dir)
        path = _resolve(location, base_dir)
        try:
            with _open_npz(path) as archive:
                x = archive["x"]
                y = archive["y"]
                names = archive["class_names"] if "class_names" in archive.files else None
        except ValueError as exc:
            # Raised for object arrays, which would need pickle to load.
            raise DataError(
                f"cannot read {path} without pickle ({exc}); store x as numbers and y and "
                f"class_names as numbers or strings",
                key="source",
            ) from exc
        x = npz_inputs(x, spec, path, location)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.shape != (len(x),):
            raise DataError(
                f"array 'y' in {path} has shape {y.shape}; expected one label per row of "
                f"x, shape ({len(x)},)",
                key="source",
            )
        missing = npz_missing_labels(y, path)
        if missing.any():
            # Found by QA: a NaN label was a class 'nan' (and made the others '0.0',
            # '1.0'), an empty one a class '', where a table refuses a missing label.
            raise DataError(
                f"array 'y' in {path} has {int(missing.sum())} missing label(s) (NaN or "
                f"empty), the first at index {int(missing.argmax())}; graftune takes no "
                "missing labels: drop those examples, or give them their class",
                key="source",
            )
        codes, class_names = _npz_labels(y, names, path)
        return LabelledArrays(x=x, y=codes, class_names=class_names)


def npz_missing_labels(y: np.ndarray, path: Path) -> np.ndarray:
    """Where an npz ``y`` has no label: NaN (or inf) in numbers, an empty name in
    text (what a table's empty label cell is)."""
    y = _decoded_text(np.asarray(y), "y", path)
    if y.dtype.kind == "f":
        return ~np.isfinite(y)
    if y.dtype.kind == "U":
        return np.char.str_len(y) == 0
    return np.zeros(y.shape, dtype=bool)


def npz_label_names(y: np.ndarray, names: np.ndarray | None, path: Path) -> list[str | None]:
    """Each example's class name from an npz ``y`` (and its ``class_names``),
    ``None`` where it has none (:func:`npz_missing_labels`), for predict to score
    the others, as a table's empty label cells."""
    missing = npz_missing_labels(y, path)
    labels: list[str | None] = [None] * len(missing)
    if (~missing).any():
        codes, class_names = _npz_labels(y[~missing], names, path)
        for row, code in zip(np.flatnonzero(~missing), codes, strict=True):
            labels[row] = class_names[code]
    return labels


def npz_inputs(x: np.ndarray, spec: Any, path: Path, location: str) -> np.ndarray:
    """An npz archive's ``x`` as the models take it: float32 features ``(n, f)``, or
    images ``(n, h, w, c)`` in [0, 1] conformed to the spec's size and channels.

    ``(n, h, w)`` is grey images (as ``keras.datasets.mnist`` gives them);
    ``uint8`` and ``uint16`` images are scaled to [0, 1], as ``images:`` scales
    its files. Images of another dtype are not, and a warning says so when
    they hold values above 1.
    """
    if x.dtype.kind not in "biuf":
        raise DataError(f"array 'x' in {path} has dtype {x.dtype}; expected numbers", key="source")
    if x.ndim < 2 or x.ndim > 4:
        raise DataError(
            f"array 'x' in {path} has shape {x.shape}; expected one row per example, "
            f"(n, features), (n, height, width) or (n, height, width, channels)",
            key="source",
        )
    _refuse_unfit_values(x, path)
    if x.ndim == 2:
        _refuse_image_settings(spec, f"npz:{location} with x of shape {x.shape}")
        return x.astype(np.float32)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.shape[1] in (1, 3, 4) and x.shape[-1] > 4:
        # Found by QA: PyTorch's (n, 3, h, w) passed as images 3 pixels high.
        log.warning(
            "%s: array 'x' of shape %s looks channels-first (n, channels, height, width); "
            "graftune reads (n, height, width, channels): store np.moveaxis(x, 1, -1)",
            path,
            x.shape,
        )
    scale = {"uint8": 255.0, "uint16": 65535.0}.get(x.dtype.name)
    if scale is None and x.size:
        top = np.nanmax(x) if x.dtype.kind == "f" else x.max()
        bottom = np.nanmin(x) if x.dtype.kind == "f" else x.min()
        # A base takes [0, 1]: 0..255 as they are trains on the wrong scale. Values
        # well below 0 are standardised images (of a few units either side of 0), not
        # pixels; a little below 0 next to a large top is a resize's overshoot
        # (bicubic 0..255 gives about -37..289).
        if top > 1 and (bottom >= 0 or (top > 10 and bottom >= -0.25 * top)):
            log.warning(
                "%s: images in array 'x' of dtype %s hold values up to %s, left as they "
                "are (only uint8 and uint16 images are scaled to [0, 1]); store "
                "x.astype('uint8') for 0..255 to be scaled, or x / 255",
                path,
                x.dtype,
                top,
            )
    x = x.astype(np.float32)
    if scale is not None:
        x /= scale
    return _conform_images(x, spec)


def _refuse_unfit_values(x: np.ndarray, path: Path) -> None:
    """Refuse an npz archive's ``x`` holding NaN, infinities or numbers past float32's
    range, naming the file and the first example (found by QA: numpy's raw "overflow
    encountered in cast" warning, then an error naming no file under ``predict``).

    Raises:
        DataError: Some values are not finite, or too large for float32.
    """
    if x.dtype.kind != "f" or not x.size:
        return
    finite = np.isfinite(x)
    bad = ~finite | (finite & (np.abs(x) > np.finfo(np.float32).max))
    if not bad.any():
        return
    rows, first, value = bad_examples(x, bad)
    if np.isfinite(value):
        what = "numbers too large for float32 (past 3.4e38), which graftune trains in"
        do = "scale the values (or drop those examples) first"
    else:
        what = "NaN or inf (missing or overflowed values)"
        do = "graftune takes no missing values: drop those examples or fill the values first"
    raise DataError(
        f"array 'x' in {path} has {len(rows)} example{'s' * (len(rows) != 1)} with {what}, "
        f"the first at index {first} ({value!s}); {do}",  # (a long double's 1e400 as it is)
        key="source",
    )


class ImagesSource(_BuiltinSource):
    """A folder of images with one sub-folder per class."""

    scheme = "images"
    description = (
        "a folder with one sub-folder of images (png, jpg, bmp, gif, webp, tiff) per class"
    )

    def check(self, location: str, spec: Any, base_dir: Path) -> None:
        super().check(location, spec, base_dir)
        folders = _class_folders(_resolve(location, base_dir))
        named: dict[str, Path] = {}
        for folder in folders:
            name = unicodedata.normalize("NFC", folder.name)
            if name in named:
                # Found by QA: "returned duplicate class names", as if a plugin's fault.
                raise DataError(
                    f"class folders {named[name]} and {folder} have one name, written in two "
                    "Unicode forms (composed and decomposed, NFC and NFD): one class or two? "
                    "Merge them, or rename one",
                    key="source",
                )
            named[name] = folder
        classes = getattr(spec, "classes", None)
        kept = None if classes is None else {unicodedata.normalize("NFC", str(c)) for c in classes}
        for name, folder in named.items():
            if kept is not None and name not in kept:
                continue  # left out by data.classes (found by QA: an empty one was refused)
            # `validate` too (found by QA: it said ok), up to each folder's first image.
            if next(_walk_images(folder), None) is None:
                raise DataError(
                    f"class folder {folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                    + hidden_said(folder),
                    key="source",
                )

    def load(self, location: str, spec: Any, base_dir: Path) -> LabelledArrays:
        self.check(location, spec, base_dir)
        root = _resolve(location, base_dir)
        files: list[Path] = []
        labels: list[int] = []
        folders = _class_folders(root)
        found = {folder: _image_files(folder) for folder in folders}
        for code, folder in enumerate(folders):
            files += found[folder]
            labels += [code] * len(found[folder])
        _warn_left_out(root)
        _warn_one_level_up(root, found)

        x = read_images(files, root, spec)
        return LabelledArrays(
            x=x,
            y=np.asarray(labels, dtype=np.int64),
            # NFC: macOS names folders decomposed (cafe + U+0301), recipes are typed composed.
            class_names=tuple(unicodedata.normalize("NFC", folder.name) for folder in folders),
            names=tuple(file.relative_to(root).as_posix() for file in files),
        )


def read_images(files: list[Path], root: Path, spec: Any) -> np.ndarray:
    """Image files as ``(n, height, width, channels)`` floats in [0, 1], as ``images:``
    reads them: at the spec's ``image_size`` (else all of one size) and ``channels``."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        # Pillow warns of images of 89 to 179 megapixels in a raw Python warning (found
        # by QA); past that it refuses them, said with the file.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _read_images(files, root, spec)


def _read_images(files: list[Path], root: Path, spec: Any) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    size, channels = _image_settings(spec)
    mode = "L" if channels == 1 else "RGB"
    x: np.ndarray | None = None
    first: tuple[Path, tuple[int, int]] | None = None
    resized = size is not None
    if size is not None:
        # Before any file is read: one image resized to a mistyped image_size (100000)
        # took 20 GB and the process was killed, with no word (found by QA). Its
        # decoded copy (a byte a pixel) and its float copy come on top.
        _check_images_fit(len(files), size[0], size[1], 1 if mode == "L" else 3, working=5)
    above_one: list[tuple[Path, float]] = []
    for i, file in enumerate(files):
        if file.is_symlink() and not file.exists():
            # Found by QA: skipped without a word, where a damaged file is refused.
            raise DataError(
                f"image {file} is a link to {os.readlink(file)}, which does not exist; "
                "restore what it links to, or remove the link",
                key="source",
            )
        try:
            with Image.open(file) as opened:
                seen = _as_seen(opened)
                if seen.mode == "F":
                    # Float images hold 0..1 (found by QA: convert() truncated them to
                    # 0, all black); past 1 they are clipped, and said below.
                    top = float(seen.getextrema()[1])
                    if top > 1:
                        above_one.append((file, top))
                    seen = seen.point(lambda v: v * 255 + 0.5)  # convert() truncates
                image = seen.convert(mode)
                if first is None:
                    first = (file, (image.height, image.width))
                if not resized and (image.height, image.width) != first[1]:
                    raise DataError(
                        f"images of different sizes in {root}: {first[0]} is "
                        f"{first[1][0]}x{first[1][1]}, {file} is {image.height}x"
                        f"{image.width} (height x width); set data.image_size: "
                        "[height, width] to resize them all to one size",
                        key="image_size",
                    )
                if size is None:
                    size = first[1]
                if image.size != (size[1], size[0]):
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.float32)
        except Image.DecompressionBombError as exc:
            raise DataError(
                f"image {file} is too large to read safely ({exc}); shrink it, or move it out "
                "of the folder",
                key="source",
            ) from exc
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(
                f"cannot read image {file} ({type(exc).__name__}: {exc}): it is damaged or "
                "not an image; replace it, or move it out of the folder",
                key="source",
            ) from exc
        if x is None:
            x = _images_array(len(files), size[0], size[1], 1 if mode == "L" else 3)
        x[i] = pixels.reshape(x.shape[1:]) / 255.0
    if above_one:
        file, top = max(above_one, key=lambda found: found[1])
        log.warning(
            "%s: %d float image(s) hold values above 1, up to %s in %s, clipped to 1: "
            "graftune takes float images as 0..1; store them so, or as 8- or 16-bit images",
            root,
            len(above_one),
            f"{top:g}",
            file,
        )
    assert x is not None  # at least one file
    return x


def _as_seen(image: Any) -> Any:
    """An image file's pixels as a viewer shows them: turned upright by its EXIF
    orientation, 16-bit grey scaled down to 8 bits (``convert`` clips it at 255),
    and transparency over white (``convert`` drops it, and with it an image whose
    ink is only in its alpha channel)."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        return Image.fromarray(np.round(pixels / top * 255).clip(0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:  # some pixel is not opaque
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba)
        return rgba
    return image


@hookimpl
def graftune_register_data_sources(registry: Registry) -> None:
    """Register the built-in data sources."""
    # Imported here: glyphs.py uses this module's image-setting checks.
    from orchestrator.data.glyphs import GlyphsSource

    for cls in (SklearnSource, CsvSource, ParquetSource, NpzSource, ImagesSource, GlyphsSource):
        registry.add(cls)


def _resolve(location: str, base_dir: Path) -> Path:
    """Resolve a location against the recipe's folder unless it is absolute."""
    try:
        path = expand_user(location)
    except ValueError as exc:
        raise DataError(str(exc), key="source") from None
    if not path.is_absolute():
        path = Path(base_dir) / path
    return path.resolve()


def _existing_file(location: str, base_dir: Path, what: str) -> Path:
    """Resolve ``location`` and check it is a file, naming the resolved path if not."""
    path = _resolve(location, base_dir)
    if not path.is_file():
        raise DataError(f"{what} {path} {not_a_file(path)} (from {location!r})", key="source")
    return path


#: The name pandas gives a CSV's first column when its header cell is empty, as
#: ``DataFrame.to_csv`` leaves it above the row index it writes by default.
_CSV_INDEX = "Unnamed: 0"


#: Headers read, by file (its path, size, modification time and first MiB) and what.
_HEADERS: dict[tuple[str, int, int, str, str], list[str]] = {}


def _once_per_version(path: Path, what: str, read: Callable[[], list[str]]) -> list[str]:
    """``read()`` of ``path``'s header, once while the file stays as it is: a run and
    ``validate --data`` read a CSV's header ten times, and of a table of 20,000
    columns each read cost what the whole file's did (found by QA: 13.7 s against
    0.8 s). A file changed since (its size, time or first MiB) is read again."""
    try:
        stat = path.stat()
        with path.open("rb") as file:  # its start too: a rewrite within a clock tick
            start = hashlib.sha1(file.read(2**20)).hexdigest()
    except OSError:
        return read()  # said by the read, as it is
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, start, what)
    if key not in _HEADERS:
        if len(_HEADERS) >= 64:
            _HEADERS.clear()
        _HEADERS[key] = read()
    return list(_HEADERS[key])


def table_columns(scheme: str, path: Path) -> list[str]:
    """The data columns of a CSV or Parquet file, read from its header alone.

    A row index that pandas stored with the table (Parquet's index columns,
    a CSV's unnamed first column) is not data, here as in :func:`read_table`.
    """
    if scheme == "csv":
        return _once_per_version(path, "columns", lambda: _table_columns(scheme, path))
    return _table_columns(scheme, path)


def _table_columns(scheme: str, path: Path) -> list[str]:
    if scheme == "parquet":
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(path)
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise unreadable_table("parquet", path, exc) from exc
        index = _parquet_index(schema)
        _check_names_once([str(n) for n in schema.names], path)
        return [str(n) for n in schema.names if n not in index]
    import pandas as pd

    _refuse_a_zip(path)
    try:
        header = pd.read_csv(path, nrows=0, **_csv_format(path))
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        # pandas' EmptyDataError and ParserError are ValueErrors.
        raise unreadable_table("csv", path, exc) from exc
    names = _csv_header(path)
    _check_names_once(names, path)
    columns = [str(c) for c in header.columns][: len(_columns_named(names))]
    # One without a name past the first is no feature (read_table drops an empty one).
    columns = [c for i, c in enumerate(columns) if i == 0 or names[i].strip()]
    return columns[1:] if columns[:1] == [_CSV_INDEX] else columns


def _columns_named(names: list[str]) -> list[str]:
    """A CSV header's names less the empty ones at its end: a separator that ends
    every line (``a;b;label;``, as some spreadsheets export) makes no column."""
    end = len(names)
    while end and not names[end - 1].strip():
        end -= 1
    return names[:end]


def unreadable_table(scheme: str, path: Path, exc: BaseException) -> DataError:
    """The error for a table file that cannot be read, with what to do where the
    cause is a common one (found by QA: pandas' and the codec's words alone)."""
    kind = "CSV" if scheme == "csv" else "Parquet"
    said = f"cannot read {kind} file {path}: {str(exc).strip()}"
    head = _head(path)
    if head.startswith(_ZIP):
        said += "; it is a zip archive, as an Excel workbook (.xlsx) is: save it as CSV"
    elif head == _PARQUET and scheme == "csv":  # found by QA: told to save it as CSV UTF-8
        said += f"; it is a Parquet file: read it with parquet:{path}"
    elif scheme == "parquet" and head and head != _PARQUET and _is_text(path):
        said += f"; it is text, no Parquet file: a CSV is read with csv:{path}"
    elif head == b"":
        said = f"cannot read {kind} file {path}: the file is empty"
    elif isinstance(exc, UnicodeDecodeError):
        # The codec's "position 3" counts from the start of pandas' chunk, not the
        # file's (found by QA): say the line, and what the file is where that is known.
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
            found = "it is UTF-16 (its first bytes say so, as Excel's 'Unicode Text' writes)"
        else:
            found = _first_not_utf8(path)
        said = f"cannot read {kind} file {path}: {found}" if found else said
        said += "; graftune reads CSV files as UTF-8: save it as 'CSV UTF-8' (Excel's name)"
    return DataError(said, key="source")


def _first_not_utf8(path: Path) -> str | None:
    """Where a file's bytes stop being UTF-8: its line and the bytes there, as a
    Latin-1 or Windows-1252 file's ``é`` (``0xe9``) is."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 1
    done = 0
    try:
        with open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    # exc.start counts from the bytes the decoder kept from the last chunk.
                    kept = len(exc.object) - len(chunk)
                    at = max(exc.start - kept, 0)
                    lines += chunk[:at].count(b"\n")
                    bad = exc.object[exc.start : exc.end]
                    return (
                        f"line {lines} (byte {done + exc.start - kept + 1}) is not UTF-8: "
                        f"{' '.join(f'0x{b:02x}' for b in bad)} ({bad.decode('cp1252', 'replace')!r} "
                        "in Windows-1252, as Excel saves 'CSV')"
                    )
                lines += chunk.count(b"\n")
                done += len(chunk)
            decoder.decode(b"", final=True)
    except (OSError, UnicodeDecodeError):
        return None
    return None


#: The first bytes of a zip archive (an Excel workbook is one).
_ZIP = b"PK\x03\x04"
#: The first bytes of a Parquet file.
_PARQUET = b"PAR1"


def _is_text(path: Path) -> bool:
    """Whether a file's first KB decodes as UTF-8 with no NUL byte."""
    try:
        with open(path, "rb") as stream:
            start = stream.read(1024)
        start.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False  # a multi-byte character cut at 1 KB reads as binary: no hint
    return b"\0" not in start


def _head(path: Path) -> bytes:
    """A file's first four bytes (none where it cannot be read: pandas says why)."""
    try:
        with open(path, "rb") as stream:
            return stream.read(4)
    except OSError:
        return b""


def _refuse_a_zip(path: Path) -> None:
    """Refuse a "CSV" that is a zip archive (an Excel workbook saved as .csv):
    pandas reads its first line as a header or not, as its bytes fall."""
    if _head(path) in (_ZIP, _PARQUET):
        raise unreadable_table("csv", path, ValueError("it is no text"))


def _csv_header(path: Path) -> list[str]:
    """A CSV's header row as written: pandas renames a repeated name (``a``, ``a.1``)."""
    return _once_per_version(path, "header", lambda: _read_csv_header(path))


def _read_csv_header(path: Path) -> list[str]:
    import pandas as pd

    try:
        row = pd.read_csv(
            path, header=None, nrows=1, dtype=str, keep_default_na=False, **_csv_format(path)
        )
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise unreadable_table("csv", path, exc) from exc
    return [] if row.empty else [str(name) for name in row.iloc[0]]


def _check_names_once(names: list[str], path: Path) -> None:
    """Refuse a table that names two columns alike (unnamed ones aside): pandas
    reads the second as ``name.1``, a feature of its own that predict then wants.

    Raises:
        DataError: Naming the first such column and its places (1-based).
    """
    places: dict[str, list[int]] = {}
    for place, name in enumerate(names, 1):
        if name.strip():
            places.setdefault(name, []).append(place)
    repeated = next((name for name, at in places.items() if len(at) > 1), None)
    if repeated is not None:
        at = places[repeated]
        raise DataError(
            f"{path} names {len(at)} columns {repeated!r} (columns "
            f"{', '.join(map(str, at))}); give each column a name of its own",
            key="source",
        )


def read_table(
    scheme: str, path: Path, *, target: str | None = None, ignore: Collection[str] = ()
) -> pd.DataFrame:
    """A CSV or Parquet file's data columns (those of :func:`table_columns`).

    ``target`` and ``ignore``: a CSV's label column and the columns that are no
    features, which have no say in its decimal separator.
    """
    import pandas as pd

    try:
        if scheme == "parquet":
            frame = pd.read_parquet(path)  # its stored index becomes the frame's index
        else:
            _refuse_a_zip(path)
            with warnings.catch_warnings():
                # A large file whose column changes type partway (numbers, then text)
                # warned in pandas' words (found by QA); check_numeric says it in ours.
                warnings.simplefilter("ignore", pd.errors.DtypeWarning)
                frame = pd.read_csv(path, **_csv_format(path, target, ignore))
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise unreadable_table(scheme, path, exc) from exc
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise unreadable_table("parquet", path, exc) from exc
    names = _csv_header(path) if scheme == "csv" else [str(c) for c in frame.columns]
    _check_names_once(names, path)
    if scheme == "csv" and not isinstance(frame.index, pd.RangeIndex):
        # pandas reads a first data row longer than the header as one whose first
        # field is a row index: each value then under the next column's name.
        raise DataError(
            f"{path}: data row 1 has more fields than the header names columns "
            f"({len(names)}); name each column in the header, or remove the extra field",
            key="source",
        )
    frame.columns = [str(c) for c in frame.columns]
    named = len(_columns_named(names)) if scheme == "csv" else len(frame.columns)
    if named < len(frame.columns):  # a separator at each line's end, or data without a name
        frame = _without_unnamed(frame, range(named, len(frame.columns)), path)
    inside = [i for i in range(1, named) if not names[i].strip()] if scheme == "csv" else []
    if inside:  # an empty column between named ones (a spreadsheet's spacer) goes too
        frame = _without_unnamed(frame, inside, path)
    if scheme == "csv" and list(frame.columns[:1]) == [_CSV_INDEX]:
        log.warning(
            "%s: its first column has no name: read as the row index pandas writes "
            "(to_csv without index=False), not as a feature",
            path,
        )
        frame = frame.drop(columns=_CSV_INDEX)
    return frame.reset_index(drop=True)


def _without_unnamed(frame: pd.DataFrame, places: Collection[int], path: Path) -> pd.DataFrame:
    """``frame`` without its columns at ``places`` (0-based), which the header leaves
    without a name: empty ones (a separator at each line's end, a spacer column)
    go; one that holds data is refused, for a column without a name is no feature
    to match."""
    places = list(places)
    unnamed = frame.iloc[:, places]
    held = unnamed.notna().to_numpy()
    if held.any():
        columns, rows = held.T.nonzero()  # the first such column, and its first cell
        column, row = int(columns[0]), int(rows[0])
        raise DataError(
            f"{path}: column {places[column] + 1} has no name in the header but holds data "
            f"(data row {row + 1}: {_plain(unnamed.iat[row, column])!r}); name it in the header",
            key="source",
        )
    gone = set(places)  # by place: a named column may be called as pandas calls these
    return frame.iloc[:, [i for i in range(frame.shape[1]) if i not in gone]]


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds: 3.5, not np.float64(3.5)."""
    return value.item() if hasattr(value, "item") else value


def stored_index(scheme: str, path: Path) -> list[str]:
    """The named columns of the pandas index a Parquet file was written with
    (``df.set_index("id").to_parquet(...)``): no data columns, but an ID that
    ``ignore_columns`` may name for predict to copy; none for a CSV."""
    if scheme != "parquet":
        return []
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise unreadable_table("parquet", path, exc) from exc
    stored = [n for n in schema.names if n in _parquet_index(schema) and "__index_level_" not in n]
    # An index of consecutive integers (IDs 100, 101 ...) is stored as a range in
    # pandas' metadata, no column (found by QA: such IDs could not be named).
    metadata = schema.pandas_metadata or {}
    ranges = [
        str(c["name"])
        for c in metadata.get("index_columns", [])
        if isinstance(c, dict) and c.get("kind") == "range" and c.get("name") is not None
    ]
    return stored + [n for n in ranges if n not in stored and n not in schema.names]


def _parquet_index(schema: Any) -> set[str]:
    """The columns that hold the pandas index a Parquet file was written with."""
    metadata = schema.pandas_metadata or {}
    stored = {c for c in metadata.get("index_columns", []) if isinstance(c, str)}
    return stored | {n for n in schema.names if n.startswith("__index_level_")}


#: Data rows of a ``;`` or tab CSV whose numbers decide its decimal separator.
_DECIMAL_ROWS = 100
_DECIMAL_COMMA = re.compile(r"-?\d+,\d+")
_DECIMAL_POINT = re.compile(r"-?\d*\.\d+")


def _csv_format(
    path: Path, target: str | None = None, ignore: Collection[str] = ()
) -> dict[str, Any]:
    """How to read a CSV: ``sep=","``, or ``;`` or a tab (:func:`_separator`). With
    ``;`` or a tab, the decimal separator is the one more of the
    numbers in the first data rows have (``4,9`` against ``4.9``), those of the
    ``target`` column and the ``ignore`` columns aside; a point where none has either.

    Spaces after a separator are skipped (``a, b, label`` names ``label``).
    """
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as file:
            header = file.readline()
            lines = [header, *itertools.islice(file, _DECIMAL_ROWS)]
            sep = _separator(lines)
            if sep == ",":
                return {"sep": sep, "skipinitialspace": True}
            rows = csv.reader(lines, delimiter=sep, skipinitialspace=True)
            names = [name.strip() for name in next(rows)]
            commas = points = 0
            for row in rows:
                for name, cell in zip(names, row, strict=False):
                    if name != target and name not in ignore:
                        cell = cell.strip()
                        commas += bool(_DECIMAL_COMMA.fullmatch(cell))
                        points += bool(_DECIMAL_POINT.fullmatch(cell))
    except (OSError, csv.Error):
        return {"sep": ",", "skipinitialspace": True}  # pandas says what is wrong
    return {"sep": sep, "decimal": "," if commas > points else ".", "skipinitialspace": True}


def _separator(lines: list[str]) -> str:
    """A CSV's separator, from its first lines: ``,``, or ``;`` or a tab where its
    header has one. Where the header has a comma too, ``;`` or a tab is chosen
    only where it splits the lines into the header's columns, at least as many as
    the comma does: a ``;`` file whose header names a column ``Name, Vorname`` or
    ``Länge, cm``, as a German spreadsheet writes it, is no ``,`` file, nor is a
    tab-separated file with ``Länge, cm``. Between ``;`` and a tab, the one that
    splits them into more columns (a tab where they split alike)."""
    header = lines[0]
    others = [sep for sep in (";", "\t") if sep in header]
    if "," in header:
        commas = _columns(lines, ",")
        others = [sep for sep in others if 0 < _columns(lines, sep) >= commas]
    if len(others) > 1:
        return max(others, key=lambda sep: (_columns(lines, sep), sep == "\t"))
    return others[0] if others else ","


def _columns(lines: list[str], delimiter: str) -> int:
    """The columns ``delimiter`` splits a CSV's first lines into, where it splits
    nine in ten of them into as many as their header (0 where it does not). One
    line in ten may differ (a ragged line), and the last record read, which a
    quoted line break may have cut, has no say."""
    rows = [len(row) for row in csv.reader(lines, delimiter=delimiter) if row]
    header, rows = (rows[0], rows[1:-1] or rows[1:]) if rows else (0, [])
    even = sum(count == header for count in rows) >= 0.9 * len(rows)
    return header if even and header > 1 else 0


def _csv_labels(path: Path, target: str) -> Any:
    """A CSV's label column as the text it holds, without the spaces around it:
    ``007`` stays ``007`` and ``NA`` is a class (pandas reads them as 7 and as
    missing); whole numbers become integers."""
    return _typed_labels(_csv_label_text(path, target))


def _csv_label_text(path: Path, target: str) -> pd.Series:
    """A CSV's label column as text without the spaces around it (empty: no label)."""
    import pandas as pd

    try:
        labels = pd.read_csv(
            path, usecols=[target], dtype=str, keep_default_na=False, **_csv_format(path)
        )[target]
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise unreadable_table("csv", path, exc) from exc
    return labels.str.strip()


def _typed_labels(text: pd.Series) -> Any:
    """Label text as :func:`_csv_labels` gives it: whole numbers as integers, other
    numbers as floats unless one is written with a leading zero, else the text."""
    import pandas as pd

    if text.str.fullmatch(r"-?(0|[1-9][0-9]*)").all():
        return text.astype(np.int64).to_numpy()
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.notna().all() and not text.str.match(r"[-+]?0[0-9]").any():
        return numbers.to_numpy()  # 0.5, 2.5: sorted as numbers
    # Text, as a cell of it is no number or has a leading zero (007): a whole number
    # written 3.0 is still the class 3 (found by QA: "3" and "3.0" made two classes
    # where "03" was among them, and a predict's "7.0" matched no class 7).
    whole = text.str.fullmatch(r"-?(0|[1-9][0-9]*)\.0+")
    text = text.where(~whole, text.str.replace(r"\.0+$", "", regex=True))
    return text.to_numpy(dtype=object)  # "setosa " is "setosa", as " 7" is 7


def table_labels(scheme: str, path: Path, target: str) -> list[str | None]:
    """Each row's label in a CSV or Parquet table, named as its source names the
    classes, ``None`` where the cell is empty (for predict to score the others).

    Raises:
        DataError: The table cannot be read.
    """
    if scheme == "csv":
        text = _csv_label_text(path, target)
        present = (text != "").to_numpy()
        values = np.asarray(_typed_labels(text[present]))
    else:
        column = read_table(scheme, path)[target]
        present = column.notna().to_numpy()
        values = column[present].to_numpy()
    labels: list[str | None] = [None] * len(present)
    if present.any():
        codes, class_names = _encode_labels(values)
        for row, code in zip(np.flatnonzero(present), codes, strict=True):
            labels[row] = class_names[code]
    return labels


#: Column names that usually hold a table's labels (a guess said, never taken).
LABEL_LIKE_NAMES = frozenset({"target", "label", "labels", "class", "y"})


def _check_target(spec: Any, columns: list[str], path: Path, scheme: str = "csv") -> None:
    """Check the spec names a label column the table has, the columns it leaves
    out too (a Parquet file's stored index among them), and feature columns besides."""
    target = getattr(spec, "target", None)
    available = quoted(columns) or "none"
    if target is None:
        # No default: a table's label column is named (found by QA: a column named
        # 'target' was refused, and the message called the absent key a default).
        likely = [c for c in columns if c.strip().lower() in LABEL_LIKE_NAMES]
        guess = f"; perhaps target: {likely[0]}" if len(likely) == 1 else ""
        raise DataError(
            f"a table's label column has no default: name it with target: COLUMN; the "
            f"columns of {path}: {available}{guess}",
            key="target",
            unset=True,
        )
    if str(target) not in columns:
        raise DataError(
            f"target column {target!r}{did_you_mean(target, columns)} is not in {path}; its "
            f"columns: {available}",
            key="target",
        )
    ignored = ignored_columns(spec)
    index = stored_index(scheme, path) if ignored else []
    for name in ignored:
        if name == str(target):
            raise DataError(
                f"{name!r} is the target column: it holds the labels, which training needs",
                key="ignore_columns",
            )
        if name not in columns and name not in index:
            raise DataError(
                f"{name!r}{did_you_mean(name, columns)} is not a column of {path}; its "
                f"columns: {available}",
                key="ignore_columns",
            )
    ignored = [name for name in ignored if name in columns]  # a stored index is no column
    if len(columns) < 2 + len(ignored):
        if ignored:
            raise DataError(
                f"ignore_columns leaves no feature column: it names every column of {path} "
                f"but the target {str(target)!r}",
                key="ignore_columns",
            )
        raise DataError(f"{path} has no feature columns besides {target!r}", key="source")


def non_numeric_columns(
    frame: pd.DataFrame, features: list[str], read_as: tuple[str, str] | None = None
) -> str | None:
    """The feature columns of ``frame`` that are not numbers, said with the first
    cell that is text and how a ``;`` or tab CSV was read, or ``None`` if all are numbers.

    ``read_as``: the separator and decimal separator a ``;`` or tab CSV was read
    with (:func:`csv_read_as`), ``None`` for other files.
    """
    import pandas as pd

    def text_cells(column: pd.Series) -> pd.Series:
        as_read = column
        if read_as is not None and read_as[1] == ",":  # "3,5" is a number there
            # ... and "1.500" is not (found by QA: read so here, the column was said
            # non-numeric with no cell named).
            text = column.astype(str)
            as_read = text.str.replace(",", ".", regex=False).where(
                column.notna() & ~text.str.contains(".", regex=False)
            )
        return pd.to_numeric(as_read, errors="coerce").isna() & column.notna()

    # A column of numbers (or true/false) with an empty cell is read as objects: its
    # missing value is what is wrong, said with its row by check_no_missing.
    non_numeric = [
        c
        for c in features
        if not pd.api.types.is_numeric_dtype(frame[c])
        and (text_cells(frame[c]).any() or not frame[c].isna().any())
        and not _wide_integers(frame[c])
    ]
    if not non_numeric:
        return None
    column = frame[non_numeric[0]]
    text = text_cells(column)
    row = int(np.argmax(text.to_numpy())) if text.any() else None
    example = "" if row is None else f" (data row {row + 1}: {column.iloc[row]!r})"
    how = ""
    if read_as is not None:
        separated = "tab" if read_as[0] == "\t" else repr(read_as[0])
        how = (
            f" (read as {separated}-separated with decimal "
            f"{'commas' if read_as[1] == ',' else 'points'}, as most numbers in its "
            f"first {_DECIMAL_ROWS} rows are written)"
        )
    return f"{', '.join(repr(c) for c in non_numeric)}{example}{how}"


def _wide_integers(column: pd.Series) -> bool:
    """Whether a column holds whole numbers past 64 bits alone, which pandas keeps as
    Python objects (found by QA: "non-numeric", naming no cell); float32 takes them."""
    return len(column) > 0 and bool(column.map(lambda v: type(v) is int).all())


def csv_read_as(
    path: Path, target: str | None, ignore: Collection[str] = ()
) -> tuple[str, str] | None:
    """The separator and decimal separator a ``;`` or tab CSV is read with,
    ``None`` for a ``,`` CSV (whose decimal separator is a point)."""
    read = _csv_format(path, target, ignore)
    return (read["sep"], read["decimal"]) if "decimal" in read else None


def ignored_columns(spec: Any) -> list[str]:
    """The table columns a data spec leaves out of the features (``ignore_columns``)."""
    return [str(c) for c in getattr(spec, "ignore_columns", None) or ()]


#: What a run's non-numeric column is told; predict says its own option instead.
IGNORE_HINT = "name those that are no features (an ID, a name) in data.ignore_columns"


def _table_arrays(
    frame: pd.DataFrame,
    target: str,
    path: Path,
    labels: Any = None,
    read_as: tuple[str, str] | None = None,
) -> LabelledArrays:
    """Turn a table of numeric features and a label column into labelled arrays.

    ``labels``: the label column as read apart (:func:`_csv_labels`), else the frame's.
    ``read_as``: the separator and decimal separator a ``;`` or tab CSV was read
    with (said with its non-numeric columns), ``None`` for other files.
    """

    frame.columns = [str(c) for c in frame.columns]
    features = [c for c in frame.columns if c != target]
    refuse_no_rows(frame, path)
    non_numeric = non_numeric_columns(frame, features, read_as)
    if non_numeric:
        raise DataError(
            f"feature columns must be numeric; {path} has non-numeric column(s) "
            f"{non_numeric}; encode them as numbers, or drop them, or {IGNORE_HINT} (a "
            "missing value in a feature, written '?' or left empty, is refused either way: "
            "fill it, or drop its row)",
            key="source",
        )
    if labels is not None:
        frame = frame.assign(**{target: labels})
        empty = frame[target] == ""
        if empty.any():
            frame.loc[empty, target] = None  # an empty label is a missing one
    check_no_missing(frame, path)
    _check_not_a_quantity(frame[target], target, path)
    x = feature_matrix(frame, features, path)
    codes, class_names = _encode_labels(frame[target].to_numpy())
    return LabelledArrays(x=x, y=codes, class_names=class_names)


def check_no_missing(frame: pd.DataFrame, path: Path | str) -> None:
    """Refuse a table with a missing value, naming its columns and first row
    (numbered from 1, as the error messages of tables number their data rows)."""
    missing = frame.isna()
    if not missing.to_numpy().any():
        return
    rows = missing.any(axis=1).to_numpy()
    columns = [c for c in frame.columns if missing[c].any()]
    raise DataError(
        f"{path} has {int(rows.sum())} row(s) with missing values, in column(s) "
        f"{quoted(columns)}; the first is data row "
        f"{int(rows.argmax()) + 1}; graftune takes no missing values: drop those rows "
        "or fill the values first",
        key="source",
    )


#: A label column with more distinct numbers than this, and than half its rows,
#: some of them fractions, holds a quantity (regression), not classes.
QUANTITY_DISTINCT = 20


def refuse_no_rows(frame: pd.DataFrame, path: Path) -> None:
    """Refuse a table of a header alone: its columns then read as text, and "non-numeric
    columns" misled (found by QA, in training and again in predict)."""
    if frame.empty:
        raise DataError(f"{path} has a header but no rows", key="source")


def _check_not_a_quantity(labels: pd.Series, target: str, path: Path) -> None:
    """Refuse a label column that measures a quantity: graftune classifies, and each
    value became a class of one or two rows (said as a class too small to split)."""
    distinct = quantity_values(labels)
    if distinct is not None:
        raise DataError(
            f"the target column {target!r} of {path} holds {distinct} different numbers in "
            f"{len(labels)} rows, fractions among them: a quantity to predict (regression), "
            "and graftune classifies; give it a column of classes (bin the numbers into a "
            "few ranges, for example)",
            key="target",
        )


def quantity_values(labels: pd.Series) -> int | None:
    """How many different numbers a label column that measures a quantity holds (more
    than :data:`QUANTITY_DISTINCT`, in more than half its rows, fractions among
    them); ``None`` for a column of classes."""
    import pandas as pd

    numbers = pd.to_numeric(labels, errors="coerce")
    if numbers.isna().any() and not pd.api.types.is_numeric_dtype(labels):
        # Found by QA: a ';' file's "-0,014" (decimal commas) was read as text, and each
        # value a class too small to split.
        text = labels.astype(str).str.strip()
        if text.str.fullmatch(r"[-+]?[0-9]+(,[0-9]+)?").all():
            numbers = pd.to_numeric(text.str.replace(",", ".", regex=False), errors="coerce")
    if numbers.isna().any():
        return None  # text labels (or some): classes
    distinct = int(numbers.nunique())
    if distinct > QUANTITY_DISTINCT and distinct > len(numbers) / 2 and (numbers % 1 != 0).any():
        return distinct
    return None


def feature_matrix(frame: pd.DataFrame, features: list[str], path: Path) -> np.ndarray:
    """A table's numeric ``features`` as float32 rows, refusing infinite values and
    numbers past float32's range (which become infinite) with the first such row.

    Raises:
        DataError: Naming the rows' count, their columns and the first row.
    """
    with np.errstate(over="ignore"):  # a number past float32's range: said below
        x = frame[features].to_numpy(dtype=np.float32)
    infinite = ~np.isfinite(x)
    if infinite.any():
        columns = [c for c, bad in zip(features, infinite.any(axis=0), strict=True) if bad]
        first = int(np.argmax(infinite.any(axis=1)))
        raise DataError(
            f"{path} has {int(infinite.any(axis=1).sum())} row(s) with infinite values (or "
            f"numbers too large for float32), in column(s) {quoted(columns)}; "
            f"the first is data row {first + 1}",
            key="source",
        )
    _warn_rounded_away(frame, features, x, path)
    return x


#: A feature whose float32 rounding moves a value by more than this share of its
#: standard deviation has lost what told its rows apart.
ROUNDED_AWAY = 0.01


def _warn_rounded_away(frame: pd.DataFrame, features: list[str], x: np.ndarray, path: Path) -> None:
    """Warn of columns that float32, the models' numbers, rounds by much of their
    spread: values far from zero that vary little (found by QA: a timestamp column,
    1.7e9 plus a few seconds, became one value, and a run trained without it, saying
    nothing; the same column less its offset separated the classes)."""
    if not len(x):
        return
    exact = frame[features].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column of missing values alone
        spread = np.nanstd(exact, axis=0)
        moved = np.nanmax(np.abs(x.astype(np.float64) - exact), axis=0)
    for i, name in enumerate(features):
        column = frame[name].to_numpy()
        if column.dtype.kind in "iu" and np.abs(exact[:, i]).max() > 2**53:
            # Whole numbers past float64's own: measured exactly (found by QA: order
            # numbers 2**62 + n had no spread as float64, and one value as float32).
            whole = column.astype(object)
            apart = whole - min(whole)
            spread[i] = float(np.std(apart.astype(np.float64)))
            moved[i] = float(max(abs(whole - np.asarray([int(v) for v in x[:, i].tolist()]))))
    lost = np.flatnonzero((spread > 0) & (moved > ROUNDED_AWAY * spread))
    if not len(lost):
        return
    first = int(lost[0])
    size = float(np.nanmedian(np.abs(exact[:, first])))
    named = quoted([features[i] for i in lost[:5]]) + (
        f" and {len(lost) - 5} more" if len(lost) > 5 else ""
    )
    which = (
        f"column {named} loses what tells its"
        if len(lost) == 1
        else f"columns {named} lose what tells their"
    )
    where = "" if len(lost) == 1 else f"in {features[first]!r}, "
    log.warning(
        "%s: %s rows apart as float32, the models' numbers (%svalues near "
        "%.3g that vary by %.3g are rounded by up to %.3g: float32 keeps about 7 "
        "significant digits); subtract an offset in the file (such as the column's "
        "smallest value), or give it in another unit",
        path,
        which,
        where,
        size,
        float(spread[first]),
        float(moved[first]),
    )


def _encode_labels(values: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map labels to codes of their sorted distinct values, named as strings.

    Numbers sort numerically (so ``"2"`` comes before ``"10"``); integral floats,
    as pandas makes of integer columns in some files, are named like integers.
    """
    values = np.asarray(values)
    if values.dtype.kind in "biuf":
        if values.dtype.kind == "f" and np.all(np.mod(values, 1) == 0):
            values = values.astype(np.int64)
        distinct, codes = np.unique(values, return_inverse=True)
        # Named as the array's own numbers print: float32 0.1 is '0.1' (found by QA:
        # as a Python float, '0.10000000149011612', which classes: ['0.1'] missed).
        names = tuple(str(v) for v in distinct)
    else:
        # One spelling of a name however its accents are composed (found by QA:
        # "Barolò" typed once as "ò" and once as "o" and a combining accent made two
        # classes that look alike), as an image folder's names are.
        text = [unicodedata.normalize("NFC", str(v)) for v in values.reshape(-1).tolist()]
        distinct, codes = np.unique(np.asarray(text, dtype=str), return_inverse=True)
        names = tuple(str(v) for v in distinct.tolist())
    return codes.reshape(-1).astype(np.int64), names


def _open_npz(path: Path) -> Any:
    """Open an npz archive lazily, refusing pickled objects."""
    import zipfile

    try:
        if path.is_file() and not zipfile.is_zipfile(path):
            # numpy would try it as a pickle, and say it holds pickled data.
            raise DataError(
                f"cannot read npz file {path}: it is not an npz archive (the zip of arrays "
                "numpy.savez writes)",
                key="source",
            )
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read npz file {path}: {exc}", key="source") from exc


def _check_npz_keys(keys: list[str], path: Path) -> None:
    """Check an npz archive holds ``x`` and ``y``, naming what it holds if not."""
    missing = [k for k in ("x", "y") if k not in keys]
    if missing:
        found = ", ".join(repr(k) for k in keys) or "none"
        raise DataError(
            f"npz file {path} lacks array(s) {', '.join(repr(k) for k in missing)}; it has "
            f"{found}; expected 'x', 'y' and optionally 'class_names'",
            key="source",
        )


def _npz_labels(
    y: np.ndarray, names: np.ndarray | None, path: Path
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Codes and class names from an npz ``y`` and its optional ``class_names``."""
    y = _decoded_text(y, "y", path)
    names = None if names is None else _decoded_text(names, "class_names", path)
    if names is None:
        return _encode_labels(y)
    # Accents composed (NFC), as the labels of y and of a table are (found by QA:
    # 'Barolò' spelled both ways was two classes that print alike, or a label of
    # y "missing" from class_names that held it).
    class_names = tuple(unicodedata.normalize("NFC", str(n)) for n in names.reshape(-1).tolist())
    twice = sorted({n for n in class_names if class_names.count(n) > 1})
    if twice:
        raise DataError(
            f"array 'class_names' in {path} has duplicates: {quoted(twice[:5])} (names are "
            "compared with their accents composed, Unicode NFC)",
            key="source",
        )
    if y.dtype.kind in "US":
        index = {name: code for code, name in enumerate(class_names)}
        labels = np.asarray([unicodedata.normalize("NFC", v) for v in y.astype(str).tolist()])
        unknown = sorted(set(labels.tolist()) - index.keys())
        if unknown:
            raise DataError(
                f"array 'y' in {path} has label(s) {', '.join(repr(u) for u in unknown[:5])} "
                f"missing from 'class_names'",
                key="source",
            )
        return np.array([index[label] for label in labels], dtype=np.int64), class_names
    if y.dtype.kind in "biuf" and np.all(np.mod(y, 1) == 0):
        codes = y.astype(np.int64)
        if codes.size and (codes.min() < 0 or codes.max() >= len(class_names)):
            raise DataError(
                f"array 'y' in {path} has codes {codes.min()}..{codes.max()}, but "
                f"'class_names' names {len(class_names)} classes (codes 0..{len(class_names) - 1})",
                key="source",
            )
        return codes, class_names
    raise DataError(
        f"array 'y' in {path} has dtype {y.dtype}; expected integer codes or strings",
        key="source",
    )


def _decoded_text(array: np.ndarray, name: str, path: Path) -> np.ndarray:
    """Byte strings (dtype ``S``, as h5py and older pipelines store text) as text:
    they were class names like ``b'red'`` (found by QA)."""
    if array.dtype.kind != "S":
        return array
    try:
        return np.char.decode(array, "utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"array {name!r} in {path} holds byte strings that are not UTF-8 ({exc.reason} at "
            f"byte {exc.start}); store them as text",
            key="source",
        ) from None


def image_folder(root: Path) -> Path:
    """``root``, checked to be a folder (an ``images:`` source's)."""
    if not root.is_dir():
        state = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"image folder {root} {state}", key="source")
    return root


def _class_folders(root: Path) -> list[Path]:
    """The class sub-folders of an image folder, sorted by name; at least two."""
    image_folder(root)
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    if len(folders) < 2:
        loose = any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir())
        hint = "; put the images in one sub-folder per class" if loose else ""
        found = f"only class folder {folders[0].name!r}" if folders else "no class folders"
        raise DataError(
            f"image folder {root} has {found}; expected one sub-folder per class, at least "
            f"two{hint}",
            key="source",
        )
    return folders


def _image_files(folder: Path) -> list[Path]:
    """Image files anywhere under a class folder, in a stable order."""
    return sorted(_walk_images(folder))


def _walk_images(folder: Path) -> Iterator[Path]:
    # A link to nothing too, which read_images refuses (found by QA: skipped unsaid).
    return (
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and (p.is_file() or (p.is_symlink() and not p.exists()))
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def loose_images(root: Path) -> list[Path]:
    """The image files directly in an image folder, beside any class folders."""
    return sorted(
        p
        for p in root.iterdir()
        if not p.name.startswith(".") and p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _warn_left_out(root: Path) -> None:
    """Warn of the images a labelled ``images:`` folder leaves out: those beside its
    class folders (of no class) and those of kinds not read (``.heic`` ...)."""
    loose = loose_images(root)
    if loose:
        log.warning(
            "%s: %d image file(s) beside the class folders, such as %r, belong to no "
            "class and are left out; move them into a class folder",
            root,
            len(loose),
            loose[0].name,
        )
    unread, hidden = left_out_images(root)
    warn_unread(root, unread)
    warn_hidden(root, hidden)


def left_out_images(root: Path) -> tuple[list[Path], list[Path]]:
    """The image files under ``root`` left out, found in one walk: those of kinds
    graftune does not read (``.heic`` ...), and those in a hidden file or folder, whose
    name starts with ``.`` (``.ipynb_checkpoints`` holds copies, ``.git`` history).
    macOS's ``._NAME`` files beside the images are not counted: they are no images,
    whatever their ending."""
    unread: list[Path] = []
    hidden: list[Path] = []
    for p in root.rglob("*"):
        suffix = p.suffix.lower()
        if suffix not in UNREAD_IMAGE_SUFFIXES and suffix not in IMAGE_SUFFIXES:
            continue
        in_hidden = any(part.startswith(".") for part in p.relative_to(root).parts)
        if suffix in UNREAD_IMAGE_SUFFIXES:
            if not in_hidden and p.is_file():
                unread.append(p)
        elif in_hidden and not p.name.startswith("._") and p.is_file():
            hidden.append(p)  # (an image kind graftune reads)
    return sorted(unread), sorted(hidden)


def hidden_said(root: Path, hidden: list[Path] | None = None) -> str:
    """``"; it has N ... hidden ..."`` where ``root`` has hidden images (``hidden``, or
    found by :func:`left_out_images`), else ``""``: the end of an error that found no
    images in it (found by QA: a class folder with 8 images under .cache/ "has no
    images", with no word of them)."""
    if hidden is None:
        hidden = left_out_images(root)[1]
    if not hidden:
        return ""
    return (
        f"; it has {len(hidden)} in hidden files or folders (a name starting with '.'), "
        f"such as {str(hidden[0].relative_to(root))!r}, which are not read: rename them"
    )


def warn_hidden(root: Path, hidden: list[Path]) -> None:
    """Warn of the hidden images :func:`left_out_images` found (found by QA: left
    out in silence)."""
    if hidden:
        log.warning(
            "%s: %d image file(s) in hidden files or folders (a name starting with '.'), "
            "such as %r, are not read; rename them to read them",
            root,
            len(hidden),
            str(hidden[0].relative_to(root)),
        )


def _warn_one_level_up(root: Path, found: dict[Path, list[Path]]) -> None:
    """Warn where every class folder holds only the same sub-folders (``train/red``,
    ``test/red`` ...): the images of each are taken as the class of the folder
    above, and the classes learnt are ``train`` and ``test`` (found by QA).

    ``found``: each class folder's image files (:func:`_image_files`), not walked again.
    """
    # The sub-folders holding a class folder's images; none where it holds images itself.
    held = [
        {file.relative_to(folder).parts[0] for file in files}
        for folder, files in found.items()
        if all(file.parent != folder for file in files)
    ]
    if len(held) < len(found) or any(len(h) < 2 or h != held[0] for h in held):
        return
    folders = list(found)
    log.warning(
        "%s: each of its class folders (%s) holds the same sub-folders (%s), whose images "
        "are taken as the class of the folder above them; are the classes those "
        "sub-folders? Then give the source as images:%s, one of them",
        root,
        ", ".join(f.name for f in folders),
        ", ".join(sorted(held[0])),
        folders[0],
    )


def warn_unread(root: Path, unread: list[Path]) -> None:
    """Warn of the unread files :func:`left_out_images` found, which are left out."""
    if unread:
        log.warning("%s: %s, are left out; %s", root, *unread_text(root, unread))


def unread_text(root: Path, unread: list[Path]) -> tuple[str, str]:
    """The unread files :func:`left_out_images` found, and what to do with them, as said."""
    kinds = ", ".join(sorted({p.suffix.lower() for p in unread}))
    return (
        f"{len(unread)} image file(s) of a kind not read ({kinds}), such as "
        f"{str(unread[0].relative_to(root))!r}",
        f"convert them to one of {', '.join(sorted(IMAGE_SUFFIXES))}",
    )


def _image_settings(spec: Any) -> tuple[tuple[int, int] | None, int | None]:
    """The spec's ``image_size`` as ``(height, width)`` and ``channels``, checked."""
    size = getattr(spec, "image_size", None)
    channels = getattr(spec, "channels", None)
    if size is not None:
        size = tuple(size)
        if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
            raise DataError(
                f"image_size must be [height, width] in pixels, got {list(size)!r}",
                key="image_size",
            )
    if channels is not None and channels not in (1, 3):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}", key="channels")
    return size, channels  # type: ignore[return-value]


def _images_array(n: int, height: int, width: int, channels: int) -> np.ndarray:
    """An empty float32 array for ``n`` images, refused where it cannot fit in memory.

    An ``image_size`` of [100000, 100000] asked numpy for 65 TiB, and the
    MemoryError read as the data source's failure, at ``data.source``.

    Raises:
        DataError: The images would take more memory than the machine has free.
    """
    _check_images_fit(n, height, width, channels)
    return np.empty((n, height, width, channels), dtype=np.float32)


def _check_images_fit(n: int, height: int, width: int, channels: int, working: int = 0) -> None:
    """Refuse ``n`` images of this size where they cannot fit in the memory free, as
    float32, with ``working`` more of one image's size in bytes while they are made
    (a file's decoded and resized image and its float copy).

    Raises:
        DataError: The images would take more memory than the machine has free.
    """
    import psutil

    need = n * height * width * channels * 4
    free = psutil.virtual_memory().available
    more = working * height * width * channels
    if need + more > free:
        # The copies in the figure too (found by QA: 15.1 GiB "and 18.1 GiB free").
        making = f", with {more / 2**30:,.1f} GiB more while one is read," if more else ""
        raise DataError(
            f"{n} images of {height}x{width}x{channels} would take {need / 2**30:,.1f} GiB "
            f"as float32{making} and this machine has {free / 2**30:,.1f} GiB free: set a "
            "smaller image_size",
            key="image_size",
        )


NOT_IMAGES = "applies only to image data"


def _refuse_image_settings(spec: Any, what: str) -> None:
    """Reject image settings for tabular data, where they would be silently ignored."""
    for key in ("image_size", "channels"):
        if getattr(spec, key, None) is not None:
            raise DataError(
                f"{key} {NOT_IMAGES} (n, height, width, channels), not to {what}",
                key=key,
            )


def _conform_images(x: np.ndarray, spec: Any) -> np.ndarray:
    """Resize ``(n, h, w, c)`` images and convert channels as the spec asks."""
    size, channels = _image_settings(spec)
    if channels is not None and channels != x.shape[-1]:
        if x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        elif x.shape[-1] == 3:
            x = (x @ _LUMA)[..., np.newaxis]
        else:
            raise DataError(
                f"cannot convert images with {x.shape[-1]} channels to {channels}",
                key="channels",
            )
    if size is not None and tuple(x.shape[1:3]) != size:
        from PIL import Image

        height, width = size
        resized = _images_array(len(x), height, width, x.shape[-1])
        for i in range(len(x)):
            for c in range(x.shape[-1]):
                plane = Image.fromarray(np.ascontiguousarray(x[i, :, :, c]))
                plane = plane.resize((width, height), Image.Resampling.BILINEAR)
                resized[i, :, :, c] = np.asarray(plane)
        x = resized
    return x.astype(np.float32, copy=False)
