from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from . import prompts
from .engine.params import FINETUNE, Param
from .params import validate_generation_defaults


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
        ]

    def __str__(self) -> str:
        return self.name


class Run(models.Model):
    """What every kind of background run has: its lease (worker, heartbeat), tries and timings.

    generation/lifecycle.py claims, heartbeats, requeues, cancels and retries rows of any
    subclass; each one declares ``stale_check_index`` under its own (kept) name.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
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
        abstract = True
        ordering = ["-created_at"]

    @staticmethod
    def stale_check_index(name: str) -> models.Index:
        """The stale-run check (lifecycle.requeue_stale): running runs ordered by heartbeat."""
        return models.Index(fields=["status", "heartbeat_at"], name=name)

    @property
    def seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class GenerationRun(Run):
    model = models.ForeignKey(LanguageModel, on_delete=models.PROTECT, related_name="runs")
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.PROTECT, related_name="runs")
    params = models.JSONField(default=dict, blank=True, help_text="Overrides of the model defaults")
    seed = models.IntegerField(default=0)
    batch_size = models.PositiveIntegerField(default=8)
    # Imported runs hold answers that came with imported votes; nothing generates them.
    imported = models.BooleanField(default=False)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)

    class Meta(Run.Meta):
        indexes = [Run.stale_check_index("generation_run_status_hb")]
        constraints = [
            models.CheckConstraint(
                condition=Q(done__lte=models.F("total")) | Q(total=0),
                name="generation_generationrun_done_le_total",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk}: {self.model.name} on {self.prompt_set.name}"


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


# --- instruction data and fine-tuning ----------------------------------------------------------


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
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class InstructionExample(models.Model):
    dataset = models.ForeignKey(
        InstructionDataset, on_delete=models.CASCADE, related_name="examples"
    )
    position = models.PositiveIntegerField()
    instruction = models.TextField()
    input = models.TextField(blank=True)
    output = models.TextField()

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

    base_model = models.ForeignKey(
        LanguageModel, on_delete=models.PROTECT, related_name="finetune_runs"
    )
    datasets = models.ManyToManyField(
        InstructionDataset, through="FineTuneRunDataset", related_name="finetune_runs"
    )
    method = models.CharField(max_length=10, choices=Method.choices, default=Method.LORA)
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
    result_model = models.OneToOneField(
        LanguageModel,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="finetune_origin",
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
        return self.method in (self.Method.LORA, self.Method.QLORA)


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
