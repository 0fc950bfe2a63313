"""The claim reads the least-voted comparisons from a random point of a fixed pseudo-random
order (annotation/loop/assign.py, ``_PROBE_SQL``; the index of migration 0015) and falls back to
the full claim when none of them is left for the annotator."""

from __future__ import annotations

import pytest
from django.db import connection

from annotation.loop.skips import assignment_skip
from annotation.loop.votes import vote_record
from annotation.models import Comparison

pytestmark = pytest.mark.django_db


def test_an_annotator_who_has_every_least_voted_pair_gets_one_from_the_next_level(
    make_study, annotator, other_annotator, next_assignment
):
    study = make_study(models=2, questions=2, k=2)  # 2 comparisons
    mine = next_assignment(study, annotator)
    assignment_skip(assignment=mine, reason="cannot_judge")  # never to be given to them again
    theirs = next_assignment(study, other_annotator)
    if theirs.comparison_id == mine.comparison_id:
        assignment_skip(assignment=theirs, reason="cannot_judge")
        theirs = next_assignment(study, other_annotator)
    vote_record(assignment=theirs, choice="left")
    counts = dict(Comparison.objects.filter(study=study).values_list("pk", "vote_count"))
    assert counts == {mine.comparison_id: 0, theirs.comparison_id: 1}
    # The least-voted level (no votes) holds only the pair they skipped: the full claim gives
    # them the one with a vote.
    assert next_assignment(study, annotator).comparison_id == theirs.comparison_id


def test_the_least_voted_level_comes_first_in_a_larger_study(
    make_study, annotator, other_annotator, next_assignment
):
    study = make_study(models=4, questions=5, k=3)  # 30 comparisons
    first = set()
    for _ in range(10):
        assignment = next_assignment(study, other_annotator)
        first.add(assignment.comparison_id)
        vote_record(assignment=assignment, choice="tie")
    # Twenty comparisons have no vote yet: each of the annotator's next ten is one of them.
    for _ in range(10):
        assignment = next_assignment(study, annotator)
        assert assignment.comparison_id not in first
        vote_record(assignment=assignment, choice="right")


def test_the_claim_order_index_exists():
    with connection.cursor() as cursor:
        names = {
            c
            for c, info in connection.introspection.get_constraints(
                cursor, Comparison._meta.db_table
            ).items()
            if info["index"]
        }
    assert "annotation_comparison_claim_order" in names
