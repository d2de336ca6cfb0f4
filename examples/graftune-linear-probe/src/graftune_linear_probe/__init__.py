"""graftune-linear-probe: an example third-party plugin for graftune.

Four plugins, one of each kind, each its own module and entry point in the
``graftune`` group:

- :mod:`graftune_linear_probe.linear_probe`: the ``linear_probe`` strategy;
- :mod:`graftune_linear_probe.blobs`: the ``blobs:`` data source;
- :mod:`graftune_linear_probe.random_features`: the ``random_features`` base provider;
- :mod:`graftune_linear_probe.search_trace`: the ``search_trace`` reporter.
"""

__version__ = "0.1.0"
