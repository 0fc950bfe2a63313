"""Quotas under real concurrency (PostgreSQL): never over an annotator's quota, never over K,
with gold checks mixed in and late votes racing new ones."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import close_old_connections
from django.db.models import Count
from django.utils import timezone

from annotation import gold
from annotation.loop.votes import VoteConflict, vote_record, vote_target
from annotation.models import Assignment, Comparison, Study, Vote

from .test_concurrency import _annotators, _run_in_threads

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

QUOTA = 3


def test_annotators_racing_for_pairs_never_pass_their_quota_or_k(
    make_study, django_user_model, next_assignment
):
    study = make_study(models=3, questions=8, k=2)  # 24 comparisons
    golden = list(Comparison.objects.filter(study=study).order_by("pk")[:2])
    gold.comparisons_mark_gold(comparisons=golden, expected="a")
    Study.objects.filter(pk=study.pk).update(quota=QUOTA, gold_rate=0.3)
    users = _annotators(django_user_model, 16, "quota")  # 16 x 3 = 48 > the 44 slots + gold
    voted: list[int] = []

    def claim_and_vote(user):
        close_old_connections()
        while (a := next_assignment(study, user)) is not None:
            vote_record(assignment=a, choice="left")
            voted.append(user.pk)

    errors = _run_in_threads(claim_and_vote, users)
    assert not errors, errors

    per_user = dict(
        Vote.objects.filter(comparison__study=study)
        .values("annotator")
        .annotate(n=Count("pk"))
        .values_list("annotator", "n")
    )
    assert max(per_user.values()) <= QUOTA
    assert len(voted) == sum(per_user.values())
    ordinary = dict(
        Comparison.objects.filter(study=study, gold=False)
        .annotate(n=Count("votes"))
        .values_list("pk", "n")
    )
    assert max(ordinary.values()) <= study.votes_per_comparison
    kept = dict(Comparison.objects.filter(study=study).values_list("pk", "vote_count"))
    counted = dict(
        Comparison.objects.filter(study=study).annotate(n=Count("votes")).values_list("pk", "n")
    )
    assert kept == counted
    # Nobody stopped early: each annotator used their quota, or nothing was left for them.
    assert sum(per_user.values()) > 40


def test_a_late_vote_racing_a_new_one_never_passes_the_quota(make_study, django_user_model):
    study = make_study(models=3, questions=6, k=3)  # 18 comparisons
    Study.objects.filter(pk=study.pk).update(quota=1)
    users = _annotators(django_user_model, 8, "late")
    comparisons = list(Comparison.objects.filter(study=study).order_by("pk"))
    now = timezone.now()
    jobs = []
    for i, user in enumerate(users):
        # Each holds two pairs: one whose lease ran out (a late vote still counts below K),
        # and a live one.
        for j, status in enumerate((Assignment.Status.EXPIRED, Assignment.Status.LEASED)):
            assignment = Assignment.objects.create(
                study=study,
                comparison=comparisons[(2 * i + j) % len(comparisons)],
                annotator=user,
                token=f"late-{i}-{j}",
                left="a",
                status=status,
                first_delivered_at=now - timedelta(minutes=20),
                lease_expires_at=now + (timedelta(minutes=5) if j else -timedelta(minutes=5)),
            )
            jobs.append((user, assignment.token))
    outcomes: list[str] = []

    def vote(job):
        close_old_connections()
        user, token = job
        target = vote_target(token=token, annotator=user)
        try:
            vote_record(assignment=target.assignment, choice="right")
            outcomes.append("voted")
        except VoteConflict:
            outcomes.append("refused")

    errors = _run_in_threads(vote, jobs)
    assert not errors, errors
    assert sorted(outcomes) == ["refused"] * len(users) + ["voted"] * len(users)
    per_user = Vote.objects.filter(comparison__study=study).values("annotator")
    assert set(per_user.annotate(n=Count("pk")).values_list("n", flat=True)) == {1}
