"""Tests of ``orchestrator.recipe``: good recipes validate, bad ones name file, key and fix.

Every bad recipe goes through the real command line in-process (``graftune
validate``) and must exit with status 2 and a message that names the file, the
key path and what was expected. Nothing here trains a model or starts Ray.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import RecipeError, RecipeErrors
from orchestrator.plugin_manager import PluginHost, get_plugin_manager
from orchestrator.recipe import Recipe, load_recipe, parse_recipe, validate_recipe

REPO = Path(__file__).resolve().parents[1]
RECIPE_FILES = sorted((REPO / "recipes").glob("*.yaml"))
WINE_CSV = REPO / "recipes" / "data" / "wine.csv"

runner = CliRunner()


def write_recipe(folder: Path, text: str, name: str = "recipe.yaml") -> Path:
    """Write ``text`` (dedented; ``{tmp}`` and ``{wine}`` filled in) as a recipe file."""
    text = textwrap.dedent(text).lstrip("\n")
    text = text.replace("{tmp}", str(folder)).replace("{wine}", str(WINE_CSV))
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def assert_exit(result: Result, status: int) -> None:
    assert result.exit_code == status, (
        f"exit {result.exit_code}, expected {status}\n{result.output}\n{result.exception!r}"
    )


@pytest.fixture(scope="module")
def host() -> PluginHost:
    """The real plugin host: built-in strategies, data sources and bases."""
    return get_plugin_manager()


# -- good recipes -------------------------------------------------------------------


def test_the_repository_ships_recipes() -> None:
    assert any(p.name == "quickstart.yaml" for p in RECIPE_FILES)


@pytest.mark.parametrize("path", RECIPE_FILES, ids=[p.name for p in RECIPE_FILES])
def test_every_shipped_recipe_validates(path: Path) -> None:
    result = cli("validate", str(path))
    assert_exit(result, 0)
    assert f"{path}: ok" in result.output


GOOD_RECIPES = {
    "minimal": """
        name: minimal
        data: {source: 'sklearn:iris'}
        strategies: {scratch_mlp: {}}
    """,
    "csv-absolute": """
        name: wine
        data:
          source: csv:{wine}
          target: cultivar
        strategies:
          scratch_mlp:
            space: {hidden_layers: 1, width: {choice: [8, 16]}}
    """,
    "every-section": """
        name: every.section_1
        seed: 7
        data:
          source: sklearn:digits
          classes: [5, 6, 7, 8, 9]
          split: {val: 0.25, test: 0.25}
          labels_per_class: 10
          image_size: [8, 8]
          channels: 1
        base:
          pretrain:
            data: {source: 'sklearn:digits', classes: [0, 1, 2, 3, 4]}
            epochs: 2
            architecture: cnn
            width: 8
            learning_rate: 1.0e-3
            batch_size: 16
        strategies:
          scratch_mlp:
            num_samples: 2
            space:
              hidden_layers: {int: [1, 2]}
              width: {choice: [16, 32]}
          feature_extraction:
            space: {head_depth: 1, learning_rate: {float: [1.0e-4, 1.0e-3]}}
          fine_tune:
            space:
              frozen_layers: {int: [0, all]}
              head_width: {int: [16, 64]}
        search:
          backend: ray
          metric: val_loss
          mode: min
          num_samples: 3
          max_epochs: 4
          scheduler: asha
          grace_period: 2
          reduction_factor: 2
          batch_size: 8
          max_concurrent_trials: 2
          space:
            lambda: {loguniform: [1.0e-6, 1.0e-2]}
            head_width: {choice: [32, 64]}
        resources: {cpus_per_trial: 0.5, gpus_per_trial: 0, num_cpus: 2, dashboard: false}
        output: {tmp}/runs
    """,
    "fine-tune-frozen-all": """
        name: freeze-everything
        data: {source: 'sklearn:digits'}
        base:
          pretrain: {data: {source: 'sklearn:digits'}}
        strategies:
          fine_tune:
            space: {frozen_layers: all}
    """,
    "base-path-file": """
        name: from-file
        data: {source: 'sklearn:digits'}
        base: {path: models/b.keras}
        strategies: {feature_extraction: {}}
    """,
    "anchors-and-aliases": """
        name: aliases
        data: &digits {source: 'sklearn:digits'}
        base:
          pretrain: {data: *digits}
        strategies:
          scratch_mlp: &same {}
          feature_extraction: *same
    """,
}


@pytest.mark.parametrize("text", GOOD_RECIPES.values(), ids=GOOD_RECIPES.keys())
def test_good_recipes_validate(tmp_path: Path, text: str) -> None:
    (tmp_path / "models").mkdir()
    # validate only checks that a base file exists and is a .keras file (a zip archive).
    zipfile.ZipFile(tmp_path / "models" / "b.keras", "w").close()
    path = write_recipe(tmp_path, text)
    result = cli("validate", str(path))
    assert_exit(result, 0)
    assert f"{path}: ok" in result.output


def test_csv_recipe_with_a_path_relative_to_the_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    shutil.copyfile(WINE_CSV, project / "data" / "wine.csv")
    path = write_recipe(
        project,
        """
        name: wine
        data: {source: 'csv:data/wine.csv', target: cultivar}
        strategies: {scratch_mlp: {}}
        """,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert_exit(cli("validate", str(path)), 0)
    # The same recipe, named relative to the working directory.
    assert_exit(cli("validate", os.path.join("..", "project", "recipe.yaml")), 0)


def test_csv_recipe_reaching_the_shipped_csv_through_a_relative_path(tmp_path: Path) -> None:
    relative = os.path.relpath(WINE_CSV, tmp_path)
    path = write_recipe(
        tmp_path,
        f"""
        name: wine
        data: {{source: 'csv:{relative}', target: cultivar}}
        strategies: {{scratch_mlp: {{}}}}
        """,
    )
    assert_exit(cli("validate", str(path)), 0)


def test_validate_recipe_returns_the_checked_recipe(tmp_path: Path, host: PluginHost) -> None:
    path = write_recipe(tmp_path, GOOD_RECIPES["every-section"])
    recipe = validate_recipe(path, host)
    assert isinstance(recipe, Recipe)
    assert recipe.file == path.resolve()
    assert recipe.name == "every.section_1"
    assert list(recipe.strategies) == ["scratch_mlp", "feature_extraction", "fine_tune"]
    assert recipe.search.direction == "min"
    assert recipe.output == tmp_path / "runs"
    assert recipe.base is not None and recipe.base.kind == "pretrain"


# -- bad recipes: (yaml, key path, what the message says) ----------------------------

HEAD = """\
name: bad
data: {source: 'sklearn:iris'}
"""
DIGITS_BASE = """\
name: bad
data: {source: 'sklearn:digits'}
base:
  pretrain:
    data: {source: 'sklearn:digits'}
