"""What a run page shows: per operation, how many were kept and dropped by which rule."""

from __future__ import annotations

from django.db.models import Count

from .engine.operations import OPERATIONS
from .models import EvolutionItem, EvolutionRun


def evolution_counts(run: EvolutionRun) -> dict:
    """{operation: {"items": n, "kept": n, "dropped": {rule: n}}}, operations in their order."""
    rows = (
        EvolutionItem.objects.filter(run=run)
        .values("operation", "kept", "drop_rule")
        .annotate(n=Count("id"))
    )
    counts: dict[str, dict] = {}
    for row in rows:
        entry = counts.setdefault(row["operation"], {"items": 0, "kept": 0, "dropped": {}})
        entry["items"] += row["n"]
        if row["kept"]:
            entry["kept"] += row["n"]
        else:
            entry["dropped"][row["drop_rule"]] = row["n"]
    order = {op: i for i, op in enumerate(OPERATIONS)}
    return dict(sorted(counts.items(), key=lambda kv: order.get(kv[0], len(order))))


def evolution_totals(counts: dict) -> dict:
    """The whole run: items, kept, dropped per rule."""
    total = {"items": 0, "kept": 0, "dropped": {}}
    for entry in counts.values():
        total["items"] += entry["items"]
        total["kept"] += entry["kept"]
        for rule, n in entry["dropped"].items():
            total["dropped"][rule] = total["dropped"].get(rule, 0) + n
    return total


def evolution_examples(run: EvolutionRun, per_cell: int = 2) -> dict:
    """A few items per (operation, outcome): {(operation, "kept" or rule): [item, ...]}."""
    examples: dict[tuple[str, str], list[EvolutionItem]] = {}
    for item in EvolutionItem.objects.filter(run=run).order_by("round", "source_example_id"):
        cell = (item.operation, "kept" if item.kept else item.drop_rule)
        bucket = examples.setdefault(cell, [])
        if len(bucket) < per_cell:
            bucket.append(item)
    return examples
