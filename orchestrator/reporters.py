"""Reporters: plugins that observe a run through the event hooks.

Two ship with graftune:

- the **event log** (this module, host plugin ``graftune.events``): every run
  directory gets ``events.jsonl``, one JSON object per line for
  ``run_started``, each ``trial_finished`` and ``run_finished``, so a run can
  be followed with ``tail -f`` and read back by any tool;
- the **MLflow reporter** (:class:`MLflowReporter`, the plugin ``mlflow``,
  registered through graftune's own entry points): when MLflow is installed
  (``pip install graftune[mlflow]``) and ``MLFLOW_TRACKING_URI`` is set, each
  run becomes an MLflow run with one nested run per trial.

Both run in the driver process only, and import nothing heavy at import time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.markers import hookimpl

if TYPE_CHECKING:
    import pandas as pd

    from orchestrator.recipe import Recipe
    from orchestrator.trial import TrialResult

log = logging.getLogger(__name__)

#: The event log's file name in a run directory.
EVENTS_FILE = "events.jsonl"
#: Bumped when a record changes incompatibly.
EVENTS_VERSION = 1


# -- the event log --------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, paths and other objects text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if hasattr(value, "item"):  # numpy and pandas scalars
        try:
            return _clean(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def append_event(folder: Path, event: str, **fields: Any) -> None:
    """Append one record to ``folder/events.jsonl`` (``folder`` is a run directory).

    Each record is written with a single ``write`` of one line, so a reader
    never sees half a record from a finished write. A write that did not finish
    (the disk filled, the process was killed) leaves half a line: it is cut off
    before the next record, which would otherwise be glued to it.
    """
    record = {"event": event, "time": round(time.time(), 3), "version": EVENTS_VERSION}
    record.update(fields)
    line = json.dumps(_clean(record), sort_keys=False) + "\n"
    with open(Path(folder) / EVENTS_FILE, "ab") as handle:
        _cut_a_torn_line(handle)
        handle.write(line.encode("utf-8"))


def _cut_a_torn_line(handle: Any) -> None:
    """Truncate a file open for appending after its last whole line."""
    end = handle.seek(0, os.SEEK_END)
    if end == 0:
        return
    with open(handle.name, "rb") as reader:
        reader.seek(max(0, end - 65536))
        tail = reader.read()
    if tail.endswith(b"\n"):
        return
    cut = tail.rfind(b"\n")
    if cut < 0 and end > len(tail):
        return  # one line longer than 64 KiB: not this module's
    handle.truncate(end - len(tail) + cut + 1)


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of a run's event log, in order (an empty list if there is none)."""
    path = Path(run_dir) / EVENTS_FILE
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.endswith("\n"):  # the last write did not finish: not a record
        text = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in text.splitlines() if line]


#: Run directory -> the trials whose ``trial_finished`` record the log holds, as
#: (strategy, trial id, status, finished_at), read once a run (see below).
_LOGGED: dict[str, set[tuple[Any, ...]]] = {}


def _logged(run_dir: Path) -> set[tuple[Any, ...]]:
    key = str(run_dir)
    if key not in _LOGGED:
        _LOGGED[key] = {
            _logged_as(e) for e in read_events(Path(run_dir)) if e.get("event") == "trial_finished"
        }
    return _LOGGED[key]


