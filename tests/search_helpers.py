"""Recipes and in-process runs shared by tests/test_search.py and tests/test_resume.py."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from orchestrator.progress import RunProgress
from tests import fixture_plugins

ROOT = Path(__file__).parents[1]
GRAFTUNE = str(Path(sys.executable).with_name("graftune"))


def write_recipe(folder: Path, search: str, strategies: str | None = None) -> Path:
    strategies = strategies or (
        "scratch_mlp: {space: {hidden_layers: {choice: [1, 2]}, width: 16, lambda: 1.0e-5}}"
    )
    recipe = folder / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            f"""
            name: search-test
            seed: 5
            data: {{source: "sklearn:iris"}}
            strategies:
              {strategies}
            search: {search}
            output: runs/
            """
        )
    )
    return recipe


def run(recipe: Path, **kwargs):
    """An in-process run of ``recipe`` with the fixture plugins (tests/fixture_plugins.py)."""
    from orchestrator import run_recipe

    return run_recipe(recipe, plugins=[fixture_plugins], **{"echo": print, **kwargs})


class EpochsHeard(RunProgress):
    """A progress view that also keeps every epoch it is told of, in order:
    ``(strategy, trial_id, epoch, epochs)`` (the view forgets them as trials end)."""

    def __init__(self, *args, runs: Path | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.heard: list[tuple[str, str, int, int]] = []
        #: The trials whose history.csv was under ``runs`` when their end was told.
        self.told_with_history: set[str] = set()
        self.runs = runs

    def trial_finished(self, result) -> None:
        if self.runs is not None and any(
            self.runs.glob(f"*/trials/*/{result.trial_id}/history.csv")
        ):
            self.told_with_history.add(result.trial_id)
        super().trial_finished(result)

    def trial_progressed(self, strategy, trial_id, epoch, epochs) -> None:
        self.heard.append((strategy, trial_id, epoch, epochs))
        super().trial_progressed(strategy, trial_id, epoch, epochs)
