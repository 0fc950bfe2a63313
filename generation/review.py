"""Review of an instruction data set's rows by staff: accept, reject, or edit (an edited row is
accepted), the per-state counts, and the ``accepted_only`` switch that limits fine-tuning to the
accepted rows.

A data set some fine-tune run has used is read-only here. A run samples its mix by position with
its seed from the set's usable rows (all rows, or the accepted ones under ``accepted_only``), and
a resumed run must get the same examples in the same order; so neither the rows, nor their
review, nor the switch may change under it. To review further, import the rows as a new set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from evalsite.accounts.services import Action, audit_record
from evalsite.errors import ServiceError

from . import instructions
from .instructions import ParsedExample
from .models import DatasetAugmentation, FineTuneRunDataset, InstructionDataset, InstructionExample

Review = InstructionExample.Review

ACTIONS = ("accept", "reject", "edit")
UNKNOWN_ACTION = "row {position}: unknown review action {action!r}; expected accept, reject or edit"
NO_SUCH_ROW = "data set {name!r} has no row {positions}"
ROW_TWICE = "row {position} is listed twice"
NOTHING_TO_REVIEW = "choose at least one row to review"
EMPTY_FIELD = "row {position}: {field} must not be empty"
EDIT_WITHOUT_TEXT = "row {position}: an edit needs at least one of instruction, input, output"
USED_BY_RUNS = (
    "data set {name!r} was used by fine-tune run {runs}; its rows, their review and "
    "'accepted only' are read-only so that the run stays reproducible (it samples the usable "
    "rows by position with its seed). Import the rows as a new data set to review them further."
)
AUGMENTATION_PENDING = (
    "data set {name!r} is the source of augmentation {augmentations} that has not written its "
    "data set yet (it maps answers to this set's instructions); accept and reject are allowed, "
    "edits wait until it is done"
)

# The counts an annotated queryset carries (``with_review_counts``), by name.
COUNT_FIELDS = ("rows_pending", "rows_accepted", "rows_rejected", "rows_edited")


@dataclass(frozen=True)
class RowReview:
    """One row's review: ``action`` is accept, reject or edit; an edit gives the new text of
    the fields it changes (None: keep the row's)."""

    position: int
    action: str
    instruction: str | None = None
    input: str | None = None
    output: str | None = None


def with_review_counts(queryset: QuerySet) -> QuerySet:
    """Data sets annotated with their rows' review counts (``COUNT_FIELDS``), in one query."""
    return queryset.annotate(
        rows_pending=Count("examples", filter=Q(examples__review=Review.PENDING)),
        rows_accepted=Count("examples", filter=Q(examples__review=Review.ACCEPTED)),
        rows_rejected=Count("examples", filter=Q(examples__review=Review.REJECTED)),
        rows_edited=Count("examples", filter=Q(examples__edited=True)),
    )


def review_counts(dataset: InstructionDataset) -> dict[str, int]:
    """{"pending": n, "accepted": n, "rejected": n, "edited": n} (edited rows are accepted or
    rejected too: edited counts rows whose text staff changed)."""
    if all(hasattr(dataset, field) for field in COUNT_FIELDS):
        return {field.removeprefix("rows_"): getattr(dataset, field) for field in COUNT_FIELDS}
    counted = with_review_counts(InstructionDataset.objects.filter(pk=dataset.pk)).values(
        *COUNT_FIELDS
    )[0]
    return {field.removeprefix("rows_"): counted[field] for field in COUNT_FIELDS}


def runs_using(dataset: InstructionDataset) -> list[int]:
    """Ids of the fine-tune runs (of any status) whose mix includes the data set."""
    return sorted(
        FineTuneRunDataset.objects.filter(dataset=dataset).values_list("run_id", flat=True)
    )


def review_lock(dataset: InstructionDataset) -> str | None:
    """Why the data set's review cannot change (None: it can)."""
    runs = runs_using(dataset)
    if runs:
        return USED_BY_RUNS.format(name=dataset.name, runs=", ".join(map(str, runs)))
    return None


def edit_lock(dataset: InstructionDataset) -> str | None:
    waiting = list(
        DatasetAugmentation.objects.filter(source=dataset, result__isnull=True).values_list(
            "pk", flat=True
        )
    )
    if waiting:
        return AUGMENTATION_PENDING.format(
            name=dataset.name, augmentations=", ".join(map(str, waiting))
        )
    return None


def _check(dataset: InstructionDataset, reviews: Sequence[RowReview]) -> None:
    """Every problem with the request, found before anything is written."""
    if not reviews:
        raise ServiceError(NOTHING_TO_REVIEW)
    seen = set()
    for review in reviews:
        if review.action not in ACTIONS:
            problem = UNKNOWN_ACTION.format(position=review.position, action=review.action)
            raise ServiceError(problem)
        if review.position in seen:
            raise ServiceError(ROW_TWICE.format(position=review.position))
        seen.add(review.position)
        if review.action == "edit":
            given = {
                "instruction": review.instruction,
                "input": review.input,
                "output": review.output,
            }
            if all(value is None for value in given.values()):
                raise ServiceError(EDIT_WITHOUT_TEXT.format(position=review.position))
            for field in ("instruction", "output"):
                if given[field] is not None and not given[field].strip():
                    raise ServiceError(EMPTY_FIELD.format(position=review.position, field=field))
    if (problem := review_lock(dataset)) is not None:
        raise ServiceError(problem)
    if any(r.action == "edit" for r in reviews) and (problem := edit_lock(dataset)):
        raise ServiceError(problem)


def instruction_rows_review(
    *, dataset: InstructionDataset, reviews: Sequence[RowReview], user=None
) -> dict[str, int]:
    """Apply ``reviews`` to rows of ``dataset`` (by position) in one transaction: all or none.

    Accept and reject set the review; an edit replaces the given fields and accepts the row
    (``edited`` is set when the text changed). Each row records who reviewed it and when. An
    edit refreshes the set's row statistics (token statistics, now stale, are dropped).
    Returns the data set's counts after the change.
    """
    _check(dataset, reviews)
    now = timezone.now()
    reviewer = user if getattr(user, "pk", None) else None
    with transaction.atomic():
        # Reviews of one set (and its switch) take turns on the set's row.
        dataset = InstructionDataset.objects.select_for_update().get(pk=dataset.pk)
        if (problem := review_lock(dataset)) is not None:
            raise ServiceError(problem)
        wanted = {r.position: r for r in reviews}
        rows = {
            row.position: row
            for row in InstructionExample.objects.select_for_update().filter(
                dataset=dataset, position__in=wanted
            )
        }
        missing = sorted(set(wanted) - set(rows))
        if missing:
            raise ServiceError(
                NO_SUCH_ROW.format(name=dataset.name, positions=", ".join(map(str, missing)))
            )
        done = {"accept": 0, "reject": 0, "edit": 0}
        for position, review in wanted.items():
            row = rows[position]
            changed = _apply(row, review)
            row.reviewed_at = now
            row.reviewed_by = reviewer
            done[review.action] += 1
            fields = ["review", "edited", "reviewed_at", "reviewed_by"]
            if changed:
                fields += ["instruction", "input", "output"]
            row.save(update_fields=fields)
        if done["edit"]:
            _refresh_stats(dataset)
        counts = review_counts(dataset)
        audit_record(
            user=user,
            action=Action.DATASET_REVIEW,
            obj=dataset,
            accepted=done["accept"],
            rejected=done["reject"],
            edited=done["edit"],
            positions=sorted(wanted)[:1000],
            counts=counts,
        )
    return counts


def _apply(row: InstructionExample, review: RowReview) -> bool:
    """Set the row's review (and text, for an edit); True when its text changed."""
    if review.action == "reject":
        row.review = Review.REJECTED
        return False
    row.review = Review.ACCEPTED
    if review.action != "edit":
        return False
    before = (row.instruction, row.input, row.output)
    for field in ("instruction", "input", "output"):
        value = getattr(review, field)
        if value is not None:
            setattr(row, field, value.strip() if field != "input" else value)
    changed = (row.instruction, row.input, row.output) != before
    row.edited = row.edited or changed
    return changed


def _refresh_stats(dataset: InstructionDataset) -> None:
    rows = dataset.examples.order_by("position").values_list("instruction", "input", "output")
    examples = [ParsedExample(line=0, instruction=i, input=x, output=o) for i, x, o in rows]
    stats = {key: value for key, value in dataset.stats.items() if key != "tokens"}
    stats.update(instructions.summary(examples))
    stats["edited_in_review"] = True
    dataset.stats = stats
    dataset.save(update_fields=["stats"])


def instruction_dataset_accepted_only_set(
    *, dataset: InstructionDataset, accepted_only: bool, user=None
) -> InstructionDataset:
    """Restrict fine-tuning (and sweeps) on the set to its accepted rows, or lift that."""
    with transaction.atomic():
        dataset = InstructionDataset.objects.select_for_update().get(pk=dataset.pk)
        if dataset.accepted_only == accepted_only:
            return dataset
        if (problem := review_lock(dataset)) is not None:
            raise ServiceError(problem)
        dataset.accepted_only = accepted_only
        dataset.save(update_fields=["accepted_only"])
        audit_record(
            user=user,
            action=Action.DATASET_REVIEW,
            obj=dataset,
            accepted_only=accepted_only,
            counts=review_counts(dataset),
        )
    return dataset
