"""Gold checks: comparisons whose outcome is known, mixed in at the study's rate to see whether
an annotator is paying attention. Staff mark them (admin), or the app makes them from pairs
where one answer is a known-bad control: empty, or cut off at the run's token limit."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from .models import Comparison, Study

EXPECTED = ("a", "b", "tie")
BAD_EXPECTED = "expected outcome must be one of a, b, tie"


def comparisons_mark_gold(*, comparisons: Iterable[Comparison], expected: str | None) -> int:
    """Mark the comparisons as gold with the expected (canonical) outcome; None unmarks them.
    Returns how many changed."""
    if expected is not None and expected not in EXPECTED:
        raise ValueError(BAD_EXPECTED)
    ids = [c.pk for c in comparisons]
    found = Comparison.objects.filter(pk__in=ids)
    if expected is None:
        return found.filter(gold=True).update(gold=False, gold_expected="")
    return found.update(gold=True, gold_expected=expected)


def is_bad_control(text: str, new_tokens: int, max_new_tokens) -> bool:
    """Empty, or cut off: it used every token the run allowed."""
    if not (text or "").strip():
        return True
    return bool(max_new_tokens) and new_tokens >= int(max_new_tokens)


@transaction.atomic
def gold_from_controls(*, study: Study) -> int:
    """Make gold checks of the comparisons where exactly one answer is a known-bad control
    (the other one is expected to win). Returns how many were made."""
    made = 0
    comparisons = Comparison.objects.filter(study=study, gold=False).select_related(
        "answer_a", "answer_b", "run_a", "run_b"
    )
    for c in comparisons:
        bad_a = is_bad_control(
            c.answer_a.text, c.answer_a.new_tokens, (c.run_a.params or {}).get("max_new_tokens")
        )
        bad_b = is_bad_control(
            c.answer_b.text, c.answer_b.new_tokens, (c.run_b.params or {}).get("max_new_tokens")
        )
        if bad_a != bad_b:
            c.gold, c.gold_expected = True, "b" if bad_a else "a"
            c.save(update_fields=["gold", "gold_expected"])
            made += 1
    return made
