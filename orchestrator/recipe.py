"""YAML recipe -> validated, frozen recipe objects.

A recipe is data: it is read with ``yaml.safe_load`` (tags such as
``!!python/object`` are errors, never executed) and validated by pydantic
models that forbid unknown keys. Every error names the file, the line, the
key path and what was expected; an unknown key suggests the nearest valid one.

:func:`load_recipe` checks the schema; :func:`check_recipe` also checks what
needs the plugins: that the strategies, data sources and files exist, that a
CSV has its target column, that transfer strategies have a base, and that
search-space overrides name dimensions the strategies have.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import stat
import textwrap
import types
import typing
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    StrictBool,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from orchestrator.errors import (
    BaseModelError,
    DataError,
    PluginError,
    RecipeError,
    RecipeErrors,
    cannot_make_in,
    did_you_mean,
    ellipsized,
    written,
)
from orchestrator.space import (
    Dimension,
    check_compatible,
    extremes,
    merge_spaces,
    parse_dimension,
    uses_all,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from orchestrator.plugin_manager import PluginHost
    from orchestrator.registry import Registry

#: Metrics a recipe may rank by, with the direction that is better.
METRICS = {"val_accuracy": "max", "val_loss": "min"}


class _Model(BaseModel):
    # inf and nan are never meaningful here, and JSON (to_yaml) cannot keep them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def changed_keys(spec: BaseModel, section: str, keys: tuple[str, ...]) -> list[str]:
    """``SECTION.KEY`` of each of ``keys`` that ``spec`` sets to other than its
    default: the settings a backend or a cluster does not use, named where a recipe
    sets them."""
    defaults = type(spec)()
    return [f"{section}.{key}" for key in keys if getattr(spec, key) != getattr(defaults, key)]


class _KeyedError(ValueError):
    """A model-level check whose fault lies in one key, so the error can name it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _not_bool(value: Any) -> Any:
    # pydantic would take true as 1: a recipe's yes/no/true/false is never a number.
    if isinstance(value, bool):
        raise ValueError(
            f"expected a number, got {str(value).lower()} (YAML reads yes, no, on and off "
            "as true/false too)"
        )
    return value


def _class_label(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        # A label written 1.0 in the data is the integer label 1, as 1 is (found by QA:
        # the hint said to quote it, and no class is named '1.0').
        raise ValueError(
            f"expected a class name or an integer label, got {written(value)}; a label "
            f"written {value} in the data is the integer label {int(value)}: write {int(value)}"
        )
    if isinstance(value, bool):
        # Found by QA: `classes: [yes, no]` was told to write 'True' and 'False'.
        raise ValueError(
            f"expected a class name or an integer label, got {str(value).lower()}" + _YAML_BOOLEANS
        )
    if value is None:
        # Found by QA: `classes: [null, off]` was told to write 'None'.
        raise ValueError(
            "expected a class name or an integer label, got null (YAML reads an empty value, "
            "null and ~ as no value: write 'null' in quotes for a class of that name)"
        )
    if not isinstance(value, (str, int)):
        named = ellipsized(str(value), 160)  # a list YAML aliases repeat made megabytes
        raise ValueError(
            f"expected a class name or an integer label, got {written(value)}; a class named "
            f"{named!r} is written in quotes: '{named}'"
        )
    return value


def _image_size(value: Any) -> Any:
    # One number is a square; anything else but two numbers is said as what it should be.
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 2):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    raise ValueError(
        "expected [height, width], two whole numbers above 0 (or one number, for a "
        f"square); got {written(value)}"
    )


def _column_name(value: Any) -> Any:
    # A header's 2021, 007 or 2021-01-01 is text; YAML reads them as a number or a
    # date (007 as 7: the name as written is gone, so it is not echoed as the fix).
    import datetime

    if isinstance(value, (int, float, datetime.date)) and not isinstance(value, bool):
        kind = "a date" if isinstance(value, datetime.date) else "a number"
        raise ValueError(
            f"expected a column name, got {kind} ({value}); write the name in quotes, "
            "as its header has it (YAML reads 007 as 7, and 2021-01-01 as a date)"
        )
    return value


def _column_names(value: Any) -> Any:
    # One column may be named alone (ignore_columns: id); a name said twice counts once.
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        for name in value:
            _column_name(name)
        if all(isinstance(v, str) for v in value):
            return list(dict.fromkeys(value))
    return _column_name(value)


#: A run's name, a recipe's or ``--run-name``'s: it names the run's folder.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _run_name(value: str) -> str:
    if not RUN_NAME.fullmatch(value):
        raise ValueError(
            "a run's name is ASCII letters, digits, '.', '_' and '-', from a letter or digit "
            f"(it names the run's folder); got {value!r}"
        )
    return value


_NotBool = BeforeValidator(_not_bool)
#: true or false, nothing else: pydantic also took "off", "yes", 0 and 1.
_Flag = StrictBool
_Whole = Annotated[int, _NotBool]
_Count = Annotated[PositiveInt, _NotBool]
_Number = Annotated[float, _NotBool]
_PositiveNumber = Annotated[PositiveFloat, _NotBool]
_ClassLabel = Annotated[str | int, BeforeValidator(_class_label)]


def _classes_once(value: list[Any] | None) -> list[Any] | None:
    """Each class once, compared as text as the data's labels are (``1`` is ``'1'``)."""
    seen: dict[str, int] = {}
    for place, label in enumerate(value or (), 1):
        if str(label) in seen:
            raise ValueError(
                f"names the class {str(label)!r} twice (items {seen[str(label)]} and {place}); "
                "name each class once"
            )
        seen[str(label)] = place
    return value


#: A batch of examples: Keras' data adapters count them in (signed) 32 bits.
_BatchSize = Annotated[_Count, Field(le=2**31 - 1)]


#: The most of a resource Ray counts (``ray._private.ray_constants.MAX_RESOURCE_QUANTITY``).
RAY_MAX_QUANTITY = 10**14


def _ray_quantity(value: float) -> float:
    # Ray counts a resource in steps of 0.0001 and refuses a smaller share, or more
    # than 10^14 (each as an internal error, after the run's folder is written).
    if 0 < value < 0.0001:
        raise ValueError(f"Ray gives no share smaller than 0.0001 of a CPU or GPU; got {value:g}")
    if value > RAY_MAX_QUANTITY:  # found by QA: num_cpus 2*10^14 (exit 4, folder written)
        raise ValueError(f"Ray counts at most 10^14 of a CPU or GPU; got {value:g}")
    return value


_ResourceShare = AfterValidator(_ray_quantity)


def _address(value: str | None) -> str | None:
    # Found by QA: an empty one ran on embedded Ray, where validate said a cluster.
    if value is not None and not value.strip():
        raise ValueError(
            "an empty address: give the cluster's GCS address HEAD:6379 (or auto), or leave "
            "the key out for embedded Ray here"
        )
    if value is not None:
        from orchestrator.cluster import check_address_form
        from orchestrator.errors import BadAddress

        try:
            check_address_form(value)
        except BadAddress as exc:  # the recipe's error names the file, line and key
            raise ValueError(str(exc)) from None
        if value.strip() == "local":
            # As --address local and ray.init: embedded Ray here (found by QA: validate
            # said ok, and the run refused it as no cluster address).
            return None
    return value


