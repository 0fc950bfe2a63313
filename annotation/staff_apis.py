"""REST API for staff: the staff home's figures, studies (created, opened, closed), results,
exports, two studies compared, and annotators left out. The annotator loop is annotation/apis.py.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

from django.http import Http404, HttpResponse
from django.utils import timezone
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from evalsite.errors import ServiceError, StateConflict
from evalsite.query import whole_number
from evalsite.runs import listing
from generation.models import GenerationRun, PromptSet

from . import quality, staff, studies
from .models import Study
from .ranking.options import METHODS, RESAMPLE
from .result_options import VOTERS, parse_options, wants_provenance
from .study_votes import reading
from .views import count_from


@contextmanager
def _refused_as_conflict():
    """Opening and closing are refused only for what the study is now (open already, a draft,
    a routing study with no judge run yet): every refusal is a 409, not a 400."""
    try:
        yield
    except ServiceError as exc:
        raise StateConflict(str(exc)) from None


# --- staff -------------------------------------------------------------------------------------


class StaffSummaryApi(APIView):
    """Staff: the staff home's figures (studies with progress and votes in the last hour, runs
    of every kind, skipped pairs)."""

    required_permissions = ["annotation.view_study"]

    @extend_schema(operation_id="staff_summary", responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response(staff.summary_dict(user=request.user))


class StaffRunsApi(APIView):
    """Staff: all work the user may view (runs of every kind, with each kind's view permission,
    and sweeps), failures first, then running and queued; ``kind`` and ``status`` filter
    (400 naming the known values for one that is not)."""

    required_permissions: list[str] = []  # any active staff; each kind asks its own permission

    @extend_schema(
        operation_id="staff_runs",
        parameters=[OpenApiParameter("kind", str), OpenApiParameter("status", str)],
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiResponse(description="bad filter")},
    )
    def get(self, request):
        kind = request.query_params.get("kind", "")
        status_ = request.query_params.get("status", "")
        try:
            rows = listing.work_rows(user=request.user, kind=kind, status=status_)
        except ValueError as exc:
            raise ValidationError({"detail": str(exc)}) from None
        now = timezone.now()
        return Response({"count": len(rows), "results": [r.as_dict(now) for r in rows]})


SIDES = ("first", "second")


class StudyCompareApi(APIView):
    """Staff: two studies over the same models (``compare_studies`` as an endpoint)."""

    required_permissions = ["annotation.view_study", "annotation.export_study"]

    @extend_schema(
        operation_id="studies_compare",
        parameters=[OpenApiParameter(n, int) for n in SIDES]
        + [OpenApiParameter(f"voters_{n}", str, enum=list(VOTERS)) for n in SIDES],
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiResponse(description="bad study")},
    )
    def get(self, request):
        found = []
        for name in SIDES:
            try:
                pk = whole_number(request.query_params.get(name, ""), name=name)
            except ValueError as exc:
                raise ValidationError({name: f"give a study id: {exc}"}) from None
            study = Study.objects.filter(pk=pk).first()
            if study is None:
                raise Http404
            found.append(study)
        voters = tuple(request.query_params.get(f"voters_{n}", "people") for n in SIDES)
        from .results import studies_compare  # scipy: when comparing, not at start-up

        try:
            return Response(studies_compare(first=found[0], second=found[1], voters=voters))
        except ValueError as exc:
            raise ValidationError({"detail": str(exc)}) from None


class AnnotatorExclusionApi(APIView):
    """Staff: leave an annotator's votes out of a study's results (PUT) or count them again
    (DELETE); the votes themselves are kept."""

    required_permissions = ["annotation.change_study", "annotation.export_study"]

    @extend_schema(operation_id="annotator_exclusion_set", request=None, responses={204: None})
    def put(self, request, study_id: int, annotator_id: int):
        return self._set(request, study_id, annotator_id, excluded=True)

    @extend_schema(operation_id="annotator_exclusion_clear", request=None, responses={204: None})
    def delete(self, request, study_id: int, annotator_id: int):
        return self._set(request, study_id, annotator_id, excluded=False)

    def _set(self, request, study_id: int, annotator_id: int, *, excluded: bool):
        study = Study.objects.filter(pk=study_id).first()
        if study is None:
            raise Http404
        try:
            quality.annotator_exclude(
                study=study, annotator_id=annotator_id, excluded=excluded, user=request.user
            )
        except LookupError:
            raise Http404 from None
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- staff: studies ----------------------------------------------------------------------------


class StudySerializer(serializers.ModelSerializer):
    runs = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    comparisons = serializers.IntegerField(source="comparisons.count", read_only=True)

    class Meta:
        model = Study
        fields = [
            "id",
            "name",
            "title",
            "prompt_set",
            "runs",
            "votes_per_comparison",
            "instructions",
            "status",
            "quota",
            "gold_rate",
            "fast_vote_seconds",
            "routing",
            "audit_share",
            "comparisons",
            "created_at",
            "opened_at",
            "closed_at",
        ]
        read_only_fields = fields


class StudyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    title = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    prompt_set = serializers.PrimaryKeyRelatedField(
        queryset=PromptSet.objects.all(), required=False, allow_null=True, default=None
    )
    runs = serializers.PrimaryKeyRelatedField(queryset=GenerationRun.objects.all(), many=True)
    votes_per_comparison = serializers.IntegerField(min_value=1, default=3)
    instructions = serializers.CharField(required=False, allow_blank=True, default="")
    routing = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Judge first: people get what the judge was unsure of, plus an audit sample",
    )
    audit_share = serializers.FloatField(min_value=0, max_value=1, required=False, default=0.2)
    open = serializers.BooleanField(required=False, default=False)


class IdentityFlagSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    kind = serializers.CharField()
    model = serializers.CharField(source="answer.run.model.name")
    question = serializers.IntegerField(source="answer.question.position")
    turn = serializers.IntegerField(source="answer.turn")
    text = serializers.CharField()
    start = serializers.IntegerField()
    end = serializers.IntegerField()
    masked = serializers.BooleanField()
    reviewed = serializers.SerializerMethodField()

    def get_reviewed(self, flag) -> bool:
        return flag.reviewed_at is not None


class IdentityReviewSerializer(serializers.Serializer):
    flags = serializers.DictField(
        child=serializers.ChoiceField(choices=[studies.MASK, studies.KEEP]),
        required=False,
        default=dict,
        help_text='flag id -> "mask" or "keep"',
    )
    kinds = serializers.DictField(
        child=serializers.ChoiceField(choices=[studies.MASK, studies.KEEP]),
        required=False,
        default=dict,
        help_text='a kind of flag (name, maker, word, self_intro, developed_by) -> "mask" or '
        '"keep", for every flag of that kind not decided alone',
    )


class StudyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Staff: studies, created (with all their comparisons), opened and closed."""

    queryset = Study.objects.select_related("prompt_set").prefetch_related("runs")
    serializer_class = StudySerializer
    filterset_fields = ["status", "prompt_set"]

    @extend_schema(request=StudyCreateSerializer, responses={201: StudySerializer})
    def create(self, request):
        form = StudyCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        study = studies.study_create(
            name=data["name"],
            title=data["title"],
            prompt_set=data["prompt_set"],
            runs=data["runs"],
            votes_per_comparison=data["votes_per_comparison"],
            instructions=data["instructions"],
            routing=data["routing"],
            audit_share=data["audit_share"],
            open_now=data["open"],
            user=request.user,
        )
        return Response(StudySerializer(study).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: StudySerializer})
    @action(detail=True, methods=["post"], url_path="open")
    def open_study(self, request, pk=None):
        with _refused_as_conflict():
            study = studies.study_open(study=self.get_object(), user=request.user)
        return Response(StudySerializer(study).data)

    @extend_schema(
        methods=["GET"], request=None, responses={200: IdentityFlagSerializer(many=True)}
    )
    @extend_schema(
        methods=["POST"],
        request=IdentityReviewSerializer,
        responses={200: IdentityFlagSerializer(many=True)},
    )
    @action(detail=True, methods=["get", "post"], url_path="identity-flags")
    def identity_flags(self, request, pk=None):
        """The study's identity flags for review (GET); POST decides them: mask or keep single
        flags, or every flag of a kind. A flag nobody reviewed opens masked."""
        study = self.get_object()
        if request.method == "POST":
            form = IdentityReviewSerializer(data=request.data)
            form.is_valid(raise_exception=True)
            flags = {}
            for key, decision in form.validated_data["flags"].items():
                if not re.fullmatch(r"[0-9]{1,9}", str(key)):
                    raise ValidationError({"flags": [f"{key!r} is not a flag id"]})
                flags[int(key)] = decision
            studies.identity_flags_review(
                study=study, flags=flags, kinds=form.validated_data["kinds"], user=request.user
            )
        flagged = studies.study_flags_for_review(study=study)
        return Response(IdentityFlagSerializer(flagged, many=True).data)

    @extend_schema(request=None, responses={200: StudySerializer})
    @action(detail=True, methods=["post"], url_path="close")
    def close_study(self, request, pk=None):
        with _refused_as_conflict():
            study = studies.study_close(study=self.get_object(), user=request.user)
        return Response(StudySerializer(study).data)


