"""Registered language models and what starts from them: generating answers, fine-tuning and
merging a LoRA adapter."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.http import HttpResponseRedirect
from django.urls import reverse

from ..errors import ServiceError
from ..models import LanguageModel
from ..registry import (
    LANGUAGE_MODEL_FIELDS,
    WORKER_LOADED,
    language_model_changes_check,
    language_model_update,
)
from ..runs import generation_run_create
from ..training.finetune import finetune_run_create
from ..training.merge import language_model_merge_request
from .forms import FineTuneForm, GenerateForm, MergeForm, SafeJSONField
from .shared import apply_each, form_action


class LanguageModelForm(forms.ModelForm):
    """Checks a change the way the API does (registry.language_model_changes_check)."""

    user = None  # set per request by the admin

    class Meta:
        model = LanguageModel
        fields = LANGUAGE_MODEL_FIELDS
        field_classes = {"generation_defaults": SafeJSONField}

    def clean(self):
        data = super().clean()
        changes = {f: data[f] for f in self.changed_data if f in data}
        try:
            # self.instance still holds the stored values here (the form copies its data over
            # them only after clean()).
            self.checked = language_model_changes_check(
                model=self.instance, changes=changes, user=self.user
            )
        except ServiceError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


@admin.register(LanguageModel)
class LanguageModelAdmin(admin.ModelAdmin):
    form = LanguageModelForm
    list_display = ["name", "name_or_path", "prompt_format", "base_model", "trust_remote_code"]
    list_filter = ["prompt_format"]
    search_fields = ["name", "name_or_path", "maker"]
    actions = ["generate_answers", "fine_tune", "merge_adapter"]

    def get_readonly_fields(self, request, obj=None):
        # Remote code runs inside the worker: only a superuser may allow it, or change what a
        # model that has it loads.
        if request.user.is_superuser:
            return []
        if obj is not None and obj.trust_remote_code:
            return ["trust_remote_code", *WORKER_LOADED]
        return ["trust_remote_code"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.user = request.user
        return form

    def save_model(self, request, obj, form, change):
        if not change:
            for field, value in form.checked.items():
                setattr(obj, field, value)
            obj.save()
            return
        language_model_update(model=obj, changes=form.checked, user=request.user)

    def has_run_permission(self, request) -> bool:
        """Admin actions that put work on the GPU queue need ``generation.run_languagemodel``."""
        return request.user.has_perm("generation.run_languagemodel")

    def _queue_each(self, request, queryset, create, kind: str, changelist: str):
        """Queue a run of ``kind`` for each model with ``create(model)``, then list the runs."""
        apply_each(
            self,
            request,
            queryset,
            create,
            lambda model, run: f"Queued {kind} {run.pk} for {model.name}.",
            lambda model, exc: f"{model.name}: {exc}",
        )
        return HttpResponseRedirect(reverse(changelist))

    @form_action(
        GenerateForm,
        "Generate answers",
        description="Generate answers for a prompt set…",
        permissions=["run"],
    )
    def generate_answers(self, request, queryset, form):
        data = form.cleaned_data
        return self._queue_each(
            request,
            queryset,
            lambda model: generation_run_create(
                model=model,
                prompt_set=data["prompt_set"],
                params=data["params"],
                seed=data["seed"],
                batch_size=data["batch_size"],
                user=request.user,
            ),
            "run",
            "admin:generation_generationrun_changelist",
        )

    @form_action(
        FineTuneForm, "Fine-tune", description="Fine-tune on a data set…", permissions=["run"]
    )
    def fine_tune(self, request, queryset, form):
        # A name for the new model only makes sense for one base model.
        model_name = form.cleaned_data["model_name"] if len(queryset) == 1 else ""
        return self._queue_each(
            request,
            queryset,
            lambda model: finetune_run_create(
                base_model=model,
                datasets=form.cleaned_data["mix"],
                method=form.cleaned_data["method"],
                params=form.params(),
                model_name=model_name,
                user=request.user,
            ),
            "fine-tune run",
            "admin:generation_finetunerun_changelist",
        )

    @form_action(
        MergeForm,
        "Merge the adapter",
        description="Merge LoRA adapter into a standalone model…",
        permissions=["run"],
    )
    def merge_adapter(self, request, queryset, form):
        name = form.cleaned_data["name"] if len(queryset) == 1 else ""
        apply_each(
            self,
            request,
            queryset,
            lambda model: language_model_merge_request(model=model, name=name, user=request.user),
            lambda model, merged: (
                f"Merging {model.name} on the gpu queue; it appears here as {merged}."
            ),
        )
        return HttpResponseRedirect(reverse("admin:generation_languagemodel_changelist"))
