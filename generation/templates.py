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

import dataclasses

from django.db import IntegrityError, transaction

from evalsite.errors import ServiceError
from evalsite.versioned import Versions

from .engine import render, template_check
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
GONE = "{row} no longer exists"
IN_USE = "{template} was used by a run and is kept as it is"
NAMED_BY = "{template} is the only version of a template these models use: {models}"
BAD_STOP_STRINGS = "stop strings must be a list of non-empty strings"
BAD_FIELD = "{field}: {problem}"


def template_in_use(row: PromptTemplate) -> bool:
    """Whether a generation or fine-tune run recorded this version, or a model pins it (it is
    then kept as it is)."""
    if row.pk is None:
        return False
    return row.runs.exists() or row.finetune_runs.exists() or row.pinned_models.exists()


VERSIONS = Versions(
    PromptTemplate,
    key="name",
    fields=TEMPLATE_FIELDS,
    rendered=RENDERED_FIELDS,
    in_use=template_in_use,
    unknown="unknown template field(s): {fields}",
    gone=GONE,
)


def template_presets_install() -> list[str]:
    """Create version 1 of every shipped preset (generation/engine/presets.py) that is missing;
    returns the names created. Migration 0006 ships them; this restores them after a database
    was emptied (``flush``, a transactional test)."""
    from .engine.presets import PRESETS

    return VERSIONS.presets_install(PRESETS)


def template_names() -> list[str]:
    return VERSIONS.keys()


def template_latest(name: str) -> PromptTemplate | None:
    return VERSIONS.latest(name)


def template_for(model: LanguageModel) -> PromptTemplate:
    """The version ``model`` pins (a tuned model's: the one it was trained with), else the
    latest version of the template it names (ServiceError when there is none)."""
    if model.prompt_template_id is not None:
        return model.prompt_template
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


@transaction.atomic
def template_create(*, name: str, user=None, **fields) -> PromptTemplate:
    """A new template (version 1). Fields not given take the model's defaults."""
    VERSIONS.check_known(fields)
    values = template_fields_check({**VERSIONS.defaults(), **fields, "name": name})
    if PromptTemplate.objects.filter(name=name).exists():
        raise ServiceError(NAME_TAKEN.format(name=name))
    try:
        with transaction.atomic():
            return VERSIONS.create(values, user=user, version=1)
    except IntegrityError:
        raise ServiceError(NAME_TAKEN.format(name=name)) from None


@transaction.atomic
def template_update(*, template: PromptTemplate, changes: dict, user=None) -> PromptTemplate:
    """Apply ``changes`` to ``template``; returns the row that now holds them.

    A version some run recorded is left as it is: the changes are saved as a new version
    (one above the highest of that name) and that row is returned. Otherwise the row itself
    changes. A change that changes nothing saves nothing.
    """
    VERSIONS.check_known(changes)
    row = VERSIONS.lock(template)
    if changes.get("name", row.name) != row.name:
        raise ServiceError(NO_RENAME)
    current = {f: getattr(row, f) for f in TEMPLATE_FIELDS}
    values = template_fields_check({**current, **changes})
    row, _ = VERSIONS.apply(row, values, user=user)
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


# --- a model's own chat template ----------------------------------------------------------------

NO_OWN_TEMPLATE = (
    "model {model!r} has no chat template of its own (no chat_template.jinja, no chat_template "
    "in tokenizer_config.json)"
)
TOKENIZER_UNREADABLE = "the tokenizer of model {model!r} cannot be loaded here: {error}"
OWN_DESCRIPTION = "{model}'s own chat template ({file}), rendered in the sandbox"


def _tokenizer_of(model: LanguageModel):
    from .web_tokenizer import web_tokenizer

    try:
        return web_tokenizer(model)
    except (OSError, ValueError) as exc:
        raise ServiceError(TOKENIZER_UNREADABLE.format(model=model.name, error=exc)) from None


def model_preview(*, model: LanguageModel, template: PromptTemplate, messages: list[dict]):
    """``template_check.preview`` of ``template`` with ``model``'s tokenizer: exactly the text and
    tokens generation sends that model (ValueError when the template cannot render them)."""
    return template_check.preview(as_template(template), messages, _tokenizer_of(model))


def _own_file(tokenizer) -> str:
    import os

    folder = str(getattr(tokenizer, "name_or_path", "") or "")
    if not os.path.isdir(folder):
        return ""
    names = (template_check.CHAT_TEMPLATE_FILE, template_check.TOKENIZER_CONFIG_FILE)
    found = {n: os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))}
    return template_check.chat_template_file(found)


def model_template_check(*, model: LanguageModel) -> dict:
    """What staff see of a model's prompting (staff only: it names the model): the template it
    uses, its own chat template when it has one and how the two differ on a sample
    conversation, exactly what generation sends for it (text, token ids, special tokens), and
    the special-token warnings. ServiceError when the tokenizer is not on this machine."""
    row = template_for(model)
    chosen = as_template(row)
    tokenizer = _tokenizer_of(model)
    own = template_check.own_chat_template(tokenizer)
    # The sample's system prompt is the template's own when it has one (llm_jp's preamble).
    messages = template_check.sample_messages(chosen.system_prompt or template_check.SAMPLE_SYSTEM)
    try:
        shown = dataclasses.asdict(template_check.preview(chosen, messages, tokenizer))
        problem = ""
    except ValueError as exc:
        shown, problem = None, str(exc)
    return {
        "template": row.name,
        "version": row.version,
        "own_chat_template": own,
        "own_chat_template_file": _own_file(tokenizer) if own else "",
        "diff": template_check.template_diff(chosen, own, tokenizer, messages) if own else "",
        "preview": shown,
        "preview_error": problem,
        "warnings": template_check.special_token_warnings(chosen, tokenizer, own),
    }


@transaction.atomic
def template_from_model(
    *, model: LanguageModel, name: str, use: bool = False, user=None
) -> PromptTemplate:
    """A new template (version 1, kind ``jinja``) holding ``model``'s own chat template, checked
    and rendered in the sandbox like any Jinja template; with ``use`` the model names it from
    then on (its next runs render with it)."""
    tokenizer = _tokenizer_of(model)
    own = template_check.own_chat_template(tokenizer)
    if not own:
        raise ServiceError(NO_OWN_TEMPLATE.format(model=model.name))
    row = template_create(
        name=name,
        user=user,
        kind=PromptTemplate.Kind.JINJA,
        jinja_source=own,
        description=OWN_DESCRIPTION.format(
            model=model.name, file=_own_file(tokenizer) or "its tokenizer"
        )[:200],
    )
    if use:
        from .registry import language_model_update

        language_model_update(model=model, changes={"prompt_format": row.name}, user=user)
    return row