# --- results (staff) ---------------------------------------------------------------------------


class StudyResultsApi(APIView):
    """Staff: the study's tables, strengths with intervals, position bias and agreement."""

    required_permissions = ["annotation.view_study", "annotation.export_study"]

    @extend_schema(
        operation_id="study_results",
        parameters=[
            OpenApiParameter("method", str, enum=list(METHODS)),
            OpenApiParameter("resample", str, enum=list(RESAMPLE)),
            OpenApiParameter("position", bool),
            OpenApiParameter("voters", str, enum=list(VOTERS)),
        ],
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiResponse(description="bad option")},
    )
    def get(self, request, study_id: int):
        study = Study.objects.filter(pk=study_id).first()
        if study is None:
            raise Http404
        # The fit and its exports (numpy, scipy, matplotlib): when asked, not at start-up.
        from . import results, results_export

        try:
            options = parse_options(request.query_params)
            with reading(study):
                found = results.study_results(
                    study=study, count_from=count_from(request.query_params), **options
                )
                body = results_export.results_json(found)
        except ValueError as exc:
            raise ValidationError({"detail": str(exc)}) from None
        return Response(body)


class StudyExportApi(APIView):
    """Staff: one export file (csv, json, md, battles, votes, strengths)."""

    required_permissions = ["annotation.view_study", "annotation.export_study"]

    @extend_schema(
        operation_id="study_export",
        responses={
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/json"): OpenApiTypes.OBJECT,
            (200, "text/markdown"): OpenApiTypes.STR,
            (200, "application/x-ndjson"): OpenApiTypes.STR,
        },
    )
    def get(self, request, study_id: int, fmt: str):
        from . import results_export

        study = Study.objects.filter(pk=study_id).first()
        if study is None or fmt not in results_export.EXPORT_FORMATS:
            raise Http404
        provenance = wants_provenance(request.query_params)
        text, content_type, filename = results_export.export(
            study=study, fmt=fmt, provenance=provenance
        )
        response = HttpResponse(text, content_type=content_type)
        response["Content-Disposition"] = content_disposition_header(True, filename)
        return response
