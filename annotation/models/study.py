"""Studies: the models compared, their comparisons (DESIGN.md, Data)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext

from generation.models import Answer, GenerationRun, LanguageModel, PromptSet, Question


class Study(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        OPEN = "open"
        CLOSED = "closed"

    class Sampling(models.TextChoices):
        UNIFORM = "uniform"
        # Once every comparison has a vote, prefer those whose pair is least settled (Comparison.
        # sampling_weight); the fit weights each vote by 1 / its pick probability.
        ACTIVE = "active"
        # Adaptive K (ranking/adaptive.py): one person at a time per comparison; after each
        # vote the next is asked with a recorded probability (less once the votes agree with
        # the judge's consistent verdict), up to a cap set from how close its model pair is
        # (K on average: close pairs more, clear ones fewer). The fit weights each vote by
        # 1 / (cap x the chance it was asked).
        ADAPTIVE = "adaptive"
        # Staged, prediction-powered (ranking/designs.py ``staged``, live in annotation/
        # staging.py): the judge's verdicts on every comparison, people's votes in stages of a
        # human budget: a uniform pilot, then stages planned on the fit of everything before
        # them, each comparison drawn with a recorded probability; each vote weighs
        # share / (slots x probability).
        STAGED = "staged"

    # Admin-only, like model names: an admin may well call a study "line vs rinna".
    name = models.CharField(max_length=200, unique=True)
    title = models.CharField(
        max_length=200,
        blank=True,
        help_text="Shown to annotators (never name a model); blank shows “Study 12” (its id)",
    )
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.PROTECT, related_name="studies")
    runs = models.ManyToManyField(GenerationRun, through="StudyRun", related_name="studies")
    votes_per_comparison = models.PositiveIntegerField(
        default=3, help_text="Votes wanted per comparison (K); nobody is given more"
    )
    instructions = models.TextField(blank=True, help_text="Shown to annotators on every pair")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    sampling = models.CharField(
        max_length=10,
        choices=Sampling.choices,
        default=Sampling.UNIFORM,
        help_text=(
            "Active: after one vote each, prefer comparisons whose pair is least settled. "
            "Adaptive K: one person at a time; a comparison stops once its votes agree with "
            "the judge, and close pairs get more than K people, clear ones fewer. Staged: "
            "needs the judge's verdicts on every comparison; people's votes (the human "
            "budget) in a uniform pilot, then stages planned on the fit so far"
        ),
    )
    # Staged design: people's votes the whole study may ask for. Blank: the uniform design's
    # cost, K x comparisons (filled in when the study opens; fixed from then on).
    human_budget = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Staged design: people's votes in all (blank: K x comparisons); set before "
        "opening",
    )
    sampling_floor = models.FloatField(
        default=0.2,
        help_text="Active sampling: every comparison keeps at least this share of the mean weight",
    )
    # The pool: who may annotate this study. Nobody chosen: the annotators group (staff always).
    pool_users = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="annotation_pools",
        help_text="Open to these users (with the groups below); none chosen: the annotators group",
    )
    pool_groups = models.ManyToManyField(
        Group,
        blank=True,
        related_name="annotation_pools",
        help_text="Open to the members of these groups",
    )
    quota = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most votes one annotator may give here (blank: no limit)"
    )
    gold_rate = models.FloatField(
        default=0.1, help_text="Share of pairs given as gold checks while any are left to give"
    )
    fast_vote_seconds = models.FloatField(
        default=5.0, help_text="Votes faster than this (seconds) are flagged on the results page"
    )
    # Routing (judging/routing.py): an LLM judge sees every comparison first; people are given
    # those it was unsure of (inconsistent or unparsable) in full, and an audit sample of the rest.
    routing = models.BooleanField(
        default=False,
        help_text="Judge first: people vote on what the judge was unsure of, plus an audit sample",
    )
    audit_share = models.FloatField(
        default=0.2,
        help_text="Routing: share of the judge's consistent verdicts also given to people",
    )
    # Stored progress (loop/progress.py): comparisons still open (gold, or below their target),
    # kept by the votes that fill them; NULL, and the basis moved on, when something else
    # changed what is open (database triggers: routing's targets, comparisons added or removed,
    # gold changed, K changed, votes imported), so the next reader counts again.
    open_pairs = models.PositiveIntegerField(null=True, blank=True, editable=False)
    progress_basis = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "studies"
        permissions = [
            # Results name the models: reading them is more than seeing a study's settings.
            ("export_study", "Can read results and export votes"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(votes_per_comparison__gte=1), name="annotation_study_votes_positive"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["draft", "open", "closed"]),
                name="annotation_study_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0, gold_rate__lte=1),
                name="annotation_study_gold_rate_range",
            ),
            models.CheckConstraint(
                condition=Q(fast_vote_seconds__gte=0), name="annotation_study_fast_vote_nonnegative"
            ),
            models.CheckConstraint(
                condition=Q(sampling__in=["uniform", "active", "adaptive", "staged"]),
                name="annotation_study_sampling_valid",
            ),
            models.CheckConstraint(
                condition=Q(sampling_floor__gt=0, sampling_floor__lte=1),
                name="annotation_study_sampling_floor_range",
            ),
            models.CheckConstraint(
                condition=Q(audit_share__gte=0, audit_share__lte=1),
                name="annotation_study_audit_share_range",
            ),
            models.CheckConstraint(
                condition=Q(human_budget__isnull=True) | Q(human_budget__gte=1),
                name="annotation_study_human_budget_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def public_title(self) -> str:
        return self.title or gettext("Study %(id)s") % {"id": self.pk}


class StudyRun(models.Model):
    """One succeeded run per model in a study; ``model`` is copied so the database can say so."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="study_runs")
    run = models.ForeignKey(GenerationRun, on_delete=models.PROTECT, related_name="+")
    model = models.ForeignKey(LanguageModel, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["study", "run"]
        constraints = [
            models.UniqueConstraint(fields=["study", "run"], name="annotation_studyrun_unique_run"),
            # A study compares models: two runs of one model would pair a model with itself.
            models.UniqueConstraint(
                fields=["study", "model"], name="annotation_studyrun_one_run_per_model"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.study}: run {self.run_id}"


class Comparison(models.Model):
    """Two models' answers to one question, in canonical order (run_a.id < run_b.id)."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="comparisons")
    question = models.ForeignKey(Question, on_delete=models.PROTECT, related_name="+")
    # The runs are copied from the answers so that the pair and its order are constraints.
    run_a = models.ForeignKey(GenerationRun, on_delete=models.PROTECT, related_name="+")
    run_b = models.ForeignKey(GenerationRun, on_delete=models.PROTECT, related_name="+")
    answer_a = models.ForeignKey(Answer, on_delete=models.PROTECT, related_name="+")
    answer_b = models.ForeignKey(Answer, on_delete=models.PROTECT, related_name="+")
    # How many votes (cast here or imported) this comparison has. Assignment reads it on every
    # request, so it is kept here instead of counted: it changes only in the same transaction
    # that adds votes, under this row's lock (loop.votes.vote_record, exchange.votes_import).
    vote_count = models.PositiveIntegerField(default=0, editable=False)
    # Active sampling: the claim picks among eligible comparisons with probability proportional
    # to this (refreshed from the cached fit after votes, never below the study's floor).
    sampling_weight = models.FloatField(default=1.0, editable=False)
    # A gold check (annotation/gold.py): the outcome is known, so it measures the annotator; its
    # votes never count in the results, and it is given to every annotator once (no K).
    gold = models.BooleanField(default=False)
    gold_expected = models.CharField(
        max_length=3, blank=True, choices=[("a", "a better"), ("tie", "tie"), ("b", "b better")]
    )
    # Routing: people's votes this comparison still needs, when not the study's K (0: the judge
    # settled it and it was not drawn for the audit). Blank: K.
    votes_wanted = models.PositiveIntegerField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["study", "question", "run_a", "run_b"]
        constraints = [
            models.CheckConstraint(
                condition=Q(gold=False, gold_expected="")
                | Q(gold=True, gold_expected__in=["a", "tie", "b"]),
                name="annotation_comparison_gold_expected",
            ),
            models.CheckConstraint(
                condition=Q(sampling_weight__gt=0), name="annotation_comparison_weight_positive"
            ),
            models.UniqueConstraint(
                fields=["study", "question", "run_a", "run_b"],
                name="annotation_comparison_one_per_pair_question",
            ),
            # One order only, so (a, b) and (b, a) can never both exist.
            models.CheckConstraint(
                condition=Q(run_a__lt=F("run_b")), name="annotation_comparison_canonical_order"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.study}: {self.question} (run {self.run_a_id} v run {self.run_b_id})"
