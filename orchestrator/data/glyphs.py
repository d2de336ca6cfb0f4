"""The ``glyphs:`` data source: characters rendered from the fonts matplotlib ships.

A large, labelled image set with no download, to pretrain a base on before
transferring it to real data (scikit-learn's handwritten digits, say). Every
image is one character from one of matplotlib's bundled TrueType fonts, drawn
bright on dark with a random font, stroke width, rotation, scale and shift,
all drawn from a generator seeded by the recipe's seed.

Rendering works at a finer resolution than asked and averages blocks of pixels
down, as the UCI digits behind ``sklearn:digits`` were made (32x32 bitmaps
counted in 4x4 blocks), so small images get soft, anti-aliased edges rather
than jagged ones.
"""

from __future__ import annotations

import logging
import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from orchestrator.data import DataSource, LabelledArrays
from orchestrator.errors import DataError, did_you_mean

log = logging.getLogger(__name__)

#: A share of blank images (no pixel above a tenth) past which a warning says so.
BLANK_SHARE = 0.05

if TYPE_CHECKING:
    from PIL import ImageFont

__all__ = [
    "CHARSETS",
    "DEFAULT_IMAGE_SIZE",
    "FONTS",
    "GlyphOptions",
    "GlyphsSource",
    "parse_charset",
    "parse_options",
    "render_glyphs",
]

#: Named character sets; a location joins them with ``+`` (``latin+digits``).
CHARSETS: dict[str, str] = {
    "latin": string.ascii_lowercase + string.ascii_uppercase,
    "lower": string.ascii_lowercase,
    "upper": string.ascii_uppercase,
    "digits": string.digits,
}

#: The fonts (file names without ``.ttf`` in matplotlib's ``mpl-data/fonts/ttf``)
#: that draw every Latin letter and digit as itself. Left out: the STIX size
#: and non-Unicode variants and DejaVu "Display" (no letters), cmex10 and cmsy10
#: (symbols at the letters' code points), cmmi10 (old-style digits) and
#: LastResort (a placeholder box for every character).
FONTS: tuple[str, ...] = (
    "DejaVuSans",
    "DejaVuSans-Bold",
    "DejaVuSans-Oblique",
    "DejaVuSans-BoldOblique",
    "DejaVuSansMono",
    "DejaVuSansMono-Bold",
    "DejaVuSansMono-Oblique",
    "DejaVuSansMono-BoldOblique",
    "DejaVuSerif",
    "DejaVuSerif-Bold",
    "DejaVuSerif-Italic",
    "DejaVuSerif-BoldItalic",
    "STIXGeneral",
    "STIXGeneralBol",
    "STIXGeneralItalic",
    "STIXGeneralBolIta",
    "cmr10",
    "cmb10",
    "cmss10",
    "cmtt10",
    "cmti10",
)

# The bold faces among FONTS, and the share of the drawn extra stroke they get.
_BOLD_FONTS = frozenset(name for name in FONTS if "Bol" in name or name == "cmb10")
_BOLD_STROKE = 0.5

#: ``(height, width)`` when the data spec gives no ``image_size``: that of
#: ``sklearn:digits``, so a base pretrained on glyphs fits it without resizing.
DEFAULT_IMAGE_SIZE: tuple[int, int] = (8, 8)

# The fraction of the image height the tallest-to-lowest extent of the character
# set takes in each font before the random scale: room for shifts and rotation.
_FILL = 0.8
# Render at least this many pixels on the short side before averaging down, and
# average at most this many pixels per output pixel along each side.
_MIN_RENDER = 64
_MAX_FACTOR = 8
# Fonts are measured at this size to choose the size they are drawn at.
_PROBE_SIZE = 200
# GlyphsSource.load keeps its last few results up to this size, oldest dropped first.
_RECENT_MAX_ENTRIES = 4
_RECENT_MAX_BYTES = 64 * 2**20
_recent: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}


