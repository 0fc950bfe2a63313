"""A served model end to end: `transformers serve` over the tiny model (a real OpenAI-compatible
server started by the tests), registered as an endpoint model, generated through a real Celery
worker on the `default` queue, the worker killed mid-run and the run resumed by another; the
proxy in front of the server counts what was asked."""

from __future__ import annotations

import json

import pytest

from generation.importers import ParsedQuestion
from generation.models import Answer, GenerationRun, LanguageModel
from generation.registry import language_model_register, prompt_set_create
from generation.runs import generation_run_create
from tests.conftest import FIXTURES, wait_for
from tests.generation.conftest import kill_mid_run

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Only guards against a hung worker; nothing here asserts on time.
HUNG = 600
KEY_ENV = "H12_SERVED_TINY_KEY"
KEY = "sk-h12-test-key-never-stored"
FOLLOW_UP = "もう少し詳しく説明してください。"


def _prompt_set(count: int = 12):
    with (FIXTURES / "prompts_ja.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()][:count]
    questions = [
        ParsedQuestion(line=i, text=row["text"], follow_ups=(FOLLOW_UP,) if i % 4 else ())
        for i, row in enumerate(rows, start=1)
    ]
    return prompt_set_create(name="served", questions=questions)


def _run(run_id: int) -> GenerationRun:
    return GenerationRun.objects.get(pk=run_id)


def test_a_served_model_resumes_after_a_kill_asking_only_for_the_missing_answers(
    celery_worker_factory, endpoint_proxy, tiny_server
):
    prompt_set = _prompt_set()
    model = language_model_register(
        name="served-tiny",
        prompt_format="plain",
        endpoint_url=endpoint_proxy.url,
        endpoint_model=tiny_server.model_id,
        api_key_env=KEY_ENV,
        endpoint_concurrency=2,
        # Spaced out so that the worker is killed part-way (and the limit is exercised).
        endpoint_requests_per_minute=240,
        generation_defaults={"max_new_tokens": 24},
    )
    assert model.is_endpoint and not model.name_or_path
    key_of = {q.text: q.pk for q in prompt_set.questions.all()}
    expected = {(q.pk, t) for q in prompt_set.questions.all() for t in (1, 2)[: len(q.turns)]}

    # A worker that consumes only the `default` queue: a served model needs no GPU worker.
    first = celery_worker_factory("default", **{KEY_ENV: KEY})
    run = generation_run_create(model=model, prompt_set=prompt_set)
    assert run.total == len(expected) == 21
    kill_mid_run(first, lambda: _run(run.pk).done >= 5, "first answers", timeout=HUNG)
    # Anything the killed worker had sent has reached the proxy once it has been quiet a while.
    wait_for(endpoint_proxy.quiet, timeout=HUNG, message="the proxy to settle")
    stored = set(Answer.objects.filter(run=run).values_list("question_id", "turn"))
    kept = set(Answer.objects.filter(run=run).values_list("pk", flat=True))
    asked_before = len(endpoint_proxy.chats)
    assert 5 <= len(stored) < len(expected)
    assert _run(run.pk).status == GenerationRun.Status.RUNNING

    second = celery_worker_factory("default", **{KEY_ENV: KEY})
    wait_for(
        lambda: _run(run.pk).status not in GenerationRun.ACTIVE,
        timeout=HUNG,
        message=f"the new worker to finish the run; log:\n{second.log_tail()}",
    )
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error + second.log_tail()
    assert run.attempts >= 2

    # The resumed run asked for exactly what was missing, each once; nothing stored again.
    later = endpoint_proxy.chats[asked_before:]
    asked = [(key_of[s.turn_key[0]], s.turn_key[1]) for s in later]
    assert sorted(asked) == sorted(expected - stored)
    answers = list(Answer.objects.filter(run=run))
    assert sorted((a.question_id, a.turn) for a in answers) == sorted(expected)
    assert kept <= {a.pk for a in answers}
    assert (run.done, run.total) == (21, 21)

    # Counted on the run: one request per stored answer (no retries here), the usage reported.
    assert run.requests == 21
    assert run.usage == {
        "prompt_tokens": sum(a.prompt_tokens for a in answers),
        "completion_tokens": sum(a.new_tokens for a in answers),
        "total_tokens": sum(a.prompt_tokens + a.new_tokens for a in answers),
    }
    assert run.template.name == "plain"

    # Provenance: the request messages, the model the server reported, decoding, stop reason.
    by_key = {(a.question_id, a.turn): a for a in answers}
    for answer in answers:
        messages = json.loads(answer.prompt_text)
        assert messages[-1]["role"] == "user"
        if answer.turn == 2:
            first_reply = by_key[(answer.question_id, 1)].text
            assert messages[1] == {"role": "assistant", "content": first_reply}
            assert messages[2] == {"role": "user", "content": FOLLOW_UP}
        assert answer.model_revision == tiny_server.model_id
        assert answer.decoding == {"max_tokens": 24, "seed": 0, "temperature": 0.0}
        assert answer.stop_reason in ("eos", "length")
        assert answer.truncated == (answer.stop_reason == "length")
        assert answer.prompt_tokens > 0 and answer.new_tokens >= 1

    # The key went to the server from the named variable, and is stored nowhere.
    assert {s.authorization for s in endpoint_proxy.chats} == {f"Bearer {KEY}"}
    model_row = LanguageModel.objects.filter(pk=model.pk).values()[0]
    assert KEY not in json.dumps(model_row, default=str)
    assert not any(KEY in a.prompt_text or KEY in json.dumps(a.decoding) for a in answers)
    assert KEY not in run.error


def test_a_served_model_without_its_key_fails_with_a_clear_error(
    shared_worker, endpoint_proxy, tiny_server
):
    prompt_set = _prompt_set(2)
    model = language_model_register(
        name="served-no-key",
        prompt_format="plain",
        endpoint_url=endpoint_proxy.url,
        endpoint_model=tiny_server.model_id,
        api_key_env=KEY_ENV,
    )
    worker = shared_worker("default")
    assert KEY_ENV not in worker.env  # the variable is not set in its environment
    run = generation_run_create(model=model, prompt_set=prompt_set)
    wait_for(
        lambda: _run(run.pk).status not in GenerationRun.ACTIVE,
        timeout=HUNG,
        message=worker.log_tail(),
    )
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.FAILED
    assert f"the environment variable {KEY_ENV}" in run.error
    assert endpoint_proxy.chats == []
