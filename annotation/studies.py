"""The study lifecycle: create (every comparison at once), check runs and annotator-facing
texts, open (flagging answers that may name their model), close, and identity flags and masks."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from evalsite.accounts.services import Action, audit_record
from evalsite.errors import ServiceError
from generation.models import Answer, GenerationRun, PromptSet

from . import hooks, identity, staging
from .models import Comparison, IdentityFlag, Study, StudyRun, Vote

STUDY_NAME_TAKEN = "a study named {name!r} already exists"
TOO_FEW_MODELS = "a study needs succeeded runs of at least two different models"
RUN_NOT_FOUND = "no generation run with id {ids}"
RUN_NOT_SUCCEEDED = "run {id} is {status}; only succeeded runs can be compared"
MIXED_PROMPT_SETS = (
    "the runs answer different prompt sets ({names}); a study compares runs of one prompt set"
)
WRONG_PROMPT_SET = "run {id} answers prompt set {actual!r}, not {expected!r}"
SAME_MODEL_TWICE = "runs {ids} are both of model {model!r}; a study takes one run per model"
NO_COMMON_QUESTIONS = "the runs have no answered question in common; nothing to compare"
BAD_VOTES_PER_COMPARISON = "votes per comparison must be at least 1"
BAD_SAMPLING = "unknown sampling {value!r}; use one of: {choices}"
BAD_QUOTA = "a quota must be at least 1 vote (or none)"
BAD_AUDIT_SHARE = "audit_share must be between 0 and 1 (a share of the judge's verdicts)"
BAD_HUMAN_BUDGET = "a human budget must be at least 1 vote (or none: K x comparisons)"
BAD_GOLD_RATE = "the gold rate is a share between 0 and 1"
CANNOT_OPEN = "study {name!r} is {status}; only a draft or closed study can be opened"
CANNOT_CLOSE = "study {name!r} is {status}; only an open study can be closed"
TEXT_NAMES_MODEL = "the {field} names a model ({term!r}); annotators see it, so leave it out"


@transaction.atomic
def study_create(
    *,
    name: str,
    runs: Sequence[GenerationRun | int],
    prompt_set: PromptSet | None = None,
    votes_per_comparison: int = 3,
    instructions: str = "",
    title: str = "",
    open_now: bool = False,
    sampling: str = Study.Sampling.UNIFORM,
    quota: int | None = None,
    gold_rate: float = 0.0,
    routing: bool = False,
    audit_share: float = 0.2,
    human_budget: int | None = None,
    user=None,
) -> Study:
    """A study with every comparison (model pairs x questions) built in this one transaction.

    ``sampling``: how pairs are handed out (Study.Sampling); ``quota``: most votes one
    annotator may give (None: no limit); ``gold_rate``: share of pairs given as gold checks;
    ``routing``: an LLM judge goes first and people get what it was unsure of plus
    ``audit_share`` of the rest (judging/routing.py; the study opens once a judge run finished).
    ``human_budget``: the staged design's people's votes (None: K x comparisons).
    """
    run_ids = [r.pk if isinstance(r, GenerationRun) else int(r) for r in runs]
    found = {
        r.pk: r
        for r in GenerationRun.objects.select_related("model", "prompt_set").filter(pk__in=run_ids)
    }
    missing = [str(i) for i in run_ids if i not in found]
    if missing:
        raise ServiceError(RUN_NOT_FOUND.format(ids=", ".join(missing)))
    chosen = [found[i] for i in dict.fromkeys(run_ids)]  # ordered, without repeats
    study_runs_check(runs=chosen, prompt_set=prompt_set)
    if votes_per_comparison < 1:
        raise ServiceError(BAD_VOTES_PER_COMPARISON)
    if sampling not in Study.Sampling.values:
        raise ServiceError(BAD_SAMPLING.format(value=sampling, choices=", ".join(Study.Sampling)))
    if quota is not None and quota < 1:
        raise ServiceError(BAD_QUOTA)
    if not 0 <= gold_rate <= 1:
        raise ServiceError(BAD_GOLD_RATE)
    if not 0 <= audit_share <= 1:
        raise ServiceError(BAD_AUDIT_SHARE)
    if human_budget is not None and human_budget < 1:
        raise ServiceError(BAD_HUMAN_BUDGET)
    if Study.objects.filter(name=name).exists():
        raise ServiceError(STUDY_NAME_TAKEN.format(name=name))

    study_texts_check(
        models=[r.model for r in chosen], texts={"title": title, "instructions": instructions}
    )
    chosen.sort(key=lambda r: r.pk)
    try:
        with transaction.atomic():
            study = Study.objects.create(
                name=name,
                title=title,
                prompt_set=chosen[0].prompt_set,
                votes_per_comparison=votes_per_comparison,
                instructions=instructions,
                sampling=sampling,
                quota=quota,
                gold_rate=gold_rate,
                routing=routing,
                audit_share=audit_share,
                human_budget=human_budget,
                created_by=user if getattr(user, "pk", None) else None,
            )
    except IntegrityError:
        raise ServiceError(STUDY_NAME_TAKEN.format(name=name)) from None
    StudyRun.objects.bulk_create(StudyRun(study=study, run=r, model=r.model) for r in chosen)

    questions = study.prompt_set.questions.order_by("position").values_list("pk", "follow_ups")
    last_turn = {q: 1 + len(follow_ups or ()) for q, follow_ups in questions}
    answers = _last_turn_answers(runs=chosen, last_turn=last_turn)
    comparisons = [
        Comparison(
            study=study, question_id=q, run_a=a, run_b=b, answer_a_id=ids[0], answer_b_id=ids[1]
        )
        for q in last_turn
        for a, b in itertools.combinations(chosen, 2)
        if None not in (ids := (answers[a.pk].get(q), answers[b.pk].get(q)))
    ]
    if not comparisons:
        raise ServiceError(NO_COMMON_QUESTIONS)
    Comparison.objects.bulk_create(comparisons, batch_size=500)
    # Found now, so staff review them (mask, keep, or a whole kind) before the study opens.
    study_flag_identity(study=study)
    if open_now:
        study = study_open(study=study, user=user)
    return study


def _last_turn_answers(
    *, runs: Sequence[GenerationRun], last_turn: dict[int, int]
) -> dict[int, dict[int, int]]:
    """run -> question -> its answer to the question's last user turn, for the questions the run
    answered turn by turn to the end (a comparison is of whole conversations; a run missing a
    turn has no complete conversation to compare)."""
    turns: dict[tuple[int, int], set[int]] = defaultdict(set)
    last: dict[int, dict[int, int]] = defaultdict(dict)
    for answer_id, run_id, question_id, turn in Answer.objects.filter(run__in=runs).values_list(
        "pk", "run_id", "question_id", "turn"
    ):
        turns[run_id, question_id].add(turn)
        if turn == last_turn.get(question_id):
            last[run_id][question_id] = answer_id
    for run_id, found in last.items():
        for question_id in list(found):
            if not set(range(1, last_turn[question_id] + 1)) <= turns[run_id, question_id]:
                del found[question_id]
    return last


def study_runs_check(*, runs: Sequence[GenerationRun], prompt_set: PromptSet | None = None) -> None:
    """Raise ServiceError unless these runs can make a study (admin actions ask before a form)."""
    for run in runs:
        if run.status != GenerationRun.Status.SUCCEEDED:
            raise ServiceError(RUN_NOT_SUCCEEDED.format(id=run.pk, status=run.status))
    sets = {r.prompt_set.name for r in runs}
    if len(sets) > 1:
        raise ServiceError(MIXED_PROMPT_SETS.format(names=", ".join(sorted(sets))))
    if prompt_set is not None:
        for run in runs:
            if run.prompt_set_id != prompt_set.pk:
                raise ServiceError(
                    WRONG_PROMPT_SET.format(
                        id=run.pk, actual=run.prompt_set.name, expected=prompt_set.name
                    )
                )
    by_model: dict[int, list[GenerationRun]] = defaultdict(list)
    for run in runs:
        by_model[run.model_id].append(run)
    for same in by_model.values():
        if len(same) > 1:
            raise ServiceError(
                SAME_MODEL_TWICE.format(
                    ids=", ".join(str(r.pk) for r in same), model=same[0].model.name
                )
            )
    if len(by_model) < 2:
        raise ServiceError(TOO_FEW_MODELS)


def study_texts_check(*, models, texts: dict[str, str]) -> None:
    """Refuse annotator-facing study text (title, instructions) that names a study model."""
    terms = identity.model_terms(models)
    for field, text in texts.items():
        for span in identity.find_identity_spans(text or "", terms):
            if span.kind in (identity.NAME, identity.MAKER):
                raise ServiceError(TEXT_NAMES_MODEL.format(field=field, term=span.text))


@transaction.atomic
def study_open(*, study: Study, user=None) -> Study:
    """Open a draft or closed study, flagging answers that may name their model first: flags
    staff reviewed keep their decision (masked or kept), flags nobody reviewed open masked.

    Apps built on this one are asked first (annotation.hooks.on_study_opening): a routing
    study opens only once a pairwise judge run over it has succeeded, whose latest one sets
    which comparisons people are given (judging.routing); with routing off, all of them.
    """
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.status == Study.Status.OPEN:
        raise ServiceError(CANNOT_OPEN.format(name=study.name, status=study.status))
    reopened = study.status == Study.Status.CLOSED
    hooks.study_opening(study)
    if study.sampling == Study.Sampling.STAGED:
        # The judge on everything, people's pilot drawn now; later stages on the spine.
        staging.staged_open(study)
    if study.sampling == Study.Sampling.ADAPTIVE:
        # One person at a time: each vote decides whether the next is asked (loop/adaptive.py).
        study.comparisons.filter(gold=False, vote_count=0, votes_wanted__isnull=True).update(
            votes_wanted=1
        )
    flags = study_flag_identity(study=study)
    # Reviewed flags open as staff decided; a flag nobody reviewed opens masked (a leak cannot
    # be taken back, a needless mask costs a few characters).
    unreviewed = [f for f in flags if f.reviewed_at is None]
    IdentityFlag.objects.filter(pk__in=[f.pk for f in unreviewed], masked=False).update(masked=True)
    study.status = Study.Status.OPEN
    study.opened_at = study.opened_at or timezone.now()
    study.closed_at = None
    study.save(update_fields=["status", "opened_at", "closed_at"])
    audit_record(
        user=user,
        action=Action.STUDY_OPEN,
        obj=study,
        reopened=reopened,
        identity_flags=len(flags),
        identity_flags_unreviewed=len(unreviewed),
    )
    return study


@transaction.atomic
def study_close(*, study: Study, user=None) -> Study:
    """Stop handing out pairs; votes already in hand are refused from now on."""
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.status != Study.Status.OPEN:
        raise ServiceError(CANNOT_CLOSE.format(name=study.name, status=study.status))
    study.status = Study.Status.CLOSED
    study.closed_at = timezone.now()
    study.save(update_fields=["status", "closed_at"])
    audit_record(
        user=user, action=Action.STUDY_CLOSE, obj=study, votes=study_vote_count(study=study)
    )
    return study


@transaction.atomic
def study_flag_identity(*, study: Study) -> list[IdentityFlag]:
    """(Re)scan the study's answers for self-identifying spans; existing flags keep their mask.

    Looks for every study model's name, path, maker and their aliases (in every answer: an answer
    naming *another* model unblinds as well) and ``settings.IDENTITY_WORDS``, plus
    self-introductions.
    """
    study_runs = StudyRun.objects.filter(study=study).select_related("model")
    terms = identity.model_terms([sr.model for sr in study_runs], words=settings.IDENTITY_WORDS)
    existing = {(f.answer_id, f.start, f.end): f for f in IdentityFlag.objects.filter(study=study)}
    seen = set()
    new = []
    answers = Answer.objects.filter(run__in=[sr.run_id for sr in study_runs]).select_related(
        "question"
    )
    for answer in answers.only("pk", "text", "question__text", "question__follow_ups"):
        # Every user turn: a name or a role the conversation gave is no self-identification.
        asked = "\n".join(answer.question.turns)
        for span in identity.find_identity_spans(answer.text, terms, question=asked):
            key = (answer.pk, span.start, span.end)
            seen.add(key)
            if key not in existing:
                new.append(
                    IdentityFlag(
                        study=study,
                        answer=answer,
                        start=span.start,
                        end=span.end,
                        text=span.text[:500],
                        kind=span.kind,
                    )
                )
    IdentityFlag.objects.bulk_create(new, batch_size=500)
    # Spans no longer found (the word list changed) go; reviewed ones stay, they were a decision.
    stale = [f.pk for key, f in existing.items() if key not in seen and f.reviewed_at is None]
    IdentityFlag.objects.filter(pk__in=stale).delete()
    return list(IdentityFlag.objects.filter(study=study))


@transaction.atomic
def identity_flags_mask(*, flags, masked: bool = True, user=None) -> int:
    """Mask (or unmask) flagged spans for annotators, recording who decided (on every flag
    given: a flag confirmed masked is reviewed too); returns how many changed. Each unmasking
    (annotators will see the span) goes in the audit log."""
    chosen = IdentityFlag.objects.filter(pk__in=[f.pk for f in flags])
    changing = chosen.exclude(masked=masked)
    unmasked = [] if masked else list(changing.select_for_update().select_related("study"))
    changed = changing.count()
    chosen.update(
        masked=masked,
        reviewed_by=user if getattr(user, "pk", None) else None,
        reviewed_at=timezone.now(),
    )
    for flag in unmasked:
        audit_record(
            user=user,
            action=Action.IDENTITY_FLAG_UNMASK,
            obj=flag,
            study=flag.study.name,
            answer=flag.answer_id,
            text=flag.text,
            kind=flag.kind,
        )
    return changed


MASK, KEEP = "mask", "keep"
BAD_FLAG_DECISION = "unknown decision {value!r} for {what}; use mask or keep"
BAD_FLAG_KIND = "unknown kind of identity flag {value!r}; use one of: {choices}"
FLAG_NOT_IN_STUDY = "identity flag {id} is not a flag of study {name!r}"


@transaction.atomic
def identity_flags_review(
    *,
    study: Study,
    flags: dict[int, str] | None = None,
    kinds: dict[str, str] | None = None,
    user=None,
) -> dict[str, int]:
    """Staff decisions on a study's identity flags: ``kinds`` masks or keeps every flag of a
    kind (``{"word": "mask"}``), then ``flags`` decides single flags (``{12: "keep"}``), so a
    flag decided alone wins over its kind. All checked before anything changes. Returns
    ``{"reviewed": flags decided, "changed": flags whose mask changed}``."""
    flags, kinds = dict(flags or {}), dict(kinds or {})
    for kind, decision in kinds.items():
        if kind not in IdentityFlag.Kind.values:
            raise ServiceError(
                BAD_FLAG_KIND.format(value=kind, choices=", ".join(IdentityFlag.Kind.values))
            )
        if decision not in (MASK, KEEP):
            raise ServiceError(BAD_FLAG_DECISION.format(value=decision, what=f"kind {kind}"))
    found = set(IdentityFlag.objects.filter(study=study, pk__in=flags).values_list("pk", flat=True))
    for flag_id, decision in flags.items():
        if flag_id not in found:
            raise ServiceError(FLAG_NOT_IN_STUDY.format(id=flag_id, name=study.name))
        if decision not in (MASK, KEEP):
            raise ServiceError(BAD_FLAG_DECISION.format(value=decision, what=f"flag {flag_id}"))
    reviewed, changed = set(), 0
    for kind, decision in kinds.items():
        chosen = list(IdentityFlag.objects.filter(study=study, kind=kind).exclude(pk__in=flags))
        changed += identity_flags_mask(flags=chosen, masked=decision == MASK, user=user)
        reviewed |= {f.pk for f in chosen}
    for decision in (MASK, KEEP):
        chosen = [IdentityFlag(pk=pk) for pk, d in flags.items() if d == decision]
        changed += identity_flags_mask(flags=chosen, masked=decision == MASK, user=user)
        reviewed |= {f.pk for f in chosen}
    return {"reviewed": len(reviewed), "changed": changed}


def study_flags_for_review(*, study: Study) -> list[IdentityFlag]:
    """The study's flags with what a reviewer needs (model, question, answer), by kind."""
    return list(
        IdentityFlag.objects.filter(study=study)
        .select_related("answer__run__model", "answer__question", "reviewed_by")
        .order_by("kind", "answer__run__model__name", "answer__question__position", "start")
    )


def study_flag_counts(*, study: Study) -> dict[str, int]:
    return IdentityFlag.objects.filter(study=study).aggregate(
        flags=Count("pk"),
        masked=Count("pk", filter=Q(masked=True)),
        unreviewed=Count("pk", filter=Q(reviewed_at__isnull=True)),
    )


def study_vote_count(*, study: Study) -> int:
    return Vote.objects.filter(comparison__study=study).count()
