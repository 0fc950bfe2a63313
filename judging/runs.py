"""Judge runs: a judge model over a study's comparisons (both orders) or its answers (grading).

The row is written first and its id enqueued once committed, like a generation run: a judge
with weights goes to the `gpu` queue, a served judge (it only sends requests) to `default`.
A judge run is a kind on the spine (evalsite/runs: claim, heartbeat, cancel, retry, requeue);
judging/judge.py is what a claimed run does (store every verdict it is missing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.db import transaction

from annotation.models import Comparison, Study
from evalsite.accounts.services import Action, audit_record
from evalsite.errors import ServiceError
from evalsite.runs import kinds, lifecycle
from evalsite.runs.kinds import DEFAULT, GPU, RunKind
from generation.models import Answer, LanguageModel
from generation.params import generation_params_check
from generation.runs import decoding_snapshot, model_runnable
from generation.templates import template_for

from .models import JudgePrompt, JudgeRun
from .prompts import judge_prompt_for

NOT_A_JUDGE = "model {name!r} has neither weights nor an endpoint; register it before judging"
PROMPT_KIND = "judge prompt {prompt} is a {kind} prompt; a {wanted} run needs a {wanted} prompt"
NO_COMPARISONS = "study {name!r} has no comparisons to judge (gold checks are not judged)"
FOREIGN_COMPARISONS = "comparison(s) {ids} do not belong to study {name!r}"
NO_ANSWERS = "study {name!r} has no answers to grade"
BAD_INCONSISTENT = "inconsistent must be one of: {choices} (got {value!r})"
BAD_ATTEMPTS = "max_attempts must be at least 1 (got {value})"
BAD_BATCH_SIZE = "batch_size must be at least 1 (got {value})"

# A judge reads, it does not write: greedy decoding, and room for a short reason and the verdict.
# The judge model's own generation defaults (tuned for answering) are deliberately not applied.
JUDGE_DEFAULTS = {"do_sample": False, "max_new_tokens": 256}


def on_judge_run_succeeded(hook: Callable[[int], object]) -> Callable[[int], object]:
    """Register ``hook(run_id)`` for judge runs that succeed, called while the worker still
    holds the run (an exception fails it, so a retry finishes the hook's work). Routing does."""
    return kinds.on_succeeded(JudgeRun, hook)


def _comparison_ids(study: Study, comparisons: Sequence | None) -> list[int]:
    """The given comparisons (rows or ids), checked to be the study's; or every non-gold one."""
    if comparisons is None:
        ids = list(study.comparisons.filter(gold=False).order_by("pk").values_list("pk", flat=True))
        if not ids:
            raise ServiceError(NO_COMPARISONS.format(name=study.name))
        return ids
    ids = list(dict.fromkeys(c.pk if isinstance(c, Comparison) else int(c) for c in comparisons))
    if not ids:
        raise ServiceError(NO_COMPARISONS.format(name=study.name))
    found = set(study.comparisons.filter(pk__in=ids).values_list("pk", flat=True))
    foreign = [str(i) for i in ids if i not in found]
    if foreign:
        raise ServiceError(FOREIGN_COMPARISONS.format(ids=", ".join(foreign), name=study.name))
    return ids


def study_answers(study: Study):
    """What a grading run grades: every answer of every run in the study."""
    return Answer.objects.filter(run__in=study.runs.all())


def _decoding(judge: LanguageModel, params: dict | None, seed: int) -> dict:
    return decoding_snapshot(
        judge, {**JUDGE_DEFAULTS, **generation_params_check(params or {})}, seed
    )


def judge_run_create(
    *,
    judge: LanguageModel,
    study: Study,
    prompt: JudgePrompt | None = None,
    grading: bool = False,
    comparisons: Sequence | None = None,
    params: dict | None = None,
    seed: int = 0,
    batch_size: int = 8,
    max_attempts: int = 3,
    inconsistent: str = JudgeRun.Inconsistent.TIE,
    user=None,
    enqueue: bool = True,
) -> JudgeRun:
    """Record a queued judge run and enqueue it once committed.

    ``prompt`` None: the latest version of the shipped default (``ja_pairwise``, or
    ``ja_grading`` when ``grading``). ``comparisons`` (rows or ids of this study) narrows a
    pairwise run; None judges every comparison but gold checks. ``params``: the judge's decoding
    (greedy, 256 new tokens unless given). ``total`` counts verdicts: two per comparison (one
    per order), or one per answer graded.
    """
    model_runnable(judge, NOT_A_JUDGE)
    prompt = prompt or judge_prompt_for(grading=grading)
    wanted = JudgePrompt.Kind.GRADING if grading else JudgePrompt.Kind.PAIRWISE
    if prompt.kind != wanted:
        raise ServiceError(PROMPT_KIND.format(prompt=prompt, kind=prompt.kind, wanted=wanted))
    if inconsistent not in JudgeRun.Inconsistent.values:
        raise ServiceError(
            BAD_INCONSISTENT.format(
                choices=", ".join(JudgeRun.Inconsistent.values), value=inconsistent
            )
        )
    if max_attempts < 1:
        raise ServiceError(BAD_ATTEMPTS.format(value=max_attempts))
    if batch_size < 1:
        raise ServiceError(BAD_BATCH_SIZE.format(value=batch_size))
    snapshot = _decoding(judge, params, seed)
    template = template_for(judge)
    if grading:
        ids: list[int] = []
        total = study_answers(study).count()
        if total == 0:
            raise ServiceError(NO_ANSWERS.format(name=study.name))
    else:
        ids = _comparison_ids(study, comparisons)
        total = 2 * len(ids)
    with transaction.atomic():
        run = JudgeRun.objects.create(
            judge=judge,
            study=study,
            prompt=prompt,
            template=template,
            # Empty means every non-gold comparison: only an explicit choice is written down.
            comparison_ids=ids if comparisons is not None else [],
            params=snapshot,
            seed=seed,
            batch_size=batch_size,
            max_attempts=max_attempts,
            inconsistent=inconsistent,
            total=total,
            created_by=user if getattr(user, "pk", None) else None,
        )
        audit_record(
            user=user,
            action=Action.JUDGE_RUN_START,
            obj=run,
            judge=judge.name,
            study=study.name,
            prompt=str(prompt),
            mode=wanted,
            verdicts=total,
            params=snapshot,
            seed=seed,
            inconsistent=inconsistent,
        )
        if enqueue:
            lifecycle.enqueue(run)
    return run


def judge_run_cancel(*, run: JudgeRun, user=None) -> JudgeRun:
    """Queued runs stop at once; a running worker stops before its next batch."""
    return lifecycle.cancel(run, user)


def judge_run_retry(*, run: JudgeRun, user=None) -> JudgeRun:
    """Queue a failed or cancelled run again; it asks only for the verdicts it is missing."""
    return lifecycle.retry(run, user)


def judge_run_execute(run_id: int) -> JudgeRun | None:
    """Claim the run and store the verdicts it is missing (None if it was not claimable).

    Safe to call any number of times for one run (redelivered or requeued tasks).
    """
    return lifecycle.execute(JUDGE_RUN, run_id)


def _work(run_id: int, worker: str) -> None:
    from .judge import judge_missing

    judge_missing(run_id, worker)


JUDGE_RUN = kinds.register(
    RunKind(
        model=JudgeRun,
        label="judge run",
        work=_work,
        # A served judge only sends requests: no GPU needed.
        queue=lambda run: DEFAULT if run.judge.is_endpoint else GPU,
        unit="verdicts",
        cancel_action=Action.JUDGE_RUN_CANCEL,
        retry_action=Action.JUDGE_RUN_RETRY,
    )
)
