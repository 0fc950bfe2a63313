"""Experiment trackers: where fine-tune losses and study or benchmark results go besides this
app (TensorBoard event files, an MLflow tracking store, a Weights & Biases run).

Plain module, no Django: the caller passes a ``Tracker`` (``tracker_from(settings)`` reads the
Django settings object it is handed). Two paths, each through the tracker's own library:

- training: ``training_report`` gives what transformers' ``TrainingArguments`` take
  (``report_to``, ``run_name``) and the environment its integrations read
  (``TensorBoardCallback``, ``WandbCallback``, ``MLflowCallback``); ``training_session`` sets
  that environment around a trainer's life and closes any run a failed training left open.
- results: ``log_report`` writes one ``Report`` (parameters, scalar metrics, tables) as one run,
  with TensorBoard's ``SummaryWriter``, the MLflow client or ``wandb.init``.

Every run is named and tagged with the app's own id (``finetune-run-12``, ``study-3``), so the
tracker's run leads back to the run or study it came from.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

NONE, TENSORBOARD, WANDB, MLFLOW = "none", "tensorboard", "wandb", "mlflow"
TRACKERS = (NONE, TENSORBOARD, WANDB, MLFLOW)
WANDB_MODES = ("offline", "online", "disabled")
# The import each tracker needs, and the package that brings it.
MODULES = {TENSORBOARD: "tensorboard", WANDB: "wandb", MLFLOW: "mlflow"}
PACKAGES = {TENSORBOARD: "tensorboard", WANDB: "wandb", MLFLOW: "mlflow-skinny"}

UNKNOWN_TRACKER = "unknown experiment tracker {value!r}; use one of: " + ", ".join(TRACKERS)
UNKNOWN_WANDB_MODE = "unknown W&B mode {value!r}; use one of: " + ", ".join(WANDB_MODES)
NOT_INSTALLED = (
    "experiment tracker {kind!r} needs the {package} package, which is not installed here: "
    "pip install 'pairwise-eval[trackers]'"
)
NO_TRACKER = (
    "no experiment tracker is set: set EXPERIMENT_TRACKER to tensorboard, wandb or mlflow "
    "(docs/training.md, Experiment trackers)"
)
# What one part of a metric name may hold in every tracker: MLflow allows the least (letters
# and digits of any script, ``_ - . space :``, and ``/`` between parts); anything else, a "/"
# inside a model's name included, becomes "_", so a name is always ``<what>/<whose>``.
_KEY_UNSAFE = re.compile(r"[^\w\-. :]")
# W&B keeps tags of up to 64 characters.
TAG_LIMIT = 64


@dataclass(frozen=True)
class Tracker:
    """Which tracker, and where each one writes (only the chosen one's fields are used)."""

    kind: str = NONE
    tensorboard_dir: str = "runs"  # one sub-folder per run (its name)
    mlflow_tracking_uri: str = ""  # "file:///..." (a file store), "http://..." (a server)
    mlflow_experiment: str = "evalsite"
    wandb_project: str = "evalsite"
    wandb_entity: str = ""
    wandb_mode: str = "offline"  # offline: runs stay in wandb_dir until `wandb sync`
    wandb_dir: str = ""  # W&B writes its wandb/ folder here

    def __post_init__(self) -> None:
        if self.kind not in TRACKERS:
            raise ValueError(UNKNOWN_TRACKER.format(value=self.kind))
        if self.wandb_mode not in WANDB_MODES:
            raise ValueError(UNKNOWN_WANDB_MODE.format(value=self.wandb_mode))

    @property
    def enabled(self) -> bool:
        return self.kind != NONE

    def using(self, kind: str | None) -> Tracker:
        """The same locations with another tracker (``kind`` None or "": this one)."""
        if not kind or kind == self.kind:
            return self
        return replace(self, kind=kind)


def tracker_from(settings, kind: str | None = None) -> Tracker:
    """The tracker a settings object names (Django's, or anything with the same attributes);
    ``kind`` chooses another one at the same locations."""
    found = Tracker(
        kind=getattr(settings, "EXPERIMENT_TRACKER", NONE) or NONE,
        tensorboard_dir=str(getattr(settings, "TENSORBOARD_LOG_DIR", "runs")),
        mlflow_tracking_uri=str(getattr(settings, "MLFLOW_TRACKING_URI", "")),
        mlflow_experiment=getattr(settings, "MLFLOW_EXPERIMENT_NAME", "evalsite"),
        wandb_project=getattr(settings, "WANDB_PROJECT", "evalsite"),
        wandb_entity=getattr(settings, "WANDB_ENTITY", ""),
        wandb_mode=getattr(settings, "WANDB_MODE", "offline"),
        wandb_dir=str(getattr(settings, "WANDB_DIR", "")),
    )
    return found.using(kind)


def unavailable(kind: str) -> str | None:
    """Why ``kind`` cannot be used in this process (None when it can, and for "none")."""
    if kind not in TRACKERS:
        return UNKNOWN_TRACKER.format(value=kind)
    module = MODULES.get(kind)
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return NOT_INSTALLED.format(kind=kind, package=PACKAGES[kind])


def metric_key(*parts: str) -> str:
    """One metric name from its parts ("strength", a model name), safe in every tracker."""
    return "/".join(_KEY_UNSAFE.sub("_", str(part)) for part in parts)


def _tag_text(text: str) -> str:
    return str(text)[:TAG_LIMIT]


# --- training ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingReport:
    """What a trainer is given: ``report_to`` and ``run_name`` for its arguments, and the
    environment transformers' integrations read when the trainer makes them."""

    report_to: list[str]
    run_name: str | None
    environment: dict[str, str] = field(default_factory=dict)


NO_REPORT = TrainingReport(report_to=["none"], run_name=None)


def training_report(tracker: Tracker, *, run_name: str, tags: Mapping[str, str]) -> TrainingReport:
    """``tracker``'s part of a fine-tune: ``report_to``, the run's name and its tags (the app's
    run id), and where the integration writes. ValueError when its library is missing."""
    if not tracker.enabled:
        return NO_REPORT
    problem = unavailable(tracker.kind)
    if problem:
        raise ValueError(problem)
    env: dict[str, str] = {}
    if tracker.kind == TENSORBOARD:
        # TensorBoardCallback writes to this folder (read when the trainer makes it).
        env["TENSORBOARD_LOGGING_DIR"] = str(Path(tracker.tensorboard_dir) / run_name)
    elif tracker.kind == MLFLOW:
        env.update(_mlflow_environment(tracker))
        env["MLFLOW_EXPERIMENT_NAME"] = tracker.mlflow_experiment
        env["MLFLOW_TAGS"] = json.dumps(dict(tags))
        # Every argument as its own parameter (nested ones would be cut at MLflow's limit).
        env["MLFLOW_FLATTEN_PARAMS"] = "true"
    elif tracker.kind == WANDB:
        env["WANDB_PROJECT"] = tracker.wandb_project
        env["WANDB_MODE"] = tracker.wandb_mode
        # W&B reads the variable as a comma-separated list: a comma inside a tag would split it.
        env["WANDB_TAGS"] = ",".join(
            _tag_text(f"{k}:{v}".replace(",", " ")) for k, v in tags.items()
        )
        env["WANDB_JOB_TYPE"] = "finetune"
        # A worker's log is no place for W&B's banner or a copy of its console.
        env["WANDB_SILENT"] = "true"
        env["WANDB_CONSOLE"] = "off"
        if tracker.wandb_entity:
            env["WANDB_ENTITY"] = tracker.wandb_entity
        if tracker.wandb_dir:
            Path(tracker.wandb_dir).mkdir(parents=True, exist_ok=True)
            env["WANDB_DIR"] = tracker.wandb_dir
    return TrainingReport(report_to=[tracker.kind], run_name=run_name, environment=env)


def _mlflow_environment(tracker: Tracker) -> dict[str, str]:
    env = {}
    if tracker.mlflow_tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracker.mlflow_tracking_uri
    if is_file_store(tracker.mlflow_tracking_uri):
        # MLflow 3 keeps its file store (plain files, nothing to run) behind this switch.
        env["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return env


def is_file_store(uri: str) -> bool:
    """Whether an MLflow tracking URI is a folder of plain files ("file:..." or a path)."""
    return "://" not in uri or uri.startswith("file:")


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` set in ``os.environ`` for the block, the earlier values restored after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def training_session(report: TrainingReport) -> Iterator[None]:
    """Run a trainer (make it inside: its integrations read the environment then) with the
    report's environment; restored afterwards. A run the integration left open (W&B keeps its
    run to the end of the process, MLflow's stays active after a failure) is closed here, so
    the worker's next fine-tune starts a run of its own."""
    if WANDB in report.report_to and "wandb" in sys.modules:
        # W&B reads its variables once per process, when its session starts, and ignores later
        # changes: a process that had already used W&B (a results export, an earlier run with
        # other settings) would train online, asking for a login. A new session reads them.
        sys.modules["wandb"].teardown()
    with environment(report.environment):
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            _close_open_runs(report, failed)


def _close_open_runs(report: TrainingReport, failed: bool) -> None:
    if MLFLOW in report.report_to and "mlflow" in sys.modules:
        mlflow = sys.modules["mlflow"]
        if mlflow.active_run() is not None:
            mlflow.end_run(status="FAILED" if failed else "FINISHED")
    if WANDB in report.report_to and "wandb" in sys.modules:
        wandb = sys.modules["wandb"]
        if wandb.run is not None:
            wandb.run.finish(exit_code=1 if failed else 0)


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list]

    def markdown(self) -> str:
        from .exports import markdown_table

        return markdown_table(self.columns, [[_cell(v) for v in row] for row in self.rows])

    def csv(self) -> str:
        from .exports import csv_text

        return csv_text(self.columns, self.rows)


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Report:
    """One set of results as one tracker run: its name and tags (the app's ids), parameters
    (how the figures were made), scalar metrics (``metric_key`` names) and tables."""

    name: str
    tags: dict[str, str]
    params: dict[str, object]
    metrics: dict[str, float]
    tables: dict[str, Table] = field(default_factory=dict)


@dataclass(frozen=True)
class Logged:
    tracker: str
    run: str  # the tracker's run: TensorBoard's folder, MLflow's run id, W&B's run id
    where: str  # where to look: the folder, or the tracking URI


def log_report(tracker: Tracker, report: Report) -> Logged:
    """Write ``report`` as one run of ``tracker`` (ValueError: none chosen, or not installed)."""
    if not tracker.enabled:
        raise ValueError(NO_TRACKER)
    problem = unavailable(tracker.kind)
    if problem:
        raise ValueError(problem)
    writer = {TENSORBOARD: _tensorboard, MLFLOW: _mlflow, WANDB: _wandb}[tracker.kind]
    return writer(tracker, report)


def _tensorboard(tracker: Tracker, report: Report) -> Logged:
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(tracker.tensorboard_dir) / report.name
    writer = SummaryWriter(log_dir=str(folder))
    try:
        for key, value in report.metrics.items():
            writer.add_scalar(key, value, 0)
        writer.add_text("tags", _text_table(report.tags), 0)
        writer.add_text("params", _text_table(report.params), 0)
        for name, table in report.tables.items():
            writer.add_text(name, table.markdown(), 0)
    finally:
        writer.close()
    return Logged(TENSORBOARD, report.name, str(folder))


def _text_table(values: Mapping[str, object]) -> str:
    return Table(["name", "value"], [[k, v] for k, v in values.items()]).markdown()


def _mlflow(tracker: Tracker, report: Report) -> Logged:
    from mlflow.tracking import MlflowClient

    with environment(_mlflow_environment(tracker)):
        return _mlflow_log(
            MlflowClient(tracking_uri=tracker.mlflow_tracking_uri or None), tracker, report
        )


def _mlflow_log(client, tracker: Tracker, report: Report) -> Logged:
    from mlflow.entities import Metric, Param

    experiment = client.get_experiment_by_name(tracker.mlflow_experiment)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(tracker.mlflow_experiment)
    )
    run = client.create_run(experiment_id, run_name=report.name, tags=dict(report.tags))
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in report.metrics.items()]
        params = [Param(k, _param_text(v)) for k, v in report.params.items()]
        # MLflow takes at most 1000 metrics and 100 parameters a call.
        for start in range(0, max(len(metrics), len(params)), 100):
            client.log_batch(
                run_id, metrics=metrics[start : start + 100], params=params[start : start + 100]
            )
        for name, table in report.tables.items():
            client.log_text(run_id, table.csv(), f"{name}.csv")
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return Logged(MLFLOW, run_id, client.tracking_uri)


def _param_text(value: object) -> str:
    return "" if value is None else str(value)[:6000]


def _wandb(tracker: Tracker, report: Report) -> Logged:
    import wandb

    if tracker.wandb_dir:
        Path(tracker.wandb_dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=tracker.wandb_project,
        entity=tracker.wandb_entity or None,
        mode=tracker.wandb_mode,
        dir=tracker.wandb_dir or None,
        name=report.name,
        tags=[_tag_text(f"{k}:{v}") for k, v in report.tags.items()],
        job_type="results",
        config=dict(report.params),
        settings=wandb.Settings(silent=True, console="off"),
        reinit="create_new",
    )
    try:
        logged: dict[str, object] = dict(report.metrics)
        for name, table in report.tables.items():
            logged[name] = wandb.Table(columns=list(table.columns), data=_table_rows(table))
        run.log(logged, step=0)
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()
    where = run.settings.sync_dir if tracker.wandb_mode == "offline" else (run.url or "")
    return Logged(WANDB, run.id, str(where))


def _table_rows(table: Table) -> list[list]:
    # W&B infers a column's type from its cells: None stays None, the rest as given.
    return [list(row) for row in table.rows]


def numbers(values: Sequence[tuple[str, float | int | None]]) -> dict[str, float]:
    """Metrics from (name, value) pairs, leaving out the missing ones (a tracker stores only
    numbers: an interval the fit did not make is simply not logged)."""
    return {name: float(value) for name, value in values if value is not None}
