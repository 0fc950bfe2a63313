"""The staged prediction-powered design, live (Study.Sampling.STAGED): the cost bench's best
design (``ranking.designs.staged``) run on a real study.

The judge's verdicts cover every comparison; people's votes are spent in stages of the study's
human budget (``designs.STAGES``: a uniform pilot, then two planned stages). Opening the study
draws the pilot (``staged_open``); each later stage is a ``StagePlan`` run on the spine, queued
by the vote that fills the stage before it (``loop/staged.py``), or by staff (the admin
action, ``manage.py plan_stage``). Planning fits everything so far with the judge and spends
the stage's share by ``designs.plan_allocation``, through the same ``designs.stage_rate``,
``stage_draw`` and ``stage_weight`` the simulation uses, fed the study's comparisons, the
judge's scores and people's votes. Each drawn comparison's ``votes_wanted`` is raised by its
slots (the claim serves only comparisons below their target, as for adaptive K); the stage,
its share, the slots and the draw's probability are recorded on every vote cast in it
(``Vote.stage``, ``share``, ``cap``, ``asked``), and the fit weighs the vote
share / (slots x probability): the weight whose unbiasedness ``designs.staged`` argues.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from evalsite.errors import ServiceError
from evalsite.runs import kinds, lifecycle
from evalsite.runs.kinds import DEFAULT, RunKind, lazy

from .models import Comparison, StageDraw, StagePlan, Study, Vote

if TYPE_CHECKING:
    import numpy as np

    from .ranking import designs

# The design's maths (numpy, scipy, choix) is imported by the functions that plan: this module is
# imported when Django starts (its run kind, the admin), and every worker, command and server
# would otherwise pay about 0.7 s of imports for it.

log = logging.getLogger(__name__)

SCORES = {"a": 1.0, "tie": 0.5, "b": 0.0}
NEEDS_JUDGE = (
    "a staged study needs the judge's verdicts on every comparison (prediction-powered "
    "inference): {missing} of its {total} comparisons have none; run a judge over the study, "
    "or import its verdicts (import_votes --voters judge), before opening it"
)
SMALL_BUDGET = (
    "a human budget of {budget} votes gives the pilot stage {pilot:g} votes ({share:g} of it), "
    "fewer than the study's {pairs} model pairs: give the study a budget of at least {need}"
)
NOT_WITH_ROUTING = (
    "a staged study draws people's comparisons itself; turn routing off to use the staged design"
)
HAS_PEOPLE = (
    "a staged study starts from no people's votes ({votes} are in); each vote's weight comes "
    "from the stage that asked for it"
)
NOT_STAGED = "study {name!r} does not use the staged design (its sampling is {sampling!r})"
NOT_OPEN = "study {name!r} is {status}; stages are planned while it is open"
LAST_STAGE = "study {name!r} has planned all its {stages} stages"
STAGE_OPEN = (
    "stage {stage} of study {name!r} still has {open} comparisons waiting for votes; the next "
    "stage is planned once every one is full"
)
STAGE_RUNNING = "stage {stage} of study {name!r} is being planned (run {id}, {status})"
PLAN_NOT_READY = "stage {stage} cannot be planned before stage {before} is drawn"


def study_budget(study: Study) -> int:
    """The study's human budget: its own, or the uniform design's cost (K x comparisons)."""
    if study.human_budget:
        return study.human_budget
    return study.votes_per_comparison * study.comparisons.filter(gold=False).count()


def staged_open(study: Study) -> None:
    """Check a staged study can open and draw its pilot (stage 1), in ``study_open``'s
    transaction (an error leaves everything as it was). A study reopened keeps its stages."""
    if StagePlan.objects.filter(study=study).exists():
        return
    if study.routing:
        raise ServiceError(NOT_WITH_ROUTING)
    comparisons = study.comparisons.filter(gold=False)
    total = comparisons.count()
    judged = Vote.objects.filter(
        comparison__study=study, comparison__gold=False, voter=Vote.Voter.JUDGE, turn__isnull=True
    )
    missing = total - judged.values("comparison_id").distinct().count()
    if missing or not total:
        raise ServiceError(NEEDS_JUDGE.format(missing=missing, total=total))
    people = Vote.objects.filter(comparison__study=study, voter=Vote.Voter.PEOPLE).count()
    if people:
        raise ServiceError(HAS_PEOPLE.format(votes=people))
    from .ranking.designs import STAGES

    budget = study_budget(study)
    pairs = comparisons.values("run_a_id", "run_b_id").distinct().count()
    if STAGES[0] * budget < pairs:
        need = math.ceil(pairs / STAGES[0])
        raise ServiceError(
            SMALL_BUDGET.format(
                budget=budget, pilot=STAGES[0] * budget, share=STAGES[0], pairs=pairs, need=need
            )
        )
    if study.human_budget != budget:
        study.human_budget = budget
        study.save(update_fields=["human_budget"])
    # Nothing is served until a stage draws it.
    comparisons.update(votes_wanted=0)
    plan = _plan_row(study, 1)
    _draw(study, plan)
    _succeeded(plan)


def _plan_row(study: Study, stage: int, user=None) -> StagePlan:
    from .ranking.designs import STAGES

    share = STAGES[stage - 1]
    return StagePlan.objects.create(
        study=study,
        stage=stage,
        share=share,
        budget=share * study_budget(study),
        created_by=user if getattr(user, "pk", None) else None,
    )


def _succeeded(plan: StagePlan) -> None:
    """The pilot is drawn in ``study_open``'s transaction: its plan row is done as it is made."""
    now = timezone.now()
    StagePlan.objects.filter(pk=plan.pk).update(
        status=StagePlan.Status.SUCCEEDED, started_at=now, finished_at=now, heartbeat_at=now
    )