"""

BAD_RECIPES = [
    # Found by QA: "got datetime.date(2024, 1, 1)", Python's words for YAML's date.
    pytest.param(
        "name: 2024-01-01\ndata: {source: 'sklearn:iris'}\nstrategies: {scratch_mlp: {}}\n",
        "name",
        "input should be a valid string; got 2024-01-01 (a date, as YAML reads it unquoted)",
        id="date-for-text",
    ),
    # Found by QA: validate said ok; the run made its folder, and Ray refused to start
    # (exit 4, no file or key), or its pretraining failed in Keras.
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nresources: {num_cpus: 200000000000000}\n",
        "resources.num_cpus",
        "Ray counts at most 10^14 of a CPU or GPU; got 2e+14",
        id="num-cpus-past-ray",
    ),
    pytest.param(
        HEAD + "strategies: {fine_tune: {}}\n"
        "base: {pretrain: {data: {source: 'sklearn:iris'}, width: 99999999999999999999}}\n",
        "base.pretrain.width",
        "input should be less than or equal to 65536; got 99999999999999999999",
        id="pretrain-width-past-any-machine",
    ),
    # Found by QA: accepted, and the class kept once.
    pytest.param(
        "name: bad\ndata: {source: 'sklearn:iris', classes: [a, b, 1, '1']}\n"
        "strategies: {scratch_mlp: {}}\n",
        "data.classes",
        "names the class '1' twice (items 3 and 4); name each class once",
        id="class-twice",
    ),
    # Found by QA: pydantic took the text 'off' as false, and 1 as true.
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\ncache: 'off'\n",
        "cache",
        "expected true or false; got 'off'",
        id="flag-as-text",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nresources: {dashboard: 1}\n",
        "resources.dashboard",
        "expected true or false; got 1",
        id="flag-as-number",
    ),
    # unknown keys, with the nearest valid one suggested
    pytest.param(
        HEAD + "strategy: {scratch_mlp: {}}\n",
        "strategy",
        "unknown key 'strategy' (did you mean 'strategies'?)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nsearch:\n  schedular: asha\n",
        "search.schedular",
        "unknown key 'schedular' (did you mean 'scheduler'?)",
        id="unknown-search-key",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'sklearn:iris', tagret: y}\nstrategies: {scratch_mlp: {}}\n",
        "data.tagret",
        "(did you mean 'target'?)",
        id="unknown-data-key",
    ),
    pytest.param(
        HEAD + "base: {pth: m.keras}\nstrategies: {fine_tune: {}}\n",
        "base.pth",
        "(did you mean 'path'?)",
        id="unknown-base-key",
    ),
    pytest.param(
        DIGITS_BASE + "    epocs: 3\nstrategies: {fine_tune: {}}\n",
        "base.pretrain.epocs",
        "(did you mean 'epochs'?)",
        id="unknown-pretrain-key",
    ),
    pytest.param(
        HEAD + "strategies:\n  scratch_mlp:\n    spcae: {}\n",
        "strategies.scratch_mlp.spcae",
        "(did you mean 'space'?); expected one of: space, num_samples",
        id="unknown-strategy-section-key",
    ),
    # missing or empty sections
    pytest.param(
        "name: bad\nstrategies: {scratch_mlp: {}}\n",
        "data",
        "this key is required",
        id="missing-data",
    ),
    pytest.param(
        "data: {source: 'sklearn:iris'}\nstrategies: {scratch_mlp: {}}\n",
        "name",
        "this key is required",
        id="missing-name",
    ),
    pytest.param(HEAD, "strategies", "this key is required", id="missing-strategies"),
    pytest.param(
        HEAD + "strategies: {}\n",
        "strategies",
        "name at least one strategy to search",
        id="no-strategies",
    ),
    pytest.param(
        HEAD + "strategies:\n  scratch_mlp:\n",
        "strategies.scratch_mlp",
        "expected a mapping of keys (write {} for an empty section); got null",
        id="strategy-section-null",
    ),
    pytest.param(
        "name: 'two words'\ndata: {source: 'sklearn:iris'}\nstrategies: {scratch_mlp: {}}\n",
        "name",
        "a run's name is ASCII letters, digits, '.', '_' and '-', from a letter or digit (it "
        "names the run's folder); got 'two words'",
        id="bad-name",
    ),
    pytest.param(
        HEAD + "seed: lucky\nstrategies: {scratch_mlp: {}}\n",
        "seed",
        "valid integer",
        id="seed-not-a-number",
    ),
    # search settings
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nsearch: {scheduler: pbt}\n",
        "search.scheduler",
        "expected 'fifo', 'asha' or 'hyperband'; got 'pbt'",
        id="bad-scheduler",
    ),
    pytest.param(
        HEAD
        + "strategies: {scratch_mlp: {}}\nsearch: {scheduler: asha, grace_period: 6, max_epochs: 5}\n",
        "search.grace_period",
        "6 is more than max_epochs (5): asha stops trials only after grace_period",
        id="grace-beyond-the-epochs",
    ),
    pytest.param(  # it ran every trial to the end, as fifo would
        HEAD + "strategies: {scratch_mlp: {}}\nsearch: {scheduler: hyperband, grace_period: 3, "
        "max_epochs: 3}\n",
        "search.grace_period",
        "3 is as many epochs as max_epochs (3): hyperband stops trials only after",
        id="grace-at-the-epochs",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nsearch: {metric: accuracy}\n",
        "search.metric",
        "expected 'val_accuracy' or 'val_loss'; got 'accuracy'",
        id="bad-metric",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nsearch: {backend: optuna}\n",
        "search.backend",
        "expected 'ray' or 'keras_tuner'; got 'optuna'",
        id="bad-backend",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nsearch: {num_samples: 0}\n",
        "search.num_samples",
        "greater than 0; got 0",
        id="num-samples-zero",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {num_samples: -3}}\n",
        "strategies.scratch_mlp.num_samples",
        "greater than 0; got -3",
        id="strategy-num-samples-negative",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nsearch: {num_samples: true}\n",
        "search.num_samples",
        "expected a number, got true",
        id="num-samples-bool",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nsearch: {max_epochs: -1}\n",
        "search.max_epochs",
        "greater than 0; got -1",
        id="max-epochs-negative",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nsearch: {reduction_factor: .inf}\n",
        "search.reduction_factor",
        "finite number",
        id="reduction-factor-infinite",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\n"
        "search: {scheduler: hyperband, reduction_factor: 1.0001, max_epochs: 3}\n",
        "search.reduction_factor",
        "1.0001 is too close to 1: each rung would stop only 0.01% of its trials",
        id="reduction-factor-near-one",  # found by QA: Ray's Hyperband took minutes to build
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nsearch: {metric: val_accuracy, mode: min}\n",
        "search.mode",
        "val_accuracy is better when larger: mode must be max",
        id="mode-min-with-accuracy",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nsearch: {metric: val_loss, mode: max}\n",
        "search.mode",
        "val_loss is better when smaller: mode must be min",
        id="mode-max-with-loss",
    ),
    # data
    pytest.param(
        "name: bad\ndata: {source: 'sklearn:iris', split: {val: 0.5, test: 0.5}}\n"
        "strategies: {scratch_mlp: {}}\n",
        "data.split",
        "val + test must be below 1, got 0.5 + 0.5",
        id="split-leaves-no-training-data",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'sklearn:iris', split: {val: 0}}\n"
        "strategies: {scratch_mlp: {}}\n",
        "data.split.val",
        "greater than 0; got 0",
        id="split-val-zero",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'sklern:digits'}\nstrategies: {scratch_mlp: {}}\n",
        "data.source",
        "unknown data source 'sklern' (did you mean 'sklearn'?)",
        id="unknown-data-scheme",
    ),
    pytest.param(
        "name: bad\ndata: {source: digits}\nstrategies: {scratch_mlp: {}}\n",
        "data.source",
        "needs a 'scheme:' prefix",
        id="data-source-without-scheme",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'sklearn:digts'}\nstrategies: {scratch_mlp: {}}\n",
        "data.source",
        "unknown scikit-learn dataset 'digts' (did you mean 'digits'?)",
        id="unknown-sklearn-dataset",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'csv:missing.csv', target: y}\nstrategies: {scratch_mlp: {}}\n",
        "data.source",
        "missing.csv does not exist",
        id="missing-csv-file",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'csv:{wine}'}\nstrategies: {scratch_mlp: {}}\n",
        "data.target",
        "a table's label column has no default: name it with target: COLUMN",
        id="csv-without-target",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'csv:{wine}', target: cultivr}\nstrategies: {scratch_mlp: {}}\n",
        "data.target",
        "target column 'cultivr' (did you mean 'cultivar'?)",
        id="csv-wrong-target",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'sklearn:iris', labels_per_class: 0}\n"
        "strategies: {scratch_mlp: {}}\n",
        "data.labels_per_class",
        "greater than 0; got 0",
        id="labels-per-class-zero",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'sklearn:digits', channels: 2}\nstrategies: {scratch_mlp: {}}\n",
        "data.channels",
        "expected 1 or 3; got 2",
        id="two-channels",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'sklearn:iris', classes: [1]}\nstrategies: {scratch_mlp: {}}\n",
        "data.classes",
        "at least two classes",
        id="one-class",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'sklearn:iris', classes: [1.5, 2]}\n"
        "strategies: {scratch_mlp: {}}\n",
        "data.classes.0",
        "expected a class name or an integer label, got 1.5",
        id="class-label-float",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'sklearn:iris', classes: [1.0, 2]}\n"
        "strategies: {scratch_mlp: {}}\n",
        "data.classes.0",
        "got 1.0; a label written 1.0 in the data is the integer label 1: write 1",
        id="class-label-a-whole-float",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'sklearn:iris', classes: [1, 02]}\n"
        "strategies: {scratch_mlp: {}}\n",
        "data.classes.1",
        "YAML reads 02 as the number 2: write '02' (in quotes) for the class named 02, "
        "or 2 for the label 2",
        id="class-with-a-leading-zero",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'sklearn:iris', classes: [010, 1]}\n"
        "strategies: {scratch_mlp: {}}\n",
        "data.classes.0",
        "YAML reads 010 as the number 8",
        id="class-yaml-reads-as-octal",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'sklearn:iris', image_size: [8, 8]}\n"
        "strategies: {scratch_mlp: {}}\n",
        "data.image_size",
        "applies only to image data",
        id="image-size-on-a-table",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'sklearn:digits', image_size: [8]}\n"
        "strategies: {scratch_mlp: {}}\n",
        "recipe.yaml:2: data.image_size:",
        "expected [height, width], two whole numbers above 0 (or one number, for a square); "
        "got [8]",
        id="image-size-one-item",  # was: data.image_size.1: this key is required
    ),
    pytest.param(
        "name: bad\ndata: {source: 'sklearn:digits', image_size: '8x8'}\n"
        "strategies: {scratch_mlp: {}}\n",
        "recipe.yaml:2: data.image_size:",
        "expected [height, width], two whole numbers above 0 (or one number, for a square); "
        "got '8x8'",
        id="image-size-text",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'sklearn:iris', options: {a: 1}}\n"
        "strategies: {scratch_mlp: {}}\n",
        "data.options",
        "takes no options",
        id="options-for-a-builtin-source",
    ),
    # strategies and bases
    pytest.param(
        HEAD + "strategies: {fine_tun: {}}\n",
        "strategies.fine_tun",
        "unknown strategy 'fine_tun' (did you mean 'fine_tune'?)",
        id="unknown-strategy",
    ),
    pytest.param(
        HEAD + "strategies: {fine_tune: {}}\n",
        "recipe.yaml:3: strategies.fine_tune",
        "fine_tune transfers from a pretrained base: add a base: section",
        id="transfer-without-base",
    ),
    pytest.param(
        HEAD + "base: {path: m.keras, application: ResNet50}\nstrategies: {fine_tune: {}}\n",
        "base",
        "expected exactly one of path, application, pretrain or provider; got path, application",
        id="base-with-two-sources",
    ),
    pytest.param(
        HEAD + "base: {}\nstrategies: {fine_tune: {}}\n",
        "base",
        "expected exactly one of path, application, pretrain or provider; got none",
        id="base-without-source",
    ),
    pytest.param(
        HEAD + "base: {path: models/missing.keras}\nstrategies: {fine_tune: {}}\n",
        "base.path",
        "no model file at",
        id="base-path-missing",
    ),
    pytest.param(
        HEAD + "base: {path: m.keras, weights: imagenet}\nstrategies: {fine_tune: {}}\n",
        "base.weights",
        "weights and input_shape go with application:",
        id="weights-without-application",
    ),
    pytest.param(  # Keras' weights=None is random weights; it meant imagenet here
        HEAD
        + "base: {application: MobileNetV3Small, weights: null}\nstrategies: {fine_tune: {}}\n",
        "base.weights",
        "got null (for Keras' weights=None, write none)",
        id="weights-null",
    ),
    pytest.param(
        HEAD + "base: {provider: hub}\nstrategies: {fine_tune: {}}\n",
        "base.provider",
        "unknown base provider 'hub'",
        id="unknown-base-provider",
    ),
    # Found by QA: validate passed it, and the run failed with an AssertionError.
    pytest.param(
        HEAD + "base: {provider: pretrain}\nstrategies: {fine_tune: {}}\n",
        "base.provider",
        "pretrain is a built-in base, given by its own key: write base: {pretrain: {data: "
        "{source: ...}}} (provider: names a base provider a plugin adds)",
        id="built-in-base-as-provider",
    ),
    pytest.param(
        DIGITS_BASE + "    architecture: resnet\nstrategies: {fine_tune: {}}\n",
        "base.pretrain.architecture",
        "expected 'cnn' or 'mlp'; got 'resnet'",
        id="bad-pretrain-architecture",
    ),
    pytest.param(
        HEAD
        + "base:\n  pretrain:\n    data: {source: 'sklearn:digts'}\nstrategies: {fine_tune: {}}\n",
        "base.pretrain.data.source",
        "(did you mean 'digits'?)",
        id="bad-pretrain-data",
    ),
    # search spaces
    pytest.param(
        DIGITS_BASE + "strategies:\n  fine_tune:\n    space: {frozen_layer: {int: [0, 2]}}\n",
        "strategies.fine_tune.space.frozen_layer",
        "fine_tune has no dimension 'frozen_layer' (did you mean 'frozen_layers'?)",
        id="unknown-strategy-dimension",
    ),
    pytest.param(
        DIGITS_BASE
        + "strategies: {fine_tune: {}, feature_extraction: {}}\n"
        + "search:\n  space:\n    head_widht: {choice: [64]}\n",
        "search.space.head_widht",
        "no strategy of this recipe searches 'head_widht' (did you mean 'head_width'?)",
        id="unknown-shared-dimension",
    ),
    pytest.param(
        HEAD + "strategies:\n  scratch_mlp:\n    space: {lambda: {uniform: [1, 2]}}\n",
        "strategies.scratch_mlp.space.lambda",
        "unknown space type 'uniform'",
        id="space-unknown-type",
    ),
    pytest.param(
        HEAD + "strategies:\n  scratch_mlp:\n    space: {lambda: {loguniform: [0, 1.0e-2]}}\n",
        "strategies.scratch_mlp.space.lambda",
        "loguniform bounds must be > 0",
        id="space-loguniform-low-zero",
    ),
    pytest.param(
        HEAD + "strategies:\n  scratch_mlp:\n    space: {lambda: {loguniform: [1e-6, 1.0e-2]}}\n",
        "strategies.scratch_mlp.space.lambda",
        "YAML reads 1e-6 as text",
        id="space-exponent-without-point",
    ),
    pytest.param(
        HEAD + "strategies:\n  scratch_mlp:\n    space: {hidden_layers: {int: [3, 1]}}\n",
        "strategies.scratch_mlp.space.hidden_layers",
        "int bounds must have low <= high, got [3, 1]",
        id="space-int-low-above-high",
    ),
    pytest.param(
        HEAD + "strategies:\n  scratch_mlp:\n    space: {width: {choice: []}}\n",
        "strategies.scratch_mlp.space.width",
        "choice expects a non-empty list of values",
        id="space-empty-choice",
    ),
    pytest.param(
        HEAD + "strategies:\n  scratch_mlp:\n    space: {width: [32, 64]}\n",
        "strategies.scratch_mlp.space.width",
        "got a list (write {choice: [...]})",
        id="space-list-instead-of-choice",
    ),
    pytest.param(
        HEAD + "strategies:\n  scratch_mlp:\n    space: {hidden_layers: {float: [1, 3]}}\n",
        "strategies.scratch_mlp.space.hidden_layers",
        "hidden_layers takes whole numbers; got float [1, 3]",
        id="space-float-for-integer",
    ),
    pytest.param(
        HEAD + "strategies:\n  scratch_mlp:\n    space: {width: {choice: [32, wide]}}\n",
        "strategies.scratch_mlp.space.width",
        "width takes whole numbers",
        id="space-text-in-a-numeric-choice",
    ),
    pytest.param(
        HEAD
        + "strategies: {scratch_mlp: {}}\nsearch:\n  space:\n    hidden_layers: {float: [1, 2]}\n",
        "search.space.hidden_layers",
        "for scratch_mlp: hidden_layers takes whole numbers",
        id="shared-float-for-integer",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nsearch:\n  space:\n    lambda: {choice: []}\n",
        "search.space.lambda",
        "choice expects a non-empty list",
        id="shared-bad-syntax",
    ),
    pytest.param(
        HEAD + "strategies:\n  scratch_mlp:\n    space: {hidden_layers: {int: [1, all]}}\n",
        "strategies.scratch_mlp.space.hidden_layers",
        "'all' counts the layers of the base, and scratch_mlp takes no base",
        id="all-for-a-strategy-without-base",
    ),
    pytest.param(
        HEAD
        + "strategies: {scratch_mlp: {}}\nsearch:\n  space: {hidden_layers: {int: [1, all]}}\n",
        "search.space.hidden_layers",
        "for scratch_mlp: 'all' counts the layers of the base",
        id="shared-all-for-a-strategy-without-base",
    ),
    pytest.param(
        DIGITS_BASE + "strategies:\n  fine_tune:\n    space: {head_width: all}\n",
        "strategies.fine_tune.space.head_width",
        "'all' (the base's number of cut points) only fits whole-number dimensions",
        id="all-for-a-choice-dimension",
    ),
    # resources
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nresources: {cpus_per_trial: 0}\n",
        "resources.cpus_per_trial",
        "greater than 0; got 0",
        id="cpus-per-trial-zero",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nresources: {gpus_per_trial: -1}\n",
        "resources.gpus_per_trial",
        "greater than or equal to 0; got -1",
        id="gpus-per-trial-negative",
    ),
    # the file itself
    pytest.param(
        HEAD
        + "strategies: {scratch_mlp: {}}\nx: !!python/object/apply:os.system ['touch {tmp}/X']\n",
        "recipe.yaml:4",
        "tags that build Python objects are refused",
        id="python-tag",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}\nsearch: [\n",
        "recipe.yaml:4",
        "not valid recipe YAML",
        id="yaml-syntax-error",
    ),
    pytest.param(
        "- name: bad\n- data: {source: 'sklearn:iris'}\n",
        "recipe.yaml",
        "expected a mapping of recipe keys at the top, got list",
        id="top-level-list",
    ),
    pytest.param("# nothing\n", "recipe.yaml", "the recipe is empty", id="empty-file"),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nstrategies: {fine_tune: {}}\n",
        "recipe.yaml:4: strategies",
        "duplicate key 'strategies' (first on line 3)",
        id="duplicate-key",
    ),
    pytest.param(  # found by QA: the second won in silence
        HEAD + "strategies: {scratch_mlp: {}}\nsearch:\n  <<: {max_epochs: 2}\n"
        "  <<: {max_epochs: 5}\n",
        "recipe.yaml:6: search.<<",
        "duplicate key '<<' (first on line 5); merge several mappings with one",
        id="duplicate-merge-key",
    ),
    pytest.param(  # a key merged in was named at its mapping's line (5), not at the <<
        HEAD + "strategies:\n  scratch_mlp:\n    space:\n      width: 16\n"
        "      <<: [{hidden_layers: 1}, {widht: 8}]\n",
        "recipe.yaml:7: strategies.scratch_mlp.space.widht",
        "scratch_mlp has no dimension 'widht' (did you mean 'width'?)",
        id="merged-key",
    ),
    pytest.param(  # a top-level key of one's own, for anchors, is written x-...
        HEAD + "strategies: {scratch_mlp: {}}\ncommon: &c {width: 8}\n",
        "recipe.yaml:4: common",
        "(a key of your own, for YAML anchors, starts with x-: x-common)",
        id="own-top-level-key",
    ),
    pytest.param(  # found by QA: x-X-common, x-_common, x-.common (GitLab CI's way)
        HEAD + "strategies: {scratch_mlp: {}}\n.common: &c {width: 8}\n",
        "recipe.yaml:4: .common",
        "starts with x-: x-common)",
        id="own-top-level-key-dotted",
    ),
    pytest.param(  # found by QA: "not valid recipe YAML: second occurrence", of nothing said
        HEAD + "strategies: {scratch_mlp: {}}\nx-a: &a 1\nx-b: &a 2\n",
        "recipe.yaml:5",
        "found duplicate anchor 'a'; first occurrence (line 4); second occurrence (line 5)",
        id="duplicate-anchor",
    ),
    pytest.param(  # found by QA: its hint spoke of tags; the line ends with the problem
        HEAD + "strategies: {scratch_mlp: {}}\nsearch:\n  ? [a, b]\n  : 1\n",
        "recipe.yaml:5",
        "not valid recipe YAML: found unhashable key\n",
        id="unhashable-key",
    ),
    pytest.param(  # found by QA: "internal error: ValueError: embedded null byte"
        HEAD + 'strategies: {scratch_mlp: {}}\noutput: "runs\\0x"\n',
        "output",
        "holds a NUL byte, which no path may",
        id="output-nul",
    ),
    pytest.param(  # found by QA: "internal error: OSError: [Errno 36] File name too long"
        HEAD + "strategies: {scratch_mlp: {}}\nstorage: " + "x" * 300 + "\n",
        "storage.path",
        "xxxxxxxxxxxxxxxxxxxx... is a name of 300 bytes; a file's name has 255 at most",
        id="storage-name-too-long",
    ),
    pytest.param(  # found by QA: "got None", with nothing of why
        HEAD + "strategies: {scratch_mlp: {}}\noutput: ~\n",
        "output",
        "got null (YAML reads an empty value, null and ~ as null: write '~' in quotes for "
        "your home folder)",
        id="output-null",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nsearch: {max_epochs: }\n",
        "search.max_epochs",
        "input should be a valid integer; got null (YAML reads an empty value, null and ~ as null)",
        id="number-null",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nsearch:\n  space: &loop\n    x: *loop\n",
        "search.space.x",
        "a recipe cannot be recursive",
        id="recursive-alias",
    ),
    # values a strategy cannot take (Strategy.check_value), and numbers that are no numbers
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {space: {hidden_layers: {int: [-2, 0]}}}}\n",
        "strategies.scratch_mlp.space.hidden_layers",
        "space.hidden_layers: hidden_layers must be a number >= 0, got -2",
        id="value-the-strategy-refuses",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nsearch: {space: {width: {choice: [0, 16]}}}\n",
        "search.space.width",
        "for scratch_mlp: width must be a number >= 1, got 0",
        id="shared-value-the-strategy-refuses",
    ),
    pytest.param(
        DIGITS_BASE + "strategies: {fine_tune: {space: {regularizer: l1}}}\n",
        "strategies.fine_tune.space.regularizer",
        "regularizer must be one of 'l2', 'l2sp', got 'l1'",
        id="choice-the-strategy-refuses",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {space: {lambda: .nan}}}\n",
        "strategies.scratch_mlp.space.lambda",
        "nan is not a finite number",
        id="fixed-nan",
    ),
    pytest.param(
        HEAD + "seed: -1\nstrategies: {scratch_mlp: {}}\n",
        "seed",
        "greater than or equal to 0",
        id="negative-seed",
    ),
    pytest.param(  # found by mutation testing: untested, and every trial's seeding raised
        HEAD + "seed: 4294967296\nstrategies: {scratch_mlp: {}}\n",
        "seed",
        "less than or equal to 4294967295",
        id="seed-past-32-bits",
    ),
    pytest.param(
        "name: " + "a" * 201 + "\ndata: {source: 'sklearn:iris'}\nstrategies: {scratch_mlp: {}}\n",
        "name",
        "at most 200 characters",
        id="name-too-long-for-a-folder",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'sklearn:iris', target: no}\nstrategies: {scratch_mlp: {}}\n",
        "data.target",
        "got false (YAML reads yes, no, on, off, true and false, in any case, as true/false",
        id="yaml-boolean-for-text",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\n" + "# padding\n" * 120_000,
        "recipe.yaml: the file is 1.14 MiB",
        "a recipe is a few KiB of YAML (at most 1 MiB): is it the right file?",
        id="not-a-recipe-by-its-size",
    ),
    pytest.param(
        HEAD
        + "strategies: {scratch_mlp: {}}\n"
        + "x:\n- &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        # 6 levels of 10 aliases each: a million values in under 500 bytes
        + "".join(f"- &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 6)),
        "recipe.yaml: the recipe expands to more than 10,000 values",
        "(through YAML aliases?)",
        id="aliases-that-expand-to-millions",
    ),
    pytest.param(
        HEAD + "base: {application: MobileNetV2, weights: none, input_shape: [32, 32, 3],"
        " options: {alpha: 0.35}}\nstrategies: {feature_extraction: {}}\n",
        "base.options",
        "the 'application' base takes no options, got 'alpha'",
        id="options-the-built-in-bases-never-read",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\noutput: recipe.yaml/runs\n",
        "output",
        "recipe.yaml is a file, not a folder",
        id="output-under-a-file",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nstorage: {path: recipe.yaml/runs, shared: true}\n",
        "storage.path",
        "recipe.yaml is a file, not a folder",
        id="shared-storage-under-a-file",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nstorage: recipe.yaml\n",
        "storage.path",
        "recipe.yaml is a file, not a folder",
        id="local-storage-that-is-a-file",
    ),
    # Each passed validate, and run ended in "internal error" (exit 1).
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nresources: {cpus_per_trial: 1.0e-9}\n",
        "resources.cpus_per_trial",
        "Ray gives no share smaller than 0.0001 of a CPU or GPU; got 1e-09",
        id="a-cpu-share-ray-cannot-count",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nresources: {gpus_per_trial: 0.00001}\n",
        "resources.gpus_per_trial",
        "smaller than 0.0001",
        id="a-gpu-share-ray-cannot-count",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\nsearch: {batch_size: 100000000000000000000}\n",
        "search.batch_size",
        "less than or equal to 2147483647",
        id="a-batch-size-keras-cannot-count",
    ),
    pytest.param(
        HEAD + "strategies: {scratch_mlp: {}}\noutput: ~nobody-graftune/runs\n",
        "output",
        "there is no user 'nobody-graftune' on this machine",
        id="a-home-folder-of-no-user",
    ),
    pytest.param(
        HEAD + "base: {path: ~nobody-graftune/m.keras}\nstrategies: {fine_tune: {}}\n",
        "base.path",
        "there is no user 'nobody-graftune' on this machine",
        id="a-base-in-the-home-folder-of-no-user",
    ),
    pytest.param(
        "name: bad\ndata: {source: 'csv:~nobody-graftune/d.csv'}\nstrategies: {scratch_mlp: {}}\n",
        "data.source",
        "there is no user 'nobody-graftune' on this machine",
        id="data-in-the-home-folder-of-no-user",
    ),
]


def test_the_table_of_bad_recipes_is_large_enough() -> None:
    assert len(BAD_RECIPES) >= 20


def test_errors_name_the_recipe_as_the_user_did(tmp_path, monkeypatch):
    """Schema errors and later checks' errors alike (the later ones said its absolute path)."""
    write_recipe(tmp_path, HEAD + "strategies: {fine_tune: {}}\n")
    monkeypatch.chdir(tmp_path)
    checked = cli("validate", "recipe.yaml")
    assert checked.output.startswith("error: recipe.yaml:3: strategies.fine_tune: "), checked.output
    write_recipe(tmp_path, HEAD + "strategies: {scratch_mlp: {num_sample: 2}}\n")
    schema = cli("validate", "./recipe.yaml")
    assert schema.output.startswith("error: recipe.yaml:3: strategies.scratch_mlp."), schema.output


