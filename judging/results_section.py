"""The LLM judge's part of a study's results (page, API, JSON export): what each judge run came
to, and for a routing study what routing saved and whether the judge can be trusted with it.

Routing figures are read from what routing stored (``Comparison.votes_wanted``) rather than
recomputed from the study's options, so they describe the targets the annotators were actually
given. The audit agreement is people against the routing run's votes on the audited sample only
(consistent comparisons drawn for people): the comparisons the judge settled have too few
people's votes to compare, and the unsure ones would make the judge look worse than it is on
the comparisons it was trusted with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db.models import Q

from annotation.hooks import (
    PeopleDesign,
    ResultsSection,
    people_design_register,
    results_section_register,
)
from annotation.models import Comparison, Study

from .routing import CONSISTENT, latest_routing_run, run_states, study_plan
from .summary import study_judge_summaries

if TYPE_CHECKING:
    from annotation import agreement


def judge_runs_json(*, study: Study) -> list[dict]:
    """Per judge run of the study, oldest first: judge, prompt, state and its counts (judged,
    consistent, inconsistent, unparsable, votes; graded for grading runs). Staff only."""
    return study_judge_summaries(study)


@dataclass(frozen=True)
class Routing:
    judge_run: int | None  # the run that decided (its latest succeeded pairwise run)
    audit_share: float
    comparisons: int  # ordinary comparisons (gold checks have no K)
    sent_to_people: int  # comparisons people are asked to vote on (target above 0)
    audited: int  # ... of which the judge was consistent on (the audit sample)
    settled_by_judge: int  # target 0: people are never given them
    human_votes_wanted: int  # the targets, summed
    human_votes_saved: int  # K x comparisons - human_votes_wanted
    audit_agreement: agreement.JudgeAgreement | None

    @property
    def unsure(self) -> int:
        return self.sent_to_people - self.audited


def study_routing(*, study: Study) -> Routing | None:
    """What routing did to a routing study (None when the study does not route)."""
    if not study.routing:
        return None
    k = study.votes_per_comparison
    targets = dict(
        Comparison.objects.filter(study=study, gold=False).values_list("pk", "votes_wanted")
    )
    wanted = {pk: k if target is None else target for pk, target in targets.items()}
    sent = sorted(pk for pk, target in wanted.items() if target > 0)
    run = latest_routing_run(study=study)
    audited: list[int] = []
    found = None
    if run is not None:
        states = run_states(run=run, comparisons=sent)
        audited = [pk for pk in sent if states[pk] == CONSISTENT]
        found = _audit_agreement(study=study, run=run, audited=audited)
    total_wanted = sum(wanted.values())
    return Routing(
        judge_run=run.pk if run is not None else None,
        audit_share=study.audit_share,
        comparisons=len(wanted),
        sent_to_people=len(sent),
        audited=len(audited),
        settled_by_judge=sum(1 for target in wanted.values() if target == 0),
        human_votes_wanted=total_wanted,
        human_votes_saved=k * len(wanted) - total_wanted,
        audit_agreement=found,
    )


def _audit_agreement(*, study: Study, run, audited: list[int]) -> agreement.JudgeAgreement | None:
    """People against this run's judge votes, on the audited comparisons only (None until
    both have voted on one of them). No strength orders: a sample is too small to fit."""
    if not audited:
        return None
    # The routing design's judge votes are this run's (``routing_design``), so its votes are
    # those the study's read marks as the design's: no second read of the vote table.
    on_sample = set(audited)
    # annotation's results and agreement import scipy: here, not when Django starts (this
    # module is imported by judging's ready() to register the section).
    from annotation import agreement, results

    people, _ = results.study_vote_rows(study=study, voters="people", comparisons=on_sample)
    judge, _ = results.study_vote_rows(
        study=study, voters="judge", comparisons=on_sample, design_only=True
    )
    if not (people and judge):
        return None
    models = results.study_models(study=study)
    return agreement.judge_agreement(people, judge, models, None, None)


def _agreement_json(audit: agreement.JudgeAgreement | None) -> dict | None:
    from annotation import agreement

    return agreement.to_json(audit) if audit is not None else None


def routing_json(*, study: Study) -> dict | None:
    """``study_routing`` as the API and the JSON export give it."""
    found = study_routing(study=study)
    if found is None:
        return None
    audit = found.audit_agreement
    return {
        "judge_run": found.judge_run,
        "audit_share": found.audit_share,
        "comparisons": found.comparisons,
        "audited": found.audited,
        "settled_by_judge": found.settled_by_judge,
        "sent_to_people": found.sent_to_people,
        "unsure": found.unsure,
        "human_votes_wanted": found.human_votes_wanted,
        "human_votes_saved": found.human_votes_saved,
        "audit_agreement": _agreement_json(audit),
    }


def routing_design(study: Study) -> PeopleDesign | None:
    """How routing chose people's comparisons, for the prediction-powered fit: the judge's
    consistent comparisons (people get an audit sample of them) and the unsure ones (people
    get all) are the two strata; the verdicts are its deciding run's."""
    if not study.routing:
        return None
    run = latest_routing_run(study=study)
    if run is None:
        return None
    plan = study_plan(study=study, run=run)
    strata = dict.fromkeys((*plan.audited, *plan.settled), "judge consistent")
    strata |= dict.fromkeys(plan.unsure, "judge unsure")
    return PeopleDesign(
        name="routing",
        strata=strata,
        judge_votes=Q(judgment__run=run),
        audited=frozenset(plan.audited),
        judge_run=run.pk,
    )


def register() -> None:
    """The judge's section of every study's results page and JSON export, and routing's
    design for the prediction-powered fit (AppConfig.ready)."""
    people_design_register(routing_design)
    results_section_register(
        ResultsSection(
            name="llm-judge",
            template="judging/results_judge_runs.html",
            context=lambda study: {
                "judge_runs": judge_runs_json(study=study),
                "routing": study_routing(study=study),
            },
            export=lambda study: {
                "judge_runs": judge_runs_json(study=study),
                "routing": routing_json(study=study),
            },
        )
    )
