"""Evol-Instruct: versioned rewrite prompts, runs, and one item per evolved instruction."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from evalsite.runs.models import CountedRun
from generation.models import InstructionDataset, InstructionExample, LanguageModel

from .engine.operations import DESCRIPTIONS, OPERATIONS


class EvolutionPrompt(models.Model):
    """A rewrite prompt for one operation. A version a run used is never edited in place:
    saving changes to it makes the next version (evolution/prompts.py); runs take the latest
    active version of each operation."""

    Operation = models.TextChoices("Operation", [(op, op) for op in OPERATIONS])

    operation = models.CharField(max_length=40, choices=Operation.choices)
    version = models.PositiveIntegerField(default=1)
    template = models.TextField(help_text="Jinja2 over {{ instruction }}, rendered in a sandbox")
    description = models.CharField(max_length=300, blank=True)
    active = models.BooleanField(
        default=True, help_text="Runs use the latest active version of each operation"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["operation", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["operation", "version"], name="evolution_evolutionprompt_unique_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.operation} v{self.version}"

    @property
    def operation_description(self) -> str:
        return DESCRIPTIONS.get(self.operation, "")


class EvolutionRun(CountedRun):
    """Evol-Instruct over a data set: ``rounds`` rounds of rewriting, elimination, answering."""

    source = models.ForeignKey(
        InstructionDataset, on_delete=models.PROTECT, related_name="evolution_runs"
    )
    model = models.ForeignKey(
        LanguageModel, on_delete=models.PROTECT, related_name="evolution_runs"
    )
    answer_model = models.ForeignKey(
        LanguageModel, on_delete=models.PROTECT, related_name="evolution_answer_runs"
    )
    judge = models.ForeignKey(
        LanguageModel,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="evolution_judge_runs",
        help_text="Asked whether an evolved instruction adds information (blank: a cheap rule)",
    )
    rounds = models.PositiveSmallIntegerField(default=1)
    seed = models.IntegerField(default=0)
    batch_size = models.PositiveIntegerField(default=8)
    params = models.JSONField(default=dict, blank=True, help_text="The evolver's decoding")
    answer_params = models.JSONField(
        default=dict, blank=True, help_text="The answer model's decoding"
    )
    rules = models.JSONField(default=dict, blank=True, help_text="Elimination thresholds")
    # The rewrite prompt versions the run renders with, by operation ({op: EvolutionPrompt id}):
    # fixed when it is created, so a resumed run rewrites as it began.
    prompts = models.JSONField(default=dict, blank=True)
    name = models.CharField(max_length=200, help_text="Name of the data set to create")
    result = models.OneToOneField(
        InstructionDataset,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="evolved_by",
    )
    # done / total (CountedRun) count items (total is an estimate: rounds after the first evolve
    # the survivors only).
    # Per operation: {"kept": n, "dropped": {rule: n}} (evolution/summary.py keeps it current).
    counts = models.JSONField(default=dict, blank=True)

    class Meta(CountedRun.Meta):
        indexes = [CountedRun.stale_check_index("evolution_run_status_hb")]
        constraints = [
            *CountedRun.Meta.constraints,
            models.CheckConstraint(
                condition=Q(rounds__gte=1), name="evolution_evolutionrun_rounds_from_1"
            ),
        ]

    def __str__(self) -> str:
        return f"evolution run {self.pk}: {self.model.name} on {self.source.name}"

    @property
    def served(self) -> bool:
        """Every model it asks is served by an endpoint: no GPU needed."""
        models_ = [self.model, self.answer_model] + ([self.judge] if self.judge_id else [])
        return all(m.is_endpoint for m in models_)


class EvolutionItem(models.Model):
    """One evolution of one instruction in one round, kept or dropped (and why)."""

    run = models.ForeignKey(EvolutionRun, on_delete=models.CASCADE, related_name="items")
    round = models.PositiveSmallIntegerField()
    # The source row at the root of the chain; round r > 1 evolves the kept item of round r-1.
    source_example = models.ForeignKey(
        InstructionExample, on_delete=models.CASCADE, related_name="evolution_items"
    )
    parent_item = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    parent_text = models.TextField(help_text="The instruction it was made from")
    operation = models.CharField(max_length=40)
    prompt = models.ForeignKey(EvolutionPrompt, on_delete=models.PROTECT, related_name="items")
    prompt_text = models.TextField(help_text="The rendered rewrite prompt")
    output = models.TextField(blank=True, help_text="What the evolver wrote")
    instruction = models.TextField(blank=True, help_text="The evolved instruction")
    judge_output = models.TextField(blank=True)
    answer = models.TextField(blank=True)
    kept = models.BooleanField(default=False)
    drop_rule = models.CharField(max_length=40, blank=True)
    drop_detail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "round", "source_example_id"]
        constraints = [
            # A resumed run skips what is stored: one item per chain and round.
            models.UniqueConstraint(
                fields=["run", "round", "source_example"], name="evolution_item_one_per_round"
            ),
            models.CheckConstraint(
                condition=Q(kept=True, drop_rule="") | Q(kept=False) & ~Q(drop_rule=""),
                name="evolution_item_kept_or_rule",
            ),
        ]
        indexes = [
            # The run page's counts and filters: items of a run by operation, kept, rule.
            models.Index(
                fields=["run", "operation", "kept", "drop_rule"], name="evolution_item_counts"
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} round {self.round} row {self.source_example_id}"
