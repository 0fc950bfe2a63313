"""A fine-tune sweep: a grid of fine-tune conditions over one base model, each cell tuned,
answering a prompt set and judged against the base model (or graded against references).

A sweep holds no run state of its own: each cell points at the runs made for it (fine-tune,
generation, a two-model study, judge run), and sweeps/progress.py reads their states to decide
what to start next. So a sweep whose hook was missed is brought up to date by the next advance.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from annotation.models import Study
from generation.models import FineTuneRun, GenerationRun, LanguageModel, PromptSet
from judging.models import JudgePrompt, JudgeRun


class Sweep(models.Model):
    class Mode(models.TextChoices):
        # Win rate of the cell's model over the base model (ties half), judged in both orders.
        PAIRWISE = "pairwise", "pairwise against the base model"
        # Mean score of the cell's answers against the questions' references.
        GRADING = "grading", "graded against references"

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    name = models.CharField(max_length=200, unique=True)
    base_model = models.ForeignKey(LanguageModel, on_delete=models.PROTECT, related_name="sweeps")
    # The grid as chosen: {"mixes": [[dataset id, ...], ...], "rows": [int | null, ...],
    # "learning_rates": [...], "epochs": [...], "methods": [...]}; one cell per combination.
    grid = models.JSONField(default=dict)
    # Fine-tune hyper-parameters every cell shares (max_steps, batch_size, ...).
    params = models.JSONField(default=dict, blank=True)
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.PROTECT, related_name="sweeps")
    generation_params = models.JSONField(default=dict, blank=True)
    judge = models.ForeignKey(LanguageModel, on_delete=models.PROTECT, related_name="judged_sweeps")
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.PAIRWISE)
    judge_prompt = models.ForeignKey(
        JudgePrompt, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    judge_params = models.JSONField(default=dict, blank=True)
    human_study = models.BooleanField(
        default=False, help_text="At the end, a draft study of the base and every cell's model"
    )
    study = models.ForeignKey(
        Study, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    seed = models.IntegerField(default=0)
    base_run = models.ForeignKey(
        GenerationRun, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # sweeps_advance_task without an id: every sweep still running.
            models.Index(fields=["status"], name="sweeps_sweep_status"),
        ]

    def __str__(self) -> str:
        return self.name


class SweepCell(models.Model):
    class Status(models.TextChoices):
        TRAINING = "training"
        GENERATING = "generating"
        JUDGING = "judging"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    DONE = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="cells")
    position = models.PositiveIntegerField()
    # The cell's values: data sets of the mix (ids and names), rows per data set (null: all),
    # the rows that makes in all, learning rate, epochs, method.
    datasets = models.JSONField(default=list)
    mix = models.CharField(max_length=500)
    rows = models.PositiveIntegerField(null=True, blank=True)
    train_rows = models.PositiveIntegerField()
    learning_rate = models.FloatField()
    epochs = models.FloatField()
    method = models.CharField(max_length=10, choices=FineTuneRun.Method.choices)
    finetune_run = models.ForeignKey(
        FineTuneRun, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    generation_run = models.ForeignKey(
        GenerationRun, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Base run v. this cell's run: what the judge sees (pairwise) or grades (grading).
    study = models.ForeignKey(
        Study, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    judge_run = models.ForeignKey(
        JudgeRun, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    score = models.FloatField(null=True, blank=True)
    ci_low = models.FloatField(null=True, blank=True)
    ci_high = models.FloatField(null=True, blank=True)
    # Verdicts (pairwise) or grades the score rests on, and the base model's own grade.
    counted = models.PositiveIntegerField(default=0)
    baseline = models.FloatField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.TRAINING)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["sweep", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["sweep", "position"], name="sweeps_sweepcell_one_per_position"
            ),
            models.CheckConstraint(
                condition=Q(score__isnull=True) | Q(status="succeeded"),
                name="sweeps_sweepcell_score_when_done",
            ),
        ]

    def __str__(self) -> str:
        rows = self.rows if self.rows is not None else "all"
        return (
            f"{self.mix} x {rows} rows, lr {self.learning_rate:g}, "
            f"{self.epochs:g} epochs, {self.method}"
        )