@pytest.mark.parametrize(("text", "key_path", "fragment"), BAD_RECIPES)
def test_bad_recipe_fails_validate_naming_file_key_and_fix(
    tmp_path: Path, text: str, key_path: str, fragment: str
) -> None:
    path = write_recipe(tmp_path, text)
    result = cli("validate", str(path))
    assert_exit(result, 2)
    output = result.output
    assert output.startswith("error: "), output
    assert path.name in output
    # The key path stands between "file[:line]: " and ": message".
    assert (key_path if ".yaml" in key_path else f": {key_path}: ") in output, output
    assert fragment in output, output
    assert "Traceback" not in output
    # Nothing in any recipe may run code (the python-tag case would create X).
    assert not (tmp_path / "X").exists()


@pytest.mark.parametrize(
    ("strategy", "key", "refused", "words", "taken"),
    [
        ("scratch_mlp", "hidden_layers", -1, "a number >= 0, got -1", 0),
        ("scratch_mlp", "width", 0, "a number >= 1, got 0", 1),
        ("scratch_mlp", "learning_rate", 0, "a number > 0, got 0", "1.0e-9"),
        ("feature_extraction", "head_width", 0, "a number >= 1, got 0", 1),
        ("feature_extraction", "head_depth", -1, "a number >= 0, got -1", 0),
        ("feature_extraction", "learning_rate", 0, "a number > 0, got 0", "1.0e-9"),
        ("fine_tune", "frozen_layers", -1, "a number >= 0, got -1", 0),
        ("fine_tune", "head_width", 0, "a number >= 1, got 0", 1),
        ("fine_tune", "learning_rate", 0, "a number > 0, got 0", "1.0e-9"),
    ],
)
def test_each_rule_of_a_built_in_strategys_values_is_kept_at_its_bound(
    tmp_path: Path, strategy: str, key: str, refused: Any, words: str, taken: Any
) -> None:
    """Found by mutation testing: `learning_rate: 0` (Adam trains nothing: every trial
    "ok" at chance) and `head_width: 0` passed validate with the rule loosened, and
    no test failed; only two of the built-ins' rules were tested."""
    head = DIGITS_BASE if strategy != "scratch_mlp" else HEAD

    def validate(value: Any) -> Result:
        text = head + f"strategies: {{{strategy}: {{space: {{{key}: {value}}}}}}}\n"
        return cli("validate", str(write_recipe(tmp_path, text)))

    result = validate(refused)
    assert_exit(result, 2)
    said = " ".join(result.output.split())
    assert f"strategies.{strategy}.space.{key}: {key} must be {words}" in said, said
    assert_exit(validate(taken), 0)  # the bound itself is taken


def test_validate_checks_each_recipe_it_is_given(tmp_path: Path) -> None:
    """Found by QA: `graftune validate recipes/*.yaml` was refused (one recipe)."""
    good = write_recipe(tmp_path, HEAD + "strategies: {scratch_mlp: {}}\n")
    (tmp_path / "bad").mkdir()
    bad = write_recipe(tmp_path / "bad", HEAD + "strategies: {scratch_mlp: {}}\nseed: x\n")
    result = cli("validate", str(bad), str(good))
    assert_exit(result, 2)  # the worst of theirs
    assert f"error: {bad}:4: seed: " in result.output
    assert f"{good}: ok (scratch_mlp on sklearn:iris)" in result.output  # checked after it
    assert_exit(cli("validate", str(good), str(good)), 0)


def test_a_recipe_shares_values_through_its_own_x_keys(tmp_path: Path) -> None:
    """Top-level keys that start with x- are the user's (as Compose's extension
    fields): a place for anchors the other sections alias or merge (<<)."""
    path = write_recipe(
        tmp_path,
        HEAD
        + "x-small: &small {width: 8, hidden_layers: 1}\n"
        + "x-notes: [any, data]\n"
        + "strategies:\n"
        + "  scratch_mlp:\n"
        + "    space:\n"
        + "      <<: *small\n"
        + "      width: 16\n",  # written in the mapping itself: wins over the merge
    )
    recipe = load_recipe(path)
    space = recipe.strategies["scratch_mlp"].space
    assert (space["width"], space["hidden_layers"]) == (16, 1)
    assert "x-small" not in recipe.to_yaml()
    assert_exit(cli("validate", str(path)), 0)
    # A nested x- key is not the user's: a section's keys are the schema's.
    path.write_text(path.read_text().replace("      width: 16", "      x-width: 16"))
    result = cli("validate", str(path))
    assert_exit(result, 2)
    assert "recipe.yaml:9: strategies.scratch_mlp.space.x-width: " in result.output


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("m.keras", "is not a .keras file: model.save() writes a zip archive"),
     ("m.h5", "is not an HDF5 (.h5) file")],
)  # fmt: skip
def test_a_base_file_that_is_no_model_fails_validate(tmp_path: Path, name, fragment) -> None:
    (tmp_path / name).write_text("not a model\n")
    path = write_recipe(
        tmp_path, HEAD + f"base: {{path: {name}}}\nstrategies: {{fine_tune: {{}}}}\n"
    )
    result = cli("validate", str(path))
    assert_exit(result, 2)
    assert ": base.path: " in result.output, result.output
    assert fragment in result.output, result.output


@pytest.mark.parametrize(
    ("rows", "key_path", "fragment"),
    [
        (
            [f"{i},{'red' if i % 2 else 'blue'},{'ab'[i % 2]}" for i in range(20)],
            "data.source",
            "non-numeric column(s) 'colour'",
        ),
        (
            [f"{i},{i % 3},{'ab'[i % 2]}" for i in range(20)] + ["20,1,c"],
            "data.split",
            "class 'c' has 1 example(s)",
        ),
    ],
    ids=["text-column", "class-too-small"],
)
def test_validate_data_finds_what_only_reading_the_data_shows(
    tmp_path: Path, rows: list[str], key_path: str, fragment: str
) -> None:
    (tmp_path / "d.csv").write_text("x,colour,y\n" + "\n".join(rows) + "\n")
    path = write_recipe(
        tmp_path, "name: d\ndata: {source: 'csv:d.csv', target: y}\nstrategies: {scratch_mlp: {}}\n"
    )
    assert_exit(cli("validate", str(path)), 0)  # without --data the file is not read
    result = cli("validate", str(path), "--data")
    assert_exit(result, 2)
    assert f"{path}:2: {key_path}: " in result.output, result.output
    assert fragment in result.output, result.output
    # Found by QA: data.split was named at data:'s line with no word that the recipe
    # has none (its default split is at fault); data.source is in the recipe.
    default = "(split is not in the recipe: this is its default)"
    assert (default in result.output) == (key_path == "data.split"), result.output


def test_a_tables_label_column_left_unnamed_is_asked_for_and_guessed(tmp_path: Path) -> None:
    """Found by QA: a table whose labels are in a column named 'target' was refused
    with "(target is not in the recipe: this is its default)", where it has none; and
    an image_size left out was called its default too."""
    from PIL import Image

    wine = pd.read_csv(WINE_CSV).rename(columns={"cultivar": "target"})
    wine.to_csv(tmp_path / "t.csv", index=False)
    path = write_recipe(tmp_path, "name: t\ndata: {source: 'csv:t.csv'}\n"
                        "strategies: {scratch_mlp: {}}\n")  # fmt: skip
    said = " ".join(cli("validate", str(path)).output.split())
    assert f"{path.name}:2: data.target: a table's label column has no default: name it " in said
    assert said.endswith("'proline', 'target'; perhaps target: target"), said
    assert "not in the recipe" not in said
    for size in (4, 5):  # images of two sizes, and no image_size: it has no default
        for i in range(4):
            folder = tmp_path / "pics" / f"c{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("L", (size, size)).save(folder / f"{size}-{i}.png")
    path = write_recipe(tmp_path, "name: p\ndata: {source: 'images:pics'}\n"
                        "strategies: {scratch_mlp: {}}\n")  # fmt: skip
    said = " ".join(cli("validate", str(path), "--data").output.split())
    assert ": data.image_size: " in said and said.endswith("(image_size is not in the recipe)")


def test_validate_data_prints_the_splits_a_run_would_make(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, "name: w\ndata: {source: 'csv:{wine}', target: cultivar}\n"
                        "strategies: {scratch_mlp: {}}\n")  # fmt: skip
    result = cli("validate", str(path), "--data")
    assert_exit(result, 0)
    assert "data: 106 train / 36 val / 36 test, 3 classes, inputs (13,)" in result.output


