"""Judge runs against a judge whose every reply the test scripts (tests/judging/conftest.py's
canned judge: a real HTTP server), executed in this process: what is created, asked, stored and
voted, and what a resumed run asks again."""

from __future__ import annotations

from collections import Counter

import pytest
from django.core.management import call_command
from django.utils import timezone

from annotation.models import Assignment, Comparison, Vote
from evalsite.accounts.models import AuditEntry
from evalsite.errors import ServiceError
from evalsite.runs import workers
from generation.models import Answer, LanguageModel
from judging import runs
from judging.models import JudgePrompt, JudgeRun, Judgment
from judging.runs import (
    judge_run_cancel,
    judge_run_create,
    judge_run_execute,
    judge_run_retry,
    on_judge_run_succeeded,
)
from judging.summary import judge_run_summary, study_judge_summaries
from tests.judging.conftest import longer_wins, shown_answers, study_of

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _quiet(settings):
    settings.RUN_HEARTBEAT_INTERVAL = 3600


def _expected_outcome(comparison: Comparison) -> str:
    a, b = len(comparison.answer_a.text), len(comparison.answer_b.text)
    return "a" if a > b else "b" if b > a else "tie"


def _create(study, judge, **options) -> JudgeRun:
    return judge_run_create(judge=judge, study=study, enqueue=False, **options)


def test_create_counts_two_verdicts_per_comparison_and_one_per_graded_answer(served_judge):
    study = study_of()
    run = _create(study, served_judge)
    assert study.comparisons.count() == 12  # 3 model pairs x 4 questions
    assert (run.total, run.done, run.status) == (24, 0, JudgeRun.Status.QUEUED)
    assert (run.prompt.name, run.prompt.kind) == ("ja_pairwise", "pairwise")
    assert run.params == {"do_sample": False, "max_new_tokens": 256}
    assert run.template.name == "plain"
    graded = _create(study, served_judge, grading=True, params={"max_new_tokens": 64})
    assert graded.prompt.name == "ja_grading"
    assert graded.total == Answer.objects.filter(run__in=study.runs.all()).count() == 12
    assert graded.params == {"do_sample": False, "max_new_tokens": 64}
    chosen = list(study.comparisons.values_list("pk", flat=True)[:3])
    some = _create(study, served_judge, comparisons=chosen)
    assert (some.total, sorted(some.comparison_ids)) == (6, sorted(chosen))
    entry = AuditEntry.objects.get(object_id=str(run.pk), action=AuditEntry.Action.JUDGE_RUN_START)
    assert entry.details["verdicts"] == 24 and entry.details["judge"] == served_judge.name
    # A served judge only sends requests; a judge with weights needs the GPU worker.
    assert workers.run_queue(run) == "default"
    local = LanguageModel.objects.get(name="judged-short")
    assert workers.run_queue(_create(study, local)) == "gpu"


def test_create_refuses_what_cannot_be_judged(served_judge):
    study = study_of()
    other = study_of("other")
    grading_prompt = JudgePrompt.objects.get(name="ja_grading")
    foreign = other.comparisons.first().pk
    cases = [
        ({"judge": LanguageModel(name="ghost")}, "neither weights nor an endpoint"),
        ({"prompt": grading_prompt}, "a pairwise run needs a pairwise prompt"),
        ({"comparisons": [foreign]}, f"comparison(s) {foreign} do not belong to study"),
        ({"inconsistent": "coinflip"}, "inconsistent must be one of: tie, exclude"),
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"params": {"beam_width": 3}}, "unknown generation parameters: beam_width"),
        ({"params": {"typical_p": 0.5}}, "cannot take generation parameter(s) typical_p"),
        ({"comparisons": []}, "has no comparisons to judge"),
    ]
    for options, message in cases:
        options = {"judge": served_judge, **options}
        with pytest.raises(ServiceError, match=message.replace("(", r"\(").replace(")", r"\)")):
            judge_run_create(study=study, enqueue=False, **options)
    study.comparisons.update(gold=True, gold_expected="tie")
    with pytest.raises(ServiceError, match="gold checks are not judged"):
        _create(study, served_judge)
    assert not JudgeRun.objects.exists()


