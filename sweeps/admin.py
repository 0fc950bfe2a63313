"""Staff admin for sweeps: the sweep with its grid (the same table as the sweep page) and chart,
cancel; and the "Sweep…" action on language models, added here by extending whatever admin
generation registered for LanguageModel (generation must not know sweeps)."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

import generation.admin  # noqa: F401 - registers the LanguageModel admin extended below
from evalsite.admin_helpers import admin_action_register, form_action, run_action
from generation.admin.base import start_each
from generation.models import FineTuneRun, InstructionDataset, LanguageModel, PromptSet
from judging.models import JudgePrompt

from .grid import parse_values
from .models import Sweep
from .services import sweep_cancel, sweep_create
from .tables import sweep_cells, sweep_counts


@admin.register(Sweep)
class SweepAdmin(admin.ModelAdmin):
    list_display = ["name", "base_model", "judge", "mode", "status", "cells", "created_at"]
    list_filter = ["status", "mode"]
    search_fields = ["name", "base_model__name"]
    readonly_fields = [
        "name",
        "page",
        "base_model",
        "prompt_set",
        "judge",
        "mode",
        "judge_prompt",
        "status",
        "error",
        "grid_table",
        "chart",
        "grid",
        "params",
        "generation_params",
        "judge_params",
        "human_study",
        "study",
        "base_run",
        "seed",
        "created_by",
        "created_at",
        "finished_at",
    ]
    fields = readonly_fields
    actions = ["cancel_sweeps"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("base_model", "judge")

    def has_add_permission(self, request) -> bool:
        return False  # sweeps come from the language-model action, the API or `manage.py sweep`

    @admin.display(description="cells")
    def cells(self, obj: Sweep) -> str:
        counts = sweep_counts(sweep_cells(obj))
        return ", ".join(f"{state} {n}" for state, n in counts.items() if n)

    @admin.display(description="page")
    def page(self, obj: Sweep) -> SafeString:
        return format_html('<a href="{}">sweep page</a>', reverse("sweep-detail", args=[obj.pk]))

    @admin.display(description="grid (best cell marked)")
    def grid_table(self, obj: Sweep) -> SafeString:
        return SafeString(render_to_string("sweeps/_grid.html", {"cells": sweep_cells(obj)}))

    @admin.display(description="chart")
    def chart(self, obj: Sweep) -> SafeString:
        return format_html(
            '<img src="{}" alt="score against rows" style="max-width: 100%">',
            reverse("sweep-chart", args=[obj.pk, "png"]),
        )

    cancel_sweeps = run_action(
        lambda run, user: sweep_cancel(sweep=run, user=user),
        "Sweep {} cancelled.",
        description="Cancel (stop every run of the sweep)",
    )


# --- language models: "Sweep…" -----------------------------------------------------------------


class ValuesField(forms.CharField):
    """Comma-separated values of one grid axis."""

    def __init__(self, *, axis: str, kind: type, allow_all: bool = False, **kwargs):
        self.axis, self.kind, self.allow_all = axis, kind, allow_all
        super().__init__(**kwargs)

    def clean(self, value):
        text = super().clean(value)
        try:
            return parse_values(text, axis=self.axis, kind=self.kind, allow_all=self.allow_all)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


class SweepForm(forms.Form):
    name = forms.CharField(
        max_length=150, help_text="One sweep per selected model (named after it when several)"
    )
    datasets = forms.ModelMultipleChoiceField(
        queryset=InstructionDataset.objects.order_by("name"),
        help_text="Each data set is an axis value, unless they are mixed",
    )
    mix = forms.BooleanField(
        required=False, help_text="Train on the chosen data sets together (one mix)"
    )
    rows = ValuesField(
        axis="rows",
        kind=int,
        allow_all=True,
        initial="all",
        help_text="Per data set, e.g. 100,400,all",
    )
    learning_rates = ValuesField(axis="learning rates", kind=float, initial="1e-4,3e-4")
    epochs = ValuesField(axis="epochs", kind=float, initial="1")
    methods = forms.MultipleChoiceField(
        choices=[(FineTuneRun.Method.LORA, "LoRA"), (FineTuneRun.Method.FULL, "full")],
        initial=[FineTuneRun.Method.LORA],
        widget=forms.CheckboxSelectMultiple,
    )
    max_steps = forms.IntegerField(
        min_value=0, required=False, help_text="Blank: as many as the epochs take"
    )
    prompt_set = forms.ModelChoiceField(queryset=PromptSet.objects.order_by("name"))
    max_new_tokens = forms.IntegerField(
        min_value=1,
        max_value=8192,
        required=False,
        help_text="Answers' length (blank: each model's default)",
    )
    judge = forms.ModelChoiceField(queryset=LanguageModel.objects.order_by("name"))
    mode = forms.ChoiceField(choices=Sweep.Mode.choices, initial=Sweep.Mode.PAIRWISE)
    judge_prompt = forms.ModelChoiceField(
        queryset=JudgePrompt.objects.order_by("name", "-version"),
        required=False,
        help_text="Blank: the latest ja_pairwise (ja_grading when grading)",
    )
    human_study = forms.BooleanField(
        required=False, help_text="At the end, a draft study of the base and every cell's model"
    )
    seed = forms.IntegerField(initial=0)

    def sweep_arguments(self) -> dict:
        data = self.cleaned_data
        datasets = list(data["datasets"])
        return {
            "mixes": [datasets] if data["mix"] else [[d] for d in datasets],
            "rows": data["rows"],
            "learning_rates": data["learning_rates"],
            "epochs": data["epochs"],
            "methods": data["methods"],
            "params": {"max_steps": data["max_steps"]} if data["max_steps"] else {},
            "prompt_set": data["prompt_set"],
            "generation_params": (
                {"max_new_tokens": data["max_new_tokens"]} if data["max_new_tokens"] else {}
            ),
            "judge": data["judge"],
            "mode": data["mode"],
            "judge_prompt": data["judge_prompt"],
            "human_study": data["human_study"],
            "seed": data["seed"],
        }


@admin_action_register(
    LanguageModel, permissions=["sweeps.add_sweep", "generation.run_languagemodel"]
)
@form_action(SweepForm, "Start a fine-tune sweep", description="Sweep…")
def start_sweep(modeladmin, request, queryset, form):
    several = queryset.count() > 1
    name = form.cleaned_data["name"]
    return start_each(
        modeladmin,
        request,
        queryset,
        lambda model: sweep_create(
            name=f"{name} {model.name}" if several else name,
            base_model=model,
            user=request.user,
            **form.sweep_arguments(),
        ),
        lambda model, sweep: (
            f"Started sweep {sweep.name!r}: {sweep.cells.count()} fine-tune runs of "
            f"{model.name}, then answers on {sweep.prompt_set.name} and judge "
            f"{sweep.judge.name}."
        ),
        "admin:sweeps_sweep_changelist",
    )