def _logged_as(record: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(record.get(k) for k in ("strategy", "trial_id", "status", "finished_at"))


@hookimpl
def graftune_run_started(recipe: Recipe, run_dir: Path) -> None:
    """Write the ``run_started`` record: the recipe's name, strategies and search."""
    from orchestrator import __version__
    from orchestrator.submit import recorded_source

    _LOGGED.pop(str(run_dir), None)  # read again: a resume's log holds the run's trials
    resumed = (Path(run_dir) / EVENTS_FILE).is_file()
    if resumed:
        _log_the_lost(Path(run_dir))
    append_event(
        run_dir,
        "run_started",
        recipe=recipe.name,
        run_dir=str(run_dir),
        resumed=resumed,
        seed=recipe.seed,
        data=recorded_source(recipe, run_dir),
        base=recipe.base.kind if recipe.base is not None else None,
        strategies=list(recipe.strategies),
        metric=recipe.search.metric,
        mode=recipe.search.direction,
        max_epochs=recipe.search.max_epochs,
        graftune=__version__,
    )


def _log_the_lost(run_dir: Path) -> None:
    """Write again, on a resume, the ``trial_finished`` record of each trial the run's
    hooks were told of (its ``.reported``) that the log no longer holds, from its
    ``result.json``: a record cut short (a damaged disk, a copy cut short) is cut
    off before the next, and the hooks are not told of its trial again (found by QA:
    a log of 7 trials for a leaderboard of 8)."""
    from orchestrator.run import read_reported
    from orchestrator.trial import read_result, trial_dir

    try:
        told = read_reported(run_dir)
    except OSError:
        return
    logged = {(strategy, trial_id) for strategy, trial_id, *_ in _logged(run_dir)}
    for key in sorted(told):
        strategy, _, trial_id = key.partition("/")
        if (strategy, trial_id) in logged or not trial_id:
            continue
        try:
            result = read_result(trial_dir(run_dir, strategy, trial_id))
        except (ValueError, TypeError, KeyError, AttributeError, OSError):
            continue  # damaged: the resume sets it aside and runs the trial again
        if result is None:  # (a failed Ray trial has none: nothing to log it from)
            continue
        # A trial taken back under a new id by a search started again was told of, and
        # logged, under its first one (which .reported holds beside the new).
        if {(strategy, result.first_id), (strategy, result.earlier_id)} & logged:
            continue
        graftune_trial_finished(result=result, run_dir=run_dir)
        logged.add((strategy, trial_id))


@hookimpl
def graftune_trial_finished(result: TrialResult, run_dir: Path) -> None:
    """Write a ``trial_finished`` record: the trial's result as in ``result.json``,
    once: a run killed after its hooks heard of a trial, before the host noted
    it, tells them again on ``--resume`` (found by QA: two records of one trial)."""
    record = result.to_json()
    logged = _logged(run_dir)
    if _logged_as(record) in logged:
        return
    append_event(run_dir, "trial_finished", **record)
    logged.add(_logged_as(record))


@hookimpl
def graftune_run_finished(leaderboard: pd.DataFrame, run_dir: Path) -> None:
    """Write the ``run_finished`` record: counts by status and the best trial."""
    statuses = leaderboard["status"].value_counts().to_dict() if len(leaderboard) else {}
    best = None
    finished = leaderboard[leaderboard["status"] == "ok"] if len(leaderboard) else leaderboard
    if len(finished):
        row = finished.iloc[0]
        best = {
            "strategy": row["strategy"],
            "trial_id": row["trial_id"],
            "val_accuracy": row.get("val_accuracy"),
            "test_accuracy": row.get("test_accuracy"),
        }
    append_event(run_dir, "run_finished", trials=len(leaderboard), statuses=statuses, best=best)
    _LOGGED.pop(str(run_dir), None)


# -- MLflow ------------------------------------------------------------------------


#: Leaderboard and result fields logged as MLflow metrics.
_METRICS = (
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "test_loss",
    "epochs",
    "fit_seconds",
    "params_total",
    "params_trainable",
    "peak_memory_mb",
)
#: A trial's status -> the MLflow run status it ends with.
_MLFLOW_STATUS = {"ok": "FINISHED", "pruned": "KILLED", "diverged": "FAILED", "error": "FAILED"}


#: MLflow's request settings while the reporter talks to the tracking server,
#: unless the user set them: MLflow's own defaults (7 retries, backoff factor 2,
#: 120 s timeout) hold a run up about 4 minutes when the server is down.
FAIL_FAST_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # Found by QA: MLflow printed "View run at ..." to stdout for each trial of a
    # tracking server, through -q and over the live view.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


@contextlib.contextmanager
def _fail_fast(*, partly: bool = False) -> Iterator[None]:
    """MLflow requests that give up within seconds, without urllib3's retry warnings.

    MLflow reads its ``MLFLOW_HTTP_REQUEST_*`` variables on every request, so
    they are set here for the reporter's calls only (a value the user set is
    kept) and put back after. urllib3 logs each retry as a warning, which
    would reach the console even with ``-q``; the single warning the host
    prints when the hook raises says what went wrong. MLflow's own INFO lines
    (a SQLite store's "Creating initial MLflow database tables...") went
    through ``-q`` and over the live view too: its logger says warnings only
    here, unless the user set ``MLFLOW_LOGGING_LEVEL``.
    """
    import mlflow  # noqa: F401  (its import gives its logger the level changed below)

    added = [name for name in FAIL_FAST_SETTINGS if name not in os.environ]
    for name in added:
        os.environ[name] = FAIL_FAST_SETTINGS[name]
    quieted = {"urllib3.connectionpool": logging.ERROR}
    if not os.environ.get("MLFLOW_LOGGING_LEVEL"):
        quieted["mlflow"] = logging.WARNING
    levels = {name: logging.getLogger(name).level for name in quieted}
    for name, level in quieted.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    except Exception as exc:
        # Said in a line (found by QA: urllib3's chain of exceptions, whole; a URI of
        # no store MLflow knows was said as its model registry's, which graftune
        # does not use), with what is left unlogged: the rest of a run that was
        # partly logged (its MLflow runs stay RUNNING there).
        from orchestrator.errors import without_credentials

        uri = without_credentials(os.environ.get("MLFLOW_TRACKING_URI", ""))
        left = (
            "the rest of this run is not logged to it" if partly else "this run is not logged to it"
        )
        unreachable = _unreachable(exc)
        if unreachable is not None:
            said = f"MLflow's tracking server at {uri} cannot be reached ({unreachable})"
        elif "Model registry functionality is unavailable" in str(exc):
            scheme = uri.partition(":")[0]
            said = f"MLFLOW_TRACKING_URI {uri} is of no store MLflow knows (scheme {scheme!r})"
        else:
            first = whole_sentences((str(exc).strip().splitlines() or [""])[0], 300)
            said = f"MLflow cannot log to MLFLOW_TRACKING_URI {uri}: {type(exc).__name__}: {first}"
        raise RuntimeError(f"{said}: {left}") from exc
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for name in added:
            os.environ.pop(name, None)


#: What urllib3 and requests say of a server that cannot be reached.
_UNREACHABLE = (
    "Max retries exceeded",
    "Failed to establish a new connection",
    "Connection refused",
    "Name or service not known",
    "Read timed out",
    "Connection aborted",
)


def whole_sentences(text: str, limit: int) -> str:
    """``text`` cut to its sentences that fit in ``limit`` characters, or to ``limit``
    with an ellipsis where the first does not: MLflow's refusal of a ``file:`` store
    was cut in the middle of its link, "See htt" (found by QA)."""
    if len(text) <= limit:
        return text
    end = text.rfind(". ", 0, limit)
    return text[: end + 1] if end > 0 else text[: limit - 1] + "…"


def _unreachable(exc: BaseException) -> str | None:
    """The reason in a few words where ``exc`` says the server cannot be reached,
    else ``None``."""
    import re

    text = str(exc)
    if not any(marker in text for marker in _UNREACHABLE):
        return None
    reason = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    if reason is not None:
        return reason.group(0).strip()
    return "timed out" if "timed out" in text else "no connection"


def mlflow_available() -> bool:
    """Whether the ``mlflow`` package can be imported."""
    import importlib.util

    return importlib.util.find_spec("mlflow") is not None


class MLflowReporter:
    """Logs each graftune run to MLflow: one parent run, one nested run per trial.

    Active only when MLflow is importable and ``MLFLOW_TRACKING_URI`` is set
    (graftune never sends anything anywhere unless asked). The experiment is
    ``MLFLOW_EXPERIMENT_NAME`` or else the recipe's name. The parent run holds
    the recipe's settings as parameters, ``recipe.yaml`` and the leaderboard
    files as artifacts and the best scores as metrics; each trial's run holds
    its configuration as parameters, its scores and cost as metrics, its
    per-epoch history as metric steps and its status as a tag.

    Runs are tracked by run directory, so one reporter serves runs one after
    another. When the tracking server cannot be used, the first event of a run
    raises (the host reports it as a warning naming this plugin) and the rest
    of that run is not logged. Requests give up within seconds unless the
    user set MLflow's own ``MLFLOW_HTTP_REQUEST_*`` variables
    (:data:`FAIL_FAST_SETTINGS`).
    """

    def __init__(self) -> None:
        #: run_dir -> (client, parent run id), or None once logging failed for that run.
        self._runs: dict[str, tuple[Any, str] | None] = {}
        #: The runs that go on in an MLflow run they had (resumed).
        self._resumed: set[str] = set()

    @contextlib.contextmanager
    def _logging(self, run_dir: Path) -> Iterator[None]:
        """Fail fast, and give up on the run once anything fails: one warning a run
        (found by QA: a server that went down midway warned once a trial)."""
        key = str(run_dir)
        try:
            with _fail_fast(partly=self._runs.get(key) is not None):
                yield
        except Exception:
            self._runs[key] = None
            raise

    @staticmethod
    def enabled() -> bool:
        """Whether this reporter logs anything: MLflow installed and a tracking URI set."""
        return bool(os.environ.get("MLFLOW_TRACKING_URI")) and mlflow_available()

    def _start(self, run_dir: Path, recipe: Recipe | None) -> tuple[Any, str] | None:
        key = str(run_dir)
        if key in self._runs:
            return self._runs[key]
        self._runs[key] = None  # stays None if anything below raises
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or (
            recipe.name if recipe is not None else "graftune"
        )
        experiment = client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id if experiment is not None else client.create_experiment(name)
        )
        tags = {"graftune.run_dir": key, "graftune.kind": "run"}
        # A resumed run goes on in the MLflow run it had (left RUNNING when killed).
        try:
            found = client.search_runs(
                [experiment_id],
                filter_string=(
                    f"tags.`graftune.run_dir` = '{key}' and tags.`graftune.kind` = 'run'"
                ),
                max_results=1,
            )
        except Exception:  # a folder name the filter cannot quote: a new MLflow run then
            found = []
        if found:
            self._runs[key] = (client, found[0].info.run_id)
            self._resumed.add(key)
            return self._runs[key]
        run = client.create_run(experiment_id, run_name=Path(run_dir).name, tags=tags)
        run_id = run.info.run_id
        if recipe is not None:
            from orchestrator.submit import recorded_source

            params = {
                "recipe": recipe.name,
                "seed": recipe.seed,
                "data": recorded_source(recipe, run_dir),
                "base": recipe.base.kind if recipe.base is not None else "",
                "strategies": ",".join(recipe.strategies),
                "metric": recipe.search.metric,
                "max_epochs": recipe.search.max_epochs,
                # Found by QA: runs of other searches were alike in their parameters.
                "backend": recipe.search.backend,
                "algorithm": recipe.search.algorithm,
                "scheduler": recipe.search.scheduler,
                "num_samples": recipe.search.num_samples,
                "batch_size": recipe.search.batch_size,
            }
            _log(client, run_id, params=params)
            recipe_file = Path(run_dir) / "recipe.yaml"
            if recipe_file.is_file():
                client.log_artifact(run_id, str(recipe_file))
        self._runs[key] = (client, run_id)
        return self._runs[key]

    @hookimpl
    def graftune_run_started(self, recipe: Recipe, run_dir: Path) -> None:
        """Create the MLflow run of this graftune run."""
        if self.enabled():
            self._runs.pop(str(run_dir), None)  # a resume in this process: looked up again
            self._resumed.discard(str(run_dir))
            with self._logging(run_dir):
                self._start(run_dir, recipe)
        elif os.environ.get("MLFLOW_TRACKING_URI"):  # asked for, and nothing would be logged
            log.warning(
                "MLFLOW_TRACKING_URI is set, but MLflow is not installed: this run is not "
                'logged to it (pip install "graftune[mlflow]")'
            )

    @hookimpl
    def graftune_trial_finished(self, result: TrialResult, run_dir: Path) -> None:
        """Log one trial as a nested MLflow run."""
        if self.enabled():
            with self._logging(run_dir):
                self._log_trial(result, run_dir)

    def _log_trial(self, result: TrialResult, run_dir: Path) -> None:
        started = self._start(run_dir, None)
        if started is None:
            return
        client, parent = started
        experiment_id = client.get_run(parent).info.experiment_id
        if str(run_dir) in self._resumed and self._logged_before(
            client, experiment_id, parent, result
        ):
            return
        run = client.create_run(
            experiment_id,
            run_name=f"{result.strategy}/{result.trial_id}",
            tags={
                "mlflow.parentRunId": parent,
                "graftune.kind": "trial",
                "graftune.strategy": result.strategy,
                "graftune.trial_id": result.trial_id,
                "graftune.status": result.status,
                **({"graftune.error": result.error[:5000]} if result.error else {}),
            },
        )
        run_id = run.info.run_id
        metrics = {k: getattr(result, k) for k in _METRICS}
        _log(
            client,
            run_id,
            params={"strategy": result.strategy, **result.config},
            metrics=metrics,
            history=_history(Path(run_dir), result),
        )
        client.set_terminated(run_id, status=_MLFLOW_STATUS.get(result.status, "FAILED"))

    @staticmethod
    def _logged_before(client: Any, experiment_id: str, parent: str, result: TrialResult) -> bool:
        """Whether a resumed run's MLflow run holds this trial already: a run killed
        after its hooks heard of a trial, before the host noted it, tells them again
        (found by QA: a second nested run). One left RUNNING, its logging cut short
        by the kill, is replaced."""
        try:
            found = client.search_runs(
                [experiment_id],
                filter_string=(
                    f"tags.`mlflow.parentRunId` = '{parent}' and "
                    f"tags.`graftune.strategy` = '{result.strategy}' and "
                    f"tags.`graftune.trial_id` = '{result.trial_id}'"
                ),
            )
        except Exception:  # a name the filter cannot quote: logged (again), as before
            return False
        for run in found:
            if (
                run.info.status != "RUNNING"
                and run.data.tags.get("graftune.status") == result.status
            ):
                return True
        for run in found:
            if run.info.status == "RUNNING":
                client.delete_run(run.info.run_id)
        return False

    # After the other hooks (the event log's run_finished record among them): the
    # artifacts are what they wrote (found by QA: events.jsonl without its last line).
    @hookimpl(trylast=True)
    def graftune_run_finished(self, leaderboard: pd.DataFrame, run_dir: Path) -> None:
        """Log the leaderboard and the best scores, and end the MLflow run."""
        if self.enabled():
            try:
                with self._logging(run_dir):
                    self._log_run_end(leaderboard, run_dir)
            finally:
                self._runs.pop(str(run_dir), None)
                self._resumed.discard(str(run_dir))

    def _log_run_end(self, leaderboard: pd.DataFrame, run_dir: Path) -> None:
        started = self._start(run_dir, None)
        if started is None:
            return
        client, parent = started
        finished = leaderboard[leaderboard["status"] == "ok"]
        metrics: dict[str, Any] = {"trials": len(leaderboard), "trials_ok": len(finished)}
        tags = {}
        if len(finished):
            best = finished.iloc[0]
            for column in ("val_accuracy", "test_accuracy", "val_loss", "test_loss"):
                metrics[f"best_{column}"] = best.get(column)
            tags = {"graftune.best_strategy": str(best["strategy"])}
            tags["graftune.best_trial_id"] = str(best["trial_id"])
        _log(client, parent, metrics=metrics, tags=tags)
        for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.html", EVENTS_FILE):
            path = Path(run_dir) / name
            if path.is_file():
                client.log_artifact(parent, str(path))
        client.set_terminated(parent, status="FINISHED" if len(finished) else "FAILED")


def _history(run_dir: Path, result: TrialResult) -> list[dict[str, float]]:
    """The per-epoch metrics the trial wrote to ``history.csv``, if any."""
    import csv

    from orchestrator.trial import trial_dir

    path = trial_dir(run_dir, result.strategy, result.trial_id) / "history.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(handle)
        ]


def _log(
    client: Any,
    run_id: str,
    *,
    params: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    history: list[dict[str, float]] = (),  # type: ignore[assignment]
) -> None:
    """One ``log_batch`` call: parameters, final metrics, per-epoch steps and tags."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    metric_list = []
    for row in history:
        step = int(row.get("epoch", 0))
        for key, value in row.items():
            if key != "epoch" and math.isfinite(value):
                metric_list.append(Metric(f"epoch_{key}", value, now, step))
    for key, value in (metrics or {}).items():
        value = _clean(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metric_list.append(Metric(key, float(value), now, 0))
    client.log_batch(
        run_id,
        metrics=metric_list,
        params=[Param(str(k), str(_clean(v))[:6000]) for k, v in (params or {}).items()],
        tags=[RunTag(k, v) for k, v in (tags or {}).items()],
    )


#: The plugin object graftune's entry point ``mlflow`` names.
mlflow_reporter = MLflowReporter()
