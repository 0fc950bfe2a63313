"""A registered model's tokenizer, loaded inside the web process (token statistics, prompts
rendered with a chat template for an export): never a repository's own code, never a download.

The web process holds ``SECRET_KEY`` and the database password, so a model repository's Python
must not run there, whoever asked. Unlike the worker's loader (``registry.language_model_load``):

- a model with ``trust_remote_code`` on (or an adapter whose base model has it) is refused with
  ``REMOTE_CODE_IN_WEB``;
- transformers is told ``trust_remote_code=False`` explicitly, so a repository that would need
  its own code fails to load (a message) instead of running it;
- the files are this machine's: a folder under MODEL_STORAGE, confined and checked as the
  worker's loader checks it, or a hub id already in the local hub cache.
"""

from __future__ import annotations

import os

from django.conf import settings

from evalsite.errors import ServiceError

from .models import LanguageModel

REMOTE_CODE_IN_WEB = (
    "model {name!r} runs code from its repository (trust_remote_code), which the web process "
    "never loads; choose a model without it"
)
NOT_STORED_HERE = (
    "the tokenizer of {name!r} ({path}) is not stored on this machine (the web process does not "
    "download models); put it under MODEL_STORAGE or in the hub cache"
)
NO_WEIGHTS = "model {name!r} has no weights here (imported answers only)"


def web_tokenizer(model: LanguageModel):
    """The tokenizer of ``model`` (its base model's, for an adapter), without remote code.

    Raises ServiceError for a model that has ``trust_remote_code`` on, or whose files are not on
    this machine; transformers' own errors (a repository that needs its code included) come out
    as ``OSError`` / ``ValueError`` for the caller to word.
    """
    from .engine.loading import load_tokenizer, resolve_path

    weights = model.base_model if model.adapter_path else model
    if model.trust_remote_code or weights.trust_remote_code:
        raise ServiceError(REMOTE_CODE_IN_WEB.format(name=model.name))
    if not weights.name_or_path:
        raise ServiceError(NO_WEIGHTS.format(name=model.name))
    revision = weights.revision or None
    try:
        path = resolve_path(weights.name_or_path, settings.MODEL_STORAGE)
    except ValueError as exc:
        raise ServiceError(str(exc)) from None
    if not os.path.isdir(path):  # a hub id (resolve_path returns a folder under the root)
        path = _cached_snapshot(model, path, revision)
        revision = None  # the snapshot folder is that revision
    return load_tokenizer(path, revision=revision, trust_remote_code=False)


def _cached_snapshot(model: LanguageModel, hub_id: str, revision: str | None) -> str:
    """The folder of ``hub_id`` at ``revision`` in the local hub cache (no network)."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(hub_id, revision=revision, local_files_only=True)
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError), or not a repo id
        raise ServiceError(NOT_STORED_HERE.format(name=model.name, path=hub_id)) from None
