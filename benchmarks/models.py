"""Automatic benchmark runs (lm-evaluation-harness) beside the human and judge results.

A benchmark run is one model over a list of lm-eval tasks, scored one way: ``loglikelihood``
(pick the most likely option) or ``generative`` (generate, then match). Scores made the two
ways differ a lot, so every stored result says which, with its few-shot count, prompt format,
the task's resolved configuration and the harness version.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from evalsite.runs.models import CountedRun
from generation.models import LanguageModel


class Scoring(models.TextChoices):
    LOGLIKELIHOOD = "loglikelihood", "log-likelihood (most likely option)"
    GENERATIVE = "generative", "generative (generate, then match)"


class PromptMode(models.TextChoices):
    TEMPLATE = "template", "the model's prompt template, as generation renders it"
    RAW = "raw", "raw text (the task's own prompt, no template)"


class BenchmarkRun(CountedRun):
    """A model over lm-eval tasks; results are stored one task at a time (resumable)."""

    Scoring = Scoring
    PromptMode = PromptMode

    model = models.ForeignKey(
        LanguageModel, on_delete=models.PROTECT, related_name="benchmark_runs"
    )
    tasks = models.JSONField(default=list, help_text="lm-eval task names, in run order")
    num_fewshot = models.PositiveSmallIntegerField(default=0)
    scoring = models.CharField(
        max_length=20, choices=Scoring.choices, default=Scoring.LOGLIKELIHOOD
    )
    limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Examples per task (blank: all)"
    )
    batch_size = models.PositiveIntegerField(default=8)
    seed = models.IntegerField(default=0)
    params = models.JSONField(default=dict, blank=True, help_text="Decoding for generative tasks")
    # How a local model is prompted: through its template (lm-eval's chat path, rendered by the
    # app's one renderer) or with the task's raw text. A served model is always sent messages.
    prompt = models.CharField(
        max_length=20, choices=PromptMode.choices, default=PromptMode.TEMPLATE
    )
    system_instruction = models.TextField(
        blank=True, help_text="Replaces the template's system prompt (blank: the template's own)"
    )
    fewshot_as_multiturn = models.BooleanField(
        default=True, help_text="Few-shot examples as earlier user/assistant turns"
    )
    # done / total (CountedRun) count the tasks finished / in the run.
    harness_version = models.CharField(max_length=40, blank=True)
    task_source = models.CharField(
        max_length=500, blank=True, help_text="Folders custom task YAML was read from"
    )

    class Meta(CountedRun.Meta):
        indexes = [CountedRun.stale_check_index("benchmarks_run_status_hb")]
        constraints = [
            *CountedRun.Meta.constraints,
            models.CheckConstraint(
                condition=Q(scoring__in=["loglikelihood", "generative"]),
                name="benchmarks_benchmarkrun_scoring_valid",
            ),
            models.CheckConstraint(
                condition=Q(prompt__in=["template", "raw"]),
                name="benchmarks_benchmarkrun_prompt_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"benchmark #{self.pk} {self.model} ({', '.join(self.tasks)})"


class BenchmarkResult(models.Model):
    """One metric of one task of a run, with everything that made the number."""

    run = models.ForeignKey(BenchmarkRun, on_delete=models.CASCADE, related_name="results")
    task = models.CharField(max_length=200)
    metric = models.CharField(max_length=100)
    value = models.FloatField()
    stderr = models.FloatField(null=True, blank=True)
    n = models.PositiveIntegerField(default=0, help_text="Examples scored")
    num_fewshot = models.PositiveSmallIntegerField(default=0)
    scoring = models.CharField(max_length=20, choices=Scoring.choices)
    prompt_format = models.CharField(
        max_length=200, help_text='Template name and version, or "raw" (the task\'s own text)'
    )
    config = models.JSONField(default=dict, blank=True, help_text="The task's resolved config")
    harness_version = models.CharField(max_length=40, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "task", "metric"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "task", "metric"], name="benchmarks_result_run_task_metric"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task} {self.metric}={self.value:.4f}"


class BenchmarkSample(models.Model):
    """One example of one task as the model saw and answered it."""

    run = models.ForeignKey(BenchmarkRun, on_delete=models.CASCADE, related_name="samples")
    task = models.CharField(max_length=200)
    doc_id = models.IntegerField()
    prompt = models.TextField(help_text="The rendered text, or a served model's messages as JSON")
    messages = models.JSONField(
        default=list, blank=True, help_text="The conversation sent (empty for raw text)"
    )
    target = models.TextField(blank=True)
    output = models.TextField(blank=True, help_text="Generated text or the chosen option")
    correct = models.BooleanField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["run", "task", "doc_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "task", "doc_id"], name="benchmarks_sample_run_task_doc"
            ),
        ]
        indexes = [models.Index(fields=["run", "task", "correct"], name="benchmarks_sample_rtc")]

    def __str__(self) -> str:
        return f"{self.task} #{self.doc_id}"
