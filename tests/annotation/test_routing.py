"""Routing end to end on PostgreSQL: the judge runs first; people are handed what it was unsure
of (inconsistent, unparsable) in full and an audit sample of what it settled, exactly
round(audit share x consistent) of those; nobody is ever handed a settled comparison, and K,
the quota and votes keep every guarantee they had."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from annotation import results as annotation_results
from annotation import staff, studies
from annotation.loop.state import annotator_progress
from annotation.loop.votes import COMPARISON_FULL
from annotation.models import Assignment, Comparison, Study, Vote
from evalsite.errors import ServiceError
from generation.registry import language_model_register
from judging import results_section as judge_results
from judging import routing
from judging.models import JudgeRun
from judging.runs import judge_run_create, judge_run_execute
from tests.judging.conftest import CannedJudge, longer_wins, study_of

from .judged import CONSISTENT_A, CONSISTENT_B, INCONSISTENT, UNPARSABLE, judged_run

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

K = 2


def _states(comparison_ids: list[int]) -> dict[int, tuple[str, str]]:
    """15 comparisons: 10 the judge was consistent on, 3 inconsistent, 2 unparsable."""
    verdicts = {}
    for i, pk in enumerate(comparison_ids):
        if i < 10:
            verdicts[pk] = CONSISTENT_A if i % 2 else CONSISTENT_B
        elif i < 13:
            verdicts[pk] = INCONSISTENT
        else:
            verdicts[pk] = UNPARSABLE
    return verdicts


@pytest.fixture
def routed(make_study):
    """A routing study (3 models x 5 questions, K = 2) that a judge run has routed."""
    study = make_study(models=3, questions=5, k=K, open_now=False)
    Study.objects.filter(pk=study.pk).update(routing=True)
    study.refresh_from_db()
    ids = list(Comparison.objects.filter(study=study).order_by("pk").values_list("pk", flat=True))
    verdicts = _states(ids)
    run = judged_run(study, verdicts)
    routing.route_after_judge_run(run.pk)  # what the judging app calls when a run succeeds
    study.verdicts = verdicts
    study.run = run
    return study


def _handed_out(client: Client, study: Study, vote=lambda assignment: "left") -> list[int]:
    """Take and vote on pairs through the API until none is left; the comparisons handed out."""
    seen = []
    while (response := client.get(f"/api/studies/{study.pk}/next/")).status_code == 200:
        token = response.json()["token"]
        assignment = Assignment.objects.get(token=token)
        seen.append(assignment.comparison_id)
        voted = client.post(
            f"/api/assignments/{token}/vote/",
            {"choice": vote(assignment)},
            content_type="application/json",
        )
        assert voted.status_code == 201, voted.content
    assert response.status_code == 204
    return seen


def test_the_audit_sample_is_exactly_the_rounded_share_and_reproducible():
    assert routing.audit_size(share=0.2, consistent=10) == 2
    assert routing.audit_size(share=0.2, consistent=12) == 2  # 2.4
    assert routing.audit_size(share=0.2, consistent=13) == 3  # 2.6
    assert routing.audit_size(share=0.5, consistent=5) == 3  # 2.5: halves round up
    assert routing.audit_size(share=0.0, consistent=7) == 0
    assert routing.audit_size(share=1.0, consistent=7) == 7
    states = {pk: routing.CONSISTENT for pk in range(100, 150)}
    states |= {7: routing.INCONSISTENT, 8: routing.UNPARSABLE, 9: routing.UNJUDGED}
    plan = routing.routing_plan(states=states, share=0.2, seed=42)
    assert len(plan.audited) == 10 and len(plan.settled) == 40
    assert plan.unsure == {7, 8, 9}
    assert plan == routing.routing_plan(states=dict(reversed(states.items())), share=0.2, seed=42)
    other = routing.routing_plan(states=states, share=0.2, seed=43)
    assert other.audited != plan.audited  # the seed (the study id) draws the sample


def test_a_comparison_state_needs_both_orders_parsed_and_agreeing():
    assert routing.comparison_state({"a": "a", "b": "a"}) == routing.CONSISTENT
    assert routing.comparison_state({"a": "tie", "b": "tie"}) == routing.CONSISTENT
    assert routing.comparison_state({"a": "a", "b": "tie"}) == routing.INCONSISTENT
    assert routing.comparison_state({"a": "unparsable", "b": "a"}) == routing.UNPARSABLE
    assert routing.comparison_state({"a": "a"}) == routing.UNJUDGED


def test_a_routing_study_does_not_open_before_a_judge_run_has_finished(make_study):
    study = make_study(models=2, questions=3, k=K, open_now=False)
    Study.objects.filter(pk=study.pk).update(routing=True)
    with pytest.raises(ServiceError, match="routing studies need a finished judge run first"):
        studies.study_open(study=study)
    ids = list(Comparison.objects.filter(study=study).values_list("pk", flat=True))
    judged_run(study, dict.fromkeys(ids, CONSISTENT_A), status=JudgeRun.Status.FAILED)
    with pytest.raises(ServiceError, match="routing studies need a finished judge run first"):
        studies.study_open(study=study)
    assert Study.objects.get(pk=study.pk).status == Study.Status.DRAFT
    judged_run(study, dict.fromkeys(ids, CONSISTENT_A))
    opened = studies.study_open(study=study)
    assert opened.status == Study.Status.OPEN
    # 3 consistent: round(0.6) = 1 audited, 2 settled by the judge.
    wanted = list(Comparison.objects.filter(study=study).values_list("votes_wanted", flat=True))
    assert sorted(wanted, key=lambda w: -1 if w is None else w) == [None, 0, 0]


def test_people_get_only_the_unsure_comparisons_and_the_audit_sample(
    routed, annotator, other_annotator
):
    study = routed
    comparisons = Comparison.objects.filter(study=study)
    settled = set(comparisons.filter(votes_wanted=0).values_list("pk", flat=True))
    sent = set(comparisons.filter(votes_wanted=None).values_list("pk", flat=True))
    unsure = {pk for pk, v in study.verdicts.items() if v[0] != v[1] or "unparsable" in v}
    assert len(unsure) == 5
    assert len(settled) == 8 and len(sent) == 7  # 10 consistent: round(0.2 x 10) = 2 audited
    assert unsure < sent
    audited = sent - unsure
    assert audited == routing.study_plan(study=study, run=study.run).audited

    studies.study_open(study=study)
    assert annotator_progress(study_id=study.pk, k=K, annotator=annotator).total == 7
    first, second = Client(), Client()
    first.force_login(annotator)
    second.force_login(other_annotator)
    assert first.get(f"/api/studies/{study.pk}/next/").json()["progress"]["total"] == 7
    handed = [_handed_out(first, study), _handed_out(second, study)]
    for seen in handed:
        assert len(seen) == len(set(seen)) == 7  # never the same pair twice
        assert set(seen) == sent
        assert not set(seen) & settled
    counts = dict(comparisons.values_list("pk", "vote_count"))
    assert {counts[pk] for pk in sent} == {K}
    assert {counts[pk] for pk in settled} == {0}
    assert not Vote.objects.filter(comparison_id__in=settled, voter="people").exists()

    found = judge_results.routing_json(study=study)
    assert found["audited"] == 2
    assert found["settled_by_judge"] == 8
    assert found["sent_to_people"] == 7
    assert found["unsure"] == 5
    assert found["human_votes_saved"] == K * 15 - K * 7


def test_the_audit_agreement_reads_the_audited_comparisons_only(routed, annotator, other_annotator):
    """People agree with the judge on one audited comparison and not the other; on the unsure
    ones they vote whatever: the audit figure must not see those."""
    study = routed
    sent = set(
        Comparison.objects.filter(study=study, votes_wanted=None).values_list("pk", flat=True)
    )
    audited = sorted(routing.study_plan(study=study, run=study.run).audited)
    agree_on = audited[0]
    studies.study_open(study=study)

    def vote(assignment: Assignment) -> str:
        judge_says = study.verdicts[assignment.comparison_id][0]
        if assignment.comparison_id == agree_on:
            wanted = judge_says
        elif assignment.comparison_id in audited:
            wanted = "b" if judge_says == "a" else "a"
        else:
            return "tie"
        return "left" if (wanted == "a") == (assignment.left == "a") else "right"

    for user in (annotator, other_annotator):
        client = Client()
        client.force_login(user)
        assert set(_handed_out(client, study, vote)) == sent

    audit = judge_results.study_routing(study=study).audit_agreement
    assert audit.compared == 2 and audit.agreed == 1
    assert audit.raw_agreement == pytest.approx(0.5)
    assert audit.confusion[0][0] + audit.confusion[2][2] == 1
    # The whole-study agreement also counts the unsure comparisons (the judge's inconsistent
    # verdicts are ties there): 2 audited + 3 inconsistent (the unparsable have no judge votes).
    overall = annotation_results.judge_agreement(study=study)
    assert overall.compared == 5


def test_only_the_latest_succeeded_run_decides_and_a_vote_never_passes_the_target(
    routed, annotator
):
    """A pair in hand when a newer judge run settles it: the vote is refused (its target is 0
    now), the lease is given up, and nobody is handed it again."""
    study = routed
    studies.study_open(study=study)
    # The newer run will be consistent on everything: this is the plan it will give.
    everything = dict.fromkeys(study.verdicts, routing.CONSISTENT)
    plan = routing.routing_plan(states=everything, share=study.audit_share, seed=study.pk)
    assert len(plan.audited) == 3 and len(plan.settled) == 12  # round(0.2 x 15)
    client = Client()
    client.force_login(annotator)
    voted = []
    while True:  # take pairs until one the newer run will settle is in hand
        token = client.get(f"/api/studies/{study.pk}/next/").json()["token"]
        held = Assignment.objects.get(token=token).comparison_id
        if held in plan.settled:
            break
        voted.append(held)
        client.post(
            f"/api/assignments/{token}/vote/", {"choice": "tie"}, content_type="application/json"
        )
    newer = judged_run(study, dict.fromkeys(study.verdicts, CONSISTENT_A))
    routing.route_after_judge_run(newer.pk)
    assert routing.study_plan(study=study, run=newer) == plan
    routing.route_after_judge_run(study.run.pk)  # an older run succeeding late decides nothing
    wanted = dict(Comparison.objects.filter(study=study).values_list("pk", "votes_wanted"))
    assert {pk for pk, w in wanted.items() if w is None} == plan.audited

    response = client.post(
        f"/api/assignments/{token}/vote/", {"choice": "left"}, content_type="application/json"
    )
    assert response.status_code == 409
    assert response.json()["detail"] == COMPARISON_FULL
    assert Comparison.objects.get(pk=held).vote_count == 0
    assert Assignment.objects.get(token=token).status == Assignment.Status.EXPIRED
    seen = _handed_out(client, study)
    assert held not in seen
    assert set(seen) == plan.audited - set(voted)


def test_an_expired_lease_on_a_pair_the_judge_has_since_settled_is_not_renewed(routed, annotator):
    study = routed
    studies.study_open(study=study)
    client = Client()
    client.force_login(annotator)
    token = client.get(f"/api/studies/{study.pk}/next/").json()["token"]
    held = Assignment.objects.get(token=token)
    Assignment.objects.filter(pk=held.pk).update(lease_expires_at=timezone.now())
    Comparison.objects.filter(pk=held.comparison_id).update(votes_wanted=0)
    again = client.get(f"/api/studies/{study.pk}/next/").json()
    assert again["token"] != token
    assert Assignment.objects.get(pk=held.pk).status == Assignment.Status.EXPIRED
    assert again["progress"]["total"] == 6  # the settled pair is no longer theirs to do


def test_staff_progress_counts_the_targets_routing_set(routed):
    (summary,) = [s for s in staff.study_summaries() if s.id == routed.pk]
    assert summary.comparisons == 15
    assert summary.wanted == K * 7


def test_a_study_without_routing_keeps_k_everywhere(make_study, annotator):
    study = make_study(models=2, questions=3, k=1, open_now=False)
    ids = list(Comparison.objects.filter(study=study).values_list("pk", flat=True))
    run = judged_run(study, dict.fromkeys(ids, CONSISTENT_A))
    routing.route_after_judge_run(run.pk)  # routing is off: nothing changes
    assert set(Comparison.objects.filter(study=study).values_list("votes_wanted", flat=True)) == {
        None
    }
    studies.study_open(study=study)
    client = Client()
    client.force_login(annotator)
    assert sorted(_handed_out(client, study)) == sorted(ids)
    assert judge_results.routing_json(study=study) is None


def test_routing_registers_with_the_judging_service():
    from judging import runs

    routing.register()
    routing.register()
    assert runs.JUDGE_RUN.on_success.count(routing.route_after_judge_run) == 1


def _scripted(prompt: str, nth: int = 0) -> str:
    """A served judge that is fair on two questions, always says "answer 1" on the miso one
    (inconsistent under swap) and never gives a verdict on the rainy-day one (unparsable)."""
    if "味噌汁" in prompt:
        return "最初の回答が良いです。\n1"
    if "雨の日" in prompt:
        return "判断できません。"
    return longer_wins(prompt, nth)


def test_a_real_judge_run_routes_its_study_when_it_succeeds(settings, annotator):
    """Through the judging service, a real chat-completions server as the judge: the success
    hook routes the study (6 consistent: 1 audited; 3 inconsistent and 3 unparsable in full)."""
    settings.RUN_HEARTBEAT_INTERVAL = 3600
    routing.register()  # what judging's ready() does
    canned = CannedJudge(reply=_scripted)
    try:
        judge = language_model_register(
            name="canned-routing-judge",
            prompt_format="plain",
            endpoint_url=canned.url,
            endpoint_model="canned-judge",
            endpoint_concurrency=1,
        )
        study = study_of("routed-e2e")
        Study.objects.filter(pk=study.pk).update(routing=True)
        with pytest.raises(ServiceError, match="routing studies need a finished judge run"):
            studies.study_open(study=study)
        run = judge_run_create(judge=judge, study=study, enqueue=False, max_attempts=2)
        assert judge_run_execute(run.pk) is not None
    finally:
        canned.close()
    run.refresh_from_db()
    assert run.status == JudgeRun.Status.SUCCEEDED
    comparisons = Comparison.objects.filter(study=study).select_related("question")
    wanted = {c.pk: (c.question.text, c.votes_wanted) for c in comparisons}
    settled = {pk for pk, (_, w) in wanted.items() if w == 0}
    sent = {pk for pk, (_, w) in wanted.items() if w is None}
    assert len(settled) == 5 and len(sent) == 7
    unsure = {pk for pk, (text, _) in wanted.items() if "味噌汁" in text or "雨の日" in text}
    assert unsure < sent
    study = studies.study_open(study=Study.objects.get(pk=study.pk))
    client = Client()
    client.force_login(annotator)
    assert set(_handed_out(client, study)) == sent
    found = judge_results.routing_json(study=study)
    assert (found["audited"], found["settled_by_judge"], found["unsure"]) == (1, 5, 6)
    assert found["human_votes_saved"] == 5 * study.votes_per_comparison


def test_a_routing_study_is_created_from_the_api_and_the_command(make_runs, client):
    """Routing and its audit share are set where studies are created: the staff API and the
    command (not only the admin), and a share outside 0-1 is refused by both."""
    from django.contrib.auth.models import User
    from django.core.management import CommandError, call_command

    from annotation.models import Study

    built = make_runs(models=2, questions=3)
    run_ids = [r.pk for r in built.runs]
    admin = User.objects.create_superuser("routing-admin", password="x")
    client.force_login(admin)
    made = client.post(
        "/api/studies/",
        {"name": "routed by api", "runs": run_ids, "routing": True, "audit_share": 0.3},
        content_type="application/json",
    )
    assert made.status_code == 201, made.content
    assert made.json()["routing"] is True and made.json()["audit_share"] == 0.3
    bad = client.post(
        "/api/studies/",
        {"name": "bad share", "runs": run_ids, "routing": True, "audit_share": 1.5},
        content_type="application/json",
    )
    assert bad.status_code == 400 and "audit_share" in bad.json()
    call_command(
        "create_study",
        "routed by command",
        "--prompt-set",
        built.runs[0].prompt_set.name,
        "--runs",
        *map(str, run_ids),
        "--routing",
        "--audit-share",
        "0.5",
    )
    study = Study.objects.get(name="routed by command")
    assert study.routing and study.audit_share == 0.5
    with pytest.raises(CommandError, match="audit_share must be between 0 and 1"):
        call_command(
            "create_study",
            "routed badly",
            "--prompt-set",
            built.runs[0].prompt_set.name,
            "--runs",
            *map(str, run_ids),
            "--routing",
            "--audit-share",
            "2",
        )
    assert not Study.objects.filter(name__in=["bad share", "routed badly"]).exists()
