"""Predictions from a run's saved model on any data source a recipe could read.

``graftune predict RUN_DIR --data SOURCE`` loads the best trial's model (or a
named trial's) with ``safe_mode=True``, reads the whole of ``SOURCE`` through
the plugin host's data sources (no split, no class filter, no few-shot
subsample) with the run's image settings, refuses input the model was not
trained on, and returns one row per example: the predicted class name, its
probability, the true label where the source has one, and the probability of
every class.
"""

from __future__ import annotations

import json
import logging
import shlex
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import (
    DataError,
    OutputPathError,
    RunDirError,
    did_you_mean,
    first_few,
    missing_run_dir,
    no_leaderboard,
    quoted,
    ranks_an_ok_trial,
    resume_command,
    still_running,
    stopped_before_trials,
    unfinished,
    unreadable,
    written_again,
)
from orchestrator.paths import dangling_link, is_stream

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy as np
    import pandas as pd

    from orchestrator.plugin_manager import PluginHost

BEST_CONFIG = Path("best") / "config.json"
BEST_MODEL = Path("best") / "model.keras"
log = logging.getLogger(__name__)

#: Schemes whose sources are tables with a ``target`` label column.
TABLE_SCHEMES = ("csv", "parquet")


#: ``--out`` suffixes and the format each writes (a name without a suffix: CSV).
OUT_FORMATS = {".csv": "csv", "": "csv", ".parquet": "parquet", ".json": "json"}


@dataclass(frozen=True)
class ModelRef:
    """A saved model of a run, with what is needed to feed it and name its outputs.

    Attributes:
        path: The ``.keras`` file.
        strategy: The strategy of the trial that trained it.
        trial_id: The trial's id.
        class_names: ``class_names[i]`` names output column ``i``.
        input_shape: The shape of one example the model takes.
        summary: The trial's configuration and scores.
    """

    path: Path
    strategy: str
    trial_id: str
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Predictions:
    """What :func:`predict` returns.

    Attributes:
        frame: One row per example: ``row``, ``file`` (images: the file, relative
            to the folder), a table's columns that are no features (the run's
            ``data.ignore_columns`` the table has, and those ``ignore`` names) as
            the table holds them, ``predicted``, ``probability``, ``label`` (only
            when the source has labels; empty for a table's rows without one),
            then ``prob_CLASS`` per class.
        model: The model that predicted.
        accuracy: The share of correct predictions among the labelled examples whose
            label is one of the model's classes, or ``None`` if there are none
            (a table's rows with an empty label cell are predicted, not scored).
        n_scored: How many examples ``accuracy`` counts.
    """

    frame: pd.DataFrame
    model: ModelRef
    accuracy: float | None
    n_scored: int


def find_model(run_dir: str | Path, trial: str | None = None) -> ModelRef:
    """Find the best model of a run, or the model of one of its trials.

    Args:
        run_dir: A run directory.
        trial: ``None`` for the best trial, else a trial id (``25d4a_00000``) or
            ``STRATEGY/TRIAL_ID``.

    Returns:
        The model's file with its class names and input shape.

    Raises:
        RunDirError: Not a run directory, no such trial, or the trial saved no model.
    """
    from orchestrator.trial import MODEL_FILE, RESULT_FILE, TOP_FILE, read_result

    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file() or not (run_dir / "trials").is_dir():
        if missing_run_dir(run_dir) is None and (run_dir / "recipe.yaml").is_file():
            raise RunDirError(
                still_running(run_dir)
                or stopped_before_trials(run_dir)
                or f"{run_dir} has no trials/: the run stopped before any trial ran"
            )
        if missing_run_dir(run_dir) is None and (run_dir / "trials").is_dir():
            raise RunDirError(
                f"{run_dir} has trials/ but no recipe.yaml, which says how its data were "
                "read: restore it from a copy"
            )
        raise RunDirError(
            missing_run_dir(run_dir)
            or f"{run_dir} is not a graftune run directory (it has no recipe.yaml and trials/)"
        )
    from orchestrator.run import FINISHED_FILE, read_best_config

    config_path = run_dir / BEST_CONFIG
    if not config_path.is_file():
        from orchestrator.leaderboard import FILES

        if not (run_dir / FILES["csv"]).is_file():
            raise RunDirError(no_leaderboard(run_dir))
        if (run_dir / FINISHED_FILE).is_file():  # deleted: class names and input shape are there
            raise RunDirError(f"{config_path} is gone; {written_again(run_dir)}")
        none_saved = f"run {run_dir} has no {BEST_CONFIG}: no trial finished with a saved model"
        if trial is not None:  # the trial named, in its words (found by QA: the run's alone)
            named = _named_trials(_trial_folders(run_dir), trial)
            if len(named) == 1:
                status = _listed_status(run_dir, named[0])
                none_saved = (
                    f"trial {named[0].parent.name}/{named[0].name} saved no model (status "
                    f"{status}), nor did any trial of run {run_dir} (it has no {BEST_CONFIG})"
                )
        raise RunDirError(
            still_running(run_dir)
            or (ranks_an_ok_trial(run_dir) and unfinished(run_dir))
            or none_saved
        )
    try:
        best = read_best_config(run_dir)
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{unreadable(config_path, exc)}; {written_again(run_dir)}") from None
    if trial is None and not (run_dir / BEST_MODEL).is_file():
        raise RunDirError(f"{run_dir / BEST_MODEL} is gone; {written_again(run_dir)}")
    class_names = tuple(str(c) for c in best["class_names"])
    input_shape = tuple(int(d) for d in best["input_shape"])
    if trial is None:
        return ModelRef(
            path=run_dir / BEST_MODEL,
            strategy=str(best["strategy"]),
            trial_id=str(best["trial_id"]),
            class_names=class_names,
            input_shape=input_shape,
            summary=best,
        )
    folders = _trial_folders(run_dir)
    wanted = trial.strip("/")
    matches = _named_trials(folders, trial)
    if not matches:
        known = [f"{p.parent.name}/{p.name}" for p in folders]
        shown = first_few(known, 12)
        # The id under another strategy before any id that merely looks like it.
        _, _, bare = wanted.rpartition("/")
        elsewhere = [name for name in known if name.rpartition("/")[2] == bare]
        hint = (
            f" (did you mean {' or '.join(map(repr, elsewhere))}?)"
            if elsewhere
            else did_you_mean(wanted, [p.name for p in folders] + known)
        )
        raise RunDirError(
            f"run {run_dir} has no trial {trial!r}{hint}; its trials: {shown or 'none'}"
        )
    if len(matches) > 1:
        both = ", ".join(f"{p.parent.name}/{p.name}" for p in matches)
        raise RunDirError(f"trial id {trial!r} is ambiguous in {run_dir}: name one of {both}")
    folder = matches[0]
    try:
        result = read_result(folder)
    except (ValueError, TypeError, KeyError) as exc:  # edited, or a damaged disk
        raise RunDirError(
            f"trial {folder.parent.name}/{folder.name}'s {RESULT_FILE} cannot be read "
            f"({type(exc).__name__}: {exc}); name another trial with --trial"
        ) from None
    saved = folder / MODEL_FILE
    if not saved.is_file() and (folder / TOP_FILE).is_file():
        saved = folder / TOP_FILE  # trained on cached features: load_model makes it whole
        if (folder.parent.name, folder.name) == (best["strategy"], best["trial_id"]) and (
            run_dir / BEST_MODEL
        ).is_file():
            # The run's best, whole in best/: no base from the cache is needed (found by
            # QA: --trial naming it was refused once the base had been cleared).
            saved = run_dir / BEST_MODEL
    if not saved.is_file():
        status = result.status if result is not None else _listed_status(run_dir, folder)
        name = f"{folder.parent.name}/{folder.name}"
        if status == "ok" and _kept_models(run_dir) == "best":
            raise RunDirError(
                f"trial {name}'s model was not kept: the run's recipe has keep_models: best, "
                "which keeps each strategy's best trial's model alone; name one of those, "
                "or run the recipe again with keep_models: all"
            )
        if status == "ok":
            # Found by QA: "saved no model (status ok); only trials with status ok have
            # one", of a trial whose model.keras was deleted.
            cached = result is not None and result.cached_cut is not None
            gone = folder / (TOP_FILE if cached else saved.name)
            raise RunDirError(
                f"{gone} is gone: trial {name} ended ok and saved it; to train the trial "
                f"again, delete its folder {folder} and the run's finished.json, then "
                f"{resume_command(run_dir)}"
            )
        raise RunDirError(
            f"trial {name} saved no model (status {status}); only trials with status ok have one"
        )
    summary = result.to_json() if result is not None else {}
    return ModelRef(
        path=saved,
        strategy=folder.parent.name,
        trial_id=folder.name,
        class_names=class_names,
        input_shape=input_shape,
        summary=summary,
    )


