"""graftune-linear-probe: an example third-party plugin for graftune.

Two plugins, each its own module and entry point in the ``graftune`` group:

- :mod:`graftune_linear_probe.linear_probe`: the ``linear_probe`` strategy;
- :mod:`graftune_linear_probe.blobs`: the ``blobs:`` data source.
"""

__version__ = "0.1.0"
