"""Personal API tokens (stored hashed) and the audit log of staff actions."""

from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone


class ApiToken(models.Model):
    """A secret a script sends as ``Authorization: Bearer <token>`` to act as its user.

    Only ``prefix`` (public, to find the row) and the SHA-256 of the whole token are stored;
    the token itself is shown once, when it is made.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. 'CI export'.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Blank: never expires.")
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API token"
        ordering = ["-created_at"]
        indexes = [
            # The token page lists one user's tokens, newest first.
            models.Index(fields=["user", "-created_at"], name="accounts_apitoken_user_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_active(self) -> bool:
        return not self.is_revoked and not self.is_expired

    @property
    def state(self) -> str:
        if self.is_revoked:
            return "revoked"
        return "expired" if self.is_expired else "active"


class AuditEntry(models.Model):
    """One staff action that changed results, spent GPU time, or changed what a worker runs or
    where an API key goes. Written by the service that made the change, inside its transaction,
    so a change that rolled back leaves no entry."""

    class Action(models.TextChoices):
        GENERATION_RUN_START = "generation_run.start", "generation run started"
        GENERATION_RUN_CANCEL = "generation_run.cancel", "generation run cancelled"
        GENERATION_RUN_RETRY = "generation_run.retry", "generation run retried"
        JUDGE_RUN_START = "judge_run.start", "judge run started"
        JUDGE_RUN_CANCEL = "judge_run.cancel", "judge run cancelled"
        JUDGE_RUN_RETRY = "judge_run.retry", "judge run retried"
        FINETUNE_RUN_START = "finetune_run.start", "fine-tune run started"
        FINETUNE_RUN_CANCEL = "finetune_run.cancel", "fine-tune run cancelled"
        FINETUNE_RUN_RESUME = "finetune_run.resume", "fine-tune run resumed"
        MODEL_MERGE = "model.merge", "LoRA adapter merge queued"
        STUDY_OPEN = "study.open", "study opened"
        STUDY_CLOSE = "study.close", "study closed"
        IDENTITY_FLAG_UNMASK = "identity_flag.unmask", "identity flag unmasked"
        TOKEN_CREATE = "token.create", "API token created"
        TOKEN_REVOKE = "token.revoke", "API token revoked"
        EVOLUTION_RUN_START = "evolution_run.start", "Evol-Instruct run started"
        EVOLUTION_RUN_CANCEL = "evolution_run.cancel", "Evol-Instruct run cancelled"
        EVOLUTION_RUN_RETRY = "evolution_run.retry", "Evol-Instruct run retried"
        DATASET_REVIEW = "dataset.review", "data set rows reviewed"
        SWEEP_START = "sweep.start", "fine-tune sweep started"
        SWEEP_CANCEL = "sweep.cancel", "fine-tune sweep cancelled"
        PREFERENCES_EXPORT = "preferences.export", "votes exported as preference pairs"
        BENCHMARK_RUN_START = "benchmark_run.start", "benchmark run started"
        BENCHMARK_RUN_CANCEL = "benchmark_run.cancel", "benchmark run cancelled"
        BENCHMARK_RUN_RETRY = "benchmark_run.retry", "benchmark run retried"
        MODEL_REMOTE_CODE_ON = "model.remote_code_on", "trust_remote_code turned on"
        MODEL_REMOTE_CODE_OFF = "model.remote_code_off", "trust_remote_code turned off"
        MODEL_ENDPOINT_CHANGE = (
            "model.endpoint_change",
            "endpoint, served model or API key variable changed",
        )
        MODEL_GENERATION_CHANGE = (
            "model.generation_change",
            "template, decoding defaults or weights changed",
        )
        JUDGE_PROMPT_CREATE = "judge_prompt.create", "judge prompt created"
        JUDGE_PROMPT_EDIT = "judge_prompt.edit", "judge prompt edited"
        REWRITE_PROMPT_CREATE = "rewrite_prompt.create", "rewrite prompt created"
        REWRITE_PROMPT_EDIT = "rewrite_prompt.edit", "rewrite prompt edited"
        ANSWERS_IMPORT = "answers.import", "answers imported"

    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Who: a user (None for a management command or the system), through a token or a session.
    # The username is kept as text too, so the entry still says who after the user is deleted.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    token = models.ForeignKey(
        ApiToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=40, choices=Action.choices)
    content_type = models.ForeignKey(
        ContentType, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"
        ordering = ["-created_at", "-id"]
        indexes = [
            # The admin's list: newest first, filtered by action.
            models.Index(fields=["action", "-created_at"], name="accounts_auditentry_action_idx"),
            # "What happened to this run / study": every entry of one object.
            models.Index(
                fields=["content_type", "object_id"], name="accounts_auditentry_object_idx"
            ),
        ]

    def __str__(self) -> str:
        who = self.actor or "system"
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {who}: {self.get_action_display()}"
