"""One trial: configure TensorFlow, build through the strategy, fit, evaluate, report.

This module is backend-neutral: a search backend calls :func:`run_trial` with
its own ``report`` function (Ray Tune's ``tune.report`` in a Ray worker, a
plain callback in process). Everything a trial produces is written to its own
folder, ``RUN_DIR/trials/STRATEGY/TRIAL_ID/``: ``result.json`` (status,
metrics, cost, error), ``history.csv``, the test set's predicted
probabilities and the model: ``model.keras``, or, for a trial that trained on
cached features, ``top.keras`` — the part above the cut — which
:func:`load_trial_model` puts behind the base's frozen prefix again (so a
search over a heavy base does not write the base once per trial).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import resource
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.accelerator import configure_trial, gpu_count, use_backend
from orchestrator.errors import is_disk_full
from orchestrator.models import CROSS_ENTROPY, not_probabilities

if TYPE_CHECKING:
    from orchestrator.bases import BaseInfo, LoadedBase
    from orchestrator.data import Dataset
    from orchestrator.strategy import Strategy

log = logging.getLogger(__name__)

#: What each epoch's report carries besides its metrics: the trial's costs so far
#: and the Keras backend it trains on (the leaderboard's columns and ``result.json``
#: fields for a trial a scheduler stopped, which writes no result itself).
COST_KEYS = (
    "fit_seconds",
    "params_total",
    "params_trainable",
    "peak_memory_mb",
    "cached_cut",
    "note",
    "backend",
)

#: The statuses a trial can end with.
STATUSES = ("ok", "pruned", "diverged", "error")
#: A result's numbers (``None`` where there is none).
_RESULT_NUMBERS = (
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "test_loss",
    "fit_seconds",
    "params_total",
    "params_trainable",
    "peak_memory_mb",
    "started_at",
    "finished_at",
    "cached_cut",
)
RESULT_FILE = "result.json"
#: A ``result.json`` that could not be read, kept beside the one its trial writes again.
DAMAGED_RESULT_FILE = f"{RESULT_FILE}.damaged"
MODEL_FILE = "model.keras"
#: A trial trained on cached features saves only the part above the cut.
TOP_FILE = "top.keras"
PREDICTIONS_FILE = "test_probabilities.npy"
#: What a failed trial reports for the metric, so a searcher ranks it last.
WORST_SCORES = {"val_accuracy": -1.0, "val_loss": 1e12}
#: Each trial's TensorBoard event files, under its folder.
TENSORBOARD_DIR = "tensorboard"


@dataclass(frozen=True)
class TrialSpec:
    """Everything a trial needs besides its configuration and data (small, picklable)."""

    strategy: Strategy
    base: BaseInfo | None
    max_epochs: int
    batch_size: int
    seed: int
    metric: str
    cpus: float = 1
    gpus: float = 0
    run_dir: Path = Path(".")
    mixed_precision: bool = False
    feature_cache: bool = True
    #: The run's URI in storage: each trial uploads its folder there (other nodes' disks
    #: are out of the driver's reach). ``None`` when ``run_dir`` is all there is.
    storage: str | None = None
    #: The Keras backend chosen where the run started, and where (``KERAS_BACKEND``,
    #: a ``keras.json``); ``None`` for Keras' default. A cluster's nodes see neither.
    keras_backend: tuple[str, str] | None = None
    #: On a resume whose search starts again (Ray's saved state of it unreadable):
    #: :func:`config_key` -> the ids of trials that ended before with that
    #: configuration. A new trial of one takes its result over (:func:`adopt_earlier`).
    earlier: dict[str, list[str]] | None = None
    #: Keras classes a ``--plugin`` module registered (``register_keras_serializable``),
    #: by registered name: Ray's workers never import such a module (its code is
    #: pickled by value), so a base using them is loaded after registering these.
    custom_objects: dict[str, Any] | None = None


@dataclass
class TrialResult:
    """What one trial produced; one leaderboard row."""

    strategy: str
    trial_id: str
    status: str
    config: dict[str, Any]
    val_accuracy: float | None = None
    val_loss: float | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    epochs: int = 0
    fit_seconds: float | None = None
    params_total: int | None = None
    params_trainable: int | None = None
    peak_memory_mb: float | None = None
    error: str | None = None
    model_path: str | None = None
    retries: int = 0
    note: str | None = None
    devices: str | None = None
    #: Keras' backend the trial trained on (``tensorflow``, ``jax``, ``torch``).
    backend: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    #: The Ray node the trial ran on, ``IP/NODEID8`` (``None`` outside Ray).
    node: str | None = None
    #: The cut point whose cached features the trial trained on (``None``: none).
    cached_cut: int | None = None
    #: With ``cached_cut``: the fingerprint of the base the prefix comes from.
    base_fingerprint: str | None = None
    #: The id the trial had before a resume that started its search again.
    earlier_id: str | None = None
    #: The id it first ended under, which the hooks (``events.jsonl``, MLflow) were
    #: told; ``earlier_id`` is one resume back only (found by QA: after two, the
    #: hooks' id was nowhere in the run). ``None`` when it never changed.
    first_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialResult:
        """The inverse of :meth:`to_json`.

        Raises:
            ValueError, TypeError: ``data`` is not what graftune wrote (an edited
                file): a score that is no number, a status graftune never gives.
                The leaderboard ranked a ``"val_accuracy": "high"`` at the run's
                end, where every resume then failed alike.
        """
        known = {f for f in cls.__dataclass_fields__}
        result = cls(**{k: v for k, v in data.items() if k in known})
        for name in ("strategy", "trial_id", "status"):
            if not isinstance(getattr(result, name), str):
                raise TypeError(f"its {name} is {getattr(result, name)!r}, not a text")
        if result.status not in (*STATUSES, "failed"):
            raise ValueError(f"its status is {result.status!r}, not one graftune gives")
        if not isinstance(result.config, dict):
            raise TypeError(f"its config is {type(result.config).__name__}, not an object")
        for name in (*_RESULT_NUMBERS, "epochs", "retries"):
            value = getattr(result, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise TypeError(f"its {name} is {value!r}, not a number")
        return result


def trial_dir(run_dir: Path, strategy: str, trial_id: str) -> Path:
    """The folder of one trial's files.

    Raises:
        RunDirError: ``strategy`` or ``trial_id`` is no folder name (read back from
            a run directory that was edited: ``../../x`` would reach outside it).
    """
    from orchestrator.errors import RunDirError
    from orchestrator.paths import is_folder_name

    for what, name in (("strategy", strategy), ("trial id", trial_id)):
        if not is_folder_name(name):
            raise RunDirError(
                f"{run_dir}: a trial's {what} {name!r} is no folder name; graftune writes "
                "none such: the run directory was edited or damaged, and nothing of it is "
                "read as a path"
            )
    return Path(run_dir) / "trials" / strategy / trial_id


def has_tensorboard(run_dir: Path) -> bool:
    """Whether any trial of the run wrote TensorBoard events (see :func:`_tensorboard`)."""
    return any(Path(run_dir).glob(f"trials/*/*/{TENSORBOARD_DIR}"))


def config_key(config: dict[str, Any]) -> str:
    """A configuration as text that two equal configurations share."""
    return json.dumps(config, sort_keys=True, default=str)


def adopt_earlier(spec: TrialSpec, config: dict[str, Any], trial_id: str) -> TrialResult | None:
    """Take over the result of a trial that ended before with this configuration.

    On a resume whose search starts again (see :attr:`TrialSpec.earlier`), the
    searcher draws the same configurations under new trial ids. The first new
    trial of a configuration moves the earlier trial's folder to its own id
    (a rename: two trials cannot take the same one) and keeps its result, which
    is not run again. ``None`` when there is none to take.
    """
    strategy = spec.strategy.name
    folder = trial_dir(spec.run_dir, strategy, trial_id)
    for old_id in (spec.earlier or {}).get(config_key(config), ()):
        try:
            os.rename(trial_dir(spec.run_dir, strategy, old_id), folder)
        except OSError:  # taken by another trial, or gone
            continue
        result = read_result(folder, set_aside=True, trial_id=old_id)
        if result is None:
            continue
        result.first_id = result.first_id or old_id
        result.earlier_id, result.trial_id = old_id, trial_id
        if result.model_path is not None:
            result.model_path = str(folder / Path(result.model_path).name)
        write_result(folder, result)
        return result
    return None


def ended_trials(folder: Path) -> list[TrialResult]:
    """The results stored in a strategy's trial folders, in trial order.

    Called on a resume: a ``result.json`` that cannot be read is set aside
    (see :func:`read_result`), and its trial runs again.
    """
    if not folder.is_dir():
        return []
    results = []
    for path in sorted(folder.iterdir()):
        try:
            result = read_result(path, set_aside=True) if path.is_dir() else None
        except OSError:  # the search itself says what is wrong
            result = None
        if result is not None:
            results.append(result)
    return results


def _reported_epochs(folder: Path, metric: str) -> list[tuple[int, float]]:
    """Each epoch's ``metric`` from a trial's ``history.csv``, as the trial reported
    it (a score that is not finite as the worst, :data:`WORST_SCORES`); none where
    the file is missing or cannot be read."""
    import pandas as pd

    try:
        history = pd.read_csv(folder / "history.csv")
        values = [float(v) for v in history[metric]]
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return []
    worst = WORST_SCORES.get(metric, float("nan"))
    return [(n, v if math.isfinite(v) else worst) for n, v in enumerate(values, start=1)]


def runs_again(result: TrialResult) -> bool:
    """Whether a trial that ended before a resume runs again: one whose worker
    died (``failed``), as Tune restarts such trials; the others are taken back."""
    return result.status == "failed"


def read_result(
    folder: Path, *, set_aside: bool = False, trial_id: str | None = None
) -> TrialResult | None:
    """Read a trial's ``result.json``, or ``None`` if it never finished.

    Args:
        folder: The trial's folder (:func:`trial_dir`), whose names (strategy,
            trial id) the result must have.
        trial_id: The trial id it must have, where not its folder's (a folder
            just renamed to a new id).
        set_aside: What to do with a ``result.json`` that cannot be read (cut
            short by a kill or a damaged disk, edited): rename it
            ``result.json.damaged``, with a warning naming it, and return
            ``None``, so that the trial runs again and nothing is lost. A run
            that resumes does so; the other commands only read a run.

    Raises:
        ValueError, TypeError, KeyError, AttributeError: ``result.json`` cannot
            be read (``json.JSONDecodeError`` is a ``ValueError``), and
            ``set_aside`` is false.
    """
    path = Path(folder) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        result = TrialResult.from_json(json.loads(path.read_text()))
        # Its folder's names, as graftune wrote it (adopt_earlier renames the folder
        # first): another trial's id would name another folder, or one outside the
        # run (found by security QA: "../../victim" deleted and moved user files).
        named = (Path(folder).parent.name, trial_id or Path(folder).name)
        if (result.strategy, result.trial_id) != named:
            raise ValueError(
                f"it names trial {result.strategy}/{result.trial_id}, not its folder's "
                f"{named[0]}/{named[1]}"
            )
        return result
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        if not set_aside:
            raise
        reason = f"{type(exc).__name__}: {exc}"
    kept = path.with_name(DAMAGED_RESULT_FILE)
    try:
        os.replace(path, kept)
    except FileNotFoundError:  # set aside meanwhile by another reader
        return None
    log.warning("%s cannot be read (%s): kept as %s; the trial runs again", path, reason, kept.name)
    return None


#: What Keras imports, where installed, only for features no trial uses:
#: scikit-learn for the estimators of ``keras.wrappers``,
#: Matplotlib for ``keras.visualization``'s plots. See :func:`import_keras`.
HELD_BACK = ("sklearn", "matplotlib")
#: Held back too on the TensorFlow backend: TensorFlow's import loads JAX, where
#: installed, for TFLite's converter alone (about 1 CPU-second a worker).
HELD_BACK_ON_TENSORFLOW = ("jax",)


def import_keras() -> Any:
    """Import Keras for trials: in a fresh process, without :data:`HELD_BACK`.

    Those packages cost a fresh Ray worker about 1.4 of the 4.6 CPU-seconds
    that importing Keras takes, paid by every worker of every strategy's
    search. They are held back while Keras is imported, and Keras goes without
    its scikit-learn wrappers and plotting helpers in that process (they say
    the package is missing). Nothing else changes: a strategy may import
    either package afterwards as usual, and a process that has Keras, or one
    of them, loaded already (the driver, which reads ``sklearn:`` data and
    renders glyphs) imports Keras as it is. On the TensorFlow backend,
    :data:`HELD_BACK_ON_TENSORFLOW` is held back as well.
    """
    with holding_back(), collector_paused():
        import keras

    return keras


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic garbage collection inside (for the imports of TensorFlow, Keras
    and Ray).

    An import that makes half a million objects makes Python start several full
    collections on the way, each walking all that the process holds. Found by QA:
    7 of them, about 1 s, in importing Keras, Ray and Ray Tune, paid by a run's
    process and by each of its workers; an import's objects live as long as the
    process, so walking them frees nothing. A collector the caller turned off
    stays off.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


@contextlib.contextmanager
def holding_back() -> Iterator[None]:
    """Imports inside fail for :data:`HELD_BACK` (see :func:`import_keras`)."""
    from orchestrator.accelerator import backend

    if "keras" in sys.modules or any(name in sys.modules for name in HELD_BACK):
        yield
        return
    _HOLD_BACK.names = HELD_BACK + (HELD_BACK_ON_TENSORFLOW if backend() == "tensorflow" else ())
    sys.meta_path.insert(0, _HOLD_BACK)
    try:
        yield
    finally:
        sys.meta_path.remove(_HOLD_BACK)


class _HoldBack:
    """A meta path finder and loader that fails imports of :data:`HELD_BACK`.

    See :func:`import_keras`. It finds a spec without an origin and fails when
    the module is made: ``importlib.util.find_spec`` (which PyTorch calls at
    import for the packages it knows) gets an answer, and an import gets the
    ``ModuleNotFoundError`` that optional imports expect.
    """

    names: tuple[str, ...] = HELD_BACK

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name.split(".")[0] not in self.names:
            return None
        import importlib.machinery

        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec: Any) -> None:
        raise ModuleNotFoundError(
            f"No module named {spec.name!r} (held back while Keras is imported for trials)",
            name=spec.name,
        )

    def exec_module(self, module: Any) -> None:  # never reached: create_module raises
        raise ModuleNotFoundError(module.__name__, name=module.__name__)


_HOLD_BACK = _HoldBack()


def _epoch_reporter(
    report: Callable[[dict[str, Any]], None],
    total: int,
    metric: str | None = None,
    examples: int | None = None,
) -> Any:
    """The callback that reports each epoch of a trial to its search.

    It also holds a strategy to the contract a search depends on: at most
    ``total`` epochs, and the search's ``metric`` in every epoch's logs
    (without it, Ray Tune would stop the whole search, not the trial).
    """
    import keras

    class EpochReporter(keras.callbacks.Callback):
        """Reports each epoch; holds the last one until the trial is finalised."""

        def __init__(self) -> None:
            super().__init__()
            self.epochs = 0
            self.history: list[dict[str, float]] = []
            self.pending: dict[str, float] | None = None
            self.diverged = False
            #: The model's size, once built: reported with each epoch (COST_KEYS),
            #: so that a trial a scheduler stops has its costs in the leaderboard.
            self.sizes: dict[str, int] = {}
            self.note: str | None = None
            self.backend: str | None = None
            self.started: float | None = None

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            if self.started is None:  # the first fit of a strategy that fits in phases
                self.started = time.perf_counter()

        def costs(self) -> dict[str, Any]:
            """What the trial has cost so far (see :data:`COST_KEYS`)."""
            spent = time.perf_counter() - self.started if self.started is not None else 0.0
            peak = peak_memory_mb()
            costs: dict[str, Any] = {
                **self.sizes,
                "fit_seconds": round(spent, 3),
                "peak_memory_mb": round(peak, 1),
            }
            if self.note:
                costs["note"] = self.note
            if self.backend:
                costs["backend"] = self.backend
            return costs

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.epochs += 1
            metrics = {k: float(v) for k, v in (logs or {}).items()}
            if examples and "val_accuracy" in metrics and math.isfinite(metrics["val_accuracy"]):
                # Keras counts in float32 (37/144 is 0.2569444477...): the exact share, as
                # a trial that evaluates itself gives, so that equal scores tie.
                metrics["val_accuracy"] = round(metrics["val_accuracy"] * examples) / examples
            data_loss = metrics.pop(f"val_{CROSS_ENTROPY}", None)
            if data_loss is not None and "val_loss" in metrics:
                # val_loss is the data loss (what schedulers and the leaderboard
                # compare); Keras' own, with the penalties, is val_objective.
                metrics["val_objective"] = metrics["val_loss"]
                metrics["val_loss"] = data_loss
            metrics["epoch"] = self.epochs
            if self.epochs > total:
                raise RuntimeError(
                    f"Strategy.fit trained more than the {total} epochs it was given "
                    "(an override must run at most `epochs` in all its fit calls)"
                )
            if metric is not None and metric not in metrics:
                raise ValueError(
                    f"the model's epoch {self.epochs} logs have no {metric} to search by "
                    f"(only {', '.join(sorted(logs or {})) or 'nothing'}): Strategy.build must "
                    "compile it with metrics=['accuracy'] and Strategy.fit must pass the "
                    "validation data (data.x_val, data.y_val) to model.fit"
                )
            self.history.append(metrics)
            if not math.isfinite(metrics.get("loss", 0.0)):
                self.diverged = True
                self.model.stop_training = True
            if self.epochs >= total or self.diverged:
                # Reported after the model is evaluated and saved: a scheduler may
                # stop the trial at its last report.
                self.pending = metrics
            else:
                report({**metrics, **self.costs()})

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                self.diverged = True
                self.model.stop_training = True

    return EpochReporter()


def run_trial(
    config: dict[str, Any],
    spec: TrialSpec,
    dataset: Dataset,
    *,
    trial_id: str,
    report: Callable[[dict[str, Any]], None],
) -> TrialResult:
    """Run one trial to its end and write its files.

    A strategy exception becomes status ``error`` with its message (the trial
    ends normally, so a backend does not retry it: retries are for workers that
    die); a NaN or infinite loss becomes status ``diverged``. A full disk
    (:func:`~orchestrator.errors.is_disk_full`) is raised: no trial's fault, it
    stops the search, and the trial runs again on resume. A trial that has a
    ``result.json`` already (a resumed run) is not run again: its stored result
    is reported and returned.

    Returns:
        The trial's result (also written to ``result.json``).
    """
    # First: JAX reads its GPU memory setting when it starts, which Keras may do.
    use_backend(spec.keras_backend)
    with holding_back():  # TensorFlow's import, on that backend
        configure_trial(spec.cpus, spec.gpus)
    keras = import_keras()
    import numpy as np

    from orchestrator.bases import load_base
    from orchestrator.cluster import node_label
    from orchestrator.models import build_training_state, traced_gradients
    from orchestrator.strategy import FitData

    _freeze_imports()
    gradients = traced_gradients()  # what the process had before the trial

    folder = trial_dir(spec.run_dir, spec.strategy.name, trial_id)
    finished = read_result(folder, set_aside=True) or adopt_earlier(spec, config, trial_id)
    if finished is not None:
        # Its epochs again as it reported them, then its result: a scheduler's rungs
        # hold what they held before the resume (a search starts again on resume).
        for epoch, value in _reported_epochs(folder, spec.metric)[:-1]:
            report({spec.metric: value, "epoch": epoch})
        value = getattr(finished, spec.metric, None)
        report({spec.metric: float("nan") if value is None else value, "epoch": finished.epochs})
        return finished
    # An attempt before this one (its worker died, or the run was killed) left its
    # epochs' events: TensorBoard would draw both attempts over one another.
    shutil.rmtree(folder / TENSORBOARD_DIR, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    result = TrialResult(
        strategy=spec.strategy.name, trial_id=trial_id, status="error", config=dict(config)
    )
    result.devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    result.backend = backend_name = keras.backend.backend()
    result.node = node_label()
    result.started_at = time.time()
    reset_peak_memory()  # a reused worker (or keras_tuner's one process) ran trials before
    stopped = _StopSeen(report)
    reporter = _epoch_reporter(stopped, spec.max_epochs, spec.metric, len(dataset.y_val))
    reporter.backend = backend_name
    try:
        # A reused worker keeps the previous trial's policy unless it is set every time.
        # Only on a GPU the backend can use: Ray may give a trial a GPU that is logical
        # (a cluster started with --num-gpus) or that this backend's build cannot use,
        # and mixed_float16 on CPUs is slower and less accurate.
        use_mixed = bool(spec.mixed_precision and spec.gpus) and gpu_count() > 0
        keras.mixed_precision.set_global_policy("mixed_float16" if use_mixed else "float32")
        # Seeded for the base too: a random layer in it without a seed of its own
        # (Dropout) takes one from Python's random state when it is loaded.
        keras.utils.set_random_seed(spec.seed)
        if spec.custom_objects:
            register_custom_objects(spec.custom_objects)
        base = load_base(spec.base) if spec.base is not None else None
        inputs, cut = _inputs(config, spec, dataset, base, result)
        if spec.base is not None and spec.base.flat_output:
            from orchestrator.bases import flat_output_note

            _add_note(result, flat_output_note(spec.base))
        _add_note(result, spec.strategy.config_note(dict(config), spec.max_epochs))
        if spec.mixed_precision and spec.gpus and not use_mixed:
            _add_note(result, f"mixed precision off: {backend_name} sees no GPU")
        elif spec.mixed_precision and not spec.gpus:  # found by QA: float32, unsaid
            _add_note(result, "mixed precision off: the trial has no GPU (gpus_per_trial: 0)")
        if base is not None and cut != base.info.n_cut_points:
            # Loading builds layers, which draws random numbers: load before the
            # head's seed is set, so it starts alike with and without the cache.
            # (On features of the whole base the trial never needs the model.)
            base.model  # noqa: B018
        keras.utils.set_random_seed(spec.seed)
        model = spec.strategy.build(dict(config), dataset.task, base)
        _check_model(model, spec.strategy, dataset.task.n_classes)
        if cut is not None and base is not None:
            check_cached_input(model, spec.strategy, base, cut)
        reporter.sizes = _sizes(model, spec, cut)
        if cut is not None:  # whether it trains on cached features: said by a pruned row too
            reporter.sizes["cached_cut"] = cut
        reporter.note = result.note
        data = FitData(
            inputs["train"], dataset.y_train, inputs["val"], dataset.y_val, spec.batch_size
        )
        # For strategies with a fit of their own too (the default fit does it again, for free).
        build_training_state(model, inputs["train"], dataset.y_train)
        # The reporter also stops a diverging trial (as TerminateOnNaN would, without
        # printing "Invalid loss" over the progress view of an in-process search).
        # TensorBoard's first: an epoch is written (and flushed) before it is reported,
        # at which a scheduler may stop the trial (found by QA: a pruned trial's last
        # epoch, its first if pruned there, was not in its TensorBoard log).
        callbacks = [*_tensorboard(folder), reporter]
        started = time.perf_counter()
        model = spec.strategy.fit(
            model, dict(config), data, epochs=spec.max_epochs, callbacks=callbacks
        )
        result.fit_seconds = round(time.perf_counter() - started, 3)
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"strategy {spec.strategy.name}.fit returned {type(model).__name__}, "
                "not the trained keras.Model"
            )
        if not reporter.epochs and not reporter.diverged:
            raise RuntimeError(
                f"strategy {spec.strategy.name}.fit trained no epoch the search saw: an "
                "override must pass `callbacks` to every model.fit call"
            )
        result.epochs = reporter.epochs
        sizes = _sizes(model, spec, cut)
        result.params_total, result.params_trainable = (
            sizes["params_total"],
            sizes["params_trainable"],
        )
        if cut is not None:
            assert spec.base is not None
            result.cached_cut = cut
            result.base_fingerprint = spec.base.fingerprint
        if reporter.diverged:
            result.status = "diverged"
            result.error = f"loss became NaN or infinite in epoch {reporter.epochs}"
            # The scores of its last epoch whose weights were whole, if any. Found by QA:
            # the epoch its loss blew up in scored NaN outputs, every example the first
            # class, whose share of the split was shown as its val_accuracy.
            whole = [
                row
                for row in reporter.history
                if math.isfinite(row.get("loss", 0.0))
                and math.isfinite(row.get("val_loss", math.nan))
            ]
            last = whole[-1] if whole else {}
            result.val_accuracy = finite_or_none(last.get("val_accuracy"))
            result.val_loss = finite_or_none(last.get("val_loss"))
        else:
            val = _last_validation(spec.strategy, reporter, spec.max_epochs)
            if val is None:
                val = evaluate(model, inputs["val"], dataset.y_val)[1]
            predicted, test = evaluate(model, inputs["test"], dataset.y_test)
            problem = not_probabilities(predicted)
            if problem is not None:
                raise TypeError(
                    f"strategy {spec.strategy.name}.build returned a model with {problem}"
                )
            if not _finite(val, predicted):
                # The last step's loss was finite, the weights it left are not: the model
                # predicts NaN, which scored at chance, was ranked and saved as the best.
                result.status = "diverged"
                result.error = (
                    "the model's outputs became NaN or infinite after its last training step "
                    f"(epoch {reporter.epochs})"
                )
            else:
                result.val_accuracy = finite_or_none(val.get("accuracy"))
                result.val_loss = finite_or_none(val.get("loss"))
                result.test_accuracy = finite_or_none(test.get("accuracy"))
                result.test_loss = finite_or_none(test.get("loss"))
                # Whole, or (on cached features) the part above the cut: see load_trial_model.
                saved = folder / (MODEL_FILE if cut is None else TOP_FILE)
                with _written_whole(saved):
                    save_model(model, saved)
                result.model_path = str(saved)
                # What the model predicted in the run, to check saved copies against.
                with _written_whole(folder / PREDICTIONS_FILE):
                    np.save(folder / PREDICTIONS_FILE, predicted)
                result.status = "ok"
    except (Exception, SystemExit) as exc:
        # A strategy's sys.exit() is its error too (on keras_tuner it ended the whole
        # run, on Ray its worker); Tune's own SystemExit, its stop of the trial, is not.
        if isinstance(exc, SystemExit) and stopped.seen:
            _release(gradients)  # a scheduler's prune: the worker runs the next trial
            raise
        from orchestrator.tuning.ray_start import raise_if_interrupted

        try:
            # A Ctrl+C or SIGTERM that the strategy's code (TensorFlow's) turned into
            # an error of its own is the stop, not the trial's error (found by QA: "None
            # values not supported", and the trial never ran again on resume).
            raise_if_interrupted()
        except KeyboardInterrupt:
            _release(gradients)
            raise
        if is_disk_full(exc):
            # Not the strategy's error, and no trial after it could keep its files
            # either: the search stops, and this trial runs again on --resume.
            _release(gradients)
            raise
        result.status = "error"
        result.epochs = reporter.epochs
        result.error = error_text(exc)
        with contextlib.suppress(OSError):  # a full disk: the result below says it, or fails
            # Lone surrogates (an os.fsdecode'd file name) as escapes: writing them
            # raised here, and the trial passed for a dead worker (found by QA).
            (folder / ERROR_FILE).write_text(
                traceback.format_exc(), encoding="utf-8", errors="backslashreplace"
            )
        log.info("%s trial %s failed: %s", spec.strategy.name, trial_id, result.error)
        _finish(folder, result, reporter, spec.storage)
        _release(gradients)
        # A search expects its metric in a trial's last report: the worst value. Given
        # after the result is written, as a scheduler may stop the trial in it (found by
        # QA: ASHA did, and the trial was listed as pruned, its error lost).
        report({spec.metric: WORST_SCORES.get(spec.metric, float("nan")), "epoch": reporter.epochs})
        return result
    _finish(folder, result, reporter, spec.storage)
    try:
        if reporter.pending is not None:
            pending = dict(reporter.pending)
            # The trial's own scores (a fit of its own may return other weights).
            if result.val_accuracy is not None:
                pending["val_accuracy"] = result.val_accuracy
            if result.val_loss is not None:
                pending["val_loss"] = result.val_loss
            if result.status == "diverged":
                # No score of its configuration (its weights blew up): the worst, as
                # keras-tuner is told, for a searcher and a scheduler to go by.
                pending[spec.metric] = WORST_SCORES.get(spec.metric, float("nan"))
            report(pending)  # where Tune may end the trial (SystemExit)
    finally:
        _release(gradients)
    return result


def register_custom_objects(objects: dict[str, Any]) -> None:
    """Register a run's custom Keras objects (registered name -> class or function)
    where a trial runs, in both of Keras' tables: a model saved here names each as
    registered.

    On Ray a ``--plugin`` package's objects arrive as copies made from its code
    (shipped by value), while the strategy's ``build`` may import the module's
    own class (``from mypkg.layers import Scale``): that one is registered under
    the same name too, or the model named it ``Scale``, which nothing loads
    (found by QA).
    """
    import importlib

    import keras

    for registered, obj in objects.items():
        package, _, name = registered.rpartition(">")
        register = keras.saving.register_keras_serializable(package or "Custom", name)
        try:  # the module's own, where the worker can import it
            module = importlib.import_module(str(obj.__module__))
            own = module
            for part in str(obj.__qualname__).split("."):
                own = getattr(own, part)
        except Exception:  # a module only the driver has, or built on the fly
            own = obj
        if own is not obj and callable(own):
            register(own)
        register(obj)  # last: the name loads the object the run gave


#: A trial's printed output, warnings and log records on Ray (:func:`captured_output`).
OUTPUT_FILE = "output.txt"
#: The whole traceback of a strategy's error (its message, cut, is in the result).
ERROR_FILE = "error.txt"


class _Copy:
    """The trial's output file, made when first written to; a write there that
    fails (a full disk) ends the copying, not the trial."""

    def __init__(self, path: Path, header: str) -> None:
        self._path, self._header = path, header
        self._file: Any = None
        self._broken = False

    def write(self, text: str) -> int:
        if text and not self._broken:
            try:
                if self._file is None:
                    self._path.parent.mkdir(parents=True, exist_ok=True)
                    self._file = open(  # noqa: SIM115 - kept open for the trial
                        self._path, "a", encoding="utf-8", errors="backslashreplace"
                    )
                    self._file.write(self._header)
                self._file.write(text)
                self._file.flush()
            except (OSError, ValueError):
                self._broken = True
        return len(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


class _Tee:
    """A text stream that writes to ``stream`` and to ``copy``."""

    def __init__(self, stream: Any, copy: _Copy) -> None:
        self._stream, self._copy = stream, copy

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        self._copy.write(text)
        return written

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno, ...
        return getattr(self._stream, name)


@contextlib.contextmanager
def captured_output(folder: Path) -> Iterator[None]:
    """Copy what a trial prints, warns and logs to ``folder/output.txt``.

    On Ray a trial runs in a worker whose output stays in the worker's log on
    its node (found by QA: a plugin's prints and warnings were nowhere to be
    found). What Python writes to ``sys.stdout`` and ``sys.stderr`` (where
    ``warnings`` write) and log records of WARNING and above are copied there
    as they are written; the file is made only if something is. An attempt
    after a worker's death appends, under a header of its own. Native
    libraries' output (TensorFlow's C++ log) goes past Python and is not copied.
    """
    import platform

    header = f"--- attempt in process {os.getpid()} on {platform.node()}, {time.ctime()}\n"
    copy = _Copy(Path(folder) / OUTPUT_FILE, header)
    out, err = sys.stdout, sys.stderr
    root = logging.getLogger()
    # Records reach the file through this handler, whether or not the worker's root
    # logger has handlers of its own (without, the last-resort one writes records to
    # sys.stderr: the tee, and the file would have them twice).
    handler = logging.StreamHandler(copy)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    added = [handler]
    if not root.handlers:  # keep the last-resort handler's output in the worker's own log
        added.append(logging.StreamHandler(err))
        added[-1].setLevel(logging.WARNING)
    for one in added:
        root.addHandler(one)
    sys.stdout, sys.stderr = _Tee(out, copy), _Tee(err, copy)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
        for one in added:
            root.removeHandler(one)
        copy.close()


#: The most characters of a strategy's error a trial's result keeps: a message of
#: 140,000 characters passed the CSV reader's field limit, and every command that
#: read the leaderboard back failed (found by QA). ``error.txt`` keeps it whole.
ERROR_LIMIT = 2000


def error_text(exc: BaseException) -> str:
    """``Type: message`` of a strategy's exception, for its trial's result: cut to
    :data:`ERROR_LIMIT` characters, lone surrogates escaped, and the type alone
    where the message cannot be made (an ``__str__`` that raises)."""
    try:
        message = str(exc)
    except Exception:
        message = "(its message cannot be shown: str() of it raised)"
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > ERROR_LIMIT:
        text = (
            text[:ERROR_LIMIT].rstrip() + f" ... ({len(text):,} characters; error.txt has them all)"
        )
    return text


class _StopSeen:
    """A trial's ``report``, noting whether the search ended the trial in it.

    Ray Tune stops a function trainable's trial (a scheduler's prune, the end of
    the search) with ``sys.exit(0)`` inside ``tune.report``: that ``SystemExit``
    must end the trial as Tune means, where one raised by the strategy's own code
    is the strategy's error.
    """

    def __init__(self, report: Callable[[dict[str, Any]], None]) -> None:
        self._report = report
        self.seen = False

    def __call__(self, metrics: dict[str, Any]) -> None:
        try:
            self._report(metrics)
        except SystemExit:
            self.seen = True
            raise


def _finite(val: dict[str, float], predicted: Any) -> bool:
    """Whether a trained model's validation loss and test predictions are numbers."""
    import numpy as np

    loss = val.get("loss")
    return (loss is None or math.isfinite(loss)) and bool(np.isfinite(predicted).all())


