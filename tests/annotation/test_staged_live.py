"""The staged prediction-powered design, live (annotation/staging.py, loop/staged.py): the cost
bench's best design run on a real study.

Real data nobody here wrote: Rakuda's questions and four models' answers with GPT-4's verdicts
on their matches (its published tournament, imported as the judge's votes; the study's
comparisons are the matches GPT-4 judged). Simulated annotators vote through the annotator
API (people's strengths: Rakuda's published order, evenly spaced); each stage after the pilot
is planned by the stage plan run the filling vote queued, executed by the spine's own
``lifecycle.execute`` (what a worker's message runs). Every vote's recorded weight is checked
against the design's formula, the prediction-powered fit against the simulation's fit of the
same votes, and the results page and API against what happened."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import call_command

from annotation import studies
from annotation.battles import rakuda_tournament_to_battles, write_battles
from annotation.models import Assignment, Comparison, StageDraw, StagePlan, Study, Vote
from annotation.ranking import ELO_MEAN, ELO_PER_LOG, designs
from annotation.ranking.designs import STAGES
from annotation.staging import (
    HAS_PEOPLE,
    LAST_STAGE,
    NEEDS_JUDGE,
    NOT_WITH_ROUTING,
    SMALL_BUDGET,
    STAGE_OPEN,
    open_in_stage,
    stage_plan_execute,
    stage_plan_start,
    staged_open,
    study_data,
)
from annotation.study_votes import study_votes
from evalsite.errors import ServiceError
from generation.models import LanguageModel
from tests.conftest import choice_for, logged_in, wait_for

from .test_concurrency import _annotators

pytestmark = pytest.mark.django_db

TOURNAMENT = "rakuda/hist_ea2b4dc/jrank/tournaments/rakuda_v1_gpt4.jsonl"
PUBLISHED = "rakuda/hist_ea2b4dc/jrank/rankings/rakuda_v1_gpt4.json"
MODELS = (
    "gpt-4:20230713",
    "gpt-3.5-turbo-0301:20230614",
    "cyberagent/open-calm-7b",
    "rinna/japanese-gpt-neox-3.6b",
)
STUDY = "rakuda staged"
BUDGET = 300
# Nobody votes twice on a comparison: more people than its slots in all three stages can ask
# (one in the pilot, at most MAX_VOTES in each planned stage).
ANNOTATORS = 1 + 2 * designs.MAX_VOTES
TIE_SHARE = 0.12


@pytest.fixture
def rakuda_study(tmp_path, external_data) -> Study:
    """A draft study of four Rakuda models over its 40 questions, GPT-4's verdicts imported
    as the judge's votes (on some of the comparisons only)."""
    tournament = external_data / TOURNAMENT
    if not tournament.is_file():
        pytest.skip(f"Rakuda tournament not found: {tournament}")
    records = [
        r
        for r in rakuda_tournament_to_battles(tournament)
        if r.model_a in MODELS and r.model_b in MODELS
    ]
    path = tmp_path / "gpt4.jsonl"
    path.write_text(write_battles(records), encoding="utf-8")
    call_command("import_votes", str(path), "--study", STUDY, "--voters", "judge")
    return Study.objects.get(name=STUDY)


def _judged_only(study: Study) -> None:
    """The study's comparisons are the matches GPT-4 judged (the others, never voted on, go)."""
    Comparison.objects.filter(study=study).exclude(
        pk__in=Vote.objects.filter(voter=Vote.Voter.JUDGE).values("comparison_id")
    ).delete()


def _people_strengths(external_data) -> dict[str, float]:
    published = json.loads((external_data / PUBLISHED).read_text(encoding="utf-8"))["ranking"]
    names = [p["model_id"] for p in sorted(published, key=lambda p: -p["median"])]
    names = [n for n in names if n in MODELS]
    return dict(zip(names, np.linspace(0.9, -0.9, len(names)), strict=True))


def _vote_round(clients, theta, rng) -> int:
    """Every annotator takes a pair and votes while any is served; returns the votes cast."""
    cast = 0
    while True:
        served = 0
        for client, study in clients:
            found = client.get(f"/api/studies/{study.pk}/next/")
            if found.status_code == 204:
                continue
            assert found.status_code == 200, found.content
            served += 1
            token = found.json()["token"]
            assignment = Assignment.objects.select_related(
                "comparison__run_a__model", "comparison__run_b__model"
            ).get(token=token)
            c = assignment.comparison
            p_a = (1 - TIE_SHARE) / (
                1 + np.exp(theta[c.run_b.model.name] - theta[c.run_a.model.name])
            )
            outcome = rng.choice(["a", "tie", "b"], p=[p_a, TIE_SHARE, 1 - TIE_SHARE - p_a])
            response = client.post(
                f"/api/assignments/{token}/vote/",
                {"choice": choice_for(assignment, outcome)},
                content_type="application/json",
            )
            assert response.status_code in (200, 201), response.content
            cast += 1
        if not served:
            return cast


