"""Fine-tune runs: create (SFT on data sets, or DPO on preference pairs), follow (with the loss
log), cancel and resume (the spine's RunViewSet: resume is its retry, which continues from the
last checkpoint); preference data sets to read and download."""

from __future__ import annotations

from django.http import HttpResponse
from django.utils.http import content_disposition_header
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError

from evalsite.exports import file_name
from evalsite.query import whole_number
from evalsite.runs.api import RUN_STATE_FIELDS, RunViewSet
from evalsite.trackers import TRACKERS

from ..engine.params import FINETUNE, Param
from ..models import (
    FineTuneLog,
    FineTuneRun,
    InstructionDataset,
    LanguageModel,
    PreferenceDataset,
)
from ..params import FINETUNE_FIELDS
from ..training.finetune import finetune_run_create


class FineTuneSourceSerializer(serializers.Serializer):
    dataset = serializers.PrimaryKeyRelatedField(queryset=InstructionDataset.objects.all())
    rows = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1)


class FineTuneRunInputSerializer(serializers.Serializer):
    """A new run: unset hyper-parameters take their defaults (see the run's fields)."""

    base_model = serializers.PrimaryKeyRelatedField(queryset=LanguageModel.objects.all())
    datasets = FineTuneSourceSerializer(many=True, required=False, default=list)
    method = serializers.ChoiceField(choices=FineTuneRun.Method.choices, default="lora")
    model_name = serializers.CharField(required=False, allow_blank=True, default="")
    preferences = serializers.PrimaryKeyRelatedField(
        queryset=PreferenceDataset.objects.all(),
        required=False,
        allow_null=True,
        default=None,
        help_text="method dpo: the preference data set to train on (instead of data sets)",
    )
    report_to = serializers.ChoiceField(
        choices=TRACKERS,
        required=False,
        allow_blank=True,
        default="",
        help_text="experiment tracker the loss also goes to (blank: the site's setting)",
    )

    def validate(self, data):
        if data.get("method") != FineTuneRun.Method.DPO and not data.get("datasets"):
            raise ValidationError({"datasets": ["This list may not be empty."]})
        return data

    def get_fields(self):
        # One optional field per hyper-parameter; the service checks the values.
        return {**super().get_fields(), **{p.name: _hyperparameter_field(p) for p in FINETUNE}}


def _hyperparameter_field(param: Param) -> serializers.Field:
    if param.kind is list:
        return serializers.ListField(child=serializers.CharField(), required=False)
    kinds = {bool: serializers.BooleanField, int: serializers.IntegerField}
    return kinds.get(param.kind, serializers.FloatField)(required=False)


class FineTuneRunSerializer(serializers.ModelSerializer):
    datasets = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()

    class Meta:
        model = FineTuneRun
        fields = [
            "id",
            "base_model",
            "template",
            "datasets",
            "preferences",
            "method",
            "model_name",
            *FINETUNE_FIELDS,
            "report_to",
            "status",
            "step",
            "total_steps",
            "epoch",
            "progress",
            "train_examples",
            "eval_examples",
            "skipped_examples",
            "train_tokens",
            "output_path",
            "checkpoint",
            "resumed_from_step",
            "metrics",
            "result_model",
            *RUN_STATE_FIELDS,
        ]
        read_only_fields = fields

    def get_datasets(self, run: FineTuneRun) -> list[dict]:
        return [
            {"dataset": s.dataset_id, "name": s.dataset.name, "rows": s.rows}
            for s in run.sources.select_related("dataset")
        ]

    def get_progress(self, run: FineTuneRun) -> float:
        return round(run.step / run.total_steps, 4) if run.total_steps else 0.0