def test_each_comparison_is_judged_once_in_each_order_and_becomes_two_judge_votes(
    served_judge, canned_judge
):
    study = study_of()
    run = _create(study, served_judge)
    assert judge_run_execute(run.pk) is not None
    run.refresh_from_db()
    assert run.status == JudgeRun.Status.SUCCEEDED, run.error
    assert (run.done, run.total) == (24, 24)

    # Asked once per comparison and order: 24 distinct prompts, each once.
    asked = canned_judge.prompts()
    assert len(asked) == len(set(asked)) == 24
    judgments = list(Judgment.objects.filter(run=run).select_related("comparison", "vote"))
    assert Counter((j.comparison_id, j.first) for j in judgments) == {
        (c.pk, first): 1 for c in study.comparisons.all() for first in "ab"
    }
    assert sorted(j.prompt_text for j in judgments) == sorted(asked)
    for j in judgments:
        comparison = j.comparison
        shown = shown_answers(j.prompt_text)
        in_order = (comparison.answer_a.text, comparison.answer_b.text)
        assert shown == (in_order if j.first == "a" else in_order[::-1])
        assert j.verdict == _expected_outcome(comparison)
        assert (j.attempts, j.outputs, j.raw_output) == (
            1,
            [j.raw_output],
            longer_wins(j.prompt_text),
        )
        vote = j.vote
        assert (vote.voter, vote.judge, vote.first_shown) == ("judge", "canned-judge", j.first)
        assert (vote.outcome, vote.imported, vote.comparison_id) == (
            j.verdict,
            False,
            comparison.pk,
        )
        assert vote.annotator_id is None and vote.assignment_id is None
    assert Vote.objects.filter(voter="judge").count() == 24

    # K counts people only: no vote counted, no assignment, no lease.
    assert set(study.comparisons.values_list("vote_count", flat=True)) == {0}
    assert not Assignment.objects.exists()
    # The request carried the judge prompt's system prompt and greedy decoding.
    body = canned_judge.asked[0].body
    assert body["messages"][0] == {"role": "system", "content": run.prompt.system_prompt}
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.0, 256, 0)
    assert run.requests == 24
    assert run.usage["prompt_tokens"] == sum(len(p) for p in asked)
    summary = judge_run_summary(run)
    assert summary == {
        "judged": 12,
        "expected": 12,
        "consistent": 12,
        "inconsistent": 0,
        "unparsable": 0,
        "votes": 24,
    }
    (listed,) = study_judge_summaries(study)
    assert listed["judge"] == "canned-judge" and listed["prompt"] == "ja_pairwise v1"
    assert (listed["mode"], listed["status"], listed["done"]) == ("pairwise", "succeeded", 24)


@pytest.mark.parametrize("policy", ["tie", "exclude"])
def test_disagreeing_orders_are_a_tie_or_left_out(served_judge, canned_judge, policy):
    canned_judge.reply = lambda prompt, nth: "最初の回答が良いです。\n1"  # always answer 1
    study = study_of(models=("short", "long"))
    run = _create(study, served_judge, inconsistent=policy)
    judge_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == JudgeRun.Status.SUCCEEDED
    for comparison in study.comparisons.all():
        verdicts = dict(
            Judgment.objects.filter(comparison=comparison).values_list("first", "verdict")
        )
        assert verdicts == {"a": "a", "b": "b"}  # whichever was shown first "won"
    votes = Vote.objects.filter(voter="judge")
    if policy == "tie":
        # One win each way: a tie when aggregated (MT-Bench's rule).
        assert sorted(votes.values_list("outcome", flat=True)) == ["a"] * 4 + ["b"] * 4
    else:
        assert not votes.exists()
    summary = judge_run_summary(run)
    assert (summary["consistent"], summary["inconsistent"]) == (0, 4)
    assert summary["votes"] == (8 if policy == "tie" else 0)


