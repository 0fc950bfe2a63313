"""The study admin's "Export votes as preference pairs…" action (annotation/preferences.py).

Added to whatever Study admin is registered when the annotation app is ready (the admin
modules are all imported by then: django.contrib.admin comes first in INSTALLED_APPS), so it
sits beside the judge's action; AnnotationConfig.ready() calls ``install``. annotation/admin.py
is left as it is: this module is about preference tuning, not the study pages.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.http import HttpResponseRedirect
from django.urls import reverse

from evalsite.admin_helpers import apply_each, form_action
from generation.models import LanguageModel

from .models import Study
from .preferences import preferences_export


class PreferenceExportForm(forms.Form):
    model = forms.ModelChoiceField(
        queryset=LanguageModel.objects.filter(endpoint_url=""),
        required=False,
        help_text="the model to be tuned: prompts are rendered with its template "
        "(blank: the plain question)",
    )
    name = forms.CharField(
        max_length=200,
        required=False,
        help_text="name of the preference data set (blank: <study>-prefs-<time>)",
    )


@form_action(
    PreferenceExportForm,
    "Export votes as preference pairs",
    description="Export votes as preference pairs (DPO)…",
    permissions=["export_preferences"],
)
def export_preferences(modeladmin, request, queryset, form):
    data = form.cleaned_data
    name = data["name"] if len(queryset) == 1 else ""
    apply_each(
        modeladmin,
        request,
        queryset,
        lambda study: preferences_export(
            study=study, model=data["model"], name=name, user=request.user
        ),
        lambda study, dataset: (
            f"{study.name}: {dataset.stats['pairs']} preference pairs saved as {dataset.name} "
            f"(dropped: {dataset.stats.get('dropped') or 'none'})."
        ),
        lambda study, exc: f"{study.name}: {exc}",
    )
    return HttpResponseRedirect(reverse("admin:generation_preferencedataset_changelist"))


def install() -> None:
    """Register the Study admin again with the action added (once)."""
    if not admin.site.is_registered(Study):
        return
    base = type(admin.site.get_model_admin(Study))
    if "export_preferences" in (base.actions or []):
        return

    class StudyAdmin(base):
        actions = [*(base.actions or []), "export_preferences"]

        def has_export_preferences_permission(self, request) -> bool:
            return request.user.has_perm("generation.add_preferencedataset")

    StudyAdmin.export_preferences = export_preferences
    admin.site.unregister(Study)
    admin.site.register(Study, StudyAdmin)
