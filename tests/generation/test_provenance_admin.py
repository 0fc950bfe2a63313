"""Every answer's provenance shown to staff (admin and staff API), and to no one else."""

from __future__ import annotations

import json

import pytest
from django.utils.html import escape

from generation.models import Answer, GenerationRun
from generation.registry import language_model_register, prompt_set_import
from generation.runs import generation_run_create, generation_run_execute
from tests.conftest import logged_in

pytestmark = pytest.mark.django_db


QUESTIONS = [
    {"question_id": "q1", "turns": ["日本の首都はどこですか？"]},
    {"question_id": "q2", "turns": ["挨拶してください。", "もう一度、<b>短く</b>。"]},
]


@pytest.fixture
def generated(tiny, quiet_heartbeat, one_torch_thread) -> GenerationRun:
    """A greedy run of the tiny model cut at 4 new tokens, so answers hit the length limit."""
    data = "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in QUESTIONS).encode()
    prompt_set = prompt_set_import(name="prov", data=data, filename="prov.jsonl")
    run = generation_run_create(
        model=tiny, prompt_set=prompt_set, params={"max_new_tokens": 4}, seed=5, enqueue=False
    )
    run = generation_run_execute(run_id=run.pk)
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error
    return run


@pytest.mark.slow
def test_the_answer_page_shows_how_the_answer_was_made(admin_user, generated):
    answer = generated.answers.get(question__external_id="q2", turn=2)
    # What the generation path recorded (the page must show exactly this).
    assert answer.prompt_text and answer.prompt_tokens > 0 and answer.new_tokens > 0
    assert answer.decoding and answer.model_revision
    assert answer.stop_reason in Answer.StopReason.values
    page = logged_in(admin_user).get(f"/admin/generation/answer/{answer.pk}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    template = generated.template
    assert f"{template.name} v{template.version}" in html
    # The prompt as rendered, escaped (the user turn holds markup), the earlier turn in it.
    assert escape(answer.prompt_text) in html and "<b>短く</b>" not in html
    first = generated.answers.get(question__external_id="q2", turn=1)
    assert first.text in answer.prompt_text
    assert escape(answer.model_revision) in html
    for key, value in answer.decoding.items():
        assert escape(json.dumps(key)) in html and escape(json.dumps(value)) in html
    assert f'<div class="readonly">{answer.prompt_tokens}</div>' in html
    assert f'<div class="readonly">{answer.new_tokens}</div>' in html
    assert answer.get_stop_reason_display() in html


@pytest.mark.slow
def test_the_run_page_counts_stop_reasons_and_truncated_answers(admin_user, generated):
    answers = generated.answers.all()
    truncated = answers.filter(truncated=True).count()
    assert truncated >= 1  # four new tokens do not finish the tiny model's answers
    assert all(a.stop_reason == "length" for a in answers.filter(truncated=True))
    html = (
        logged_in(admin_user)
        .get(f"/admin/generation/generationrun/{generated.pk}/change/")
        .content.decode()
    )
    assert f"truncated: {truncated}" in html
    assert f"length limit: {answers.filter(stop_reason='length').count()}" in html
    assert f"{generated.template.name} v{generated.template.version}" in html
    assert f"/admin/generation/answer/?run__id__exact={generated.pk}" in html
    listing = logged_in(admin_user).get(
        f"/admin/generation/answer/?run__id__exact={generated.pk}&truncated__exact=1"
    )
    assert f"{truncated} answer" in listing.content.decode()


@pytest.mark.slow
def test_the_staff_api_serves_the_same_provenance(staff_user, generated):
    client = logged_in(staff_user)
    body = client.get(f"/api/answers/?run={generated.pk}").json()
    assert body["count"] == generated.answers.count() == 3
    by_key = {(a["question"], a["turn"]): a for a in body["results"]}
    for answer in generated.answers.all():
        served = by_key[(answer.question_id, answer.turn)]
        assert served["text"] == answer.text
        assert served["template"] == {
            "id": generated.template.pk,
            "name": generated.template.name,
            "version": generated.template.version,
        }
        for field in (
            "prompt_text",
            "prompt_tokens",
            "new_tokens",
            "model_revision",
            "decoding",
            "stop_reason",
            "truncated",
        ):
            assert served[field] == getattr(answer, field), field
    run = client.get(f"/api/runs/{generated.pk}/").json()
    assert run["truncated_answers"] == generated.answers.filter(truncated=True).count()
    assert run["template"]["version"] == generated.template.version
    truncated = client.get(f"/api/answers/?run={generated.pk}&truncated=true").json()
    assert truncated["count"] == run["truncated_answers"]


def test_an_endpoint_answer_shows_the_request_messages(admin_user, two_models_run):
    run = two_models_run
    messages = [
        {"role": "system", "content": "あなたは誠実なアシスタントです。"},
        {"role": "user", "content": "こんにちは <script>"},
    ]
    answer = Answer.objects.create(
        run=run,
        question=run.prompt_set.questions.first(),
        text="こんにちは。",
        prompt_text=json.dumps(messages, ensure_ascii=False),
        prompt_tokens=21,
        new_tokens=5,
        model_revision="served-model-id",
        decoding={"temperature": 0.0, "seed": 1},
        stop_reason=Answer.StopReason.EOS,
    )
    html = logged_in(admin_user).get(f"/admin/generation/answer/{answer.pk}/change/")
    html = html.content.decode()
    assert "<b>system</b>" in html and "<b>user</b>" in html
    assert escape("こんにちは <script>") in html and "こんにちは <script>" not in html
    assert "served-model-id" in html


@pytest.fixture
def two_models_run(db) -> GenerationRun:
    served = language_model_register(
        name="served",
        endpoint_url="http://127.0.0.1:9/v1",
        endpoint_model="served-model-id",
        prompt_format="plain",
    )
    prompt_set = prompt_set_import(name="one", data=b"question\nhi\n", filename="q.csv")
    return generation_run_create(model=served, prompt_set=prompt_set, enqueue=False)


def test_annotators_and_bare_staff_cannot_see_provenance(
    annotator, bare_staff, staff_user, two_models_run
):
    run = two_models_run
    answer = Answer.objects.create(
        run=run,
        question=run.prompt_set.questions.first(),
        text="x",
        prompt_text="secret prompt",
        model_revision="abc123",
    )
    for user in (annotator, bare_staff):
        client = logged_in(user)
        assert client.get("/api/answers/").status_code == 403
        assert client.get(f"/api/answers/{answer.pk}/").status_code == 403
        page = client.get(f"/admin/generation/answer/{answer.pk}/change/")
        assert page.status_code in (302, 403)  # to the sign-in page, or refused
        assert "secret prompt" not in page.content.decode()
    assert logged_in(staff_user).get(f"/api/answers/{answer.pk}/").json()["prompt_text"] == (
        "secret prompt"
    )