def test_validate_data_says_what_trains_but_not_as_it_should(tmp_path: Path) -> None:
    # Found by QA: wine with every row thrice (its test rows are training rows) and its
    # proline in units 1e10 too large trained with no word.
    wine = pd.read_csv(WINE_CSV)
    wine["proline"] = wine["proline"] * 1e20
    pd.concat([wine] * 3).to_csv(tmp_path / "d.csv", index=False)
    path = write_recipe(tmp_path, "name: d\ndata: {source: 'csv:d.csv', target: cultivar}\n"
                        "strategies: {scratch_mlp: {}}\n")  # fmt: skip
    result = cli("validate", str(path), "--data")
    assert_exit(result, 0)
    notes = [line for line in result.output.splitlines() if line.startswith("note: data: ")]
    assert len(notes) == 2, result.output
    assert " of the 214 validation and test examples are copies of training examples" in notes[0]
    assert notes[1].startswith("note: data: feature(s) 'proline' vary by more than 1.8e+19")

    pd.read_csv(WINE_CSV).to_csv(tmp_path / "d.csv", index=False)
    result = cli("validate", str(path), "--data")
    assert_exit(result, 0)
    assert "note:" not in result.output, result.output


def test_a_quoted_true_or_false_is_said_to_be_a_string(tmp_path: Path) -> None:
    # Found by QA: "expected true or false; got 'false'", and "2" is taken for 2.
    path = write_recipe(tmp_path, HEAD + "strategies: {scratch_mlp: {}}\ncache: 'false'\n")
    result = cli("validate", str(path))
    assert_exit(result, 2)
    assert "cache: expected true or false; got 'false' (a string, in quotes: write it " in (
        result.output
    )


def test_python_tags_are_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "X"
    path = write_recipe(
        tmp_path,
        f"""
        name: !!python/object/apply:os.system ["touch {marker}"]
        data: {{source: 'sklearn:iris'}}
        strategies: {{scratch_mlp: {{}}}}
        """,
    )
    result = cli("validate", str(path))
    assert_exit(result, 2)
    assert "python/object/apply:os.system" in result.output
    assert not marker.exists()
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.line == 1
    assert not marker.exists()


def test_unknown_keras_application_suggests_the_nearest(tmp_path: Path) -> None:
    # The only test here that imports keras (to list keras.applications).
    path = write_recipe(
        tmp_path, HEAD + "base: {application: ResNet5}\nstrategies: {fine_tune: {}}\n"
    )
    result = cli("validate", str(path))
    assert_exit(result, 2)
    assert f"{path.name}:3: base.application: " in result.output
    assert "unknown keras application 'ResNet5' (did you mean 'ResNet50'?)" in result.output


def test_a_pipe_is_read_no_further_than_a_recipe_can_be(tmp_path: Path) -> None:
    """A pipe or a device has a size of 0: validate /dev/zero read 16 GB in 25 s."""
    import threading

    pipe = tmp_path / "recipe.yaml"
    os.mkfifo(pipe)

    def write() -> None:
        try:
            with pipe.open("w") as stream:
                stream.write(HEAD + "strategies: {scratch_mlp: {}}\n" + "# padding\n" * 120_000)
        except BrokenPipeError:  # the reader stopped at the limit
            pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    # load_recipe, as validate and run read it first (for plugins.disable): their
    # second read of the pipe would wait for a writer.
    with pytest.raises(
        RecipeError, match=r"recipe\.yaml: the file is over 1 MiB; a recipe is a few"
    ):
        load_recipe(pipe)
    writer.join(timeout=10)


def test_missing_recipe_file(tmp_path: Path) -> None:
    result = cli("validate", str(tmp_path / "nope.yaml"))
    assert_exit(result, 2)
    assert "nope.yaml: no such recipe file" in result.output


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            HEAD + "strategies: {scratch_mlp: {}, true: {}}\n",
            "recipe.yaml:3: strategies: a key should be text; got true (YAML reads yes, no,",
        ),
        (
            HEAD + "strategies: {scratch_mlp: {space: {1.5: 3}}}\n",
            "recipe.yaml:3: strategies.scratch_mlp.space: a key should be text; got 1.5",
        ),
        (
            "null: x\n" + HEAD + "strategies: {scratch_mlp: {}}\n",
            "recipe.yaml: a key should be text; got null (YAML reads an empty value",
        ),
    ],
)
def test_a_key_that_is_not_text_is_named_at_its_mapping(tmp_path: Path, text, said) -> None:
    """Found by QA: `true:` read as "strategies.1.[key]", `null:` as the path "None"."""
    result = cli("validate", str(write_recipe(tmp_path, text)))
    assert_exit(result, 2)
    assert said in " ".join(result.output.split()), result.output
    assert "[key]" not in result.output


def test_a_recipe_that_is_not_utf8_names_the_line_or_says_utf16(tmp_path: Path) -> None:
    """Found by QA: the codec's "can't decode byte 0xe9 in position 75", no line."""
    latin = tmp_path / "latin.yaml"
    latin.write_bytes((HEAD + "strategies: {scratch_mlp: {}}\n# caf\xe9\n").encode("latin-1"))
    result = cli("validate", str(latin))
    assert_exit(result, 2)
    assert (
        f"{latin}:4: cannot read the recipe: byte {len(HEAD) + 36} is not UTF-8 (0xe9, 'é' in "
        "Windows-1252): a recipe is UTF-8 text; save it as UTF-8"
    ) in " ".join(result.output.split())
    wide = tmp_path / "wide.yaml"
    wide.write_text(HEAD, encoding="utf-16")
    result = cli("validate", str(wide))
    assert_exit(result, 2)
    assert f"{wide}: cannot read the recipe: it is UTF-16 (its first bytes say so)" in (
        " ".join(result.output.split())
    )
    assert not (tmp_path / "runs").exists()


def test_a_folder_is_not_a_recipe(tmp_path: Path) -> None:
    """Found by QA: a run directory given for its recipe said "cannot read the
    recipe: [Errno 21] Is a directory"; a folder of runs given for a run, only that
    it is none."""
    from orchestrator.errors import RunDirError
    from orchestrator.predict import find_model

    result = cli("validate", str(tmp_path))
    assert_exit(result, 2)
    assert f"{tmp_path}: is a folder, not a recipe file\n" in result.output
    run_dir = tmp_path / "runs" / "r-20261201-120000"
    (run_dir / "trials").mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text(HEAD + "strategies: {scratch_mlp: {}}\n")
    result = cli("validate", str(run_dir))
    assert_exit(result, 2)
    assert f"is a folder, not a recipe file: a run directory's recipe is {run_dir}/recipe.yaml" in (
        result.output
    )
    with pytest.raises(RunDirError, match=f"holds a run directory, and is none: name one, as "
                       f"{re.escape(str(run_dir))}$"):  # fmt: skip
        find_model(tmp_path / "runs", None)


def test_an_error_quotes_a_long_value_in_short(tmp_path: Path) -> None:
    """A choice of 5000 numbers was quoted whole (39 KB), and lists YAML aliases repeat
    made megabytes of error text."""
    numbers = ", ".join(map(str, range(1, 4000)))  # twice: under 10,000 values
    schema = (
        HEAD + "strategies: {scratch_mlp: {}}\n"
        f"submit: {{pip: [[{numbers}]]}}\nsearch: {{metric: [{numbers}]}}\n"
    )
    space = (
        HEAD + f"strategies: {{scratch_mlp: {{space: {{width: {{choice: [{numbers}, 2.5]}}}}}}}}\n"
    )
    for text, quoted in [
        (schema, "submit.pip.0: input should be a valid string; got [1, 2, 3, "),
        (space, "width takes whole numbers; got choice [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ...]"),
    ]:
        result = cli("validate", str(write_recipe(tmp_path, text)))
        assert_exit(result, 2)
        assert quoted in result.output, result.output
        assert all(len(line) < 500 for line in result.output.splitlines()), result.output


def test_deeply_nested_yaml_is_a_recipe_error(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, "name: " + "[" * 5000 + "]" * 5000 + "\n")
    result = cli("validate", str(path))
    assert_exit(result, 2)
    assert "nested too deeply" in result.output


def test_debug_shows_the_traceback_and_keeps_the_exit_status(tmp_path: Path) -> None:
    """--debug exited 1 for every error: a script read a bad recipe as a crash."""
    path = write_recipe(tmp_path, HEAD + "strategies: {fine_tun: {}}\n")
    result = cli("--debug", "validate", str(path))
    assert_exit(result, 2)
    assert "Traceback (most recent call last)" in result.output
    assert "RecipeError" in result.output


@pytest.mark.parametrize("where", [0, 1, 2])
def test_debug_may_follow_the_command(tmp_path: Path, where: int) -> None:
    """`graftune validate r.yaml --debug`, as other tools take it, said "No such option"."""
    from orchestrator.cli import debug_first

    path = write_recipe(tmp_path, HEAD + "strategies: {fine_tun: {}}\n")
    args = ["validate", str(path)]
    args.insert(where, "--debug")
    result = cli(*debug_first(args))
    assert_exit(result, 2)
    assert "Traceback (most recent call last)" in result.output


def test_debug_after_a_double_dash_is_an_argument() -> None:
    from orchestrator.cli import debug_first

    assert debug_first(["predict", "--", "--debug"]) == ["predict", "--", "--debug"]
    assert debug_first(["run", "--debug", "--", "--debug"]) == ["--debug", "run", "--", "--debug"]


def test_a_shared_value_a_strategy_overrides_is_not_checked_for_it(
    tmp_path: Path, host: PluginHost
) -> None:
    # Per-strategy entries win, so the shared float never reaches scratch_mlp.
    path = write_recipe(
        tmp_path,
        """
        name: shadowed
        data: {source: 'sklearn:iris'}
        strategies:
          scratch_mlp:
            space: {hidden_layers: {int: [1, 2]}}
        search:
          space: {hidden_layers: {float: [1, 2]}}
        """,
    )
    validate_recipe(path, host)


# -- line numbers ----------------------------------------------------------------------


def test_error_names_the_line_of_a_nested_key(tmp_path: Path) -> None:
    path = write_recipe(
        tmp_path,
        """
        # a comment, then a blank line

        name: lines
        data:
          source: sklearn:iris
        strategies:
          scratch_mlp:
            space:
              hidden_layers: {float: [1, 3]}
        search:
          num_samples: 2
          scheduler: pbt
        """,
    )
    result = cli("validate", str(path))
    assert_exit(result, 2)
    assert re.search(rf"{re.escape(path.name)}:12: search\.scheduler: ", result.output)


def test_plugin_checks_name_the_line_too(tmp_path: Path) -> None:
    path = write_recipe(
        tmp_path,
        """
        name: lines
        data:
          source: csv:{wine}
          target: cultivr
        strategies:
          scratch_mlp:
            space:
              hidden_layers: {float: [1, 3]}
        """,
    )
    result = cli("validate", str(path))
    assert_exit(result, 2)
    assert f"{path.name}:4: data.target: " in result.output
    assert f"{path.name}:8: strategies.scratch_mlp.space.hidden_layers: " in result.output


def test_recipe_error_carries_file_line_and_key_path(tmp_path: Path) -> None:
    path = write_recipe(
        tmp_path,
        """
        name: lines
        data:
          source: sklearn:iris
          split:
            val: 0.1
            test: 1.5
        strategies: {scratch_mlp: {}}
        """,
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    error = info.value
    assert error.exit_status == 2
    assert error.file == str(path)
    assert error.path == "data.split.test"
    assert error.line == 6
    assert str(error).startswith(f"{path}:6: data.split.test: ")


def test_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, "name: x\ndata:\n  source: 'sklearn:iris\nstrategies: {}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.line is not None
    assert f"{path}:{info.value.line}: not valid recipe YAML" in str(info.value)


# -- several errors at once ---------------------------------------------------------------


def test_all_schema_errors_are_reported_together(tmp_path: Path) -> None:
    path = write_recipe(
        tmp_path,
        """
        name: many
        data: {source: 'sklearn:iris', labels_per_class: 0}
        strategies: {scratch_mlp: {}}
        search: {num_samples: 0, schedular: asha}
        resources: {cpus_per_trial: -1}
        """,
    )
    result = cli("validate", str(path))
    assert_exit(result, 2)
    assert "4 problems in the recipe:" in result.output
    for key in (
        "data.labels_per_class",
        "search.num_samples",
        "search.schedular",
        "resources.cpus_per_trial",
    ):
        assert f": {key}: " in result.output
    with pytest.raises(RecipeErrors) as info:
        load_recipe(path)
    assert len(info.value.errors) == 4
    assert all(e.file == str(path) and e.line for e in info.value.errors)


def test_all_plugin_check_errors_are_reported_together(tmp_path: Path, host: PluginHost) -> None:
    path = write_recipe(
        tmp_path,
        """
        name: many
        data: {source: 'sklearn:digts'}
        strategies:
          fine_tun: {}
          scratch_mlp:
            space: {widht: {choice: [8]}, hidden_layers: {int: [2, 1]}}
        search:
          space: {lambda: {loguniform: [0, 1]}}
        """,
    )
    result = cli("validate", str(path))
    assert_exit(result, 2)
    assert "5 problems in the recipe:" in result.output
    # Listed as they come in the file (the checks find them in another order).
    lines = [int(m) for m in re.findall(rf"{re.escape(str(path))}:(\d+):", result.output)]
    assert len(lines) == 5 and lines == sorted(lines), result.output
    with pytest.raises(RecipeErrors) as info:
        validate_recipe(path, host)
    assert sorted(e.path or "" for e in info.value.errors) == [
        "data.source",
        "search.space.lambda",
        "strategies.fine_tun",
        "strategies.scratch_mlp.space.hidden_layers",
        "strategies.scratch_mlp.space.widht",
    ]
    assert all(e.line for e in info.value.errors)


def test_duplicate_keys_are_all_reported(tmp_path: Path) -> None:
    path = write_recipe(
        tmp_path,
        """
        name: a
        name: b
        data: {source: 'sklearn:iris', source: 'sklearn:wine'}
        strategies: {scratch_mlp: {}}
        """,
    )
    with pytest.raises(RecipeErrors) as info:
        load_recipe(path)
    assert [(e.path, e.line) for e in info.value.errors] == [("name", 2), ("data.source", 3)]


# -- graftune run on a bad recipe ---------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "data: {source: 'sklearn:iris'}\nstrategies: {scratch_mlp: {}}\nsearch: {num_samples: 0}\n",
        "data: {source: 'sklearn:iris'}\nstrategies: {fine_tun: {}}\n",
        "data: {source: 'csv:missing.csv', target: y}\nstrategies: {scratch_mlp: {}}\n",
        "data: {source: 'sklearn:iris'}\nstrategies: {fine_tune: {}}\n",
    ],
    ids=["schema", "unknown-strategy", "missing-csv", "missing-base"],
)
def test_run_on_a_bad_recipe_exits_2_and_writes_nothing(tmp_path: Path, body: str) -> None:
    out = tmp_path / "out"
    path = write_recipe(tmp_path, f"name: bad\noutput: {out}\n" + body)
    before = sorted(tmp_path.iterdir())
    result = cli("run", str(path))
    assert_exit(result, 2)
    assert path.name in result.output
    assert not out.exists()
    assert sorted(tmp_path.iterdir()) == before


