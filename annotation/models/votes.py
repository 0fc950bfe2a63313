"""Assignments and votes (DESIGN.md, Data and Blinding): what an annotator is given and what they
answer."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from .study import Comparison, Study


class Assignment(models.Model):
    """A comparison handed to one annotator, under a lease; the token is all they ever see."""

    class Status(models.TextChoices):
        LEASED = "leased"
        VOTED = "voted"
        # The lease ran out and the annotator was given something else; a late vote still counts
        # while the comparison is below K.
        EXPIRED = "expired"
        # The annotator passed it on (skip_reason says why); it goes to someone else.
        SKIPPED = "skipped"

    class SkipReason(models.TextChoices):
        CANNOT_JUDGE = "cannot_judge", "cannot judge"
        EXPERTISE = "expertise", "needs expertise"
        BROKEN = "broken", "offensive or broken content"

    class Side(models.TextChoices):
        A = "a"
        B = "b"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="assignments")
    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="assignments"
    )
    token = models.CharField(max_length=64)
    left = models.CharField(
        max_length=1, choices=Side.choices, help_text="Which answer is shown on the left"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.LEASED)
    first_delivered_at = models.DateTimeField()
    lease_expires_at = models.DateTimeField()
    # The probability with which the claim picked this comparison, and among how many it
    # picked (null: a uniform pick); the fit weights the vote cast on it by 1 / (their product),
    # how much likelier a uniform pick would have made it (ranking.active).
    sampling_probability = models.FloatField(null=True, blank=True, editable=False)
    sampling_eligible = models.PositiveIntegerField(null=True, blank=True, editable=False)
    # db_default: the loop inserts leases with SQL that names only the columns it sets.
    skip_reason = models.CharField(
        max_length=20, choices=SkipReason.choices, blank=True, default="", db_default=""
    )

    class Meta:
        ordering = ["-first_delivered_at"]
        indexes = [
            # Load of a comparison: its live leases (status = leased and lease_expires_at > now).
            models.Index(
                fields=["comparison", "status", "lease_expires_at"],
                name="annotation_assignment_load",
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["token"], name="annotation_assignment_unique_token"),
            # Nobody judges the same pair twice.
            models.UniqueConstraint(
                fields=["comparison", "annotator"], name="annotation_assignment_one_per_annotator"
            ),
            # At most one pair in hand per annotator and study: a reload or a double request
            # gets that pair again instead of taking a second slot.
            models.UniqueConstraint(
                fields=["study", "annotator"],
                condition=Q(status="leased"),
                name="annotation_assignment_one_lease_per_study",
            ),
            models.CheckConstraint(
                condition=Q(left__in=["a", "b"]), name="annotation_assignment_left_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["leased", "voted", "expired", "skipped"]),
                name="annotation_assignment_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(
                    status="skipped", skip_reason__in=["cannot_judge", "expertise", "broken"]
                )
                | (~Q(status="skipped") & Q(skip_reason="")),
                name="annotation_assignment_skip_has_reason",
            ),
            models.CheckConstraint(
                condition=Q(sampling_probability__isnull=True)
                | Q(sampling_probability__gt=0, sampling_probability__lte=1),
                name="annotation_assignment_probability_range",
            ),
        ]

    def __str__(self) -> str:
        return f"assignment {self.pk} of comparison {self.comparison_id} to {self.annotator}"


class Vote(models.Model):
    """One judgment. App votes belong to an assignment; imported votes only to a comparison; a
    judge run's verdicts (judging.Judgment.vote) to neither."""

    class Outcome(models.TextChoices):
        A = "a", "a better"
        TIE = "tie", "tie"
        B = "b", "b better"

    class Shown(models.TextChoices):
        LEFT = "left", "left better"
        TIE = "tie", "tie"
        RIGHT = "right", "right better"

    class Voter(models.TextChoices):
        # People: cast here, or imported human judgments. Judge: an LLM judge's verdict, never
        # counted against K (``Comparison.vote_count``) and never shown to an annotator.
        PEOPLE = "people", "people"
        JUDGE = "judge", "LLM judge"

    class TieKind(models.TextChoices):
        # FastChat's ``tie`` and ``tie (bothbad)``; blank on votes that are not ties.
        BOTH_GOOD = "bothgood", "both good"
        BOTH_BAD = "bothbad", "both bad"

    comparison = models.ForeignKey(Comparison, on_delete=models.PROTECT, related_name="votes")
    assignment = models.ForeignKey(
        Assignment, null=True, blank=True, on_delete=models.PROTECT, related_name="votes"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="votes",
    )
    outcome = models.CharField(max_length=3, choices=Outcome.choices)
    tie_kind = models.CharField(max_length=8, choices=TieKind.choices, blank=True)
    # As the annotator saw it, so position bias can be measured; blank for imported votes.
    shown = models.CharField(max_length=5, choices=Shown.choices, blank=True)
    # Imported votes: which answer (a or b) the judge was shown first; blank when unknown. App
    # votes leave it blank (their assignment's ``left`` says it).
    first_shown = models.CharField(
        max_length=1, choices=Assignment.Side.choices, blank=True, editable=False
    )
    seconds = models.FloatField(
        null=True, blank=True, help_text="From the pair's first delivery to the vote (server)"
    )
    comment = models.TextField(blank=True)
    imported = models.BooleanField(default=False)
    voter = models.CharField(max_length=6, choices=Voter.choices, default=Voter.PEOPLE)
    judge = models.CharField(
        max_length=200, blank=True, help_text="Who judged an imported vote (FastChat `judge`)"
    )
    # On a multi-turn question: the vote judged the conversation up to this user turn only
    # (FastChat's MT-bench judgments give turn 1 and turn 2 apart). Blank: the whole
    # conversation, as every vote cast here; results read those unless asked for a turn.
    turn = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        editable=False,
        help_text="Judged the conversation up to this user turn only (blank: all of it)",
    )
    # Adaptive K (Study.Sampling.ADAPTIVE): the most people this vote's comparison could ask
    # (fixed at its first vote), the chance this vote was asked for, and the chance the next
    # one was, decided after it. Blank in other designs. The fit weights it 1 / (cap x asked).
    cap = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)
    asked = models.FloatField(null=True, blank=True, editable=False)
    next_asked = models.FloatField(null=True, blank=True, editable=False)
    # Staged design (Study.Sampling.STAGED): the stage the vote was asked in (1: the pilot)
    # and that stage's share of the human budget; ``cap`` holds the people its comparison asks
    # in the stage (slots) and ``asked`` the chance it was drawn. The fit weights it
    # share / (cap x asked). Blank in other designs.
    stage = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)
    share = models.FloatField(null=True, blank=True, editable=False)
    # An imported vote's content key (its file row, exchange.import_keys): a second import of
    # the same file finds its rows already here and adds nothing. Blank: cast in the app.
    import_key = models.CharField(max_length=64, blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Import is idempotent: one vote per file row (content key) and comparison; read by
            # exchange.votes_import to skip rows a previous import brought in.
            models.UniqueConstraint(
                fields=["comparison", "import_key"],
                condition=~Q(import_key=""),
                name="annotation_vote_import_key_unique",
            ),
            models.CheckConstraint(
                condition=Q(asked__isnull=True) | Q(asked__gt=0, asked__lte=1, cap__gte=1),
                name="annotation_vote_adaptive_asked_valid",
            ),
            models.CheckConstraint(
                condition=Q(turn__isnull=True) | Q(turn__gte=1),
                name="annotation_vote_turn_positive",
            ),
            # The rule the vote service relies on: a second vote on an assignment cannot exist.
            models.UniqueConstraint(
                fields=["assignment"], name="annotation_vote_one_per_assignment"
            ),
            models.CheckConstraint(
                condition=Q(imported=True)
                | Q(voter="judge")
                | (
                    Q(assignment__isnull=False, annotator__isnull=False, seconds__isnull=False)
                    & ~Q(shown="")
                ),
                name="annotation_vote_app_vote_has_assignment",
            ),
            models.CheckConstraint(
                condition=Q(outcome__in=["a", "tie", "b"]), name="annotation_vote_outcome_valid"
            ),
            models.CheckConstraint(
                condition=Q(tie_kind="") | Q(outcome="tie", tie_kind__in=["bothgood", "bothbad"]),
                name="annotation_vote_tie_kind_valid",
            ),
            models.CheckConstraint(
                condition=Q(shown__in=["", "left", "tie", "right"]),
                name="annotation_vote_shown_valid",
            ),
            # A tie is a tie on both scales.
            models.CheckConstraint(
                condition=Q(shown="")
                | Q(outcome="tie", shown="tie")
                | (~Q(outcome="tie") & ~Q(shown="tie")),
                name="annotation_vote_tie_matches_shown",
            ),
            models.CheckConstraint(
                condition=Q(seconds__isnull=True) | Q(seconds__gte=0),
                name="annotation_vote_seconds_nonnegative",
            ),
            models.CheckConstraint(
                condition=Q(first_shown__in=["", "a", "b"]),
                name="annotation_vote_first_shown_valid",
            ),
            # A judge's verdict (imported, or from a judge run) belongs to no annotator.
            models.CheckConstraint(
                condition=Q(voter="people")
                | Q(voter="judge", annotator__isnull=True, assignment__isnull=True),
                name="annotation_vote_judge_has_no_annotator",
            ),
        ]

    def __str__(self) -> str:
        return f"vote {self.pk}: {self.outcome} on comparison {self.comparison_id}"
