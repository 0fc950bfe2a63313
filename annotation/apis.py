"""REST API: the annotator loop (next pair, vote) and staff management of studies.

The annotator endpoints are contracts (the voting page and outside tools use them):
``GET /api/studies/{id}/next/`` and ``POST /api/assignments/{token}/vote/``. Their serializers
name every field they may show; nothing model-shaped (names, paths, run/answer/comparison ids)
is among them.
"""

from __future__ import annotations

from django.http import Http404, HttpResponse
from django.utils.cache import add_never_cache_headers
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from generation.errors import ServiceError
from generation.models import GenerationRun, PromptSet

from . import quality, ranking, results, staff, studies
from .loop.assign import next_pair, shown_pair
from .loop.skips import BAD_REASON, REASONS, assignment_skip
from .loop.state import loop_state
from .loop.votes import BAD_CHOICE, CHOICES, VoteConflict, choice_of, vote_record, vote_target
from .markdown import render_answer, with_html, word_diff
from .models import Study
from .views import count_from


class MayAnnotate(BasePermission):
    """Annotators (the ``annotators`` group) and staff, as ``loop.state.user_is_annotator``; the
    answer comes with the view's first query (``annotator_state``), which saves a round trip
    on every request of the annotator loop."""

    message = "only annotators and staff can annotate"

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user.is_authenticated and user.is_active):
            return False
        return view.annotator_state(request).may_annotate


class ProgressSerializer(serializers.Serializer):
    done = serializers.IntegerField()
    total = serializers.IntegerField()

    class Meta:
        ref_name = "AnnotatorProgress"


class _AnnotatorApi(APIView):
    # Session only (CSRF enforced on writes); no Basic auth challenge headers for the page.
    authentication_classes = [SessionAuthentication]
    # JSON only: the browsable API page would be one more annotator-facing page to keep blind.
    renderer_classes = [JSONRenderer]
    permission_classes = [MayAnnotate]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "annotate"
    _state = None

    def annotator_state(self, request):
        """What the view works on, read once per request with the user's permission."""
        if self._state is None:
            self._state = self.read_state(request)
        return self._state

    def read_state(self, request):
        raise NotImplementedError

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        add_never_cache_headers(response)
        return response


class ExchangeSerializer(serializers.Serializer):
    """An earlier turn of a multi-turn question: the shared user turn and each side's reply."""

    question = serializers.CharField()
    left = serializers.CharField(allow_blank=True)
    right = serializers.CharField(allow_blank=True)
    question_html = serializers.CharField()
    left_html = serializers.CharField(allow_blank=True)
    right_html = serializers.CharField(allow_blank=True)

    class Meta:
        ref_name = "AnnotatorExchange"


class StudyNextApi(_AnnotatorApi):
    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()
        question = serializers.CharField()
        left = serializers.CharField()
        right = serializers.CharField()
        # The same texts rendered from Markdown (raw HTML shown as text), and the answers'
        # word-level diff (escaped text with <del>/<ins>).
        question_html = serializers.CharField()
        left_html = serializers.CharField()
        right_html = serializers.CharField()
        left_diff = serializers.CharField()
        right_diff = serializers.CharField()
        # The turns before the last one (``question`` is the last user turn, ``left`` and
        # ``right`` the replies to it), oldest first; [] for a single-turn question.
        history = ExchangeSerializer(many=True)
        progress = ProgressSerializer()

        class Meta:
            ref_name = "AnnotatorPair"

    def read_state(self, request):
        return loop_state(study_id=self.kwargs["study_id"], annotator=request.user)

    @extend_schema(
        operation_id="study_next",
        summary="The next blinded pair for the current annotator",
        responses={
            200: OutputSerializer,
            204: OpenApiResponse(description="Nothing is left for this annotator"),
            404: OpenApiResponse(description="No open study with this id"),
        },
    )
    def get(self, request, study_id: int):
        try:
            assignment, progress, texts = next_pair(state=self.annotator_state(request))
        except ServiceError:
            raise Http404 from None  # no open study with this id
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        pair = shown_pair(assignment=assignment, texts=texts)
        left_diff, right_diff = word_diff(pair.left, pair.right)
        data = {
            "token": pair.token,
            "question": pair.question,
            "left": pair.left,
            "right": pair.right,
            "question_html": render_answer(pair.question),
            "left_html": render_answer(pair.left),
            "right_html": render_answer(pair.right),
            "left_diff": left_diff,
            "right_diff": right_diff,
            "history": [
                with_html(question=turn.question, left=turn.left, right=turn.right)
                for turn in pair.history
            ],
            "progress": {"done": progress.done, "total": progress.total},
        }
        # Already the OutputSerializer's shape and types (it documents the contract): running
        # it would copy its 14 fields on every request of the loop for nothing.
        return Response(data)


