"""The tiny model as a local judge through a real Celery worker on the `gpu` queue: taught the
verdict format with the app's own fine-tuning (judging/teaching.py), killed with -9 part-way,
and resumed by another worker without a verdict stored twice."""

from __future__ import annotations

from collections import Counter

import pytest

from annotation.models import Assignment, Vote
from judging.engine import verdicts
from judging.models import JudgeRun, Judgment
from judging.prompts import as_judge_template
from judging.runs import judge_run_create
from judging.summary import judge_run_summary
from judging.teaching import tiny_pairwise_prompt
from tests.conftest import wait_for
from tests.generation.conftest import kill_mid_run
from tests.judging.conftest import study_of

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Only guards against a hung worker; nothing here asserts on time.
HUNG = 900


def _run(run_id: int) -> JudgeRun:
    return JudgeRun.objects.get(pk=run_id)


def test_a_local_judge_in_the_gpu_worker_resumes_after_a_kill_without_judging_twice(
    celery_worker_factory, taught_judge, capsys
):
    study = study_of(models=("short", "middle", "long", "polite"))
    prompt = tiny_pairwise_prompt()
    assert study.comparisons.count() == 24  # 6 model pairs x 4 questions

    # Each worker also consumes `default`, where the stale-run check (beat) requeues the run.
    first = celery_worker_factory("gpu,default")
    run = judge_run_create(
        judge=taught_judge,
        study=study,
        prompt=prompt,
        params={"max_new_tokens": 48},
        batch_size=2,
        max_attempts=2,
    )
    assert run.total == 48
    kill_mid_run(first, lambda: _run(run.pk).done >= 6, "first verdicts", timeout=HUNG)
    stopped = _run(run.pk)
    assert stopped.status == JudgeRun.Status.RUNNING and 6 <= stopped.done < 48
    kept = dict(Judgment.objects.filter(run=run).values_list("pk", "raw_output"))

    second = celery_worker_factory("gpu,default")
    wait_for(
        lambda: _run(run.pk).status not in JudgeRun.ACTIVE,
        timeout=HUNG,
        message=f"the new worker to finish the run; log:\n{second.log_tail()}",
    )
    run.refresh_from_db()
    assert run.status == JudgeRun.Status.SUCCEEDED, run.error + second.log_tail()
    assert (run.done, run.total) == (48, 48) and run.attempts >= 2

    # Every comparison judged exactly twice, once in each order; what was stored before the
    # kill is still there, untouched.
    judgments = list(Judgment.objects.filter(run=run).select_related("comparison__question"))
    assert Counter((j.comparison_id, j.first) for j in judgments) == {
        (c, first): 1 for c in study.comparisons.values_list("pk", flat=True) for first in "ab"
    }
    assert {j.pk: j.raw_output for j in judgments if j.pk in kept} == kept
    # Each verdict was asked with its own prompt: the comparison's answers in its order.
    judge = as_judge_template(prompt)
    for j in judgments:
        a, b = j.comparison.answer_a.text, j.comparison.answer_b.text
        one, two = (a, b) if j.first == "a" else (b, a)
        assert (
            j.prompt_text
            == verdicts.render(
                judge,
                question=j.comparison.question.text,
                answer_1=one,
                answer_2=two,
                reference=j.comparison.question.reference,
                criteria=j.comparison.question.criteria,
            ).strip()
        )
        assert 1 <= j.attempts <= 2 and len(j.outputs) == j.attempts
        assert j.raw_output == j.outputs[-1]
        parsed = verdicts.parse_pairwise(prompt.verdict_format, j.raw_output)
        assert (j.verdict == "unparsable") == (parsed is None)

    # Votes: two per comparison whose orders both parsed, none twice, none counted against K.
    voted = Counter(j.comparison_id for j in judgments if j.vote_id)
    both_parsed = {
        c
        for c, n in Counter(j.comparison_id for j in judgments if j.verdict != "unparsable").items()
        if n == 2
    }
    assert set(voted) == both_parsed and set(voted.values()) <= {2}
    assert Vote.objects.filter(voter="judge").count() == sum(voted.values())
    assert set(study.comparisons.values_list("vote_count", flat=True)) == {0}
    assert not Assignment.objects.exists()

    summary = judge_run_summary(run)
    parsed = sum(j.verdict != "unparsable" for j in judgments)
    with capsys.disabled():
        print(
            f"\ntaught tiny judge in the gpu worker: {parsed}/48 verdicts parsed "
            f"({sum(j.attempts for j in judgments)} tries); summary {summary}"
        )
    assert parsed >= 24  # taught: most of its verdicts parse
