"""Rewrite prompts as versioned rows, and what creating an evolution run checks and records."""

from __future__ import annotations

import pytest

from evalsite.accounts.models import AuditEntry
from evalsite.errors import ServiceError
from evalsite.runs.workers import run_queue
from evolution.engine.operations import OPERATIONS, PRESETS
from evolution.models import EvolutionPrompt, EvolutionRun
from evolution.prompts import evolution_prompt_for, evolution_prompt_update
from evolution.runs import evolution_run_cancel, evolution_run_create, evolution_run_retry
from generation.registry import language_model_register
from tests.generation.conftest import instruction_dataset

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


@pytest.fixture
def weights(db):
    return language_model_register(name="w", name_or_path="tiny-0")


@pytest.fixture
def served(db):
    return language_model_register(
        name="s",
        endpoint_url="http://127.0.0.1:9/v1",
        endpoint_model="m",
        prompt_format="plain",
    )


def test_the_shipped_prompts_are_installed_one_per_operation():
    rows = EvolutionPrompt.objects.filter(version=1)
    assert sorted(rows.values_list("operation", flat=True)) == sorted(OPERATIONS)
    assert evolution_prompt_for("deepen").template == PRESETS["deepen"]


def test_editing_a_used_prompt_makes_a_new_version_and_runs_use_it(source, weights):
    prompt = evolution_prompt_for("deepen")
    # Unused: edited in place.
    same = evolution_prompt_update(prompt=prompt, changes={"description": "x"})
    assert same.pk == prompt.pk and same.version == 1
    run = evolution_run_create(source=source, model=weights, enqueue=False)
    assert run.prompts["deepen"] == prompt.pk
    # A run's prompt is "used" once it has items; rendering one here makes it so.
    from evolution.models import EvolutionItem

    EvolutionItem.objects.create(
        run=run,
        round=1,
        source_example=source.examples.first(),
        parent_text="p",
        operation="deepen",
        prompt=prompt,
        prompt_text="t",
        drop_rule="no_new_information",
    )
    new = evolution_prompt_update(
        prompt=prompt, changes={"template": "もっと深く: {{ instruction }}"}
    )
    assert new.pk != prompt.pk and new.version == 2
    prompt.refresh_from_db()
    assert prompt.template == PRESETS["deepen"]  # the used version is kept as it was
    assert evolution_prompt_for("deepen") == new
    with pytest.raises(ServiceError, match="never shows the instruction"):
        evolution_prompt_update(prompt=new, changes={"template": "深くして"})


def test_a_run_records_what_it_will_do_and_is_audited(source, weights, admin_user):
    run = evolution_run_create(
        source=source,
        model=weights,
        rounds=2,
        seed=5,
        params={"max_new_tokens": 32},
        rules={"near_duplicate": 1.0},
        user=admin_user,
        enqueue=False,
    )
    assert run.answer_model == weights and run.judge is None
    assert run.total == 4 * 2 and run.name == f"evol-source-evol-{run.pk}"
    assert run.params["max_new_tokens"] == 32 and run.params["do_sample"] is True
    assert run.rules["near_duplicate"] == 1.0 and run.rules["similarity"] == 0.8
    assert set(run.prompts) == set(OPERATIONS)
    assert run_queue(run) == "gpu"
    entry = AuditEntry.objects.get(action=AuditEntry.Action.EVOLUTION_RUN_START)
    assert entry.details["rounds"] == 2 and entry.details["model"] == "w"
    evolution_run_cancel(run=run, user=admin_user)
    assert EvolutionRun.objects.get(pk=run.pk).status == EvolutionRun.Status.CANCELLED
    evolution_run_retry(run=run, user=admin_user)
    assert EvolutionRun.objects.get(pk=run.pk).status == EvolutionRun.Status.QUEUED
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {
        AuditEntry.Action.EVOLUTION_RUN_CANCEL,
        AuditEntry.Action.EVOLUTION_RUN_RETRY,
    } <= actions


