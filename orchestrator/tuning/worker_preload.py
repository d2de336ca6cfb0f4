"""Imported by each worker of embedded Ray as it starts, before it takes work.

Embedded Ray starts the first search's workers together with itself; with this
module in its ``preload_python_modules`` (see :mod:`orchestrator.tuning.ray_start`)
those workers import TensorFlow and Keras while the driver prepares the run, and the
search's first trials begin on workers that have them already. A worker Ray
starts later imports them just the same before its first trial. Ray imports
:mod:`orchestrator.tuning.ray_tune` (and Ray Tune with it) next, as it is the
next module in ``PRELOAD_MODULES``.
"""

from __future__ import annotations

from orchestrator.trial import import_keras

import_keras()  # as a trial imports it: without what Keras loads for no trial (see there)
