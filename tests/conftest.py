"""Shared fixtures: one local Ray per session, a private cache, quiet TensorFlow."""

from __future__ import annotations

import os

import pytest

# graftune's testing kit for plugin authors (its fixtures are all named graftune_*),
# and pytest's own, to run the kit in an inner pytest session.
pytest_plugins = ["orchestrator.testing", "pytester"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Tests never read plugins from entry points they did not ask for.
os.environ.pop("GRAFTUNE_DISABLE_PLUGIN_AUTOLOAD", None)


@pytest.fixture(scope="session", autouse=True)
def graftune_cache(tmp_path_factory: pytest.TempPathFactory):
    """Every test session gets its own graftune cache (pretrained bases ...)."""
    path = tmp_path_factory.mktemp("graftune-cache")
    old = os.environ.get("GRAFTUNE_CACHE_DIR")
    os.environ["GRAFTUNE_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("GRAFTUNE_CACHE_DIR", None)
    else:
        os.environ["GRAFTUNE_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def ray_session():
    """Real local Ray, started once for the whole session (runs reuse it)."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    yield ray
    ray.shutdown()
