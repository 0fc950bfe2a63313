"""Regenerate a run, or some of its answers: the same model, prompt set, parameters, seed, batch
size and template version, into a new run; and how many answers came out as the original's did.

Regenerating some answers copies the others into the new run (``Answer.copied_from``), so the
worker, which makes only what a run is missing, makes the chosen ones from the same earlier
turns as before; a later turn of a chosen answer's question is made again as well, since its
prompt holds the chosen one. Greedy decoding on the same machine should reproduce every answer;
sampling with the same seed and batch size should too, on the same hardware and library
versions. The report says how far that held, counting only the answers the new run made.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from django.db import transaction

from evalsite.errors import ServiceError, StateConflict

from .models import Answer, GenerationRun
from .runs import generation_run_create

IMPORTED = "run {id} holds imported answers; there is no model here to regenerate them with"
STILL_ACTIVE = "run {id} is {status}; wait until it ends (or cancel it) before regenerating it"
NO_ANSWERS = "choose at least one answer to regenerate"

# The answer fields a copy repeats (the provenance of the run that made it included).
COPIED_FIELDS = [
    "question_id",
    "turn",
    "text",
    "new_tokens",
    "prompt_text",
    "prompt_tokens",
    "model_revision",
    "decoding",
    "stop_reason",
    "truncated",
]


@dataclass(frozen=True)
class RegenerationReport:
    original: int  # the run this one repeats
    compared: int  # answers (question, turn) this run made that the original holds too
    identical: int  # of those, the same text
    different: int
    missing: int  # answers of the original this run does not hold (yet)
    copied: int  # answers copied from the original rather than made again

    def as_dict(self) -> dict:
        return asdict(self)


@transaction.atomic
def generation_run_regenerate(
    *, run: GenerationRun, user=None, keep: Iterable[Answer] = ()
) -> GenerationRun:
    """A new queued run repeating ``run`` exactly (``regenerated_from`` points back at it),
    holding copies of the answers in ``keep`` (answers of ``run``) from the start."""
    run = GenerationRun.objects.select_related("model", "prompt_set", "template").get(pk=run.pk)
    # Refusals by the run's state (the API answers 409, as for cancel and retry).
    if run.imported:
        raise StateConflict(IMPORTED.format(id=run.pk))
    if run.status in GenerationRun.ACTIVE:
        raise StateConflict(STILL_ACTIVE.format(id=run.pk, status=run.status))
    new = generation_run_create(
        model=run.model,
        prompt_set=run.prompt_set,
        params=run.params,
        seed=run.seed,
        batch_size=run.batch_size,
        template=run.template,
        user=user,
    )
    copies = [
        Answer(run=new, copied_from=a, **{f: getattr(a, f) for f in COPIED_FIELDS}) for a in keep
    ]
    Answer.objects.bulk_create(copies, batch_size=1000)
    # The snapshot as it was: a default the model gained since must not slip in. (The run is
    # enqueued when this transaction commits, so the worker reads it as saved here.)
    new.params = run.params
    new.regenerated_from = run
    new.done = len(copies)
    new.save(update_fields=["params", "regenerated_from", "done"])
    return new


@transaction.atomic
def answers_regenerate(*, answers: Iterable[Answer], user=None) -> list[GenerationRun]:
    """For each run among ``answers``, a new run that makes those answers again (and the later
    turns of their questions) and copies every other answer: see the module's docstring."""
    chosen: dict[int, dict[int, int]] = defaultdict(dict)  # run -> question -> first turn
    for answer in answers:
        first = chosen[answer.run_id].get(answer.question_id, answer.turn)
        chosen[answer.run_id][answer.question_id] = min(first, answer.turn)
    if not chosen:
        raise ServiceError(NO_ANSWERS)
    runs = []
    for run_id, first_turns in sorted(chosen.items()):
        run = GenerationRun.objects.get(pk=run_id)
        keep = [
            a
            for a in Answer.objects.filter(run=run).order_by("question__position", "turn")
            if a.turn < first_turns.get(a.question_id, a.turn + 1)
        ]
        runs.append(generation_run_regenerate(run=run, user=user, keep=keep))
    return runs


def regeneration_report(*, run: GenerationRun) -> RegenerationReport | None:
    """How the answers ``run`` made compare with those of the run it regenerated (None: it is
    no regeneration, or that run is gone)."""
    if run.regenerated_from_id is None:
        return None
    rows = Answer.objects.filter(run_id=run.regenerated_from_id).values_list(
        "question_id", "turn", "text"
    )
    original = {(q, t): text for q, t, text in rows}
    made, copied = {}, set()
    for q, t, text, copy in Answer.objects.filter(run_id=run.pk).values_list(
        "question_id", "turn", "text", "copied_from"
    ):
        if copy is None:
            made[(q, t)] = text
        else:
            copied.add((q, t))
    both = original.keys() & made.keys()
    identical = sum(original[key] == made[key] for key in both)
    return RegenerationReport(
        original=run.regenerated_from_id,
        compared=len(both),
        identical=identical,
        different=len(both) - identical,
        missing=len(original.keys() - made.keys() - copied),
        copied=len(copied),
    )
