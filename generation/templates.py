"""Prompt templates as versioned rows: lookup, checks, and the rule that a used version is kept.

A model names its template (``LanguageModel.prompt_format``); a run renders with the latest
version of that name and points at it. A version any run has pointed at is never changed in
place: saving changes to it creates the next version instead, so every run keeps the exact
template its answers (or its training examples) were rendered with. That holds for every run
that recorded the version, not only succeeded ones: a failed or cancelled run can be resumed,
and its remaining answers must render as its first ones did.

The rendering is ``generation/engine/render.py``; this module is its Django side.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import Max

from evalsite.errors import ServiceError

from .engine import render
from .models import LanguageModel, PromptTemplate

# What staff may set on a template (the API's serializer and the admin's form list these).
TEMPLATE_FIELDS = [
    "name",
    "description",
    "kind",
    "system_prompt",
    "system_template",
    "user_template",
    "assistant_template",
    "turn_separator",
    "newline_token",
    "stop_strings",
    "end_with_eos",
    "jinja_source",
]
# Fields whose change alters what a template renders (a description does not).
RENDERED_FIELDS = [f for f in TEMPLATE_FIELDS if f not in ("name", "description")]

NO_TEMPLATE = "model {model!r} names prompt template {name!r}, which does not exist; known: {known}"
UNKNOWN_TEMPLATE = "unknown prompt template {name!r}; known templates: {known}"
NAME_TAKEN = (
    "a prompt template named {name!r} already exists; edit it instead (a used version is kept "
    "and the edit saved as a new version)"
)
NO_RENAME = "a prompt template keeps its name (models refer to it by name); create a new one"
GONE = "{template} no longer exists"
IN_USE = "{template} was used by a run and is kept as it is"
NAMED_BY = "{template} is the only version of a template these models use: {models}"
BAD_STOP_STRINGS = "stop strings must be a list of non-empty strings"
BAD_FIELD = "{field}: {problem}"


def template_presets_install() -> list[str]:
    """Create version 1 of every shipped preset (generation/engine/presets.py) that is missing;
    returns the names created. Migration 0006 ships them; this restores them after a database
    was emptied (``flush``, a transactional test)."""
    from .engine.presets import PRESETS

    present = set(
        PromptTemplate.objects.filter(name__in=PRESETS, version=1).values_list("name", flat=True)
    )
    missing = [name for name in PRESETS if name not in present]
    PromptTemplate.objects.bulk_create(
        [PromptTemplate(name=name, version=1, **PRESETS[name]) for name in missing],
        ignore_conflicts=True,
    )
    return missing


def template_names() -> list[str]:
    return sorted(set(PromptTemplate.objects.values_list("name", flat=True)))


def template_latest(name: str) -> PromptTemplate | None:
    return PromptTemplate.objects.filter(name=name).order_by("-version").first()


def template_for(model: LanguageModel) -> PromptTemplate:
    """The latest version of the template ``model`` names (ServiceError when there is none)."""
    row = template_latest(model.prompt_format)
    if row is None:
        raise ServiceError(
            NO_TEMPLATE.format(model=model.name, name=model.prompt_format, known=_known())
        )
    return row


def template_name_check(name: str) -> str:
    """``name`` if a template has it; otherwise ServiceError listing the names there are."""
    if not PromptTemplate.objects.filter(name=name).exists():
        raise ServiceError(UNKNOWN_TEMPLATE.format(name=name, known=_known()))
    return name


def _known() -> str:
    return ", ".join(template_names()) or "(none)"


def as_template(row: PromptTemplate) -> render.Template:
    """The renderer's view of a row."""
    return render.Template(
        name=row.name,
        version=row.version,
        kind=row.kind,
        system_prompt=row.system_prompt,
        system_template=row.system_template,
        user_template=row.user_template,
        assistant_template=row.assistant_template,
        turn_separator=row.turn_separator,
        newline_token=row.newline_token,
        stop_strings=tuple(row.stop_strings or ()),
        end_with_eos=row.end_with_eos,
        jinja_source=row.jinja_source,
    )


def template_in_use(row: PromptTemplate) -> bool:
    """Whether a generation or fine-tune run recorded this version (it is then kept as it is)."""
    if row.pk is None:
        return False
    return row.runs.exists() or row.finetune_runs.exists()


