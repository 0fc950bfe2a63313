"""Prompt templates as data: how a conversation becomes a model's input, versioned.

A model names its template (``LanguageModel.prompt_format``); the latest version of that name is
used when a run starts, and the run keeps pointing at the version it used. A version used by a
succeeded run is never changed in place: editing it saves a new version (generation/templates.py).
The rendering itself is generation/engine/render.py, free of Django.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class PromptTemplate(models.Model):
    class Kind(models.TextChoices):
        TURNS = "turns", "text around each turn"
        CHAT_TEMPLATE = "chat_template", "the tokenizer's chat template"
        JINJA = "jinja", "Jinja2 source (sandboxed)"

    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField(default=1)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.TURNS)
    system_prompt = models.TextField(blank=True, help_text="Blank: no system prompt")
    system_template = models.TextField(
        blank=True, default="{system}", help_text="How the system prompt is written: {system}"
    )
    user_template = models.TextField(
        blank=True, default="{content}", help_text="How a user turn is written: {content}"
    )
    assistant_template = models.TextField(
        blank=True,
        default="{content}",
        help_text="How an assistant turn is written: {content}; the text before it opens a reply",
    )
    turn_separator = models.TextField(
        blank=True, help_text="Between one exchange (user turn and reply) and the next"
    )
    newline_token = models.CharField(
        max_length=20,
        blank=True,
        help_text="Written instead of a newline inside turns (rinna: <NL>)",
    )
    stop_strings = models.JSONField(
        default=list, blank=True, help_text="Generation ends at the first of these (not kept)"
    )
    end_with_eos = models.BooleanField(
        default=True, help_text="End each training example with the end-of-sequence token"
    )
    jinja_source = models.TextField(
        blank=True,
        help_text="Kind jinja: a template over `messages` (role, content) and "
        "`add_generation_prompt`, rendered in Jinja2's sandbox",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["name", "version"], name="generation_prompttemplate_name_version"
            ),
            models.CheckConstraint(
                condition=~Q(name=""), name="generation_prompttemplate_name_set"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["turns", "chat_template", "jinja"]),
                name="generation_prompttemplate_kind_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"