@dataclass(frozen=True)
class GlyphOptions:
    """The ``options:`` of a ``glyphs:`` data spec, checked, with defaults filled in.

    Attributes:
        per_class: Images rendered per character.
        fonts: Font names from :data:`FONTS`, each drawn equally often.
        max_rotation: Rotation drawn uniformly from ``±max_rotation`` degrees.
        max_shift: Shift drawn uniformly from ``±max_shift`` of the width and of the
            height, independently.
        scale: ``(low, high)``: the size factor, drawn uniformly from this range.
        stroke: ``(low, high)``: extra stroke width as a fraction of the image height,
            drawn uniformly from this range and added to every side of every stroke
            (thickens the glyph; rounded to whole pixels of the finer rendering).
            Bold faces get half the drawn width.
    """

    per_class: int = 100
    fonts: tuple[str, ...] = FONTS
    max_rotation: float = 12.0
    max_shift: float = 0.08
    scale: tuple[float, float] = (0.85, 1.15)
    stroke: tuple[float, float] = (0.01, 0.06)


_OPTION_NAMES = tuple(GlyphOptions.__dataclass_fields__)


def parse_charset(location: str) -> str:
    """The characters a ``glyphs:`` location names, in class-code order.

    Args:
        location: Named sets joined with ``+``, like ``latin`` or ``lower+digits``.

    Returns:
        The distinct characters, in the order the sets list them.

    Raises:
        DataError: For an unknown set name (key ``source``).
    """
    chars: dict[str, None] = {}
    for part in location.split("+"):
        name = part.strip()
        if name not in CHARSETS:
            raise DataError(
                f"unknown glyphs character set {name!r}{did_you_mean(name, CHARSETS)} in "
                f"'glyphs:{location}'; available: {', '.join(CHARSETS)}, joined with '+' "
                f"(like 'glyphs:latin+digits')",
                key="source",
            )
        chars.update(dict.fromkeys(CHARSETS[name]))
    return "".join(chars)


def parse_options(raw: Mapping[str, Any] | None) -> GlyphOptions:
    """Check a ``glyphs:`` data spec's ``options`` and fill in the defaults.

    Args:
        raw: The recipe's ``options`` mapping (may be empty or None).

    Returns:
        The checked options.

    Raises:
        DataError: For an unknown option or a value out of range (key ``options``).
    """
    raw = dict(raw or {})
    for key in raw:
        if key not in _OPTION_NAMES:
            raise DataError(
                f"unknown glyphs option {key!r}{did_you_mean(key, _OPTION_NAMES)}; "
                f"expected some of: {', '.join(_OPTION_NAMES)}",
                key=f"options.{key}" if isinstance(key, str) and "." not in key else "options",
            )
    defaults = GlyphOptions()
    per_class = raw.get("per_class", defaults.per_class)
    if not _is_int(per_class) or per_class < 1:
        raise _option_error("per_class", per_class, "a positive number of images per character")
    return GlyphOptions(
        per_class=int(per_class),
        fonts=_parse_fonts(raw.get("fonts", defaults.fonts)),
        max_rotation=_number(
            raw, "max_rotation", defaults.max_rotation, 0.0, 180.0, "degrees in [0, 180]"
        ),
        max_shift=_number(
            raw, "max_shift", defaults.max_shift, 0.0, 0.5, "a fraction of the image in [0, 0.5]"
        ),
        scale=_parse_range(
            "scale",
            raw.get("scale", defaults.scale),
            "[low, high], size factors with 0 < low <= high <= 4, like [0.85, 1.15]",
            low_open=True,
            high=4.0,
        ),
        stroke=_parse_range(
            "stroke",
            raw.get("stroke", defaults.stroke),
            "[low, high], fractions of the image height with 0 <= low <= high <= 0.2, "
            "like [0.01, 0.06]",
            low_open=False,
            high=0.2,
        ),
    )


