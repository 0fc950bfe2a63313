"""Evolution runs: the per-operation report, cancel and retry, and "Train an evolver"."""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import admin
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from evalsite.errors import ServiceError
from evalsite.runs.admin import RunAdmin
from generation.admin.base import ExtraPages
from generation.importers import TOO_LARGE
from generation.models import LanguageModel

from ..engine.elimination import RULES
from ..engine.operations import OPERATIONS
from ..models import EvolutionRun
from ..summary import evolution_examples, evolution_totals
from ..teaching import evolver_train

# --- runs --------------------------------------------------------------------------------------


def _items_link(run: EvolutionRun, label, **filters) -> SafeString:
    url = reverse("admin:evolution_evolutionitem_changelist")
    query = urlencode({"run__id__exact": run.pk, **filters})
    return format_html('<a href="{}?{}">{}</a>', url, query, label)


class TrainEvolverForm(forms.Form):
    file = forms.FileField(help_text="JSONL pairs: instruction, evolved[, operation]")
    base_model = forms.ModelChoiceField(
        queryset=LanguageModel.objects.filter(endpoint_url="", adapter_path="").order_by("name"),
        help_text="A model with weights (not an adapter) to fine-tune with LoRA",
    )
    name = forms.CharField(max_length=200, help_text="Name of the evolver model to register")
    operation = forms.ChoiceField(
        choices=[("", "chosen per line with the seed"), *[(op, op) for op in OPERATIONS]],
        required=False,
        help_text="Operation of pairs that name none",
    )
    epochs = forms.FloatField(min_value=0.01, initial=3.0)
    learning_rate = forms.FloatField(min_value=1e-8, initial=2e-4)


@admin.register(EvolutionRun)
class EvolutionRunAdmin(ExtraPages, RunAdmin):
    list_display = [
        "id",
        "source",
        "model",
        "answer_model",
        "rounds",
        "status",
        "progress",
        "kept",
        "result",
        "created_at",
    ]
    list_filter = ["status", "model", "source"]
    list_select_related = ["source", "model", "answer_model", "result"]
    run_fields = [
        "source",
        "model",
        "answer_model",
        "judge",
        "rounds",
        "seed",
        "batch_size",
        "params",
        "answer_params",
        "rules",
        "prompts",
        "name",
    ]
    result_fields = ["result", "report"]
    retry_description = "Retry (make the missing items)"

    pages = (("train-evolver/", "train_evolver_view", "evolution_evolutionrun_train_evolver"),)

    def train_evolver_view(self, request):
        """Pairs file -> data set -> queued LoRA fine-tune (evolution/teaching.py)."""
        wanted = ["generation.add_finetunerun", "generation.run_languagemodel"]
        if not request.user.has_perms(wanted):
            return HttpResponseRedirect(reverse("admin:index"))
        form = TrainEvolverForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            upload = data["file"]
            if upload.size > settings.MAX_UPLOAD_BYTES:
                form.add_error(
                    "file",
                    f"{upload.name}: "
                    + TOO_LARGE.format(size=upload.size, limit=settings.MAX_UPLOAD_BYTES),
                )
                return self._train_page(request, form)
            try:
                dataset, run = evolver_train(
                    data=upload.read(),
                    filename=upload.name,
                    base_model=data["base_model"],
                    name=data["name"],
                    operation=data["operation"],
                    params={"epochs": data["epochs"], "learning_rate": data["learning_rate"]},
                    user=request.user,
                )
            except ServiceError as exc:
                form.add_error("file", str(exc))
            else:
                self.message_user(
                    request,
                    f"Queued fine-tune run {run.pk} on {dataset.name} "
                    f"({dataset.examples.count()} pairs); it registers {data['name']}.",
                )
                return HttpResponseRedirect(
                    reverse("admin:generation_finetunerun_change", args=[run.pk])
                )
        return self._train_page(request, form)

    def _train_page(self, request, form):
        context = {
            **self.admin_site.each_context(request),
            "title": "Train an evolver",
            "form": form,
            "opts": self.model._meta,
        }
        return render(request, "admin/evolution/evolutionrun/train_evolver.html", context)

    @admin.display(description="kept")
    def kept(self, obj: EvolutionRun) -> str:
        totals = evolution_totals(obj.counts or {})
        return f"{totals['kept']}/{totals['items']}"

    @admin.display(description="per operation: kept, dropped by rule (with examples)")
    def report(self, obj: EvolutionRun) -> SafeString:
        counts = obj.counts or {}
        rules = [r for r in RULES if any(r in e["dropped"] for e in counts.values())]
        head = format_html_join(
            "", "<th>{}</th>", [(_items_link(obj, r, drop_rule=r),) for r in rules]
        )
        rows = []
        for op in [o for o in OPERATIONS if o in counts]:
            entry = counts[op]
            cells = format_html_join(
                "",
                "<td>{}</td>",
                [
                    (
                        _items_link(obj, entry["dropped"][r], operation=op, drop_rule=r)
                        if r in entry["dropped"]
                        else "0",
                    )
                    for r in rules
                ],
            )
            rows.append(
                format_html(
                    "<tr><td>{}</td><td>{}</td><td>{}</td>{}</tr>",
                    op,
                    _items_link(obj, entry["items"], operation=op),
                    _items_link(obj, entry["kept"], operation=op, kept__exact=1),
                    cells,
                )
            )
        table = format_html(
            "<table><tr><th>operation</th><th>items</th><th>{}</th>{}</tr>{}</table>",
            _items_link(obj, "kept", kept__exact=1),
            head,
            format_html_join("", "{}", [(row,) for row in rows]),
        )
        examples = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            [
                (op, outcome, item.parent_text[:80], item.instruction[:120], item.drop_detail[:120])
                for (op, outcome), items in sorted(evolution_examples(obj).items())
                for item in items
            ],
        )
        return format_html(
            "{}<p>{}</p><h4>Examples</h4><table><tr><th>operation</th><th>outcome</th><th>parent"
            "</th><th>evolved</th><th>why</th></tr>{}</table>",
            table,
            _items_link(obj, "All items of this run"),
            examples,
        )
