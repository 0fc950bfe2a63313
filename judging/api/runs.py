"""Judge runs: create (judging.runs.judge_run_create), follow with their counts, cancel, retry,
page through their verdicts, and a grading run's grades (JSON, or CSV with ``?format=csv``)."""

from __future__ import annotations

import json

from django.db.models.functions import Coalesce
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import renderers, serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from annotation.models import Study
from evalsite.errors import StateConflict
from evalsite.runs.api import RUN_STATE_FIELDS, RunViewSet, shards_field
from generation.api.shared import TemplateRefSerializer, template_ref
from generation.models import LanguageModel

from ..grading import grades_csv, grading_results
from ..models import JudgePrompt, JudgeRun, Judgment
from ..runs import judge_run_create
from ..summary import judge_run_summary

NO_GRADES = "judge run {id} is a pairwise run; it has no grades"


class JudgeRunInputSerializer(serializers.Serializer):
    """A new judge run; unset values take the service's defaults."""

    judge = serializers.PrimaryKeyRelatedField(queryset=LanguageModel.objects.all())
    study = serializers.PrimaryKeyRelatedField(queryset=Study.objects.all())
    prompt = serializers.PrimaryKeyRelatedField(
        queryset=JudgePrompt.objects.all(),
        required=False,
        allow_null=True,
        default=None,
        help_text="A judge prompt version (none: the latest ja_pairwise, or ja_grading)",
    )
    grading = serializers.BooleanField(
        default=False, help_text="Grade each answer instead of judging pairs"
    )
    comparisons = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        default=None,
        allow_empty=False,
        max_length=100_000,
        help_text="Only these comparisons of the study (none: every one but gold checks)",
    )
    params = serializers.DictField(required=False, default=dict, help_text="The judge's decoding")
    seed = serializers.IntegerField(default=0, min_value=-(2**31), max_value=2**31 - 1)
    batch_size = serializers.IntegerField(default=8, min_value=1, max_value=1024)
    shards = shards_field()
    max_attempts = serializers.IntegerField(default=3, min_value=1, max_value=20)
    inconsistent = serializers.ChoiceField(
        choices=JudgeRun.Inconsistent.choices, default=JudgeRun.Inconsistent.TIE
    )
    reference_prompt = serializers.PrimaryKeyRelatedField(
        queryset=JudgePrompt.objects.all(),
        required=False,
        allow_null=True,
        default=None,
        help_text="The prompt for questions of reference_categories (MT-Bench: with the "
        "reference answer)",
    )
    reference_categories = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        default=None,
        max_length=100,
        help_text="Categories judged with reference_prompt (default: math, reasoning, coding)",
    )
    last_turn_only = serializers.BooleanField(
        default=False,
        help_text="Show the judge only the last turn of each conversation (default: every turn)",
    )
    engine = serializers.ChoiceField(
        choices=JudgeRun.Engine.choices,
        default=JudgeRun.Engine.AUTO,
        help_text="A judge's local weights: vLLM or transformers (auto: vLLM where installed)",
    )


class PromptRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    version = serializers.IntegerField()
    kind = serializers.CharField()


class JudgeRunSerializer(serializers.ModelSerializer):
    judge_name = serializers.CharField(source="judge.name", read_only=True)
    study_name = serializers.CharField(source="study.name", read_only=True)
    prompt = serializers.SerializerMethodField()
    template = serializers.SerializerMethodField()
    summary = serializers.SerializerMethodField()

    class Meta:
        model = JudgeRun
        fields = [
            "id",
            "judge",
            "judge_name",
            "study",
            "study_name",
            "prompt",
            "template",
            "comparison_ids",
            "params",
            "seed",
            "batch_size",
            "max_attempts",
            "inconsistent",
            "engine_requested",
            "engine",
            "status",
            "done",
            "total",
            "requests",
            "usage",
            *RUN_STATE_FIELDS,
            "summary",
        ]
        read_only_fields = fields

    @extend_schema_field(PromptRefSerializer)
    def get_prompt(self, run: JudgeRun) -> dict:
        p = run.prompt
        return {"id": p.pk, "name": p.name, "version": p.version, "kind": p.kind}

    @extend_schema_field(TemplateRefSerializer(allow_null=True))
    def get_template(self, run: JudgeRun) -> dict | None:
        return template_ref(run.template)

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_summary(self, run: JudgeRun) -> dict:
        """Pairwise: judged, expected, consistent, inconsistent, unparsable, votes; grading:
        graded, unparsable, expected."""
        return judge_run_summary(run)