def render_glyphs(
    chars: str,
    *,
    size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    channels: int = 1,
    options: GlyphOptions | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``options.per_class`` randomly varied images of every character.

    Each character keeps its font's proportions: in each font, the extent from the
    highest top to the lowest bottom among ``chars`` fills a fixed fraction of the
    height, so lower-case letters come out smaller than capitals and descenders
    reach lower. Each glyph is centred horizontally on its ink (and shrunk to fit
    the width if it is wider than it), then drawn with a random font, stroke,
    rotation, scale and shift.

    Args:
        chars: The characters; the code of ``chars[i]`` is ``i``.
        size: ``(height, width)`` of the images.
        channels: 1 for grey; 3 repeats the grey image in red, green and blue.
        options: The variations; :class:`GlyphOptions` defaults if None.
        seed: Seeds every random choice; the same seed gives the same arrays.

    Returns:
        ``(x, y)``: float32 images ``(n, height, width, channels)`` in [0, 1], ink
        bright on black, ordered by character; int64 codes ``(n,)``.
    """
    from PIL import Image

    options = options or GlyphOptions()
    height, width = size
    factor = min(_MAX_FACTOR, max(1, math.ceil(_MIN_RENDER / min(height, width))))
    canvas = (width * factor, height * factor)
    n_fonts = len(options.fonts)
    per_class = options.per_class
    n = len(chars) * per_class

    # Every random draw up front, in a fixed order, so the images depend only on
    # the seed and the options, not on the order things are rendered or cached in.
    rng = np.random.default_rng(int(seed) % 2**32)
    font_of = rng.integers(0, n_fonts, size=n)
    stroke_px = rng.uniform(options.stroke[0], options.stroke[1], size=n) * canvas[1]
    # Bold faces start thick; the full extra stroke would close their counters.
    bold = np.array([name in _BOLD_FONTS for name in options.fonts])
    stroke_of = np.rint(np.where(bold[font_of], _BOLD_STROKE, 1.0) * stroke_px).astype(np.int64)
    angle = np.deg2rad(rng.uniform(-options.max_rotation, options.max_rotation, size=n))
    scale = rng.uniform(options.scale[0], options.scale[1], size=n)
    shift_x = rng.uniform(-options.max_shift, options.max_shift, size=n) * canvas[0]
    shift_y = rng.uniform(-options.max_shift, options.max_shift, size=n) * canvas[1]

    layouts = [_FontLayout.make(name, chars, canvas) for name in options.fonts]
    glyphs: dict[tuple[int, int, int], tuple[Image.Image, float]] = {}
    rendered = np.empty((n, canvas[1], canvas[0]), dtype=np.uint8)
    centre_x, centre_y = canvas[0] / 2.0, canvas[1] / 2.0
    for i in range(n):
        key = (int(font_of[i]), i // per_class, int(stroke_of[i]))
        if key not in glyphs:
            glyphs[key] = layouts[key[0]].draw(chars[key[1]], key[2])
        glyph, fit = glyphs[key]
        # Image.transform maps each output pixel back to the glyph image: undo the
        # shift, then the rotation and scale about the centre.
        s = scale[i] * fit
        cos, sin = math.cos(angle[i]) / s, math.sin(angle[i]) / s
        out_x, out_y = centre_x + shift_x[i], centre_y + shift_y[i]
        matrix = (
            cos,
            sin,
            centre_x - cos * out_x - sin * out_y,
            -sin,
            cos,
            centre_y + sin * out_x - cos * out_y,
        )
        moved = glyph.transform(canvas, Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR)
        rendered[i] = np.asarray(moved)

    # Average factor x factor blocks: the box filter the UCI digits were made with.
    blocks = rendered.reshape(n, height, factor, width, factor)
    x = blocks.mean(axis=(2, 4), dtype=np.float32) / np.float32(255.0)
    x = np.repeat(x[..., np.newaxis], channels, axis=-1)
    y = np.repeat(np.arange(len(chars), dtype=np.int64), per_class)
    return x, y


class GlyphsSource(DataSource):
    """Characters rendered from matplotlib's fonts with random variations (offline).

    Recipe usage: ``source: glyphs:SETS`` where ``SETS`` is ``latin`` (a-z and
    A-Z, 52 classes), ``lower``, ``upper`` or ``digits`` (0-9), or several joined
    with ``+`` (``latin+digits``: 62 classes). Class names are the characters
    themselves, coded in that order. ``image_size`` defaults to 8x8, the size of
    ``sklearn:digits``; ask for 16x16 or more for legible letters. ``channels``
    is 1 (default) or 3 (the grey image repeated). ``options`` (all optional):

    - ``per_class``: images per character (default 100);
    - ``fonts``: names from :data:`FONTS` (default: all 21 of them);
    - ``max_rotation``: degrees, each image rotated by up to ± this (default 12);
    - ``max_shift``: fraction of the image, shifted by up to ± this along each
      axis (default 0.08);
    - ``scale``: ``[low, high]`` size factor (default ``[0.85, 1.15]``);
    - ``stroke``: ``[low, high]`` extra stroke width as a fraction of the height,
      added to every side of every stroke, halved for bold faces (default
      ``[0.01, 0.06]``, which gives about as much ink as
      ``sklearn:digits`` at 8x8).

    Images are float32 in [0, 1] with the ink bright on black, as in
    ``sklearn:digits``. They are a function of the recipe's seed and these
    settings: the same seed gives identical arrays, another seed other images.
    """

    scheme = "glyphs"
    description = (
        "letters and digits rendered from matplotlib's fonts with random variations (offline)"
    )
    uses_seed: ClassVar[bool] = True

    def check(self, location: str, spec: Any, base_dir: Path) -> None:
        from orchestrator.data.sources import _image_settings

        if getattr(spec, "target", None):
            raise DataError(
                "the 'glyphs' data source has its own labels; target: applies to csv and "
                "parquet sources",
                key="target",
            )
        if getattr(spec, "ignore_columns", None):
            raise DataError(
                "the 'glyphs' data source has no columns to leave out; ignore_columns: applies "
                "to csv and parquet sources",
                key="ignore_columns",
            )
        _image_settings(spec)
        chars = parse_charset(location)
        parse_options(getattr(spec, "options", None))
        for wanted in getattr(spec, "classes", None) or ():
            name = str(wanted)
            if name not in chars:
                raise DataError(
                    f"unknown class {name!r}{did_you_mean(name, chars)} in classes; "
                    f"'glyphs:{location}' has the classes {' '.join(chars)}",
                    key="classes",
                )

    def load(self, location: str, spec: Any, base_dir: Path, *, seed: int = 0) -> LabelledArrays:
        from orchestrator.data.sources import _image_settings

        self.check(location, spec, base_dir)
        size, channels = _image_settings(spec)
        chars = parse_charset(location)
        key = (
            chars,
            tuple(size or DEFAULT_IMAGE_SIZE),
            channels or 1,
            parse_options(getattr(spec, "options", None)),
            int(seed) % 2**32,
        )
        # A run prepares the same data more than once (for the base's cache key,
        # then to train it), so the last few results are kept, read-only.
        found = _recent.get(key)
        if found is None:
            _check_it_fits_in_memory(len(chars), key[1], key[2], key[3].per_class)
            found = _render_read_only(*key)
            _warn_blank(found[0], key[3], key[1])
            if found[0].nbytes <= _RECENT_MAX_BYTES:
                _recent[key] = found
                while len(_recent) > _RECENT_MAX_ENTRIES:
                    del _recent[next(iter(_recent))]
        return LabelledArrays(x=found[0], y=found[1], class_names=tuple(chars))


def _warn_blank(x: np.ndarray, options: GlyphOptions, size: tuple[int, int]) -> None:
    """Warn where many glyphs render blank (found by QA: ``scale: 0.05`` at 8x8 drew
    no character at all, and the data trained at chance, said only as duplicates)."""
    if not len(x):
        return
    blank = int((x.reshape(len(x), -1).max(axis=1) < 0.1).sum())
    if blank > BLANK_SHARE * len(x):
        log.warning(
            "glyphs: %d of the %d images rendered are blank (no pixel above 0.1): at %dx%d "
            "the characters options.scale %s draws are too small to show; raise its low end",
            blank,
            len(x),
            size[0],
            size[1],
            list(options.scale),
        )


#: How many times the rendered images' size a run may hold at once (the split,
#: a standardised copy, the batches): what must fit in the machine's memory.
_MEMORY_HEADROOM = 3


def _check_it_fits_in_memory(
    n_chars: int, size: tuple[int, int], channels: int, per_class: int
) -> None:
    """Refuse, before rendering, images that could not fit in this machine's memory.

    Raises:
        DataError: At ``options`` (``per_class``), with the sizes.
    """
    import psutil

    height, width = size
    each = height * width * channels * 4 + 64  # an image, and its draws
    needed = n_chars * per_class * each
    total = psutil.virtual_memory().total
    if needed * _MEMORY_HEADROOM > total:
        # Found by QA: said at options, "lower options.per_class", where it was 1.
        too_large = n_chars * each * _MEMORY_HEADROOM > total
        raise DataError(
            f"{per_class} image{'s' if per_class != 1 else ''} per character x {n_chars} "
            f"characters at {height}x{width}x{channels} would take {needed / 2**30:.1f} GiB in "
            f"memory, and a run holds a few copies; this machine has {total / 2**30:.1f} GiB: "
            + ("give a smaller image_size" if too_large else "lower options.per_class"),
            key="image_size" if too_large else "options.per_class",
        )


def _render_read_only(
    chars: str, size: tuple[int, int], channels: int, options: GlyphOptions, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render_glyphs`, with the arrays made read-only so they can be shared."""
    x, y = render_glyphs(chars, size=size, channels=channels, options=options, seed=seed)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


@dataclass(frozen=True)
class _FontLayout:
    """One font sized and placed for one character set on one canvas."""

    font_path: str
    font_size: int
    canvas: tuple[int, int]
    baseline_y: float

    @classmethod
    def make(cls, name: str, chars: str, canvas: tuple[int, int]) -> _FontLayout:
        """Size the font so the set's vertical extent fills ``_FILL`` of the height."""
        path = _font_file(name)
        probe = _font(path, _PROBE_SIZE)
        top, bottom = _vertical_extent(probe, chars)
        font_size = max(1, round(_PROBE_SIZE * _FILL * canvas[1] / (bottom - top)))
        # Measure again at the size drawn, since hinting does not scale exactly.
        top, bottom = _vertical_extent(_font(path, font_size), chars)
        return cls(path, font_size, canvas, canvas[1] / 2.0 - (top + bottom) / 2.0)

    def draw(self, char: str, stroke: int) -> tuple[Any, float]:
        """The glyph drawn on the canvas, and the factor that fits it in the width."""
        from PIL import Image, ImageDraw

        font = _font(self.font_path, self.font_size)
        left, _, right, _ = font.getbbox(char, anchor="ls", stroke_width=stroke)
        image = Image.new("L", self.canvas, 0)
        x = self.canvas[0] / 2.0 - (left + right) / 2.0
        ImageDraw.Draw(image).text(
            (x, self.baseline_y),
            char,
            fill=255,
            font=font,
            anchor="ls",
            stroke_width=stroke,
            stroke_fill=255,
        )
        ink_width = max(1, right - left)
        fit = min(1.0, _FILL * self.canvas[0] / ink_width)
        return image, fit


@lru_cache(maxsize=256)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    """A font at a pixel size, opened once per process."""
    from PIL import ImageFont

    return ImageFont.truetype(path, size)


@cache
def _font_file(name: str) -> str:
    """The path of a bundled matplotlib font, by name from :data:`FONTS`."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{name}.ttf"
    if not path.is_file():
        raise DataError(
            f"font {name!r} is not where matplotlib {matplotlib.__version__} keeps its fonts "
            f"({path})",
            key="options",
        )
    return str(path)


def _vertical_extent(font: ImageFont.FreeTypeFont, chars: str) -> tuple[int, int]:
    """The highest top and lowest bottom of ``chars``, relative to the baseline."""
    boxes = [font.getbbox(char, anchor="ls") for char in chars]
    return min(box[1] for box in boxes), max(box[3] for box in boxes)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _option_error(name: str, value: Any, expected: str) -> DataError:
    return DataError(
        f"glyphs option {name} must be {expected}, got {value!r}", key=f"options.{name}"
    )


def _number(
    raw: Mapping[str, Any], name: str, default: float, low: float, high: float, expected: str
) -> float:
    """A numeric option within ``[low, high]``."""
    value = raw.get(name, default)
    if not _is_number(value) or not (low <= float(value) <= high):
        raise _option_error(name, value, expected)
    return float(value)


def _parse_fonts(value: Any) -> tuple[str, ...]:
    """The ``fonts`` option: a non-empty list of distinct names from :data:`FONTS`."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not value:
        raise _option_error("fonts", value, f"a list of font names from: {', '.join(FONTS)}")
    names: list[str] = []
    for item in value:
        name = str(item)
        if name not in FONTS:
            raise DataError(
                f"unknown glyphs font {name!r}{did_you_mean(name, FONTS)} in options.fonts; "
                f"available: {', '.join(FONTS)}",
                key="options.fonts",
            )
        if name in names:
            raise DataError(
                f"glyphs font {name!r} is listed twice in options.fonts", key="options.fonts"
            )
        names.append(name)
    return tuple(names)


def _parse_range(
    name: str, value: Any, expected: str, *, low_open: bool, high: float
) -> tuple[float, float]:
    """A ``[low, high]`` option from above 0 (or from 0) to ``high``; a number ``v`` is ``[v, v]``."""
    if _is_number(value):
        value = [value, value]
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or len(value) != 2
        or not all(_is_number(v) for v in value)
    ):
        raise _option_error(name, value, expected)
    first, last = float(value[0]), float(value[1])
    above_zero = first > 0.0 if low_open else first >= 0.0
    if not (above_zero and first <= last <= high):
        raise _option_error(name, list(value), expected)
    return first, last
