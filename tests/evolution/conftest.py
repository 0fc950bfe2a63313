"""Fixtures of the Evol-Instruct tests: a small source data set, the tiny model, evolution staff."""

from __future__ import annotations

import pytest

from tests.generation.conftest import instruction_dataset, tiny_server  # noqa: F401

# Four short instructions of the team's own: enough for lineage, few enough to stay fast.
SOURCE_ROWS = [
    ("日本の四季について説明してください。", "春夏秋冬があり、それぞれに行事があります。"),
    ("雨が降る仕組みを説明してください。", "雲の中の水滴が大きくなって落ちてきます。"),
    ("おすすめの朝食を教えてください。", "ご飯と味噌汁、焼き魚がおすすめです。"),
    ("部屋の片付け方を教えてください。", "まず物を減らし、置き場所を決めます。"),
]


@pytest.fixture
def source(db):
    return instruction_dataset("evol-source", SOURCE_ROWS)


def evolution_staff(django_user_model):
    """Staff allowed to run models and manage evolution runs (not a superuser)."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("evolver", password="evolver-pass", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label__in=["generation", "evolution"])
    )
    return user
