"""Routing: people only where the judge is unsure.

In a study with ``routing`` on, a pairwise judge run sees every comparison first, in both
orders. A comparison whose two verdicts parsed and agree is *consistent*: the judge settled it,
and people are given only an audit sample of those (``Study.audit_share``, exactly
``round(share x consistent)`` of them, drawn at random with the study id as seed so the same run
always draws the same sample). The others (inconsistent, unparsable, or not judged) keep the
full K. The decision is stored as ``Comparison.votes_wanted`` (0: settled, NULL: the study's
K), which the annotator loop reads in place of K; only the latest succeeded judge run decides.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.db import transaction

from annotation.models import Comparison, Study
from evalsite.errors import ServiceError

from .models import JudgePrompt, JudgeRun, Judgment

NEEDS_JUDGE_RUN = (
    "routing studies need a finished judge run first: study {name!r} has no succeeded pairwise "
    "judge run (run `manage.py judge --study NAME --judge MODEL`, or turn routing off)"
)
WRONG_STUDY = "judge run {run} is over study {actual!r}, not {expected!r}"
NOT_PAIRWISE = "judge run {run} grades answers; routing needs a pairwise judge run"
NOT_SUCCEEDED = "judge run {run} is {status}; only a succeeded judge run can route a study"

CONSISTENT, INCONSISTENT, UNPARSABLE, UNJUDGED = "consistent", "inconsistent", "unparsable", ""
_PARSED = {Judgment.Verdict.A, Judgment.Verdict.TIE, Judgment.Verdict.B}


@dataclass(frozen=True)
class Plan:
    """Which comparisons people vote on: ``audited`` (consistent, drawn for the audit) and
    ``unsure`` keep K; ``settled`` (consistent, not drawn) want no votes from people."""

    audited: frozenset[int]
    settled: frozenset[int]
    unsure: frozenset[int]

    @property
    def consistent(self) -> int:
        return len(self.audited) + len(self.settled)


def inclusion_probabilities(plan: Plan) -> dict[int, float]:
    """The chance each comparison of the plan had of being given to people: the audit is a
    simple random sample of the consistent comparisons (audited / consistent each), the unsure
    ones always go. A people's vote's weight in a prediction-powered fit is 1 / (K x this)."""
    consistent = plan.consistent
    share = len(plan.audited) / consistent if consistent else 0.0
    out = {pk: share for pk in (*plan.audited, *plan.settled)}
    out |= {pk: 1.0 for pk in plan.unsure}
    return out


def comparison_state(verdicts: Mapping[str, str]) -> str:
    """One comparison's state from its verdicts by order shown first (``{"a": .., "b": ..}``)."""
    if set(verdicts) != {"a", "b"}:
        return UNJUDGED
    first, second = verdicts["a"], verdicts["b"]
    if first not in _PARSED or second not in _PARSED:
        return UNPARSABLE
    return CONSISTENT if first == second else INCONSISTENT


def audit_size(*, share: float, consistent: int) -> int:
    """round(share x consistent), halves rounded up (Python's round() would round 2.5 to 2)."""
    return min(consistent, math.floor(share * consistent + 0.5 + 1e-9))


def routing_plan(*, states: Mapping[int, str], share: float, seed: int) -> Plan:
    """The plan for comparisons in these states (plain data in, plain data out)."""
    consistent = sorted(pk for pk, state in states.items() if state == CONSISTENT)
    drawn = random.Random(seed).sample(
        consistent, audit_size(share=share, consistent=len(consistent))
    )
    audited = frozenset(drawn)
    return Plan(
        audited=audited,
        settled=frozenset(consistent) - audited,
        unsure=frozenset(pk for pk, state in states.items() if state != CONSISTENT),
    )


def run_states(*, run: JudgeRun, comparisons: Iterable[int]) -> dict[int, str]:
    """The state of each of ``comparisons`` (ids) under this pairwise run's verdicts."""
    verdicts: dict[int, dict[str, str]] = defaultdict(dict)
    found = Judgment.objects.filter(run=run, comparison__isnull=False).values_list(
        "comparison_id", "first", "verdict"
    )
    for comparison_id, first, verdict in found:
        verdicts[comparison_id][first] = verdict
    return {pk: comparison_state(verdicts.get(pk, {})) for pk in comparisons}


def latest_routing_run(*, study: Study) -> JudgeRun | None:
    """The judge run that decides the study's routing: its latest succeeded pairwise run."""
    return (
        JudgeRun.objects.filter(
            study=study, status=JudgeRun.Status.SUCCEEDED, prompt__kind=JudgePrompt.Kind.PAIRWISE
        )
        .order_by("-finished_at", "-pk")
        .first()
    )


def study_plan(*, study: Study, run: JudgeRun) -> Plan:
    """The plan this run gives the study's ordinary comparisons (gold checks have no K)."""
    ordinary = Comparison.objects.filter(study=study, gold=False).values_list("pk", flat=True)
    states = run_states(run=run, comparisons=ordinary)
    return routing_plan(states=states, share=study.audit_share, seed=study.pk)


@transaction.atomic
def route(*, study: Study, judge_run: JudgeRun) -> Plan:
    """Set every comparison's target from this judge run: settled ones 0, the rest the
    study's K (NULL). A vote already given stays; nobody is handed a settled pair again."""
    if judge_run.study_id != study.pk:
        raise ServiceError(
            WRONG_STUDY.format(run=judge_run.pk, actual=judge_run.study.name, expected=study.name)
        )
    if judge_run.grading:
        raise ServiceError(NOT_PAIRWISE.format(run=judge_run.pk))
    if judge_run.status != JudgeRun.Status.SUCCEEDED:
        raise ServiceError(NOT_SUCCEEDED.format(run=judge_run.pk, status=judge_run.status))
    plan = study_plan(study=study, run=judge_run)
    comparisons = Comparison.objects.filter(study=study)
    comparisons.filter(pk__in=plan.settled).exclude(votes_wanted=0).update(votes_wanted=0)
    comparisons.exclude(pk__in=plan.settled).exclude(votes_wanted=None).update(votes_wanted=None)
    return plan


def study_routing_apply(*, study: Study) -> Plan | None:
    """Bring a study's targets in line with its routing option before it opens: routed by its
    latest succeeded pairwise judge run (refused without one), or every comparison back to K
    when routing is off (None)."""
    if not study.routing:
        Comparison.objects.filter(study=study).exclude(votes_wanted=None).update(votes_wanted=None)
        return None
    run = latest_routing_run(study=study)
    if run is None:
        raise ServiceError(NEEDS_JUDGE_RUN.format(name=study.name))
    return route(study=study, judge_run=run)


def route_after_judge_run(run_id: int) -> None:
    """The hook on a succeeded judge run: route its study when the study routes and the run is
    the one that decides (pairwise, the latest succeeded)."""
    run = JudgeRun.objects.select_related("study", "prompt").filter(pk=run_id).first()
    if run is None or not run.study.routing or run.grading:
        return
    latest = latest_routing_run(study=run.study)
    if latest is not None and latest.pk == run.pk:
        route(study=run.study, judge_run=run)


def _apply_at_opening(study: Study) -> None:
    study_routing_apply(study=study)


def register() -> None:
    """Route studies as their judge runs succeed and when they open (judging's ready() calls
    it; registering twice registers once)."""
    from annotation.hooks import on_study_opening

    from .runs import on_judge_run_succeeded

    on_judge_run_succeeded(route_after_judge_run)
    on_study_opening(_apply_at_opening)
