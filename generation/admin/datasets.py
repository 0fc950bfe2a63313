"""Instruction data sets (imported from a file, never edited), their rows, and the runs that
generate a new data set from one's unique instructions."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from evalsite.admin_helpers import ExtensibleAdmin, ImportFromFile, apply_each, form_action
from evalsite.errors import ServiceError

from ..models import DatasetAugmentation, InstructionDataset, InstructionExample
from ..review import (
    instruction_dataset_accepted_only_set,
    review_counts,
    review_lock,
    with_review_counts,
)
from ..training.data import (
    instruction_dataset_augment,
    instruction_dataset_import,
    instruction_dataset_token_stats,
)
from .base import ReadOnlyAdmin
from .forms import AugmentForm, InstructionDatasetImportForm, TokenStatsForm
from .review import ReviewPage

SAMPLE_ROWS = 10
AUGMENT_PERMISSIONS = [
    "generation.add_instructiondataset",
    "generation.add_generationrun",
    "generation.run_languagemodel",
]


@admin.register(InstructionDataset)
class InstructionDatasetAdmin(ExtensibleAdmin, ReviewPage, ImportFromFile, admin.ModelAdmin):
    list_display = [
        "name",
        "row_count",
        "unique_instructions",
        "duplicates",
        "review_states",
        "accepted_only",
        "source",
    ]
    list_filter = ["accepted_only"]
    search_fields = ["name", "description"]
    readonly_fields = [
        "source",
        "review",
        "statistics",
        "sample",
        "derived_from",
        "created_at",
        "created_by",
    ]
    fields = ["name", "description", "accepted_only", *readonly_fields]
    change_list_template = "admin/generation/instructiondataset/change_list.html"
    actions = ["token_statistics", "augment"]
    import_form = InstructionDatasetImportForm
    import_title = "Import an instruction data set"
    import_template = "admin/generation/instructiondataset/import_form.html"

    def has_add_permission(self, request):
        return False  # data sets come from a file: "Import from file", the API or the command

    def get_queryset(self, request):
        return with_review_counts(super().get_queryset(request))

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and review_lock(obj):
            return ["accepted_only", *self.readonly_fields]  # a run used it: see review.py
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        # The switch goes through its service (lock check, audit entry); the rest as usual.
        switched = change and "accepted_only" in form.changed_data
        if switched:
            wanted = obj.accepted_only
            obj.accepted_only = not wanted
        super().save_model(request, obj, form, change)
        if switched:
            try:
                instruction_dataset_accepted_only_set(
                    dataset=obj, accepted_only=wanted, user=request.user
                )
            except ServiceError as exc:
                self.message_user(request, str(exc), messages.ERROR)

    @admin.display(description="review (pending first)", ordering="-rows_pending")
    def review_states(self, obj: InstructionDataset) -> SafeString:
        return format_html(
            '<a href="{}">{} pending</a>, {} accepted, {} rejected, {} edited',
            reverse("admin:generation_instructiondataset_review", args=[obj.pk]),
            obj.rows_pending,
            obj.rows_accepted,
            obj.rows_rejected,
            obj.rows_edited,
        )

    @admin.display(description="review")
    def review(self, obj: InstructionDataset) -> SafeString:
        counts = review_counts(obj)
        lock = review_lock(obj)
        return format_html(
            "pending {}, accepted {}, rejected {}, edited {} &middot; "
            '<a href="{}">review the rows</a>{}',
            counts["pending"],
            counts["accepted"],
            counts["rejected"],
            counts["edited"],
            reverse("admin:generation_instructiondataset_review", args=[obj.pk]),
            format_html("<br>{}", lock) if lock else "",
        )

    @admin.display(description="rows")
    def row_count(self, obj: InstructionDataset):
        return obj.stats.get("rows")

    @admin.display(description="unique instructions")
    def unique_instructions(self, obj: InstructionDataset):
        return obj.stats.get("unique_instructions")

    @admin.display(description="duplicate rows")
    def duplicates(self, obj: InstructionDataset):
        return obj.stats.get("duplicate_rows")

    @admin.display(description="statistics")
    def statistics(self, obj: InstructionDataset) -> SafeString:
        return stats_table(obj.stats)

    @admin.display(description="first rows")
    def sample(self, obj: InstructionDataset) -> SafeString:
        rows = obj.examples.order_by("position")[:SAMPLE_ROWS]
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((e.position, e.instruction, e.input, e.output) for e in rows),
        )
        everything = reverse("admin:generation_instructionexample_changelist")
        return format_html(
            "<table><tr><th>#</th><th>instruction</th><th>input</th><th>output</th></tr>{}"
            '</table><p><a href="{}?dataset__id__exact={}">all rows</a></p>',
            body,
            everything,
            obj.pk,
        )

    def import_file(self, request, upload, data):
        dataset = instruction_dataset_import(
            **upload,
            drop_duplicates=data["drop_duplicates"],
            tokenizer_model=data["tokenizer_model"],
            user=request.user,
        )
        return dataset, f"Imported {dataset.stats['rows']} examples into {dataset.name}."

    @form_action(
        TokenStatsForm,
        "Token statistics",
        description="Compute token statistics with a model's tokenizer…",
        permissions=["change"],  # it writes the set's statistics
    )
    def token_statistics(self, request, queryset, form):
        apply_each(
            self,
            request,
            queryset,
            lambda dataset: instruction_dataset_token_stats(
                dataset=dataset, model=form.cleaned_data["model"]
            ),
            lambda dataset, _: f"Token statistics of {dataset.name} updated.",
            lambda dataset, exc: f"{dataset.name}: {exc}",
        )

    def has_augment_permission(self, request) -> bool:
        """It adds a data set and queues a generation run: the API's rights for the same."""
        return request.user.has_perms(AUGMENT_PERMISSIONS)

    @form_action(
        AugmentForm,
        "Generate answers",
        description="Generate answers for this data set's unique instructions…",
        permissions=["augment"],
    )
    def augment(self, request, queryset, form):
        if len(queryset) != 1:
            self.message_user(request, "Choose exactly one data set.", messages.ERROR)
            return None
        try:
            augmentation = instruction_dataset_augment(
                dataset=queryset[0],
                model=form.cleaned_data["model"],
                name=form.cleaned_data["name"],
                params=form.cleaned_data["params"],
                seed=form.cleaned_data["seed"],
                batch_size=form.cleaned_data["batch_size"],
                user=request.user,
            )
        except ServiceError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return None
        self.message_user(
            request,
            f"Queued generation run {augmentation.run_id}; data set "
            f"{augmentation.name} is written when it succeeds.",
        )
        return HttpResponseRedirect(
            reverse("admin:generation_generationrun_change", args=[augmentation.run_id])
        )