def test_a_run_of_served_models_only_goes_to_the_default_queue(source, served, weights):
    assert run_queue(evolution_run_create(source=source, model=served, enqueue=False)) == "default"
    mixed = evolution_run_create(source=source, model=served, answer_model=weights, enqueue=False)
    assert run_queue(mixed) == "gpu"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rounds": 0}, "rounds must be between 1"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"rules": {"nope": 1}}, "unknown elimination setting"),
        ({"params": {"temperature": -1}}, "temperature"),
        ({"name": "evol-source"}, "already exists"),
    ],
)
def test_a_bad_run_is_refused_and_nothing_is_written(source, weights, changes, message):
    with pytest.raises(ServiceError, match=message):
        evolution_run_create(source=source, model=weights, enqueue=False, **changes)
    assert not EvolutionRun.objects.exists()


def test_an_empty_source_is_refused(weights):
    empty = instruction_dataset("one", [("a", "b")])
    empty.examples.all().delete()
    with pytest.raises(ServiceError, match="no rows to evolve"):
        evolution_run_create(source=empty, model=weights, enqueue=False)


def test_saving_a_used_prompt_in_the_admin_keeps_it_and_makes_the_next_version(
    source, weights, admin_user
):
    from evolution.models import EvolutionItem
    from tests.conftest import logged_in

    prompt = evolution_prompt_for("breadth")
    run = evolution_run_create(source=source, model=weights, enqueue=False)
    EvolutionItem.objects.create(
        run=run,
        round=1,
        source_example=source.examples.first(),
        parent_text="p",
        operation="breadth",
        prompt=prompt,
        prompt_text="t",
        drop_rule="duplicate",
    )
    client = logged_in(admin_user)
    url = f"/admin/evolution/evolutionprompt/{prompt.pk}/change/"
    template = "同じ分野の別の指示を一つ: {{ instruction }}"
    response = client.post(url, {"template": template, "description": "mine", "active": "on"})
    assert response.status_code == 302
    prompt.refresh_from_db()
    assert prompt.template == PRESETS["breadth"]
    latest = evolution_prompt_for("breadth")
    assert (latest.version, latest.template) == (2, template)
    # A template that never shows the instruction is refused on the form.
    refused = client.post(url, {"template": "新しい指示を一つ", "active": "on"})
    assert refused.status_code == 200 and "never shows the instruction" in refused.content.decode()


def test_the_admin_trains_an_evolver_from_a_pairs_file(tiny_model_dir, admin_user):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from generation.models import FineTuneRun
    from tests.conftest import FIXTURES, logged_in
    from tests.generation.conftest import register_tiny

    base = register_tiny(tiny_model_dir)
    client = logged_in(admin_user)
    url = "/admin/evolution/evolutionrun/train-evolver/"
    assert "Train an evolver" in client.get("/admin/evolution/evolutionrun/").content.decode()
    assert client.get(url).status_code == 200
    form = {"base_model": base.pk, "name": "my-evolver", "epochs": 1, "learning_rate": 0.001}
    bad = SimpleUploadedFile("p.jsonl", b'{"instruction": "a"}\n')
    refused = client.post(url, {**form, "file": bad})
    assert "p.jsonl, line 1: &#x27;evolved&#x27; is missing" in refused.content.decode()
    assert not FineTuneRun.objects.exists()
    pairs = (FIXTURES / "evolution" / "evolver_pairs_ja.jsonl").read_bytes()
    done = client.post(url, {**form, "file": SimpleUploadedFile("pairs.jsonl", pairs)})
    run = FineTuneRun.objects.get()
    assert done.status_code == 302 and done["Location"].endswith(f"/{run.pk}/change/")
    assert run.model_name == "my-evolver" and run.method == "lora" and run.epochs == 1
    assert run.datasets.get().examples.count() == 12