def _weights_are_the_designs(study: Study) -> None:
    """Every people's vote carries its stage's draw, and weighs share / (slots x p)."""
    draws = {
        (d.plan.stage, d.comparison_id): d
        for d in StageDraw.objects.filter(plan__study=study).select_related("plan")
    }
    records = {r.pk: r for r in study_votes(study).records}
    people = Vote.objects.filter(comparison__study=study, voter=Vote.Voter.PEOPLE)
    assert people.exists()
    for vote in people:
        draw = draws[vote.stage, vote.comparison_id]
        assert (vote.share, vote.cap, vote.asked) == (
            STAGES[vote.stage - 1],
            draw.slots,
            draw.probability,
        )
        expected = STAGES[vote.stage - 1] / (draw.slots * draw.probability)
        assert designs.stage_weight(vote.share, vote.cap, vote.asked) == pytest.approx(expected)
        # The plain fit's weight is the same in units of uniform K's votes.
        assert records[vote.pk].weight == pytest.approx(study.votes_per_comparison * expected)


def test_a_live_staged_study_runs_the_bench_design_to_its_last_stage(
    rakuda_study, external_data, django_user_model, staff_user, client
):
    study = rakuda_study
    _judged_only(study)
    n = Comparison.objects.filter(study=study).count()
    study.sampling = Study.Sampling.STAGED
    study.human_budget = BUDGET
    study.save(update_fields=["sampling", "human_budget"])
    study = studies.study_open(study=study)

    # Stage 1, the pilot: drawn alike, each comparison with the same known probability.
    [pilot] = StagePlan.objects.filter(study=study)
    assert (pilot.stage, pilot.status, pilot.share) == (1, "succeeded", STAGES[0])
    drawn = {d.comparison_id: d for d in pilot.draws.all()}
    assert drawn and all(d.slots == 1 for d in drawn.values())
    assert [d.probability for d in drawn.values()] == pytest.approx(
        [STAGES[0] * BUDGET / n] * len(drawn)
    )
    wanted = dict(Comparison.objects.filter(study=study).values_list("pk", "votes_wanted"))
    assert {pk: w for pk, w in wanted.items() if w} == {pk: d.slots for pk, d in drawn.items()}
    assert pilot.votes == sum(d.slots for d in drawn.values()) == sum(wanted.values())

    theta = _people_strengths(external_data)
    users = _annotators(django_user_model, ANNOTATORS, "staged")
    clients = [(logged_in(u), study) for u in users]
    rng = np.random.default_rng(28)
    for stage in range(1, len(STAGES) + 1):
        plan = StagePlan.objects.get(study=study, stage=stage)
        cast = _vote_round(clients, theta, rng)
        assert cast == plan.votes  # every slot drawn was served and filled, none more
        _weights_are_the_designs(study)
        if stage == len(STAGES):
            break
        # The vote that filled the stage queued the next plan; the spine runs it.
        queued = StagePlan.objects.get(study=study, stage=stage + 1)
        assert queued.status == StagePlan.Status.QUEUED and not queued.draws.exists()
        assert stage_plan_start(study=study) == queued  # asked again: the same run
        if stage == 1:  # what a worker's message runs
            done = stage_plan_execute(queued.pk)
        else:  # staff's command on the same run (it makes no second one)
            out = io.StringIO()
            call_command("plan_stage", study.name, "--inline", stdout=out)
            assert f"stage {stage + 1} of {study.name} drawn" in out.getvalue()
            done = StagePlan.objects.get(pk=queued.pk)
        assert done is not None and done.status == StagePlan.Status.SUCCEEDED, done.error
        assert done.total == done.draws.count() > 0
        assert stage_plan_execute(queued.pk) is None  # once only: not claimable again
        wanted_now = dict(Comparison.objects.filter(study=study).values_list("pk", "votes_wanted"))
        counts = dict(Comparison.objects.filter(study=study).values_list("pk", "vote_count"))
        raised = {pk: wanted_now[pk] - counts[pk] for pk in counts if wanted_now[pk] > counts[pk]}
        assert raised == {d.comparison_id: d.slots for d in done.draws.all()}
        # The planned stage spends its share of the budget, in expectation.
        expected = sum(d.slots * d.probability for d in done.draws.all())
        assert expected <= STAGES[stage] * BUDGET + 1e-6

    with pytest.raises(ServiceError) as error:
        stage_plan_start(study=study)
    assert str(error.value) == LAST_STAGE.format(name=study.name, stages=len(STAGES))
    assert not StagePlan.objects.filter(study=study, stage=len(STAGES) + 1).exists()

    # The prediction-powered fit is the simulation's fit of the same votes (one engine, one
    # weight), and the results name the design, the stage, and the votes.
    client.force_login(staff_user)
    body = client.get(f"/api/studies/{study.pk}/results/").json()["prediction_powered"]
    people = Vote.objects.filter(comparison__study=study, voter=Vote.Voter.PEOPLE).count()
    judge = Vote.objects.filter(comparison__study=study, voter=Vote.Voter.JUDGE).count()
    assert body["design"] == "staged (prediction-powered)"
    assert (body["human_votes"], body["judge_votes"]) == (people, judge)
    assert body["staged"]["stage"] == len(STAGES) and body["staged"]["human_budget"] == BUDGET
    assert [p["votes"] for p in body["staged"]["plans"]] == [
        p.votes for p in StagePlan.objects.filter(study=study).order_by("stage")
    ]
    _, comparisons, by_stage = study_data(study)
    parts = [
        tuple(np.array([v[i] for v in by_stage[s]]) for i in range(3))
        for s in range(1, len(STAGES) + 1)
    ]
    sample = designs.Sample(*(np.concatenate([p[i] for p in parts]) for i in range(3)), True)
    fitted = designs.fit_sample(comparisons, sample)
    pairs = Comparison.objects.filter(study=study).values_list("run_a__model_id", "run_b__model_id")
    ids = sorted({m for pair in pairs for m in pair})  # study_data's order of the models
    names = dict(LanguageModel.objects.filter(pk__in=ids).values_list("pk", "name"))
    ours = {names[m]: ELO_MEAN + ELO_PER_LOG * fitted.theta[i] for i, m in enumerate(ids)}
    powered = {m["name"]: m["strength"] for m in body["fits"]["prediction-powered"]["models"]}
    assert powered == pytest.approx(ours, abs=1e-4)
    page = client.get(f"/studies/{study.pk}/results/").content.decode()
    assert "staged (prediction-powered)" in page
    assert f"stage {len(STAGES)} of {len(STAGES)} reached" in page


