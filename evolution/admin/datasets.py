"""The "Evolve…" action on instruction data sets.

evolution builds on generation, never the reverse: the action is added here by extending
whatever admin generation registered for InstructionDataset (as judging/admin.py extends the
study admin).
"""

from __future__ import annotations

from django import forms

import generation.admin  # noqa: F401 - registers the InstructionDataset admin extended below
from evalsite.admin_helpers import admin_action_register, form_action
from generation.admin.base import start_each
from generation.models import InstructionDataset, LanguageModel

from ..runs import MOST_ROUNDS, evolution_run_create

# --- instruction data sets: "Evolve…" ----------------------------------------------------------


class EvolveForm(forms.Form):
    model = forms.ModelChoiceField(
        queryset=LanguageModel.objects.order_by("name"),
        help_text="The evolver: any registered model (weights run in a gpu worker)",
    )
    answer_model = forms.ModelChoiceField(
        queryset=LanguageModel.objects.order_by("name"),
        required=False,
        help_text="Answers the kept instructions (blank: the evolver)",
    )
    judge = forms.ModelChoiceField(
        queryset=LanguageModel.objects.order_by("name"),
        required=False,
        help_text="Asked whether an evolution adds information (blank: a cheap rule)",
    )
    rounds = forms.IntegerField(min_value=1, max_value=MOST_ROUNDS, initial=1)
    seed = forms.IntegerField(initial=0)
    name = forms.CharField(
        required=False, max_length=200, help_text="Data set to write (blank: <data set>-evol-<run>)"
    )


@admin_action_register(
    InstructionDataset, permissions=["evolution.add_evolutionrun", "generation.run_languagemodel"]
)
@form_action(EvolveForm, "Evol-Instruct", description="Evolve…")
def evolve(modeladmin, request, queryset, form):
    data = form.cleaned_data
    several = queryset.count() > 1
    return start_each(
        modeladmin,
        request,
        queryset,
        lambda dataset: evolution_run_create(
            source=dataset,
            model=data["model"],
            answer_model=data["answer_model"],
            judge=data["judge"],
            rounds=data["rounds"],
            seed=data["seed"],
            # One name cannot serve several data sets: each then takes the default.
            name="" if several else data["name"],
            user=request.user,
        ),
        lambda dataset, run: (
            f"Queued evolution run {run.pk}: {run.model.name} on {dataset.name}, "
            f"{run.rounds} round(s); writes {run.name}."
        ),
        "admin:evolution_evolutionrun_changelist",
    )
