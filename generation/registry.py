"""Prompt sets and the model registry: what a run generates from, and with which model."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from evalsite.accounts.services import Action, audit_record
from evalsite.errors import ServiceError

from .aliases import aliases_clean
from .importers import ParsedQuestion, parse_prompt_file
from .models import LanguageModel, PromptSet, Question
from .models.language_models import validate_endpoint_url
from .params import context_check, generation_params_check
from .templates import template_name_check
from .unique import atomic_named

NAME_TAKEN = "a prompt set named {name!r} already exists (set replace to rebuild it)"
SET_HAS_ANSWERS = (
    "prompt set {name!r} already has answers and is read-only; import under a new name"
)
MODEL_NAME_TAKEN = "a model named {name!r} already exists"
REMOTE_CODE_SUPERUSER = "only a superuser can turn on trust_remote_code"
REMOTE_CODE_CHANGE = (
    "model {name!r} runs code from its repository (trust_remote_code); only a superuser may "
    "change what the worker loads or runs for it ({fields})"
)
ADAPTER_NEEDS_BASE = "an adapter needs a base model"
ENDPOINT_OR_WEIGHTS = (
    "a model is either weights (name_or_path) or a served endpoint (endpoint_url), not both"
)
ENDPOINT_MODEL_NEEDED = "a served model needs endpoint_model: the model id the endpoint serves"
ENDPOINT_NO_REMOTE_CODE = "a served model loads nothing in the worker; trust_remote_code stays off"
BAD_ENV_NAME = "api_key_env must name an environment variable (such as OPENAI_API_KEY): {value!r}"
API_KEY_SUPERUSER = (
    "only a superuser may choose which environment variable is sent to an endpoint as its API "
    "key, or where a model that sends one points ({fields})"
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BAD_PATH = "{field}: {problem}"

# What staff may set on a model (the API's serializer and the admin's form both list these).
LANGUAGE_MODEL_FIELDS = [
    "name",
    "name_or_path",
    "revision",
    "maker",
    "display_label",
    "aliases",
    "maker_aliases",
    "prompt_format",
    "prompt_template",
    "generation_defaults",
    "base_model",
    "adapter_path",
    "trust_remote_code",
    "endpoint_url",
    "endpoint_model",
    "api_key_env",
    "endpoint_concurrency",
    "endpoint_requests_per_minute",
]
# What a worker loads (and, with trust_remote_code, runs) for a model. A served model loads
# nothing: its endpoint fields are guarded by ``API_KEY_GUARDED`` instead.
WORKER_LOADED = ("name_or_path", "revision", "adapter_path", "base_model")
# What only a superuser changes on a model with trust_remote_code on: what the worker loads, and
# the prompt template (a chat template is rendered by the repository's own tokenizer code).
# Changing the template does not change the code, so it leaves the flag as it is.
REMOTE_CODE_GUARDED = (*WORKER_LOADED, "prompt_format", "prompt_template")
# The API key (the value of the variable ``api_key_env`` names) goes wherever endpoint_url
# points: only a superuser may change either on a model that sends a key.
API_KEY_GUARDED = ("api_key_env", "endpoint_url")
# Where a served model's requests (and its key) go: each change is written to the audit log.
ENDPOINT_AUDITED = ("endpoint_url", "endpoint_model", "api_key_env")
# What else decides what a model generates: its template (name and pinned version), decoding
# defaults and weights. Each change of a registered model is written to the audit log.
GENERATION_AUDITED = (
    "prompt_format",
    "prompt_template",
    "generation_defaults",
    "name_or_path",
    "revision",
    "base_model",
    "adapter_path",
)
PIN_OTHER_TEMPLATE = (
    "the pinned template version {pinned} is not a version of the model's prompt template {name!r}"
)


# --- prompt sets -------------------------------------------------------------------------------


@transaction.atomic
def prompt_set_create(
    *,
    name: str,
    questions: Iterable[ParsedQuestion],
    description: str = "",
    source: str = "",
    replace: bool = False,
) -> PromptSet:
    """Create (or, with ``replace``, rebuild) a prompt set in one transaction."""
    existing = PromptSet.objects.select_for_update().filter(name=name).first()
    if existing is not None:
        if not replace:
            raise ServiceError(NAME_TAKEN.format(name=name))
        if existing.has_answers:
            raise ServiceError(SET_HAS_ANSWERS.format(name=name))
        existing.delete()
    prompt_set = PromptSet.objects.create(name=name, description=description, source=source)
    Question.objects.bulk_create(
        Question(
            prompt_set=prompt_set,
            position=position,
            text=q.text,
            follow_ups=list(q.follow_ups),
            category=q.category,
            external_id=q.external_id,
            reference=q.reference,
            criteria=q.criteria,
        )
        for position, q in enumerate(questions, start=1)
    )
    return prompt_set


def prompt_set_import(
    *, name: str, data: bytes, filename: str, replace: bool = False, description: str = ""
) -> PromptSet:
    """Parse a whole file first, then write it in one transaction (nothing on any error)."""
    questions = parse_prompt_file(data, filename, limit=settings.MAX_UPLOAD_BYTES)
    return prompt_set_create(
        name=name,
        questions=questions,
        description=description,
        source=os.path.basename(filename),
        replace=replace,
    )


# --- models ------------------------------------------------------------------------------------


def language_model_register(
    *,
    name: str,
    name_or_path: str = "",
    prompt_format: str = "line_sft",
    prompt_template=None,
    revision: str = "",
    maker: str = "",
    display_label: str = "",
    aliases: list[str] | None = None,
    maker_aliases: list[str] | None = None,
    generation_defaults: dict | None = None,
    trust_remote_code: bool = False,
    base_model: LanguageModel | None = None,
    adapter_path: str = "",
    user=None,
    **endpoint,
) -> LanguageModel:
    """Register a model: weights (``name_or_path``) or a served model (``endpoint_url``,
    ``endpoint_model``, ``api_key_env``, ``endpoint_concurrency``,
    ``endpoint_requests_per_minute`` in ``endpoint``). ``user`` is who asks (None: the system
    itself, such as a finished fine-tune or a command run by an operator). ``prompt_template``
    pins a version of the ``prompt_format`` template (a tuned model: the one it trained with)."""
    fields = language_model_changes_check(
        model=LanguageModel(),
        changes={
            **endpoint,
            "name": name,
            "name_or_path": name_or_path,
            "prompt_format": prompt_format,
            "prompt_template": prompt_template,
            "revision": revision,
            "maker": maker,
            "display_label": display_label,
            "aliases": aliases or [],
            "maker_aliases": maker_aliases or [],
            "generation_defaults": generation_defaults or {},
            "trust_remote_code": trust_remote_code,
            "base_model": base_model,
            "adapter_path": adapter_path,
        },
        user=user,
    )
    with atomic_named(LanguageModel, name, MODEL_NAME_TAKEN):
        model = LanguageModel.objects.create(**fields)
        _audit_changes(model, before=_audited(LanguageModel()), user=user, created=True)
    return model


def language_model_changes_check(*, model: LanguageModel, changes: dict, user=None) -> dict:
    """``changes`` to ``model`` as they will be stored, or ServiceError (the admin's form asks
    this before it saves; the services below ask it again).

    Only a superuser turns ``trust_remote_code`` on. While it is on, only a superuser may change
    what the worker loads (``WORKER_LOADED``); and any such change, by anyone, turns it off
    unless the same request sets it again as a superuser, who thereby confirms the new code.
    Paths must stay inside MODEL_STORAGE (or be hub ids).
    """
    changes = dict(changes)
    loaded = sorted(f for f in WORKER_LOADED if f in changes and changes[f] != getattr(model, f))
    guarded = sorted(
        f for f in REMOTE_CODE_GUARDED if f in changes and changes[f] != getattr(model, f)
    )
    if changes.get("trust_remote_code") and not model.trust_remote_code and not _superuser(user):
        raise ServiceError(REMOTE_CODE_SUPERUSER)
    if guarded and model.trust_remote_code and not _superuser(user):
        raise ServiceError(REMOTE_CODE_CHANGE.format(name=model.name, fields=", ".join(guarded)))
    if loaded and not (changes.get("trust_remote_code") and _superuser(user)):
        changes["trust_remote_code"] = False
    if "prompt_format" in changes:
        template_name_check(changes["prompt_format"])
    _pin_check(model, changes)
    _endpoint_check(model, changes, user)
    for field in ("name_or_path", "adapter_path"):
        if field in changes:
            changes[field] = _confined(field, changes[field])
    for field in ("aliases", "maker_aliases"):
        if field in changes:
            try:
                changes[field] = aliases_clean(field, changes[field])
            except ValueError as exc:
                raise ServiceError(str(exc)) from None
    if "generation_defaults" in changes:
        changes["generation_defaults"] = generation_params_check(changes["generation_defaults"])
        weights = changes.get("name_or_path", model.name_or_path)
        context_check(changes["generation_defaults"], model_context(weights))
    adapter = changes.get("adapter_path", model.adapter_path)
    if adapter and changes.get("base_model", model.base_model) is None:
        raise ServiceError(ADAPTER_NEEDS_BASE)
    return changes


@transaction.atomic
def language_model_update(*, model: LanguageModel, changes: dict, user=None) -> LanguageModel:
    """Change a registered model (the API and the admin both come here); see
    ``language_model_changes_check`` for who may change what."""
    model = LanguageModel.objects.select_for_update().get(pk=model.pk)
    changes = language_model_changes_check(model=model, changes=changes, user=user)
    name = changes.get("name", model.name)
    if LanguageModel.objects.filter(name=name).exclude(pk=model.pk).exists():
        raise ServiceError(MODEL_NAME_TAKEN.format(name=name))
    before = _audited(model)
    for field, value in changes.items():
        setattr(model, field, value)
    if changes:
        model.save(update_fields=list(changes))
        _audit_changes(model, before=before, user=user)
    return model


def _pin_check(model: LanguageModel, changes: dict) -> None:
    """A pinned version belongs to the model's template: a new template name without a new pin
    drops the old pin (it pinned a version of the old name); a pin of another name is refused."""
    name = changes.get("prompt_format", model.prompt_format)
    if "prompt_template" not in changes and name != model.prompt_format:
        changes["prompt_template"] = None
    pinned = changes.get("prompt_template", model.prompt_template)
    if pinned is not None and pinned.name != name:
        raise ServiceError(PIN_OTHER_TEMPLATE.format(pinned=pinned, name=name))


def _audited(model: LanguageModel) -> dict:
    audited = ("trust_remote_code", *ENDPOINT_AUDITED)
    values = {f: getattr(model, f) for f in audited}
    # Related rows by id: what the row held, whatever becomes of the rows.
    return {**values, **{f: _plain(model, f) for f in GENERATION_AUDITED}}


def _plain(model: LanguageModel, name: str):
    """A field's value as the audit log keeps it (a related row: its id and name)."""
    field = model._meta.get_field(name)
    if field.is_relation:
        row = getattr(model, name)
        return None if row is None else {"id": row.pk, "name": str(row)}
    return getattr(model, name)


