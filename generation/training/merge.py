"""Merging a LoRA adapter into its base model, as a new standalone registered model."""

from __future__ import annotations

import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction

from evalsite.accounts.services import Action, audit_record
from evalsite.errors import ServiceError

from ..models import LanguageModel
from ..registry import (
    MODEL_NAME_TAKEN,
    language_model_register,
    language_model_tokenizer,
    storage_relative,
)

MERGE_NEEDS_ADAPTER = "model {name!r} has no LoRA adapter to merge"


def language_model_merge_request(*, model: LanguageModel, name: str = "", user=None) -> str:
    """Check a merge can be done and queue it on the ``gpu`` queue; returns the new model's name.

    ``user`` is who asked (recorded in the audit log: a merge spends GPU time)."""
    if not model.adapter_path or model.base_model is None:
        raise ServiceError(MERGE_NEEDS_ADAPTER.format(name=model.name))
    name = name or f"{model.name}-merged"
    if LanguageModel.objects.filter(name=name).exists():
        raise ServiceError(MODEL_NAME_TAKEN.format(name=name))
    from ..tasks import language_model_merge_task

    audit_record(user=user, action=Action.MODEL_MERGE, obj=model, merged_name=name)
    # Merging loads the whole base model: GPU-worker work, never the web process.
    transaction.on_commit(
        lambda: language_model_merge_task.apply_async((model.pk, name), queue="gpu")
    )
    return name


def language_model_merge(*, model: LanguageModel, name: str) -> LanguageModel:
    """Fold an adapter into its base (peft merge_and_unload) and register the standalone model."""
    from ..engine.loading import resolve_path
    from ..engine.train import merge_adapter

    if not model.adapter_path or model.base_model is None:
        raise ServiceError(MERGE_NEEDS_ADAPTER.format(name=model.name))
    if LanguageModel.objects.filter(name=name).exists():
        raise ServiceError(MODEL_NAME_TAKEN.format(name=name))
    base = model.base_model
    out = Path(settings.MODEL_STORAGE) / "merged" / f"model-{model.pk}-{_path_safe(name)}"
    if out.exists():
        shutil.rmtree(out)  # what an earlier, interrupted attempt left
    merge_adapter(
        resolve_path(base.name_or_path, settings.MODEL_STORAGE),
        resolve_path(model.adapter_path, settings.MODEL_STORAGE),
        out,
        tokenizer=language_model_tokenizer(model=model),
        revision=base.revision or None,
        trust_remote_code=base.trust_remote_code,
    )
    return language_model_register(
        name=name,
        name_or_path=storage_relative(out),
        prompt_format=model.prompt_format,
        prompt_template=model.prompt_template,  # the merged model keeps the adapter's pin
        maker=model.maker,
        generation_defaults=model.generation_defaults,
        trust_remote_code=base.trust_remote_code,
    )


def _path_safe(name: str) -> str:
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)
    return safe.strip("._")[:80] or "model"
