"""The pluggy markers of the ``graftune`` project name.

Plugins import :data:`hookimpl` from :mod:`orchestrator` (it is re-exported there).
"""

from __future__ import annotations

import pluggy

PROJECT = "graftune"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
