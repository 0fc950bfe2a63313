"""Regenerate: a run repeated into a new run with the same model, prompt set, parameters, seed,
batch size and template version, and a report of how many answers came out identical."""

from __future__ import annotations

import json

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

from evalsite.errors import ServiceError
from generation import regenerate
from generation.models import Answer, GenerationRun
from generation.regenerate import (
    answers_regenerate,
    generation_run_regenerate,
    regeneration_report,
)
from generation.registry import language_model_update, prompt_set_import
from generation.runs import (
    generation_run_create,
    generation_run_create_imported,
    generation_run_execute,
)
from generation.templates import template_update
from tests.conftest import logged_in, wait_for
from tests.generation.conftest import register_tiny

pytestmark = pytest.mark.django_db


QUESTIONS = [
    {"question_id": "q1", "turns": ["日本の首都はどこですか？"]},
    {"question_id": "q2", "turns": ["挨拶してください。", "もう一度、短く。"]},
    {"question_id": "q3", "turns": ["好きな季節を教えてください。"]},
]


@pytest.fixture
def two_turn_set(db):
    data = "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in QUESTIONS).encode()
    return prompt_set_import(name="regen", data=data, filename="regen.jsonl")


def _greedy(model, prompt_set, batch_size: int) -> GenerationRun:
    """A succeeded greedy run of ``model`` (executed here, in this process)."""
    run = generation_run_create(
        model=model,
        prompt_set=prompt_set,
        params={"max_new_tokens": 12, "do_sample": False},
        seed=7,
        batch_size=batch_size,
        enqueue=False,
    )
    run = generation_run_execute(run_id=run.pk)
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error
    return run


@pytest.fixture
def greedy_run(tiny, two_turn_set, quiet_heartbeat, one_torch_thread):
    return _greedy(tiny, two_turn_set, batch_size=2)


@pytest.mark.slow
def test_a_regenerated_greedy_run_reproduces_every_answer(greedy_run):
    again = generation_run_regenerate(run=greedy_run)
    assert again.pk != greedy_run.pk and again.regenerated_from == greedy_run
    assert again.status == GenerationRun.Status.QUEUED
    assert (again.model, again.prompt_set) == (greedy_run.model, greedy_run.prompt_set)
    assert (again.params, again.seed, again.batch_size) == (
        greedy_run.params,
        greedy_run.seed,
        greedy_run.batch_size,
    )
    assert again.template_id == greedy_run.template_id and again.template is not None

    again = generation_run_execute(run_id=again.pk)
    assert again.status == GenerationRun.Status.SUCCEEDED, again.error
    assert again.answers.count() == greedy_run.answers.count() == 4  # one per question turn
    report = regeneration_report(run=again)
    assert report == regenerate.RegenerationReport(
        original=greedy_run.pk, compared=4, identical=4, different=0, missing=0, copied=0
    )
    # The report is what the texts say, answer by answer.
    before = {(a.question_id, a.turn): a.text for a in greedy_run.answers.all()}
    after = {(a.question_id, a.turn): a.text for a in again.answers.all()}
    assert before == after


@pytest.mark.slow
def test_the_report_counts_answers_that_differ_and_answers_not_made_yet(greedy_run):
    again = generation_run_regenerate(run=greedy_run)
    original = list(greedy_run.answers.order_by("question__position", "turn"))
    # Two answers stored, one of them different: as a run part-way through would hold.
    Answer.objects.create(
        run=again, question=original[0].question, turn=original[0].turn, text=original[0].text
    )
    Answer.objects.create(
        run=again, question=original[1].question, turn=original[1].turn, text="別の答え"
    )
    report = regeneration_report(run=again)
    assert report == regenerate.RegenerationReport(
        original=greedy_run.pk, compared=2, identical=1, different=1, missing=2, copied=0
    )
    assert regeneration_report(run=greedy_run) is None


def test_it_repeats_the_parameter_snapshot_and_template_version_not_today_s(tiny, two_turn_set):
    run = generation_run_create(
        model=tiny, prompt_set=two_turn_set, params={"max_new_tokens": 8}, seed=3, enqueue=False
    )
    GenerationRun.objects.filter(pk=run.pk).update(status=GenerationRun.Status.SUCCEEDED)
    run.refresh_from_db()
    used = run.template
    # Since then the model gained a default and its template a new version.
    language_model_update(
        model=tiny, changes={"generation_defaults": {"max_new_tokens": 48, "top_k": 5}}
    )
    newer = template_update(template=used, changes={"system_prompt": "丁寧に答えてください。"})
    assert newer.version == used.version + 1

    again = generation_run_regenerate(run=run)
    again.refresh_from_db()
    assert again.params == run.params and "top_k" not in again.params
    assert again.template == used
    assert (again.seed, again.batch_size, again.total) == (3, run.batch_size, 4)