def stats_table(stats: dict) -> SafeString:
    """A data set's statistics as an HTML table (every value escaped)."""
    rows = [
        (label, stats.get(key))
        for key, label in [
            ("rows", "rows"),
            ("rows_in_file", "rows in the file"),
            ("unique_instructions", "unique instructions (instruction + input)"),
            ("duplicate_rows", "exact-duplicate rows"),
            ("dropped_duplicates", "duplicates dropped"),
            ("rows_with_input", "rows with an input"),
        ]
        if key in stats
    ]
    for key, label in [
        ("instruction_chars", "instruction chars"),
        ("output_chars", "output chars"),
    ]:
        if stats.get(key):
            rows.append((label, _percentile_text(stats[key])))
    tokens = stats.get("tokens")
    if tokens:
        where = f"{tokens.get('model')} tokenizer, {tokens.get('prompt_format')} format"
        for part in ("prompt", "answer", "total"):
            rows.append((f"{part} tokens ({where})", _percentile_text(tokens.get(part) or {})))
    augmentation = stats.get("augmentation")
    if augmentation:
        rows.append(("generated by", json.dumps(augmentation, ensure_ascii=False)))
    body = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
    return format_html("<table>{}</table>", body)


def _percentile_text(values: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in values.items())


@admin.register(InstructionExample)
class InstructionExampleAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    # Rows change only on the data set's review page (generation/review.py).
    list_display = [
        "dataset",
        "position",
        "short_instruction",
        "short_output",
        "review",
        "edited",
        "operation",
        "round",
    ]
    list_filter = ["review", "edited", "operation", "dataset"]
    search_fields = ["instruction", "input", "output"]
    readonly_fields = [
        "dataset",
        "position",
        "instruction",
        "input",
        "output",
        "parent",
        "operation",
        "round",
        "review",
        "edited",
        "reviewed_at",
        "reviewed_by",
    ]

    @admin.display(description="instruction")
    def short_instruction(self, obj: InstructionExample) -> str:
        return obj.instruction[:60]

    @admin.display(description="output")
    def short_output(self, obj: InstructionExample) -> str:
        return obj.output[:60]


@admin.register(DatasetAugmentation)
class DatasetAugmentationAdmin(admin.ModelAdmin):
    list_display = ["name", "source", "run", "run_status", "result", "created_at"]
    readonly_fields = ["source", "run", "name", "result", "created_at"]

    @admin.display(description="status")
    def run_status(self, obj: DatasetAugmentation) -> str:
        return obj.run.status

    def has_add_permission(self, request):
        return False
