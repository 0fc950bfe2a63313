"""Judge runs: a judge model over a study's comparisons (both orders) or its answers (grading).

The row is written first and its id enqueued once committed, like a generation run: a judge
with weights goes to the `gpu` queue, a served judge (it only sends requests) to `default`.
A judge run is a kind on the spine (evalsite/runs: claim, heartbeat, cancel, retry, requeue);
judging/judge.py is what a claimed run does (store every verdict it is missing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.db import transaction
from jinja2 import TemplateError

from annotation.models import Comparison, Study
from evalsite.accounts.services import Action
from evalsite.errors import ServiceError
from evalsite.runs import kinds, lifecycle
from evalsite.runs import shards as run_shards
from evalsite.runs.kinds import DEFAULT, GPU, RunKind, lazy
from generation.models import Answer, LanguageModel
from generation.params import generation_params_check
from generation.runs import decoding_snapshot, engine_checked, model_runnable
from generation.templates import template_for

from .engine.presets import MULTI_TURN_SUFFIX, REFERENCE_CATEGORIES
from .fit import judge_fit_check
from .models import JudgePrompt, JudgeRun
from .plan import PromptPlan, answer_items, comparisons_of, pair_items
from .prompts import judge_prompt_for, judge_prompt_latest

NOT_A_JUDGE = "model {name!r} has neither weights nor an endpoint; register it before judging"
PROMPT_KIND = "judge prompt {prompt} is a {kind} prompt; a {wanted} run needs a {wanted} prompt"
NO_COMPARISONS = "study {name!r} has no comparisons to judge (gold checks are not judged)"
FOREIGN_COMPARISONS = "comparison(s) {ids} do not belong to study {name!r}"
NO_ANSWERS = "study {name!r} has no answers to grade"
BAD_INCONSISTENT = "inconsistent must be one of: {choices} (got {value!r})"
BAD_ATTEMPTS = "max_attempts must be at least 1 (got {value})"
BAD_BATCH_SIZE = "batch_size must be at least 1 (got {value})"
ONE_TURN_PROMPT = (
    "judge prompt {prompt} shows one turn, and {count} of the {what} in study {name!r} are "
    "conversations of more than one turn: load its multi-turn variant ({variant}), choose a "
    "prompt that shows every turn, or judge the last turn only (last_turn_only)"
)
CANNOT_RENDER = (
    "a judge prompt of this run cannot be rendered for study {name!r} ({problem}); if it shows "
    "numbered turns, the study's conversations need that many turns"
)
BAD_CATEGORIES = "reference_categories must be a list of category names (got {value!r})"

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
    reference_prompt: JudgePrompt | None = None,
    reference_categories: Sequence[str] | None = None,
    last_turn_only: bool = False,
    user=None,
    enqueue: bool = True,
    engine: str = "auto",
    shards: int | None = None,
) -> JudgeRun:
    """Record a queued judge run and enqueue it once committed.

    ``prompt`` None: the latest version of the shipped default (``ja_pairwise``, or
    ``ja_grading`` when ``grading``). ``comparisons`` (rows or ids of this study) narrows a
    pairwise run; None judges every comparison but gold checks. ``params``: the judge's decoding
    (greedy, 256 new tokens unless given). ``total`` counts verdicts: two per comparison (one
    per order), or one per answer graded.

    The judge sees whole conversations: a multi-turn comparison or answer is asked with the
    prompt's ``-multi-turn`` variant (its latest version), or the prompt itself when it shows
    every turn; with neither the run is refused, unless ``last_turn_only``. Questions of
    ``reference_categories`` (default MT-Bench's math, reasoning, coding) get
    ``reference_prompt`` (and its variant) when one is given. Refused when the longest
    rendered prompt plus ``max_new_tokens`` does not fit the judge's context (judging/fit.py).
    ``shards``: split the comparisons (or graded answers) into that many ranges that workers
    judge at once (None: one per worker consuming the run's queue; evalsite/runs/shards.py).
    """
    model_runnable(judge, NOT_A_JUDGE)
    engine = engine_checked(engine)  # a local judge's engine: auto, transformers or vllm
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
    if reference_prompt is not None and reference_prompt.kind != wanted:
        raise ServiceError(
            PROMPT_KIND.format(prompt=reference_prompt, kind=reference_prompt.kind, wanted=wanted)
        )
    categories = _categories(reference_categories)
    snapshot = _decoding(judge, params, seed)
    template = template_for(judge)
    plan = PromptPlan(
        prompt=prompt,
        multi_turn_prompt=_multi_turn_variant(prompt),
        reference_prompt=reference_prompt,
        reference_multi_turn_prompt=_multi_turn_variant(reference_prompt),
        reference_categories=categories if reference_prompt is not None else (),
        last_turn_only=bool(last_turn_only),
    )
    try:
        if grading:
            ids: list[int] = []
            total = study_answers(study).count()
            if total == 0:
                raise ServiceError(NO_ANSWERS.format(name=study.name))
            items = answer_items(plan, study_answers(study))
        else:
            ids = _comparison_ids(study, comparisons)
            total = 2 * len(ids)
            items = pair_items(plan, comparisons_of(study, ids))
    except TemplateError as exc:  # a prompt written for more turns than a conversation has
        raise ServiceError(CANNOT_RENDER.format(name=study.name, problem=exc)) from None
    _shows_every_turn(plan, items, study, what="answers" if grading else "comparisons")
    if template is not None:
        judge_fit_check(judge=judge, template_row=template, plan=plan, items=items, params=snapshot)
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
            multi_turn_prompt=plan.multi_turn_prompt,
            reference_prompt=plan.reference_prompt,
            reference_multi_turn_prompt=plan.reference_multi_turn_prompt,
            reference_categories=list(plan.reference_categories),
            last_turn_only=plan.last_turn_only,
            total=total,
            engine_requested=engine,
            created_by=user if getattr(user, "pk", None) else None,
        )
        run_shards.start(
            run,
            shards,
            enqueue=enqueue,
            user=user,
            action=Action.JUDGE_RUN_START,
            judge=judge.name,
            study=study.name,
            prompt=str(prompt),
            mode=wanted,
            verdicts=total,
            params=snapshot,
            seed=seed,
            inconsistent=inconsistent,
            last_turn_only=plan.last_turn_only,
        )
    return run


def _categories(value) -> tuple[str, ...]:
    if value is None:
        return REFERENCE_CATEGORIES
    if isinstance(value, str) or not all(isinstance(c, str) for c in value):
        raise ServiceError(BAD_CATEGORIES.format(value=value))
    return tuple(c.strip() for c in value if c.strip())


def _multi_turn_variant(prompt: JudgePrompt | None) -> JudgePrompt | None:
    """The prompt multi-turn conversations get: the prompt itself when it shows every turn,
    else the latest version of its ``-multi-turn`` variant (None: there is none)."""
    if prompt is None or prompt.multi_turn:
        return None
    variant = judge_prompt_latest(prompt.name + MULTI_TURN_SUFFIX)
    if variant is None or variant.kind != prompt.kind or not variant.multi_turn:
        return None
    return variant


def _shows_every_turn(plan: PromptPlan, items, study: Study, what: str) -> None:
    """Refuse a run that would show a multi-turn conversation's last turn only, unasked."""
    if plan.last_turn_only:
        return
    prompts = {p.pk: p for p in plan.prompts()}
    cut = [i for i in items if i.turns > 1 and not prompts[i.prompt_id].multi_turn]
    if cut:
        prompt = prompts[cut[0].prompt_id]
        count = len({i.comparison_id or i.answer_id for i in cut})
        raise ServiceError(
            ONE_TURN_PROMPT.format(
                prompt=prompt,
                count=count,
                what=what,
                name=study.name,
                variant=prompt.name + MULTI_TURN_SUFFIX,
            )
        )


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


JUDGE_RUN = kinds.register(
    RunKind(
        model=JudgeRun,
        label="judge run",
        work=lazy("judging.judge.judge_missing"),
        # A served judge only sends requests: no GPU needed.
        queue=lambda run: DEFAULT if run.judge.is_endpoint else GPU,
        unit="verdicts",
        # Shards are ranges of comparisons (both orders) or of graded answers, by id.
        items=lazy("judging.judge.run_items"),
        work_shard=lazy("judging.judge.judge_shard"),
        cancel_action=Action.JUDGE_RUN_CANCEL,
        retry_action=Action.JUDGE_RUN_RETRY,
        name="judge",
        # Grading is a judge run whose prompt grades: listed and filtered as a kind of its own.
        variants={"grading": {"prompt__kind": JudgePrompt.Kind.GRADING}},
        variant=lambda run: "grading" if run.grading else "",
        related=("judge", "study", "prompt"),
        provenance=(
            "judge",
            "study",
            "prompt",
            "multi_turn_prompt",
            "reference_prompt",
            "reference_multi_turn_prompt",
            "template",
            "comparison_ids",
            "params",
            "seed",
            "inconsistent",
            "engine_requested",
        ),
    )
)
