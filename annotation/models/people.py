"""The staged design's stages, and what the study keeps about its annotators: identity flags,
stored progress, exclusions."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from evalsite.runs.models import CountedRun, Lease
from generation.models import Answer

from .study import Comparison, Study


class StagePlan(CountedRun):
    """One stage of a staged study (Study.Sampling.STAGED), a run on the spine: planned once
    the stage before it is full, from the fit of everything so far (annotation/staging.py).
    Stage 1, the uniform pilot, is drawn when the study opens. ``done`` / ``total``: the
    comparisons drawn; ``votes`` the people's votes they ask for."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="stage_plans")
    stage = models.PositiveSmallIntegerField()
    share = models.FloatField()  # of the human budget
    budget = models.FloatField()  # people's votes expected (share x the study's budget)
    votes = models.PositiveIntegerField(default=0)  # slots drawn in all

    class Meta(CountedRun.Meta):
        constraints = [
            *CountedRun.Meta.constraints,
            # Planning is idempotent: one plan per stage, whoever asked for it.
            models.UniqueConstraint(fields=["study", "stage"], name="annotation_stageplan_once"),
            models.CheckConstraint(condition=Q(stage__gte=1), name="annotation_stageplan_stage"),
            models.CheckConstraint(
                condition=Q(share__gt=0, share__lte=1), name="annotation_stageplan_share"
            ),
        ]
        indexes = [Lease.stale_check_index("annotation_stageplan_hb")]

    def __str__(self) -> str:
        return f"{self.study}: stage {self.stage}"


class StageDraw(models.Model):
    """A comparison a stage drew: with this probability, asking ``slots`` more people."""

    plan = models.ForeignKey(StagePlan, on_delete=models.CASCADE, related_name="draws")
    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="+")
    slots = models.PositiveSmallIntegerField()
    probability = models.FloatField()

    class Meta:
        ordering = ["plan", "comparison"]
        constraints = [
            models.UniqueConstraint(
                fields=["plan", "comparison"], name="annotation_stagedraw_once"
            ),
            models.CheckConstraint(
                condition=Q(slots__gte=1, probability__gt=0, probability__lte=1),
                name="annotation_stagedraw_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.plan}: comparison {self.comparison_id} x {self.slots}"


class IdentityFlag(models.Model):
    """A span of an answer that may give its model away, found when the study is opened.

    Masked from the start (annotators see ``[…]``): a leak cannot be taken back, a needless mask
    costs a few characters. Staff review the flags and may unmask one; who did it and when is
    kept, and reviewed flags survive a re-scan.
    """

    class Kind(models.TextChoices):
        NAME = "name", "model name or path"
        MAKER = "maker", "maker"
        WORD = "word", "identity word"
        SELF_INTRO = "self_intro", "self-introduction (私は…です)"
        DEVELOPED_BY = "developed_by", "developed by … (…によって開発された)"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="identity_flags")
    answer = models.ForeignKey(Answer, on_delete=models.CASCADE, related_name="+")
    start = models.PositiveIntegerField()
    end = models.PositiveIntegerField()
    text = models.CharField(max_length=500)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    masked = models.BooleanField(default=True, help_text="Show “[…]” to annotators instead")
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["study", "answer", "start"]
        constraints = [
            # Re-scanning a study keeps admins' mask decisions: spans are matched by position.
            models.UniqueConstraint(
                fields=["study", "answer", "start", "end"],
                name="annotation_identityflag_unique_span",
            ),
            models.CheckConstraint(
                condition=Q(end__gt=F("start")), name="annotation_identityflag_span_nonempty"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.text}"


class AnnotatorProgress(models.Model):
    """An annotator's progress in a study, kept rather than counted on every request
    (loop/progress.py): ``done`` their votes; ``closed`` the open comparisons they can no
    longer be given (voted, skipped, or their lease ran out). What is left for them is the
    study's ``open_pairs`` - ``closed`` (then their quota). Valid while ``basis`` equals the
    study's ``progress_basis``; otherwise the next reader counts it again."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="+")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    done = models.PositiveIntegerField(default=0)
    closed = models.IntegerField(default=0)
    basis = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            # The row every vote, skip and expiry of the annotator in the study updates.
            models.UniqueConstraint(
                fields=["study", "annotator"], name="annotation_progress_one_per_annotator"
            )
        ]

    def __str__(self) -> str:
        return f"{self.annotator} in {self.study}: {self.done} done"


class AnnotatorExclusion(models.Model):
    """An annotator whose votes in a study are left out of its results (deleting the row puts
    them back: nothing else changes)."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="exclusions")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    excluded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    excluded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["study", "annotator"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "annotator"], name="annotation_exclusion_one_per_annotator"
            )
        ]

    def __str__(self) -> str:
        return f"{self.annotator} left out of {self.study}"
