"""Instruction data, fine-tune runs with their data mix and loss log, and augmentations."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from evalsite.runs.models import Run
from evalsite.trackers import TRACKERS

from ..engine.params import FINETUNE, Param
from .language_models import LanguageModel
from .runs import GenerationRun


class InstructionDataset(models.Model):
    """Instruction / input / output rows to fine-tune on. Read-only once imported."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    source = models.CharField(max_length=500, blank=True, help_text="File it was imported from")
    # Summary statistics: rows, unique instructions, duplicates; "tokens" per chosen tokenizer.
    stats = models.JSONField(default=dict, blank=True)
    # Set on data sets made by generating answers for another set's instructions.
    derived_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="derived_sets"
    )
    # Fine-tune on the rows staff accepted in review only (generated data sets).
    accepted_only = models.BooleanField(
        default=False, help_text="Fine-tuning and sweeps use only the rows accepted in review"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class InstructionExample(models.Model):
    class Review(models.TextChoices):
        PENDING = "pending"
        ACCEPTED = "accepted"
        REJECTED = "rejected"

    dataset = models.ForeignKey(
        InstructionDataset, on_delete=models.CASCADE, related_name="examples"
    )
    position = models.PositiveIntegerField()
    instruction = models.TextField()
    input = models.TextField(blank=True)
    output = models.TextField()
    # Lineage of generated rows: the row it was made from (in the source data set), how
    # (an Evol-Instruct operation such as "deepen" or "breadth", or "answer"), in which round.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    operation = models.CharField(max_length=40, blank=True)
    round = models.PositiveSmallIntegerField(null=True, blank=True)
    # Review of generated rows by staff: accept, edit (accepted, edited=True) or reject.
    review = models.CharField(max_length=10, choices=Review.choices, default=Review.PENDING)
    edited = models.BooleanField(default=False)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["dataset", "position"]
        constraints = [
            # Sampling a mix reads rows in position order, so a seed always picks the same rows.
            models.UniqueConstraint(
                fields=["dataset", "position"], name="generation_instructionexample_unique_position"
            ),
            models.CheckConstraint(
                condition=~Q(instruction=""), name="generation_instructionexample_instruction_set"
            ),
            models.CheckConstraint(
                condition=~Q(output=""), name="generation_instructionexample_output_set"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} #{self.position}"


def _hyperparameter_field(param: Param) -> models.Field:
    options = {"help_text": param.help}
    if param.kind is list:
        return models.JSONField(default=list, blank=True, **options)
    if param.kind is bool:
        return models.BooleanField(default=param.default, **options)
    if param.kind is float:
        return models.FloatField(default=param.default, **options)
    if param.low is not None and param.low >= 0:
        return models.PositiveIntegerField(default=param.default, **options)
    return models.IntegerField(default=param.default, **options)


# The hyper-parameter fields of a fine-tune run, one per entry of engine/params.FINETUNE.
FineTuneHyperparameters = type(
    "FineTuneHyperparameters",
    (models.Model,),
    {
        "__module__": __name__,
        "Meta": type("Meta", (), {"abstract": True}),
        **{p.name: _hyperparameter_field(p) for p in FINETUNE},
    },
)


class FineTuneRun(Run, FineTuneHyperparameters):
    class Method(models.TextChoices):
        LORA = "lora", "LoRA"
        FULL = "full", "full fine-tuning"
        QLORA = "qlora", "QLoRA (4-bit base; CUDA + bitsandbytes only)"
        DPO = "dpo", "DPO on preference pairs (LoRA by default)"

    base_model = models.ForeignKey(
        LanguageModel, on_delete=models.PROTECT, related_name="finetune_runs"
    )
    datasets = models.ManyToManyField(
        InstructionDataset, through="FineTuneRunDataset", related_name="finetune_runs"
    )
    method = models.CharField(max_length=10, choices=Method.choices, default=Method.LORA)
    # DPO runs train on preference pairs (exported from a study's votes) instead of data sets.
    preferences = models.ForeignKey(
        "generation.PreferenceDataset",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="finetune_runs",
    )
    model_name = models.CharField(
        max_length=200, blank=True, help_text="Name of the resulting model (blank: chosen for you)"
    )
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    epoch = models.FloatField(default=0.0)
    train_examples = models.PositiveIntegerField(default=0)
    eval_examples = models.PositiveIntegerField(default=0)
    skipped_examples = models.PositiveIntegerField(
        default=0, help_text="Examples whose prompt alone fills max_length"
    )
    train_tokens = models.PositiveBigIntegerField(default=0)
    output_path = models.CharField(
        max_length=500, blank=True, help_text="Run directory, relative to MODEL_STORAGE"
    )
    checkpoint = models.CharField(
        max_length=500, blank=True, help_text="Last checkpoint, relative to MODEL_STORAGE"
    )
    resumed_from_step = models.PositiveIntegerField(default=0)
    # Figures a method measures beside the loss log: DPO's mean log-probability margin of chosen
    # over rejected on the held-out pairs, before and after training.
    metrics = models.JSONField(default=dict, blank=True)
    # The template version training examples were rendered with (generation/engine/render.py).
    template = models.ForeignKey(
        "generation.PromptTemplate",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="finetune_runs",
    )
    result_model = models.OneToOneField(
        LanguageModel,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="finetune_origin",
    )
    # The experiment tracker the loss also goes to (transformers' report_to, evalsite/trackers).
    report_to = models.CharField(
        max_length=12,
        blank=True,
        choices=[(name, name) for name in TRACKERS],
        help_text="Experiment tracker for the loss (blank: the site's EXPERIMENT_TRACKER)",
    )

    class Meta(Run.Meta):
        indexes = [Run.stale_check_index("generation_ft_status_hb")]
        constraints = [
            models.CheckConstraint(
                condition=Q(step__lte=models.F("total_steps")) | Q(total_steps=0),
                name="generation_finetunerun_step_le_total",
            ),
            models.CheckConstraint(
                condition=Q(eval_fraction__gte=0) & Q(eval_fraction__lte=0.5),
                name="generation_finetunerun_eval_fraction_range",
            ),
            models.CheckConstraint(
                condition=Q(learning_rate__gt=0), name="generation_finetunerun_lr_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"fine-tune {self.pk}: {self.base_model.name} ({self.method})"

    @property
    def is_lora(self) -> bool:
        # DPO runs adapt with LoRA (the reference model is the base with the adapter off).
        return self.method in (self.Method.LORA, self.Method.QLORA, self.Method.DPO)


class FineTuneRunDataset(models.Model):
    """One data set of a run's mix: all its rows, or ``rows`` sampled with the run's seed."""

    run = models.ForeignKey(FineTuneRun, on_delete=models.CASCADE, related_name="sources")
    dataset = models.ForeignKey(
        InstructionDataset, on_delete=models.PROTECT, related_name="finetune_sources"
    )
    rows = models.PositiveIntegerField(null=True, blank=True, help_text="Blank: every row")

    class Meta:
        ordering = ["run", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "dataset"], name="generation_finetunerundataset_unique"
            ),
            models.CheckConstraint(
                condition=Q(rows__isnull=True) | Q(rows__gt=0),
                name="generation_finetunerundataset_rows_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} x {self.rows or 'all'}"


class FineTuneLog(models.Model):
    """The loss log: training loss and learning rate per step, held-out loss per epoch."""

    class Kind(models.TextChoices):
        TRAIN = "train"
        EVAL = "eval"

    run = models.ForeignKey(FineTuneRun, on_delete=models.CASCADE, related_name="log_entries")
    kind = models.CharField(max_length=5, choices=Kind.choices)
    step = models.PositiveIntegerField()
    loss = models.FloatField()
    learning_rate = models.FloatField(null=True, blank=True)
    epoch = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["run", "kind", "step"]
        constraints = [
            # A resumed run rewrites the steps after its checkpoint; never two entries per step.
            models.UniqueConstraint(
                fields=["run", "kind", "step"], name="generation_finetunelog_one_per_step"
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} {self.kind} step {self.step}: {self.loss:.4f}"


class DatasetAugmentation(models.Model):
    """Answers generated for a data set's unique instructions, saved as a new data set.

    The answers come from an ordinary generation run (on a prompt set made of the unique
    instructions), so it is claimed, resumed and watched like any other run; when it succeeds
    the new data set ``name`` is written.
    """

    source = models.ForeignKey(
        InstructionDataset, on_delete=models.PROTECT, related_name="augmentations"
    )
    run = models.OneToOneField(GenerationRun, on_delete=models.CASCADE, related_name="augmentation")
    name = models.CharField(max_length=200, help_text="Name of the data set to create")
    result = models.OneToOneField(
        InstructionDataset,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="augmented_from",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.source.name} -> {self.name}"


class PreferenceDataset(models.Model):
    """Preference pairs (prompt, chosen, rejected) for DPO, made from a study's votes.

    generation does not import annotation: the study is kept by id and name, so the lineage of a
    model tuned on these pairs reads "votes of study X" even after the study is renamed or gone.
    """

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    source = models.CharField(max_length=500, blank=True, help_text="File or study it came from")
    source_study_id = models.PositiveIntegerField(null=True, blank=True)
    source_study_name = models.CharField(max_length=200, blank=True)
    # The model whose template rendered ``prompt`` (blank: prompts are the plain questions).
    rendered_for = models.CharField(max_length=200, blank=True)
    stats = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PreferencePair(models.Model):
    dataset = models.ForeignKey(PreferenceDataset, on_delete=models.CASCADE, related_name="pairs")
    position = models.PositiveIntegerField()
    question = models.TextField(help_text="The question as people saw it")
    prompt = models.TextField(help_text="The question rendered with the tuned model's template")
    chosen = models.TextField()
    rejected = models.TextField()
    # Where it came from: comparison id and people's votes for each side (plain data, no FK).
    origin = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["dataset", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "position"], name="generation_preferencepair_unique_position"
            ),
            models.CheckConstraint(
                condition=~Q(chosen=models.F("rejected")),
                name="generation_preferencepair_chosen_differs",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} #{self.position}"
