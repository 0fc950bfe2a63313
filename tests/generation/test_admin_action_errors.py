"""An admin action's refusal shows on its own form page, with the values as typed, instead of
on a changelist after the form is gone."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.utils.html import escape

from generation.models import GenerationRun
from generation.params import UNKNOWN_PARAMS
from generation.registry import language_model_register

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/generation/languagemodel/"


def _generate(client, models, params: str, prompt_set):
    return client.post(
        CHANGELIST,
        {
            "action": "generate_answers",
            ACTION_CHECKBOX_NAME: [m.pk for m in models],
            "apply": "Start",
            "prompt_set": prompt_set.pk,
            "seed": "7",
            "batch_size": "4",
            "params": params,
        },
    )


@pytest.fixture
def two_models():
    return [
        language_model_register(name="admin-err-a", name_or_path="org/admin-err-a"),
        language_model_register(name="admin-err-b", name_or_path="org/admin-err-b"),
    ]


@pytest.mark.parametrize(
    ("params", "refusal"),
    [
        ('{"max_new_tokens": 100000}', "max_new_tokens must be"),
        ('{"max_new_tokn": 64}', UNKNOWN_PARAMS.format(keys="max_new_tokn")),
    ],
)
def test_a_refused_generate_stays_on_its_form_with_the_values_kept(
    client, admin_user, prompt_set, two_models, params, refusal
):
    client.force_login(admin_user)
    response = _generate(client, two_models, params, prompt_set)
    assert response.status_code == 200  # the form page again, not a redirect
    body = response.content.decode()
    assert escape(refusal) in body
    assert 'name="apply"' in body  # still the action's form
    assert f'value="{escape(params)}"' in body and 'value="7"' in body and 'value="4"' in body
    assert not GenerationRun.objects.exists()


def test_a_valid_generate_still_queues_and_goes_to_the_runs(
    client, admin_user, prompt_set, two_models
):
    client.force_login(admin_user)
    response = _generate(client, two_models, '{"max_new_tokens": 32}', prompt_set)
    assert response.status_code == 302
    assert GenerationRun.objects.count() == 2
