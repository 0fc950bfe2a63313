"""Fine-tune runs report their loss to the experiment tracker a setting names, through
transformers' own integrations, each tracker run named and tagged with the app's run id; read
back offline with each tracker's library (TensorBoard event files, MLflow's file store, a W&B
offline run). The tiny model trains three steps per run."""

from __future__ import annotations

import os

import pytest
from django.core.management import call_command

from evalsite import trackers
from evalsite.errors import ServiceError
from generation.models import FineTuneLog, FineTuneRun
from generation.training.finetune import (
    UNKNOWN_TRACKER,
    finetune_run_create,
    finetune_run_execute,
    finetune_run_report,
)
from tests.tracker_stores import (
    mlflow_history,
    mlflow_runs,
    tensorboard_scalars,
    tensorboard_texts,
    wandb_offline_run,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("one_torch_thread")]

SHORT = {
    "max_steps": 3,
    "batch_size": 4,
    "gradient_accumulation": 1,
    "max_length": 64,
    "eval_fraction": 0.0,
    "learning_rate": 1e-2,
}


@pytest.fixture
def tracked(settings, tmp_path):
    """Every tracker's store in this test's folder; W&B offline; the site's tracker none."""
    settings.EXPERIMENT_TRACKER = "none"
    settings.TENSORBOARD_LOG_DIR = tmp_path / "tensorboard"
    settings.MLFLOW_TRACKING_URI = (tmp_path / "mlruns").as_uri()
    settings.MLFLOW_EXPERIMENT_NAME = "finetunes"
    settings.WANDB_DIR = tmp_path / "wandb-root"
    settings.WANDB_MODE = "offline"
    settings.WANDB_PROJECT = "evalsite-tests"
    settings.RUN_HEARTBEAT_INTERVAL = 3600  # short runs: no heartbeat thread writing meanwhile
    return settings


def _train(tiny, dataset, **kwargs) -> tuple[FineTuneRun, dict[int, float]]:
    run = finetune_run_create(
        base_model=tiny, datasets=[(dataset, 12)], params=SHORT, enqueue=False, **kwargs
    )
    run = finetune_run_execute(run_id=run.pk)
    assert run.status == FineTuneRun.Status.SUCCEEDED, run.error
    losses = dict(FineTuneLog.objects.filter(run=run, kind="train").values_list("step", "loss"))
    assert sorted(losses) == [1, 2, 3]
    return run, losses


# --- the setting --------------------------------------------------------------------------------


def test_none_is_the_default_and_a_run_may_choose_another(tracked, base, fixture_dataset):
    run = finetune_run_create(base_model=base, datasets=[(fixture_dataset, 4)], enqueue=False)
    assert run.report_to == ""
    assert finetune_run_report(run) == trackers.NO_REPORT
    tracked.EXPERIMENT_TRACKER = "mlflow"
    report = finetune_run_report(run)
    assert report.report_to == ["mlflow"] and report.run_name == f"finetune-run-{run.pk}"
    assert report.environment["MLFLOW_EXPERIMENT_NAME"] == "finetunes"
    chosen = finetune_run_create(
        base_model=base, datasets=[(fixture_dataset, 4)], report_to="none", enqueue=False
    )
    assert finetune_run_report(chosen) == trackers.NO_REPORT
    with pytest.raises(ServiceError, match="unknown experiment tracker 'neptune'"):
        finetune_run_create(
            base_model=base, datasets=[(fixture_dataset, 4)], report_to="neptune", enqueue=False
        )
    assert UNKNOWN_TRACKER.startswith("unknown experiment tracker")


