"""The forms of the generation admin: file uploads and the input of its actions."""

from __future__ import annotations

import json
import re

from django import forms
from django.forms.fields import InvalidJSONInput

from evalsite import jsonguard

from ..models import FineTuneRun, InstructionDataset, LanguageModel, PromptSet
from ..params import FINETUNE_FIELDS, FULL_LEARNING_RATE


class SafeJSONField(forms.JSONField):
    """Django's JSON form field with nesting bounded and lone surrogates refused: a hostile
    value is a form error, not a RecursionError page or a row the database cannot store."""

    def to_python(self, value):
        try:
            if isinstance(value, str):
                jsonguard.check_depth(value)
            converted = super().to_python(value)
            jsonguard.check_text(converted)
        except jsonguard.UnsafeJSON as exc:
            raise forms.ValidationError(str(exc), code="invalid") from None
        return converted

    def bound_data(self, data, initial):
        # Redisplaying the form parses the posted text again.
        try:
            if isinstance(data, str):
                jsonguard.check_depth(data)
            value = super().bound_data(data, initial)
            jsonguard.check_text(value)
        except jsonguard.UnsafeJSON:
            return InvalidJSONInput(data)  # shown as typed
        return value


class PromptSetImportForm(forms.Form):
    name = forms.CharField(max_length=200)
    file = forms.FileField(help_text="CSV with a 'question' column, or JSONL (see README)")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    replace = forms.BooleanField(required=False, help_text="rebuild a set of that name")


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
            value = jsonguard.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not valid JSON ({exc.msg})") from None
        except jsonguard.UnsafeJSON as exc:
            raise forms.ValidationError(str(exc)) from None
        if not isinstance(value, dict):
            raise forms.ValidationError("must be a JSON object")
        return value


class InstructionDatasetImportForm(forms.Form):
    name = forms.CharField(max_length=200)
    file = forms.FileField(
        help_text="JSONL, JSON or CSV with instruction / input / output, or JSONL 'messages'"
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    drop_duplicates = forms.BooleanField(
        required=False, help_text="keep only the first of rows repeated exactly"
    )
    tokenizer_model = forms.ModelChoiceField(
        queryset=LanguageModel.objects.all(),
        required=False,
        help_text="count tokens as this model will be trained on the set (its tokenizer "
        "and prompt format)",
    )


class TokenStatsForm(forms.Form):
    model = forms.ModelChoiceField(queryset=LanguageModel.objects.all())


class AugmentForm(GenerateForm):
    prompt_set = None  # the data set's unique instructions are the questions
    model = forms.ModelChoiceField(queryset=LanguageModel.objects.all())
    name = forms.CharField(max_length=200, help_text="name of the new data set")

    field_order = ["model", "name", "seed", "batch_size", "params"]


class MergeForm(forms.Form):
    name = forms.CharField(
        max_length=200,
        required=False,
        help_text="name of the merged model (blank: <name>-merged)",
    )


class FineTuneForm(forms.ModelForm):
    """The run's settings; the data sets and the rows to sample from each form the mix."""

    datasets = forms.ModelMultipleChoiceField(queryset=InstructionDataset.objects.all())
    rows = forms.CharField(
        required=False,
        help_text="rows to sample from a data set, e.g. 'dolly-ja=1000, ichikara=500' "
        "(sampled with the seed); data sets not named here give every row",
    )
    learning_rate = forms.FloatField(
        required=False,
        min_value=0,
        help_text=f"blank: 2e-4 for LoRA, {FULL_LEARNING_RATE:g} for full fine-tuning",
    )

    class Meta:
        model = FineTuneRun
        fields = ["method", "model_name", *FINETUNE_FIELDS]
        field_classes = {"target_modules": SafeJSONField}

    ROWS_ITEM = re.compile(r"^\s*(?P<name>.+?)\s*=\s*(?P<rows>\d+)\s*$")

    def clean(self):
        data = super().clean()
        chosen = {d.name: d for d in data.get("datasets") or []}
        wanted: dict[str, int] = {}
        for item in filter(str.strip, re.split(r"[,\n]", data.get("rows") or "")):
            match = self.ROWS_ITEM.match(item)
            if match is None:
                self.add_error("rows", f"{item.strip()!r} is not 'data set name=rows'")
            elif match["name"] not in chosen:
                self.add_error("rows", f"{match['name']!r} is not one of the chosen data sets")
            else:
                wanted[match["name"]] = int(match["rows"])
        data["mix"] = [(dataset, wanted.get(name)) for name, dataset in chosen.items()]
        return data

    def params(self) -> dict:
        values = {key: self.cleaned_data.get(key) for key in FINETUNE_FIELDS}
        if values["learning_rate"] is None:
            del values["learning_rate"]  # the method's default
        values["target_modules"] = values.get("target_modules") or []
        return values