def _sizes(model: Any, spec: TrialSpec, cut: int | None) -> dict[str, int]:
    """The trial's parameters: the model's, plus, on cached features, the frozen
    prefix's and its input adapter's: the whole model's, as a trial through the
    base counts them (found by QA: 12 fewer, the caffe adapter's, won ties)."""
    from orchestrator.bases import adapter_params

    total = int(model.count_params())
    if cut is not None and spec.base is not None and spec.base.cut_params:
        total += spec.base.cut_params[cut - 1] + adapter_params(spec.base.adapter)
    trainable = int(sum(math.prod(w.shape) for w in model.trainable_weights))
    return {"params_total": total, "params_trainable": trainable}


def _tensorboard(folder: Path) -> list[Any]:
    """Per-epoch scalars for ``tensorboard --logdir RUN_DIR/trials``, nothing heavier.

    Keras writes them with TensorFlow's summary writer: on another backend
    where TensorFlow is not installed there are none (an empty list).
    """
    import keras

    try:
        import tensorflow  # noqa: F401  (imported already, or by the callback itself)
    except ImportError:
        return []

    class TrialTensorBoard(keras.callbacks.TensorBoard):
        """Steps count the trial's epochs from 1, as ``history.csv`` and the MLflow
        reporter do (found by QA: Keras counts from 0), not each ``fit``'s: a
        strategy that trains in phases (two ``fit`` calls, each from epoch 0) draws
        one curve. Each epoch is flushed to disk as it ends: a trial a scheduler
        stops may end with its worker."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.seen = 0

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            super().on_epoch_begin(self.seen + 1, logs)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.seen += 1
            super().on_epoch_end(self.seen, logs)
            for writer in self._writers.values():
                writer.flush()

    return [
        TrialTensorBoard(
            log_dir=str(folder / TENSORBOARD_DIR),
            histogram_freq=0,
            write_graph=False,
            write_images=False,
            update_freq="epoch",
            profile_batch=0,
        )
    ]


def _inputs(
    config: dict[str, Any],
    spec: TrialSpec,
    dataset: Dataset,
    base: LoadedBase | None,
    result: TrialResult,
) -> tuple[dict[str, Any], int | None]:
    """The arrays the trial trains on: the data, or a frozen prefix's cached outputs.

    Returns:
        The train/val/test inputs and the cut point they are cached at (``None``
        without the cache).
    """
    raw = {"train": dataset.x_train, "val": dataset.x_val, "test": dataset.x_test}
    if base is None:
        return raw, None
    cut = int(spec.strategy.frozen_prefix(dict(config), base.info) or 0)
    if cut <= 0:
        return raw, None
    if cut > base.info.n_cut_points:
        raise ValueError(
            f"strategy {spec.strategy.name}.frozen_prefix returned {cut} for a base of "
            f"{base.info.n_cut_points} cut points"
        )
    if not spec.feature_cache:  # said, as the other ways the cache is off are
        result.note = "feature cache off: the recipe's cache: false"
        return raw, None
    random_layers = base.stochastic_prefix_layers(cut)
    if random_layers:
        result.note = f"feature cache off: {', '.join(random_layers)} before the cut is random"
        return raw, None
    from orchestrator.feature_cache import CacheTooLarge, cached_features

    damaged: list[str] = []
    try:
        features, computed = cached_features(
            base, cut, dataset, damaged=damaged.append, made_for=str(Path(spec.run_dir).absolute())
        )
    except CacheTooLarge as exc:  # an entry never fills the disk
        result.note = f"feature cache off up to cut {cut}: {exc}"
        log.warning("%s", result.note)
        return raw, None
    except OSError as exc:  # a full or read-only cache: the trial trains without it
        from orchestrator.bases import cache_dir
        from orchestrator.feature_cache import cache_folder_problem

        # What is in the way, where it is known (found by QA: a features/ that was a
        # file was said as "cannot write in CACHE: File exists").
        why = cache_folder_problem() or f"cannot write in {cache_dir()}: {exc.strerror or exc}"
        result.note = f"feature cache off: {why}"
        log.warning("%s", result.note)
        return raw, None
    base.cached_cut = cut
    base.feature_shape = tuple(features["train"].shape[1:])
    result.note = f"features {'computed' if computed else 'from cache'} up to cut {cut}"
    if damaged:  # the trial's log is the worker's: the leaderboard's note column says it
        result.note = f"features computed again up to cut {cut}: {damaged[0]}"
    return features, cut


def _add_note(result: TrialResult, note: str | None) -> None:
    """Add ``note`` (if any) to the trial's leaderboard note, after what it has."""
    if note:
        result.note = f"{result.note}; {note}" if result.note else note


