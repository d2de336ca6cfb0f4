"""``blobs:``: synthetic Gaussian blobs, generated from a seed (offline, any size).

``source: blobs:CLASSESxFEATURES``, e.g. ``blobs:4x16`` for four classes in
sixteen dimensions. Options (``data: {options: {...}}``):

- ``per_class``: examples per class (default 100);
- ``spread``: the standard deviation around each centre (default 1.0; the
  centres are drawn with standard deviation 3);
- ``seed``: the generator's seed (default 0), independent of the recipe's seed,
  which splits the data.

A pretraining source and a target source with the same shape but another seed
give related but different tasks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import hookimpl
from orchestrator.data import DataSource, LabelledArrays
from orchestrator.errors import DataError

if TYPE_CHECKING:
    from orchestrator.registry import Registry

_LOCATION = re.compile(r"^(\d+)x(\d+)$")
#: Each option with its default.
OPTIONS = {"per_class": 100, "spread": 1.0, "seed": 0}


class BlobsSource(DataSource):
    """Gaussian blobs: class ``k`` is ``centre_k + spread * N(0, I)``."""

    scheme = "blobs"
    description = "synthetic Gaussian blobs, blobs:CLASSESxFEATURES (graftune-linear-probe)"
    #: The location is no file: graftune submit has nothing to copy to a cluster.
    location_is_path = False

    def check(self, location: str, spec: Any, base_dir: Path) -> None:
        self._settings(location, spec)

    def load(self, location: str, spec: Any, base_dir: Path) -> LabelledArrays:
        import numpy as np

        classes, features, options = self._settings(location, spec)
        rng = np.random.default_rng(options["seed"])
        centres = rng.normal(0.0, 3.0, size=(classes, features))
        y = np.repeat(np.arange(classes, dtype=np.int64), options["per_class"])
        x = centres[y] + rng.normal(0.0, options["spread"], size=(len(y), features))
        return LabelledArrays(
            x=x.astype(np.float32),
            y=y,
            class_names=tuple(f"blob{k}" for k in range(classes)),
        )

    @staticmethod
    def _settings(location: str, spec: Any) -> tuple[int, int, dict[str, Any]]:
        match = _LOCATION.match(location)
        if match is None:
            raise DataError(
                f"blobs: expects CLASSESxFEATURES, like blobs:4x16; got blobs:{location}",
                key="source",
            )
        classes, features = int(match.group(1)), int(match.group(2))
        if classes < 2 or features < 1:
            raise DataError(
                f"blobs: needs at least 2 classes and 1 feature; got blobs:{location}",
                key="source",
            )
        for key in ("target", "image_size", "channels"):
            if getattr(spec, key, None) is not None:
                raise DataError(f"blobs: takes no {key} (it makes its own labels)", key=key)
        given = dict(getattr(spec, "options", None) or {})
        unknown = sorted(set(given) - set(OPTIONS))
        if unknown:
            raise DataError(
                f"blobs: unknown option(s) {', '.join(unknown)}; it takes {', '.join(OPTIONS)}",
                key="options",
            )
        options = {**OPTIONS, **given}
        per_class, spread, seed = options["per_class"], options["spread"], options["seed"]
        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
            raise DataError(
                f"blobs: per_class must be a positive integer, got {per_class!r}", key="options"
            )
        if isinstance(spread, bool) or not isinstance(spread, (int, float)) or spread <= 0:
            raise DataError(
                f"blobs: spread must be a positive number, got {spread!r}", key="options"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise DataError(f"blobs: seed must be an integer >= 0, got {seed!r}", key="options")
        return classes, features, options


@hookimpl
def graftune_register_data_sources(registry: Registry) -> None:
    registry.add(BlobsSource)
