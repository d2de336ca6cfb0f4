"""The graftune testing kit provides the fixtures these tests use."""

pytest_plugins = ["orchestrator.testing"]
