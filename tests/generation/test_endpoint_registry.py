"""Registering served models: `register_model --endpoint URL --endpoint-model ID --api-key-env
VAR`, the API, the checks (weights or endpoint, a key variable only a superuser picks), the
queue their runs go to, and the parameters a served model can take."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from evalsite.errors import ServiceError
from evalsite.runs import workers
from generation import registry, runs
from generation.models import GenerationRun, LanguageModel
from generation.registry import language_model_register, language_model_update
from tests.conftest import logged_in

pytestmark = pytest.mark.django_db

URL = "http://gpu-host:8000/v1"


@pytest.fixture(autouse=True)
def _gpu_host_allowed(settings):
    settings.ENDPOINT_ALLOWED_HOSTS = ["gpu-host"]


def _served(name: str = "served", **fields) -> LanguageModel:
    return language_model_register(
        name=name,
        prompt_format="plain",
        endpoint_url=URL,
        endpoint_model="org/model",
        **fields,
    )


def test_register_model_records_a_served_model_and_never_a_key(monkeypatch):
    monkeypatch.setenv("H12_HOSTED_KEY", "sk-secret-value")
    call_command(
        "register_model",
        "gpt",
        "--prompt-format",
        "plain",
        "--endpoint",
        URL,
        "--endpoint-model",
        "gpt-4o-2024-08-06",
        "--api-key-env",
        "H12_HOSTED_KEY",
        "--concurrency",
        "8",
        "--requests-per-minute",
        "60",
    )
    model = LanguageModel.objects.get(name="gpt")
    assert model.is_endpoint and model.name_or_path == "" and not model.trust_remote_code
    assert (model.endpoint_url, model.endpoint_model, model.api_key_env) == (
        URL,
        "gpt-4o-2024-08-06",
        "H12_HOSTED_KEY",
    )
    assert (model.endpoint_concurrency, model.endpoint_requests_per_minute) == (8, 60)
    row = LanguageModel.objects.filter(pk=model.pk).values()[0]
    assert "sk-secret-value" not in repr(row)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--path", "x", "--endpoint", URL, "--endpoint-model", "m"], "either --path"),
        ([], "either --path"),
        (["--endpoint", URL], registry.ENDPOINT_MODEL_NEEDED),
        (["--path", "x", "--api-key-env", "K"], "go with --endpoint"),
        (["--endpoint", URL, "--endpoint-model", "m", "--api-key-env", "A B"], "api_key_env"),
        (["--endpoint", "gpu-host:8000", "--endpoint-model", "m"], "an endpoint URL is"),
        (["--endpoint", URL, "--endpoint-model", "m", "--concurrency", "0"], "--concurrency"),
    ],
)
def test_register_model_refuses_what_cannot_work(args, message):
    with pytest.raises(CommandError, match=message.split("(")[0][:40]):
        call_command("register_model", "bad", "--prompt-format", "plain", *args)
    assert not LanguageModel.objects.filter(name="bad").exists()


def test_a_served_model_has_no_weights_and_no_remote_code():
    with pytest.raises(ServiceError, match="either weights"):
        _served(name_or_path="org/weights")
    with pytest.raises(ServiceError, match="trust_remote_code"):
        _served(trust_remote_code=True)
    model = _served()
    with pytest.raises(ServiceError, match="either weights"):
        language_model_update(model=model, changes={"name_or_path": "org/weights"})


def test_only_a_superuser_chooses_which_variable_is_sent_as_a_key(client, staff_user, admin_user):
    payload = {
        "name": "hosted",
        "prompt_format": "plain",
        "endpoint_url": URL,
        "endpoint_model": "org/model",
        "api_key_env": "SECRET_KEY",
    }
    staff = logged_in(staff_user)
    refused = staff.post("/api/models/", payload, content_type="application/json")
    assert refused.status_code == 400
    assert "only a superuser may choose" in str(refused.json())
    keyless = staff.post(
        "/api/models/", {**payload, "api_key_env": ""}, content_type="application/json"
    )
    assert keyless.status_code == 201, keyless.content
    admin = logged_in(admin_user)
    created = admin.post("/api/models/", {**payload, "name": "h2"}, content_type="application/json")
    assert created.status_code == 201, created.content
    # Staff cannot point a model that sends a key elsewhere, nor change its variable.
    model = LanguageModel.objects.get(name="h2")
    for change in ({"endpoint_url": "http://elsewhere:1/v1"}, {"api_key_env": "OTHER"}):
        with pytest.raises(ServiceError, match="only a superuser"):
            language_model_update(model=model, changes=change, user=staff_user)
    language_model_update(model=model, changes={"endpoint_concurrency": 2}, user=staff_user)
    assert LanguageModel.objects.get(pk=model.pk).endpoint_url == URL


def test_a_served_models_runs_go_to_the_default_queue(prompt_set, tiny, base):
    served = runs.generation_run_create(model=_served(), prompt_set=prompt_set, enqueue=False)
    weights = runs.generation_run_create(model=base, prompt_set=prompt_set, enqueue=False)
    assert workers.run_queue(served) == "default"
    assert workers.run_queue(weights) == "gpu"
    assert served.template.name == "plain" and weights.template.name == "line_sft"


def test_a_served_model_refuses_parameters_chat_completions_cannot_carry(prompt_set):
    model = _served()
    with pytest.raises(ServiceError, match="typical_p"):
        runs.generation_run_create(
            model=model, prompt_set=prompt_set, params={"typical_p": 0.9}, enqueue=False
        )
    assert not GenerationRun.objects.exists()
