from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from . import prompts


class PromptSet(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    source = models.CharField(max_length=500, blank=True, help_text="File it was imported from")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def has_answers(self) -> bool:
        return Answer.objects.filter(question__prompt_set=self).exists()


class Question(models.Model):
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.CASCADE, related_name="questions")
    position = models.PositiveIntegerField()
    text = models.TextField()
    category = models.CharField(max_length=100, blank=True)
    # FastChat / MT-bench `question_id`, kept so votes and answers from elsewhere can be matched.
    external_id = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["prompt_set", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["prompt_set", "position"], name="generation_question_unique_position"
            ),
            # Imports match questions by external id; blank means "none given".
            models.UniqueConstraint(
                fields=["prompt_set", "external_id"],
                condition=~Q(external_id=""),
                name="generation_question_unique_external_id",
            ),
            models.CheckConstraint(condition=~Q(text=""), name="generation_question_text_nonempty"),
        ]

    def __str__(self) -> str:
        return f"{self.prompt_set.name} #{self.position}"


class LanguageModel(models.Model):
    class PromptFormat(models.TextChoices):
        LINE_SFT = prompts.LINE_SFT, "LINE SFT (ユーザー: …\\nシステム: )"
        RINNA = prompts.RINNA, "rinna (ユーザー: …<NL>システム: )"
        CHAT_TEMPLATE = prompts.CHAT_TEMPLATE, "tokenizer chat template"
        PLAIN = prompts.PLAIN, "plain (question only)"

    # Admin-only: never shown to annotators (DESIGN.md, Blinding).
    name = models.CharField(max_length=200, unique=True)
    name_or_path = models.CharField(
        max_length=500,
        blank=True,
        help_text="Hub id, or a path relative to MODEL_STORAGE (blank for imported models)",
    )
    revision = models.CharField(max_length=200, blank=True)
    maker = models.CharField(
        max_length=200, blank=True, help_text="Organisation; used to flag self-identifying answers"
    )
    prompt_format = models.CharField(
        max_length=20, choices=PromptFormat.choices, default=PromptFormat.LINE_SFT
    )
    generation_defaults = models.JSONField(
        default=dict,
        blank=True,
        help_text='e.g. {"max_new_tokens": 256, "do_sample": true, "temperature": 0.7}',
    )
    base_model = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="derived_models"
    )
    adapter_path = models.CharField(
        max_length=500, blank=True, help_text="LoRA adapter, relative to MODEL_STORAGE"
    )
    trust_remote_code = models.BooleanField(
        default=False, help_text="Runs code from the model repository; superusers only"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(adapter_path="") | Q(base_model__isnull=False),
                name="generation_languagemodel_adapter_needs_base",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class GenerationRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    model = models.ForeignKey(LanguageModel, on_delete=models.PROTECT, related_name="runs")
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.PROTECT, related_name="runs")
    params = models.JSONField(default=dict, blank=True, help_text="Overrides of the model defaults")
    seed = models.IntegerField(default=0)
    batch_size = models.PositiveIntegerField(default=8)
    # Imported runs hold answers that came with imported votes; nothing generates them.
    imported = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The stale-run check: running runs ordered by heartbeat.
            models.Index(fields=["status", "heartbeat_at"], name="generation_run_status_hb"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(done__lte=models.F("total")) | Q(total=0),
                name="generation_generationrun_done_le_total",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk}: {self.model.name} on {self.prompt_set.name}"

    @property
    def seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class Answer(models.Model):
    run = models.ForeignKey(GenerationRun, on_delete=models.CASCADE, related_name="answers")
    question = models.ForeignKey(Question, on_delete=models.PROTECT, related_name="answers")
    text = models.TextField(blank=True)
    new_tokens = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "question__position"]
        constraints = [
            # Resumed runs skip questions already answered; never two answers per question.
            models.UniqueConstraint(fields=["run", "question"], name="generation_answer_one_per_q"),
        ]

    def __str__(self) -> str:
        return f"answer to {self.question} in run {self.run_id}"
