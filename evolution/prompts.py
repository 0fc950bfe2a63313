"""Rewrite prompts as versioned rows: the shipped presets, lookup, and the rule that a version a
run used is kept (as judge prompts do, judging/prompts/versions.py): saving changes to a used
version makes the next version of that operation; runs take the latest active version."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Max

from evalsite.accounts.services import Action, audit_record
from evalsite.errors import ServiceError

from .engine import operations
from .models import EvolutionPrompt

NO_PROMPT = "no active rewrite prompt for operation {op!r}; activate one in the admin"
BAD_TEMPLATE = "template: {problem}"
NO_OPERATION_CHANGE = "a rewrite prompt keeps its operation ({op}); add a new one instead"
EDITABLE = ("template", "description", "active")


def evolution_presets_install() -> list[str]:
    """Version 1 of each operation's shipped prompt where the operation has no row; returns the
    operations installed. Migration 0002 ships them; this restores them after a flush."""
    present = set(EvolutionPrompt.objects.values_list("operation", flat=True))
    missing = [op for op in operations.OPERATIONS if op not in present]
    EvolutionPrompt.objects.bulk_create(
        [
            EvolutionPrompt(
                operation=op,
                version=1,
                template=operations.PRESETS[op],
                description="shipped: " + operations.DESCRIPTIONS[op],
            )
            for op in missing
        ],
        ignore_conflicts=True,
    )
    return missing


def evolution_prompt_for(operation: str) -> EvolutionPrompt:
    """The latest active version for ``operation`` (presets installed on first use)."""
    if operation not in operations.OPERATIONS:
        raise ServiceError(operations.UNKNOWN_OPERATION.format(op=operation))
    evolution_presets_install()
    row = (
        EvolutionPrompt.objects.filter(operation=operation, active=True)
        .order_by("-version")
        .first()
    )
    if row is None:
        raise ServiceError(NO_PROMPT.format(op=operation))
    return row


def evolution_prompts_current() -> dict[str, EvolutionPrompt]:
    return {op: evolution_prompt_for(op) for op in operations.OPERATIONS}


def as_rewrite_prompt(row: EvolutionPrompt) -> operations.RewritePrompt:
    return operations.RewritePrompt(row.operation, row.version, row.template)


def evolution_prompt_in_use(row: EvolutionPrompt) -> bool:
    return row.pk is not None and row.items.exists()


def evolution_prompt_check(template: str) -> str:
    problem = operations.problems(template)
    if problem:
        raise ServiceError(BAD_TEMPLATE.format(problem=problem))
    return template


@transaction.atomic
def evolution_prompt_create(
    *, operation: str, template: str, description: str = "", active: bool = True, user=None
) -> EvolutionPrompt:
    """A new version (one above the highest) of ``operation``'s prompt."""
    row = _new_version(
        operation=operation, template=template, description=description, active=active, user=user
    )
    audit_record(
        user=user,
        action=Action.REWRITE_PROMPT_CREATE,
        obj=row,
        operation=row.operation,
        version=row.version,
        active=row.active,
    )
    return row


def _new_version(
    *, operation: str, template: str, description: str, active: bool, user
) -> EvolutionPrompt:
    if operation not in operations.OPERATIONS:
        raise ServiceError(operations.UNKNOWN_OPERATION.format(op=operation))
    evolution_prompt_check(template)
    list(EvolutionPrompt.objects.select_for_update().filter(operation=operation))
    top = EvolutionPrompt.objects.filter(operation=operation).aggregate(v=Max("version"))["v"]
    return EvolutionPrompt.objects.create(
        operation=operation,
        version=(top or 0) + 1,
        template=template,
        description=description,
        active=active,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )


@transaction.atomic
def evolution_prompt_update(
    *, prompt: EvolutionPrompt, changes: dict, user=None
) -> EvolutionPrompt:
    """Apply ``changes`` (template, description, active); returns the row holding them. A
    version a run used keeps its template: a changed template is saved as the next version."""
    if changes.get("operation", prompt.operation) != prompt.operation:
        raise ServiceError(NO_OPERATION_CHANGE.format(op=prompt.operation))
    unknown = sorted(set(changes) - set(EDITABLE) - {"operation"})
    if unknown:
        raise ServiceError("unknown rewrite prompt field(s): " + ", ".join(unknown))
    row = EvolutionPrompt.objects.select_for_update().get(pk=prompt.pk)
    if "template" in changes:
        evolution_prompt_check(changes["template"])
    changed = [f for f in EDITABLE if f in changes and changes[f] != getattr(row, f)]
    if not changed:
        return row
    edited = row
    if "template" in changed and evolution_prompt_in_use(row):
        row = _new_version(
            operation=row.operation,
            template=changes["template"],
            description=changes.get("description", row.description),
            active=changes.get("active", row.active),
            user=user,
        )
    else:
        for field in changed:
            setattr(row, field, changes[field])
        row.save(update_fields=changed)
    audit_record(
        user=user,
        action=Action.REWRITE_PROMPT_EDIT,
        obj=row,
        operation=row.operation,
        fields=changed,
        edited_version=edited.version,
        version=row.version,
        active=row.active,
    )
    return row
