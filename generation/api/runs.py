"""Generation runs: create, follow (with provenance), cancel, retry (the spine's RunViewSet) and
regenerate; import answers made elsewhere."""

from __future__ import annotations

from django.db.models import Count, Q
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from evalsite.api_helpers import import_action, import_upload
from evalsite.runs.api import RUN_STATE_FIELDS, RunViewSet, shards_field

from ..answers_import import answers_import
from ..models import GenerationRun, PromptSet
from ..regenerate import generation_run_regenerate, regeneration_report
from ..runs import generation_run_create
from .shared import TemplateRefSerializer, template_ref


class RegenerationSerializer(serializers.Serializer):
    original = serializers.IntegerField(help_text="The run this one repeats")
    compared = serializers.IntegerField(
        help_text="Answers (question, turn) this run made that the original holds too"
    )
    identical = serializers.IntegerField()
    different = serializers.IntegerField()
    missing = serializers.IntegerField(help_text="Answers of the original this run lacks (yet)")
    copied = serializers.IntegerField(help_text="Answers copied from the original, not made again")


class GenerationRunSerializer(serializers.ModelSerializer):
    shards = shards_field()
    template = serializers.SerializerMethodField()
    regeneration = serializers.SerializerMethodField()
    truncated_answers = serializers.SerializerMethodField()

    class Meta:
        model = GenerationRun
        fields = [
            "id",
            "model",
            "prompt_set",
            "params",
            "seed",
            "batch_size",
            "engine_requested",
            "shards",
            "imported",
            "engine",
            "status",
            "done",
            "total",
            *RUN_STATE_FIELDS,
            # Provenance: the template version rendered with, what it regenerated, what an
            # endpoint was asked, and answers that hit the length limit.
            "template",
            "regenerated_from",
            "regeneration",
            "requests",
            "usage",
            "truncated_answers",
        ]
        # What follows the request's own fields is the run's state.
        read_only_fields = fields[fields.index("imported") :]

    @extend_schema_field(TemplateRefSerializer(allow_null=True))
    def get_template(self, run: GenerationRun) -> dict | None:
        return template_ref(run.template)

    @extend_schema_field(RegenerationSerializer(allow_null=True))
    def get_regeneration(self, run: GenerationRun) -> dict | None:
        """For a regenerated run: how many answers came out as the original's did."""
        report = regeneration_report(run=run)
        return report.as_dict() if report else None

    def get_truncated_answers(self, run: GenerationRun) -> int:
        counted = getattr(run, "truncated_count", None)
        return counted if counted is not None else run.answers.filter(truncated=True).count()


class AnswersImportSerializer(serializers.Serializer):
    """Answers made elsewhere: FastChat ``model_answer`` JSONL (``question_id``, ``model_id``,
    ``choices[0].turns``), matched to the prompt set's questions by ``question_id``."""

    prompt_set = serializers.PrimaryKeyRelatedField(queryset=PromptSet.objects.all())
    file = serializers.FileField()
    model_name = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        default="",
        help_text="The model of every answer (blank: each line's model_id)",
    )


def _runs_out(runs) -> GenerationRunSerializer:
    return GenerationRunSerializer(runs, many=True)


class GenerationRunViewSet(RunViewSet):
    # Queueing work for the GPU needs the right to run models as well as to add the row.
    action_permissions = {
        "create": ["generation.add_generationrun", "generation.run_languagemodel"],
        "retry": ["generation.change_generationrun", "generation.run_languagemodel"],
        "regenerate": ["generation.add_generationrun", "generation.run_languagemodel"],
        # Imported runs generate nothing: adding runs (and the models they name) is enough.
        "import_file": ["generation.add_generationrun", "generation.add_languagemodel"],
    }
    queryset = GenerationRun.objects.select_related("model", "prompt_set", "template").annotate(
        truncated_count=Count("answers", filter=Q(answers__truncated=True))
    )
    serializer_class = GenerationRunSerializer
    # A new run is asked for with the run's own writable fields (model, prompt set, params,
    # seed, batch size).
    input_serializer_class = GenerationRunSerializer
    filterset_fields = ["model", "prompt_set", "status"]

    def create_run(self, data: dict, user) -> GenerationRun:
        return generation_run_create(
            model=data["model"],
            prompt_set=data["prompt_set"],
            params=data.get("params") or {},
            seed=data.get("seed", 0),
            batch_size=data.get("batch_size", 8),
            engine=data.get("engine_requested", "auto"),
            shards=data.get("shards"),
            user=user,
        )

    @extend_schema(request=None, responses={201: GenerationRunSerializer})
    @action(detail=True, methods=["post"])
    def regenerate(self, request, pk=None):
        """Queue a new run with this one's model, prompt set, parameters, seed, batch size and
        template version; once it has answers, its ``regeneration`` says how many came out
        identical. 409 when the run is imported or still active."""
        run = generation_run_regenerate(run=self.get_object(), user=request.user)
        return Response(GenerationRunSerializer(run).data, status=status.HTTP_201_CREATED)

    @import_action(AnswersImportSerializer, GenerationRunSerializer(many=True))
    def import_file(self, request):
        """Import answers generated elsewhere as one imported run per model (atomic)."""
        return import_upload(
            request, AnswersImportSerializer, answers_import, _runs_out, user=request.user
        )