class SplitSpec(_Model):
    """Fractions of the whole data set held out for validation and test."""

    val: _Number = Field(0.2, gt=0, lt=1)
    test: _Number = Field(0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> SplitSpec:
        if self.val + self.test >= 1:
            raise ValueError(f"val + test must be below 1, got {self.val} + {self.test}")
        return self


class DataSpec(_Model):
    """Where the data comes from and how it is split."""

    source: str = Field(min_length=1)
    target: Annotated[str | None, BeforeValidator(_column_name)] = None
    #: A table's columns that are no features (an ID, a name): left out of training;
    #: ``graftune predict`` copies them to its output.
    ignore_columns: Annotated[list[str], BeforeValidator(_column_names)] = []
    split: SplitSpec = SplitSpec()
    labels_per_class: _Count | None = None
    classes: Annotated[list[_ClassLabel] | None, AfterValidator(_classes_once)] = None
    image_size: Annotated[tuple[_Count, _Count] | None, BeforeValidator(_image_size)] = None
    channels: Annotated[Literal[1, 3], _NotBool] | None = None
    options: dict[str, Any] = {}


class PretrainSpec(_Model):
    """A base trained inside the run on another data source, cached by content."""

    data: DataSpec
    epochs: _Count = 10
    architecture: Literal["cnn", "mlp"] | None = None
    #: Past 2^16 units a layer no machine builds the base (found by QA: 10^20 passed
    #: validate, and the run's pretraining failed in Keras).
    width: Annotated[_Count, Field(le=2**16)] = 32
    learning_rate: _PositiveNumber = 1e-3
    batch_size: _BatchSize = 64


class BaseSpec(_Model):
    """The pretrained model transfer strategies start from: exactly one source."""

    path: Path | None = None
    application: str | None = None
    weights: str | None = None
    input_shape: tuple[_Count, ...] | None = None
    pretrain: PretrainSpec | None = None
    provider: str | None = None
    options: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _imagenet_by_default(cls, data: Any, info: ValidationInfo) -> Any:
        # Said, so that a run's recipe.yaml says it, and null is told from absent.
        if isinstance(data, dict) and data.get("application") is not None:
            data = {"weights": "imagenet", **data}
            if _recorded(info) and data["weights"] is None:
                data["weights"] = "imagenet"  # what a run's null meant before it was said
        return data

    @model_validator(mode="after")
    def _exactly_one_source(self) -> BaseSpec:
        given = [
            k
            for k in ("path", "application", "pretrain", "provider")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "expected exactly one of path, application, pretrain or provider; "
                + (f"got {', '.join(given)}" if given else "got none")
            )
        if self.application is not None and self.weights is None:  # (given as null)
            # Keras' weights=None is random weights; here an empty value read as
            # the default, imagenet (downloaded, or refused offline).
            raise _KeyedError(
                "weights",
                "expected imagenet (the default), none (random weights) or the path of "
                "a weights file; got null (for Keras' weights=None, write none)",
            )
        if self.application is None and (self.weights is not None or self.input_shape):
            raise _KeyedError(
                "weights" if self.weights is not None else "input_shape",
                f"weights and input_shape go with application:, not with {given[0]}:",
            )
        return self

    @property
    def kind(self) -> str:
        """The name of the base provider this section asks for."""
        if self.provider is not None:
            return self.provider
        for key in ("path", "application", "pretrain"):
            if getattr(self, key) is not None:
                return key
        raise AssertionError("unreachable: validated to have one source")


class StrategySpec(_Model):
    """One strategy's section: its own search-space overrides."""

    space: dict[str, Any] = {}
    num_samples: _Count | None = None


#: The smallest ``search.reduction_factor`` an early-stopping scheduler takes.
MIN_REDUCTION_FACTOR = 1.1


class SearchSpec(_Model):
    """How each strategy's search runs."""

    backend: Literal["ray", "keras_tuner"] = "ray"
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    mode: Literal["max", "min"] | None = None
    algorithm: Literal["random", "grid", "bayesian"] = "random"
    num_samples: _Count | None = None
    max_epochs: _Count = 30
    scheduler: Literal["fifo", "asha", "hyperband"] = "fifo"
    grace_period: _Count = 1
    reduction_factor: _Number = Field(3.0, gt=1)
    batch_size: _BatchSize = 32
    max_concurrent_trials: _Count | None = None
    time_budget_s: _PositiveNumber | None = None
    max_failures: Annotated[_Whole, Field(ge=0)] = 1
    worker_memory_mb: _Count | None = 4096
    #: The first trial of a random or Bayesian search runs the strategy's defaults.
    start_from_defaults: _Flag = True
    space: dict[str, Any] = {}

    @model_validator(mode="after")
    def _mode_matches_metric(self) -> SearchSpec:
        better = METRICS[self.metric]
        if self.mode is not None and self.mode != better:
            larger = "larger" if better == "max" else "smaller"
            raise _KeyedError(
                "mode",
                f"{self.metric} is better when {larger}: mode must be {better} (or left out); "
                f"got {self.mode}",
            )
        return self

    @model_validator(mode="after")
    def _grace_within_the_epochs(self, info: ValidationInfo) -> SearchSpec:
        # Ray's schedulers stop a trial only at a rung after grace_period epochs and
        # before max_epochs (keras-tuner's Hyperband sizes its own brackets). A run's
        # recorded recipe may have the two equal: it was accepted before.
        too_late = self.grace_period > self.max_epochs or (
            self.grace_period == self.max_epochs and not _recorded(info)
        )
        if self.backend == "ray" and self.scheduler != "fifo" and too_late:
            what = "more than" if self.grace_period > self.max_epochs else "as many epochs as"
            raise _KeyedError(
                "grace_period",
                f"{self.grace_period} is {what} max_epochs ({self.max_epochs}): {self.scheduler} "
                "stops trials only after grace_period epochs and before max_epochs, so it "
                "would stop none; lower it or raise max_epochs, or use scheduler: fifo",
            )
        return self

    @model_validator(mode="after")
    def _factor_away_from_one(self, info: ValidationInfo) -> SearchSpec:
        # Ray's schedulers build log(max_epochs / grace_period) / log(factor) rungs per
        # bracket, and Hyperband as many brackets: a factor of 1.0001 built for
        # minutes before the first trial (found by QA).
        factor = self.reduction_factor
        if self.scheduler != "fifo" and factor < MIN_REDUCTION_FACTOR and not _recorded(info):
            raise _KeyedError(
                "reduction_factor",
                f"{factor:g} is too close to 1: each rung would stop only {1 - 1 / factor:.2%} "
                f"of its trials, over log(max_epochs / grace_period) / log({factor:g}) rungs; "
                f"use {MIN_REDUCTION_FACTOR:g} or more (2 to 4 is usual)",
            )
        return self

    @property
    def direction(self) -> Literal["max", "min"]:
        """``max`` or ``min``: the mode given, or the one the metric implies."""
        return self.mode or METRICS[self.metric]  # type: ignore[return-value]

    @property
    def samples(self) -> int:
        """Trials per strategy: ``num_samples``, else 8 (for ``grid``: repeats, else 1)."""
        if self.num_samples is not None:
            return self.num_samples
        return 1 if self.algorithm == "grid" else 8

    @property
    def starts_from_defaults(self) -> bool:
        """Whether each search runs its strategy's defaults first (a grid lists its own)."""
        return self.start_from_defaults and self.algorithm != "grid"


class ResourcesSpec(_Model):
    """What each trial gets and where the trials run."""

    cpus_per_trial: Annotated[_PositiveNumber, _ResourceShare] = 1
    gpus_per_trial: Annotated[_Number, Field(ge=0), _ResourceShare] = 0
    num_cpus: Annotated[_Count, _ResourceShare] | None = None
    address: Annotated[str | None, AfterValidator(_address)] = None
    dashboard: _Flag = False
    mixed_precision: _Flag = False
    #: Whether ``address`` is ``--address``'s rather than the recipe's.
    _address_given: bool = PrivateAttr(default=False)

    def with_address_option(self, address: str | None) -> ResourcesSpec:
        """A copy whose ``address`` is the command line's ``--address``."""
        copy = self.model_copy(update={"address": address})
        copy._address_given = True
        return copy

    @property
    def address_source(self) -> str:
        """What set ``address``, as a message names it: ``--address`` or ``resources.address``."""
        return "--address" if self._address_given else "resources.address"


def _storage_shorthand(value: Any) -> Any:
    # storage: s3://bucket/runs is short for storage: {path: s3://bucket/runs}.
    return {"path": value} if isinstance(value, (str, Path)) else value


class StorageSpec(_Model):
    """Where a run's results go: a folder every node reaches, or a filesystem URI."""

    path: str = Field(min_length=1)
    #: A folder every node of the cluster mounts at this path (graftune cannot tell).
    shared: _Flag = False

    @model_validator(mode="after")
    def _known_location(self) -> StorageSpec:
        from orchestrator.storage import check_location

        try:
            check_location(self.path)
        except ValueError as exc:
            raise _KeyedError("path", str(exc)) from None
        return self


class SubmitSpec(_Model):
    """What ``graftune submit`` adds to the job (``graftune run`` ignores it)."""

    #: Requirements the job's runtime environment pip-installs (third-party plugins).
    pip: list[str] = []


class PluginsSpec(_Model):
    """Which plugins this recipe does without (see docs/plugins.md)."""

    #: Plugin names (entry-point names, or graftune.data / graftune.bases / graftune.events).
    disable: list[str] = []


class Recipe(_Model):
    """A whole recipe, validated; relative paths already resolved."""

    # A run directory is NAME-YYYYmmdd-HHMMSS[-N]: within a file name's 255 bytes.
    name: Annotated[str, Field(max_length=200), AfterValidator(_run_name)]
    # What NumPy, Ray and Keras take as a seed.
    seed: Annotated[_Whole, Field(ge=0, le=2**32 - 1)] = 0
    data: DataSpec
    base: BaseSpec | None = None
    strategies: dict[str, StrategySpec] = Field(min_length=1)
    search: SearchSpec = SearchSpec()
    resources: ResourcesSpec = ResourcesSpec()
    output: Path = Path("runs")
    #: Which trials keep their models at the run's end: every one, or each strategy's best.
    keep_models: Literal["all", "best"] = "all"
    cache: _Flag = True
    plugins: PluginsSpec = PluginsSpec()
    storage: Annotated[StorageSpec | None, BeforeValidator(_storage_shorthand)] = None
    submit: SubmitSpec = SubmitSpec()

    _file: Path | None = PrivateAttr(default=None)
    #: The file as the user named it, for messages (``_file`` is resolved).
    _shown: Path | None = PrivateAttr(default=None)
    _lines: dict[tuple[str, ...], int] = PrivateAttr(default_factory=dict)

    @property
    def file(self) -> Path | None:
        """The recipe file, if it came from one."""
        return self._file

    @property
    def base_dir(self) -> Path:
        """The folder relative paths resolve against: the recipe file's, or the
        current one for a recipe given as text or through a pipe (/dev/stdin)."""
        # A pipe's by the name it was given (resolved, /dev/stdin is /proc/PID/fd/0).
        shown = str(self._shown)
        if self._file is None or shown in _STREAMED or shown in STDIN_NAMES:  # text, or a pipe's
            return Path.cwd()
        return self._file.parent

    def error(self, path: tuple[str, ...], message: str) -> RecipeError:
        """A :class:`RecipeError` for ``path`` in this recipe, with its line."""
        return RecipeError(
            message,
            file=self._shown or self._file,
            path=".".join(map(str, path)),
            line=_line_of(self._lines, path),
        )

    def data_error(self, prefix: tuple[str, ...], exc: DataError) -> RecipeError:
        """A data source's error at its key under ``prefix`` (``data``, ``base.pretrain.data``).

        A key the recipe leaves out is at fault with its default value: the
        message says so, since the line given is its section's (found by QA:
        ``data.split`` was named at ``data:`` of a recipe without one).
        """
        # A dotted key names a key inside one: options.stroke (found by QA: every glyphs
        # option was said at the line of options:).
        key = (*prefix, *(exc.key or "source").split("."))
        message = str(exc)
        if self._lines and tuple(map(str, key)) not in self._lines and not exc.unset:
            field = DataSpec.model_fields.get(str(key[len(prefix)]))
            if field is not None and field.default is not None:
                message += f" ({key[-1]} is not in the recipe: this is its default)"
            else:  # found by QA: image_size's "default", which there is none of
                message += f" ({key[-1]} is not in the recipe)"
        elif exc.unset and tuple(map(str, key)) in self._lines:
            # Written, as null (found by QA: `target: null`, of a column named null, was
            # told to name the column).
            message += (
                f" (the recipe gives {key[-1]}: no value, as YAML reads an empty value, null "
                "and ~: write 'null' in quotes for a column of that name)"
            )
        return self.error(key, message)

    def base_error(self, exc: BaseModelError) -> RecipeError:
        """A base provider's error at its key of the ``base:`` section (its kind's without
        one; a third-party provider's at ``base.provider``, which chose it)."""
        assert self.base is not None
        kind = "provider" if self.base.provider else self.base.kind
        return self.error(("base", exc.key or kind), str(exc))

    def updated(self, **update: Any) -> Recipe:
        """A copy with ``update``'s sections replaced, from the same file (for its messages)."""
        changed = self.model_copy(update=update)
        changed._file, changed._shown, changed._lines = self._file, self._shown, self._lines
        return changed

    def with_defaults_worked_out(self) -> Recipe:
        """A copy with the values a run works out for itself written in: the
        ``search.mode`` its metric implies, and how many trials each strategy's
        search runs (``num_samples``, 8, or 1 pass for a grid). A run directory's
        ``recipe.yaml`` has them (found by QA: ``mode: null``, ``num_samples: null``)."""
        search = self.search.model_copy(
            update={"mode": self.search.direction, "num_samples": self.search.samples}
        )
        strategies = {
            name: spec.model_copy(update={"num_samples": self.strategy_samples(name)})
            for name, spec in self.strategies.items()
        }
        return self.updated(search=search, strategies=strategies)

    def strategy_samples(self, name: str) -> int:
        """Trials of strategy ``name``'s search: its ``num_samples``, else the search's
        (:attr:`Search.samples`; for a grid, its repeats)."""
        return self.strategies[name].num_samples or self.search.samples

    def shared_space(self) -> dict[str, Dimension]:
        """The parsed ``search.space`` section."""
        return {k: parse_dimension(v) for k, v in self.search.space.items()}

    def strategy_space(self, name: str) -> dict[str, Dimension]:
        """The parsed ``strategies.NAME.space`` section."""
        return {k: parse_dimension(v) for k, v in self.strategies[name].space.items()}

    def with_absolute_sources(
        self, data_sources: Registry, bases: Registry | None = None
    ) -> Recipe:
        """This recipe with every data source's path, and a plugin's base provider's
        options, made absolute (for a run's copy)."""
        from orchestrator.data import split_source

        def absolute(spec: DataSpec) -> DataSpec:
            scheme, location = split_source(spec.source)
            if scheme not in data_sources:
                return spec
            fixed = data_sources.get(scheme)().absolute_location(location, self.base_dir)
            return spec.model_copy(update={"source": f"{scheme}:{fixed}"})

        update: dict[str, Any] = {"data": absolute(self.data)}
        if self.base is not None and self.base.pretrain is not None:
            pretrain = self.base.pretrain.model_copy(
                update={"data": absolute(self.base.pretrain.data)}
            )
            update["base"] = self.base.model_copy(update={"pretrain": pretrain})
        provider = self.base.provider if self.base is not None else None
        if bases is not None and provider in bases and self.base is not None:
            from orchestrator.bases import _calling  # a fault names the provider

            options = _calling(
                bases, provider, "absolute_options", dict(self.base.options), self.base_dir
            )
            update["base"] = self.base.model_copy(update={"options": options})
        return self.updated(**update)

    def to_yaml(self) -> str:
        """The resolved recipe as YAML (what a run directory keeps)."""
        data = self.model_dump(mode="json", exclude_defaults=False)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


# -- loading --------------------------------------------------------------------


#: The largest recipe file read (YAML is parsed in pure Python: 50 MB took minutes).
MAX_RECIPE_BYTES = 1 << 20
#: The recipes in the repository's (and the sdist's) ``recipes/``, which no wheel holds.
_SHIPPED_RECIPES = ("quickstart.yaml", "tabular-csv.yaml", "resnet50-imagenet.yaml")


#: The most values a recipe may hold as YAML aliases expand it (each alias counted
#: every time it is referenced): a file of 500 bytes whose anchors nest 9 levels
#: of 10 aliases each holds 10^9, and its error messages took minutes and gigabytes.
MAX_RECIPE_VALUES = 10_000
#: How a top-level key of the user's own begins (a place for YAML anchors).
EXTENSION_PREFIX = "x-"


def _expands_past(data: Any, limit: int) -> bool:
    """Whether ``data`` holds more than ``limit`` values (keys, items and the
    lists and mappings themselves), counted as expanded; stops at ``limit``."""
    count = 0
    stack = [data]
    while stack:
        value = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


#: Beside a run's recipe.yaml: the digest of what the run searches, to check a
#: resume against (``orchestrator.run``).
SEARCHED_FILE = ".searched"
#: Beside it: the values it digests, key by key, so that a refused resume names the
#: key that changed (runs made before it have the digest alone).
SEARCHED_VALUES_FILE = ".searched.json"


def _recorded(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("recorded"))


def recorded_recipe(path: Path) -> bool:
    """Whether ``path`` is a run directory's ``recipe.yaml``, written by graftune
    (perhaps an older one): it is read as it was written, and checks added
    since that would refuse it are not applied (a resume or ``predict`` of an
    earlier run goes on as it began)."""
    folder = path.parent
    return path.name == "recipe.yaml" and (
        (folder / SEARCHED_FILE).is_file() or (folder / "trials").is_dir()
    )


def inside_a_run(run_dir: Path) -> str:
    """Why no run directory is made inside ``run_dir`` (:func:`run_dir_around`'s)."""
    return (
        f"it is inside the run directory {run_dir}, whose files graftune reads; choose a "
        "folder elsewhere"
    )


def run_dir_around(path: Path) -> Path | None:
    """The run directory that ``path`` would be made in, or ``None``.

    Nothing is written inside a run directory (an export, another run): predict
    and a resume would take a folder in its ``trials/`` for a trial.
    """
    for folder in Path(path).resolve().parents:
        if recorded_recipe(folder / "recipe.yaml"):
            return folder
    return None


#: What a recipe read from a pipe held, by its path: a pipe can be read only once.
_STREAMED: dict[str, str] = {}
#: Names of stdin: a recipe read through one has its paths from the current folder,
#: whether stdin is a pipe or a file (``< sub/r.yaml``, which is read again from
#: there and kept nowhere; /dev/stdin resolves to the file, and its paths were from
#: ``sub/``: found by QA).
STDIN_NAMES = frozenset({"-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"})


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file (schema only; see :func:`check_recipe`);
    ``-`` is stdin, and named so in errors.

    Raises:
        RecipeError: The file is missing, is not YAML, or breaks the schema.
    """
    path = Path(path)
    if str(path) != "-":  # a file named "-" is "./-" (found by QA: read for stdin)
        return _load_recipe(path)
    # As predict's --out - is stdout (found by QA: "-: no such recipe file").
    stdin = Path("/dev/stdin")
    try:
        recipe = _load_recipe(stdin)
    except RecipeError as exc:
        for error in (exc, *getattr(exc, "errors", ())):  # as the user named it
            if error.file == str(stdin):
                error.file = "-"
        raise
    # Its paths are from the current folder (STDIN_NAMES), as a pipe's are.
    recipe._shown = path
    return recipe


def _load_recipe(path: Path) -> Recipe:

    def too_big(size: str) -> RecipeError:
        return RecipeError(
            f"the file is {size}; a recipe is a few KiB of YAML "
            f"(at most {MAX_RECIPE_BYTES // 2**20} MiB): is it the right file?",
            file=path,
        )

    try:
        status = path.stat()
        if status.st_size > MAX_RECIPE_BYTES:
            raise too_big(f"{status.st_size / 2**20:.2f} MiB")
        # A pipe (/dev/stdin, <(...)) is read once: the command line reads a recipe
        # twice (its plugins.disable first), and the second read found it empty.
        streamed = not stat.S_ISREG(status.st_mode)
        text = _STREAMED.get(str(path)) if streamed else None
        if text is None:
            # Read no more than the limit whatever stat said: a device or a pipe
            # (/dev/zero, /dev/stdin) has a size of 0, and read_text took 16 GB of /dev/zero.
            with path.open(encoding="utf-8") as stream:
                text = stream.read(MAX_RECIPE_BYTES + 1)  # characters: at least as many bytes
            if len(text) > MAX_RECIPE_BYTES:
                raise too_big(f"over {MAX_RECIPE_BYTES // 2**20} MiB")
            if streamed:
                _STREAMED[str(path)] = text
    except FileNotFoundError:
        hint = ""
        if path.name in _SHIPPED_RECIPES and path.parent.name == "recipes":
            # Found by QA: a wheel's user, following the quick start, was told no more.
            hint = (
                " (graftune's own recipes come with its source, not with the wheel: the "
                "repository's or the sdist's recipes/ folder)"
            )
        raise RecipeError(f"no such recipe file{hint}", file=path) from None
    except IsADirectoryError:
        inside = path / "recipe.yaml"
        hint = f": a run directory's recipe is {inside}" if inside.is_file() else ""
        raise RecipeError(f"is a folder, not a recipe file{hint}", file=path) from None
    except UnicodeDecodeError as exc:
        # Found by QA: the codec's "position 7", no line, and UTF-16 unsaid.
        data = bytes(exc.object)
        line = data[: exc.start].count(b"\n") + 1
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            said, line = "it is UTF-16 (its first bytes say so): save it as UTF-8", None
        else:
            bad = data[exc.start : exc.end]
            said = (
                f"byte {exc.start + 1} is not UTF-8 ({' '.join(f'0x{b:02x}' for b in bad)}, "
                f"{bad.decode('cp1252', 'replace')!r} in Windows-1252): a recipe is UTF-8 "
                "text; save it as UTF-8"
            )
        raise RecipeError(f"cannot read the recipe: {said}", file=path, line=line) from None
    except PermissionError as exc:
        raise RecipeError(f"cannot read the recipe: {exc}", file=path) from None
    return parse_recipe(text, file=path, recorded=recorded_recipe(path))


def as_recipe(recipe: Recipe | str | Path | dict[str, Any]) -> Recipe:
    """A recipe from a recipe object, a file's path, YAML text (a string with a line
    break, or one line that opens a mapping: ``{...}``, JSON too) or a dict;
    relative paths in text or a dict resolve against this folder.

    Raises:
        RecipeError: The file is missing, is not YAML, or breaks the schema.
    """
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        # The dump's lines are not the user's: errors name the key path alone.
        text = yaml.safe_dump(_plain(recipe, ()), sort_keys=False)
        return parse_recipe(text, numbered=False)
    if isinstance(recipe, str) and not recipe.strip():
        raise RecipeError("an empty string is no recipe: give a file's path, YAML text or a dict")
    # One line that opens a mapping is YAML (JSON) text, not a file's name (found by QA:
    # run_recipe(json.dumps(d)) was "no such recipe file").
    inline = isinstance(recipe, str) and recipe.lstrip().startswith("{")
    if isinstance(recipe, Path) or (isinstance(recipe, str) and "\n" not in recipe and not inline):
        return load_recipe(recipe)
    if not isinstance(recipe, str):
        raise TypeError(
            f"a recipe is a Recipe, a file's path, YAML text or a dict, not {type(recipe).__name__}"
        )
    return parse_recipe(textwrap.dedent(recipe))


def _plain(value: Any, key: tuple[str, ...]) -> Any:
    """A recipe dict's value as YAML data: paths as text, NumPy numbers and text
    as Python's."""
    # Exactly these types: np.float64 and np.str_ are subclasses of float and str,
    # which YAML's safe dumper refuses (found by QA: np.logspace values in a space).
    if value is None or type(value) in (str, bool, int, float):
        return value
    if isinstance(value, dict):
        return {k: _plain(v, (*key, str(k))) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, (*key, str(i))) for i, v in enumerate(value)]
    if isinstance(value, PurePath):
        return str(value)
    item = getattr(value, "item", None)  # a NumPy scalar (np.int64(3), np.float64(0.5), np.str_)
    if callable(item) and getattr(value, "shape", None) == ():
        if getattr(getattr(value, "dtype", None), "kind", None) == "f" and value.dtype.itemsize < 8:
            # As written: np.float32(0.2) is 0.2, not 0.20000000298023224 (found by QA:
            # a test split of 49 rows where 0.2 gave 48).
            return float(str(value))
        return _plain(item(), key)
    for kind in (int, float, str):  # another subclass (an IntEnum's member): as its base type
        if isinstance(value, kind):
            return kind(value)
    raise RecipeError(
        f"a recipe holds text, numbers, true/false, lists and mappings; got "
        f"{type(value).__name__} {written(value)}",
        path=".".join(key) or None,
    )