@contextlib.contextmanager
def _written_whole(path: Path) -> Iterator[None]:
    """Write ``path`` meanwhile: where the disk fills (or the file outgrows ``ulimit
    -f``), the file cut off is removed, and the error names it. Found by QA: the
    write's own error (Keras', numpy's) names no file, so the run said the run
    directory, and the cut-off model.keras stayed in the trial's folder."""
    from orchestrator.errors import disk_full_error

    try:
        yield
    except Exception as exc:
        full = disk_full_error(exc)
        if full is None:
            raise
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        if full.filename is not None:
            raise
        raise OSError(full.errno, full.strerror or os.strerror(full.errno), str(path)) from exc


def save_model(model: Any, path: Path) -> None:
    """Save ``model`` for predictions: its layers and weights, not its training state.

    A compiled model's ``.keras`` file also holds its optimizer's variables (two
    for each trained weight with Adam: two thirds of a fine-tuned ResNet50's
    file) and its compile settings, which make ``load_model`` build them again.
    Nothing reads them: predict and export only run the model, and a resumed
    run trains an unfinished trial from its start. Keras 3 ignores
    ``include_optimizer`` for ``.keras`` files, so the model is saved as if not
    compiled, without a copy of its weights, and left as it was.
    """
    optimizer, compiled = getattr(model, "optimizer", None), getattr(model, "compiled", False)
    if optimizer is None and not compiled:
        model.save(path)
        return
    model.optimizer, model.compiled = None, False
    try:
        model.save(path)
    finally:
        model.optimizer, model.compiled = optimizer, compiled