def test_the_command_and_the_api_take_a_runs_tracker(tracked, client, staff_user, base):
    from tests.generation.conftest import instruction_dataset

    dataset = instruction_dataset("trk", [("質問です", "答えです")] * 4)
    call_command(
        "finetune", "--base", base.name, "--dataset", dataset.name, "--report-to", "wandb",
        "--no-enqueue",
    )  # fmt: skip
    assert FineTuneRun.objects.get().report_to == "wandb"
    client.force_login(staff_user)
    made = client.post(
        "/api/finetune-runs/",
        {"base_model": base.pk, "datasets": [{"dataset": dataset.pk}], "report_to": "mlflow"},
        content_type="application/json",
    )
    assert made.status_code == 201, made.content
    assert made.json()["report_to"] == "mlflow"
    refused = client.post(
        "/api/finetune-runs/",
        {"base_model": base.pk, "datasets": [{"dataset": dataset.pk}], "report_to": "comet"},
        content_type="application/json",
    )
    assert refused.status_code == 400 and "report_to" in refused.json()


# --- the loss in each tracker (trains) ------------------------------------------------------


@pytest.mark.slow
def test_a_runs_loss_lands_in_tensorboard_event_files(tracked, tmp_path, tiny, fixture_dataset):
    run, losses = _train(tiny, fixture_dataset, report_to="tensorboard")
    folder = tmp_path / "tensorboard" / f"finetune-run-{run.pk}"
    scalars = tensorboard_scalars(folder)
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3]
    for step, value in scalars["train/loss"]:
        assert value == pytest.approx(losses[step], rel=1e-5)
    # The run's name (its app id) is in the arguments TensorBoardCallback records.
    assert f'"run_name": "finetune-run-{run.pk}"' in tensorboard_texts(folder)["args"]
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ  # put back after training


@pytest.mark.slow
def test_a_runs_loss_lands_in_mlflows_file_store(tracked, tiny, fixture_dataset):
    tracked.EXPERIMENT_TRACKER = "mlflow"  # the site's setting; the run names none
    run, losses = _train(tiny, fixture_dataset)
    uri = tracked.MLFLOW_TRACKING_URI
    found = mlflow_runs(uri, "finetunes", app_run=f"finetune-run-{run.pk}")
    assert len(found) == 1
    logged = found[0]
    assert logged.info.run_name == f"finetune-run-{run.pk}"
    assert logged.info.status == "FINISHED"
    assert logged.data.tags["finetune_run"] == str(run.pk)
    assert logged.data.tags["base_model"] == "tiny"
    history = mlflow_history(uri, logged.info.run_id, "loss")
    assert [step for step, _ in history] == [1, 2, 3]
    for step, value in history:
        assert value == pytest.approx(losses[step], rel=1e-5)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    # The next run is a run of its own, not a continuation of this one.
    again, _ = _train(tiny, fixture_dataset)
    assert len(mlflow_runs(uri, "finetunes", app_run=f"finetune-run-{again.pk}")) == 1
    assert len(mlflow_runs(uri, "finetunes", app="evalsite")) == 2


@pytest.mark.slow
def test_a_runs_loss_lands_in_a_wandb_offline_run(tracked, tmp_path, tiny, fixture_dataset):
    import wandb

    # This process already has a W&B session, started before the run's variables were set (as
    # a results export or an earlier run leaves one): W&B ignores variables set after its
    # session starts, so the run would go online and ask for a login unless it starts anew.
    assert "WANDB_MODE" not in os.environ
    wandb.setup()
    run, losses = _train(tiny, fixture_dataset, report_to="wandb")
    logged, history = wandb_offline_run(tmp_path / "wandb-root")
    assert logged.display_name == f"finetune-run-{run.pk}"
    assert logged.project == "evalsite-tests"
    assert f"app_run:finetune-run-{run.pk}" in logged.tags
    steps = {row["train/global_step"]: row["train/loss"] for row in history if "train/loss" in row}
    assert sorted(steps) == [1, 2, 3]
    for step, value in steps.items():
        assert value == pytest.approx(losses[step], rel=1e-5)
    assert wandb.run is None  # finished after training: the worker's next run starts its own
