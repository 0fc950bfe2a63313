"""A served judge end to end: `transformers serve` over the tiny model (a real OpenAI-compatible
server started by the tests) behind a counting proxy, registered as an endpoint model, judging a
study through a real Celery worker on the `default` queue. The proxy sees every request."""

from __future__ import annotations

from collections import Counter

import pytest

from annotation.models import Vote
from generation.registry import language_model_register
from judging.engine.verdicts import parse_pairwise
from judging.models import JudgeRun, Judgment
from judging.runs import judge_run_create
from judging.teaching import tiny_pairwise_prompt
from tests.conftest import wait_for
from tests.judging.conftest import study_of

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Only guards against a hung worker; nothing here asserts on time.
HUNG = 600


def test_a_served_judge_asks_each_order_once_and_each_retry_once_more(
    shared_worker, endpoint_proxy, tiny_server
):
    study = study_of(models=("short", "long"))
    judge = language_model_register(
        name="served-tiny-judge",
        prompt_format="plain",
        endpoint_url=endpoint_proxy.url,
        endpoint_model=tiny_server.model_id,
        endpoint_concurrency=2,
    )
    # The short prompt: the shipped one with two answers does not fit the tiny model's context.
    prompt = tiny_pairwise_prompt()
    worker = shared_worker("default")  # a served judge needs no GPU worker
    run = judge_run_create(
        judge=judge, study=study, prompt=prompt, params={"max_new_tokens": 16}, max_attempts=2
    )
    assert run.total == 8
    wait_for(
        lambda: JudgeRun.objects.get(pk=run.pk).status not in JudgeRun.ACTIVE,
        timeout=HUNG,
        message=f"the judge run to finish; worker log:\n{worker.log_tail()}",
    )
    run.refresh_from_db()
    assert run.status == JudgeRun.Status.SUCCEEDED, run.error + worker.log_tail()
    judgments = list(Judgment.objects.filter(run=run))
    assert Counter((j.comparison_id, j.first) for j in judgments) == {
        (c, first): 1 for c in study.comparisons.values_list("pk", flat=True) for first in "ab"
    }

    # What the server was asked: each verdict's prompt once per try, no more, no less.
    chats = endpoint_proxy.chats
    asked = Counter(s.body["messages"][-1]["content"] for s in chats)
    assert asked == {j.prompt_text.strip(): j.attempts for j in judgments}
    assert len(chats) == run.requests == sum(j.attempts for j in judgments)
    assert {s.status for s in chats} == {200}
    # First tries greedy with the run's seed; retries sample at 0.7 with the next seed.
    tries = Counter((s.body["temperature"], s.body["seed"]) for s in chats)
    retried = sum(j.attempts - 1 for j in judgments)
    assert tries == {(0.0, 0): 8, **({(0.7, 1): retried} if retried else {})}
    for j in judgments:
        assert len(j.outputs) == j.attempts and j.raw_output == j.outputs[-1]
        # Asked again exactly when the first output did not parse.
        first_parsed = parse_pairwise(prompt.verdict_format, j.outputs[0]) is not None
        assert (j.attempts == 1) == first_parsed
        assert (j.verdict == "unparsable") == (
            parse_pairwise(prompt.verdict_format, j.raw_output) is None
        )
    assert run.usage["total_tokens"] > 0
    parsed = sum(j.verdict != "unparsable" for j in judgments)
    votes = Vote.objects.filter(voter="judge", judge="served-tiny-judge").count()
    assert votes == sum(1 for j in judgments if j.vote_id)
    print(f"\nserved untaught tiny judge: {parsed}/8 verdicts parsed in {len(chats)} requests")


def test_the_judge_command_waits_for_the_worker_and_prints_the_summary(
    shared_worker, served_judge, canned_judge, capsys
):
    from django.core.management import call_command

    study = study_of(models=("short", "long"))
    shared_worker("default")
    call_command(
        "judge", "--study", study.name, "--judge", served_judge.name, "--wait", "--attempts", "2"
    )
    out = capsys.readouterr().out
    run = JudgeRun.objects.get()
    assert run.status == JudgeRun.Status.SUCCEEDED and run.worker  # a worker, not this process
    assert f"judge run {run.pk}: canned-judge on {study.name} with ja_pairwise v1" in out
    assert f"judge run {run.pk} succeeded: 8/8" in out
    assert "judged 4, expected 4, consistent 4, inconsistent 0, unparsable 0, votes 8" in out
    assert len(canned_judge.asked) == 8