def study_data(study: Study) -> tuple[list[int], designs.Comparisons, dict[int, list]]:
    """What the design plans on, from the study: its comparison ids (the rows' order), the
    comparisons (models, questions, the judge's mean score), and per stage done the people's
    votes (comparison row, score, weight ``designs.stage_weight``)."""
    import numpy as np

    from .ranking import designs

    rows = list(
        study.comparisons.filter(gold=False)
        .order_by("pk")
        .values_list("pk", "question_id", "run_a__model_id", "run_b__model_id")
    )
    row = {pk: i for i, (pk, *_) in enumerate(rows)}
    models = sorted({m for _, _, a, b in rows for m in (a, b)})
    index = {m: i for i, m in enumerate(models)}
    judge: dict[int, list[float]] = defaultdict(list)
    for pk, outcome in Vote.objects.filter(
        comparison__study=study, voter=Vote.Voter.JUDGE, turn__isnull=True, comparison__gold=False
    ).values_list("comparison_id", "outcome"):
        judge[pk].append(SCORES[outcome])
    comparisons = designs.Comparisons(
        model_a=np.array([index[a] for _, _, a, _ in rows], dtype=np.int64),
        model_b=np.array([index[b] for _, _, _, b in rows], dtype=np.int64),
        question=np.array([q for _, q, _, _ in rows], dtype=np.int64),
        judge=np.array([np.mean(judge[pk]) if judge[pk] else np.nan for pk, *_ in rows]),
        n_models=len(models),
    )
    by_stage: dict[int, list[tuple[int, float, float]]] = defaultdict(list)
    for pk, outcome, stage, share, slots, probability in Vote.objects.filter(
        comparison__study=study,
        voter=Vote.Voter.PEOPLE,
        turn__isnull=True,
        stage__isnull=False,
        comparison__gold=False,
    ).values_list("comparison_id", "outcome", "stage", "share", "cap", "asked"):
        weight = designs.stage_weight(share, slots, probability)
        by_stage[stage].append((row[pk], SCORES[outcome], weight))
    return [pk for pk, *_ in rows], comparisons, by_stage


