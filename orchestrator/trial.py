"""One trial: configure TensorFlow, build through the strategy, fit, evaluate, report.

This module is backend-neutral: a search backend calls :func:`run_trial` with
its own ``report`` function (Ray Tune's ``tune.report`` in a Ray worker, a
plain callback in process). Everything a trial produces is written to its own
folder, ``RUN_DIR/trials/STRATEGY/TRIAL_ID/``: ``result.json`` (status,
metrics, cost, error), ``history.csv`` and ``model.keras``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import TrialFailure

if TYPE_CHECKING:
    from orchestrator.bases import BaseInfo
    from orchestrator.data import Dataset
    from orchestrator.strategy import Strategy

log = logging.getLogger(__name__)

#: The statuses a trial can end with.
STATUSES = ("ok", "pruned", "diverged", "error")
RESULT_FILE = "result.json"
MODEL_FILE = "model.keras"
PREDICTIONS_FILE = "test_probabilities.npy"


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialResult:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def trial_dir(run_dir: Path, strategy: str, trial_id: str) -> Path:
    """The folder of one trial's files."""
    return Path(run_dir) / "trials" / strategy / trial_id


def read_result(folder: Path) -> TrialResult | None:
    """Read a trial's ``result.json``, or ``None`` if it never finished."""
    path = folder / RESULT_FILE
    if not path.is_file():
        return None
    return TrialResult.from_json(json.loads(path.read_text()))


def configure_tensorflow(cpus: float, gpus: float) -> None:
    """Set TensorFlow's threads to the trial's CPU share and memory growth on its GPUs.

    Must run before the first TensorFlow op of the process; in a reused worker
    the settings of its first trial stay, which is the same share.
    """
    import tensorflow as tf

    threads = max(1, int(cpus))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:
        pass
    if gpus:
        # Without memory growth TensorFlow takes the whole card and fractional GPUs fail.
        for device in tf.config.list_physical_devices("GPU"):
            with contextlib.suppress(RuntimeError):
                tf.config.experimental.set_memory_growth(device, True)


def _epoch_reporter(report: Callable[[dict[str, Any]], None], total: int) -> Any:
    import keras

    class EpochReporter(keras.callbacks.Callback):
        """Reports each epoch; holds the last one until the trial is finalised."""

        def __init__(self) -> None:
            super().__init__()
            self.epochs = 0
            self.history: list[dict[str, float]] = []
            self.pending: dict[str, float] | None = None
            self.diverged = False

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.epochs += 1
            metrics = {k: float(v) for k, v in (logs or {}).items()}
            metrics["epoch"] = self.epochs
            self.history.append(metrics)
            if not math.isfinite(metrics.get("loss", 0.0)):
                self.diverged = True
            if self.epochs >= total or self.diverged:
                # Reported after the model is evaluated and saved: a scheduler may
                # stop the trial at its last report.
                self.pending = metrics
            else:
                report(metrics)

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                self.diverged = True

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

    A strategy exception becomes status ``error`` (its result is written, then
    :class:`TrialFailure` is raised so the backend marks the trial failed); a
    NaN or infinite loss becomes status ``diverged``.

    Returns:
        The trial's result (also written to ``result.json``).
    """
    configure_tensorflow(spec.cpus, spec.gpus)
    import keras
    import numpy as np

    from orchestrator.bases import load_base
    from orchestrator.strategy import FitData

    folder = trial_dir(spec.run_dir, spec.strategy.name, trial_id)
    folder.mkdir(parents=True, exist_ok=True)
    result = TrialResult(
        strategy=spec.strategy.name, trial_id=trial_id, status="error", config=dict(config)
    )
    reporter = _epoch_reporter(report, spec.max_epochs)
    try:
        keras.utils.set_random_seed(spec.seed)
        base = load_base(spec.base) if spec.base is not None else None
        model = spec.strategy.build(dict(config), dataset.task, base)
        _check_model(model, spec.strategy, dataset.task.n_classes)
        data = FitData(
            dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val, spec.batch_size
        )
        callbacks = [reporter, keras.callbacks.TerminateOnNaN()]
        started = time.perf_counter()
        model = spec.strategy.fit(
            model, dict(config), data, epochs=spec.max_epochs, callbacks=callbacks
        )
        result.fit_seconds = round(time.perf_counter() - started, 3)
        result.epochs = reporter.epochs
        result.params_total = int(model.count_params())
        result.params_trainable = int(sum(math.prod(w.shape) for w in model.trainable_weights))
        if reporter.diverged:
            result.status = "diverged"
            result.error = f"loss became NaN or infinite in epoch {reporter.epochs}"
            last = reporter.history[-1] if reporter.history else {}
            result.val_accuracy = _finite(last.get("val_accuracy"))
            result.val_loss = _finite(last.get("val_loss"))
        else:
            val = model.evaluate(dataset.x_val, dataset.y_val, verbose=0, return_dict=True)
            test = model.evaluate(dataset.x_test, dataset.y_test, verbose=0, return_dict=True)
            result.val_accuracy = _finite(val.get("accuracy"))
            result.val_loss = _finite(val.get("loss"))
            result.test_accuracy = _finite(test.get("accuracy"))
            result.test_loss = _finite(test.get("loss"))
            model.save(folder / MODEL_FILE)
            result.model_path = str(folder / MODEL_FILE)
            # What the model predicted in the run, to check saved copies against.
            np.save(folder / PREDICTIONS_FILE, model.predict(dataset.x_test, verbose=0))
            result.status = "ok"
    except Exception as exc:
        result.status = "error"
        result.epochs = reporter.epochs
        result.error = f"{type(exc).__name__}: {exc}"
        (folder / "error.txt").write_text(traceback.format_exc())
        _finish(folder, result, reporter)
        _release()
        raise TrialFailure(f"{spec.strategy.name} trial {trial_id}: {result.error}") from exc
    _finish(folder, result, reporter)
    if reporter.pending is not None:
        pending = dict(reporter.pending)
        if result.val_accuracy is not None:
            pending["val_accuracy"] = result.val_accuracy
        report(pending)
    _release()
    return result


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


def _finish(folder: Path, result: TrialResult, reporter: Any) -> None:
    result.peak_memory_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if reporter.history:
        import pandas as pd

        pd.DataFrame(reporter.history).to_csv(folder / "history.csv", index=False)
    tmp = folder / f"{RESULT_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(result.to_json(), indent=2, default=str))
    os.replace(tmp, folder / RESULT_FILE)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _release() -> None:
    import keras

    # A reused worker must not grow from trial to trial.
    keras.backend.clear_session()
    gc.collect()


__all__ = [
    "TrialResult",
    "TrialSpec",
    "configure_tensorflow",
    "read_result",
    "run_trial",
    "trial_dir",
]
