"""Rewrite prompts: a version a run used is kept; saving a changed template makes the next."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages

from evalsite.errors import ServiceError

from ..models import EvolutionPrompt
from ..prompts import (
    evolution_presets_install,
    evolution_prompt_create,
    evolution_prompt_in_use,
    evolution_prompt_update,
)

NEW_VERSION = (
    "A run used {old}, so it is kept as it was; your template was saved as {new}. "
    "Runs created from now on use {new}."
)


# --- rewrite prompts ---------------------------------------------------------------------------


class EvolutionPromptForm(forms.ModelForm):
    class Meta:
        model = EvolutionPrompt
        fields = ["operation", "template", "description", "active"]

    def clean_template(self):
        from ..engine.operations import problems

        template = self.cleaned_data["template"]
        problem = problems(template)
        if problem:
            raise forms.ValidationError(problem)
        return template


@admin.register(EvolutionPrompt)
class EvolutionPromptAdmin(admin.ModelAdmin):
    form = EvolutionPromptForm
    list_display = ["operation", "version", "active", "description", "used_by_items", "created_at"]
    list_filter = ["operation", "active"]

    def get_queryset(self, request):
        evolution_presets_install()  # the shipped prompts, after a flush too
        return super().get_queryset(request)

    def get_readonly_fields(self, request, obj=None):
        return ["operation", "version"] if obj else ["version"]

    @admin.display(description="items made with it")
    def used_by_items(self, obj: EvolutionPrompt) -> int:
        return obj.items.count()

    def has_delete_permission(self, request, obj=None):
        if obj is not None and evolution_prompt_in_use(obj):
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        try:
            if not change:
                saved = evolution_prompt_create(
                    operation=data["operation"],
                    template=data["template"],
                    description=data["description"],
                    active=data["active"],
                    user=request.user,
                )
            else:
                original = EvolutionPrompt.objects.get(pk=obj.pk)
                changes = {f: data[f] for f in ("template", "description", "active")}
                saved = evolution_prompt_update(prompt=original, changes=changes, user=request.user)
        except ServiceError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        if change and saved.pk != obj.pk:
            self.message_user(request, NEW_VERSION.format(old=obj, new=saved), messages.WARNING)
        obj.pk, obj.version = saved.pk, saved.version
