"""`manage.py finetune`: a mix from the command line, trained here with --inline."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from generation.models import FineTuneRun, LanguageModel
from generation.params import FULL_LEARNING_RATE
from generation.registry import language_model_register, storage_relative
from generation.training.finetune import finetune_run_cancel, finetune_run_create
from tests.generation.conftest import instruction_dataset

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture
def datasets(fixture_dataset):
    return fixture_dataset, instruction_dataset("small", [("挨拶して", "こんにちは")])


def _call(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("finetune", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_inline_trains_the_mix_and_registers_the_model(settings, tiny_model_dir, datasets):
    settings.RUN_HEARTBEAT_INTERVAL = 3600
    language_model_register(name="tiny", name_or_path=storage_relative(tiny_model_dir))
    out, _ = _call(
        "--base", "tiny",
        "--dataset", "instructions-ja", "--rows", "30",
        "--dataset", "small",
        "--max-steps", "5", "--batch-size", "2", "--grad-accum", "1", "--max-length", "96",
        "--lr", "0.01", "--model-name", "tiny-cli",
        "--inline",
    )  # fmt: skip
    assert "succeeded: 5/5 steps" in out and "model 'tiny-cli' registered" in out
    run = FineTuneRun.objects.get()
    assert sorted((s.dataset.name, s.rows) for s in run.sources.all()) == [
        ("instructions-ja", 30),
        ("small", None),
    ]
    assert (run.step, run.total_steps, run.learning_rate) == (5, 5, 0.01)
    assert run.log_entries.filter(kind="train").count() == 5
    assert LanguageModel.objects.get(name="tiny-cli").base_model.name == "tiny"


def test_no_enqueue_records_a_queued_run(datasets, base):
    out, _ = _call("--base", "base", "--dataset", "small", "--method", "full", "--no-enqueue")
    run = FineTuneRun.objects.get()
    assert out.startswith(f"fine-tune run {run.pk}: base, full")
    assert run.status == FineTuneRun.Status.QUEUED
    assert run.learning_rate == FULL_LEARNING_RATE


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--base", "nobody", "--dataset", "small"], "no model named 'nobody'"),
        (["--base", "base", "--dataset", "missing"], "no instruction data set named 'missing'"),
        (["--base", "base"], "give --base and at least one --dataset"),
        (["--base", "base", "--dataset", "small", "--rows", "5"], "has 1 rows; cannot sample 5"),
        (["--run", "999", "--inline"], "no fine-tune run 999"),
    ],
)
def test_mistakes_are_reported(datasets, base, args, message):
    with pytest.raises(CommandError, match=message):
        _call(*args)
    assert not FineTuneRun.objects.exists()


def test_rows_must_follow_a_dataset(datasets, capsys):
    with pytest.raises(CommandError, match="--rows must follow the --dataset"):
        _call("--base", "base", "--rows", "5", "--dataset", "small")


@pytest.mark.slow
def test_run_inline_trains_an_existing_cancelled_run_here(settings, tiny_model_dir, datasets):
    # The path `accelerate launch manage.py finetune --run ID --inline` takes, in one process.
    settings.RUN_HEARTBEAT_INTERVAL = 3600
    tiny = language_model_register(name="tiny", name_or_path=storage_relative(tiny_model_dir))
    run = finetune_run_create(
        base_model=tiny,
        datasets=[(datasets[1], None)],
        params={"max_steps": 3, "eval_fraction": 0},
        enqueue=False,
    )
    finetune_run_cancel(run=run)
    out, _ = _call("--run", str(run.pk), "--inline")
    assert f"fine-tune run {run.pk} succeeded" in out
    run.refresh_from_db()
    assert run.status == FineTuneRun.Status.SUCCEEDED and run.step == 3