class BaseMismatch(ValueError):
    """A trial trained on cached features of another base than the one at hand."""


def load_trial_model(folder: Path, base: BaseInfo | None, input_shape: tuple[int, ...]) -> Any:
    """A finished trial's model, whole, loaded with ``safe_mode=True``.

    A trial that trained on cached features saved only the part above the cut
    (``top.keras``); it is put behind the base's frozen prefix again, which
    gives the model the trial trained, taking the data's inputs.

    Args:
        folder: The trial's folder (:func:`trial_dir`).
        base: The run's prepared base; needed only for a trial on cached features.
        input_shape: The data's input shape.

    Raises:
        FileNotFoundError: The trial saved no model.
        BaseMismatch: The trial needs a base, and ``base`` is missing or another one.
        Exception: Keras cannot load a file (a custom object no imported code registers).
    """
    import keras

    folder = Path(folder)
    result = read_result(folder)
    name = f"{folder.parent.name}/{folder.name}"
    if (folder / MODEL_FILE).is_file():
        return keras.saving.load_model(folder / MODEL_FILE, safe_mode=True)
    if result is None or result.cached_cut is None or not (folder / TOP_FILE).is_file():
        raise FileNotFoundError(f"trial {name} saved no model")
    if base is None or base.fingerprint != result.base_fingerprint:
        raise BaseMismatch(
            f"trial {name} trained on cached features of the base with fingerprint "
            f"{result.base_fingerprint}; the base at hand is "
            f"{base.fingerprint if base is not None else 'none'}"
        )
    from orchestrator.bases import load_base

    loaded = load_base(base)
    if loaded.saved_fingerprint() != result.base_fingerprint:
        # The file changed since: made again (a cache clear, then another run) from
        # other weights, or replaced: the trained part would sit on a prefix it never saw.
        raise BaseMismatch(
            f"trial {name} trained on cached features of a base whose weights are not "
            f"those of {base.path} now (the file was replaced or made again since the run)"
        )
    trained = keras.saving.load_model(folder / TOP_FILE, safe_mode=True)
    prefix = loaded.prefix_model(input_shape, result.cached_cut)
    prefix.trainable = False  # frozen, as it was in the trial (BatchNorm in inference mode)
    inputs = keras.Input(input_shape, name="inputs")
    return keras.Model(inputs, trained(prefix(inputs)), name=trained.name)


