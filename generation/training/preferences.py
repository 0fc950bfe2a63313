"""Preference data sets for DPO: store pairs, read and write them as the JSONL TRL reads
(``prompt``, ``chosen``, ``rejected`` strings), and find them for a run.

Pairs made from a study's votes come from ``annotation`` (annotation/preferences.py). generation
does not import annotation: annotation registers a *preference source* here when it starts
(``preference_source_register``), and ``preferences_from_study`` calls it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from django.conf import settings

from evalsite.errors import ServiceError

from ..engine.dpo import PreferenceExample
from ..importers import NOT_AN_OBJECT, ImportFormatError, decode, json_records
from ..models import LanguageModel, PreferenceDataset, PreferencePair
from ..unique import atomic_named

logger = logging.getLogger(__name__)

NAME_TAKEN = "a preference data set named {name!r} already exists"
NO_PAIRS = "holds no preference pairs"
MISSING = "no {field!r} field"
NOT_TEXT = "field {field!r} must be a string, got {kind} (conversational pairs are not supported)"
EMPTY = "field {field!r} is empty"
SAME = "'chosen' and 'rejected' are the same text"
BAD_ORIGIN = "field 'origin' must be an object"
NO_SOURCE = (
    "no preference source is installed (the annotation app registers one); "
    "export the study's votes with `manage.py export_preferences` instead"
)
UNKNOWN_PREFERENCES = "no preference data set or file named {value!r}"
NO_PAIRS_IN_SET = "preference data set {name!r} has no pairs"

PAIR_FIELDS = ("prompt", "chosen", "rejected")

# What makes a study's votes into a preference data set: called as
# fn(study, model=..., name=..., user=...) with the study's name or id; returns the data set.
PreferenceSource = Callable[..., PreferenceDataset]
_source: PreferenceSource | None = None


def preference_source_register(fn: PreferenceSource) -> None:
    """Install the function that turns a study's votes into pairs (annotation's ready())."""
    global _source
    _source = fn


def preferences_from_study(
    study: str, *, model: LanguageModel | None = None, name: str = "", user=None
) -> PreferenceDataset:
    """A new preference data set from a study's votes (through the registered source)."""
    if _source is None:
        raise ServiceError(NO_SOURCE)
    return _source(study, model=model, name=name, user=user)


# --- storing -----------------------------------------------------------------------------------


def preference_dataset_create(
    *,
    name: str,
    pairs: Sequence[dict],
    description: str = "",
    source: str = "",
    source_study_id: int | None = None,
    source_study_name: str = "",
    rendered_for: str = "",
    stats: dict | None = None,
    user=None,
) -> PreferenceDataset:
    """Write a data set and all its pairs in one transaction.

    Each pair is a dict with ``prompt``, ``chosen``, ``rejected`` and optionally ``question``
    and ``origin`` (plain data: comparison id, vote counts).
    """
    if not pairs:
        raise ServiceError(f"{name}: {NO_PAIRS}")
    totals = {"pairs": len(pairs), **(stats or {})}
    with atomic_named(PreferenceDataset, name, NAME_TAKEN):
        dataset = PreferenceDataset.objects.create(
            name=name,
            description=description,
            source=source,
            source_study_id=source_study_id,
            source_study_name=source_study_name,
            rendered_for=rendered_for,
            stats=totals,
            created_by=user if getattr(user, "pk", None) else None,
        )
        PreferencePair.objects.bulk_create(
            PreferencePair(
                dataset=dataset,
                position=position,
                question=pair.get("question", ""),
                prompt=pair["prompt"],
                chosen=pair["chosen"],
                rejected=pair["rejected"],
                origin=pair.get("origin") or {},
            )
            for position, pair in enumerate(pairs, start=1)
        )
    return dataset


def preference_pair_record(pair: PreferencePair) -> dict:
    """A stored pair as one JSONL record: TRL's three strings, then where it came from."""
    record = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
    if pair.question:
        record["question"] = pair.question
    if pair.origin:
        record["origin"] = pair.origin
    return record


def preferences_jsonl(dataset: PreferenceDataset) -> str:
    """The data set as JSONL, one pair a line, in position order."""
    return "".join(
        json.dumps(preference_pair_record(p), ensure_ascii=False) + "\n"
        for p in dataset.pairs.order_by("position")
    )