def _unchanged(study: Study) -> None:
    study.refresh_from_db()
    assert study.status == Study.Status.DRAFT
    assert not StagePlan.objects.filter(study=study).exists()
    assert set(Comparison.objects.filter(study=study).values_list("votes_wanted", flat=True)) == {
        None
    }


def test_opening_without_the_judge_on_every_comparison_is_refused(rakuda_study):
    study = rakuda_study
    study.sampling = Study.Sampling.STAGED
    study.save(update_fields=["sampling"])
    total = Comparison.objects.filter(study=study).count()
    judged = (
        Vote.objects.filter(comparison__study=study, voter=Vote.Voter.JUDGE)
        .values("comparison_id")
        .distinct()
        .count()
    )
    assert 0 < judged < total
    with pytest.raises(ServiceError) as error:
        studies.study_open(study=study)
    assert str(error.value) == NEEDS_JUDGE.format(missing=total - judged, total=total)
    _unchanged(study)
    assert study.human_budget is None


def test_a_budget_too_small_for_the_pilot_is_refused(rakuda_study):
    study = rakuda_study
    _judged_only(study)
    study.sampling = Study.Sampling.STAGED
    study.human_budget = 50  # a pilot of 5 votes for 6 model pairs
    study.save(update_fields=["sampling", "human_budget"])
    with pytest.raises(ServiceError) as error:
        studies.study_open(study=study)
    assert str(error.value) == SMALL_BUDGET.format(
        budget=50, pilot=5.0, share=STAGES[0], pairs=6, need=60
    )
    _unchanged(study)
    assert study.human_budget == 50


def test_a_staged_study_with_routing_on_is_refused(rakuda_study):
    study = rakuda_study
    _judged_only(study)
    study.sampling = Study.Sampling.STAGED
    study.routing = True
    study.save(update_fields=["sampling", "routing"])
    # Opening asks routing's own check first (a succeeded pairwise judge run): refused there.
    with pytest.raises(ServiceError):
        studies.study_open(study=study)
    _unchanged(study)
    # The staged design's own refusal, past that check.
    with pytest.raises(ServiceError) as error:
        staged_open(study)
    assert str(error.value) == NOT_WITH_ROUTING
    _unchanged(study)