#: :func:`probabilities` takes batches whose largest tensor holds about this many
#: values (8 MiB of float32): a small network's whole split in one call, a
#: ResNet50 at 64x64 (65,536 values an example, after its first convolution)
#: in 32s, as ``predict`` would.
BATCH_VALUES = 2**21


def batch_for(model: Any, x: Any) -> int:
    """How many of ``x`` :func:`evaluate` gives ``model`` at a time: its largest
    tensor (of any layer's output, nested models' layers included, or the input)
    about :data:`BATCH_VALUES` values, and at least 32.

    Sized by the input alone, 8x8 digits went through a ResNet50 base that
    adapts them to 64x64x3 in batches of 1024: a trial's test split in one call
    took 4.5 GB more than its training did, which the worker kept, so that
    every such trial retired its worker (``search.worker_memory_mb``).
    """
    import keras

    from orchestrator.bases import nested_layers

    widest = math.prod(x.shape[1:])
    for layer in nested_layers(model):
        try:
            outputs = keras.tree.flatten(layer.output)
        except (AttributeError, ValueError):  # never called in a graph (a subclassed model's)
            continue
        for output in outputs:
            shape = getattr(output, "shape", None)
            if shape is not None and all(isinstance(d, int) for d in shape[1:]):
                widest = max(widest, math.prod(shape[1:]))
    return max(32, BATCH_VALUES // max(1, widest))


def probabilities(model: Any, x: Any, batch_size: int | None = None) -> Any:
    """The model's outputs on ``x`` (inference mode), as one NumPy array.

    Calls the model on batches directly: ``model.predict`` traces a graph
    function first, which for one pass over a small test split costs more
    (about 0.25 s a trial on the digits MLP) than the pass itself. Each call
    costs a few milliseconds however small its batch, so a batch's largest
    tensor holds about :data:`BATCH_VALUES` values (the whole split of small
    tabular data in one call; :func:`batch_for`), and never fewer than
    ``predict``'s 32 samples, so that a heavy base needs no more memory than there.
    """
    return evaluate(model, x, None, batch_size)[0]


def evaluate(
    model: Any, x: Any, y: Any, batch_size: int | None = None
) -> tuple[Any, dict[str, float]]:
    """The model's probabilities on ``x`` (:func:`probabilities`), and their
    accuracy and mean cross-entropy against the labels ``y``.

    The cross-entropy is Keras' own, of the model's outputs, as the
    ``cross_entropy`` metric of :func:`~orchestrator.models.compile_classifier`
    gives an epoch's ``val_loss``: on TensorFlow from the logits of a softmax
    output (it has no bound), elsewhere from the probabilities clipped to
    ``[ε, 1 - ε]``. So a trial's ``val_loss`` and ``test_loss`` are of one
    formula, whether its validation is the last epoch's or evaluated here (a
    strategy with a ``fit`` of its own): a clipped formula here put 16.1 as the
    most one example could cost, where the epoch's metric said millions.

    It is of the data alone: a model's penalties (λ·R(θ)), which Keras adds to
    its ``loss``, are part of what a trial minimises, not of how well it
    predicts, and would rank trials of a small λ, or of L2-SP against L2, above
    better ones.
    """
    import keras
    import numpy as np

    if len(x) == 0:  # (Keras' predict fails on no data)
        return np.zeros((0, model.output_shape[-1]), "float32"), {}
    if batch_size is None:
        batch_size = batch_for(model, x)
    outputs, loss = [], 0.0
    for i in range(0, len(x), batch_size):
        out = model(x[i : i + batch_size], training=False)
        outputs.append(keras.ops.convert_to_numpy(out))
        if y is not None:
            labels = np.asarray(y[i : i + batch_size]).astype("int32")
            each = keras.losses.sparse_categorical_crossentropy(labels, out)
            loss += float(np.sum(keras.ops.convert_to_numpy(each), dtype=np.float64))
    predicted = np.concatenate(outputs)
    if y is None:
        return predicted, {}
    y = np.asarray(y).astype(int)
    accuracy = float((predicted.argmax(axis=-1) == y).mean())
    return predicted, {"accuracy": accuracy, "loss": loss / len(y)}


def _last_validation(strategy: Strategy, reporter: Any, epochs: int) -> dict[str, float] | None:
    """The last epoch's validation metrics, where they are the returned model's.

    The default :meth:`Strategy.fit` is one ``model.fit`` over every epoch, and
    ``fit`` validates the weights it ends with after the last one: evaluating
    the validation split again would give the same numbers (0.1 s a trial on
    the digits MLP). A strategy with a ``fit`` of its own may return another
    model, or other weights; ``None`` then, and the trial evaluates. So too
    where the epoch's ``val_loss`` is Keras' objective, not the data loss (a
    model compiled without :data:`~orchestrator.models.CROSS_ENTROPY`).
    """
    from orchestrator.strategy import Strategy

    if type(strategy).fit is not Strategy.fit or reporter.epochs != epochs:
        return None
    last = reporter.history[-1] if reporter.history else {}
    if "val_accuracy" not in last or "val_objective" not in last:
        return None
    # (The reporter has made Keras' float32 accuracy the exact share already.)
    return {"accuracy": last["val_accuracy"], "loss": last["val_loss"]}


def _check_model(model: Any, strategy: Strategy, n_classes: int) -> None:
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(
            f"strategy {strategy.name}.build returned {type(model).__name__}, not a keras.Model"
        )
    if getattr(model, "optimizer", None) is None:
        raise TypeError(f"strategy {strategy.name}.build returned a model that is not compiled")
    shape = tuple(model.output_shape)
    if shape[-1] != n_classes or len(shape) != 2:
        raise TypeError(
            f"strategy {strategy.name}.build returned a model with output shape {shape}; "
            f"expected (None, {n_classes})"
        )


def check_cached_input(model: Any, strategy: Strategy, base: LoadedBase, cut: int) -> None:
    """A trial on cached features feeds the model the features, not the data.

    The model must take the very input :meth:`LoadedBase.inputs_and_features`
    returned: one of its own, of the same shape (a cut whose features have the
    data's shape), would run the cached features through the base again.
    """
    expected = base.feature_shape
    got = [tuple(t.shape[1:]) for t in model.inputs]
    given = len(model.inputs) == 1 and any(model.inputs[0] is t for t in base.cached_inputs)
    if not given:
        takes = ", ".join(map(str, got))
        if got == [expected]:
            takes = f"an input of its own of shape {takes}"
        raise TypeError(
            f"strategy {strategy.name}.frozen_prefix returned {cut}, so its model is fed the "
            f"base's features cached at that cut point, of shape {expected}, but it takes "
            f"{takes}: build it on base.inputs_and_features(task, {cut})"
        )


def write_result(folder: Path, result: TrialResult) -> None:
    """Write ``result.json`` in one step: a trial with one has ended, and is not run again."""
    from orchestrator.leaderboard import synced

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{RESULT_FILE}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(result.to_json(), indent=2, default=str))
        synced(tmp)  # renamed first, a power loss could leave an empty result.json
        os.replace(tmp, folder / RESULT_FILE)
        synced(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written copy (a full disk) is no one's
        raise


def _finish(folder: Path, result: TrialResult, reporter: Any, storage: str | None = None) -> None:
    result.finished_at = time.time()
    result.peak_memory_mb = round(peak_memory_mb(), 1)
    if reporter.history:
        import pandas as pd

        with _written_whole(folder / "history.csv"):
            pd.DataFrame(reporter.history).to_csv(folder / "history.csv", index=False)
    write_result(folder, result)
    if storage is not None:
        from orchestrator.storage import push_trial

        push_trial(folder, storage, result.strategy, result.trial_id)


def reset_peak_memory() -> None:
    """Start this process's peak resident memory again from what it holds now.

    Linux's ``/proc/self/clear_refs`` (``5``: reset the peak RSS) makes
    ``ru_maxrss`` the peak since this call, so that a trial's ``peak_memory_mb``
    is its own, not the worker's since it started. Where that is not possible
    (another system), the peak counts from the process's start.
    """
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def peak_memory_mb() -> float:
    """This process's peak resident memory in MiB (see :func:`reset_peak_memory`)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB here


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is missing, NaN or infinite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def whole_or_none(value: Any) -> int | None:
    """``value`` as an int (a count a report gave as a float), or ``None`` as
    :func:`finite_or_none` gives it."""
    number = finite_or_none(value)
    return None if number is None else int(number)


def reported_costs(report: dict[str, Any]) -> dict[str, Any]:
    """The :data:`COST_KEYS` of an epoch's report as :class:`TrialResult` fields: for
    a trial that wrote no result of its own (stopped, or its process died)."""
    text = {key: report.get(key) for key in ("note", "backend")}
    return {
        "fit_seconds": finite_or_none(report.get("fit_seconds")),
        "params_total": whole_or_none(report.get("params_total")),
        "params_trainable": whole_or_none(report.get("params_trainable")),
        "peak_memory_mb": finite_or_none(report.get("peak_memory_mb")),
        "cached_cut": whole_or_none(report.get("cached_cut")),
        **{key: value if isinstance(value, str) else None for key, value in text.items()},
    }


def _freeze_imports() -> None:
    """Take what the process holds before its first trial out of garbage collection.

    TensorFlow, Keras and Ray leave about 400,000 long-lived objects behind
    their imports; a full collection walks all of them (0.2 s on a small CPU),
    and a reused worker collects after every trial. Frozen once, they are
    skipped, and a collection walks only what trials have made since.

    Only where the process is the search's: a Ray worker (:func:`freezes_here`)
    or, until the run ends, a run's own process (:func:`collecting_its_own_garbage`).
    A trial run from elsewhere (a plugin author's test) freezes nothing.
    """
    global _FROZEN
    if _FREEZES and not _FROZEN:
        gc.collect()
        gc.freeze()
        _FROZEN = True


def freeze_the_runs_imports() -> None:
    """Within :func:`collecting_its_own_garbage`, take what the process holds now,
    just after the run imported Keras, TensorFlow and Ray (or its search backend),
    out of the run's collections too.

    Found by QA: ``graftune run`` froze its process before it imported them, so
    each full collection of its driver (the pre-flight's, one per strategy, and
    Ray's start's) walked their 500,000 objects, 0.24 s each. Called right after
    those imports; the second call (after the search backend's import) also
    freezes what the run made since the first, its data and base, whose garbage
    the pre-flight's collections have just freed. All of it is thawed when the
    run ends.
    """
    if _FREEZES and not _FROZEN:
        gc.freeze()


#: Whether this process's objects are frozen (:func:`_freeze_imports`).
_FROZEN = False
#: Whether trials may freeze them here (:func:`freezes_here`).
_FREEZES = False


def freezes_here() -> None:
    """Say that this process is a Ray worker's, whose trials freeze what it holds
    for good (:func:`_freeze_imports`)."""
    global _FREEZES
    _FREEZES = True


@contextlib.contextmanager
def collecting_its_own_garbage() -> Iterator[None]:
    """Within it, a run's garbage collections walk only what the run made; after
    it, every object of the process is collectable again.

    A run in a caller's process (``run_recipe``, the CLI) collects at its
    pre-flight check, after each in-process trial (``search.backend:
    keras_tuner``) and at the search's end. A full collection walks every object
    of the process, a notebook's or a test session's millions included (0.5 s
    and more each time), where the garbage is the run's: what the process held
    before is frozen (:func:`gc.freeze`) for the run, and in-process trials
    freeze their imports as a worker's first trial does
    (:func:`_freeze_imports`). At the end all of it is unfrozen: a trial had
    frozen the caller's objects for good, so that one of them left in a
    reference cycle later was never freed. A process that froze objects itself
    is left as it is: nothing frozen here, nothing thawed.
    """
    global _FROZEN, _FREEZES
    if _FROZEN or _FREEZES or gc.get_freeze_count():
        # A Ray worker's process, or a caller's own freeze: no trial freezes more.
        yield
        return
    gc.freeze()
    _FREEZES = True
    try:
        yield
    finally:
        gc.unfreeze()
        _FROZEN = _FREEZES = False


# Called alone (a plugin author's test, a notebook), a trial's collections walk what
# it made, as in a run; in a run or a Ray worker this changes nothing.
run_trial = collecting_its_own_garbage()(run_trial)


@contextlib.contextmanager
def keeping_callers_state() -> Iterator[None]:
    """Put back the global state of Keras and of the random number generators
    that a run changes in its caller's process.

    The driver builds models (the pre-flight check, a pretrained base) and
    keras_tuner's trials train in it: they clear Keras' session, which drops
    the caller's global settings (a ``mixed_float16`` dtype policy, a
    distribution, Keras' global seed and layer-name counters), and seed Python's,
    NumPy's and TensorFlow's global generators with the recipe's seed. A
    notebook's next model trained in float32 after a run, and its next random
    draws were the recipe's. The run starts from Keras' defaults, with the
    settings its Ray workers start with (``keras.json``'s floatx and image
    data format, say): a pretrained base in float32, its layers named as in any
    other process, whatever the caller set. What was set before the run is set
    again after it; a library that was not imported before the run has nothing
    to put back. TensorFlow's global seed is set again with the place in its
    sequence of operation seeds: a seeded ``tf.random.uniform`` after the run
    draws what it would have drawn without it (found by QA: it repeated the
    draw made before the run).
    """
    import random

    python_random = random.getstate()
    numpy = sys.modules.get("numpy")
    numpy_random = numpy.random.get_state() if numpy is not None else None
    keras_state = sys.modules.get("keras.src.backend.common.global_state")
    keras_saved = dict(vars(keras_state.GLOBAL_STATE_TRACKER)) if keras_state else None
    keras_config = sys.modules.get("keras.src.backend.config")
    config_saved = _keras_config(keras_config) if keras_config else None
    if keras_saved is not None:  # the run starts from Keras' defaults, whatever the caller set
        vars(keras_state.GLOBAL_STATE_TRACKER).clear()
    if config_saved is not None:  # and with the settings its Ray workers start with
        _set_keras_config(keras_config, _fresh_keras_config(keras_config))
    eager = sys.modules.get("tensorflow.python.eager.context")
    tf_seed = _tf_seed_state(eager) if eager is not None else None
    try:
        yield
    finally:
        random.setstate(python_random)
        if numpy_random is not None:
            numpy.random.set_state(numpy_random)
        if keras_saved is not None:
            tracker = keras_state.GLOBAL_STATE_TRACKER  # a new one after clear_session
            vars(tracker).clear()
            vars(tracker).update(keras_saved)
        if config_saved is not None:
            _set_keras_config(keras_config, config_saved)
        if eager is not None and _tf_seed_state(eager) != tf_seed:
            seed, operation_seeds = tf_seed
            eager.set_global_seed(seed)
            generator = getattr(eager.context(), "_rng", None)
            if generator is not None and operation_seeds is not None:
                generator.setstate(operation_seeds)


def _tf_seed_state(eager: Any) -> tuple[Any, Any]:
    """TensorFlow's global seed, and where its eager context is in the sequence of
    operation seeds it draws from it (a :class:`random.Random`)."""
    generator = getattr(eager.context(), "_rng", None)
    return eager.global_seed(), generator.getstate() if generator is not None else None


#: Keras' settings kept in its config module (not in its session's global state).
KERAS_SETTINGS = ("floatx", "epsilon", "image_data_format", "max_epochs", "max_steps_per_epoch")


def _keras_config(config: Any) -> dict[str, Any]:
    return {name: getattr(config, name)() for name in KERAS_SETTINGS}


def _set_keras_config(config: Any, values: dict[str, Any]) -> None:
    for name, value in values.items():
        getattr(config, f"set_{name}")(value)


def _fresh_keras_config(config: Any) -> dict[str, Any]:
    """The settings a new process, as a Ray worker is, starts with: Keras'
    defaults, those of its ``keras.json`` and its environment variables."""
    try:
        with open(config._config_path) as file:
            saved = json.load(file)
    except (OSError, ValueError, TypeError, AttributeError):
        saved = {}
    if not isinstance(saved, dict):
        saved = {}
    return {
        "floatx": saved.get("floatx", "float32"),
        "epsilon": saved.get("epsilon", 1e-7),
        "image_data_format": saved.get("image_data_format", "channels_last"),
        "max_epochs": int(os.environ["KERAS_MAX_EPOCHS"])
        if "KERAS_MAX_EPOCHS" in os.environ
        else None,
        "max_steps_per_epoch": int(os.environ["KERAS_MAX_STEPS_PER_EPOCH"])
        if "KERAS_MAX_STEPS_PER_EPOCH" in os.environ
        else None,
    }


def _release(gradients: frozenset[str]) -> None:
    """Free what the trial made: a reused worker must not grow from trial to trial.

    Keras' global state, the custom gradients TensorFlow registered since
    ``gradients`` were taken (which hold the trial's graphs and variables, see
    :func:`~orchestrator.models.forget_traced_gradients`), then one collection
    (Keras' own would be a second).
    """
    import keras

    from orchestrator.models import forget_traced_gradients

    keras.backend.clear_session(free_memory=False)
    forget_traced_gradients(gradients)
    gc.collect()


__all__ = [
    "BaseMismatch",
    "TrialResult",
    "TrialSpec",
    "has_tensorboard",
    "import_keras",
    "load_trial_model",
    "read_result",
    "run_trial",
    "save_model",
    "trial_dir",
]