class FineTuneRunDetailSerializer(FineTuneRunSerializer):
    """A run with its loss log (``?log_after=STEP`` returns only newer entries)."""

    loss_log = serializers.SerializerMethodField()
    eval_log = serializers.SerializerMethodField()

    class Meta(FineTuneRunSerializer.Meta):
        fields = [*FineTuneRunSerializer.Meta.fields, "loss_log", "eval_log"]
        read_only_fields = fields

    def _entries(self, run: FineTuneRun, kind: str):
        after = self.context.get("log_after", -1)
        return run.log_entries.filter(kind=kind, step__gt=after).order_by("step")

    def get_loss_log(self, run: FineTuneRun) -> list[dict]:
        return [
            {"step": e.step, "loss": e.loss, "learning_rate": e.learning_rate, "epoch": e.epoch}
            for e in self._entries(run, FineTuneLog.Kind.TRAIN)
        ]

    def get_eval_log(self, run: FineTuneRun) -> list[dict]:
        return [
            {"step": e.step, "loss": e.loss, "epoch": e.epoch}
            for e in self._entries(run, FineTuneLog.Kind.EVAL)
        ]


class FineTuneRunViewSet(RunViewSet):
    action_permissions = {
        "create": ["generation.add_finetunerun", "generation.run_languagemodel"],
        "resume": ["generation.change_finetunerun", "generation.run_languagemodel"],
        "retry": ["generation.change_finetunerun", "generation.run_languagemodel"],
    }
    queryset = FineTuneRun.objects.select_related("base_model", "result_model")
    serializer_class = FineTuneRunSerializer
    input_serializer_class = FineTuneRunInputSerializer
    filterset_fields = ["base_model", "status", "method"]

    def get_serializer_class(self):
        return FineTuneRunDetailSerializer if self.action == "retrieve" else FineTuneRunSerializer

    def get_serializer_context(self):
        context = super().get_serializer_context()
        after = self.request.query_params.get("log_after", "")
        if after:
            try:
                context["log_after"] = whole_number(after, name="log_after", low=-1, high=2**31 - 1)
            except ValueError as exc:
                raise ValidationError({"log_after": str(exc)}) from None
        return context

    def create_run(self, data: dict, user) -> FineTuneRun:
        data = dict(data)  # what remains after the named fields are the hyper-parameters
        return finetune_run_create(
            base_model=data.pop("base_model"),
            datasets=[(s["dataset"], s["rows"]) for s in data.pop("datasets")],
            method=data.pop("method"),
            model_name=data.pop("model_name"),
            preferences=data.pop("preferences"),
            report_to=data.pop("report_to"),
            params=data,
            user=user,
        )

    @extend_schema(request=None, responses=FineTuneRunSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        """Queue a failed or cancelled run again; it continues from its last checkpoint (409 in
        another state). The same as ``retry``, under the name fine-tuning has always used."""
        return self.retry(request, pk)


class PreferenceDatasetSerializer(serializers.ModelSerializer):
    pairs = serializers.SerializerMethodField()

    class Meta:
        model = PreferenceDataset
        fields = [
            "id",
            "name",
            "description",
            "source",
            "source_study_id",
            "source_study_name",
            "rendered_for",
            "stats",
            "pairs",
            "created_at",
        ]
        read_only_fields = fields

    def get_pairs(self, dataset: PreferenceDataset) -> int:
        return dataset.pairs.count()


class PreferenceDatasetViewSet(viewsets.ReadOnlyModelViewSet):
    """Preference pairs for DPO (made with `manage.py export_preferences` or the study admin's
    action); ``/jsonl/`` returns them as the JSONL TRL reads."""

    queryset = PreferenceDataset.objects.all()
    serializer_class = PreferenceDatasetSerializer
    filterset_fields = ["name", "source_study_id"]

    @extend_schema(responses={(200, "application/jsonl"): str})
    @action(detail=True, methods=["get"])
    def jsonl(self, request, pk=None):
        from ..training.preferences import preferences_jsonl

        dataset = self.get_object()
        response = HttpResponse(preferences_jsonl(dataset), content_type="application/jsonl")
        name = file_name(f"{dataset.name}.jsonl")
        response["Content-Disposition"] = content_disposition_header(True, name)
        return response