def _parts(by_stage: dict, stages: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    import numpy as np

    parts = []
    for stage in range(1, stages + 1):
        votes = by_stage.get(stage, [])
        parts.append(
            (
                np.array([v[0] for v in votes], dtype=np.int64),
                np.array([v[1] for v in votes], dtype=float),
                np.array([v[2] for v in votes], dtype=float),
            )
        )
    return parts


def _draw(study: Study, plan: StagePlan, rng: np.random.Generator | None = None) -> None:
    """Plan the stage (``designs.stage_rate``), draw its comparisons and raise their targets."""
    import numpy as np

    from .ranking import designs

    ids, comparisons, by_stage = study_data(study)
    s = plan.stage - 1
    budget = study_budget(study)
    rate = designs.stage_rate(comparisons, _parts(by_stage, s), s, budget, stages=designs.STAGES)
    slots, probability = designs.stage_draw(rate)
    rng = rng if rng is not None else np.random.default_rng()
    chosen = np.flatnonzero(rng.random(len(ids)) < probability)
    StageDraw.objects.bulk_create(
        [
            StageDraw(
                plan=plan,
                comparison_id=ids[i],
                slots=int(slots[i]),
                probability=float(probability[i]),
            )
            for i in chosen
        ],
        batch_size=500,
    )
    by_slots: dict[int, list[int]] = defaultdict(list)
    for i in chosen:
        by_slots[int(slots[i])].append(ids[i])
    for n, pks in by_slots.items():
        # Every comparison is full when a stage is planned: its target was its votes.
        Comparison.objects.filter(pk__in=pks).update(votes_wanted=F("vote_count") + n)
    drawn = int(chosen.size)
    StagePlan.objects.filter(pk=plan.pk).update(
        done=drawn, total=drawn, votes=int(slots[chosen].sum())
    )


def stage_reached(study: Study) -> StagePlan | None:
    """The latest stage drawn (None: the study has not opened staged)."""
    return (
        StagePlan.objects.filter(study=study, status=StagePlan.Status.SUCCEEDED)
        .order_by("-stage")
        .first()
    )


def open_in_stage(study: Study) -> int:
    """Comparisons of the stage drawn last that still wait for votes."""
    return study.comparisons.filter(gold=False, vote_count__lt=F("votes_wanted")).count()


def _next_stage(study: Study, user=None) -> tuple[StagePlan | None, bool, str]:
    """(plan, made, why): the next stage's plan, made now when it may be planned (the stage
    before it drawn and full), or the one already queued or running (``made`` False); None
    and why not otherwise. Call with the study's row locked (one plan per stage)."""
    if study.sampling != Study.Sampling.STAGED:
        return None, False, NOT_STAGED.format(name=study.name, sampling=study.sampling)
    latest = StagePlan.objects.filter(study=study).order_by("-stage").first()
    if study.status != Study.Status.OPEN or latest is None:
        return None, False, NOT_OPEN.format(name=study.name, status=study.status)
    if latest.status in StagePlan.ACTIVE:
        return latest, False, ""
    if latest.status != StagePlan.Status.SUCCEEDED:  # failed or cancelled: the admin retries
        return (
            None,
            False,
            STAGE_RUNNING.format(
                stage=latest.stage, name=study.name, id=latest.pk, status=latest.status
            ),
        )
    from .ranking.designs import STAGES

    if latest.stage >= len(STAGES):
        return None, False, LAST_STAGE.format(name=study.name, stages=len(STAGES))
    waiting = open_in_stage(study)
    if waiting:
        return None, False, STAGE_OPEN.format(stage=latest.stage, name=study.name, open=waiting)
    return _plan_row(study, latest.stage + 1, user), True, ""


def _send(plan_id: int) -> None:
    """Queue the plan once the transaction that made it commits; a broker that is down costs
    the vote nothing (the spine sends queued runs again: ``lifecycle.resend_lost``)."""

    def send() -> None:
        lifecycle.enqueue(StagePlan.objects.get(pk=plan_id))

    transaction.on_commit(send, robust=True)


def stage_filled(study_id: int) -> StagePlan | None:
    """After a vote filled a comparison of a staged study (in its transaction: loop/staged.py)
    or a stage was drawn: when the stage is full, make the next stage's plan and queue it once
    the transaction commits. Returns the plan made (None: none)."""
    study = Study.objects.select_for_update().get(pk=study_id)
    plan, made, _ = _next_stage(study)
    if not made:
        return None
    _send(plan.pk)
    return plan


@transaction.atomic
def stage_plan_start(*, study: Study, user=None, enqueue: bool = True) -> StagePlan:
    """Staff: plan the next stage now (the admin action, ``manage.py plan_stage``), once the
    stage before it is full; a plan already queued or running is returned as it is."""
    study = Study.objects.select_for_update().get(pk=study.pk)
    plan, made, why = _next_stage(study, user)
    if plan is None:
        raise ServiceError(why)
    if made and enqueue:
        lifecycle.enqueue(plan)
    return plan


def stage_plan_work(run_id: int, worker: str) -> None:
    """What a claimed plan does: draw its stage, once (a plan with draws is done already),
    then mark it succeeded; a stage that drew nothing queues the one after it."""
    with transaction.atomic():
        plan = StagePlan.objects.select_for_update().get(pk=run_id)
        study = Study.objects.select_for_update().get(pk=plan.study_id)
        if not plan.draws.exists():
            before = StagePlan.objects.filter(study=study, stage=plan.stage - 1).first()
            if before is None or before.status != StagePlan.Status.SUCCEEDED:
                raise ServiceError(PLAN_NOT_READY.format(stage=plan.stage, before=plan.stage - 1))
            _draw(study, plan)
        StagePlan.objects.filter(pk=run_id, status=StagePlan.Status.RUNNING).update(
            status=StagePlan.Status.SUCCEEDED, finished_at=timezone.now()
        )
        if not open_in_stage(study):
            stage_filled(study.pk)


def stage_plan_execute(run_id: int) -> StagePlan | None:
    """Claim the plan and draw its stage (None if it was not claimable); safe to call again."""
    return lifecycle.execute(STAGE_PLAN, run_id)


def staged_summary(study: Study) -> dict | None:
    """What the results say of a staged study: the stage reached of how many, the human
    budget, and per stage its share, comparisons drawn and votes asked for and in."""
    if study.sampling != Study.Sampling.STAGED:
        return None
    from .ranking.designs import STAGES

    plans = list(
        StagePlan.objects.filter(study=study)
        .order_by("stage")
        .annotate(
            cast=Count(
                "study__comparisons__votes",
                filter=Q(
                    study__comparisons__votes__stage=F("stage"),
                    study__comparisons__votes__voter=Vote.Voter.PEOPLE,
                ),
            )
        )
    )
    reached = max((p.stage for p in plans if p.status == StagePlan.Status.SUCCEEDED), default=0)
    return {
        "stage": reached,
        "stages": len(STAGES),
        "human_budget": study.human_budget,
        "plans": [
            {
                "stage": p.stage,
                "share": p.share,
                "status": p.status,
                "comparisons": p.total,
                "votes_wanted": p.votes,
                "votes": p.cast,
            }
            for p in plans
        ],
    }


STAGE_PLAN = kinds.register(
    RunKind(
        model=StagePlan,
        label="stage plan",
        work=lazy("annotation.staging.stage_plan_work"),
        # A fit and a draw: no GPU.
        queue=lambda run: DEFAULT,
        unit="comparisons",
        name="stage-plan",
        describe=lambda run: f"stage {run.stage} of {run.study}",
        related=("study",),
        provenance=("study", "stage", "share", "budget"),
    )
)
