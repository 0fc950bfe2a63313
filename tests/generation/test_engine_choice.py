"""Which engine generates with local weights: recorded per run, forced either way by the run's
option or the GENERATION_ENGINE setting; vLLM only where it is installed (and a GPU is seen).

Here (no vLLM, no GPU) transformers is the engine; the vLLM path's own tests carry the ``gpu``
marker and run on a GPU machine with vLLM installed.
"""

from __future__ import annotations

import json

import pytest

from evalsite.errors import ServiceError
from evalsite.runs import lifecycle
from generation.engine.vllm_engine import VLLM_MISSING, vllm_installed
from generation.management.commands.generate import Command as GenerateCommand
from generation.models import GenerationRun
from generation.registry import prompt_set_import
from generation.runs import GENERATION_RUN, generation_run_create
from tests.generation.conftest import register_tiny

pytestmark = pytest.mark.django_db

QUESTIONS = ["富士山の高さはどのくらいですか。", "おすすめの朝ごはんを一つ教えてください。"]


@pytest.fixture
def two_questions():
    data = "".join(json.dumps({"question": q}, ensure_ascii=False) + "\n" for q in QUESTIONS)
    return prompt_set_import(name="two", data=data.encode(), filename="two.jsonl")


@pytest.fixture
def tiny(tiny_model_dir):
    return register_tiny(tiny_model_dir, max_new_tokens=8)


@pytest.mark.slow
def test_a_run_of_local_weights_records_transformers_here(
    tiny, two_questions, settings, one_torch_thread
):
    settings.RUN_HEARTBEAT_INTERVAL = 3600
    run = generation_run_create(model=tiny, prompt_set=two_questions, enqueue=False)
    assert (run.engine_requested, run.engine) == ("auto", "")
    lifecycle.execute(GENERATION_RUN, run.pk)
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error
    assert run.engine == "transformers"
    assert run.answers.count() == 2


@pytest.mark.slow
def test_forcing_transformers_through_the_run_option_is_recorded(
    tiny, two_questions, settings, one_torch_thread
):
    settings.RUN_HEARTBEAT_INTERVAL = 3600
    settings.GENERATION_ENGINE = "vllm"  # the option wins over the worker's setting
    run = generation_run_create(
        model=tiny, prompt_set=two_questions, engine="transformers", enqueue=False
    )
    lifecycle.execute(GENERATION_RUN, run.pk)
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error
    assert (run.engine_requested, run.engine) == ("transformers", "transformers")


@pytest.mark.skipif(vllm_installed(), reason="this machine has vLLM")
def test_forcing_vllm_where_it_is_not_installed_is_refused_at_creation(tiny, two_questions):
    with pytest.raises(ServiceError) as refused:
        generation_run_create(model=tiny, prompt_set=two_questions, engine="vllm")
    assert str(refused.value) == VLLM_MISSING
    assert "pip install vllm" in str(refused.value)
    assert not GenerationRun.objects.exists()


def test_an_unknown_engine_is_refused(tiny, two_questions):
    with pytest.raises(ServiceError, match="unknown generation engine 'tgi'"):
        generation_run_create(model=tiny, prompt_set=two_questions, engine="tgi")
    assert not GenerationRun.objects.exists()


@pytest.mark.skipif(vllm_installed(), reason="this machine has vLLM")
def test_a_worker_set_to_vllm_without_it_fails_the_run_with_the_reason(
    tiny, two_questions, settings
):
    settings.RUN_HEARTBEAT_INTERVAL = 3600
    settings.GENERATION_ENGINE = "vllm"
    run = generation_run_create(model=tiny, prompt_set=two_questions, enqueue=False)
    lifecycle.execute(GENERATION_RUN, run.pk)
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.FAILED
    assert run.error == VLLM_MISSING
    assert run.answers.count() == 0


@pytest.mark.skipif(vllm_installed(), reason="this machine has vLLM")
def test_the_generate_command_refuses_a_forced_vllm_clearly(tiny, two_questions):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="vLLM is not installed on this machine"):
        call_command(
            GenerateCommand(), "--model", "tiny", "--prompt-set", "two", "--engine", "vllm"
        )
    assert not GenerationRun.objects.exists()


@pytest.mark.gpu
@pytest.mark.slow
def test_vllm_gives_the_greedy_answers_transformers_gives(tiny, two_questions, settings):
    # On a GPU machine with vLLM: the same rendered prompts and stop strings, the same answers.
    settings.RUN_HEARTBEAT_INTERVAL = 3600
    runs = {}
    for engine in ("transformers", "vllm"):
        run = generation_run_create(
            model=tiny, prompt_set=two_questions, engine=engine, enqueue=False
        )
        lifecycle.execute(GENERATION_RUN, run.pk)
        run.refresh_from_db()
        assert run.status == GenerationRun.Status.SUCCEEDED, run.error
        assert run.engine == engine
        runs[engine] = {
            a.question_id: (a.text, a.prompt_text, a.prompt_tokens, a.stop_reason)
            for a in run.answers.all()
        }
    assert runs["vllm"] == runs["transformers"]
