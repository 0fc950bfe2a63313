"""The model registry: weights a worker loads, or a served endpoint."""

from __future__ import annotations

from rest_framework import serializers, viewsets
from rest_framework.exceptions import ValidationError

from ..errors import ServiceError
from ..models import LanguageModel
from ..registry import LANGUAGE_MODEL_FIELDS, language_model_register, language_model_update


class LanguageModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = LanguageModel
        fields = ["id", *LANGUAGE_MODEL_FIELDS, "created_at"]
        read_only_fields = ["created_at"]

    # The registry decides who may change what a worker loads (SECURITY.md), for the admin too.
    def create(self, validated_data):
        user = self.context["request"].user
        try:
            return language_model_register(**validated_data, user=user)
        except ServiceError as exc:
            raise ValidationError({"detail": str(exc)}) from None

    def update(self, instance, validated_data):
        user = self.context["request"].user
        try:
            return language_model_update(model=instance, changes=validated_data, user=user)
        except ServiceError as exc:
            raise ValidationError({"detail": str(exc)}) from None


class LanguageModelViewSet(viewsets.ModelViewSet):
    queryset = LanguageModel.objects.all()
    serializer_class = LanguageModelSerializer
    filterset_fields = ["name", "prompt_format"]