def _trial_folders(run_dir: Path) -> list[Path]:
    """The run's trial folders (``trials/STRATEGY/TRIAL_ID``), sorted."""
    return [p for p in sorted((run_dir / "trials").glob("*/*")) if p.is_dir()]


def _named_trials(folders: list[Path], trial: str) -> list[Path]:
    """The folders ``trial`` names: a trial id, or ``STRATEGY/TRIAL_ID``."""
    wanted = trial.strip("/")
    return [p for p in folders if wanted in (p.name, f"{p.parent.name}/{p.name}")]


def _kept_models(run_dir: Path) -> str:
    """The run's ``keep_models`` (``all`` for a run made before the key, or unreadable)."""
    import yaml

    try:
        recorded = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
        return str(recorded.get("keep_models") or "all")
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return "all"


def _listed_status(run_dir: Path, folder: Path) -> str:
    """A trial's status in the leaderboard (a pruned trial writes no result), else ``unfinished``."""
    from orchestrator.leaderboard import read_leaderboard

    try:
        frame = read_leaderboard(run_dir)
        rows = frame[(frame["strategy"] == folder.parent.name) & (frame["trial_id"] == folder.name)]
    except (OSError, RunDirError):
        return "unfinished"
    return str(rows["status"].iloc[0]) if len(rows) else "unfinished"


