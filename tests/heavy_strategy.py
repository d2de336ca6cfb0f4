"""A strategy module that imports Keras (and so TensorFlow) at import time: a contract breach."""

from __future__ import annotations

import keras  # noqa: F401  (the point of this module)

from tests.broken_strategies import SmallMLP


class HeavyImport(SmallMLP):
    name = "heavy_import"
