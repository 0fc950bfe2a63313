"""The model registry: weights a worker loads, or a served endpoint."""

from __future__ import annotations

from rest_framework import serializers, viewsets

from ..lineage import model_lineage
from ..models import LanguageModel
from ..registry import LANGUAGE_MODEL_FIELDS, language_model_register, language_model_update


class LanguageModelSerializer(serializers.ModelSerializer):
    # Where the model came from: base, and per fine-tune the method, data sets, preference pairs
    # and the study whose votes made them (generation/lineage.py).
    lineage = serializers.SerializerMethodField()

    class Meta:
        model = LanguageModel
        fields = ["id", *LANGUAGE_MODEL_FIELDS, "lineage", "created_at"]
        read_only_fields = ["created_at", "lineage"]

    def get_lineage(self, model: LanguageModel) -> dict:
        return model_lineage(model)

    # The registry decides who may change what a worker loads (SECURITY.md), for the admin too.
    def create(self, validated_data):
        user = self.context["request"].user
        return language_model_register(**validated_data, user=user)

    def update(self, instance, validated_data):
        user = self.context["request"].user
        return language_model_update(model=instance, changes=validated_data, user=user)


class LanguageModelViewSet(viewsets.ModelViewSet):
    queryset = LanguageModel.objects.all()
    serializer_class = LanguageModelSerializer
    filterset_fields = ["name", "prompt_format"]