def test_run_with_a_run_dir_on_a_bad_recipe_creates_no_run_dir(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, HEAD + "strategies: {fine_tun: {}}\n")
    run_dir = tmp_path / "the-run"
    result = cli("run", str(path), "--run-dir", str(run_dir))
    assert_exit(result, 2)
    assert "did you mean 'fine_tune'?" in result.output
    assert not run_dir.exists()


def test_run_on_a_bad_recipe_imports_neither_tensorflow_nor_ray(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, HEAD + "strategies: {fine_tun: {}}\n")
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from orchestrator.cli import app\n"
        f"result = CliRunner().invoke(app, ['run', {str(path)!r}])\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'ray') if m in sys.modules]\n"
        "print(result.exit_code, heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "2 []"


# -- relative paths -------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_recipe_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    write_recipe(
        project,
        """
        name: rel
        data: {source: 'sklearn:digits'}
        base: {path: models/b.keras}
        strategies: {feature_extraction: {}}
        output: out/
        """,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for name in (project / "recipe.yaml", Path("..") / "project" / "recipe.yaml"):
        recipe = load_recipe(name)
        assert recipe.file == (project / "recipe.yaml").resolve()
        assert recipe.base_dir == project.resolve()
        assert recipe.base is not None
        assert recipe.base.path == (project / "models" / "b.keras").resolve()
        assert recipe.output == (project / "out").resolve()


def test_relative_weights_resolve_and_absolute_paths_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    absolute_out = tmp_path / "runs"
    write_recipe(
        project,
        f"""
        name: rel
        data: {{source: 'sklearn:digits'}}
        base: {{application: MobileNetV3Small, weights: weights/m.weights.h5}}
        strategies: {{fine_tune: {{}}}}
        output: {absolute_out}
        """,
    )
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(project / "recipe.yaml")
    assert recipe.base is not None
    assert recipe.base.weights == str((project / "weights" / "m.weights.h5").resolve())
    assert recipe.output == absolute_out


@pytest.mark.parametrize("weights", ["imagenet", "none"])
def test_keyword_weights_are_not_paths(tmp_path: Path, weights: str) -> None:
    path = write_recipe(
        tmp_path,
        f"""
        name: kw
        data: {{source: 'sklearn:digits'}}
        base: {{application: ResNet50, weights: {weights}}}
        strategies: {{fine_tune: {{}}}}
        """,
    )
    recipe = load_recipe(path)
    assert recipe.base is not None and recipe.base.weights == weights


def test_default_output_is_runs_next_to_the_recipe(tmp_path: Path) -> None:
    path = write_recipe(tmp_path / "sub", GOOD_RECIPES["minimal"])
    assert load_recipe(path).output == (tmp_path / "sub" / "runs").resolve()


def test_relative_data_files_are_checked_against_the_recipe_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The csv exists relative to the working directory but not to the recipe: an error.
    shutil.copyfile(WINE_CSV, tmp_path / "wine.csv")
    path = write_recipe(
        tmp_path / "project",
        "name: rel\ndata: {source: 'csv:wine.csv', target: cultivar}\n"
        "strategies: {scratch_mlp: {}}\n",
    )
    monkeypatch.chdir(tmp_path)
    result = cli("validate", str(path))
    assert_exit(result, 2)
    assert str(tmp_path / "project" / "wine.csv") in result.output


# -- the resolved recipe round-trips -------------------------------------------------------


def assert_same_recipe(a: Recipe, b: Recipe) -> None:
    for field in Recipe.model_fields:
        assert getattr(a, field) == getattr(b, field), field
    assert a.model_dump() == b.model_dump()


def test_a_runs_recorded_recipe_is_read_as_it_was_written(tmp_path):
    """Checks added since a run began do not refuse its recipe.yaml: predict and
    --resume of runs made before failed on an application's `weights: null`
    (imagenet, as older graftune wrote it) and on grace_period equal to max_epochs;
    a reduction_factor below 1.1 likewise (found by mutation testing: untested)."""
    text = HEAD + (
        "base: {application: MobileNetV3Small, weights: null}\n"
        "strategies: {feature_extraction: {}}\n"
        "search: {scheduler: asha, grace_period: 2, max_epochs: 2, reduction_factor: 1.05}\n"
    )
    run_dir = tmp_path / "run"
    (run_dir / "trials").mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text(text)
    recipe = load_recipe(run_dir / "recipe.yaml")
    assert recipe.base is not None and recipe.base.weights == "imagenet"
    assert recipe.search.grace_period == recipe.search.max_epochs == 2
    assert recipe.search.reduction_factor == 1.05
    (tmp_path / "mine.yaml").write_text(text)  # a user's recipe: each refused
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "mine.yaml")
    assert "base.weights" in str(info.value) and "search.grace_period" in str(info.value)
    (tmp_path / "mine.yaml").write_text(text.replace("grace_period: 2", "grace_period: 1"))
    with pytest.raises(RecipeError, match=r"search\.reduction_factor"):
        load_recipe(tmp_path / "mine.yaml")


def test_the_defaults_a_run_works_out_are_written_in(tmp_path):
    """A run's recipe.yaml says how it ranked and how many trials each search ran."""
    text = HEAD + (
        "strategies: {scratch_mlp: {}, feature_extraction: {num_samples: 3}}\n"
        "base: {pretrain: {data: {source: 'sklearn:iris'}}}\n"
        "search: {metric: val_loss, algorithm: grid}\n"
    )
    recipe = load_recipe(write_recipe(tmp_path, text))
    assert (recipe.search.mode, recipe.search.num_samples) == (None, None)
    worked_out = recipe.with_defaults_worked_out()
    assert (worked_out.search.mode, worked_out.search.num_samples) == ("min", 1)
    assert {n: s.num_samples for n, s in worked_out.strategies.items()} == {
        "scratch_mlp": 1,
        "feature_extraction": 3,
    }
    again = load_recipe(write_recipe(tmp_path, worked_out.to_yaml(), "again.yaml"))
    assert (again.search, again.strategies) == (worked_out.search, worked_out.strategies)
    random = load_recipe(write_recipe(tmp_path, HEAD + "strategies: {scratch_mlp: {}}\n", "r.yaml"))
    assert random.with_defaults_worked_out().strategies["scratch_mlp"].num_samples == 8


@pytest.mark.parametrize("text", GOOD_RECIPES.values(), ids=GOOD_RECIPES.keys())
def test_to_yaml_parses_back_to_an_equal_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    recipe = load_recipe(write_recipe(tmp_path / "project", text))
    dumped = recipe.to_yaml()
    assert isinstance(yaml.safe_load(dumped), dict)
    # Paths in the dump are absolute, so neither the working directory nor
    # the folder of the copy changes what it means.
    monkeypatch.chdir(tmp_path)
    assert_same_recipe(parse_recipe(dumped), recipe)
    copy = tmp_path / "elsewhere" / "recipe.yaml"
    copy.parent.mkdir()
    copy.write_text(dumped, encoding="utf-8")
    again = load_recipe(copy)
    assert_same_recipe(again, recipe)
    assert again.to_yaml() == dumped


@pytest.mark.parametrize("path", RECIPE_FILES, ids=[p.name for p in RECIPE_FILES])
def test_shipped_recipes_round_trip(path: Path) -> None:
    recipe = load_recipe(path)
    assert_same_recipe(parse_recipe(recipe.to_yaml()), recipe)


def test_to_yaml_keeps_every_setting(tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tmp_path, GOOD_RECIPES["every-section"]))
    data = yaml.safe_load(recipe.to_yaml())
    assert data["seed"] == 7
    assert data["data"]["classes"] == [5, 6, 7, 8, 9]
    assert data["data"]["image_size"] == [8, 8]
    assert data["strategies"]["fine_tune"]["space"]["frozen_layers"] == {"int": [0, "all"]}
    assert data["search"]["space"]["lambda"] == {"loguniform": [1e-6, 1e-2]}
    assert data["search"]["mode"] == "min"
    assert data["resources"]["cpus_per_trial"] == 0.5
    assert data["output"] == str(tmp_path / "runs")


def test_recipes_are_frozen(tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tmp_path, GOOD_RECIPES["minimal"]))
    with pytest.raises(ValueError, match="frozen"):
        recipe.name = "changed"  # type: ignore[misc]
    with pytest.raises(ValueError, match="frozen"):
        recipe.search.num_samples = 1  # type: ignore[misc]


def test_validate_notes_what_embedded_ray_here_would_refuse(tmp_path):
    """It said ok, and `graftune run` refused the same recipe (exit 2) on this machine."""
    from orchestrator.tuning.ray_start import embedded_gpus

    path = write_recipe(
        tmp_path, HEAD + "strategies: {scratch_mlp: {}}\nresources: {gpus_per_trial: 0.5}\n"
    )
    result = cli("validate", str(path))
    assert_exit(result, 0)  # meant for a cluster, maybe: said, not refused
    said = "resources.gpus_per_trial: a trial asks for 0.5 GPUs, and Ray has none"
    assert (said in result.output) == (embedded_gpus() == 0), result.output
    if embedded_gpus() == 0:
        assert "note: " in result.output and "`graftune run` here would refuse it" in (
            result.output
        )
        # --here: for a CI check of recipes meant for this machine (QA: a note was
        # useless as a gate).
        strict = cli("validate", str(path), "--here")
        assert_exit(strict, 2)
        assert strict.output.startswith("error: ") and said in strict.output
        assert ": ok" not in strict.output and "would refuse it" not in strict.output
    plain = write_recipe(tmp_path, HEAD + "strategies: {scratch_mlp: {}}\n")
    assert_exit(cli("validate", str(plain), "--here"), 0)
    on_cluster = write_recipe(
        tmp_path,
        HEAD + "strategies: {scratch_mlp: {}}\n"
        "resources: {gpus_per_trial: 0.5, address: '10.0.0.5:6379'}\n",
    )
    said = cli("validate", str(on_cluster)).output
    assert "note:" not in said
    # Found by security QA: a recipe's cluster is sent the data and the Ray token at hand.
    assert (
        "runs on the Ray cluster at 10.0.0.5:6379 (resources.address), which is sent the "
        "data (and a Ray token at hand, if it asks for one)"
    ) in said
    # Found by QA: validate said ok to addresses run refuses; now refused at their line.
    for address, words in (
        ("http://10.0.0.5:8265", "is a dashboard address"),
        ("ray://10.0.0.5:10001", "is a Ray Client address"),
        ("headnode", "'headnode' is not a cluster address: expected HOST:PORT"),
        ("localhost:99999", "'localhost:99999': port 99999 is not a TCP port (1 to 65535)"),
        ("10.0.0.5:0", "port 0 is not a TCP port"),
    ):
        wrong = write_recipe(
            tmp_path,
            HEAD + f"strategies: {{scratch_mlp: {{}}}}\nresources: {{address: '{address}'}}\n",
        )
        refused = cli("validate", str(wrong))
        assert refused.exit_code == 2, refused.output
        assert f"recipe.yaml:{HEAD.count(chr(10)) + 2}: resources.address: " in refused.output
        assert words in " ".join(refused.output.split())
    plain = write_recipe(tmp_path, HEAD + "strategies: {scratch_mlp: {}}\n")
    plain_said = cli("validate", str(plain)).output
    assert "runs on the Ray cluster" not in plain_said
    assert "stores the run at" not in plain_said and "has the cluster install" not in plain_said
    # Found by security QA: nor where the run is stored, nor what a job installs.
    elsewhere = write_recipe(
        tmp_path,
        HEAD + "strategies: {scratch_mlp: {}}\nstorage: s3://someone-elses/runs\n"
        "submit: {pip: ['--index-url=http://203.0.113.7/simple', 'their-plugin']}\n",
    )
    said = " ".join(cli("validate", str(elsewhere)).output.split())
    assert (
        "stores the run at s3://someone-elses/runs (storage), uploading its models, "
        "predictions and recipe with the credentials at hand"
    ) in said
    assert (
        "`graftune submit` has the cluster install --index-url=http://203.0.113.7/simple, "
        "their-plugin (submit.pip), and loads the graftune plugins they bring"
    ) in said