def load_model(ref: ModelRef) -> Any:
    """Load a run's model with ``safe_mode=True`` (no code from the file is run).

    A trial that trained on cached features saved only the part above the
    cut; it is put behind the run's base again (from graftune's cache): the
    file ``base.json`` names, else the same entry in this machine's cache (a
    run made on a cluster, or with another ``$GRAFTUNE_CACHE_DIR``), whose
    weights must be those the trial trained on.

    Raises:
        RunDirError: Such a trial's base is in neither cache, or is another base.
    """
    import dataclasses

    import keras

    from orchestrator.trial import TOP_FILE, BaseMismatch, load_trial_model

    if ref.path.name != TOP_FILE:
        try:
            return keras.saving.load_model(ref.path, safe_mode=True)
        except Exception as exc:
            from orchestrator.bases import damaged_base_file, load_problem

            # Keras says "File not found" of a file cut short: say what it is instead.
            damaged = damaged_base_file(ref.path)
            if damaged is None:
                raise RunDirError(f"cannot load {ref.path}: {load_problem(exc)}") from exc
            if ref.path.parent.name == "best":  # the run's: its trial's model is whole
                run_dir = ref.path.parent.parent
                fix = written_again(run_dir)
            else:
                fix = (
                    f"name another trial, or delete the trial's folder {ref.path.parent} and "
                    "resume the run to train it again"
                )
            raise RunDirError(f"cannot load {ref.path}: {damaged}; {fix}") from None
    from orchestrator.bases import BaseInfo, cache_dir
    from orchestrator.run import BASE_FILE

    folder = ref.path.parent
    run_dir = folder.parent.parent.parent
    name = f"{ref.strategy}/{ref.trial_id}"
    try:
        base = BaseInfo.from_json(json.loads((run_dir / BASE_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise RunDirError(
            f"{unreadable(run_dir / BASE_FILE, exc)}: trial {name} trained on cached features "
            f"and needs it to find its base; the run's best model ({run_dir / BEST_MODEL}) "
            "is whole"
        ) from None
    # The entry's folder is named by what made the base, not by where the cache is.
    here = cache_dir() / "bases" / base.path.parent.name / base.path.name
    if not base.path.is_file() and here.is_file():
        base = dataclasses.replace(base, path=here)
    if not base.path.is_file():
        where = f"at {base.path}"
        if here != base.path:
            where = f"neither {where}, where the run kept it, nor at {here}"
        raise RunDirError(
            f"trial {name} trained on cached features of a base "
            f"that is no longer in graftune's cache ({where}); the run's best "
            f"model ({run_dir / BEST_MODEL}) is whole, or run the recipe again with this "
            "cache to make the base again (the same base only from the same base file, "
            "weights, or pretrain data and settings)"
        )
    try:
        return load_trial_model(folder, base, ref.input_shape)
    except BaseMismatch as exc:
        raise RunDirError(
            f"{exc}; the run's best model ({run_dir / BEST_MODEL}) is whole"
        ) from None
    except Exception as exc:  # Keras' own: a custom object no imported code registers
        from orchestrator.bases import load_problem

        raise RunDirError(
            f"cannot load trial {name}'s model ({folder / TOP_FILE} behind its base "
            f"{base.path}): {load_problem(exc)}"
        ) from exc


def read_source(
    run_dir: str | Path,
    source: str,
    host: PluginHost,
    *,
    base_dir: str | Path = ".",
    target: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    ignore: str | Sequence[str] | None = (),
) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Read the whole of a data source the way the run read its training data.

    The run's data settings (``target``, ``image_size``, ``channels``, and
    ``options`` for the same scheme) apply, and a generated source takes the
    run's ``seed``; its split, ``classes`` and
    ``labels_per_class`` do not. Images take the model's size and channels
    where the run left those to its data (a run on grey PNGs, which
    ``images:`` reads as 3 channels, takes an npz of grey images made RGB).
    A table without the run's target column is read as features only.
    A table's feature columns must be the run's (matched by name, in any
    order) when the run's own table can still be read; the run's
    ``ignore_columns`` that the table has, and ``ignore``, are no features.

    Args:
        run_dir: The run directory (for its ``recipe.yaml``).
        source: ``scheme:location``, like ``csv:new.csv`` or ``sklearn:digits``.
        host: The plugin host whose data sources read ``source``.
        base_dir: The folder a relative location resolves against.
        target: The label column of a table; default the run's ``target``.
        input_shape: The shape of one example the model takes, whose image size
            and channels fill those the run did not set; ``None``: the run's only.
        ignore: More columns of a table that are no features.

    Returns:
        The inputs, and the label name of each example (``None`` without labels;
        a ``None`` label where a table's label cell is empty).

    Raises:
        DataError: The source cannot be read, or its columns are not the run's.
    """
    notes: list[str] = []
    read = _read_source(run_dir, source, host, base_dir, target, input_shape, ignore, notes)
    for note in notes:  # said once the source has read
        log.warning("%s", note)
    return read


def _read_source(
    run_dir: str | Path,
    source: str,
    host: PluginHost,
    base_dir: str | Path,
    target: str | None,
    input_shape: tuple[int, ...] | None,
    ignore: str | Sequence[str] | None,
    notes: list[str],
) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """:func:`read_source`'s work; what it is to say once read is put in ``notes``."""
    import numpy as np

    from orchestrator.data import _call_source, _make_source, _validated, split_source
    from orchestrator.data.sources import SklearnSource
    from orchestrator.recipe import load_recipe

    ignore = _column_list(ignore)

    recipe = load_recipe(Path(run_dir) / "recipe.yaml")
    scheme, location = split_source(source)
    # Before any source is read (found by QA: an npz without labels took either in silence).
    if target is not None and scheme not in TABLE_SCHEMES:
        raise DataError(
            f"--target applies to table sources ({', '.join(TABLE_SCHEMES)}), not to {source!r}",
            key="target",
        )
    if ignore and scheme not in TABLE_SCHEMES:
        raise DataError(
            f"--ignore-column applies to table sources ({', '.join(TABLE_SCHEMES)}), not to "
            f"{source!r}",
            key="ignore_columns",
        )
    trained_scheme, trained_location = split_source(recipe.data.source)
    # A table's or scikit-learn's: its features have names, matched by them.
    named_features = trained_scheme in TABLE_SCHEMES or trained_scheme == SklearnSource.scheme
    if scheme == "npz" and named_features:
        # Found by QA: an npz of a table's columns in another order was predicted
        # in silence; a table for a run on an npz is said (below), so is this.
        trained = trained_features(run_dir, recipe)
        if trained:
            notes.append(
                f"{source} has no column names: its columns are taken as the run's features "
                f"in their order, {quoted(trained)}"
            )
    update: dict[str, Any] = {"source": source, "classes": None, "labels_per_class": None}
    if scheme != trained_scheme:
        update["options"] = {}
        if scheme not in TABLE_SCHEMES:
            update["target"] = None
            update["ignore_columns"] = []
    if scheme in TABLE_SCHEMES:  # the run's image settings are not the user's to refuse
        update.update(image_size=None, channels=None)
    spec = recipe.data.model_copy(update=update)
    base_dir = Path(base_dir)
    fitted = None
    if scheme not in TABLE_SCHEMES and input_shape is not None:
        settings = _model_image_settings(recipe.data, input_shape)
        fitted = spec.model_copy(update=settings) if settings else None
    if scheme == "npz":
        partly = _fitted(lambda s: _partly_labelled_npz(location, base_dir, s), spec, fitted)
        if partly is not None:
            return partly
    reader = _make_source(scheme, host.data_sources)

    if scheme in TABLE_SCHEMES:
        columns = _table_columns(scheme, location, base_dir)
        _check_kind(source, scheme, input_shape)  # a table that reads, for a model of images
        trained_target = recipe.data.target if trained_scheme in TABLE_SCHEMES else None
        if trained_scheme == SklearnSource.scheme:
            # scikit-learn's own frame (load_wine(as_frame=True).frame) has its labels
            # in "target", as class codes: read as the run's class names (below).
            trained_target = SklearnSource.TARGET
        trained = trained_features(run_dir, recipe) if named_features else None
        if target is not None and target not in columns:
            raise DataError(
                f"target column {target!r}{did_you_mean(target, columns)} is not in {source!r}; "
                f"its columns: {quoted(columns)}",
                key="target",
            )
        if target is not None and trained is not None and target in trained:
            raise DataError(
                f"--target {target!r} is a feature the model takes, not a label column",
                key="target",
            )
        target = target or trained_target
        index = _stored_index(scheme, location, base_dir)
        ignored = _ignored(recipe, columns, ignore, target, source, index)
        needed = [c for c in ignore if trained is not None and c in trained and c != target]
        if needed:
            raise DataError(
                f"--ignore-column {needed[0]!r}: the model takes it as a feature; it cannot "
                "be left out",
                key="ignore_columns",
            )
        features = [c for c in columns if c != target and c not in ignored]
        order = _feature_order(features, trained, trained_target, source, label=target)
        if not named_features:
            # Found by QA: reordered columns gave other predictions, and nothing said why.
            notes.append(
                f"the run's features have no names (it trained on {trained_scheme}:): "
                f"{source}'s columns are taken in their order, {quoted(features)}"
            )
        if target is None or target not in columns:
            x = _read_features(scheme, location, base_dir, source, ignore=ignored)
            return (x if order is None else x[:, order]), None
        import pandas as pd

        from orchestrator.data.sources import quantity_values, table_labels

        partly = table_labels(scheme, _table_path(location, base_dir), target)
        # Rows without a label: predicted, not scored; so are rows whose labels are a
        # quantity, which no run's classes are (found by QA: refused as a recipe's
        # target would be, with one label missing predicted).
        if None in partly or quantity_values(pd.Series(partly)) is not None:
            x = _read_features(scheme, location, base_dir, source, label=target, ignore=ignored)
            x = x if order is None else x[:, order]
            if not any(v is not None for v in partly):
                return x, None
            return x, _sklearn_names(tuple(partly), trained_scheme, trained_location)
        spec = spec.model_copy(update={"target": target, "ignore_columns": ignored})
        _call_source(reader.check, scheme, location, spec, base_dir, host.data_sources)
        try:
            loaded = _call_source(reader.load, scheme, location, spec, base_dir, host.data_sources)
        except DataError as exc:
            from orchestrator.data.sources import IGNORE_HINT

            if IGNORE_HINT not in str(exc):
                raise
            # Here the way is predict's option, not the recipe's key (found by QA).
            said = str(exc).replace(
                IGNORE_HINT, "copy those that are no features (an ID) to the output with "
                "--ignore-column COLUMN",
            )  # fmt: skip
            raise DataError(said, key=exc.key) from None
        x, y, names = _validated(loaded, scheme, host.data_sources)
        x = x if order is None else x[:, order]
    else:
        # A generated source (glyphs:) renders the run's own examples only from
        # the run's seed, as prepare_dataset passes it (found by QA).
        seeded = {"seed": recipe.seed} if getattr(reader, "uses_seed", False) else {}

        def load(spec: Any) -> Any:
            _call_source(reader.check, scheme, location, spec, base_dir, host.data_sources)
            return _call_source(
                reader.load, scheme, location, spec, base_dir, host.data_sources, **seeded
            )

        x, y, names = _validated(_fitted(load, spec, fitted), scheme, host.data_sources)
        named = SklearnSource.feature_names(location) if scheme == SklearnSource.scheme else None
        if named is not None and named_features:
            # scikit-learn's tables name their features too: matched by name, as a CSV's
            # (found by QA: sklearn:iris for a run on a CSV of four other columns was
            # predicted by position, exit 0).
            order = _feature_order(named, trained_features(run_dir, recipe), None, source)
            x = x if order is None else x[:, order]
    labels = tuple(np.asarray(names, dtype=object)[y].tolist())
    if scheme in TABLE_SCHEMES:
        labels = _sklearn_names(labels, trained_scheme, trained_location)
    return x, labels


def _check_kind(source: str, scheme: str, input_shape: tuple[int, ...] | None) -> None:
    """Refuse a table for a model of images, or a folder of images for one of
    features, before its examples are read (found by QA: a folder of images of other sizes
    for a model of 4 features was told to set data.image_size, a recipe key; a CSV
    for a model of images, to leave out its non-numeric columns)."""
    if input_shape is None:
        return
    if len(input_shape) == 3 and scheme in TABLE_SCHEMES:
        raise DataError(
            f"the model takes images of shape {tuple(input_shape)}, and {source!r} is a "
            "table (a row of features an example): give images (images:DIR/, or an npz: "
            "of images)",
            key="source",
        )
    if len(input_shape) == 1 and scheme == "images":
        raise DataError(
            f"the model takes rows of {input_shape[0]} features, and {source!r} is a folder "
            f"of images: give a table ({', '.join(f'{t}:' for t in TABLE_SCHEMES)}) or an "
            "npz: of features",
            key="source",
        )


def _model_image_settings(data: Any, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """The ``image_size`` and ``channels`` of a model taking images ``(h, w, c)``
    that the run's data spec left unset (none for a model taking features)."""
    settings: dict[str, Any] = {}
    if len(input_shape) != 3:
        return settings
    if data.image_size is None:
        settings["image_size"] = [input_shape[0], input_shape[1]]
    if data.channels is None and input_shape[2] in (1, 3):
        settings["channels"] = input_shape[2]
    return settings


def _fitted(read: Callable[[Any], Any], spec: Any, fitted: Any) -> Any:
    """``read(fitted)``, the source read at the model's image size and channels;
    where that fails (its data are no images, or a plugin refuses the settings),
    ``read(spec)`` as the run's settings alone read it: its shape, if it reads,
    is refused with the model's. Data that are no images are read without the
    run's ``image_size`` and ``channels``, which the user did not give here: the
    shape they have is then refused with the model's."""
    from orchestrator.data.sources import NOT_IMAGES

    if fitted is not None:
        try:
            return read(fitted)
        except DataError:
            pass
    try:
        return read(spec)
    except DataError as exc:
        if NOT_IMAGES not in str(exc) or exc.key not in ("image_size", "channels"):
            raise
    return read(spec.model_copy(update={"image_size": None, "channels": None}))


def _sklearn_names(
    labels: tuple[str | None, ...], trained_scheme: str, trained_location: str
) -> tuple[str | None, ...]:
    """A table's labels for a run on a scikit-learn table: its class codes (``0``
    .. ``k-1``, as scikit-learn's frames hold them) become the run's class names
    (``malignant``, ``benign``); labels that are names already stay as they are."""
    from orchestrator.data.sources import SklearnSource

    if trained_scheme != SklearnSource.scheme:
        return labels
    names = SklearnSource.class_names(trained_location)
    given = [label for label in labels if label is not None]
    if not names or any(label in names for label in given):
        return labels
    codes = {str(code): name for code, name in enumerate(names)}
    if not all(label in codes for label in given):
        return labels
    return tuple(None if label is None else codes[label] for label in labels)


def check_inputs(x: np.ndarray, ref: ModelRef, source: str) -> None:
    """Refuse inputs whose shape is not the one the model was trained on.

    Raises:
        DataError: With the shapes found and expected.
    """
    found = tuple(int(d) for d in x.shape[1:])
    if found != ref.input_shape:
        raise DataError(
            f"data {source!r} gives examples of shape {found}, but the model of "
            f"{ref.strategy} trial {ref.trial_id} takes {ref.input_shape}: predict needs "
            "data like the run's training data (the same features, or images of the same "
            "size and channels)",
            key="source",
        )
    if len(x) == 0:
        raise DataError(f"data {source!r} has no examples", key="source")


def predict(
    run_dir: str | Path,
    source: str,
    *,
    trial: str | None = None,
    host: PluginHost | None = None,
    base_dir: str | Path = ".",
    target: str | None = None,
    ignore: str | Sequence[str] | None = (),
    batch_size: int = 256,
) -> Predictions:
    """Predict every example of a data source with a run's best or named model.

    Args:
        run_dir: A run directory.
        source: ``scheme:location`` of the data to predict.
        trial: A trial id or ``STRATEGY/TRIAL_ID``; default the run's best trial.
        host: The plugin host (default: the installed plugins).
        base_dir: The folder a relative location resolves against.
        target: The label column of a table; default the run's ``target``.
        ignore: A table's columns that are no features, besides the run's
            ``data.ignore_columns``: copied to the predictions, as those are.
        batch_size: Examples per prediction batch.

    Returns:
        The predictions with the model used and, for labelled data, the accuracy.

    Raises:
        RunDirError: The run, trial or model cannot be found.
        DataError: The data cannot be read or does not fit the model.
        BackendMissing: Keras' backend is not installed.
    """
    import numpy as np
    import pandas as pd

    from orchestrator.accelerator import check_backend
    from orchestrator.data import split_source
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.preflight import run_disabled_plugins

    check_backend(training=False)
    ignore = _column_list(ignore)
    ref = find_model(run_dir, trial)
    # The plugins the run's recipe disabled, disabled here too.
    host = host or get_plugin_manager(disable=run_disabled_plugins(run_dir))
    host.keras_objects()  # the plugins' custom layers, registered before the model loads
    files = None
    if split_source(source)[0] == "images" and target is None and not ignore:
        x, labels, files = read_image_folder(run_dir, source, ref, base_dir=base_dir)
    else:
        x, labels = read_source(
            run_dir, source, host, base_dir=base_dir, target=target,
            input_shape=ref.input_shape, ignore=ignore,
        )  # fmt: skip
    kept = kept_columns(run_dir, source, base_dir=base_dir, target=target, ignore=ignore)
    check_inputs(x, ref, source)
    model = load_model(ref)
    probabilities = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    _check_scored(probabilities, source, files)
    codes = probabilities.argmax(axis=1)
    names = np.asarray(ref.class_names, dtype=object)
    columns: dict[str, Any] = {"row": np.arange(len(x))}
    if files is not None:
        columns["file"] = files
    ours = {"row", "file", "predicted", "probability", "label"}
    ours |= {f"prob_{name}" for name in ref.class_names}
    taken = set(ours) | set([] if kept is None else kept.columns)
    for name in [] if kept is None else kept.columns:
        # Named as in the table; one named as a column of ours gets "input_" before
        # it (as often as it takes to be a name of its own). As a Series: its type
        # stays (a Parquet file's nullable integers would become floats).
        named = name
        while named in ours or (named != name and named in taken):
            named = f"input_{named}"
        taken.add(named)
        column = kept[name].reset_index(drop=True)
        if column.dtype == object:  # a Parquet file's list cells: lists, in CSV as in JSON
            column = column.map(lambda v: v.tolist() if isinstance(v, np.ndarray) else v)
        columns[named] = column
    columns |= {
        "predicted": names[codes],
        "probability": probabilities[np.arange(len(x)), codes],
    }
    accuracy, scored = None, 0
    if labels is not None:
        columns["label"] = list(labels)
        classes = set(ref.class_names)
        known = np.array([label in classes for label in labels])  # None: no label
        scored = int(known.sum())
        if scored:
            hits = np.asarray(labels, dtype=object)[known] == names[codes][known]
            accuracy = float(hits.mean())
    for i, name in enumerate(ref.class_names):
        columns[f"prob_{name}"] = probabilities[:, i]
    return Predictions(pd.DataFrame(columns), ref, accuracy, scored)


def _check_scored(probabilities: np.ndarray, source: str, files: Any) -> None:
    """Refuse examples the model gives no probabilities for: values in float32's
    range but so far past the training data's that its arithmetic overflows (NaN).
    They were written with the first class as predicted and empty probabilities,
    and scored in the accuracy (found by QA).

    Raises:
        DataError: Naming how many there are and the first.
    """
    import numpy as np

    unscored = ~np.isfinite(probabilities).all(axis=1)
    if not unscored.any():
        return
    first = int(np.argmax(unscored))
    which = f"file {files[first]}" if files is not None else f"data row {first + 1}"
    raise DataError(
        f"{source}: the model gives no probabilities (NaN) for {int(unscored.sum())} "
        f"example(s), the first {which}: their values are so far past the training data's "
        "that its arithmetic overflows; check them (a unit, a typo), or leave them out",
        key="source",
    )


def check_out(
    path: str | Path,
    run_dir: str | Path,
    source: str,
    *,
    replace: bool = False,
    base_dir: str | Path = ".",
) -> None:
    """Refuse, before any work, a file the predictions must not be written to.

    Never the data read (``--data csv:x.csv -o x.csv``) nor a file of the run,
    whose leaderboard and models other commands read; another existing file
    only when ``replace`` (``--force``).

    Raises:
        OutputPathError: ``path``'s suffix names a format not written, or it is
            one of those files.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUT_FORMATS:
        raise OutputPathError(
            f"--out {path}: predictions are written as .csv, .parquet or .json "
            f"(CSV without a suffix), not as {suffix}"
        )
    from orchestrator.recipe import run_dir_around

    where = path.resolve()
    # This run's or another's (--force wiped another run's leaderboard.csv).
    inside = run_dir if where.is_relative_to(Path(run_dir).resolve()) else run_dir_around(where)
    if inside is not None:
        raise OutputPathError(
            f"--out {path} is inside the run directory {inside}, which graftune reads; "
            "write the predictions elsewhere"
        )
    if where == _data_path(source, base_dir):
        raise OutputPathError(
            f"--out {path} is the data file of --data {source}; write the predictions "
            "to another file"
        )
    if replace:
        return
    if (target := dangling_link(path)) is not None:
        raise OutputPathError(
            f"--out {path} is a link to {target}, which does not exist; name a new file, "
            "or --force to write there"
        )
    if path.exists() and not is_stream(path):
        raise OutputPathError(f"--out {path} exists; name a new file, or --force to replace it")


def _data_path(source: str, base_dir: str | Path) -> Path | None:
    """The file or folder a data source's location names, or ``None`` (not a path)."""
    from orchestrator.data import split_source
    from orchestrator.data.sources import _resolve

    try:
        return _resolve(split_source(source)[1], Path(base_dir))
    except (DataError, OSError):  # predict says what is wrong with it
        return None


def write_predictions(frame: pd.DataFrame, path: str | Path, *, replace: bool = True) -> None:
    """Write the predictions in the format ``path``'s suffix names, atomically.

    Without ``replace`` (no ``--force``), a file or link that another process made
    there since :func:`check_out` is kept and this write refused, not written over
    or through (found by QA: two predicts at once both said "written to", and one's
    predictions were lost).

    Raises:
        OutputPathError: Without ``replace``, ``path`` exists now.
    """
    from orchestrator.leaderboard import atomic_write, to_json

    kind = OUT_FORMATS[Path(path).suffix.lower()]
    try:
        atomic_write(path, lambda to: _write_as(frame, kind, to, to_json), replace=replace)
    except FileExistsError:
        raise OutputPathError(
            f"--out {path} exists (written meanwhile by another process); name a new "
            "file, or --force to replace it"
        ) from None


def _write_as(frame: pd.DataFrame, kind: str, path: Path, to_json: Callable[..., str]) -> None:
    if kind == "parquet":
        frame.to_parquet(path, index=False)
    elif kind == "json":
        path.write_text(to_json(frame) + "\n", encoding="utf-8")
    else:
        path.write_text(frame.to_csv(index=False), encoding="utf-8")


def read_image_folder(
    run_dir: str | Path, source: str, ref: ModelRef, *, base_dir: str | Path = "."
) -> tuple[np.ndarray, tuple[str, ...] | None, list[str]]:
    """Read an ``images:`` folder to predict, labelled or not, at the model's input size.

    A folder of class sub-folders is labelled by their names (one is enough here);
    a folder with images of its own is read whole, unlabelled (new images to
    sort; a warning says so when it has sub-folders too). Images take the run's
    ``image_size`` and ``channels``, else the model's input shape.

    Returns:
        The inputs, the label of each (``None`` unlabelled), and each one's file,
        relative to the folder.
    """
    from orchestrator.data import split_source
    from orchestrator.data.sources import (
        IMAGE_SUFFIXES,
        _image_files,
        _resolve,
        hidden_said,
        image_folder,
        left_out_images,
        loose_images,
        read_images,
        unread_text,
        warn_hidden,
        warn_unread,
    )
    from orchestrator.recipe import load_recipe

    recipe = load_recipe(Path(run_dir) / "recipe.yaml")
    _, location = split_source(source)
    root = image_folder(_resolve(location, Path(base_dir)))
    _check_kind(source, "images", ref.input_shape)  # a folder that is there, for features
    update: dict[str, Any] = {"source": source, "target": None, "options": {}}
    update |= _model_image_settings(recipe.data, ref.input_shape)
    spec = recipe.data.model_copy(update=update)
    loose = loose_images(root)
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    if folders and loose:
        log.warning(
            "%s: %d image file(s) beside its sub-folders, such as %r, made it read as "
            "new images, unlabelled (the sub-folders' names are no labels, so no "
            "accuracy); move them into a class folder to score the sorted ones",
            root,
            len(loose),
            loose[0].name,
        )
    files: list[Path] = []
    labels: list[str] | None = None
    if folders and not loose:
        labels = []
        for folder in folders:
            found = _image_files(folder)
            files += found
            labels += [unicodedata.normalize("NFC", folder.name)] * len(found)  # as images: names
    else:
        files = _image_files(root)
    # As a run says them (found by QA: predict gave fewer rows than files, in silence).
    unread, hidden = left_out_images(root)
    if not files:
        unread_said = "; it has {}: {}".format(*unread_text(root, unread)) if unread else ""
        raise DataError(
            f"image folder {root} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            + unread_said
            + hidden_said(root, hidden),
            key="source",
        )
    warn_unread(root, unread)
    warn_hidden(root, hidden)
    x = read_images(files, root, spec)
    names = [str(f.relative_to(root)) for f in files]
    return x, (None if labels is None else tuple(labels)), names


def table_features(data: Any, base_dir: str | Path) -> list[str] | None:
    """The feature columns of a table (a recipe's ``data``, or its ``pretrain``
    data; relative paths from ``base_dir``), in the order its models take them
    (``None`` for other sources, or a table that cannot be read). scikit-learn's
    tables (``sklearn:iris``, ``wine``, ``breast_cancer``) name theirs too."""
    from orchestrator.data import split_source
    from orchestrator.data.sources import SklearnSource

    scheme, location = split_source(data.source)
    if scheme == SklearnSource.scheme:
        return SklearnSource.feature_names(location)
    if scheme not in TABLE_SCHEMES:
        return None
    try:
        columns = _table_columns(scheme, location, base_dir)
    except DataError:
        return None
    from orchestrator.data.sources import ignored_columns

    ignored = ignored_columns(data)
    return [c for c in columns if c != data.target and c not in ignored]


def trained_features(run_dir: str | Path, recipe: Any = None) -> list[str] | None:
    """The feature columns a run's models take: those it recorded (its training
    table may since have changed, or gone), else those of its data as it is now
    (runs from before they were recorded; ``recipe``: the run's, read if not given)."""
    recorded = recorded_features(run_dir)
    if recorded is not None:
        return recorded
    if recipe is None:
        from orchestrator.errors import GraftuneError
        from orchestrator.recipe import load_recipe

        try:
            recipe = load_recipe(Path(run_dir) / "recipe.yaml")
        except GraftuneError:  # a recipe this version cannot read: no names to give
            return None
    return table_features(recipe.data, recipe.base_dir)


def recorded_features(run_dir: str | Path) -> list[str] | None:
    """The feature columns a run recorded in ``best/config.json`` (``None`` if none)."""
    try:
        summary = json.loads((Path(run_dir) / "best" / "config.json").read_text())
    except (OSError, ValueError):
        return None
    features = summary.get("features") if isinstance(summary, dict) else None
    return [str(c) for c in features] if isinstance(features, list) else None


def _partly_labelled_npz(
    location: str, base_dir: Path, spec: Any
) -> tuple[np.ndarray, tuple[str | None, ...] | None] | None:
    """An npz archive's ``x``, made ready as the ``npz:`` source makes a run's
    (scale, size, channels), and its labels, when some or all are missing: no
    ``y`` (nothing to score: only predict), or a ``y`` with NaN or empty labels
    (those examples predicted, not scored, as a table's rows without a label;
    found by QA: a NaN was a label 'nan', and the others '0.0', '1.0', so that
    none was scored). ``None`` when every example has a label, for the source
    itself to read."""
    import numpy as np

    from orchestrator.data.sources import (
        _open_npz,
        npz_inputs,
        npz_label_names,
        npz_missing_labels,
    )

    path = _table_path(location, base_dir)
    with _open_npz(path) as archive:  # as the npz: source opens it (no pickles)
        if "x" not in archive.files:
            return None
        try:
            y = archive["y"] if "y" in archive.files else None
            if y is not None and y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]  # as the source takes it
            if y is not None and (y.ndim != 1 or not npz_missing_labels(y, path).any()):
                return None  # labelled throughout, or a y the source refuses
            x = np.asarray(archive["x"])
            names = archive["class_names"] if "class_names" in archive.files else None
        except ValueError as exc:  # an object array, which would need pickle
            raise DataError(f"cannot read {path} without pickle ({exc})", key="source") from exc
    x = npz_inputs(x, spec, path, location)
    if not np.isfinite(x).all():
        raise DataError(f"array 'x' in {path} holds NaN or inf", key="source")
    if y is None:
        return x, None
    if len(y) != len(x):
        raise DataError(
            f"array 'y' in {path} has shape {y.shape}; expected one label per row of x, "
            f"shape ({len(x)},)",
            key="source",
        )
    labels = tuple(npz_label_names(y, names, path))
    return x, (labels if any(v is not None for v in labels) else None)


def _table_columns(scheme: str, location: str, base_dir: Path) -> list[str]:
    """The data columns of a CSV or Parquet file, as its source reads them."""
    from orchestrator.data.sources import table_columns

    return table_columns(scheme, _table_path(location, base_dir))


def _stored_index(scheme: str, location: str, base_dir: Path) -> list[str]:
    """The named columns of a Parquet file's stored pandas index (none for a CSV)."""
    from orchestrator.data.sources import stored_index

    return stored_index(scheme, _table_path(location, base_dir))


def _table_path(location: str, base_dir: Path) -> Path:
    from orchestrator.paths import expand_user, not_a_file

    try:
        path = expand_user(location)
    except ValueError as exc:
        raise DataError(str(exc), key="source") from None
    path = (path if path.is_absolute() else Path(base_dir) / path).resolve()
    if not path.is_file():
        raise DataError(f"data file {path} {not_a_file(path)} (from {location!r})", key="source")
    return path


def _feature_order(
    features: list[str],
    trained: list[str] | None,
    target: str | None,
    source: str,
    label: str | None = None,
) -> list[int] | None:
    """Column indices that put ``features`` in the run's order, or ``None`` if unknown
    (``target``: the run's label column; ``label``: the one read now, default it)."""
    if trained is None:
        return None
    expected = [c for c in trained if c != target]
    missing = [c for c in expected if c not in features]
    extra = [c for c in features if c not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks column(s) {quoted(missing)}")
        if extra:
            parts.append(f"has column(s) the model was not trained on: {quoted(extra)}")
        # One extra column and nothing missing: most likely the labels under another
        # name, or an ID; several: IDs, names, notes.
        hint = ""
        if extra and not missing and not source.startswith("sklearn:"):  # (no columns to pick)
            hint = (
                "; columns that are no features (an ID) are copied to the output with "
                + (
                    " ".join(f"--ignore-column {shlex.quote(c)}" for c in extra)
                    if len(extra) <= 5
                    else "--ignore-column NAME, one for each"
                )
                # Found by QA: following it for the labels' column scored nothing.
                + "; name the one that holds the labels, if any, with --target COLUMN instead"
            )
            if len(extra) == 1:
                hint = (
                    f"; if {extra[0]!r} holds the labels, name it with --target "
                    f"{shlex.quote(extra[0])}; if it is no feature (an ID), copy it to the "
                    f"output with --ignore-column {shlex.quote(extra[0])}"
                )
        raise DataError(
            f"data {source!r} {' and '.join(parts)}; expected the feature columns "
            f"{quoted(expected)}"
            + (f" (and optionally the label column {label or target!r})" if label or target else "")
            + hint,
            key="source",
        )
    return [features.index(c) for c in expected]


def _ignored(
    recipe: Any,
    columns: list[str],
    ignore: Sequence[str],
    target: str | None,
    source: str,
    index: Sequence[str] = (),
) -> list[str]:
    """A table's columns that are no features: the run's ``ignore_columns`` that it
    has, and ``ignore`` (each of which it must have), in the table's order (a
    Parquet file's stored ``index`` first)."""
    from orchestrator.data import split_source
    from orchestrator.data.sources import ignored_columns

    columns = [*index, *columns]
    for name in ignore:
        if name not in columns:  # first: the run's label column may be absent (found by QA)
            raise DataError(
                f"--ignore-column {name!r}{did_you_mean(name, columns)} is not a column of "
                f"{source!r}; its columns: {quoted(columns)}",
                key="ignore_columns",
            )
        if name == target:
            raise DataError(
                f"--ignore-column {name!r} is the label column of {source!r} (to predict "
                "the table without scoring, drop that column from it)",
                key="ignore_columns",
            )
    run_ignored = set()
    if split_source(recipe.data.source)[0] in TABLE_SCHEMES:
        run_ignored = set(ignored_columns(recipe.data))
    wanted = run_ignored | set(ignore)
    return [c for c in columns if c in wanted and c != target]


def kept_columns(
    run_dir: str | Path,
    source: str,
    *,
    base_dir: str | Path = ".",
    target: str | None = None,
    ignore: str | Sequence[str] | None = (),
) -> pd.DataFrame | None:
    """A table's columns that are no features (see :func:`read_source`), as the
    table holds them (a CSV's as text: ``007`` stays ``007``), for predict to copy
    beside its predictions; ``None`` for a source that is no table or has none.
    """
    from orchestrator.data import split_source
    from orchestrator.data.sources import _csv_format, read_table
    from orchestrator.recipe import load_recipe

    ignore = _column_list(ignore)
    scheme, location = split_source(source)
    if scheme not in TABLE_SCHEMES:
        return None
    recipe = load_recipe(Path(run_dir) / "recipe.yaml")
    base_dir = Path(base_dir)
    columns = _table_columns(scheme, location, base_dir)
    trained_scheme = split_source(recipe.data.source)[0]
    target = target or (recipe.data.target if trained_scheme in TABLE_SCHEMES else None)
    index = _stored_index(scheme, location, base_dir)
    ignored = _ignored(recipe, columns, ignore, target, source, index)
    if not ignored:
        return None
    path = _table_path(location, base_dir)
    import pandas as pd

    if scheme == "parquet":
        frame = read_table(scheme, path)  # it says what is wrong with the file
        named = [n for n in index if n in ignored]
        if named:  # the stored index's columns, beside the data's
            # Read back as numpy's types, an index of nullable integers becomes floats.
            stored = pd.read_parquet(path, dtype_backend="numpy_nullable")
            frame = pd.concat(
                [stored.reset_index(level=named)[named].reset_index(drop=True), frame], axis=1
            )
        return frame[ignored]

    try:
        frame = pd.read_csv(
            path, usecols=ignored, dtype=str, keep_default_na=False,
            **_csv_format(path, target, ignored),
        )  # fmt: skip
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        from orchestrator.data.sources import unreadable_table

        raise unreadable_table("csv", path, exc) from exc
    return frame[ignored]


def _read_features(
    scheme: str,
    location: str,
    base_dir: Path,
    source: str,
    *,
    label: str | None = None,
    ignore: Sequence[str] = (),
) -> np.ndarray:
    """Read a table's features: every column but ``label`` (if given) and those
    ``ignore`` names is a numeric one."""

    from orchestrator.data.sources import (
        check_no_missing,
        csv_read_as,
        feature_matrix,
        non_numeric_columns,
        read_table,
        refuse_no_rows,
    )

    path = _table_path(location, base_dir)
    frame = read_table(scheme, path, target=label, ignore=ignore)
    frame = frame.drop(columns=[c for c in ignore if c in frame])  # not a stored index
    if label is not None:
        frame = frame.drop(columns=label)
    refuse_no_rows(frame, path)
    read_as = csv_read_as(path, label, ignore) if scheme == "csv" else None
    non_numeric = non_numeric_columns(frame, list(frame.columns), read_as)
    if non_numeric:
        # Found by QA: a labelled table for a run that named no label column was
        # told only of --ignore-column, which scores nothing.
        hint = (
            ""
            if label is not None
            else "; the one that holds labels, if any, is named with --target COLUMN"
        )
        raise DataError(
            f"{source!r} has non-numeric column(s) {non_numeric}; the model takes numbers "
            "(a column that is no feature, such as an ID, is copied to the output with "
            f"--ignore-column COLUMN{hint})",
            key="source",
        )
    check_no_missing(frame, repr(source))
    return feature_matrix(frame, list(frame.columns), path)


def _column_list(names: str | Sequence[str] | None) -> list[str]:
    """Column names as given: one name alone, as a recipe's ``ignore_columns`` takes
    it; ``None``: none."""
    if names is None:
        return []
    return [names] if isinstance(names, str) else [str(n) for n in names]


__all__ = [
    "ModelRef",
    "Predictions",
    "check_inputs",
    "find_model",
    "load_model",
    "predict",
    "read_source",
]
