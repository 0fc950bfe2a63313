"""Prompt sets and their questions (one or several user turns each)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


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
        return self.questions.filter(answers__isnull=False).exists()


class Question(models.Model):
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.CASCADE, related_name="questions")
    position = models.PositiveIntegerField()
    # The first user turn; ``follow_ups`` holds the later ones (FastChat / MT-Bench ``turns``).
    text = models.TextField()
    follow_ups = models.JSONField(
        default=list, blank=True, help_text="Later user turns, in order (multi-turn questions)"
    )
    category = models.CharField(max_length=100, blank=True)
    # For graded sets (ELYZA-tasks-100's `output` and `eval_aspect`): a model answer and what a
    # grader should look at. Staff only: never shown to annotators.
    reference = models.TextField(blank=True, help_text="Reference answer, for graders")
    criteria = models.TextField(blank=True, help_text="Evaluation criteria, for graders")
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

    @property
    def turns(self) -> list[str]:
        """Every user turn, the first one included."""
        return [self.text, *self.follow_ups]
