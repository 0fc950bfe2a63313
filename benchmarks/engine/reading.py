"""lm-eval's results and logged samples of one task as plain rows (no lm-eval import needed)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Metric:
    name: str  # "acc", or "exact_match,strip" when a filter other than "none" made it
    value: float
    stderr: float | None


@dataclass(frozen=True)
class Sample:
    doc_id: int
    prompt: str  # the rendered text; a served model's messages as JSON
    target: str
    output: str  # generated text (filtered), or the option chosen by log-likelihood
    correct: bool | None
    metrics: dict
    messages: list = field(default_factory=list)  # the conversation sent (empty: raw text)


@dataclass
class TaskOutcome:
    task: str
    output_type: str
    num_fewshot: int
    n: int
    metrics: list[Metric]
    samples: list[Sample]
    config: dict
    version: str = ""
    extra: dict = field(default_factory=dict)


def jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy: functions and other objects become their names or text."""
    if depth > 12:
        return str(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v, depth + 1) for v in value]
    if callable(value):
        module = getattr(value, "__module__", "") or ""
        return f"<function {module}.{getattr(value, '__qualname__', repr(value))}>"
    if hasattr(value, "item"):  # numpy scalars
        try:
            return jsonable(value.item(), depth + 1)
        except (TypeError, ValueError):
            pass
    return str(value)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None  # lm-eval writes "N/A" for a standard error it could not compute
    return number if math.isfinite(number) else None


def metrics_of(task_results: dict) -> list[Metric]:
    """``{"acc,none": 0.5, "acc_stderr,none": 0.1, ...}`` as Metric rows."""
    out = []
    for key, value in task_results.items():
        if "," not in key or "_stderr," in key:
            continue
        name, filter_name = key.split(",", 1)
        number = _number(value)
        if number is None:
            continue
        stderr = _number(task_results.get(f"{name}_stderr,{filter_name}"))
        out.append(Metric(name if filter_name == "none" else key, number, stderr))
    return out


def _binary(value: Any) -> bool | None:
    number = _number(value)
    if number in (0.0, 1.0):
        return number == 1.0
    return None


def _choices(arguments: list) -> list[str]:
    return [str(arg[1]) for arg in arguments if isinstance(arg, (list, tuple)) and len(arg) > 1]


def _chosen(filtered: list) -> int | None:
    scores = []
    for resp in filtered:
        score = resp[0] if isinstance(resp, (list, tuple)) else resp
        number = _number(score)
        if number is None:
            return None
        scores.append(number)
    return max(range(len(scores)), key=scores.__getitem__) if scores else None


def prompt_of(context: Any, conversations: dict[str, list]) -> tuple[str, list]:
    """(prompt text, messages) of a request's context: rendered text as it is; a served chat
    (lm-eval's ``JsonChatStr``, a named tuple holding the messages' JSON) as indented JSON,
    never the tuple's repr."""
    chat = getattr(context, "prompt", None)
    if isinstance(context, tuple) and isinstance(chat, str):
        messages = conversations.get(chat)
        if messages is None:
            try:
                messages = json.loads(chat)
            except ValueError:
                return chat, []
        return json.dumps(messages, ensure_ascii=False, indent=1), list(messages)
    if isinstance(context, (list, tuple)):
        context = context[0] if context else ""
    text = str(context)
    return text, list(conversations.get(text, []))


def sample_of(raw: dict, output_type: str, conversations: dict | None = None) -> Sample:
    """One logged lm-eval sample (one filter's view of one document) as a plain row."""
    arguments = raw.get("arguments") or []
    first = arguments[0] if arguments else ("",)
    context = first[0] if isinstance(first, (list, tuple)) and first else first
    prompt, messages = prompt_of(context, conversations or {})
    names = list(raw.get("metrics") or [])
    metrics = {name: jsonable(raw.get(name)) for name in names}
    target = raw.get("target")
    if output_type == "multiple_choice":
        choices = _choices(arguments)
        picked = _chosen(raw.get("filtered_resps") or [])
        output = choices[picked].strip() if picked is not None and picked < len(choices) else ""
        if isinstance(target, int) and 0 <= target < len(choices):
            target_text = choices[target].strip()
        elif isinstance(target, list):
            target_text = " | ".join(
                choices[t].strip() if isinstance(t, int) and t < len(choices) else str(t)
                for t in target
            )
        else:
            target_text = str(target)
        metrics["choices"] = [c.strip() for c in choices]
    else:
        filtered = raw.get("filtered_resps")
        while isinstance(filtered, (list, tuple)) and filtered:
            filtered = filtered[0]
        output = "" if filtered is None or filtered == [] else str(filtered)
        resps = raw.get("resps") or []
        raw_text = resps[0][0] if resps and isinstance(resps[0], list) and resps[0] else ""
        if raw_text != output:
            metrics["raw_output"] = jsonable(raw_text)
        target_text = " | ".join(map(str, target)) if isinstance(target, list) else str(target)
    correct = _binary(raw.get(names[0])) if names else None
    return Sample(
        doc_id=int(raw.get("doc_id", 0)),
        prompt=prompt,
        target=target_text,
        output=output,
        correct=correct,
        metrics=metrics,
        messages=messages,
    )


def samples_of(
    raw_samples: list[dict], output_type: str, conversations: dict | None = None
) -> list[Sample]:
    """One row per document: the first filter's view, other filters' metrics added to it."""
    by_doc: dict[int, Sample] = {}
    for raw in raw_samples:
        doc_id = int(raw.get("doc_id", 0))
        if doc_id not in by_doc:
            by_doc[doc_id] = sample_of(raw, output_type, conversations)
            continue
        filter_name = raw.get("filter", "")
        for name in raw.get("metrics") or []:
            by_doc[doc_id].metrics[f"{name},{filter_name}"] = jsonable(raw.get(name))
    return [by_doc[key] for key in sorted(by_doc)]


def outcome_of(results: dict, task: str, conversations: dict | None = None) -> TaskOutcome:
    """What ``lm_eval.simple_evaluate`` returned for ``task``, as plain data; ``conversations``
    maps each rendered prompt to the messages it was rendered from."""
    config = jsonable((results.get("configs") or {}).get(task, {}))
    output_type = str(config.get("output_type", ""))
    counts = (results.get("n-samples") or {}).get(task) or {}
    raw_samples = (results.get("samples") or {}).get(task, [])
    samples = samples_of(raw_samples, output_type, conversations)
    n = int(counts.get("effective", len(samples)))
    shots = (results.get("n-shot") or {}).get(task, config.get("num_fewshot") or 0)
    return TaskOutcome(
        task=task,
        output_type=output_type,
        num_fewshot=int(shots or 0),
        n=n,
        metrics=metrics_of((results.get("results") or {}).get(task, {})),
        samples=samples,
        config=config,
        version=str((results.get("versions") or {}).get(task, "")),
    )