def test_a_recipe_through_a_pipe_is_read_once_and_its_paths_are_from_here(tmp_path):
    """Found by QA: `cat r.yaml | graftune validate /dev/stdin` said the recipe was
    empty: the command reads a recipe twice (its plugins.disable first). Its paths
    are from the current folder (they were from /proc/PID/fd, /dev/stdin resolved)."""
    import subprocess

    from PIL import Image

    from tests.search_helpers import GRAFTUNE

    for name in [f"pics/{c}/{i}.png" for c in "ab" for i in range(5)] + ["pics/loose.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4)).save(tmp_path / name)
    text = (
        "name: piped\ndata: {source: 'images:pics', image_size: 4}\n"
        "strategies: {scratch_mlp: {}}\noutput: runs/\n"
    )

    def validate(*args: str, **stdin: Any) -> subprocess.CompletedProcess:
        return subprocess.run(
            [GRAFTUNE, "validate", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            **stdin,
        )

    for name in ("-", "/dev/stdin"):  # found by QA: "-: no such recipe file"
        done = validate("--data", name, input=text)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{name}: ok (scratch_mlp on images:pics)" in done.stdout
    # < sub/r.yaml: stdin is a file (found by QA), elsewhere than here; its paths are
    # still from here, for /dev/stdin as for - (found by QA: from sub/, /dev/stdin
    # resolved to the file).
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "r.yaml").write_text(text)
    for name in ("-", "/dev/stdin"):
        with open(tmp_path / "sub" / "r.yaml") as redirected:
            done = validate("--data", name, stdin=redirected)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{name}: ok (scratch_mlp on images:pics)" in done.stdout
    shutil.rmtree(tmp_path / "sub")
    bad = validate("-", input=text.replace("image_size: 4", "image_sise: 4"))
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: -:2: data.image_sise: unknown key"), bad.stderr
    # A warning is a `warning:` line, as a run says its own (found by QA: "WARNING
    # orchestrator.data.sources: ..." here, the bare message from other commands).
    assert f"warning: {tmp_path / 'pics'}: 1 image file(s) beside the class folders" in (
        done.stderr
    ), done.stderr
    assert "WARNING" not in done.stderr
    # A file named "-" here is "./-": "-" is stdin still (found by QA: the file was
    # read, and the recipe piped in ignored, unsaid).
    (tmp_path / "-").write_text(text)
    bad = validate("-", input=text.replace("image_size: 4", "image_sise: 4"))
    assert bad.returncode == 2 and "data.image_sise: unknown key" in bad.stderr, bad.stderr
    done = validate("./-", input="not: a recipe")
    assert done.returncode == 0 and f"{tmp_path / '-'}: ok" in done.stdout, done.stderr


def test_a_path_option_of_dot_slash_dash_names_a_file_not_stdout(tmp_path, monkeypatch):
    """Found by QA: ``predict --out ./-`` and ``report --out ./-`` wrote to stdout (Path
    makes "./-" the "-" that means stdout), where ``./-`` is how a file "-" is named."""
    from orchestrator.cli import _path

    monkeypatch.chdir(tmp_path)
    assert _path("-") == Path("-")
    assert _path("./-") == _path(".//-") == tmp_path / "-"
    assert _path("out/-") == Path("out/-")


def test_an_error_line_shows_control_characters_as_escapes(tmp_path):
    """Found by QA: a recipe's path with a terminal's escape sequences came back raw in
    the error line (set the window's title, cleared the screen)."""
    path = write_recipe(
        tmp_path,
        'name: x\ndata: {source: "csv:a\\e]0;PWNED\\a\\e[2Jb.csv"}\nstrategies: {scratch_mlp: {}}\n',
    )
    result = cli("validate", str(path))
    assert_exit(result, 2)
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert r"a\x1b]0;PWNED\x07\x1b[2Jb.csv" in result.output


def test_a_pretrain_base_that_cannot_take_the_data_is_refused_before_training(tmp_path):
    """validate --data passed it, and the run refused it after pretraining the base."""
    text = (
        "name: bad\ndata: {source: 'sklearn:wine'}\n"
        "base: {pretrain: {data: {source: 'sklearn:iris'}, epochs: 1}}\n"
        "strategies: {feature_extraction: {}}\noutput: out/\n"
    )
    path = write_recipe(tmp_path, text)
    assert_exit(cli("validate", str(path)), 0)  # without --data, shapes are not known
    for command in (("validate", "--data", str(path)), ("run", str(path))):
        result = cli(*command)
        assert_exit(result, 2)
        assert "recipe.yaml:3: base.pretrain: the run's data has inputs of shape (13,)" in (
            result.output
        )
        assert "pretrained on sklearn:iris takes (4,)" in result.output
        assert "pretrain on data whose inputs the run's can be adapted to" in result.output
    assert not (tmp_path / "out").exists()
    # RGB images on a grey base: the fix is a key (found by QA: grey PNGs, which
    # images: reads as RGB, on the quick start's base).
    path.write_text(
        "name: bad\ndata: {source: 'sklearn:digits', channels: 3}\n"
        "base: {pretrain: {data: {source: 'sklearn:digits'}, epochs: 1}}\n"
        "strategies: {feature_extraction: {}}\noutput: out/\n"
    )
    result = cli("validate", "--data", str(path))
    assert_exit(result, 2)
    assert " ".join(result.output.split()).endswith(
        "takes (8, 8, 1), which graftune cannot adapt (it resizes images, turns grey into "
        "RGB and flattens images for dense bases): read the run's images grey with "
        "data.channels: 1 (images: reads RGB unless told), or pretrain on RGB with "
        "base.pretrain.data.channels: 3"
    ), result.output


def test_validate_data_loads_a_base_file_and_refuses_what_the_run_would(tmp_path):
    """Found by QA: validate --data said ok to .keras bases the run refused in its first
    seconds: inputs the data cannot be adapted to, two outputs, a Lambda layer."""
    import keras

    from orchestrator.feature_cache import cache_dir

    inputs = keras.Input((13,))
    keras.Model(inputs, keras.layers.Dense(8)(inputs)).save(tmp_path / "table.keras")
    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inputs)
    two = [keras.layers.Dense(4)(flat), keras.layers.Dense(3)(flat)]
    keras.Model(inputs, two).save(tmp_path / "two.keras")
    keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(flat)).save(tmp_path / "code.keras")
    keras.Model(inputs, flat).save(tmp_path / "good.keras")
    cached = sorted(cache_dir().rglob("*"))
    for name, said in (
        ("table", "base.path: the data's inputs have shape (8, 8, 1) but the base takes (13,)"),
        ("two", "base.path: the base model has 1 input(s) and 2 output(s)"),
        ("code", "base.path: cannot load"),
    ):
        path = write_recipe(
            tmp_path,
            "name: b\ndata: {source: 'sklearn:digits'}\n"
            f"base: {{path: {name}.keras}}\nstrategies: {{feature_extraction: {{}}}}\n",
        )
        assert_exit(cli("validate", str(path)), 0)  # without --data, no model is loaded
        result = cli("validate", "--data", str(path))
        assert_exit(result, 2)
        assert f"recipe.yaml:3: {said}" in result.output
    path.write_text(path.read_text().replace("code.keras", "good.keras"))
    assert_exit(cli("validate", "--data", str(path)), 0)
    # Its cut points counted: a frozen_layers past them is refused as the run would.
    inputs = keras.Input((8, 8, 1))
    dense = keras.layers.Dense(8)(keras.layers.Dense(16)(keras.layers.Flatten()(inputs)))
    keras.Model(inputs, dense).save(tmp_path / "dense.keras")
    path = write_recipe(
        tmp_path,
        "name: b\ndata: {source: 'sklearn:digits'}\nbase: {path: dense.keras}\n"
        "strategies: {fine_tune: {space: {frozen_layers: {int: [0, 3]}}}}\n",
    )
    cuts_refused_by_validate_data(path, 3, 2)
    path.write_text(path.read_text().replace("[0, 3]", "[0, 2]"))
    assert_exit(cli("validate", "--data", str(path)), 0)
    assert sorted(cache_dir().rglob("*")) == cached  # nothing cached by a validate


def cuts_refused_by_validate_data(path: Path, value: int, cuts: int) -> None:
    """``validate`` of ``path`` passes (it counts no base's cut points), and ``validate
    --data`` refuses its fine_tune's ``frozen_layers`` (line 4) at ``value``, the
    base having ``cuts`` cut points."""
    assert_exit(cli("validate", str(path)), 0)
    result = cli("validate", "--data", str(path))
    assert_exit(result, 2)
    assert (
        f"recipe.yaml:4: strategies.fine_tune.space.frozen_layers: {value}: the base has cut "
        f"points 0 to {cuts} (frozen_layers counts them; 'all' is {cuts})"
    ) in " ".join(result.output.split()), result.output


def refused_by_validate_data_and_run(path: Path, said: str) -> list[str]:
    """Both ``validate --data`` and ``run`` of ``path`` exit 2 saying ``said``: their outputs."""
    outputs = []
    for command in (("validate", "--data", str(path)), ("run", str(path))):
        result = cli(*command)
        assert_exit(result, 2)
        assert said in result.output, result.output
        outputs.append(result.output)
    return outputs


def test_a_table_whose_columns_the_pretrain_table_has_elsewhere_is_refused(tmp_path):
    """Found by QA: the run's CSV held the pretrain CSV's columns reversed; the base
    took them by position, and fine_tune scored chance, in silence."""
    import pandas as pd

    wine = pd.read_csv(WINE_CSV)
    wine.to_csv(tmp_path / "pretrain.csv", index=False)
    wine[list(wine.columns)[::-1]].to_csv(tmp_path / "reversed.csv", index=False)
    text = (
        "name: rev\ndata: {source: 'csv:%s', target: cultivar}\n"
        "base: {pretrain: {data: {source: 'csv:pretrain.csv', target: cultivar}, epochs: 1}}\n"
        "strategies: {feature_extraction: {}}\noutput: out/\n"
    )
    refused_by_validate_data_and_run(
        write_recipe(tmp_path, text % "reversed.csv"),
        "recipe.yaml:3: base.pretrain.data: the run's data has column 'proline' as feature 1, "
        "and the pretrain data as feature 13 (and 11 more): a base takes a table's features "
        "by position",
    )
    assert not (tmp_path / "out").exists()
    # The same columns in the same order are taken.
    assert_exit(cli("validate", "--data", str(write_recipe(tmp_path, text % "pretrain.csv"))), 0)


def test_data_an_applications_input_shape_cannot_take_is_refused_before_its_build(
    tmp_path, monkeypatch
):
    """Found by QA: MobileNetV2 at [32, 32, 4] on grey digits passed validate --data;
    the run built and cached the base, then refused it at base.application, with
    Keras' channels warning twice (once as graftune's own line)."""
    text = (
        "name: four\ndata: {source: 'sklearn:digits', labels_per_class: 5}\n"
        "base: {application: MobileNetV2, weights: none, input_shape: [32, 32, 4]}\n"
        "strategies: {feature_extraction: {}}\noutput: out/\n"
    )
    cache = tmp_path / "cache"
    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(cache))
    for output in refused_by_validate_data_and_run(
        write_recipe(tmp_path, text),
        "recipe.yaml:3: base.input_shape: the data's inputs have shape (8, 8, 1) but the "
        "base takes (32, 32, 4)",
    ):
        assert "usually expects 1 or 3 input channels" not in output
    assert not (tmp_path / "out").exists() and not (cache / "bases").exists()


def test_validate_data_counts_an_applications_cut_points_without_its_weights(tmp_path, monkeypatch):
    """validate --data refuses a frozen_layers past a keras.applications base's cut
    points, as the run does once it has built the base: counted on its architecture
    without weights (offline, imagenet's are neither fetched nor needed; nothing is
    cached). A recipe that gives no frozen_layers builds nothing."""
    text = (
        "name: cuts\ndata: {source: 'sklearn:digits', labels_per_class: 5}\n"
        "base: {application: MobileNetV3Small, input_shape: [32, 32, 3]}\n"
        "strategies: {fine_tune: {space: {frozen_layers: {int: [1, 99]}}}}\noutput: out/\n"
    )
    cache = tmp_path / "cache"
    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(cache))
    path = write_recipe(tmp_path, text)
    cuts_refused_by_validate_data(path, 99, 26)
    for fixed in ("{frozen_layers: {int: [1, 26]}}", "{frozen_layers: {int: [1, all]}}"):
        path.write_text(text.replace("{frozen_layers: {int: [1, 99]}}", fixed))
        assert_exit(cli("validate", "--data", str(path)), 0)

    def unbuilt(spec):
        raise AssertionError("built, and no frozen_layers to check")

    monkeypatch.setattr("orchestrator.bases.application_cut_points", unbuilt)
    path.write_text(text.replace("{space: {frozen_layers: {int: [1, 99]}}}", "{}"))
    assert_exit(cli("validate", "--data", str(path)), 0)
    assert not (tmp_path / "out").exists() and not (cache / "bases").exists()


def test_a_pretrain_on_the_runs_own_source_leaves_out_its_held_out_examples(tmp_path, host):
    """Found by QA: pretrained on all of sklearn:digits (its own split), the base
    learned 155 of the 269 test examples of a run on digits 5-9 with their labels,
    and the test score was no held-out score, in silence."""
    import numpy as np

    from orchestrator.bases import data_key
    from orchestrator.recipe import check_pretrain_input, check_recipe_data

    text = """
        name: leak
        seed: 3
        data: {source: 'sklearn:digits', classes: [5, 6, 7, 8, 9], split: {val: 0.2, test: 0.3}}
        base: {pretrain: {data: {source: 'sklearn:digits'}, epochs: 1}}
        strategies: {feature_extraction: {}}
        output: out/
        """
    recipe = load_recipe(write_recipe(tmp_path, text))
    dataset = check_recipe_data(recipe, host)
    said: list[str] = []
    prepared = check_pretrain_input(recipe, host, dataset, said=said.append)
    assert recipe.base is not None and recipe.base.pretrain is not None
    pretrain = prepared[data_key(recipe.base.pretrain.data)]

    def rows(x):
        return {row.tobytes() for row in np.ascontiguousarray(x).reshape(len(x), -1)}

    held_out = rows(dataset.x_val) | rows(dataset.x_test)
    assert not rows(pretrain.x_train) & held_out
    assert len(pretrain.y_train) == len(pretrain.x_train) > 500  # the rest is kept
    assert said == [
        f"pretrain: leaves out {1077 - len(pretrain.y_train)} of the 1077 training examples "
        "of sklearn:digits: they are the run's validation or test examples, which the base "
        "must not learn before they score the run's models"
    ]
    assert np.allclose(pretrain.task.feature_mean, pretrain.x_train.mean(axis=0), atol=1e-5)

    result = cli("validate", "--data", str(tmp_path / "recipe.yaml"))
    assert_exit(result, 0)
    assert f"note: {said[0]}" in result.output
    assert not (tmp_path / "out").exists()

    # Read at another size, the run's examples are compared as the run reads them
    # (found by review: a pretrain at image_size [16, 16] left out none).
    resized = re.sub(
        r"pretrain: \{data: \{source: 'sklearn:digits'", "\\g<0>, image_size: [16, 16]", text
    )
    assert "image_size: [16, 16]" in resized
    recipe = load_recipe(write_recipe(tmp_path, resized))
    said.clear()
    prepared = check_pretrain_input(recipe, host, check_recipe_data(recipe, host), said=said.append)
    assert recipe.base is not None and recipe.base.pretrain is not None
    big = prepared[data_key(recipe.base.pretrain.data)]
    assert big.task.input_shape == (16, 16, 1) and len(big.y_train) == len(pretrain.y_train)
    assert said and said[0].startswith(f"pretrain: leaves out {1077 - len(big.y_train)} of")

    # The run's own split, the same source: nothing to leave out, nothing said.
    own = "data: {source: 'sklearn:digits'}"
    recipe = load_recipe(
        write_recipe(tmp_path, re.sub(r"data: \{source: 'sklearn:digits', .*", own, text))
    )
    said.clear()
    prepared = check_pretrain_input(recipe, host, check_recipe_data(recipe, host), said=said.append)
    assert said == [] and len(prepared[data_key(recipe.base.pretrain.data)].y_train) == 1077

    # Found by QA: at another size, the same examples under another name (glyphs:latin
    # renders what glyphs:lower+upper does) were left in: compared by what they are.
    glyphs = """
        name: alias
        data: {source: 'glyphs:latin', classes: [a, b, c], options: {per_class: 30}, image_size: 16}
        base: {pretrain: {data: {source: 'glyphs:lower+upper', options: {per_class: 30}}, epochs: 1}}
        strategies: {feature_extraction: {}}
        output: out/
        """
    recipe = load_recipe(write_recipe(tmp_path, glyphs))
    said.clear()
    check_pretrain_input(recipe, host, check_recipe_data(recipe, host), said=said.append)
    assert said and said[0].startswith("pretrain: leaves out 14 of the 936 training examples")


def test_a_tilde_is_the_home_folder_in_every_path(tmp_path: Path) -> None:
    path = write_recipe(
        tmp_path,
        """
        name: home
        data: {source: 'sklearn:iris'}
        base: {path: ~/models/base.keras}
        strategies: {feature_extraction: {}}
        output: ~/graftune-runs
        """,
    )
    recipe = load_recipe(path)
    home = Path.home()
    assert recipe.output == home / "graftune-runs"
    assert recipe.base is not None and recipe.base.path == home / "models" / "base.keras"