def parse_recipe(
    text: str, *, file: Path | None = None, recorded: bool = False, numbered: bool = True
) -> Recipe:
    """Validate recipe text; relative paths resolve against ``file``'s folder.

    Args:
        recorded: The text is a run's recorded recipe (:func:`recorded_recipe`).
        numbered: Errors name the line of the key at fault (``False`` where the
            text is not the user's: a dict's dump).
    """
    try:
        data = yaml.safe_load(text)
        lines = _key_lines(text, file) if numbered else {}
    except RecursionError:
        raise RecipeError("not valid recipe YAML: nested too deeply", file=file) from None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        problem = exc.problem or str(exc)
        if isinstance(exc, yaml.composer.ComposerError) and exc.context and exc.problem:
            # Found by QA: "second occurrence", of nothing said (the context names it:
            # "found duplicate anchor 'a'; first occurrence", at a line of its own).
            where = f" (line {exc.context_mark.line + 1})" if exc.context_mark else ""
            here = f" (line {line})" if line is not None else ""  # found by QA: said nowhere
            problem = f"{exc.context}{where}; {exc.problem}{here}"
        if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in problem:
            # Only where a tag is the problem (found by QA: said of an unhashable key).
            problem = f"{problem} (recipes are data: tags that build Python objects are refused)"
        raise RecipeError(f"not valid recipe YAML: {problem}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"not valid YAML: {exc}", file=file) from None
    # Before any check reads the values: _key_lines walks each anchor once (and
    # names a recursive alias as such), every other check walks them expanded.
    if _expands_past(data, MAX_RECIPE_VALUES):
        raise RecipeError(
            f"the recipe expands to more than {MAX_RECIPE_VALUES:,} values (through YAML "
            "aliases?); a recipe holds a few hundred: is it the right file?",
            file=file,
        )
    if data is None:
        raise RecipeError("the recipe is empty; expected a mapping of recipe keys", file=file)
    if not isinstance(data, dict):
        raise RecipeError(
            f"expected a mapping of recipe keys at the top, got {type(data).__name__}", file=file
        )
    # Keys of the user's own, as Compose's extension fields: a place for YAML
    # anchors that the recipe's other sections merge or alias.
    data = {k: v for k, v in data.items() if not _extension(k)}
    try:
        recipe = Recipe.model_validate(data, context={"recorded": recorded})
    except ValidationError as exc:
        raise RecipeErrors(
            [_convert(err, file, lines) for err in exc.errors(include_url=False)]
        ) from None
    recipe._file = file.resolve() if file is not None else None
    recipe._shown = file
    recipe._lines = lines
    return _resolve_paths(recipe)


def _resolve_paths(recipe: Recipe) -> Recipe:
    from orchestrator.paths import expand_user, path_problem, run_path_problem

    def expanded(key: tuple[str, ...], location: str | Path) -> Path:
        try:
            path = expand_user(location)
        except ValueError as exc:
            raise recipe.error(key, str(exc)) from None
        problem = path_problem(recipe.base_dir / path)
        if problem is not None:  # found by QA: an internal error from resolve()
            raise recipe.error(key, problem)
        return path

    base_dir = recipe.base_dir
    update: dict[str, Any] = {}
    # "~" is the user's home, as in data sources and storage: never a folder named "~".
    output = expanded(("output",), recipe.output)
    if output != recipe.output or not output.is_absolute():
        update["output"] = (base_dir / output).resolve()
    problem = run_path_problem(
        update.get("output", output), len(os.fsencode(recipe.name)), list(recipe.strategies)
    )
    if problem is not None:
        raise recipe.error(("output",), problem)
    storage = recipe.storage
    if storage is not None and "://" not in storage.path:
        path = (base_dir / expanded(("storage", "path"), storage.path)).resolve()
        update["storage"] = storage.model_copy(update={"path": str(path)})
    base = recipe.base
    if base is not None:
        base_update: dict[str, Any] = {}
        if base.path is not None:
            path = expanded(("base", "path"), base.path)  # an absolute one is checked too
            if not base.path.is_absolute():
                base_update["path"] = (base_dir / path).resolve()
        if base.weights not in (None, "imagenet", "none"):
            weights = expanded(("base", "weights"), base.weights)
            if not Path(base.weights).is_absolute():
                base_update["weights"] = str((base_dir / weights).resolve())
        if base_update:
            update["base"] = base.model_copy(update=base_update)
    if not update:
        return recipe
    return recipe.updated(**update)


def _check_class_spelling(
    node: yaml.Node,
    path: tuple[str, ...],
    line: int,
    file: Path | None,
    errors: list[RecipeError],
) -> None:
    """A class written as a number YAML reads as another (``01`` is 1, ``010`` is 8).

    Class names are compared as text: ``classes: [01]`` would keep class ``'1'``
    (or none) where the data has ``'01'``.
    """
    if not (isinstance(node, yaml.ScalarNode) and node.style is None):
        return
    if node.tag != "tag:yaml.org,2002:int" or re.fullmatch(r"-?(0|[1-9][0-9]*)", node.value):
        return
    number = yaml.safe_load(node.value)
    errors.append(
        RecipeError(
            f"YAML reads {node.value} as the number {number}: write '{node.value}' (in "
            f"quotes) for the class named {node.value}, or {number} for the label {number}",
            file=file,
            path=".".join(path),
            line=line,
        )
    )


def _key_lines(text: str, file: Path | None = None) -> dict[tuple[str, ...], int]:
    """Map each key path of the YAML document to its 1-based line.

    Raises:
        RecipeErrors: A mapping repeats a key (YAML would keep only the last one
            silently), or an alias makes the document recursive.
    """
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    lines: dict[tuple[str, ...], int] = {}
    errors: list[RecipeError] = []
    walked: set[int] = set()
    open_nodes: set[int] = set()
    seen_keys: dict[tuple[int, str, Any], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            return
        if id(node) in open_nodes:
            errors.append(
                RecipeError(
                    "an alias refers to a mapping or list that contains it; "
                    "a recipe cannot be recursive",
                    file=file,
                    path=".".join(path),
                    line=_line_of(lines, path),
                )
            )
            return
        # An alias shares its anchor's node: walking it once keeps the walk linear.
        if id(node) in walked:
            return
        walked.add(id(node))
        open_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                line = key.start_mark.line + 1
                if isinstance(key, yaml.ScalarNode):
                    first = seen_keys.get((id(node), key.tag, key.value))
                    merge = key.tag == "tag:yaml.org,2002:merge"
                    if first is not None:
                        # Found by QA: a second << won over the first in silence.
                        said = (
                            "merge several mappings with one: <<: [*first, *second]"
                            if merge
                            else "YAML would keep only the last one"
                        )
                        errors.append(
                            RecipeError(
                                f"duplicate key {key.value!r} (first on line {first}); {said}",
                                file=file,
                                path=".".join(sub),
                                line=line,
                            )
                        )
                    seen_keys[(id(node), key.tag, key.value)] = line
                    if merge:
                        # Found by QA: a bad key merged in was named at its mapping's
                        # line; it is at the << that brought it (a key written in the
                        # mapping itself, before or after, wins, as in YAML).
                        for merged in _merged_keys(value):
                            lines.setdefault((*path, merged), line)
                lines[sub] = line
                walk(value, sub)
        else:
            for i, item in enumerate(node.value):
                sub = (*path, str(i))
                lines[sub] = item.start_mark.line + 1
                if path[-1:] == ("classes",):
                    _check_class_spelling(item, sub, lines[sub], file, errors)
                walk(item, sub)
        open_nodes.discard(id(node))

    if root is not None:
        walk(root, ())
    if errors:
        raise RecipeErrors(errors)
    return lines


def _extension(key: Any) -> bool:
    """Whether a top-level key is the user's own (``x-...``), which the recipe
    passes over."""
    return isinstance(key, str) and key.startswith(EXTENSION_PREFIX)


def _as_extension(key: str) -> str:
    """``key`` as a key of the user's own: ``common``, ``X-common``, ``x_common``,
    ``_common`` and ``.common`` (GitLab CI's way) are all ``x-common``."""
    name = key[2:] if key[:2].lower() in ("x-", "x_") else key
    return EXTENSION_PREFIX + (name.lstrip("._-") or name)


def _merged_keys(node: yaml.Node, seen: set[int] | None = None) -> list[str]:
    """The keys a ``<<`` merge brings in: of its mapping, or of each mapping of
    its list, with theirs merged in turn (an alias met again is passed over)."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return []
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        return [key for item in node.value for key in _merged_keys(item, seen)]
    if not isinstance(node, yaml.MappingNode):
        return []
    keys = []
    for key, value in node.value:
        if key.tag == "tag:yaml.org,2002:merge":
            keys.extend(_merged_keys(value, seen))
        elif isinstance(key, yaml.ScalarNode):
            keys.append(str(key.value))
    return keys


def _line_of(lines: dict[tuple[str, ...], int], path: tuple[str, ...]) -> int | None:
    path = tuple(str(p) for p in path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def _of_a_run(file: Path) -> bool:
    """Whether ``file`` is the ``recipe.yaml`` a run wrote in its run directory."""
    folder = Path(file).parent
    return Path(file).name == "recipe.yaml" and any(
        (folder / name).exists() for name in ("trials", ".searched", "environment.json")
    )


def _convert(
    err: dict[str, Any], file: Path | None, lines: dict[tuple[str, ...], int]
) -> RecipeError:
    loc = tuple(str(p) for p in err["loc"])
    kind = err["type"]
    if loc[-1:] == ("[key]",) or kind == "invalid_key":
        # A key that is not text: pydantic's loc names it as it hashes (true as 1)
        # and adds "[key]" (found by QA); the error is at the mapping that holds it.
        loc = loc[:-2] if loc[-1:] == ("[key]",) else loc[:-1]
        kind = "key_type"
    if kind == "key_type":
        message = f"a key should be text; got {written(err['input'])}"
    elif kind == "extra_forbidden":
        valid = _fields_at(loc[:-1])
        meant = did_you_mean(loc[-1], valid)
        message = f"unknown key {loc[-1]!r}{meant}"
        if valid:
            message += f"; expected one of: {', '.join(valid)}"
        if len(loc) == 1 and not meant and not (file is not None and _of_a_run(file)):
            message += (
                f" (a key of your own, for YAML anchors, starts with {EXTENSION_PREFIX}: "
                f"{_as_extension(loc[-1])})"
            )
        if file is not None and _of_a_run(file):
            from orchestrator import __version__

            # Found by QA: a run directory of a newer graftune read as a typo of the
            # user's, in a file graftune wrote, and "did you mean" sent them in a circle.
            from orchestrator.environment import recorded_graftune

            if recorded_graftune(Path(file).parent) == __version__:
                # Found by QA: the same graftune made the run, so the key was added by hand.
                message += (
                    f"; graftune {__version__}, this one, wrote this file as the run started, "
                    "without it: was the file edited? It is the run's record of its recipe: "
                    "put it back as it was"
                )
            else:
                message += (
                    f"; graftune wrote this file as the run started: was the run made by a "
                    f"newer graftune than this one ({__version__})? Resume or predict with "
                    "that one, or upgrade"
                )
    elif kind == "missing":
        message = "this key is required"
    elif kind == "literal_error":
        message = f"expected {err['ctx']['expected']}; got {written(err['input'])}"
    elif kind == "value_error":
        error = err["ctx"]["error"]
        message = str(error)
        if isinstance(error, _KeyedError):
            loc = (*loc, error.key)
    elif kind == "too_short" and loc == ("strategies",):
        message = "name at least one strategy to search, e.g. strategies: {scratch_mlp: {}}"
    elif kind == "bool_type":
        message = f"expected true or false; got {written(err['input'])}"
        if isinstance(err["input"], str) and err["input"].strip().lower() in ("true", "false"):
            # Found by QA: "expected true or false; got 'false'" said nothing of why.
            message += " (a string, in quotes: write it unquoted)"
    elif kind in ("path_type", "path_parsing"):
        message = f"expected a path (a folder or file name); got {written(err['input'])}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        hint = " (write {} for an empty section)" if err["input"] is None else ""
        message = f"expected a mapping of keys{hint}; got {written(err['input'])}"
    else:
        message = f"{err['msg'][0].lower()}{err['msg'][1:]}; got {written(err['input'])}"
    if isinstance(err.get("input"), bool) and kind in ("string_type", "key_type"):
        message += _YAML_BOOLEANS
    if err.get("input", ...) is None and message.endswith("; got null"):
        # Found by QA: `output: ~` was "got None", with nothing of why.
        home = ": write '~' in quotes for your home folder" if kind.startswith("path_") else ""
        said = "" if "{}" in message else f" (YAML reads an empty value, null and ~ as null{home})"
        message += said
    return RecipeError(message, file=file, path=".".join(loc), line=_line_of(lines, loc))


#: Said where the schema met a boolean it did not expect: YAML 1.1 reads these words so.
_YAML_BOOLEANS = (
    " (YAML reads yes, no, on, off, true and false, in any case, as true/false: "
    "quote the word, 'no', to mean the text)"
)


def _fields_at(loc: tuple[str, ...]) -> list[str]:
    """The keys the schema allows at ``loc`` (for "did you mean")."""
    current: Any = Recipe
    keys = list(loc)
    while keys:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(keys.pop(0))
            if field is None:
                return []
            current = field.annotation
            continue
        current = _unwrap(current)
        if typing.get_origin(current) is dict:
            keys.pop(0)
            current = typing.get_args(current)[1]
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return annotation


# -- checks that need the plugins -----------------------------------------------


def check_recipe(recipe: Recipe, host: PluginHost) -> None:
    """Check what the schema cannot: names, files, columns, spaces, the base.

    Raises:
        RecipeErrors: Every problem found, each with its key path.
    """
    from orchestrator.data import check_data_spec
    from orchestrator.preflight import (
        check_implements_build,
        plugin_control_errors,
        refuse_large_grid,
        strategy_defaults,
        strategy_space,
    )
    from orchestrator.strategy import SpaceContext

    errors: list[RecipeError] = []

    # As the run refuses it: the nearest folder of its path that exists must be writable.
    # A local storage folder replaces output (a URI's runs are made in output first).
    # A shared one may be a mount of the cluster's nodes alone, under a folder this
    # machine cannot write in: only a file on its way is refused here.
    key, folder, writable = ("output",), recipe.output, True
    if recipe.storage is not None and "://" not in recipe.storage.path:
        key, folder = ("storage", "path"), Path(recipe.storage.path)
        writable = not recipe.storage.shared
    problem = cannot_make_in(folder, writable=writable)
    inside = run_dir_around(folder / recipe.name)  # as the run refuses it (found by QA)
    if problem is None and inside is not None:
        problem = inside_a_run(inside)
    if problem is not None:
        errors.append(recipe.error(key, f"cannot make a run directory in {folder}: {problem}"))
    if recipe.storage is not None and recipe.storage.path.lower().startswith("file://"):
        # A file:// URI's folder, as a shared folder's: it may be on the cluster's nodes
        # only, so only a file on its way is refused (found by QA: a file passed, and
        # the run stopped at its upload, after it had prepared the data).
        from orchestrator.storage import local_folder

        stored = local_folder(recipe.storage.path)
        problem = cannot_make_in(stored, writable=False)
        if problem is not None:
            errors.append(
                recipe.error(("storage", "path"), f"cannot store runs in {stored}: {problem}")
            )
    try:
        check_data_spec(recipe.data, host.data_sources, recipe.base_dir, recipe.plugins.disable)
    except DataError as exc:
        errors.append(recipe.data_error(("data",), exc))

    shared: dict[str, Dimension] = {}
    for key, raw in recipe.search.space.items():
        try:
            shared[key] = parse_dimension(raw)
        except ValueError as exc:
            errors.append(recipe.error(("search", "space", key), str(exc)))

    taken: set[str] = set()
    needs_base: list[str] = []
    for name, spec in recipe.strategies.items():
        if name not in host.strategies:
            message = host.strategies.unknown_message(name, recipe.plugins.disable)
            errors.append(recipe.error(("strategies", name), message))
            continue
        strategy = host.strategy(name)
        check_implements_build(strategy, name, host.strategies.owner(name))
        if strategy.requires_base:
            needs_base.append(name)
        defaults = strategy_space(strategy, SpaceContext(), host.strategies.owner(name))
        taken.update(defaults)
        if recipe.search.starts_from_defaults:  # what a run will start from
            strategy_defaults(
                strategy, SpaceContext(), host.strategies.owner(name), defaults, host.said
            )
        overrides: dict[str, Dimension] = {}
        for key, raw in spec.space.items():
            path = ("strategies", name, "space", key)
            if key not in defaults:
                errors.append(
                    recipe.error(
                        path,
                        f"{name} has no dimension {key!r}{did_you_mean(key, defaults)}; "
                        f"it searches: {', '.join(sorted(defaults))}",
                    )
                )
                continue
            try:
                dim = parse_dimension(raw)
                check_compatible(key, defaults[key], dim)
                _check_all_has_base(name, strategy.requires_base, dim)
                _check_values(strategy, host.strategies.owner(name), key, dim)
            except ValueError as exc:
                errors.append(recipe.error(path, str(exc)))
            else:
                overrides[key] = dim
        for key, dim in shared.items():
            if key in defaults and key not in spec.space:
                try:
                    check_compatible(key, defaults[key], dim)
                    _check_all_has_base(name, strategy.requires_base, dim)
                    _check_values(strategy, host.strategies.owner(name), key, dim)
                except ValueError as exc:
                    errors.append(recipe.error(("search", "space", key), f"for {name}: {exc}"))

        strategy_errors = [
            e for e in errors if name in (e.path or "") or f"for {name}:" in e.message
        ]
        if not strategy_errors:
            try:
                refuse_large_grid(recipe, name, merge_spaces(defaults, shared, overrides))
            except RecipeError as exc:
                errors.append(exc)
        if recipe.search.backend == "keras_tuner" and not strategy_errors:
            # What only keras-tuner cannot search (not said of a space that is wrong anyway)
            from orchestrator.tuning.keras_tuner import check_space

            try:
                check_space(recipe, merge_spaces(defaults, shared, overrides), name)
            except RecipeError as exc:
                if str(exc) not in map(str, errors):  # asha: once, not once per strategy
                    errors.append(exc)

    known = {n for n in recipe.strategies if n in host.strategies}
    if known == set(recipe.strategies):
        for key in shared:
            if key not in taken:
                errors.append(
                    recipe.error(
                        ("search", "space", key),
                        f"no strategy of this recipe searches {key!r}{did_you_mean(key, taken)}; "
                        f"they search: {', '.join(sorted(taken))}",
                    )
                )

    if needs_base and recipe.base is None:
        # At the first strategy that needs it: the base: section has no line to name.
        errors.append(
            recipe.error(
                ("strategies", needs_base[0]),
                f"{', '.join(needs_base)} transfer{'s' if len(needs_base) == 1 else ''} from a "
                "pretrained base: add a base: section "
                "(path:, application:, pretrain:, or a plugin's provider:)",
            )
        )
    if recipe.base is not None:
        errors.extend(_check_base(recipe, host))
    errors.extend(plugin_control_errors(recipe, host))

    if errors:
        raise RecipeErrors(errors)


def _check_all_has_base(strategy: str, requires_base: bool, dim: Dimension) -> None:
    # At run time "all" is resolved only for strategies that take the base.
    if uses_all(dim) and not requires_base:
        raise ValueError(
            f"'all' counts the layers of the base, and {strategy} takes no base; "
            f"got {dim.describe()}"
        )


#: The built-in bases, each given by its own ``base:`` key, with what that key takes.
_BUILT_IN_BASES = {
    "application": "ResNet50",
    "path": "base.keras",
    "pretrain": "{data: {source: ...}}",
}


def _check_base(recipe: Recipe, host: PluginHost) -> list[RecipeError]:
    from orchestrator.bases import check_base_spec

    assert recipe.base is not None
    if recipe.base.provider in _BUILT_IN_BASES:  # found by QA: an AssertionError at run
        name = recipe.base.provider
        return [
            recipe.error(
                ("base", "provider"),
                f"{name} is a built-in base, given by its own key: write base: {{{name}: "
                f"{_BUILT_IN_BASES[name]}}} (provider: names a base provider a plugin adds)",
            )
        ]
    if recipe.base.kind not in host.bases:
        message = host.bases.unknown_message(recipe.base.kind, recipe.plugins.disable)
        return [recipe.error(("base", "provider"), message)]
    errors: list[RecipeError] = []
    if recipe.base.pretrain is not None:
        from orchestrator.data import check_data_spec

        try:
            check_data_spec(
                recipe.base.pretrain.data,
                host.data_sources,
                recipe.base_dir,
                recipe.plugins.disable,
            )
        except DataError as exc:
            errors.append(recipe.data_error(("base", "pretrain", "data"), exc))
    try:
        check_base_spec(recipe.base, host.bases)
    except BaseModelError as exc:
        errors.append(recipe.base_error(exc))
    return errors


def _check_values(strategy: Any, owner: str, key: str, dim: Dimension) -> None:
    """What a recipe's dimension can give must be numbers that are finite, and values
    the strategy takes (:meth:`~orchestrator.strategy.Strategy.check_value`).

    Raises:
        ValueError: Naming the value and what the parameter takes.
        PluginError: The strategy's ``check_value`` raised something else.
    """
    for value in extremes(dim):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        try:
            strategy.check_value(key, value)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        except Exception as exc:
            raise PluginError(
                f"strategy {strategy.name!r} from plugin {owner} raised in "
                f"check_value({key!r}, {value!r}): {type(exc).__name__}: {exc}",
                plugin=strategy.name,
            ) from exc


def validate_recipe(path: str | Path, host: PluginHost) -> Recipe:
    """Load a recipe and run every check that needs no training.

    Raises:
        RecipeError: With the file, key path and what was expected.
    """
    recipe = load_recipe(path)
    check_recipe(recipe, host)
    return recipe


def check_recipe_data(recipe: Recipe, host: PluginHost) -> Any:
    """Load the recipe's data and split it as a run would, reporting what is wrong in it.

    What :func:`check_recipe` cannot see without reading the data: feature
    columns that are not numbers, a class too small for the split, fewer
    examples than ``labels_per_class`` asks for.

    Returns:
        The prepared :class:`~orchestrator.data.Dataset`.

    Raises:
        RecipeError: With the file and the data key at fault.
    """
    from orchestrator.data import prepare_dataset

    try:
        return prepare_dataset(
            recipe.data, host.data_sources, seed=recipe.seed, base_dir=recipe.base_dir
        )
    except DataError as exc:
        raise recipe.data_error(("data",), exc) from None


def _check_pretrain_columns(recipe: Recipe) -> None:
    """Refuse a table whose columns the pretrain table has at other positions.

    A base takes a table's features by position, as it learned them: a run whose
    CSV holds the pretrain CSV's columns in another order fed each to the input
    that learned another, and transferred noise (found by QA: chance accuracy,
    no word). Tables whose columns share no name are taken as they are.
    """
    from orchestrator.predict import table_features

    assert recipe.base is not None and recipe.base.pretrain is not None
    run = table_features(recipe.data, recipe.base_dir)
    pretrain = table_features(recipe.base.pretrain.data, recipe.base_dir)
    if run is None or pretrain is None:
        return
    where = {name: i for i, name in enumerate(pretrain)}
    moved = [(name, i, where[name]) for i, name in enumerate(run) if where.get(name, i) != i]
    if not moved:
        return
    name, i, j = moved[0]
    more = f" (and {len(moved) - 1} more)" if len(moved) > 1 else ""
    raise recipe.error(
        ("base", "pretrain", "data"),
        f"the run's data has column {name!r} as feature {i + 1}, and the pretrain data as "
        f"feature {j + 1}{more}: a base takes a table's features by position, as it learned "
        "them, so each would feed an input that learned another column; put the run's "
        "columns in the pretrain data's order",
    )


def _check_application_input(recipe: Recipe, dataset: Any) -> None:
    """Refuse data an application's ``input_shape`` cannot take, from the shapes
    alone (found by QA: 4 channels passed validate --data, and the run built and
    cached the base before it refused them)."""
    from orchestrator.bases import _input_shape, plan_adapter

    assert recipe.base is not None
    try:
        plan_adapter(dataset.task.input_shape, _input_shape(recipe.base), None)
    except BaseModelError as exc:
        key = "input_shape" if recipe.base.input_shape else "application"
        raise recipe.error(("base", key), str(exc)) from None


def check_pretrain_input(
    recipe: Recipe, host: PluginHost, dataset: Any, said: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Check that a ``pretrain:`` base will take the run's data, before it is
    trained, and an application's ``input_shape`` the run's data, before it is built.

    The base's input is the pretrain data's; the run's data must reach it
    through the adaptations graftune makes (resizing, grey to RGB, flattening).
    A mismatch was found only once the base had been trained.

    The pretrain data leaves out the run's validation and test examples
    (:func:`~orchestrator.data.without_examples`): ``said`` is told how many.

    Returns:
        The pretrain data it prepared, for ``prepare_base(prepared=...)`` (empty
        without a pretrain stage).

    Raises:
        RecipeError: At ``base.pretrain`` (or its data's key), with both shapes.
    """
    if recipe.base is not None and recipe.base.application is not None:
        _check_application_input(recipe, dataset)
    if recipe.base is None or recipe.base.pretrain is None:
        return {}
    from orchestrator.bases import data_key, plan_adapter
    from orchestrator.data import prepare_dataset, without_examples

    pretrain = recipe.base.pretrain
    try:
        source = prepare_dataset(
            pretrain.data, host.data_sources, seed=recipe.seed, base_dir=recipe.base_dir
        )
        total = len(source.y_train)
        seen_as = None
        shapes = (source.task.input_shape, dataset.task.input_shape)
        if shapes[0] != shapes[1] and len(shapes[0]) == 3 == len(shapes[1]):
            # Images at another size or channels: the pretrain's are compared as the
            # run reads its own (found by review: none was left out of the run's own
            # source; found by QA: nor of the same one spelled otherwise, as
            # glyphs:lower+upper for glyphs:latin).
            shaping = {"image_size": recipe.data.image_size, "channels": recipe.data.channels}
            with contextlib.suppress(DataError):  # a source that cannot read at that size
                seen_as = prepare_dataset(
                    pretrain.data.model_copy(update=shaping),
                    host.data_sources,
                    seed=recipe.seed,
                    base_dir=recipe.base_dir,
                )
        source, left_out = without_examples(
            source, (dataset.x_val, dataset.x_test), seen_as=seen_as
        )
    except DataError as exc:
        raise recipe.data_error(("base", "pretrain", "data"), exc) from None
    if left_out and said is not None:
        said(
            f"pretrain: leaves out {left_out} of the {total} training examples of "
            f"{pretrain.data.source}: they are the run's validation or test examples, "
            "which the base must not learn before they score the run's models"
        )
    shape = source.task.input_shape
    if pretrain.architecture == "cnn" and len(shape) != 3:
        raise recipe.error(
            ("base", "pretrain", "architecture"),
            f"a cnn base needs images (h, w, c); the pretrain data is {shape}",
        )
    _check_pretrain_columns(recipe)
    try:
        plan_adapter(dataset.task.input_shape, shape, None)
    except BaseModelError:
        fix = "pretrain on data whose inputs the run's can be adapted to"
        run_shape = dataset.task.input_shape
        if len(run_shape) == 3 == len(shape) and (run_shape[-1], shape[-1]) == (3, 1):
            # Found by QA: grey PNGs, which images: reads as RGB, on the quick start's
            # glyphs base; the one-line fixes went unsaid.
            fix = (
                "read the run's images grey with data.channels: 1 (images: reads RGB "
                "unless told), or pretrain on RGB with base.pretrain.data.channels: 3"
            )
        raise recipe.error(
            ("base", "pretrain"),
            f"the run's data has inputs of shape {run_shape}, and a base "
            f"pretrained on {pretrain.data.source} takes {shape}, which graftune cannot adapt "
            f"(it resizes images, turns grey into RGB and flattens images for dense bases): {fix}",
        ) from None
    _check_pretrain_cuts(recipe, host, pretrain, source.task)
    return {data_key(pretrain.data): source}


def _check_pretrain_cuts(
    recipe: Recipe, host: PluginHost, pretrain: PretrainSpec, task: Any
) -> None:
    """Refuse a ``frozen_layers`` (any count of cut points the recipe gives) past
    the cut points of the base ``pretrain`` makes on ``task``'s inputs, from its
    architecture built untrained: found only once it had been pretrained, minutes
    later, before."""
    from orchestrator.bases import pretrain_cut_points
    from orchestrator.preflight import refuse_cuts_past

    refuse_cuts_past(recipe, host, lambda: pretrain_cut_points(pretrain, task))
