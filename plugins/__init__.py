"""graftune's built-in strategies, installed as ``orchestrator.builtin_plugins``.

Each module is registered through the ``graftune`` entry-point group in
graftune's own ``pyproject.toml``, exactly like a third-party plugin.
"""