def test_a_recipe_from_python_is_a_file_text_or_a_dict(tmp_path, monkeypatch):
    """``run_recipe({...})`` failed with a bare TypeError, and YAML text was taken
    for a file name."""
    import orchestrator
    from orchestrator.recipe import as_recipe

    monkeypatch.chdir(tmp_path)
    text = "name: t\ndata: {source: 'csv:t.csv', target: y}\nstrategies: {scratch_mlp: {}}\n"
    (tmp_path / "r.yaml").write_text(text)
    from_file, from_text = as_recipe(tmp_path / "r.yaml"), as_recipe(text)
    from_dict = as_recipe(
        {
            "name": "t",
            "data": {"source": "csv:t.csv", "target": "y"},
            "strategies": {"scratch_mlp": {}},
        }
    )
    assert from_file.data.source == from_text.data.source == from_dict.data.source
    assert from_text.base_dir == from_dict.base_dir == tmp_path
    with pytest.raises(TypeError, match="a recipe is a Recipe, a file's path, YAML text or a dict"):
        as_recipe(42)
    from orchestrator import run_recipe

    # One plugin's name, not in a list, was registered letter by letter (found by QA).
    for plugins in ("myplug", sys.modules[__name__]):  # a name, a module
        with pytest.raises(TypeError) as info:
            run_recipe(tmp_path / "missing.yaml", plugins=plugins)
        assert str(info.value).startswith(
            f"plugins takes a list of modules, objects or module names, not "
            f"{type(plugins).__name__} {plugins!r}: plugins=[{plugins!r}]"
        )
    # A dict built in Python holds Paths and NumPy numbers (it raised YAML's RepresenterError).
    import numpy as np

    made = as_recipe(
        {
            "name": "t",
            "seed": np.int64(3),
            "data": {
                "source": "sklearn:iris",
                # np.float32(0.2) is 0.2 as written (found by QA: 0.20000000298...).
                "split": {"val": np.float32(0.2), "test": np.float64(0.2)},
                # np.str_ and np.float64 subclass str and float (found by QA: a
                # space of np.logspace values raised YAML's RepresenterError).
                "classes": list(np.array(["setosa", "virginica"])),
            },
            "strategies": {
                "scratch_mlp": {"space": {"lambda": {"choice": list(np.logspace(-4, -3, 2))}}}
            },
            "search": {"max_epochs": np.int32(2)},
            "output": tmp_path / "runs",
        }
    )
    assert (made.seed, made.search.max_epochs, made.output) == (3, 2, tmp_path / "runs")
    assert (made.data.split.val, made.data.split.test) == (0.2, 0.2)
    assert made.data.classes == ["setosa", "virginica"]
    assert made.strategies["scratch_mlp"].space["lambda"] == {"choice": [1e-4, 1e-3]}
    with pytest.raises(RecipeError) as info:
        as_recipe({"name": "t", "data": {"source": object()}, "strategies": {"scratch_mlp": {}}})
    assert info.value.path == "data.source"
    assert "a recipe holds text, numbers, true/false, lists and mappings; got object" in str(
        info.value
    )
    # A dict has no lines: its errors name the key path alone (not a line of its dump).
    wrong = {"name": "x", "data": {"source": "sklearn:digits"}, "strategies": {"scratch_mlp": {}}}
    with pytest.raises(RecipeError) as info:
        as_recipe({**wrong, "search": {"schedular": "fifo"}})
    assert str(info.value).startswith(
        "<recipe>: search.schedular: unknown key 'schedular' (did you mean 'scheduler'?)"
    )
    with pytest.raises(RecipeError) as info:  # YAML text is the user's: its line is said
        as_recipe(yaml.safe_dump({**wrong, "search": {"schedular": "fifo"}}, sort_keys=False))
    assert str(info.value).startswith("<recipe>:7: search.schedular: unknown key")
    # The library's names are importable from the package itself.
    for name in ("RunOutcome", "RunInterrupted", "resume_run", "read_leaderboard"):
        assert name in orchestrator.__all__ and getattr(orchestrator, name)


def test_cache_info_and_clear_refuse_a_cache_folder_that_is_a_file(tmp_path, monkeypatch):
    """Found by QA: they said "empty" and "freed 0 B" at exit 0, where run refuses it."""
    afile = tmp_path / "cache"
    afile.write_text("not a folder")
    folder = "graftune's cache folder {} ($GRAFTUNE_CACHE_DIR, default ~/.cache/graftune)"
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    (tmp_path / "chain").symlink_to("dangling")  # a link to a link to nothing
    for cache, said in (
        (afile, f"{folder.format(afile)} cannot be made: {afile} is a file, not a folder"),
        (afile / "sub", f"{folder.format(afile / 'sub')} cannot be made: {afile} is a file"),
        (  # a link to nothing: a run said "File exists" once the data was loaded
            tmp_path / "dangling",
            f"{folder.format(tmp_path / 'dangling')} cannot be made: {tmp_path / 'dangling'} "
            f"is a link to {tmp_path / 'gone'}, which does not exist",
        ),
        (
            tmp_path / "chain",
            f"{folder.format(tmp_path / 'chain')} cannot be made: {tmp_path / 'chain'} is a "
            f"link to dangling, which leads to {tmp_path / 'gone'}, which does not exist",
        ),
    ):
        monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(cache))
        for args in (["cache", "info"], ["cache", "clear"]):
            result = cli(*args)
            assert_exit(result, 2)
            assert said in " ".join(result.output.split()), result.output
    assert afile.read_text() == "not a folder"


def test_warnings_go_to_the_stderr_of_the_moment(monkeypatch):
    """Found by QA: a warning during a run went to the stderr of the start, past the
    live view (which puts its own in sys.stderr): it ran into the view's last line,
    and the view's next refresh erased its end."""
    import io
    import logging

    from orchestrator.cli import _ConsoleFormatter, _StderrHandler

    handler = _StderrHandler()
    handler.setFormatter(_ConsoleFormatter())
    now = io.StringIO()
    monkeypatch.setattr(sys, "stderr", now)
    record = logging.LogRecord("orchestrator.x", logging.WARNING, __file__, 1, "late", (), None)
    handler.handle(record)
    assert now.getvalue() == "warning: late\n"


def test_yes_and_no_as_class_names_are_said_to_be_read_as_booleans(tmp_path):
    """Found by QA: `classes: [yes, no]` was told to write 'True' and 'False', no class."""
    recipe = write_recipe(
        tmp_path,
        "name: x\ndata: {source: 'sklearn:iris', classes: [yes, no]}\n"
        "strategies: {scratch_mlp: {}}\n",
    )
    result = cli("validate", str(recipe))
    assert_exit(result, 2)
    said = " ".join(result.output.split())
    assert (
        "data.classes.0: expected a class name or an integer label, got true (YAML reads yes"
        in said
    )
    assert "quote the word, 'no', to mean the text" in said and "'True'" not in said


def test_null_as_a_class_or_a_target_is_said_to_be_read_as_no_value(tmp_path):
    """Found by QA: `classes: [null, off]` was told to write 'None', no class; and
    `target: null` of a column named null was told to name the column."""
    recipe = write_recipe(
        tmp_path,
        "name: x\ndata: {source: 'sklearn:iris', classes: [null, 'off']}\n"
        "strategies: {scratch_mlp: {}}\n",
    )
    result = cli("validate", str(recipe))
    assert_exit(result, 2)
    said = " ".join(result.output.split())
    assert (
        "data.classes.0: expected a class name or an integer label, got null (YAML reads an "
        "empty value, null and ~ as no value: write 'null' in quotes for a class of that name)"
    ) in said, said
    assert "'None'" not in said
    pd.read_csv(WINE_CSV).rename(columns={"cultivar": "null"}).to_csv(
        tmp_path / "t.csv", index=False
    )
    recipe = write_recipe(
        tmp_path,
        "name: x\ndata:\n  source: 'csv:t.csv'\n  target: null\nstrategies: {scratch_mlp: {}}\n",
    )
    said = " ".join(cli("validate", str(recipe)).output.split())
    assert (
        f"{recipe.name}:4: data.target: a table's label column has no default: name it"
    ) in said, said
    assert (
        "(the recipe gives target: no value, as YAML reads an empty value, null and ~: write "
        "'null' in quotes for a column of that name)"
    ) in said, said
    # Left out, it is not said to be given.
    recipe = write_recipe(
        tmp_path, "name: x\ndata: {source: 'csv:t.csv'}\nstrategies: {scratch_mlp: {}}\n"
    )
    assert "the recipe gives" not in cli("validate", str(recipe)).output


def test_a_folder_the_locale_cannot_read_is_said_before_any_work(tmp_path):
    """Found by QA: under LC_ALL=C with PYTHONUTF8=0, a run in a folder named with an
    accent made its run directory, then embedded Ray failed on the path (exit 4)."""
    import os

    from tests.search_helpers import GRAFTUNE

    folder = tmp_path / "dossier é"
    recipe = write_recipe(folder, HEAD + "strategies: {scratch_mlp: {}}\n")
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0"}
    env.pop("PYTHONIOENCODING", None)
    before = sorted(tmp_path.rglob("*"))
    done = subprocess.run(
        [GRAFTUNE, "run", recipe.name], cwd=folder, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "error: the current folder's path or an argument holds characters this locale "
        "cannot read (its encoding is ascii): run it again with LC_ALL=C.UTF-8 (or "
        "PYTHONUTF8=1)\n"
    )
    assert sorted(tmp_path.rglob("*")) == before
    # Found by QA: a path the recipe itself names (output:), an internal error.
    plain = tmp_path / "plain"
    recipe = write_recipe(plain, HEAD + "strategies: {scratch_mlp: {}}\noutput: résultats/\n")
    for command in ("validate", "run"):
        done = subprocess.run(
            [GRAFTUNE, command, recipe.name], cwd=plain, env=env, capture_output=True, text=True
        )
        assert done.returncode == 2, done.stderr
        assert "output: " in done.stderr and "cannot be a path in this locale's encoding" in (
            done.stderr
        )
    assert not list(plain.glob("r*sultats"))


def test_a_read_only_cache_with_nothing_in_it_clears_to_nothing(tmp_path, monkeypatch):
    """Found by QA: `cache clear` on an empty read-only cache said "could not remove"
    the cache folder and exited 1: what failed was making its lock."""
    from tests.helpers import tmpfs

    with tmpfs(tmp_path / "cache", "1m") as cache:
        subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
        monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(cache))
        result = cli("cache", "clear")
        assert_exit(result, 0)
        assert result.output == "freed 0 B\n"


def test_a_cache_this_user_may_not_read_is_said_in_one_line(tmp_path):
    """Found by QA: `cache info` and `cache clear` on a cache another user made, whose
    folders this user may not read, were internal errors (PermissionError)."""
    import os
    import shutil

    from tests.search_helpers import GRAFTUNE

    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv (util-linux) to take away root's file access")
    cache = tmp_path / "cache"
    (cache / "bases").mkdir(parents=True)
    (cache / "bases").chmod(0)
    # root without the capabilities that let it read and write any file
    unprivileged = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    env = {**os.environ, "GRAFTUNE_CACHE_DIR": str(cache)}
    for command in (["cache", "info"], ["cache", "clear"]):
        done = subprocess.run(
            [*unprivileged, GRAFTUNE, *command], env=env, capture_output=True, text=True
        )
        assert (done.returncode, done.stderr) == (2, f"error: Permission denied: {cache}/bases\n")


def test_a_command_in_a_deleted_folder_says_so_and_writes_nothing(tmp_path, monkeypatch):
    """Found by QA: run made a run directory and then failed in Ray ("embedded Ray did
    not start"), once each time; a relative --out was an internal error."""
    recipe = write_recipe(tmp_path, HEAD + "strategies: {scratch_mlp: {}}\n")
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    before = sorted(tmp_path.rglob("*"))
    for args in (["run", str(recipe)], ["validate", str(recipe)]):
        result = cli(*args)
        assert_exit(result, 2)
        assert result.output == (
            "error: the current folder no longer exists (it was deleted): cd to one that does\n"
        )
    assert sorted(tmp_path.rglob("*")) == before


def test_a_cache_folder_in_the_home_of_no_user_is_said_by_every_command(tmp_path, monkeypatch):
    """``GRAFTUNE_CACHE_DIR=~nobody/...`` ended commands in a RuntimeError traceback."""
    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", "~nobody-graftune/cache")
    for args in (
        ["cache", "info"],
        ["validate", str(write_recipe(tmp_path, HEAD + "strategies: {scratch_mlp: {}}\n"))],
    ):
        result = cli(*args)
        assert_exit(result, 2)
        assert "$GRAFTUNE_CACHE_DIR=~nobody-graftune/cache: there is no user 'nobody-graftune'" in (
            result.output
        ), result.output


def test_one_image_size_number_is_a_square() -> None:
    recipe = parse_recipe(
        "name: sq\ndata: {source: 'sklearn:digits', image_size: 16}\n"
        "strategies: {scratch_mlp: {}}\n"
    )
    assert recipe.data.image_size == (16, 16)
    assert yaml.safe_load(recipe.to_yaml())["data"]["image_size"] == [16, 16]


def test_one_ignored_column_may_be_named_alone_and_a_name_said_twice_counts_once() -> None:
    recipe = parse_recipe(
        "name: ids\ndata: {source: 'csv:t.csv', target: label, ignore_columns: id}\n"
        "strategies: {scratch_mlp: {}}\n"
    )
    assert recipe.data.ignore_columns == ["id"]
    recipe = parse_recipe(
        "name: ids\ndata: {source: 'csv:t.csv', target: label, ignore_columns: [id, name, id]}\n"
        "strategies: {scratch_mlp: {}}\n"
    )
    assert recipe.data.ignore_columns == ["id", "name"]
    assert yaml.safe_load(recipe.to_yaml())["data"]["ignore_columns"] == ["id", "name"]
    # A header's 2021 is text; YAML reads it as a number (and 007 as 7).
    for key in ("ignore_columns: [2021]", "target: 2021"):
        with pytest.raises(RecipeErrors) as info:
            parse_recipe(
                f"name: ids\ndata: {{source: 'csv:t.csv', {key}}}\n"
                "strategies: {scratch_mlp: {}}\n"
            )
        assert "got a number (2021); write the name in quotes, as its header has it" in str(
            info.value
        )