class AssignmentVoteApi(_AnnotatorApi):
    class InputSerializer(serializers.Serializer):
        choice = serializers.ChoiceField(
            choices=CHOICES,
            error_messages={"invalid_choice": BAD_CHOICE, "required": BAD_CHOICE},
        )
        comment = serializers.CharField(
            required=False, allow_blank=True, max_length=4000, trim_whitespace=True, default=""
        )

        class Meta:
            ref_name = "VoteInput"

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()
        choice = serializers.CharField()
        comment = serializers.CharField()
        seconds = serializers.FloatField()
        progress = ProgressSerializer()

        class Meta:
            ref_name = "VoteResult"

    def read_state(self, request):
        return vote_target(token=self.kwargs["token"], annotator=request.user)

    @extend_schema(
        operation_id="assignment_vote",
        summary="Vote on a pair: left better, both good, both bad, or right better",
        request=InputSerializer,
        responses={
            201: OutputSerializer,
            200: OpenApiResponse(OutputSerializer, description="The same vote again: unchanged"),
            400: OpenApiResponse(description="Unknown choice"),
            404: OpenApiResponse(description="Not your token, or the study is not open"),
            409: OpenApiResponse(description="A different vote exists, or the pair is full"),
        },
    )
    def post(self, request, token: str):
        target = self.annotator_state(request)
        if target.assignment is None:
            raise Http404
        assignment = target.assignment
        form = self.InputSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            vote, created = vote_record(
                assignment=assignment,
                choice=form.validated_data["choice"],
                comment=form.validated_data["comment"],
            )
        except VoteConflict as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except ServiceError:
            raise Http404 from None  # the study closed meanwhile
        progress = target.progress_after(created=created)
        data = {
            "token": assignment.token,
            "choice": choice_of(vote),
            "comment": vote.comment,
            "seconds": vote.seconds,
            "progress": {"done": progress.done, "total": progress.total},
        }
        # As in StudyNextApi.get: the data is the OutputSerializer's shape already.
        return Response(data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class AssignmentSkipApi(_AnnotatorApi):
    class InputSerializer(serializers.Serializer):
        reason = serializers.ChoiceField(
            choices=REASONS,
            error_messages={"invalid_choice": BAD_REASON, "required": BAD_REASON},
        )

        class Meta:
            ref_name = "SkipInput"

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()
        reason = serializers.CharField()
        progress = ProgressSerializer()

        class Meta:
            ref_name = "SkipResult"

    def read_state(self, request):
        return vote_target(token=self.kwargs["token"], annotator=request.user)

    @extend_schema(
        operation_id="assignment_skip",
        summary="Pass a pair on, with a reason; it goes to someone else",
        request=InputSerializer,
        responses={
            201: OutputSerializer,
            200: OpenApiResponse(OutputSerializer, description="The same skip again: unchanged"),
            400: OpenApiResponse(description="Unknown reason"),
            404: OpenApiResponse(description="Not your token, or the study is not open"),
            409: OpenApiResponse(description="You voted on it, or skipped it for another reason"),
        },
    )
    def post(self, request, token: str):
        target = self.annotator_state(request)
        if target.assignment is None:
            raise Http404
        form = self.InputSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        reason = form.validated_data["reason"]
        try:
            changed = assignment_skip(assignment=target.assignment, reason=reason)
        except VoteConflict as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        # Their progress without the pair: it was counted as still theirs before.
        progress = target.progress_after(created=False)
        data = {
            "token": token,
            "reason": reason,
            "progress": {"done": progress.done, "total": progress.total},
        }
        return Response(
            self.OutputSerializer(data).data,
            status=status.HTTP_201_CREATED if changed else status.HTTP_200_OK,
        )


# --- staff -------------------------------------------------------------------------------------


class StaffSummaryApi(APIView):
    """Staff: the staff home's figures (studies with progress and votes in the last hour, runs
    of every kind, skipped pairs)."""

    required_permissions = ["annotation.view_study"]

    @extend_schema(operation_id="staff_summary", responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response(staff.summary_dict())


class StudyCompareApi(APIView):
    """Staff: two studies over the same models (``compare_studies`` as an endpoint)."""

    required_permissions = ["annotation.view_study", "annotation.export_study"]

    @extend_schema(
        operation_id="studies_compare",
        parameters=[OpenApiParameter("first", int), OpenApiParameter("second", int)],
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiResponse(description="bad study")},
    )
    def get(self, request):
        found = []
        for name in ("first", "second"):
            value = request.query_params.get(name, "")
            if not value.isdigit():
                raise ValidationError({name: "give a study id"})
            study = Study.objects.filter(pk=int(value)).first()
            if study is None:
                raise Http404
            found.append(study)
        try:
            return Response(results.studies_compare(first=found[0], second=found[1]))
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
    open = serializers.BooleanField(required=False, default=False)


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
        try:
            study = studies.study_create(
                name=data["name"],
                title=data["title"],
                prompt_set=data["prompt_set"],
                runs=data["runs"],
                votes_per_comparison=data["votes_per_comparison"],
                instructions=data["instructions"],
                open_now=data["open"],
                user=request.user,
            )
        except ServiceError as exc:
            raise ValidationError({"detail": str(exc)}) from None
        return Response(StudySerializer(study).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: StudySerializer})
    @action(detail=True, methods=["post"], url_path="open")
    def open_study(self, request, pk=None):
        try:
            study = studies.study_open(study=self.get_object(), user=request.user)
        except ServiceError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(StudySerializer(study).data)

    @extend_schema(request=None, responses={200: StudySerializer})
    @action(detail=True, methods=["post"], url_path="close")
    def close_study(self, request, pk=None):
        try:
            study = studies.study_close(study=self.get_object(), user=request.user)
        except ServiceError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(StudySerializer(study).data)