def test_imported_and_unfinished_runs_are_not_regenerated(tiny, two_turn_set):
    imported = generation_run_create_imported(
        model=tiny,
        prompt_set=two_turn_set,
        answers={q.pk: ["x"] * len(q.turns) for q in two_turn_set.questions.all()},
    )
    with pytest.raises(ServiceError) as caught:
        generation_run_regenerate(run=imported)
    assert str(caught.value) == regenerate.IMPORTED.format(id=imported.pk)
    queued = generation_run_create(model=tiny, prompt_set=two_turn_set, enqueue=False)
    with pytest.raises(ServiceError) as caught:
        generation_run_regenerate(run=queued)
    assert str(caught.value) == regenerate.STILL_ACTIVE.format(id=queued.pk, status="queued")
    assert GenerationRun.objects.count() == 2


def _finished(run: GenerationRun) -> GenerationRun:
    GenerationRun.objects.filter(pk=run.pk).update(status=GenerationRun.Status.FAILED)
    run.refresh_from_db()
    return run


def test_staff_regenerate_through_the_api_and_read_the_report(staff_user, tiny, two_turn_set):
    run = _finished(generation_run_create(model=tiny, prompt_set=two_turn_set, enqueue=False))
    client = logged_in(staff_user)
    response = client.post(f"/api/runs/{run.pk}/regenerate/")
    assert response.status_code == 201, response.content
    body = response.json()
    again = GenerationRun.objects.get(pk=body["id"])
    assert body["regenerated_from"] == run.pk and again.regenerated_from == run
    assert body["template"] == {
        "id": run.template.pk,
        "name": run.template.name,
        "version": run.template.version,
    }
    assert body["regeneration"] == {
        "original": run.pk,
        "compared": 0,
        "identical": 0,
        "different": 0,
        "missing": 0,
        "copied": 0,
    }
    assert client.get(f"/api/runs/{run.pk}/").json()["regeneration"] is None
    # A queued run is refused (409), as cancel and retry refuse runs whose state forbids them.
    refused = client.post(f"/api/runs/{again.pk}/regenerate/")
    assert refused.status_code == 409
    assert refused.json()["detail"] == regenerate.STILL_ACTIVE.format(id=again.pk, status="queued")


def test_regenerating_through_the_api_needs_the_right_to_run_models(
    django_user_model, tiny, two_turn_set
):
    from django.contrib.auth.models import Permission

    run = _finished(generation_run_create(model=tiny, prompt_set=two_turn_set, enqueue=False))
    user = django_user_model.objects.create_user("clerk", password="x", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            codename__in=["view_generationrun", "add_generationrun", "change_generationrun"]
        )
    )
    response = logged_in(user).post(f"/api/runs/{run.pk}/regenerate/")
    assert response.status_code == 403
    assert GenerationRun.objects.count() == 1


def test_the_admin_action_regenerates_and_the_run_page_shows_the_report(
    admin_user, tiny, two_turn_set
):
    run = _finished(generation_run_create(model=tiny, prompt_set=two_turn_set, enqueue=False))
    client = logged_in(admin_user)
    response = client.post(
        "/admin/generation/generationrun/",
        {"action": "regenerate_runs", ACTION_CHECKBOX_NAME: [run.pk]},
        follow=True,
    )
    again = GenerationRun.objects.get(regenerated_from=run)
    assert f"Queued run {again.pk} regenerating run {run.pk}" in response.content.decode()
    # Its answers so far: one the same as the original's, one not.
    questions = list(two_turn_set.questions.order_by("position"))
    for turn_text, target in (("同じ", run), ("同じ", again)):
        Answer.objects.create(run=target, question=questions[0], turn=1, text=turn_text)
    Answer.objects.create(run=run, question=questions[2], turn=1, text="元")
    Answer.objects.create(run=again, question=questions[2], turn=1, text="新")
    page = client.get(f"/admin/generation/generationrun/{again.pk}/change/").content.decode()
    assert f"1 of 2 answers identical to run {run.pk}&#x27;s (1 different)" in page


