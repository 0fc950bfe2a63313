"""An Evol-Instruct run of the tiny model in this process (`manage.py evolve --inline`): its
items, the data set it writes with lineage, the run page, the staff API, and annotators kept
out."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from evolution.models import EvolutionItem, EvolutionRun
from generation.models import InstructionExample
from tests.conftest import logged_in
from tests.generation.conftest import register_tiny

from .conftest import evolution_staff

pytestmark = [pytest.mark.django_db, pytest.mark.postgres, pytest.mark.slow]

RUNS = "/api/evolution-runs/"


@pytest.fixture
def evolved(source, tiny_model_dir, quiet_heartbeat, capsys):
    """Two rounds over the four source rows, exact duplicates only (the tiny model's text is
    often alike); returns the run and what the command printed."""
    register_tiny(tiny_model_dir, max_new_tokens=32)
    call_command(
        "evolve",
        "--dataset",
        "evol-source",
        "--model",
        "tiny",
        "--rounds",
        "2",
        "--seed",
        "1",
        "--rules",
        json.dumps({"near_duplicate": 1.0}),
        "--name",
        "evolved",
        "--inline",
    )
    return EvolutionRun.objects.get(), capsys.readouterr().out


@pytest.fixture
def quiet_heartbeat(settings):
    settings.RUN_HEARTBEAT_INTERVAL = 3600


def test_the_command_runs_every_round_and_writes_rows_with_lineage(evolved, source):
    run, out = evolved
    assert run.status == EvolutionRun.Status.SUCCEEDED, run.error
    items = list(EvolutionItem.objects.filter(run=run))
    round1 = [i for i in items if i.round == 1]
    assert len(round1) == 4  # every source row evolved once in round 1
    # Round 2 evolved exactly the survivors of round 1.
    assert {i.parent_item_id for i in items if i.round == 2} == {i.pk for i in round1 if i.kept}
    assert run.done == run.total == len(items)
    assert f"evolution run {run.pk} succeeded: " in out
    kept = [i for i in items if i.kept]
    for item in items:
        assert item.kept == (item.drop_rule == "")
        assert (
            item.prompt_text.endswith("#書き換えた指示#") and item.parent_text in item.prompt_text
        )
    assert kept, [(i.drop_rule, i.drop_detail) for i in items]
    dataset = run.result
    assert dataset.name == "evolved" and dataset.derived_from == source
    rows = list(dataset.examples.order_by("position"))
    assert len(rows) == len(kept) and f"data set evolved: {len(rows)} rows" in out
    source_ids = set(source.examples.values_list("pk", flat=True))
    for row in rows:
        assert row.operation and row.round in (1, 2) and row.parent_id is not None
        parent = InstructionExample.objects.get(pk=row.parent_id)
        if row.round == 1:
            assert parent.pk in source_ids
        else:
            assert parent.dataset_id == dataset.pk and parent.round == 1
    counts = run.counts
    assert sum(e["items"] for e in counts.values()) == len(items)
    assert sum(e["kept"] for e in counts.values()) == len(kept)


def test_the_run_page_shows_counts_per_operation_and_items_filter_by_rule(evolved, admin_user):
    run, _ = evolved
    client = logged_in(admin_user)
    page = client.get(f"/admin/evolution/evolutionrun/{run.pk}/change/").content.decode()
    for op in run.counts:
        assert f"<td>{op}</td>" in page
    assert "Examples" in page
    listing = client.get(f"/admin/evolution/evolutionitem/?run__id__exact={run.pk}&kept__exact=1")
    assert listing.status_code == 200
    item = EvolutionItem.objects.filter(run=run).first()
    detail = client.get(f"/admin/evolution/evolutionitem/{item.pk}/change/")
    assert detail.status_code == 200


def test_the_staff_api_lists_runs_and_filters_items(evolved, django_user_model):
    run, _ = evolved
    client = logged_in(evolution_staff(django_user_model))
    listed = client.get(RUNS).json()["results"]
    assert [r["id"] for r in listed] == [run.pk]
    one = client.get(f"{RUNS}{run.pk}/").json()
    assert one["totals"]["items"] == run.done and one["model_name"] == "tiny"
    items = client.get(f"{RUNS}{run.pk}/items/").json()
    assert items["count"] == run.done
    kept = client.get(f"{RUNS}{run.pk}/items/?kept=true").json()
    assert all(i["kept"] for i in kept["results"])
    assert client.get(f"{RUNS}{run.pk}/items/?rule=bogus").status_code == 400
    # Done: it cannot be cancelled.
    assert client.post(f"{RUNS}{run.pk}/cancel/").status_code == 409


def test_the_command_refuses_bad_input_clearly(source, tiny_model_dir):
    with pytest.raises(CommandError, match="no instruction data set named 'nope'"):
        call_command("evolve", "--dataset", "nope", "--model", "tiny")
    register_tiny(tiny_model_dir)
    with pytest.raises(CommandError, match="--rules is not valid JSON"):
        call_command("evolve", "--dataset", "evol-source", "--model", "tiny", "--rules", "{")
    assert not EvolutionRun.objects.exists()


def test_staff_queue_runs_through_the_api_and_annotators_get_403(
    source, tiny_model_dir, django_user_model, annotator
):
    model = register_tiny(tiny_model_dir)
    body = json.dumps({"source": source.pk, "model": model.pk, "rounds": 2})
    outsider = logged_in(annotator)
    assert outsider.get(RUNS).status_code == 403
    assert outsider.post(RUNS, body, content_type="application/json").status_code == 403
    staff = logged_in(evolution_staff(django_user_model))
    created = staff.post(RUNS, body, content_type="application/json")
    assert created.status_code == 201, created.content
    run_id = created.json()["id"]
    assert outsider.get(f"{RUNS}{run_id}/items/").status_code == 403
    assert outsider.post(f"{RUNS}{run_id}/cancel/").status_code == 403
    assert staff.post(f"{RUNS}{run_id}/cancel/").json()["status"] == "cancelled"
    assert staff.post(f"{RUNS}{run_id}/retry/").json()["status"] == "queued"


def test_the_evolve_action_on_a_data_set_queues_a_run(source, tiny_model_dir, admin_user):
    model = register_tiny(tiny_model_dir)
    client = logged_in(admin_user)
    url = "/admin/generation/instructiondataset/"
    form = client.post(url, {"action": "evolve", "_selected_action": [source.pk]})
    assert form.status_code == 200 and "Evol-Instruct" in form.content.decode()
    done = client.post(
        url,
        {
            "action": "evolve",
            "_selected_action": [source.pk],
            "apply": "1",
            "model": model.pk,
            "rounds": 2,
            "seed": 3,
            "name": "from-admin",
        },
    )
    assert done.status_code == 302
    run = EvolutionRun.objects.get()
    assert (run.rounds, run.seed, run.name, run.created_by) == (2, 3, "from-admin", admin_user)