def template_fields_check(fields: dict) -> dict:
    """``fields`` of a whole template as they will be stored, or ServiceError naming each
    problem by field (the admin's form asks this before it saves; the services ask it again).

    Placeholders must be the known ones, Jinja source must compile and render in the sandbox,
    stop strings must be a list of non-empty strings.
    """
    fields = dict(fields)
    stops = fields.get("stop_strings") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ServiceError(BAD_FIELD.format(field="stop_strings", problem=BAD_STOP_STRINGS))
    fields["stop_strings"] = list(stops)
    kind = fields.get("kind", PromptTemplate.Kind.TURNS)
    candidate = PromptTemplate(**{f: v for f, v in fields.items() if f in TEMPLATE_FIELDS})
    candidate.kind = kind
    found = render.problems(as_template(candidate))
    if found:
        raise ServiceError(
            "; ".join(BAD_FIELD.format(field=f, problem=p) for f, p in sorted(found.items()))
        )
    return fields


def _defaults() -> dict:
    return {f: PromptTemplate._meta.get_field(f).get_default() for f in TEMPLATE_FIELDS}


@transaction.atomic
def template_create(*, name: str, user=None, **fields) -> PromptTemplate:
    """A new template (version 1). Fields not given take the model's defaults."""
    unknown = sorted(set(fields) - set(TEMPLATE_FIELDS))
    if unknown:
        raise ServiceError(f"unknown template field(s): {', '.join(unknown)}")
    values = template_fields_check({**_defaults(), **fields, "name": name})
    if PromptTemplate.objects.filter(name=name).exists():
        raise ServiceError(NAME_TAKEN.format(name=name))
    try:
        with transaction.atomic():
            return PromptTemplate.objects.create(**values, version=1, created_by=_user(user))
    except IntegrityError:
        raise ServiceError(NAME_TAKEN.format(name=name)) from None


@transaction.atomic
def template_update(*, template: PromptTemplate, changes: dict, user=None) -> PromptTemplate:
    """Apply ``changes`` to ``template``; returns the row that now holds them.

    A version some run recorded is left as it is: the changes are saved as a new version
    (one above the highest of that name) and that row is returned. Otherwise the row itself
    changes. A change that changes nothing saves nothing.
    """
    unknown = sorted(set(changes) - set(TEMPLATE_FIELDS))
    if unknown:
        raise ServiceError(f"unknown template field(s): {', '.join(unknown)}")
    # Lock every version of the name: a second edit of a used version waits for the first, then
    # (its next statement seeing what the first committed) takes the number after it.
    locked = list(PromptTemplate.objects.select_for_update().filter(name=template.name))
    row = next((r for r in locked if r.pk == template.pk), None)
    if row is None:
        raise ServiceError(GONE.format(template=template))
    if changes.get("name", row.name) != row.name:
        raise ServiceError(NO_RENAME)
    current = {f: getattr(row, f) for f in TEMPLATE_FIELDS}
    values = template_fields_check({**current, **changes})
    changed = [f for f in TEMPLATE_FIELDS if values[f] != current[f]]
    if not changed:
        return row
    if template_in_use(row) and any(f in RENDERED_FIELDS for f in changed):
        versions = PromptTemplate.objects.filter(name=row.name)
        latest = versions.aggregate(top=Max("version"))["top"]
        return PromptTemplate.objects.create(
            **values, version=latest + 1, created_by=_user(user) or row.created_by
        )
    for field in changed:
        setattr(row, field, values[field])
    row.save(update_fields=changed)
    return row


def template_delete_problem(row: PromptTemplate) -> str | None:
    """Why ``row`` may not be deleted (None when it may): a run recorded it, or it is the last
    version of a name some model still names."""
    if template_in_use(row):
        return IN_USE.format(template=row)
    last = not PromptTemplate.objects.filter(name=row.name).exclude(pk=row.pk).exists()
    named_by = list(
        LanguageModel.objects.filter(prompt_format=row.name).values_list("name", flat=True)[:5]
    )
    if last and named_by:
        return NAMED_BY.format(template=row, models=", ".join(named_by))
    return None


@transaction.atomic
def template_delete(*, template: PromptTemplate) -> None:
    row = PromptTemplate.objects.select_for_update().get(pk=template.pk)
    problem = template_delete_problem(row)
    if problem:
        raise ServiceError(problem)
    row.delete()


def _user(user):
    return user if getattr(user, "is_authenticated", False) else None