@pytest.mark.quick  # `make test-quick` runs this one of its family
@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_a_run_regenerated_through_the_api_to_identical_answers(
    shared_worker, tiny_model_dir, admin_user
):
    model = register_tiny(tiny_model_dir, max_new_tokens=12)
    data = "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in QUESTIONS).encode()
    prompt_set = prompt_set_import(name="regen-worker", data=data, filename="regen.jsonl")
    worker = shared_worker()
    run = generation_run_create(model=model, prompt_set=prompt_set, seed=11, batch_size=3)

    def finished(run_id: int) -> bool:
        return GenerationRun.objects.get(pk=run_id).status not in GenerationRun.ACTIVE

    wait_for(lambda: finished(run.pk), timeout=900, message=worker.log_tail())
    client = logged_in(admin_user)
    response = client.post(f"/api/runs/{run.pk}/regenerate/")
    assert response.status_code == 201, response.content
    again = response.json()["id"]
    wait_for(lambda: finished(again), timeout=900, message=worker.log_tail())
    body = client.get(f"/api/runs/{again}/").json()
    assert body["status"] == "succeeded", body["error"] + worker.log_tail()
    assert body["regeneration"] == {
        "original": run.pk,
        "compared": 4,
        "identical": 4,
        "different": 0,
        "missing": 0,
        "copied": 0,
    }


@pytest.mark.slow
def test_one_answer_is_made_again_in_its_context_and_the_others_copied(
    tiny, two_turn_set, quiet_heartbeat, one_torch_thread
):
    # One question a batch, so the answer made again meets the same batch as before.
    run = _greedy(tiny, two_turn_set, batch_size=1)
    chosen = run.answers.get(question__external_id="q2", turn=1)
    (again,) = answers_regenerate(answers=[chosen])
    assert again.regenerated_from == run and again.status == GenerationRun.Status.QUEUED
    copies = {(a.question.external_id, a.turn): a for a in again.answers.all()}
    # The other questions' answers are copied, provenance and all; q2's two turns are not.
    assert sorted(copies) == [("q1", 1), ("q3", 1)]
    for copy in copies.values():
        original = copy.copied_from
        assert original.run == run
        for field in regenerate.COPIED_FIELDS:
            assert getattr(copy, field) == getattr(original, field), field
    assert (again.done, again.total) == (2, 4)

    again = generation_run_execute(run_id=again.pk)
    assert again.status == GenerationRun.Status.SUCCEEDED, again.error
    made = again.answers.filter(copied_from__isnull=True)
    assert sorted(made.values_list("question__external_id", "turn")) == [("q2", 1), ("q2", 2)]
    assert regeneration_report(run=again) == regenerate.RegenerationReport(
        original=run.pk, compared=2, identical=2, different=0, missing=0, copied=2
    )
    # The second turn was made from a prompt holding the first turn's new answer.
    first, second = made.order_by("turn")
    assert first.text in second.prompt_text


def test_choosing_a_later_turn_keeps_the_earlier_ones(tiny, two_turn_set):
    texts = {q.pk: [f"{q.external_id}-{t}" for t in q.turns] for q in two_turn_set.questions.all()}
    run = generation_run_create_imported(model=tiny, prompt_set=two_turn_set, answers=texts)
    GenerationRun.objects.filter(pk=run.pk).update(imported=False)  # as if generated here
    run.refresh_from_db()
    chosen = run.answers.filter(question__external_id="q2", turn=2)
    (again,) = answers_regenerate(answers=chosen)
    assert sorted(again.answers.values_list("question__external_id", "turn")) == [
        ("q1", 1),
        ("q2", 1),
        ("q3", 1),
    ]
    assert regeneration_report(run=again) == regenerate.RegenerationReport(
        original=run.pk, compared=0, identical=0, different=0, missing=1, copied=3
    )


def test_staff_regenerate_one_answer_through_the_api_and_the_admin(
    staff_user, admin_user, tiny, two_turn_set
):
    run = generation_run_create_imported(
        model=tiny,
        prompt_set=two_turn_set,
        answers={q.pk: ["x"] * len(q.turns) for q in two_turn_set.questions.all()},
    )
    answer = run.answers.get(question__external_id="q1")
    client = logged_in(staff_user)
    refused = client.post(f"/api/answers/{answer.pk}/regenerate/")
    assert refused.status_code == 409
    assert refused.json()["detail"] == regenerate.IMPORTED.format(id=run.pk)
    GenerationRun.objects.filter(pk=run.pk).update(imported=False)
    response = client.post(f"/api/answers/{answer.pk}/regenerate/")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["regenerated_from"], body["done"], body["total"]) == (run.pk, 3, 4)
    assert body["regeneration"]["copied"] == 3

    page = logged_in(admin_user).post(
        "/admin/generation/answer/",
        {"action": "regenerate_answers", ACTION_CHECKBOX_NAME: [answer.pk]},
        follow=True,
    )
    newest = GenerationRun.objects.order_by("-pk").first()
    assert newest.regenerated_from == run and newest.pk != body["id"]
    assert f"Queued run {newest.pk} regenerating 1 answer(s) of run {run.pk}" in (
        page.content.decode()
    )