# --- results (staff) ---------------------------------------------------------------------------


class StudyResultsApi(APIView):
    """Staff: the study's tables, strengths with intervals, position bias and agreement."""

    required_permissions = ["annotation.view_study", "annotation.export_study"]

    @extend_schema(
        operation_id="study_results",
        parameters=[
            OpenApiParameter("method", str, enum=list(ranking.METHODS)),
            OpenApiParameter("resample", str, enum=list(ranking.RESAMPLE)),
            OpenApiParameter("position", bool),
            OpenApiParameter("voters", str, enum=list(results.VOTERS)),
        ],
        responses={200: OpenApiTypes.OBJECT, 400: OpenApiResponse(description="bad option")},
    )
    def get(self, request, study_id: int):
        study = Study.objects.filter(pk=study_id).first()
        if study is None:
            raise Http404
        try:
            options = results.parse_options(request.query_params)
            found = results.study_results(
                study=study, count_from=count_from(request.query_params), **options
            )
        except ValueError as exc:
            raise ValidationError({"detail": str(exc)}) from None
        return Response(results.results_json(found))


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
        study = Study.objects.filter(pk=study_id).first()
        if study is None or fmt not in results.EXPORT_FORMATS:
            raise Http404
        provenance = results.wants_provenance(request.query_params)
        text, content_type, filename = results.export(study=study, fmt=fmt, provenance=provenance)
        response = HttpResponse(text, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