def _audit_changes(model: LanguageModel, *, before: dict, user, created: bool = False) -> None:
    """Audit entries for what the last save changed of ``trust_remote_code``, of where a
    served model sends its requests and key (field names, hosts and variable names: never a
    key, never a URL's user or password), and (on a change, not a registration) of what decides
    what the model generates: template, decoding defaults, weights. Call inside the
    transaction of the save."""
    generation = [f for f in GENERATION_AUDITED if _plain(model, f) != before[f]]
    if generation and not created:
        audit_record(
            user=user,
            action=Action.MODEL_GENERATION_CHANGE,
            obj=model,
            fields=generation,
            **{f: {"from": before[f], "to": _plain(model, f)} for f in generation},
        )
    if model.trust_remote_code != before["trust_remote_code"]:
        audit_record(
            user=user,
            action=Action.MODEL_REMOTE_CODE_ON
            if model.trust_remote_code
            else Action.MODEL_REMOTE_CODE_OFF,
            obj=model,
            name_or_path=model.name_or_path,
            revision=model.revision,
        )
    changed = [f for f in ENDPOINT_AUDITED if getattr(model, f) != before[f]]
    if changed:
        shown = {"endpoint_url": _url_origin, "endpoint_model": str, "api_key_env": str}
        audit_record(
            user=user,
            action=Action.MODEL_ENDPOINT_CHANGE,
            obj=model,
            fields=changed,
            **{
                f: {"from": shown[f](before[f]), "to": shown[f](getattr(model, f))} for f in changed
            },
        )