def test_unparsable_output_is_asked_again_then_recorded_as_unparsable(served_judge, canned_judge):
    study = study_of(models=("short", "long"))
    hopeless = study.comparisons.order_by("pk").select_related("answer_a").first()
    hopeless_text = hopeless.answer_a.text  # read here: the server thread has no transaction

    def reply(prompt: str, nth: int) -> str:
        if hopeless_text in prompt or nth == 0:
            return "どちらとも言えない気がします。"  # no verdict line
        return longer_wins(prompt)

    canned_judge.reply = reply
    run = _create(study, served_judge, max_attempts=3, seed=5)
    judge_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == JudgeRun.Status.SUCCEEDED, run.error

    by_key = {(j.comparison_id, j.first): j for j in Judgment.objects.filter(run=run)}
    assert len(by_key) == 8
    for (comparison_id, _), j in by_key.items():
        if comparison_id == hopeless.pk:
            assert (j.verdict, j.attempts, len(j.outputs)) == ("unparsable", 3, 3)
            assert j.raw_output == j.outputs[-1] == "どちらとも言えない気がします。"
            assert j.vote is None
        else:
            assert (j.attempts, len(j.outputs)) == (2, 2)
            assert j.verdict == _expected_outcome(j.comparison) and j.vote is not None
    # 8 first tries, 8 second tries, then the hopeless comparison's two orders a third time.
    assert len(canned_judge.asked) == run.requests == 8 + 8 + 2
    # Greedy first; the retries sample at 0.7 with the next seeds.
    tries = Counter((a.body["temperature"], a.body["seed"]) for a in canned_judge.asked)
    assert tries == {(0.0, 5): 8, (0.7, 6): 8, (0.7, 7): 2}
    summary = judge_run_summary(run)
    assert (summary["consistent"], summary["unparsable"], summary["votes"]) == (3, 1, 6)


def test_a_resumed_run_asks_only_for_the_verdicts_it_is_missing(served_judge, canned_judge):
    study = study_of()
    canned_judge.fail_after = 9  # the 10th request is refused: the run fails part-way
    run = _create(study, served_judge)
    judge_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == JudgeRun.Status.FAILED
    assert "refused by the test" in run.error
    stored = {(j.comparison_id, j.first): j.pk for j in Judgment.objects.filter(run=run)}
    assert len(stored) == run.done == 9
    first_prompts = canned_judge.prompts()[:9]

    canned_judge.fail_after = None
    judge_run_retry(run=run)
    judge_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == JudgeRun.Status.SUCCEEDED, run.error
    assert (run.done, run.attempts) == (24, 2)
    refused, *later = canned_judge.prompts()[9:]
    # The refused prompt is asked again (nothing was stored for it); the 9 stored never are.
    assert len(later) == len(set(later)) == 15 and refused in later
    assert not set(later) & set(first_prompts)
    rows = Judgment.objects.filter(run=run)
    assert rows.count() == 24
    assert {
        (j.comparison_id, j.first): j.pk for j in rows if (j.comparison_id, j.first) in stored
    } == stored
    assert Vote.objects.filter(voter="judge").count() == 24
    assert judge_run_execute(run.pk) is None  # finished: not claimable again


def test_grading_stores_one_score_per_answer(served_judge, canned_judge):
    def reply(prompt: str, nth: int) -> str:
        if "味噌汁" in prompt:
            return "採点できません。"
        answer = prompt.split("[回答]\n")[1]
        return (
            "よく書けています。\n評価: 4" if "おすすめします" in answer else "短すぎます。\n評価: 2"
        )

    canned_judge.reply = reply
    study = study_of(models=("short", "long"))
    run = _create(study, served_judge, grading=True, max_attempts=2)
    judge_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == JudgeRun.Status.SUCCEEDED, run.error
    rows = list(Judgment.objects.filter(run=run).select_related("answer"))
    assert len(rows) == 8 and {r.answer_id for r in rows} == set(
        Answer.objects.filter(run__in=study.runs.all()).values_list("pk", flat=True)
    )
    for row in rows:
        assert row.comparison_id is None and row.first == "" and row.vote is None
        assert "[回答]\n" + row.answer.text in row.prompt_text
        assert row.answer.question.reference in row.prompt_text  # the reference is shown
        if "味噌汁" in row.prompt_text:
            assert (row.verdict, row.score, row.attempts) == ("unparsable", None, 2)
        else:
            long = "おすすめします" in row.answer.text
            assert (row.verdict, row.score) == ("scored", 4 if long else 2)
    assert judge_run_summary(run) == {"graded": 6, "unparsable": 2, "expected": 8}
    assert not Vote.objects.exists()


