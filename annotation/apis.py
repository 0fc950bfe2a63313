"""REST API: the annotator loop (next pair, vote, skip); staff endpoints are in staff_apis.py.

The annotator endpoints are contracts (the voting page and outside tools use them):
``GET /api/studies/{id}/next/`` and ``POST /api/assignments/{token}/vote/``. Their serializers
name every field they may show; nothing model-shaped (names, paths, run/answer/comparison ids)
is among them. A vote or skip asked with ``?next=1`` (or ``"next": true`` in its body) also
answers ``next``: the next pair of the same study, claimed in the vote's transaction (null when
nothing is left), so the voting page's loop is one request per vote. A pair comes with the
answers' word diff unless the request says ``?diff=0``: the page asks for it only while the
annotator has it on screen (computing it was about 0.4 ms of the app's CPU per vote).
"""

from __future__ import annotations

from dataclasses import replace

from django.db import transaction
from django.http import Http404
from django.utils.cache import add_never_cache_headers
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from evalsite.auth import ScopedRateThrottle
from evalsite.errors import ServiceError

from .loop.assign import next_pair, next_pair_here, shown_pair
from .loop.skips import BAD_REASON, REASONS, assignment_skip
from .loop.state import annotator_progress, loop_state
from .loop.votes import BAD_CHOICE, CHOICES, VoteConflict, choice_of, vote_cast, vote_target
from .markdown import render_answer, with_html, word_diff


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
        # word-level diff (escaped text with <del>/<ins>; null when asked with ?diff=0).
        question_html = serializers.CharField()
        left_html = serializers.CharField()
        right_html = serializers.CharField()
        left_diff = serializers.CharField(allow_null=True)
        right_diff = serializers.CharField(allow_null=True)
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
        # Already the OutputSerializer's shape and types (it documents the contract): running
        # it would copy its 14 fields on every request of the loop for nothing.
        return Response(pair_data(assignment, progress, texts, diff=wants_diff(request)))


def pair_data(assignment, progress, texts=None, *, diff: bool = True) -> dict:
    """What StudyNextApi.OutputSerializer shows of an assignment, and nothing else (``diff``
    False: the word diff's fields are null, so every pair has the same fields)."""
    pair = shown_pair(assignment=assignment, texts=texts)
    left_diff, right_diff = word_diff(pair.left, pair.right) if diff else (None, None)
    return {
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


def wants_diff(request) -> bool:
    """The word diff is sent unless the request says ``?diff=0`` (or false/no)."""
    return request.query_params.get("diff", "1").lower() not in ("0", "false", "no")


def wants_next(request) -> bool:
    """``?next=1`` (or true/yes), or ``"next": true`` in the body."""
    asked = request.query_params.get("next")
    if asked is None and isinstance(request.data, dict):
        asked = request.data.get("next")
    return str(asked).lower() in ("1", "true", "yes")


def _next_data(state, *, diff: bool = True) -> dict | None:
    """The next pair from ``state`` (inside the caller's transaction), as the next-pair API
    shows it; None when nothing is left."""
    assignment, progress, texts = next_pair_here(state=state)
    return None if assignment is None else pair_data(assignment, progress, texts, diff=diff)


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
        # Only with ?next=1: the next pair (StudyNextApi's), or null when nothing is left.
        next = StudyNextApi.OutputSerializer(required=False, allow_null=True)

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
        then = None
        if wants_next(request):
            diff = wants_diff(request)

            def then(progress):
                # The vote's own progress (None when it was in already: as read before).
                state = replace(target.state, progress=progress or target.progress)
                return _next_data(state, diff=diff)

        try:
            cast = vote_cast(
                assignment=assignment,
                choice=form.validated_data["choice"],
                comment=form.validated_data["comment"],
                then=then,
            )
        except VoteConflict:
            raise  # 409, through the API's exception handler
        except ServiceError:
            raise Http404 from None  # the study closed meanwhile
        vote = cast.vote
        progress = cast.progress or target.progress  # the same vote again: as read
        data = {
            "token": assignment.token,
            "choice": choice_of(vote),
            "comment": vote.comment,
            "seconds": vote.seconds,
            "progress": {"done": progress.done, "total": progress.total},
        }
        if then is not None:
            data["next"] = cast.then
        # As in StudyNextApi.get: the data is the OutputSerializer's shape already.
        return Response(
            data, status=status.HTTP_201_CREATED if cast.created else status.HTTP_200_OK
        )


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
        next = StudyNextApi.OutputSerializer(required=False, allow_null=True)

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
        asked_next = wants_next(request)
        try:
            with transaction.atomic():
                changed = assignment_skip(assignment=target.assignment, reason=reason)
                # Their progress without the pair (it was counted as still theirs before).
                progress = annotator_progress(
                    study_id=target.assignment.study_id, annotator=request.user
                )
                following = (
                    _next_data(replace(target.state, progress=progress), diff=wants_diff(request))
                    if asked_next
                    else None
                )
        except VoteConflict as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except ServiceError:
            raise Http404 from None  # the study closed meanwhile
        data = {
            "token": token,
            "reason": reason,
            "progress": {"done": progress.done, "total": progress.total},
        }
        if asked_next:
            data["next"] = following
        return Response(data, status=status.HTTP_201_CREATED if changed else status.HTTP_200_OK)