def test_a_staged_study_with_peoples_votes_already_in_is_refused(rakuda_study):
    """Each vote's weight comes from the stage that asked for it: votes from before the
    study opened have none, so opening refuses rather than fit them with a made-up one."""
    study = rakuda_study
    _judged_only(study)
    study.sampling = Study.Sampling.STAGED
    study.save(update_fields=["sampling"])
    comparison = Comparison.objects.filter(study=study).order_by("pk").first()
    # An imported people's vote (a vote file's): it has no stage to weigh it by.
    Vote.objects.create(comparison=comparison, outcome="a", imported=True)
    with pytest.raises(ServiceError) as error:
        studies.study_open(study=study)
    assert str(error.value) == HAS_PEOPLE.format(votes=1)
    _unchanged(study)


def test_the_default_budget_is_the_uniform_designs_cost(rakuda_study):
    study = rakuda_study
    _judged_only(study)
    study.sampling = Study.Sampling.STAGED
    study.save(update_fields=["sampling"])
    n = Comparison.objects.filter(study=study).count()
    studies.study_open(study=study)
    study.refresh_from_db()
    assert study.human_budget == study.votes_per_comparison * n
    plan = StagePlan.objects.get(study=study, stage=1)
    assert plan.budget == pytest.approx(STAGES[0] * study.votes_per_comparison * n)


def test_staff_cannot_plan_a_stage_before_the_one_drawn_is_full(rakuda_study, admin_user):
    study = rakuda_study
    _judged_only(study)
    study.sampling = Study.Sampling.STAGED
    study.save(update_fields=["sampling"])
    client = logged_in(admin_user)
    client.post(
        "/admin/annotation/study/", {"action": "open_studies", ACTION_CHECKBOX_NAME: [study.pk]}
    )
    pilot = StagePlan.objects.get(study=study)
    # The change page shows the budget fixed now that the study is open.
    page = client.get(f"/admin/annotation/study/{study.pk}/change/").content.decode()
    assert 'name="human_budget"' not in page
    response = client.post(
        "/admin/annotation/study/",
        {"action": "plan_next_stage", ACTION_CHECKBOX_NAME: [study.pk]},
        follow=True,
    )
    said = [str(m) for m in response.context["messages"]]
    assert said == [STAGE_OPEN.format(stage=1, name=study.name, open=pilot.total)]
    assert list(StagePlan.objects.filter(study=study)) == [pilot]


# Only guards against a hung worker; nothing here asserts on time.
HUNG = 300


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_plans_each_stage_the_filling_vote_queued(
    rakuda_study, external_data, django_user_model, shared_worker
):
    # The whole path with nothing called by hand: the vote that fills a stage commits, its
    # stage plan goes to the broker, a real Celery worker claims and draws it, and the next
    # stage's comparisons are served.
    study = rakuda_study
    _judged_only(study)
    study.sampling = Study.Sampling.STAGED
    study.human_budget = BUDGET
    study.save(update_fields=["sampling", "human_budget"])
    study = studies.study_open(study=study)
    shared_worker("default")
    theta = _people_strengths(external_data)
    users = _annotators(django_user_model, ANNOTATORS, "worker-staged")
    clients = [(logged_in(u), study) for u in users]
    rng = np.random.default_rng(29)

    def served_or_done() -> bool:
        # Something to vote on again (the worker drew the next stage), or the last stage full.
        last = StagePlan.objects.filter(study=study, stage=len(STAGES))
        return open_in_stage(study) > 0 or (
            last.filter(status=StagePlan.Status.SUCCEEDED).exists() and not open_in_stage(study)
        )

    # Vote while pairs are served; when none is, wait for the worker (a round may run on into
    # the next stage when the worker draws it first).
    while True:
        _vote_round(clients, theta, rng)
        wait_for(served_or_done, timeout=HUNG, message="the worker to plan the next stage")
        if not open_in_stage(study):
            break
    plans = list(StagePlan.objects.filter(study=study).order_by("stage"))
    assert [p.stage for p in plans] == [1, 2, 3]
    for plan in plans[1:]:  # drawn by the worker, once
        assert plan.worker and plan.attempts == 1 and plan.total == plan.draws.count() > 0
    people = Vote.objects.filter(comparison__study=study, voter=Vote.Voter.PEOPLE)
    for plan in plans:
        assert people.filter(stage=plan.stage).count() == plan.votes
    _weights_are_the_designs(study)