def preferences_write(dataset: PreferenceDataset, path: str | os.PathLike) -> Path:
    """Write the JSONL next to its final name, then move it there (never half a file)."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(preferences_jsonl(dataset), encoding="utf-8")
    partial.replace(target)
    return target


# --- reading -----------------------------------------------------------------------------------


def _string(record: dict, field: str, filename: str, line: int, *, required: bool) -> str:
    if record.get(field) is None:
        if required:
            raise ImportFormatError(filename, MISSING.format(field=field), line=line)
        return ""
    value = record[field]
    if not isinstance(value, str):
        kind = type(value).__name__
        raise ImportFormatError(filename, NOT_TEXT.format(field=field, kind=kind), line=line)
    if required and not value.strip():
        raise ImportFormatError(filename, EMPTY.format(field=field), line=line)
    return value


def preferences_parse(data: bytes, filename: str) -> list[dict]:
    """Pairs from a JSONL (or JSON array) file in TRL's preference shape; every problem is an
    ImportFormatError naming the file, the line and the field."""
    text = decode(data, filename, limit=settings.MAX_UPLOAD_BYTES)
    array = Path(filename).suffix.lower() == ".json"
    pairs = []
    for line, record in json_records(text, filename, array=array, what="pair"):
        if not isinstance(record, dict):
            kind = type(record).__name__
            raise ImportFormatError(filename, NOT_AN_OBJECT.format(kind=kind), line=line)
        pair = {f: _string(record, f, filename, line, required=True) for f in PAIR_FIELDS}
        if pair["chosen"] == pair["rejected"]:
            raise ImportFormatError(filename, SAME, line=line)
        pair["question"] = _string(record, "question", filename, line, required=False)
        origin = record.get("origin") or {}
        if not isinstance(origin, dict):
            raise ImportFormatError(filename, BAD_ORIGIN, line=line)
        pair["origin"] = {"line": line, **origin}
        pairs.append(pair)
    if not pairs:
        raise ImportFormatError(filename, NO_PAIRS)
    return pairs


def preference_dataset_import(
    *, name: str, data: bytes, filename: str, description: str = "", user=None
) -> PreferenceDataset:
    """Parse a whole file first, then write it: nothing is stored on any error."""
    if PreferenceDataset.objects.filter(name=name).exists():
        raise ServiceError(NAME_TAKEN.format(name=name))
    pairs = preferences_parse(data, filename)
    return preference_dataset_create(
        name=name,
        pairs=pairs,
        description=description,
        source=os.path.basename(filename),
        user=user,
    )


def preference_dataset_resolve(value: str, *, user=None) -> PreferenceDataset:
    """A stored preference data set by name, or a JSONL file imported now (named after it)."""
    found = PreferenceDataset.objects.filter(name=value).first()
    if found is not None:
        return found
    path = Path(value)
    if not path.is_file():
        raise ServiceError(UNKNOWN_PREFERENCES.format(value=value))
    name, n = path.stem, 1
    while PreferenceDataset.objects.filter(name=name).exists():
        n += 1
        name = f"{path.stem}-{n}"
    return preference_dataset_import(
        name=name, data=path.read_bytes(), filename=path.name, user=user
    )


# --- for a run ---------------------------------------------------------------------------------


def preference_examples(dataset: PreferenceDataset) -> list[PreferenceExample]:
    """The engine's pairs, in position order. With the question kept, the engine renders the
    prompt again with the tuned model's template; otherwise the stored prompt is used as is."""
    return [
        PreferenceExample(prompt=p, chosen=c, rejected=r, question=q)
        for p, c, r, q in dataset.pairs.order_by("position").values_list(
            "prompt", "chosen", "rejected", "question"
        )
    ]


def dpo_run_train(run, inputs: dict, **callbacks):
    """Train a DPO run (``finetune._finetune`` calls this with the run's SFT inputs)."""
    from ..engine.dpo import train_dpo

    if run.preferences is None or not run.preferences.pairs.exists():
        name = run.preferences.name if run.preferences else "?"
        raise ServiceError(NO_PAIRS_IN_SET.format(name=name))
    values = {k: v for k, v in inputs.items() if k != "examples"}
    result = train_dpo(**values, pairs=preference_examples(run.preferences), **callbacks)
    if result.margin_after is not None:
        logger.info(
            "DPO run %s: mean log-probability margin (chosen - rejected) on %d held-out pairs: "
            "%.4f before, %.4f after",
            run.pk,
            result.eval_examples,
            result.margin_before,
            result.margin_after,
        )
    return result
