"""Loading tokenizers and causal language models with transformers 5. Plain module, no Django.

Code loads models the ordinary way (``from_pretrained(name_or_path)``), local directories under
the MODEL_STORAGE root or hub ids alike, and honours ``HF_HUB_OFFLINE`` by never asking for a
download itself.

One case needs more than ``AutoTokenizer``: a tokenizer shipped only as a sentencepiece model
(``spiece.model`` with ``tokenizer_class: T5Tokenizer``, no ``tokenizer.json``), as the LINE and
rinna Japanese GPT-NeoX models are. Their model cards load it with ``use_fast=False``; transformers
5 ignores that argument and converts the model into a fast T5 tokenizer instead, which (a) needs
the ``protobuf`` package and otherwise fails with a misleading tiktoken error, and (b) when it
works, is not the tokenizer the model was trained with: T5's pipeline splits on whitespace (so
``\\n`` and repeated spaces vanish: the LINE prompt ``ユーザー: ...\\nシステム: `` loses its
newline), has no byte fallback (characters outside the vocabulary decode to nothing) and appends
``</s>`` to every encoded text. ``load_tokenizer`` therefore loads such a directory with
:class:`SentencePieceTokenizer`, which runs the sentencepiece library itself, as the slow
tokenizer of transformers 4 did.
"""

from __future__ import annotations

import json
import os
from typing import Any

from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

from . import paths

# Sentencepiece model file names, in the order transformers' own classes look for them.
SENTENCEPIECE_FILES = ("spiece.model", "tokenizer.model")
FAST_TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

UNKNOWN_DTYPE = "unknown dtype {dtype!r}; use 'auto' or a torch dtype name such as 'bfloat16'"


def resolve_path(name_or_path: str | os.PathLike, storage_root: str | os.PathLike | None) -> str:
    """What to hand ``from_pretrained``: a directory, or a hub id.

    With a storage root (the app's MODEL_STORAGE), the name must stay inside it or be a hub id
    (``paths.resolve``; it raises ``ValueError`` otherwise). Without one (the engine used on its
    own, as benchmarks do) the name is used as given.
    """
    if storage_root is None:
        return os.fspath(name_or_path)
    return paths.resolve(name_or_path, storage_root)


class SentencePieceTokenizer(SentencePieceBackend):
    """A tokenizer that is the sentencepiece model itself: what ``use_fast=False`` gave before v5.

    Encoding and decoding go through ``sentencepiece`` (byte fallback, whitespace and newlines as
    the model defines them). No special tokens are added to encoded text: these are decoder-only
    language models, and an end token appended to a prompt would end the answer at once.
    """

    vocab_files_names = {"vocab_file": "spiece.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        # Special and added tokens are written as they are; runs of ordinary pieces are decoded
        # by sentencepiece, which turns byte pieces (<0xE3>...) back into characters.
        specials = set(self.all_special_tokens) | set(self.added_tokens_encoder)
        parts: list[str] = []
        run: list[str] = []
        for token in tokens:
            if token in specials:
                parts.append(self.sp_model.decode_pieces(run))
                parts.append(token)
                run = []
            else:
                run.append(token)
        parts.append(self.sp_model.decode_pieces(run))
        return "".join(parts)


class SentencePieceModelTokenizer(SentencePieceTokenizer):
    """The same, for repositories that name their model ``tokenizer.model`` (Llama layout)."""

    vocab_files_names = {"vocab_file": "tokenizer.model"}


def _find_file(name_or_path: str, filename: str, revision: str | None) -> str | None:
    """The local path of one of the repository's files, or None when it has no such file."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, filename)
        return path if os.path.isfile(path) else None
    from transformers.utils import cached_file

    return cached_file(
        name_or_path,
        filename,
        revision=revision,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )


def sentencepiece_only(name_or_path: str, *, revision: str | None = None) -> str | None:
    """The sentencepiece file name if the tokenizer has one and no ``tokenizer.json``, else None."""
    if _find_file(name_or_path, FAST_TOKENIZER_FILE, revision):
        return None
    for filename in SENTENCEPIECE_FILES:
        if _find_file(name_or_path, filename, revision):
            return filename
    return None


def _has_remote_tokenizer_code(name_or_path: str, revision: str | None) -> bool:
    config_file = _find_file(name_or_path, TOKENIZER_CONFIG_FILE, revision)
    if not config_file:
        return False
    with open(config_file, encoding="utf-8") as handle:
        return "auto_map" in json.load(handle)


def load_tokenizer(
    name_or_path: str | os.PathLike, *, revision: str | None = None, trust_remote_code: bool = False
) -> Any:
    """The model's tokenizer. Sentencepiece-only tokenizers load through sentencepiece itself."""
    name = os.fspath(name_or_path)
    options: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        options["revision"] = revision
    spm_file = sentencepiece_only(name, revision=revision)
    if spm_file and not (trust_remote_code and _has_remote_tokenizer_code(name, revision)):
        cls = SentencePieceTokenizer if spm_file == "spiece.model" else SentencePieceModelTokenizer
        tokenizer = cls.from_pretrained(name, **({"revision": revision} if revision else {}))
        _fill_special_tokens_from_model(tokenizer)
        return tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name, **options)


def _fill_special_tokens_from_model(tokenizer: SentencePieceTokenizer) -> None:
    # A tokenizer_config.json without special tokens: take them from the sentencepiece model.
    sp = tokenizer.sp_model
    wanted = {
        "bos_token": sp.bos_id(),
        "eos_token": sp.eos_id(),
        "unk_token": sp.unk_id(),
        "pad_token": sp.pad_id(),
    }
    missing = {
        name: sp.id_to_piece(piece_id)
        for name, piece_id in wanted.items()
        if piece_id >= 0 and getattr(tokenizer, name) is None
    }
    if missing:
        tokenizer.add_special_tokens(missing)


def _torch_dtype(dtype: Any) -> Any:
    import torch

    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype or "auto"
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(UNKNOWN_DTYPE.format(dtype=dtype))
    return value


def load_model(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    adapter_path: str | os.PathLike | None = None,
    dtype: Any = "auto",
) -> Any:
    """A causal LM ready for generation (eval mode), with its LoRA adapter applied if given.

    On a CUDA machine the weights are placed by accelerate (``device_map="auto"``, across all
    visible GPUs); otherwise they load on the CPU.
    """
    import torch
    from transformers import AutoModelForCausalLM

    options: dict[str, Any] = {
        "trust_remote_code": trust_remote_code,
        "dtype": _torch_dtype(dtype),
    }
    if revision:
        options["revision"] = revision
    if torch.cuda.is_available():
        options["device_map"] = "auto"
    model = AutoModelForCausalLM.from_pretrained(os.fspath(name_or_path), **options)
    if adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, os.fspath(adapter_path))
    model.eval()
    return model
