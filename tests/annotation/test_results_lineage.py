"""The results page says where each tuned model of the study came from (its lineage)."""

from __future__ import annotations

import pytest

from generation.models import FineTuneRun
from generation.registry import language_model_register
from generation.training.finetune import finetune_run_create
from tests.generation.conftest import instruction_dataset

pytestmark = pytest.mark.django_db


def test_the_results_page_shows_the_lineage_of_tuned_models(client, staff_user, make_study):
    study = make_study(models=2)
    plain, tuned = (run.model for run in study.built.runs)
    root = language_model_register(name="root-base", name_or_path="tiny-0")
    data = instruction_dataset("chat-ja", [("挨拶して", "こんにちは。"), ("数えて", "一、二。")])
    run = finetune_run_create(base_model=root, datasets=[(data, None)], enqueue=False)
    # As the worker registers a finished run's model (no training needed to test the page).
    FineTuneRun.objects.filter(pk=run.pk).update(
        status=FineTuneRun.Status.SUCCEEDED, result_model=tuned
    )

    client.force_login(staff_user)
    page = client.get(f"/studies/{study.pk}/results/").content.decode()

    assert "Where the tuned models came from" in page
    assert f"root-base -&gt; {tuned.name} (lora, run {run.pk}) on chat-ja x all" in page
    assert f"-&gt; {plain.name} (" not in page  # a model not tuned here has no lineage line


def test_no_lineage_block_when_no_model_was_tuned_here(client, staff_user, make_study):
    study = make_study(models=2)
    client.force_login(staff_user)
    page = client.get(f"/studies/{study.pk}/results/").content.decode()
    assert "Where the tuned models came from" not in page
