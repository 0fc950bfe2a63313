"""Where a model came from: its base, and for each fine-tune on the way the method, the data
sets (with rows), the preference pairs and the study whose votes made them.

Plain data out, so the admin, the API and pages (the leaderboard) show the same thing.
"""

from __future__ import annotations

from .models import FineTuneRun, LanguageModel

# A chain longer than this is a data error (a cycle); stop rather than loop.
MAX_GENERATIONS = 50


def _preferences(run: FineTuneRun) -> dict | None:
    prefs = run.preferences
    if prefs is None:
        return None
    return {
        "name": prefs.name,
        "pairs": prefs.pairs.count(),
        "study_id": prefs.source_study_id,
        "study_name": prefs.source_study_name,
        "rendered_for": prefs.rendered_for,
    }


def _step(model: LanguageModel, run: FineTuneRun | None) -> dict:
    """One generation: how ``model`` was made from its parent."""
    if run is None:
        # Registered by hand as an adapter on a base: no run to say more.
        return {
            "model": model.name,
            "base": model.base_model.name,
            "finetune_run_id": None,
            "method": "adapter",
            "datasets": [],
            "preferences": None,
        }
    return {
        "model": model.name,
        "base": run.base_model.name,
        "finetune_run_id": run.pk,
        "method": run.method,
        "datasets": [
            {"name": s.dataset.name, "rows": s.rows}
            for s in run.sources.select_related("dataset").order_by("id")
        ],
        "preferences": _preferences(run),
    }


def _origin(model: LanguageModel) -> FineTuneRun | None:
    return (
        FineTuneRun.objects.select_related("base_model", "preferences")
        .filter(result_model=model)
        .first()
    )


def model_lineage(model: LanguageModel) -> dict:
    """The model's lineage, oldest generation first.

    ``base_model`` is the root (a model not made here), ``parent`` the model it was tuned from
    directly; ``method``, ``finetune_run_id``, ``datasets`` and ``preferences`` describe that
    last step; ``generations`` lists every step, so a model tuned from a tuned model shows both.
    A model not made by fine-tuning has ``generations == []`` and is its own base.
    """
    steps: list[dict] = []
    current = model
    seen = {model.pk}
    for _ in range(MAX_GENERATIONS):
        run = _origin(current)
        parent = run.base_model if run is not None else current.base_model
        if parent is None:
            break
        steps.append(_step(current, run))
        if parent.pk in seen:
            break
        seen.add(parent.pk)
        current = parent
    steps.reverse()
    last = steps[-1] if steps else None
    return {
        "model": model.name,
        "base_model": steps[0]["base"] if steps else model.name,
        "parent": last["base"] if last else None,
        "method": last["method"] if last else "",
        "finetune_run_id": last["finetune_run_id"] if last else None,
        "datasets": last["datasets"] if last else [],
        "preferences": last["preferences"] if last else None,
        "generations": steps,
    }


def _step_text(step: dict) -> str:
    parts = [f"{step['base']} -> {step['model']} ({step['method']}"]
    if step["finetune_run_id"] is not None:
        parts.append(f", run {step['finetune_run_id']}")
    parts.append(")")
    data = [f"{d['name']} x {d['rows'] or 'all'}" for d in step["datasets"]]
    prefs = step["preferences"]
    if prefs is not None:
        votes = f"preferences {prefs['name']} ({prefs['pairs']} pairs"
        if prefs["study_name"] or prefs["study_id"]:
            votes += f", votes of study {prefs['study_name'] or prefs['study_id']}"
        data.append(votes + ")")
    if data:
        parts.append(" on " + "; ".join(data))
    return "".join(parts)


def lineage_text(lineage: dict) -> str:
    """One line per generation, for the admin and plain-text pages ("" for a base model)."""
    return "\n".join(_step_text(step) for step in lineage["generations"])
