"""Instruction data sets: import, token statistics, augmentation."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from evalsite.api_helpers import import_action, import_upload
from evalsite.errors import ServiceError

from ..models import InstructionDataset, LanguageModel
from ..review import (
    ACTIONS,
    RowReview,
    instruction_dataset_accepted_only_set,
    instruction_rows_review,
    review_counts,
    with_review_counts,
)
from ..training.data import (
    instruction_dataset_augment,
    instruction_dataset_import,
    instruction_dataset_token_stats,
)


class ReviewCountsSerializer(serializers.Serializer):
    pending = serializers.IntegerField()
    accepted = serializers.IntegerField()
    rejected = serializers.IntegerField()
    edited = serializers.IntegerField()


class InstructionDatasetSerializer(serializers.ModelSerializer):
    review = serializers.SerializerMethodField(help_text="Rows per review state, and edited rows")

    class Meta:
        model = InstructionDataset
        fields = [
            "id",
            "name",
            "description",
            "source",
            "stats",
            "derived_from",
            "accepted_only",
            "review",
            "created_at",
        ]
        read_only_fields = ["source", "stats", "derived_from", "created_at"]

    @extend_schema_field(ReviewCountsSerializer)
    def get_review(self, obj: InstructionDataset) -> dict:
        return review_counts(obj)

    def update(self, instance, validated_data):
        # The switch goes through its service: refused once a run used the set, audited.
        accepted_only = validated_data.pop("accepted_only", instance.accepted_only)
        instance = super().update(instance, validated_data)
        try:
            return instruction_dataset_accepted_only_set(
                dataset=instance,
                accepted_only=accepted_only,
                user=self.context["request"].user,
            )
        except ServiceError as exc:
            # Named by its field (the API's handler would answer "detail"): the form's box.
            raise ValidationError({"accepted_only": [str(exc)]}) from None


class RowReviewSerializer(serializers.Serializer):
    position = serializers.IntegerField(min_value=1)
    action = serializers.ChoiceField(choices=ACTIONS)
    instruction = serializers.CharField(required=False, trim_whitespace=False)
    input = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    output = serializers.CharField(required=False, trim_whitespace=False)


class ReviewSerializer(serializers.Serializer):
    rows = RowReviewSerializer(many=True, allow_empty=False, max_length=10000)


class InstructionDatasetImportSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    file = serializers.FileField()
    description = serializers.CharField(required=False, allow_blank=True, default="")
    drop_duplicates = serializers.BooleanField(required=False, default=False)
    tokenizer_model = serializers.PrimaryKeyRelatedField(
        queryset=LanguageModel.objects.all(), required=False, allow_null=True, default=None
    )


class TokenStatsSerializer(serializers.Serializer):
    model = serializers.PrimaryKeyRelatedField(queryset=LanguageModel.objects.all())


class AugmentSerializer(serializers.Serializer):
    model = serializers.PrimaryKeyRelatedField(queryset=LanguageModel.objects.all())
    name = serializers.CharField(max_length=200)
    params = serializers.DictField(required=False, default=dict)
    seed = serializers.IntegerField(required=False, default=0)
    batch_size = serializers.IntegerField(required=False, default=8, min_value=1, max_value=512)


class AugmentOutputSerializer(serializers.Serializer):
    run = serializers.IntegerField(source="run_id")
    name = serializers.CharField()


class InstructionDatasetViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Data sets are created by import (or augmentation); their rows change only in review."""

    action_permissions = {
        "import_file": ["generation.add_instructiondataset"],
        # It writes the set's statistics: a change, not a view.
        "token_stats": ["generation.change_instructiondataset"],
        "augment": [
            "generation.add_instructiondataset",
            "generation.add_generationrun",
            "generation.run_languagemodel",
        ],
        "review": ["generation.change_instructiondataset"],
    }
    queryset = with_review_counts(InstructionDataset.objects.all())
    serializer_class = InstructionDatasetSerializer
    filterset_fields = ["name"]

    @import_action(InstructionDatasetImportSerializer, InstructionDatasetSerializer)
    def import_file(self, request):
        """Import a data set from a JSONL / JSON / CSV upload (atomic)."""
        return import_upload(
            request,
            InstructionDatasetImportSerializer,
            instruction_dataset_import,
            InstructionDatasetSerializer,
            user=request.user,
        )

    @extend_schema(request=TokenStatsSerializer, responses=InstructionDatasetSerializer)
    @action(detail=True, methods=["post"], url_path="token-stats")
    def token_stats(self, request, pk=None):
        """Token-length percentiles as the given model would be trained on the set."""
        form = TokenStatsSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        dataset = instruction_dataset_token_stats(
            dataset=self.get_object(), model=form.validated_data["model"]
        )
        return Response(InstructionDatasetSerializer(dataset).data)

    @extend_schema(request=AugmentSerializer, responses={202: AugmentOutputSerializer})
    @action(detail=True, methods=["post"])
    def augment(self, request, pk=None):
        """Queue answers by a model to the set's unique instructions, saved as a new set."""
        form = AugmentSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        augmentation = instruction_dataset_augment(
            dataset=self.get_object(), user=request.user, **form.validated_data
        )
        data = AugmentOutputSerializer(augmentation).data
        return Response(data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=ReviewSerializer, responses=ReviewCountsSerializer)
    @action(detail=True, methods=["post"])
    def review(self, request, pk=None):
        """Accept, reject or edit rows by position, all or none; returns the set's counts."""
        form = ReviewSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        counts = instruction_rows_review(
            dataset=self.get_object(),
            reviews=[RowReview(**row) for row in form.validated_data["rows"]],
            user=request.user,
        )
        return Response(counts)