def test_cancel_retry_and_the_success_hook(served_judge, canned_judge):
    study = study_of(models=("short", "long"))
    run = _create(study, served_judge)
    judge_run_cancel(run=run)
    assert judge_run_execute(run.pk) is None and canned_judge.asked == []
    with pytest.raises(ServiceError, match="only queued or running runs can be cancelled"):
        judge_run_cancel(run=run)
    judge_run_retry(run=run)
    seen = []
    hook = on_judge_run_succeeded(seen.append)
    try:
        judge_run_execute(run.pk)
    finally:
        runs.JUDGE_RUN.on_success.remove(hook)
    assert seen == [run.pk]
    run.refresh_from_db()
    with pytest.raises(ServiceError, match="only failed or cancelled runs can be retried"):
        judge_run_retry(run=run)


def test_the_judge_command_runs_inline_and_prints_the_summary(served_judge, canned_judge, capsys):
    study = study_of(models=("short", "long"))
    call_command("judge", "--study", study.name, "--judge", served_judge.name, "--inline")
    out = capsys.readouterr().out
    assert "8 verdicts to ask for" in out
    assert "succeeded: 8/8" in out
    assert "judged 4, expected 4, consistent 4, inconsistent 0, unparsable 0, votes 8" in out


def test_a_queued_judge_run_nobody_takes_is_explained_with_its_queue(served_judge):
    study = study_of(models=("short", "long"))
    local = LanguageModel.objects.get(name="judged-short")
    nobody = workers.Census(known=True, taken_at=timezone.now(), workers={"w@h": ("default",)})
    for judge, queue in ((local, "gpu"), (served_judge, "default")):
        run = _create(study, judge)
        message = workers.no_worker_message(run, nobody, inline=True)
        assert message.startswith(f"No worker has taken judge run {run.pk}")
        assert f"-Q {queue} " in message
        warning = workers.unconsumed_warning([run], nobody)
        assert (warning is None) == (queue == "default")


@pytest.mark.slow
def test_a_local_judge_refuses_prompts_longer_than_its_context(tiny_model_dir):
    from tests.generation.conftest import register_tiny

    judge = register_tiny(tiny_model_dir)  # a 512-token context
    study = study_of(models=("short", "long"))
    # Refused when the run is created (judging/fit.py), in one line, before any worker.
    with pytest.raises(ServiceError) as refused:
        _create(study, judge, params={"max_new_tokens": 400})
    assert "the judge prompt does not fit judge 'tiny' by " in str(refused.value)
    assert "of its 512-token context" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not JudgeRun.objects.filter(study=study).exists()


@pytest.mark.django_db(transaction=True)
def test_a_run_cancelled_while_it_runs_stops_asking_and_stays_cancelled(served_judge, canned_judge):
    from django.db import connection

    study = study_of()
    run = _create(study, served_judge)

    def reply(prompt: str, nth: int) -> str:
        if len(canned_judge.asked) == 3:  # an admin cancels while the third verdict is asked
            judge_run_cancel(run=JudgeRun.objects.get(pk=run.pk))
            connection.close()  # this server thread's own connection
        return longer_wins(prompt)

    canned_judge.reply = reply
    judge_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == JudgeRun.Status.CANCELLED
    # Replies in flight are kept; with one request at a time, at most the one sent before the
    # cancel was seen follows the third, and none after.
    asked = len(canned_judge.asked)
    assert asked in (3, 4) and Judgment.objects.filter(run=run).count() == run.done == asked
