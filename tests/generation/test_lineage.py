"""A model's lineage: base, method, data with rows, preference pairs and their study, through
several generations (a model tuned from a tuned model lists both)."""

from __future__ import annotations

import pytest

from generation.lineage import lineage_text, model_lineage
from generation.models import FineTuneRun
from generation.registry import language_model_register
from generation.training.finetune import finetune_run_create
from generation.training.preferences import preference_dataset_create
from tests.generation.conftest import instruction_dataset

pytestmark = pytest.mark.django_db


def _finished(run: FineTuneRun, name: str, *, adapter: bool):
    """Register a run's result the way the worker does (no training needed to test lineage)."""
    base = run.base_model
    model = language_model_register(
        name=name,
        name_or_path=base.name_or_path if adapter else f"finetune/{name}",
        base_model=base if adapter else None,
        adapter_path=f"finetune/{name}/adapter" if adapter else "",
    )
    FineTuneRun.objects.filter(pk=run.pk).update(
        status=FineTuneRun.Status.SUCCEEDED, result_model=model
    )
    return model


def test_a_base_model_is_its_own_lineage(base):
    assert model_lineage(base) == {
        "model": "base",
        "base_model": "base",
        "parent": None,
        "method": "",
        "finetune_run_id": None,
        "datasets": [],
        "preferences": None,
        "generations": [],
    }
    assert lineage_text(model_lineage(base)) == ""


def test_two_generations_sft_then_dpo_from_votes(base):
    data = instruction_dataset(
        "chat-ja", [("挨拶して", "こんにちは。"), ("数えて", "一、二、三。")]
    )
    sft = finetune_run_create(base_model=base, datasets=[(data, 1)], method="full", enqueue=False)
    sft_model = _finished(sft, "base-sft", adapter=False)
    prefs = preference_dataset_create(
        name="votes-1",
        pairs=[{"prompt": "問い", "chosen": "丁寧な答え", "rejected": "雑な答え"}],
        source_study_id=41,
        source_study_name="spring-study",
        rendered_for="base-sft",
    )
    dpo = finetune_run_create(base_model=sft_model, method="dpo", preferences=prefs, enqueue=False)
    dpo_model = _finished(dpo, "base-sft-dpo", adapter=True)

    lineage = model_lineage(dpo_model)
    assert lineage["base_model"] == "base"
    assert lineage["parent"] == "base-sft"
    assert (lineage["method"], lineage["finetune_run_id"]) == ("dpo", dpo.pk)
    assert lineage["preferences"] == {
        "name": "votes-1",
        "pairs": 1,
        "study_id": 41,
        "study_name": "spring-study",
        "rendered_for": "base-sft",
    }
    first, second = lineage["generations"]
    assert (first["base"], first["model"], first["method"]) == ("base", "base-sft", "full")
    assert first["datasets"] == [{"name": "chat-ja", "rows": 1}]
    assert (second["base"], second["model"]) == ("base-sft", "base-sft-dpo")
    assert lineage_text(lineage).splitlines() == [
        f"base -> base-sft (full, run {sft.pk}) on chat-ja x 1",
        f"base-sft -> base-sft-dpo (dpo, run {dpo.pk}) on preferences votes-1 (1 pairs, "
        "votes of study spring-study)",
    ]