def _url_origin(url: str) -> str:
    """Scheme, host and port of ``url`` (what it may carry besides, such as a user and
    password in it, stays out of the audit log)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(not a URL)"
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def _endpoint_check(model: LanguageModel, changes: dict, user) -> None:
    """A model is weights or an endpoint; only a superuser picks where an API key goes."""

    def after(field: str):
        return changes.get(field, getattr(model, field))

    key_env = after("api_key_env")
    if key_env and not ENV_NAME.match(key_env):
        raise ServiceError(BAD_ENV_NAME.format(value=key_env))
    guarded = sorted(f for f in API_KEY_GUARDED if f in changes and changes[f] != getattr(model, f))
    if guarded and (key_env or model.api_key_env) and not _superuser(user):
        raise ServiceError(API_KEY_SUPERUSER.format(fields=", ".join(guarded)))
    if changes.get("endpoint_url"):
        try:
            validate_endpoint_url(changes["endpoint_url"])
        except ValidationError as exc:
            raise ServiceError(
                f"endpoint_url {changes['endpoint_url']!r}: {exc.messages[0]}"
            ) from None
        if changes["endpoint_url"] != model.endpoint_url:
            endpoint_host_check(changes["endpoint_url"])
    if after("endpoint_url"):
        if after("name_or_path") or after("adapter_path"):
            raise ServiceError(ENDPOINT_OR_WEIGHTS)
        if not after("endpoint_model"):
            raise ServiceError(ENDPOINT_MODEL_NEEDED)
        if after("trust_remote_code"):
            raise ServiceError(ENDPOINT_NO_REMOTE_CODE)


def endpoint_host_check(url: str) -> None:
    """ServiceError unless ``url``'s host is one ENDPOINT_ALLOWED_HOSTS allows (the worker asks
    again before every request, so a setting changed after saving still holds)."""
    from .engine.outbound import HostNotAllowed, HostPolicy

    try:
        HostPolicy.of(settings.ENDPOINT_ALLOWED_HOSTS).check(url)
    except HostNotAllowed as exc:
        raise ServiceError(f"endpoint_url: {exc}") from None


def model_context(name_or_path: str) -> int | None:
    """The context length of a model stored under MODEL_STORAGE (None when unknown)."""
    from .engine.paths import context_length

    return context_length(name_or_path, settings.MODEL_STORAGE) if name_or_path else None


def _superuser(user) -> bool:
    return user is None or bool(getattr(user, "is_superuser", False))


def _confined(field: str, value: str) -> str:
    from .engine.paths import confine

    try:
        return confine(value, settings.MODEL_STORAGE)
    except ValueError as exc:
        raise ServiceError(BAD_PATH.format(field=field, problem=exc)) from None


def storage_relative(path: str | Path) -> str:
    """A path under MODEL_STORAGE as the relative string rows keep; others unchanged."""
    path = Path(path)
    root = Path(settings.MODEL_STORAGE)
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def language_model_load(*, model: LanguageModel, engine: str = "transformers"):
    """Tokenizer and weights of a registered model (base + adapter for a LoRA result), loaded
    by transformers or, with ``engine`` "vllm", into vLLM's offline engine."""
    from .engine.loading import load_model, load_tokenizer, resolve_path

    storage = settings.MODEL_STORAGE
    weights = model.base_model if model.adapter_path else model
    path = resolve_path(weights.name_or_path, storage)
    options = {
        "revision": weights.revision or None,
        "trust_remote_code": weights.trust_remote_code,
    }
    tokenizer = load_tokenizer(path, **options)
    adapter = resolve_path(model.adapter_path, storage) if model.adapter_path else None
    if engine == "vllm":
        from .engine.vllm_engine import load_vllm

        return tokenizer, load_vllm(path, adapter_path=adapter, **options)
    return tokenizer, load_model(path, adapter_path=adapter, **options)


def language_model_endpoint(*, model: LanguageModel):
    """How to reach a served model: its URL, served name, key variable and request limits."""
    from .engine.endpoint import Endpoint

    return Endpoint(
        url=model.endpoint_url,
        model=model.endpoint_model,
        api_key_env=model.api_key_env,
        concurrency=model.endpoint_concurrency,
        requests_per_minute=model.endpoint_requests_per_minute,
        allowed_hosts=tuple(settings.ENDPOINT_ALLOWED_HOSTS),
    )


def language_model_tokenizer(*, model: LanguageModel):
    """The tokenizer of a registered model (its base model's, for an adapter)."""
    from .engine.loading import load_tokenizer, resolve_path

    weights = model.base_model if model.adapter_path else model
    return load_tokenizer(
        resolve_path(weights.name_or_path, settings.MODEL_STORAGE),
        revision=weights.revision or None,
        trust_remote_code=weights.trust_remote_code,
    )
