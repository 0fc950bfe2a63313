"""Provenance that holds: once a run has started, what it was asked to do is kept as it was.

A kind lists those fields (``RunKind.provenance``: model, template, parameters...). A run has
started once it has left ``queued`` or was ever claimed (``started_at``: a retried run is queued
again but has output already). From then on, saving a changed value of any of them is refused
with ``StateConflict`` (409 in the API), whoever saves it: the admin, the API, a shell. One
change stays allowed: a field still empty may be filled once, which is how a run records the
template version it rendered with when it starts.
"""

from __future__ import annotations

from django.db.models.signals import pre_save

from evalsite.errors import StateConflict

from .kinds import kind_of

PROVENANCE_KEPT = (
    "{label} {id} has started ({status}): what it was asked to do is kept as it was "
    "({fields}); cancel it and make a new run instead"
)


def started(run) -> bool:
    return run.status != run.Status.QUEUED or run.started_at is not None


def _value(run, name: str):
    field = run._meta.get_field(name)
    return getattr(run, field.attname)


def provenance_changes(run, values: dict) -> list[str]:
    """The fields of ``values`` (name -> new value; a related row or its id) that would change
    ``run``'s provenance now that it has started ([] when it has not, or nothing changes)."""
    kind = kind_of(run)
    if not started(run):
        return []
    changed = []
    for name in kind.provenance:
        if name not in values:
            continue
        new = values[name]
        new = getattr(new, "pk", new)
        old = _value(run, name)
        if old is not None and new != old:
            changed.append(name)
    return changed


def provenance_check(run, values: dict) -> None:
    """StateConflict when ``values`` would change a started run's provenance."""
    changed = provenance_changes(run, values)
    if changed:
        kind = kind_of(run)
        raise StateConflict(
            PROVENANCE_KEPT.format(
                label=kind.label, id=run.pk, status=run.status, fields=", ".join(changed)
            )
        )


def _guard(sender, instance, update_fields=None, raw=False, **kwargs) -> None:
    if raw or instance.pk is None:
        return
    try:
        kind = kind_of(sender)
    except LookupError:
        return
    watched = [f for f in kind.provenance if update_fields is None or f in update_fields]
    if not watched:
        return
    stored = sender.objects.filter(pk=instance.pk).first()
    if stored is None:
        return
    provenance_check(stored, {name: _value(instance, name) for name in watched})


def guard_connect() -> None:
    """Refuse, on every save of any run, a change to a started run's provenance (called once
    from the runs app's ready())."""
    pre_save.connect(_guard, dispatch_uid="evalsite.runs.provenance")