class JudgeRunDetailSerializer(JudgeRunSerializer):
    grades = serializers.SerializerMethodField()

    class Meta(JudgeRunSerializer.Meta):
        fields = [*JudgeRunSerializer.Meta.fields, "grades"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_grades(self, run: JudgeRun) -> dict | None:
        """A grading run's grades (judging.grading.grading_results); none for a pairwise run."""
        return grading_results(run) if run.grading else None


class JudgmentSerializer(serializers.ModelSerializer):
    question = serializers.IntegerField(
        source="question_position", read_only=True, help_text="The question's position"
    )

    class Meta:
        model = Judgment
        fields = [
            "id",
            "comparison",
            "first",
            "answer",
            "question",
            "verdict",
            "score",
            "attempts",
            "raw_output",
            "outputs",
            "prompt_text",
            "vote",
            "created_at",
        ]
        read_only_fields = fields


class CSVTextRenderer(renderers.BaseRenderer):
    """Text a view made as CSV, sent as it is (an error body, a dict, is sent as JSON text)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, str):
            return data.encode(self.charset)
        return json.dumps(data, ensure_ascii=False).encode(self.charset)


class JudgeRunViewSet(RunViewSet):
    """Staff only: judge runs name their judge, prompt and raw outputs."""

    # Queueing a judge needs the right to run models as well as to add the row.
    action_permissions = {
        "create": ["judging.add_judgerun", "generation.run_languagemodel"],
        "retry": ["judging.change_judgerun", "generation.run_languagemodel"],
        "cancel": ["judging.change_judgerun"],
        "judgments": ["judging.view_judgerun"],
        "grades": ["judging.view_judgerun"],
    }
    queryset = JudgeRun.objects.select_related("judge", "study", "prompt", "template")
    serializer_class = JudgeRunSerializer
    input_serializer_class = JudgeRunInputSerializer
    filterset_fields = ["judge", "study", "prompt", "status"]

    def get_serializer_class(self):
        return JudgeRunDetailSerializer if self.action == "retrieve" else JudgeRunSerializer

    def create_run(self, data: dict, user) -> JudgeRun:
        return judge_run_create(**data, user=user)

    @extend_schema(responses=JudgmentSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[])
    def judgments(self, request, pk=None):
        """The run's verdicts, in comparison and order (paginated: ``limit``, ``offset``)."""
        rows = (
            Judgment.objects.filter(run=self.get_object())
            .annotate(
                question_position=Coalesce(
                    "comparison__question__position", "answer__question__position"
                )
            )
            .order_by("comparison_id", "first", "answer_id")
        )
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(JudgmentSerializer(page, many=True).data)

    @extend_schema(
        responses={
            (200, "application/json"): OpenApiTypes.OBJECT,
            (200, "text/csv"): OpenApiTypes.STR,
        }
    )
    @action(
        detail=True,
        methods=["get"],
        renderer_classes=[renderers.JSONRenderer, CSVTextRenderer],
    )
    def grades(self, request, pk=None):
        """A grading run's grades: per model the mean score with its bootstrap 95 % interval
        (resampling questions) and counts; the per-question table. ``?format=csv``: the table
        as CSV, one column per model. 409 for a pairwise run."""
        run = self.get_object()
        if not run.grading:
            raise StateConflict(NO_GRADES.format(id=run.pk))
        results = grading_results(run)
        if request.accepted_renderer.format == "csv":
            response = Response(grades_csv(results), content_type="text/csv; charset=utf-8")
            name = f"judge-run-{run.pk}-grades.csv"
            response["Content-Disposition"] = content_disposition_header(True, name)
            return response
        return Response(results)
