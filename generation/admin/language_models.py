"""Registered language models and what starts from them: generating answers, fine-tuning and
merging a LoRA adapter."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from evalsite.admin_helpers import ExtensibleAdmin, apply_each, form_action
from evalsite.errors import ServiceError

from ..aliases import suggested_maker_aliases
from ..lineage import lineage_text, model_lineage
from ..models import LanguageModel
from ..registry import (
    API_KEY_GUARDED,
    LANGUAGE_MODEL_FIELDS,
    REMOTE_CODE_GUARDED,
    language_model_changes_check,
    language_model_register,
    language_model_update,
)
from ..runs import generation_run_create
from ..templates import model_template_check, template_from_model
from ..training.finetune import finetune_run_create
from ..training.merge import language_model_merge_request
from .base import start_each
from .finetune import FineTuneActionForm
from .forms import GenerateForm, MergeForm, SafeJSONField


class AliasesField(forms.CharField):
    """A list of names edited as text, one a line."""

    widget = forms.Textarea(attrs={"rows": 3})

    def __init__(self, *, encoder=None, decoder=None, **kwargs):
        # A model JSONField hands its encoder and decoder to the form field it makes.
        super().__init__(**kwargs)

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        return [line.strip() for line in (value or "").splitlines() if line.strip()]


class HttpsURLField(forms.URLField):
    """A URL typed without a scheme is read as https (Django 6's default, chosen now)."""

    def __init__(self, **kwargs):
        super().__init__(assume_scheme="https", **kwargs)


class LanguageModelForm(forms.ModelForm):
    """Checks a change the way the API does (registry.language_model_changes_check)."""

    user = None  # set per request by the admin

    # Only a served model uses it; a weights model's form may leave it blank (the default).
    endpoint_concurrency = forms.IntegerField(
        min_value=1,
        max_value=32767,
        required=False,
        help_text=LanguageModel._meta.get_field("endpoint_concurrency").help_text,
    )

    class Meta:
        model = LanguageModel
        fields = LANGUAGE_MODEL_FIELDS
        field_classes = {
            "generation_defaults": SafeJSONField,
            "endpoint_url": HttpsURLField,
            "aliases": AliasesField,
            "maker_aliases": AliasesField,
        }
        help_texts = {
            "aliases": "Other names of the model, one a line (kana, katakana, a phrase it "
            "introduces itself with); flagged in answers like its name",
            "maker_aliases": "Other names of the maker, one a line (りんな, サイバーエージェント…)",
        }

    def clean_endpoint_concurrency(self):
        value = self.cleaned_data.get("endpoint_concurrency")
        if value is None:
            return self.instance.endpoint_concurrency
        return value

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


# How the change page groups LANGUAGE_MODEL_FIELDS; a field no group names shows under "Other".
FIELD_GROUPS = [
    (None, ["name", "display_label", "prompt_format", "prompt_template", "generation_defaults"]),
    (
        "Weights (loaded by a GPU worker)",
        ["name_or_path", "revision", "base_model", "adapter_path", "trust_remote_code"],
    ),
    (
        "Served model (an OpenAI-compatible endpoint instead of weights)",
        [
            "endpoint_url",
            "endpoint_model",
            "api_key_env",
            "endpoint_concurrency",
            "endpoint_requests_per_minute",
        ],
    ),
    (
        "Identity (flagged in answers before annotators see them)",
        ["maker", "maker_aliases", "maker_alias_suggestions", "aliases"],
    ),
]


ONE_MODEL = "Choose one model: each own chat template becomes a template of its own."
ADOPTED = "Created {template} from {model}'s own chat template{used}."
USED = "; the model uses it from now on"


class AdoptTemplateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Name of the new prompt template")
    use = forms.BooleanField(
        required=False, initial=True, help_text="The model names the new template from now on"
    )


def render_template_check(check: dict) -> SafeString:
    """The check as staff read it: warnings, the diff, the text and tokens generation sends."""
    preview = check["preview"]
    parts = [
        format_html("<p>Uses <b>{} v{}</b>.</p>", check["template"], check["version"]),
        format_html_join("", '<p class="errornote">{}</p>', ((w,) for w in check["warnings"])),
    ]
    if check["own_chat_template"]:
        parts.append(
            format_html(
                "<p>Its own chat template ({}), against the template on a sample conversation:"
                "</p><pre>{}</pre>",
                check["own_chat_template_file"] or "its tokenizer",
                check["diff"] or "(the same text)",
            )
        )
    else:
        parts.append(format_html("<p>{}</p>", "It has no chat template of its own."))
    if preview is None:
        parts.append(format_html('<p class="errornote">{}</p>', check["preview_error"]))
    else:
        parts.append(
            format_html(
                "<p>What generation sends ({} tokens; special tokens: {}; the tokenizer would "
                "add by itself: {}):</p><pre>{}</pre>",
                len(preview["token_ids"]),
                ", ".join(preview["special_tokens"]) or "none",
                ", ".join(preview["tokenizer_would_add"]) or "nothing",
                preview["decoded"],
            )
        )
    return format_html_join("", "{}", ((p,) for p in parts))


@admin.register(LanguageModel)
class LanguageModelAdmin(ExtensibleAdmin, admin.ModelAdmin):
    form = LanguageModelForm
    list_display = [
        "name",
        "display_label",
        "weights_or_endpoint",
        "prompt_format",
        "maker",
        "made_from",
    ]
    list_filter = ["prompt_format"]
    search_fields = ["name", "display_label", "name_or_path", "endpoint_model", "maker"]
    actions = ["generate_answers", "fine_tune", "merge_adapter", "adopt_own_template"]

    def get_fieldsets(self, request, obj=None):
        named = {f for _, fields in FIELD_GROUPS for f in fields}
        other = [f for f in LANGUAGE_MODEL_FIELDS if f not in named]
        groups = [(title, {"fields": fields}) for title, fields in FIELD_GROUPS]
        groups += [("Other", {"fields": other})] if other else []
        if obj is None:
            return groups
        groups += [("Lineage", {"fields": ["lineage"]})]
        if not obj.is_endpoint and obj.name_or_path:
            groups += [("Prompt template check", {"fields": ["template_check"]})]
        return groups

    @admin.display(description="template check")
    def template_check(self, obj: LanguageModel) -> SafeString | str:
        """Special-token warnings, the diff from the model's own chat template, and exactly
        what generation sends (the model's tokenizer, read on this machine)."""
        try:
            check = model_template_check(model=obj)
        except ServiceError as exc:
            return str(exc)
        return render_template_check(check)

    @admin.display(description="made from")
    def made_from(self, obj: LanguageModel) -> str:
        lineage = model_lineage(obj)
        if not lineage["generations"]:
            return "-"
        prefs = lineage["preferences"]
        votes = f", votes of {prefs['study_name'] or prefs['name']}" if prefs else ""
        return f"{lineage['method']} of {lineage['parent']}{votes}"

    @admin.display(description="lineage")
    def lineage(self, obj: LanguageModel) -> SafeString | str:
        """Each generation from the base model: method, run, data sets, preference pairs and
        the study whose votes made them."""
        lines = lineage_text(model_lineage(obj)).splitlines()
        if not lines:
            return "a base model (not fine-tuned here)"
        return format_html_join("", "<div>{}</div>", ((line,) for line in lines))

    @admin.display(description="weights or endpoint")
    def weights_or_endpoint(self, obj: LanguageModel) -> str:
        # The endpoint's key is never stored; only the name of the variable that holds it.
        if obj.is_endpoint:
            return f"{obj.endpoint_model} @ {obj.endpoint_url}"
        if obj.adapter_path:
            return f"{obj.adapter_path} (on {obj.base_model})"
        return obj.name_or_path or "(imported answers only)"

    @admin.display(description="suggested maker aliases")
    def maker_alias_suggestions(self, obj: LanguageModel | None) -> str:
        """Known other names of the model's maker that its maker aliases lack."""
        if obj is None:
            return "-"
        missing = [a for a in suggested_maker_aliases(obj.maker) if a not in obj.maker_aliases]
        return ", ".join(missing) or "-"

    def get_readonly_fields(self, request, obj=None):
        # Remote code runs inside the worker: only a superuser may allow it, or change what a
        # model that has it loads or runs (registry.REMOTE_CODE_GUARDED, its template too).
        # Likewise where an API key is sent: which variable, and where a model that sends one
        # points (registry.API_KEY_GUARDED).
        shown = ["maker_alias_suggestions", "lineage", "template_check"]
        if request.user.is_superuser:
            return shown
        guarded = ["api_key_env"]
        if obj is not None and obj.api_key_env:
            guarded = list(API_KEY_GUARDED)
        if obj is not None and obj.trust_remote_code:
            return [*shown, *guarded, "trust_remote_code", *REMOTE_CODE_GUARDED]
        return [*shown, *guarded, "trust_remote_code"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.user = request.user
        return form

    def save_model(self, request, obj, form, change):
        if not change:
            # Through the registry's service, as the API and the command register a model
            # (its checks again, and the audit entry when trust_remote_code or an endpoint is
            # set); the admin then goes on with the row that service made.
            obj.pk = language_model_register(**form.checked, user=request.user).pk
            obj.refresh_from_db()
            return
        language_model_update(model=obj, changes=form.checked, user=request.user)

    def has_run_permission(self, request) -> bool:
        """Admin actions that put work on the GPU queue need ``generation.run_languagemodel``."""
        return request.user.has_perm("generation.run_languagemodel")

    def _queue_each(self, request, queryset, create, kind: str, changelist: str):
        """Queue a run of ``kind`` for each model with ``create(model)``, then list the runs."""
        return start_each(
            self,
            request,
            queryset,
            create,
            lambda model, run: f"Queued {kind} {run.pk} for {model.name}.",
            changelist,
        )

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
        FineTuneActionForm,
        "Fine-tune",
        description="Fine-tune on a data set or preference pairs…",
        permissions=["run"],
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
                preferences=form.cleaned_data.get("preferences"),
                user=request.user,
            ),
            "fine-tune run",
            "admin:generation_finetunerun_changelist",
        )

    @form_action(
        AdoptTemplateForm,
        "Create a template from the model's own chat template",
        description="Create a template from its own chat template…",
        permissions=["adopt"],
    )
    def adopt_own_template(self, request, queryset, form):
        data = form.cleaned_data
        if len(queryset) != 1:
            self.message_user(request, ONE_MODEL, level=messages.ERROR)
            return None
        apply_each(
            self,
            request,
            queryset,
            lambda model: template_from_model(
                model=model, name=data["name"], use=data["use"], user=request.user
            ),
            lambda model, row: ADOPTED.format(
                template=row, model=model.name, used=USED if data["use"] else ""
            ),
        )
        return None

    def has_adopt_permission(self, request) -> bool:
        return request.user.has_perm("generation.add_prompttemplate") and request.user.has_perm(
            "generation.change_languagemodel"
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
