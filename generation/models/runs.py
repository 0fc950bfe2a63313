"""Generation runs and the answers they store (the abstract run is the spine's)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from evalsite.runs.models import CountedRun

from .language_models import LanguageModel
from .prompt_sets import PromptSet, Question
from .templates import PromptTemplate


class GeneratesWithEngine(models.Model):
    """Which engine a run of local weights generates with (generation/engine/vllm_engine.py):
    the one asked for when the run was made, and the one its worker used."""

    class Engine(models.TextChoices):
        AUTO = "auto", "auto (vLLM on a GPU worker that has it, else transformers)"
        TRANSFORMERS = "transformers"
        VLLM = "vllm"

    engine_requested = models.CharField(
        max_length=12,
        choices=Engine.choices,
        default=Engine.AUTO,
        help_text="auto follows the worker's GENERATION_ENGINE setting",
    )
    engine = models.CharField(
        max_length=12,
        blank=True,
        help_text="What generated: transformers, vllm, or endpoint for a served model "
        "(blank until a worker starts the run)",
    )

    class Meta:
        abstract = True


class GenerationRun(CountedRun, GeneratesWithEngine):
    model = models.ForeignKey(LanguageModel, on_delete=models.PROTECT, related_name="runs")
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.PROTECT, related_name="runs")
    params = models.JSONField(default=dict, blank=True, help_text="Overrides of the model defaults")
    seed = models.IntegerField(default=0)
    batch_size = models.PositiveIntegerField(default=8)
    # Imported runs hold answers that came with imported votes; nothing generates them.
    imported = models.BooleanField(default=False)
    # done / total (CountedRun) count answers: one per question and user turn.
    # The template version the run rendered with (set when it starts; kept if the template is
    # edited later, which makes a new version).
    template = models.ForeignKey(
        PromptTemplate, null=True, blank=True, on_delete=models.PROTECT, related_name="runs"
    )
    regenerated_from = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="regenerations",
        help_text="The run whose parameters this one repeats",
    )
    # Endpoint runs: requests sent (retries included) and token usage the server reported.
    requests = models.PositiveIntegerField(default=0)
    usage = models.JSONField(default=dict, blank=True)

    class Meta(CountedRun.Meta):
        indexes = [CountedRun.stale_check_index("generation_run_status_hb")]
        constraints = [
            *CountedRun.Meta.constraints,
        ]

    def __str__(self) -> str:
        return f"run {self.pk}: {self.model.name} on {self.prompt_set.name}"


class Answer(models.Model):
    class StopReason(models.TextChoices):
        EOS = "eos", "end of sequence"
        STOP_STRING = "stop_string", "stop string"
        LENGTH = "length", "length limit"
        OTHER = "other", "other (as the endpoint reported it)"

    run = models.ForeignKey(GenerationRun, on_delete=models.CASCADE, related_name="answers")
    question = models.ForeignKey(Question, on_delete=models.PROTECT, related_name="answers")
    # 1 for the reply to the first user turn, 2 to the second, ...; a multi-turn question has
    # one answer per turn, each generated from a prompt holding the earlier turns and replies.
    turn = models.PositiveSmallIntegerField(default=1)
    text = models.TextField(blank=True)
    new_tokens = models.PositiveIntegerField(default=0)
    # Provenance (staff only; never in anything an annotator can see or fetch).
    prompt_text = models.TextField(
        blank=True, help_text="The rendered prompt, or the request messages (JSON) for endpoints"
    )
    prompt_tokens = models.PositiveIntegerField(default=0)
    model_revision = models.CharField(
        max_length=200, blank=True, help_text="Commit hash the loader saw, or the endpoint's id"
    )
    decoding = models.JSONField(default=dict, blank=True, help_text="Parameters and seed used")
    stop_reason = models.CharField(max_length=20, choices=StopReason.choices, blank=True)
    truncated = models.BooleanField(default=False, help_text="Hit the length limit")
    # Regenerating some answers of a run copies the others into the new run (so the chosen ones
    # are made in the same context as before); a copy points at the answer it repeats.
    copied_from = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="copies",
        help_text="Copied, not generated, by a run that regenerated other answers",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "question__position", "turn"]
        constraints = [
            # Resumed runs skip answers already stored; never two answers per question and turn.
            models.UniqueConstraint(
                fields=["run", "question", "turn"], name="generation_answer_one_per_q_turn"
            ),
            models.CheckConstraint(condition=Q(turn__gte=1), name="generation_answer_turn_from_1"),
            models.CheckConstraint(
                condition=Q(truncated=False) | Q(stop_reason="length"),
                name="generation_answer_truncated_means_length",
            ),
        ]

    def __str__(self) -> str:
        return f"answer to {self.question} in run {self.run_id}"
