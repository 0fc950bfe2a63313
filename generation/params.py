"""Checks of the two parameter sets declared in ``engine/params.py``, written once: the
generation parameters of a run or of a model's defaults, and the fine-tune hyper-parameters."""

from __future__ import annotations

import math
from collections.abc import Sequence

from django.core.exceptions import ValidationError

from evalsite.errors import ServiceError

from .engine.params import FINETUNE, GENERATION, Param

UNKNOWN_PARAMS = "unknown generation parameters: {keys}"
UNKNOWN_HYPERPARAMETERS = "unknown fine-tuning parameters: {keys}"
NOT_AN_OBJECT = "parameters must be a JSON object of name: value, got {kind}"
BAD_VALUE = "{name} must be {rule} (got {value!r})"
BEYOND_CONTEXT = (
    "max_new_tokens must be below the model's context of {context} tokens (got {value}): the "
    "question takes part of it"
)

# Full fine-tuning changes every weight: a LoRA learning rate would wreck the model.
FULL_LEARNING_RATE = 2e-5

# The hyper-parameters in their form order (admin forms, API fields).
FINETUNE_FIELDS = [p.name for p in FINETUNE]

_GENERATION = {p.name: p for p in GENERATION}
_FINETUNE = {p.name: p for p in FINETUNE}


def _value(param: Param, value) -> object:
    """``value`` as ``param`` keeps it, or ServiceError naming the parameter and its range."""
    if param.kind is bool:
        ok = isinstance(value, bool)
    elif param.kind is list:
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) and v for v in value)
        value = list(value) if ok else value
    else:
        ok = not isinstance(value, bool) and isinstance(value, int | float)
        ok = ok and math.isfinite(value)
        if ok and param.kind is int:
            ok = float(value).is_integer()
        ok = ok and param.allows(value)
        # A whole float (3.0) is stored as the int it is; other numbers as they came.
        value = int(value) if ok and param.kind is int else value
    if not ok:
        raise ServiceError(BAD_VALUE.format(name=param.name, rule=param.rule, value=value))
    return value


def _checked(values: dict, declared: dict[str, Param], unknown: str, *, unset: bool) -> dict:
    if not isinstance(values, dict):
        raise ServiceError(NOT_AN_OBJECT.format(kind=type(values).__name__))
    if extra := sorted(set(values) - set(declared)):
        raise ServiceError(unknown.format(keys=", ".join(extra)))
    return {
        key: None if value is None and unset else _value(declared[key], value)
        for key, value in values.items()
    }


def generation_params_check(values: dict) -> dict:
    """Generation parameters of a run or a model's defaults, checked; ServiceError if not.

    ``None`` stands for "the model's own value", as transformers reads it.
    """
    return _checked(values, _GENERATION, UNKNOWN_PARAMS, unset=True)


def context_check(values: dict, context: int | None) -> None:
    """``max_new_tokens`` must leave room for the question in the model's context (when known)."""
    value = values.get("max_new_tokens")
    if context is not None and value is not None and value >= context:
        raise ServiceError(BEYOND_CONTEXT.format(context=context, value=value))


def hyperparameters_check(values: dict) -> dict:
    """Fine-tune hyper-parameters a run sets, checked and converted; ServiceError if not."""
    return _checked(values, _FINETUNE, UNKNOWN_HYPERPARAMETERS, unset=False)


def params_check(values: dict, declared: Sequence[Param], *, unknown: str) -> dict:
    """``values`` against another declared set (a benchmark run's decoding, for one), by the
    same rules and messages; ``unknown`` is formatted with ``keys``. ServiceError if not."""
    return _checked(values, {p.name: p for p in declared}, unknown, unset=False)


def validate_generation_defaults(value) -> None:
    """A model field validator: the admin form and the API check a model's defaults with it."""
    if not isinstance(value, dict):
        raise ValidationError("generation defaults must be a JSON object")
    try:
        generation_params_check(value)
    except ServiceError as exc:
        raise ValidationError(str(exc)) from None
