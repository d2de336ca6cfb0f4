"""What a run ran with: Python, the machine, and the versions of what shaped its results.

A run's seed fixes its draws, splits and initial weights, but not the code that
turns them into scores: Keras and its backend (kernels, initialisers), Ray
Tune's and Optuna's samplers, the fonts matplotlib ships (``glyphs:``), the
plugins' strategies. ``environment.json`` in the run directory records them
when the run starts; a resume that runs with other versions says so and adds
its own record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.plugin_manager import PluginHost

log = logging.getLogger(__name__)

ENVIRONMENT_FILE = "environment.json"

#: The distributions whose versions can change a run's results, as pip names them
#: (those not installed are left out: a Keras backend, MLflow).
PACKAGES = (
    "graftune",
    "keras",
    "tensorflow",
    "jax",
    "torch",
    "ray",
    "keras-tuner",
    "optuna",
    "numpy",
    "pandas",
    "scikit-learn",
    "matplotlib",
    "pillow",
    "pluggy",
)


#: The environment variables that change what TensorFlow computes, recorded as set
#: (graftune sets the first unless the user did: ``orchestrator/__init__.py``).
VARIABLES = ("TF_ENABLE_ONEDNN_OPTS", "TF_DETERMINISTIC_OPS")


def plugin_modules(host: PluginHost) -> tuple[str, ...]:
    """The plugins ``host`` loaded by module name (``--plugin``), which a resume of
    the run needs again (not plugin objects given from Python)."""
    return tuple(
        name
        for name, owner in host.owners.items()
        if owner == f"{name} (not installed)" and name in sys.modules
    )


def recorded_environment(run_dir: Path) -> Any:
    """What the run's :data:`ENVIRONMENT_FILE` holds (raises ``OSError`` or
    ``ValueError`` where it cannot be read)."""
    return json.loads((Path(run_dir) / ENVIRONMENT_FILE).read_text(encoding="utf-8"))


def recorded_graftune(run_dir: Path) -> str | None:
    """The graftune version that made the run, as its :data:`ENVIRONMENT_FILE`
    records it (``None`` where it records none, or cannot be read)."""
    try:
        return str(recorded_environment(run_dir)["packages"]["graftune"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recorded_plugin_modules(run_dir: Path) -> tuple[str, ...]:
    """The ``--plugin`` modules the run's :data:`ENVIRONMENT_FILE` records (its last
    resume's); none where it records none or cannot be read."""
    try:
        recorded = recorded_environment(run_dir)
        last = (recorded.get("resumed") or [recorded])[-1]
        modules = last.get("plugin_modules") or []
    except (OSError, ValueError, AttributeError, TypeError, IndexError):
        return ()
    if not isinstance(modules, list):
        return ()
    return tuple(m for m in modules if isinstance(m, str) and m.isprintable())


def graftune_code() -> str:
    """A fingerprint of graftune's own code as installed (its ``orchestrator`` and
    ``plugins`` packages' ``.py`` files): 12 hex digits of their SHA-256.

    Found by QA: graftune's version stays the same between its releases (and in a
    checkout), so a resume by changed code, which trained otherwise, matched the
    run's record and said nothing.
    """
    import hashlib

    import orchestrator
    import orchestrator.builtin_plugins as builtin  # the checkout's plugins/, installed so

    digest = hashlib.sha256()
    # In a wheel the built-ins are inside orchestrator/, in a checkout in plugins/:
    # hashed first, under one label, the same code reads alike in both (found by QA:
    # a resume under a wheel of the same commit said the code had changed).
    hashed: set[Path] = set()
    for label, package in (("builtin_plugins", builtin), ("orchestrator", orchestrator)):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            if path.resolve() in hashed:
                continue
            hashed.add(path.resolve())
            digest.update(f"{label}/{path.relative_to(root).as_posix()}".encode() + b"\0")
            with contextlib.suppress(OSError):  # unreadable: named alone
                digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()[:12]


def environment(host: PluginHost | None = None) -> dict[str, Any]:
    """This process's Python, machine, Keras backend and package versions, the
    plugins' distributions, and the plugins loaded by module name."""
    packages = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    plugins = {}
    if host is not None:
        for info in host.infos():
            if info.distribution not in ("graftune", "(not installed)"):
                plugins[info.distribution] = info.version
    from orchestrator.accelerator import backend

    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "keras_backend": backend(),
        "packages": packages,
        "graftune_code": graftune_code(),
        "plugins": dict(sorted(plugins.items())),
        "plugin_modules": list(plugin_modules(host)) if host is not None else [],
        "variables": {name: os.environ[name] for name in VARIABLES if name in os.environ},
    }


def record_environment(run_dir: Path, host: PluginHost | None, *, resumed: bool) -> str | None:
    """Write :data:`ENVIRONMENT_FILE`, or on a resume compare with it.

    A resume with the same versions changes nothing; one with others adds a
    record of its own under ``resumed`` (the trials after it ran with those).

    Returns:
        For a resume with other versions, a line saying what changed (for a
        warning); otherwise ``None``.
    """
    from orchestrator.leaderboard import atomic_write_text

    path = Path(run_dir) / ENVIRONMENT_FILE
    now = environment(host)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    recorded: dict[str, Any] | None = None
    if resumed and path.is_file():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = None
    if not isinstance(recorded, dict):
        # A run made before graftune recorded it gets one at its resume, said as such.
        at = "resume" if resumed else "start"
        atomic_write_text(path, json.dumps({"recorded": stamp, "at": at, **now}, indent=1) + "\n")
        return None
    last = (recorded.get("resumed") or [recorded])[-1]
    changed = _changes(last, now)
    if not changed:
        return None
    recorded.setdefault("resumed", []).append({"recorded": stamp, "at": "resume", **now})
    atomic_write_text(path, json.dumps(recorded, indent=1) + "\n")
    return (
        f"this resume runs with other versions than the run's trials so far: "
        f"{', '.join(changed)}; the trials it runs may score differently "
        f"({path.name} records both)"
    )


def _changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``name old -> new`` for each version that differs (Python, backend, graftune's
    code, packages, plugins); a record made before graftune fingerprinted its code
    says ``not recorded``: what trained its trials cannot be told apart."""
    changed = []
    for key in ("python", "keras_backend"):
        if before.get(key) != now.get(key):
            changed.append(f"{key} {before.get(key)} -> {now.get(key)}")
    if before.get("graftune_code") != now.get("graftune_code"):
        changed.append(
            f"graftune's code {before.get('graftune_code') or 'not recorded'} -> "
            f"{now.get('graftune_code')}"
        )
    for group in ("packages", "plugins"):
        old, new = before.get(group) or {}, now.get(group) or {}
        # A plugin installed or removed since is no change: only a version changed where
        # it was there both times (found by QA: one the recipe does not use warned); one
        # the recipe uses and that is gone fails the resume by itself.
        names = set(old) & set(new) if group == "plugins" else set(old) | set(new)
        for name in sorted(names):
            if old.get(name) != new.get(name):
                changed.append(f"{name} {old.get(name, 'none')} -> {new.get(name, 'none')}")
    return changed
