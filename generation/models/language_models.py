"""The model registry: weights a worker loads, or a served endpoint; each names its template."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from ..params import validate_generation_defaults

BAD_ENDPOINT_URL = (
    "an endpoint URL is http(s)://host[:port][/path], such as http://gpu-host:8000/v1"
)


def validate_endpoint_url(value: str) -> None:
    """An http(s) URL with a host (any host name: a bare cluster name too)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValidationError(BAD_ENDPOINT_URL) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        raise ValidationError(BAD_ENDPOINT_URL)


class LanguageModel(models.Model):
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
    # The name of a PromptTemplate; a run uses its latest version and records which.
    prompt_format = models.CharField(
        max_length=100, default="line_sft", help_text="Prompt template name"
    )
    # A pinned version of that template (a tuned model: the version it was trained with), so a
    # later edit of the template does not change what the model generates with; blank: the
    # latest version of ``prompt_format``.
    prompt_template = models.ForeignKey(
        "PromptTemplate",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="pinned_models",
        help_text="A pinned version of the prompt template (blank: its latest version)",
    )
    display_label = models.CharField(
        max_length=200, blank=True, help_text="Shown in results and exports (blank: the name)"
    )
    # Served models: an OpenAI-compatible chat-completions endpoint instead of weights.
    # Not a URLField: Django's URL check wants a dotted host name, and serving clusters are
    # often reached by a bare one (http://gpu-host:8000/v1).
    endpoint_url = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_endpoint_url],
        help_text="Base URL, e.g. http://gpu-host:8000/v1",
    )
    endpoint_model = models.CharField(
        max_length=200, blank=True, help_text="The model id the endpoint serves"
    )
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="Name of the environment variable holding the API key (never the key)",
    )
    endpoint_concurrency = models.PositiveSmallIntegerField(
        default=4, help_text="Requests in flight at once"
    )
    endpoint_requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Rate limit (blank: none)"
    )
    # Other names a model or its maker goes by (kana, katakana, phrases), for identity flags.
    aliases = models.JSONField(default=list, blank=True, help_text='e.g. ["りんな"]')
    maker_aliases = models.JSONField(
        default=list, blank=True, help_text='e.g. ["サイバーエージェント"]'
    )
    generation_defaults = models.JSONField(
        default=dict,
        blank=True,
        help_text='e.g. {"max_new_tokens": 256, "do_sample": true, "temperature": 0.7}',
        validators=[validate_generation_defaults],
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
        permissions = [
            # Beyond editing rows: putting GPU work on a model (generate, fine-tune, augment).
            ("run_languagemodel", "Can generate with and fine-tune models"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(adapter_path="") | Q(base_model__isnull=False),
                name="generation_languagemodel_adapter_needs_base",
            ),
            # An endpoint model has no weights to load, and names the model it asks for.
            models.CheckConstraint(
                condition=Q(endpoint_url="")
                | (Q(name_or_path="") & Q(adapter_path="") & ~Q(endpoint_model="")),
                name="generation_languagemodel_endpoint_xor_weights",
            ),
            models.CheckConstraint(
                condition=Q(endpoint_concurrency__gte=1),
                name="generation_languagemodel_endpoint_concurrency_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_endpoint(self) -> bool:
        return bool(self.endpoint_url)

    @property
    def label(self) -> str:
        """What results and exports call this model."""
        return self.display_label or self.name
