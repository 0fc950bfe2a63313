from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils.html import format_html

from . import services
from .importers import ImportFormatError
from .models import Answer, GenerationRun, LanguageModel, PromptSet, Question


class QuestionInline(admin.TabularInline):
    model = Question
    extra = 0
    fields = ["position", "category", "external_id", "text"]

    def has_change_permission(self, request, obj=None):
        # A set with answers is read-only: edit by importing a new set.
        return obj is None or not obj.has_answers

    has_add_permission = has_change_permission
    has_delete_permission = has_change_permission


class PromptSetImportForm(forms.Form):
    name = forms.CharField(max_length=200)
    file = forms.FileField(help_text="CSV with a 'question' column, or JSONL (see README)")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    replace = forms.BooleanField(required=False, help_text="rebuild a set of that name")


@admin.register(PromptSet)
class PromptSetAdmin(admin.ModelAdmin):
    list_display = ["name", "question_count", "source", "created_at"]
    search_fields = ["name"]
    inlines = [QuestionInline]
    change_list_template = "admin/generation/promptset/change_list.html"

    @admin.display(description="questions")
    def question_count(self, obj: PromptSet) -> int:
        return obj.questions.count()

    def has_delete_permission(self, request, obj=None):
        return obj is None or not obj.has_answers

    def get_urls(self):
        extra = [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="generation_promptset_import",
            )
        ]
        return extra + super().get_urls()

    def import_view(self, request: HttpRequest):
        if not self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        form = PromptSetImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                prompt_set = services.prompt_set_import(
                    name=form.cleaned_data["name"],
                    data=upload.read(),
                    filename=upload.name,
                    replace=form.cleaned_data["replace"],
                    description=form.cleaned_data["description"],
                )
            except (ImportFormatError, services.ServiceError) as exc:
                form.add_error("file", str(exc))
            else:
                self.message_user(
                    request,
                    f"Imported {prompt_set.questions.count()} questions into {prompt_set.name}.",
                )
                return HttpResponseRedirect(
                    reverse("admin:generation_promptset_change", args=[prompt_set.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": "Import a prompt set",
            "form": form,
            "opts": self.model._meta,
        }
        return render(request, "admin/generation/import_form.html", context)


@admin.register(Question)
class QuestionAdmin(admin.ModelAdmin):
    list_display = ["prompt_set", "position", "category", "short_text"]
    list_filter = ["prompt_set", "category"]
    search_fields = ["text", "external_id"]

    @admin.display(description="text")
    def short_text(self, obj: Question) -> str:
        return obj.text[:80]

    def has_change_permission(self, request, obj=None):
        return obj is None or not obj.prompt_set.has_answers

    has_delete_permission = has_change_permission


class GenerateForm(forms.Form):
    prompt_set = forms.ModelChoiceField(queryset=PromptSet.objects.all())
    seed = forms.IntegerField(initial=0)
    batch_size = forms.IntegerField(initial=8, min_value=1, max_value=512)
    params = forms.CharField(
        required=False,
        initial="{}",
        help_text='overrides of the model defaults as JSON, e.g. {"max_new_tokens": 256}',
    )

    def clean_params(self) -> dict:
        raw = self.cleaned_data["params"] or "{}"
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("must be a JSON object")
        return value


@admin.register(LanguageModel)
class LanguageModelAdmin(admin.ModelAdmin):
    list_display = ["name", "name_or_path", "prompt_format", "base_model", "trust_remote_code"]
    list_filter = ["prompt_format"]
    search_fields = ["name", "name_or_path", "maker"]
    actions = ["generate_answers"]

    def get_readonly_fields(self, request, obj=None):
        # Remote code runs inside the worker: only a superuser may allow it.
        return [] if request.user.is_superuser else ["trust_remote_code"]

    @admin.action(description="Generate answers for a prompt set…")
    def generate_answers(self, request, queryset):
        form = GenerateForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            for model in queryset:
                try:
                    run = services.generation_run_create(
                        model=model,
                        prompt_set=form.cleaned_data["prompt_set"],
                        params=form.cleaned_data["params"],
                        seed=form.cleaned_data["seed"],
                        batch_size=form.cleaned_data["batch_size"],
                        user=request.user,
                    )
                except services.ServiceError as exc:
                    self.message_user(request, f"{model.name}: {exc}", messages.ERROR)
                else:
                    self.message_user(request, f"Queued run {run.pk} for {model.name}.")
            return HttpResponseRedirect(reverse("admin:generation_generationrun_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Generate answers",
            "form": form,
            "queryset": queryset,
            "action": "generate_answers",
            "opts": self.model._meta,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return render(request, "admin/generation/action_form.html", context)


@admin.register(GenerationRun)
class GenerationRunAdmin(admin.ModelAdmin):
    list_display = ["id", "model", "prompt_set", "status", "progress", "imported", "created_at"]
    list_filter = ["status", "imported", "model", "prompt_set"]
    readonly_fields = [
        "model",
        "prompt_set",
        "params",
        "seed",
        "batch_size",
        "imported",
        "status",
        "done",
        "total",
        "error",
        "worker",
        "attempts",
        "created_at",
        "started_at",
        "finished_at",
        "heartbeat_at",
        "created_by",
    ]
    actions = ["retry_runs", "cancel_runs"]

    def has_add_permission(self, request):
        return False  # runs are made by the "generate answers" action, the API or the command

    @admin.display(description="progress")
    def progress(self, obj: GenerationRun) -> str:
        percent = round(100 * obj.done / obj.total) if obj.total else 0
        return format_html(
            '<progress max="{}" value="{}"></progress> {}/{} ({}%)',
            obj.total,
            obj.done,
            obj.done,
            obj.total,
            percent,
        )

    @admin.action(description="Retry (generate missing answers)")
    def retry_runs(self, request, queryset):
        self._each(request, queryset, services.generation_run_retry, "requeued")

    @admin.action(description="Cancel")
    def cancel_runs(self, request, queryset):
        self._each(request, queryset, services.generation_run_cancel, "cancelled")

    def _each(self, request, queryset, service, verb: str) -> None:
        for run in queryset:
            try:
                service(run=run)
            except services.ServiceError as exc:
                self.message_user(request, str(exc), messages.WARNING)
            else:
                self.message_user(request, f"Run {run.pk} {verb}.")


@admin.register(Answer)
class AnswerAdmin(admin.ModelAdmin):
    list_display = ["run", "question", "short_text", "new_tokens"]
    list_filter = ["run__model", "run__prompt_set"]
    search_fields = ["text"]
    readonly_fields = ["run", "question", "text", "new_tokens", "created_at"]

    @admin.display(description="answer")
    def short_text(self, obj: Answer) -> str:
        return obj.text[:80]

    def has_add_permission(self, request):
        return False
