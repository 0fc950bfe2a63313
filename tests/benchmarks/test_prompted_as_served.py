"""Benchmarks prompt a model the way it is served: a local run renders each example's
conversation (few-shot examples as earlier turns, a system instruction) with the model's own
template through the app's one renderer, so the tiny model benchmarked from its weights and the
same tiny model behind `transformers serve` get the same prompts; raw text is an explicit
choice; served prompts are stored as JSON, never a tuple's repr."""

from __future__ import annotations

import json

import pytest

from benchmarks.models import BenchmarkResult, BenchmarkRun
from benchmarks.runs import benchmark_run_create, benchmark_run_execute
from evalsite.errors import ServiceError
from generation.engine import render
from generation.engine.loading import load_tokenizer
from generation.engine.presets import LLM_JP_PREAMBLE, PRESETS
from generation.registry import language_model_register

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

TASKS = ["ja_fixture_mc", "ja_fixture_gen"]
INSTRUCTION = "あなたは日本語の質問に短く答えるアシスタントです。"


def _executed(run: BenchmarkRun) -> BenchmarkRun:
    benchmark_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == BenchmarkRun.Status.SUCCEEDED, run.error
    return run


def _samples(run: BenchmarkRun) -> dict:
    return {(s.task, s.doc_id): s for s in run.samples.all()}


@pytest.mark.slow
def test_the_same_model_local_and_served_gets_the_same_rendered_prompts(
    tiny, tiny_model_dir, tiny_server, endpoint_proxy, inline
):
    served = language_model_register(
        name="served-tiny",
        endpoint_url=endpoint_proxy.url,
        endpoint_model=tiny_server.model_id,
        prompt_format="line_sft",
    )
    options = dict(
        tasks=TASKS,
        scoring="generative",
        num_fewshot=2,
        limit=3,
        seed=5,
        params={"max_gen_toks": 8},
        enqueue=False,
    )
    local_run = _executed(benchmark_run_create(model=tiny, **options))
    served_run = _executed(benchmark_run_create(model=served, **options))

    local, remote = _samples(local_run), _samples(served_run)
    assert set(local) == set(remote) and len(local) == 6
    # What `transformers serve` renders from the messages it is sent: the tokenizer's own chat
    # template (the tiny model's writes the LINE SFT format its line_sft preset writes).
    tokenizer = load_tokenizer(tiny_model_dir)
    for key, mine in local.items():
        theirs = remote[key]
        assert mine.messages == theirs.messages, key
        roles = [m["role"] for m in mine.messages]
        assert roles == ["user", "assistant", "user", "assistant", "user"], key
        sent_as = tokenizer.apply_chat_template(
            theirs.messages, tokenize=False, add_generation_prompt=True
        )
        assert mine.prompt == sent_as, key
        assert mine.prompt.startswith("ユーザー: ") and mine.prompt.endswith("\nシステム: ")
        # The served prompt is the messages as JSON text.
        assert json.loads(theirs.prompt) == theirs.messages
        assert not theirs.prompt.startswith("JsonChatStr(")
    # The stored messages are what the server was sent, request for request.
    sent = sorted(json.dumps(c.body["messages"], ensure_ascii=False) for c in endpoint_proxy.chats)
    stored = sorted(json.dumps(s.messages, ensure_ascii=False) for s in remote.values())
    assert sent == stored

    def formats(run):
        return set(BenchmarkResult.objects.filter(run=run).values_list("prompt_format", flat=True))

    assert formats(local_run) == {"line_sft v1, few-shot as turns"}
    assert formats(served_run) == {"chat (the server's template), few-shot as turns"}


@pytest.mark.slow
def test_a_local_run_renders_with_its_template_or_raw_text_when_asked(tiny, inline):
    options = dict(tasks=["ja_fixture_mc"], num_fewshot=1, limit=2, seed=1, enqueue=False)
    templated = _executed(
        benchmark_run_create(model=tiny, system_instruction=INSTRUCTION, **options)
    )
    raw = _executed(benchmark_run_create(model=tiny, prompt="raw", **options))

    template = render.template_from("line_sft", 1, PRESETS["line_sft"])
    for sample in templated.samples.all():
        assert [m["role"] for m in sample.messages] == ["system", "user", "assistant", "user"]
        assert sample.messages[0]["content"] == INSTRUCTION
        # Log-likelihood scoring reads the options after exactly the prompt generation gives.
        assert sample.prompt == render.render_prompt(template, sample.messages)
        assert sample.prompt.startswith(INSTRUCTION + "ユーザー: 質問：")
        assert sample.prompt.endswith("\nシステム: ")
    for sample in raw.samples.all():
        assert sample.messages == [] and "ユーザー:" not in sample.prompt
        assert sample.prompt.startswith("質問：")
    assert {r.prompt_format for r in templated.results.all()} == {
        "line_sft v1, few-shot as turns, system instruction"
    }
    assert {r.prompt_format for r in raw.results.all()} == {"raw"}
    assert templated.prompt == "template" and raw.prompt == "raw"


def test_raw_text_is_refused_for_a_served_model_and_a_missing_template_for_any(tiny):
    served = language_model_register(
        name="served", endpoint_url="http://127.0.0.1:9/v1", endpoint_model="m"
    )
    with pytest.raises(ServiceError, match="a served model is always sent chat messages"):
        benchmark_run_create(
            model=served, tasks=["ja_fixture_gen"], prompt="raw", scoring="generative"
        )
    with pytest.raises(ServiceError, match="prompt must be one of: template, raw"):
        benchmark_run_create(model=tiny, tasks=["ja_fixture_gen"], prompt="chatty")
    tiny.prompt_format = "gone"
    tiny.save(update_fields=["prompt_format"])
    with pytest.raises(ServiceError, match="names prompt template 'gone', which does not exist"):
        benchmark_run_create(model=tiny, tasks=["ja_fixture_gen"])
    # Raw text needs no template.
    benchmark_run_create(model=tiny, tasks=["ja_fixture_gen"], prompt="raw", enqueue=False)
    assert not BenchmarkRun.objects.filter(model=served).exists()


def test_a_served_model_is_sent_its_templates_system_prompt():

    from benchmarks.engine.served import ServedChat
    from generation.engine.endpoint import Endpoint

    template = render.template_from("llm_jp", 1, PRESETS["llm_jp"])
    lm = ServedChat(Endpoint(url="http://127.0.0.1:9/v1", model="m"), template)
    history = [{"role": "user", "content": "富士山の高さは？"}]
    sent = lm.apply_chat_template(history)
    assert json.loads(sent.prompt) == [
        {"role": "system", "content": LLM_JP_PREAMBLE},
        {"role": "user", "content": "富士山の高さは？"},
    ]
    # A run's system instruction (lm-eval's system message) takes the template's place.
    ruled = lm.apply_chat_template([{"role": "system", "content": INSTRUCTION}, *history])
    assert json.loads(ruled.prompt)[0] == {"role": "system", "content": INSTRUCTION}