def test_a_shipped_recipe_missing_here_says_where_it_comes_from(tmp_path, monkeypatch):
    """Found by QA: installed from a wheel, the quick start's `graftune run
    recipes/quickstart.yaml` said only "no such recipe file"."""
    from orchestrator.recipe import _SHIPPED_RECIPES

    repo = Path(__file__).parents[1]
    assert sorted(_SHIPPED_RECIPES) == sorted(p.name for p in (repo / "recipes").glob("*.yaml"))
    monkeypatch.chdir(tmp_path)
    result = cli("validate", "recipes/quickstart.yaml")
    assert_exit(result, 2)
    said = " ".join(result.output.split())
    assert "no such recipe file (graftune's own recipes come with its source, not with " in said
    result = cli("validate", "mine/quickstart.yaml")
    assert_exit(result, 2)
    assert "graftune's own recipes" not in result.output


def test_an_unknown_key_in_a_run_directorys_recipe_asks_for_a_newer_graftune(tmp_path):
    """Found by QA: a run made by a newer graftune (a key this one lacks) was refused
    as a typo, "did you mean 'max_epochs'?", in a file graftune itself wrote."""
    text = HEAD + "search: {warmup_epochs: 2}\n"
    mine = write_recipe(tmp_path / "mine", text)
    with pytest.raises(RecipeError) as info:
        load_recipe(mine)
    assert "newer graftune" not in str(info.value)  # a user's recipe: a typo, as ever
    run_dir = tmp_path / "run"
    (run_dir / "trials").mkdir(parents=True)
    with pytest.raises(RecipeError) as info:
        load_recipe(write_recipe(run_dir, text))
    said = str(info.value)
    assert "unknown key 'warmup_epochs'" in said
    assert "was the run made by a newer graftune than this one (" in said
    # Found by QA: made by this graftune (its environment.json says), the key was
    # added by hand: no newer graftune would read it.
    from orchestrator import __version__

    (run_dir / "environment.json").write_text(
        json.dumps({"packages": {"graftune": __version__}}), encoding="utf-8"
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(run_dir / "recipe.yaml")
    said = str(info.value)
    assert "newer graftune" not in said
    assert f"graftune {__version__}, this one, wrote this file as the run started, " in said
    assert "was the file edited?" in said


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="root passes os.access on /proc"
)
def test_validate_refuses_an_output_folder_root_cannot_make_either(tmp_path):
    """Found by QA: as root, `output: /proc/nope` passed validate (os.access says yes
    to root), and the run failed after preparing its data."""
    from orchestrator.cli import app

    recipe = write_recipe(tmp_path, HEAD + "strategies: {scratch_mlp: {}}\noutput: /proc/nope\n")
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert (
        "output: cannot make a run directory in /proc/nope: /proc is not writable (making a "
        "folder in it failed: No such file or directory)"
    ) in said
    # A folder it may write in passes, and keeps nothing of the check.
    ok = write_recipe(tmp_path, HEAD + "strategies: {scratch_mlp: {}}\noutput: runs/\n", "ok.yaml")
    assert CliRunner().invoke(app, ["validate", str(ok)]).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.yaml", "recipe.yaml"]


def test_validate_refuses_an_output_folder_too_deep_for_a_runs_files(tmp_path):
    """Found by QA: an output folder of 3,985 characters passed validate, and every
    trial of the run failed (its TensorBoard log's path past 4,096 bytes), blamed on
    the strategy, "File name too long" cut from the summary."""
    from orchestrator.cli import app

    deep = "/".join(["d" * 200] * 19) + "/" + "e" * 150
    recipe = write_recipe(tmp_path, HEAD + f"strategies: {{scratch_mlp: {{}}}}\noutput: {deep}\n")
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "output: a run here would write paths of up to " in said, said
    assert "past the 4096 a path may have on this system; give an output folder of at most" in said
    shorter = "/".join(["d" * 200] * 17)
    ok = write_recipe(
        tmp_path, HEAD + f"strategies: {{scratch_mlp: {{}}}}\noutput: {shorter}\n", "ok.yaml"
    )
    assert CliRunner().invoke(app, ["validate", str(ok)]).exit_code == 0
    # A short link to a deep folder is where the files go (found by QA: it passed).
    (tmp_path / deep).mkdir(parents=True)
    (tmp_path / "short").symlink_to(tmp_path / deep)
    linked = write_recipe(
        tmp_path, HEAD + f"strategies: {{scratch_mlp: {{}}}}\noutput: {tmp_path / 'short'}\n",
        "linked.yaml",
    )  # fmt: skip
    result = CliRunner().invoke(app, ["validate", str(linked)])
    assert result.exit_code == 2, result.output
    assert "output: a run here would write paths of up to " in " ".join(result.output.split())


def test_run_refuses_cut_points_the_base_has_not_naming_file_line_and_key(tmp_path):
    """graftune validate without --data counts no base's cut points: run checks a
    recipe's frozen_layers against them before any trial. Found by mutation testing: nothing failed with that check removed, and a
    run then failed every trial (exit 1, no file or key), or searched `{int: [9, all]}`
    narrowed to [2, 2] in silence. A pretrain: base's are counted from its
    architecture before it is trained (validate --data counts them too): the run
    refused them only after minutes of pretraining."""
    from orchestrator.feature_cache import cache_dir

    bases = cache_dir() / "bases"
    cached = sorted(bases.rglob("*"))
    for given, said in (
        ("9", "9"),
        ("{int: [9, all]}", "9"),
        ("{choice: [0, 9]}", "9"),
    ):
        recipe = write_recipe(
            tmp_path,
            f"""
            name: cuts
            data: {{source: 'sklearn:iris'}}
            base: {{pretrain: {{data: {{source: 'sklearn:iris'}}, epochs: 1, architecture: mlp}}}}
            search: {{backend: keras_tuner, num_samples: 1, max_epochs: 1}}
            strategies:
              fine_tune: {{space: {{frozen_layers: {given}}}}}
            output: runs/
            """,
        )
        for output in refused_by_validate_data_and_run(
            recipe,
            f"recipe.yaml:6: strategies.fine_tune.space.frozen_layers: {said}: the base has "
            "cut points 0 to 2 (frozen_layers counts them; 'all' is 2)",
        ):
            assert "base: preparing" not in output, output  # refused before its pretraining
        assert not list((tmp_path / "runs").glob("*"))
    assert sorted(bases.rglob("*")) == cached  # no base pretrained, none cached
    recipe.write_text(recipe.read_text().replace("{choice: [0, 9]}", "{int: [1, all]}"))
    assert_exit(cli("validate", "--data", str(recipe)), 0)


def test_run_refuses_a_run_dir_or_run_name_too_deep_for_a_runs_files(tmp_path):
    """Found by QA: `--run-dir` (and `--run-name` under an output folder near the limit)
    was not checked as `output:` is; a run directory a few bytes under the limit was
    taken, and every trial then failed with "File name too long". Refused before any
    work, writing nothing."""
    from orchestrator.cli import app

    parent = tmp_path / "/".join(["d" * 200] * 19)
    parent = parent.parent if len(str(parent)) > 3900 else parent
    deep = parent / ("r" * (4000 - len(str(parent))))
    recipe = write_recipe(tmp_path, HEAD + "strategies: {scratch_mlp: {}}\n")
    result = CliRunner().invoke(app, ["run", str(recipe), "--run-dir", str(deep)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "a run here would write paths of up to " in said, said
    assert "past the 4096 a path may have on this system; give a run directory of at most" in said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]
    # A run name is the folder's whole name: NAME-TIME is not added to it.
    output = f"output: {parent}\n"
    named = write_recipe(tmp_path, HEAD + "strategies: {scratch_mlp: {}}\n" + output, "named.yaml")
    name = "n" * (4000 - len(str(parent)))
    result = CliRunner().invoke(app, ["run", str(named), "--run-name", name])
    assert result.exit_code == 2, result.output
    assert "give a run directory of at most" in " ".join(result.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["named.yaml", "recipe.yaml"]
    # A run directory itself past the limit: said as above, not the system's raw
    # "File name too long" with its 4,400 characters (found by QA).
    past = tmp_path / "/".join(["p" * 200] * 22)
    result = CliRunner().invoke(app, ["run", str(recipe), "--run-dir", str(past)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert said.startswith(f"error: {str(past)[:79]}\N{HORIZONTAL ELLIPSIS}pppp"), said
    assert "give a run directory of at most" in said and len(said) < 500, said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["named.yaml", "recipe.yaml"]
    # Resumed, or read: said in a line too (found by QA: --resume's traceback, and the
    # other commands' 4,400 characters).
    for command in (["run", "--resume", str(past)], ["leaderboard", str(past)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        said = " ".join(result.output.split())
        assert said.startswith(f"error: File name too long: {str(past)[:40]}"), said
        assert len(said) < 250, said


def test_one_line_of_yaml_or_json_is_a_recipe_and_an_empty_string_is_said(tmp_path):
    """Found by QA: run_recipe(json.dumps(d)) was "no such recipe file", and '' was
    "is a folder, not a recipe file"."""
    import json

    from orchestrator.recipe import as_recipe

    recipe = {
        "name": "inline",
        "data": {"source": "sklearn:iris"},
        "strategies": {"scratch_mlp": {}},
    }
    assert as_recipe(json.dumps(recipe)).name == "inline"
    assert (
        as_recipe(
            "  {name: flow, data: {source: 'sklearn:iris'}, strategies: {scratch_mlp: {}}}"
        ).name
        == "flow"
    )
    with pytest.raises(RecipeError) as info:
        as_recipe("")
    assert "an empty string is no recipe" in str(info.value)
    # A file's name is still one.
    path = write_recipe(tmp_path, HEAD + "strategies: {scratch_mlp: {}}\n")
    assert as_recipe(str(path)).name == "bad"


def test_a_grid_too_large_to_list_is_refused_before_anything_is_written(tmp_path):
    """Found by QA: `{int: [1, 10^12]}` under `algorithm: grid` passed validate; the
    run made its directory, said "searching a grid of 4000000000000 configurations"
    and ended in an internal MemoryError (exit 1), listing the range. A grid of more
    than 100,000 trials a strategy (its points times Ray's repeats) is refused, at
    its largest dimension's key, by validate and by the run, writing nothing."""
    from orchestrator.preflight import MAX_GRID_TRIALS

    assert MAX_GRID_TRIALS == 100_000
    head = "name: grid\ndata: {source: 'sklearn:iris'}\noutput: runs/\n"
    huge = write_recipe(
        tmp_path,
        head + "strategies: {scratch_mlp: {space: {hidden_layers: {int: [1, 1000000000000]}}}}\n"
        "search: {algorithm: grid, max_epochs: 1}\n",
    )
    said = (
        "recipe.yaml:4: strategies.scratch_mlp.space.hidden_layers: a grid over scratch_mlp's "
        "space lists 4,000,000,000,000 trials (hidden_layers: 1,000,000,000,000 values), more "
        "than graftune runs in one search (100,000): list fewer values, or search the ranges "
        "with algorithm: random or bayesian"
    )
    for command in (("validate", str(huge)), ("run", str(huge))):
        result = cli(*command)
        assert_exit(result, 2)
        assert said in " ".join(result.output.split()), result.output
    assert not (tmp_path / "runs").exists()

    # A shared dimension is named where the recipe gives it; Ray's repeats count,
    # keras-tuner's grid runs each point once.
    shared = "strategies: {scratch_mlp: {}}\nsearch:\n  algorithm: grid\n  max_epochs: 1\n"
    # x hidden_layers 1-3 (its own): 37,500 (keras-tuner's grid lists no continuous one)
    shared += "  space: {width: {int: [1, 12500]}, lambda: 0.0001, learning_rate: 0.001}\n"
    for extra, status in (
        ("", 0),
        ("  num_samples: 3\n", 2),
        ("  num_samples: 3\n  backend: keras_tuner\n  scheduler: fifo\n", 0),
    ):
        path = write_recipe(tmp_path, head + shared + extra)
        result = cli("validate", str(path))
        assert_exit(result, status)
        if status:
            assert ": search.space.width: a grid over scratch_mlp's space lists 112,500 " in (
                result.output
            )
            assert "(width: 12,500 values, each 3 times (num_samples))" in result.output


def test_a_grid_too_large_once_all_is_counted_is_refused_by_the_run(tmp_path):
    """A range up to `all` is left out of validate's count (the base's cut points are
    not known before it is made); the run counts it with the base's and refuses
    the grid before any trial, writing nothing."""
    recipe = write_recipe(
        tmp_path,
        "name: grid\ndata: {source: 'sklearn:iris'}\noutput: runs/\n"
        "base: {pretrain: {data: {source: 'sklearn:iris'}, epochs: 1, architecture: mlp}}\n"
        "search: {algorithm: grid, max_epochs: 1}\n"
        # x regularizer x two_phase (its own choices): 80,000
        "strategies: {fine_tune: {space: {head_width: {int: [1, 20000]}}}}\n",
    )
    assert_exit(cli("validate", str(recipe)), 0)
    result = cli("run", str(recipe))
    assert_exit(result, 2)
    said = " ".join(result.output.split())
    assert (
        "recipe.yaml:6: strategies.fine_tune.space.head_width: a grid over fine_tune's space "
        "lists 240,000 trials (head_width: 20,000 values)"
    ) in said, said  # frozen_layers 0 to all: the pretrained MLP's 2 cut points, 3 values
    assert "searching" not in said
    assert not list((tmp_path / "runs").glob("*"))


def test_validate_refuses_output_in_a_run_and_a_file_uri_to_a_file(tmp_path):
    """Found by QA: validate said ok to an output (or storage) folder inside a run
    directory, which the run refused; and to `storage: file:///PATH` where PATH is a
    file, which the run found only at its upload, with no file, line or key."""
    run = tmp_path / "old-run"
    (run / "trials").mkdir(parents=True)  # a run directory: its recipe.yaml and trials/
    (run / "recipe.yaml").write_text(HEAD + "strategies: {scratch_mlp: {}}\n")
    (tmp_path / "afile").write_text("")
    for tail, key, said in (
        (f"output: {run}/sub\n", "output", f"it is inside the run directory {run}, whose"),
        (f"storage: {run}/sub\n", "storage.path", f"it is inside the run directory {run}"),
        (f"output: {run}\n", "output", f"it is inside the run directory {run}"),
        (
            f"storage: file://{tmp_path}/afile/runs\n",
            "storage.path",
            f"cannot store runs in {tmp_path}/afile/runs: {tmp_path}/afile is a file, not a folder",
        ),
    ):
        path = write_recipe(tmp_path, HEAD + "strategies: {scratch_mlp: {}}\n" + tail, "new.yaml")
        result = cli("validate", str(path))
        assert_exit(result, 2)
        flat = " ".join(result.output.split())
        assert f"new.yaml:4: {key}: " in flat and said in flat, flat
    for tail in (f"output: {tmp_path}/runs\n", f"storage: file://{tmp_path}/not-yet/runs\n"):
        path = write_recipe(tmp_path, HEAD + "strategies: {scratch_mlp: {}}\n" + tail, "new.yaml")
        assert_exit(cli("validate", str(path)), 0)
