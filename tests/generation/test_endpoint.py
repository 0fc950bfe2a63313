"""The endpoint client (engine/endpoint.py) against a real OpenAI-compatible server:
`transformers serve` over the tiny model, behind a proxy that counts requests and injects
errors."""

from __future__ import annotations

import dataclasses
import json

import pytest

from generation.engine import endpoint as client
from generation.engine import render
from generation.engine.endpoint import Conversation, Endpoint, ask, request_options
from generation.engine.generate import EOS, LENGTH, Prompt, generate_answers
from generation.engine.loading import load_model, load_tokenizer
from tests.conftest import FIXTURES
from tests.generation.test_engine import CHAT_TEMPLATE, preset

pytestmark = pytest.mark.slow

PLAIN = preset("plain")


def _questions(count: int) -> list[str]:
    with (FIXTURES / "prompts_ja.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [row["text"] for row in rows[:count]]


def _endpoint(proxy, tiny_server, **options) -> Endpoint:
    return Endpoint(url=proxy.url, model=tiny_server.model_id, max_retries=4, **options)


def _ask(endpoint, conversations, template=PLAIN, **options) -> list:
    replies = []
    ask(endpoint, template, conversations, on_reply=replies.append, **options)
    return replies


@pytest.mark.quick  # `make test-quick` runs this one of its family
def test_every_turn_is_asked_with_the_models_own_earlier_replies(endpoint_proxy, tiny_server):
    follow_up = "もう少し詳しく教えてください。"
    conversations = [
        Conversation(key=i, user_turns=(q, follow_up)) for i, q in enumerate(_questions(3))
    ]
    replies = _ask(
        _endpoint(endpoint_proxy, tiny_server, concurrency=2),
        conversations,
        params={"max_new_tokens": 16},
    )
    assert sorted((r.key, r.turn) for r in replies) == [(k, t) for k in range(3) for t in (1, 2)]
    by_key = {(r.key, r.turn): r for r in replies}
    for key, conv in enumerate(conversations):
        first, second = by_key[(key, 1)], by_key[(key, 2)]
        assert list(first.messages) == [{"role": "user", "content": conv.user_turns[0]}]
        assert list(second.messages) == [
            {"role": "user", "content": conv.user_turns[0]},
            {"role": "assistant", "content": first.text},
            {"role": "user", "content": follow_up},
        ]
    asked = [seen.body["messages"] for seen in endpoint_proxy.chats]
    assert sorted(map(json.dumps, asked)) == sorted(json.dumps(list(r.messages)) for r in replies)
    for reply in replies:
        assert reply.model == tiny_server.model_id  # what the server reported
        assert reply.requests == 1
        assert reply.prompt_tokens > 0 and 1 <= reply.completion_tokens <= 16
        assert reply.stop_reason in (EOS, LENGTH)
        assert reply.truncated == (reply.completion_tokens == 16)
        assert reply.decoding == {"max_tokens": 16, "seed": 0, "temperature": 0.0}


def test_conversations_already_begun_are_asked_only_for_their_missing_turns(
    endpoint_proxy, tiny_server
):
    q1, q2 = _questions(2)
    conversations = [
        Conversation(key="a", user_turns=(q1, "続けて"), replies=("既にある答え",)),
        Conversation(key="b", user_turns=(q2,), replies=()),
    ]
    replies = _ask(
        _endpoint(endpoint_proxy, tiny_server), conversations, params={"max_new_tokens": 8}
    )
    assert sorted((r.key, r.turn) for r in replies) == [("a", 2), ("b", 1)]
    asked = {seen.turn_key: seen.body["messages"] for seen in endpoint_proxy.chats}
    assert sorted(asked) == sorted([(q1, 2), (q2, 1)])
    assert asked[(q1, 2)][1] == {"role": "assistant", "content": "既にある答え"}


def test_rate_limits_and_server_errors_are_retried_and_every_request_counted(
    endpoint_proxy, tiny_server
):
    endpoint_proxy.failures = [429, 503, 429]
    conversations = [Conversation(key=i, user_turns=(q,)) for i, q in enumerate(_questions(2))]
    replies = _ask(
        _endpoint(endpoint_proxy, tiny_server, concurrency=1),
        conversations,
        params={"max_new_tokens": 4},
    )
    assert sorted(r.key for r in replies) == [0, 1]
    statuses = [seen.status for seen in endpoint_proxy.chats]
    assert statuses.count(200) == 2 and sorted(s for s in statuses if s != 200) == [429, 429, 503]
    assert sum(r.requests for r in replies) == len(statuses) == 5


def test_an_error_that_is_not_retried_stops_the_rest_and_says_where(endpoint_proxy, tiny_server):
    endpoint_proxy.failures = [400]
    conversations = [Conversation(key=i, user_turns=(q,)) for i, q in enumerate(_questions(4))]
    with pytest.raises(RuntimeError) as error:
        _ask(_endpoint(endpoint_proxy, tiny_server, concurrency=1), conversations)
    assert endpoint_proxy.url in str(error.value) and "400" in str(error.value)
    assert len(endpoint_proxy.chats) == 1  # nothing more was asked


def test_the_api_key_is_read_from_the_named_variable_only(endpoint_proxy, tiny_server, monkeypatch):
    monkeypatch.setenv("H12_TEST_ENDPOINT_KEY", "sk-test-not-a-real-key")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leave-this-machine")
    (question,) = _questions(1)
    conversations = [Conversation(key=1, user_turns=(question,))]
    keyed = _endpoint(endpoint_proxy, tiny_server, api_key_env="H12_TEST_ENDPOINT_KEY")
    _ask(keyed, conversations, params={"max_new_tokens": 2})
    _ask(_endpoint(endpoint_proxy, tiny_server), conversations, params={"max_new_tokens": 2})
    assert [seen.authorization for seen in endpoint_proxy.chats] == [
        "Bearer sk-test-not-a-real-key",
        "Bearer none",  # never OPENAI_API_KEY from the environment
    ]
    monkeypatch.delenv("H12_TEST_ENDPOINT_KEY")
    with pytest.raises(ValueError) as error:
        _ask(keyed, conversations)
    assert str(error.value) == client.NO_API_KEY.format(var="H12_TEST_ENDPOINT_KEY")


def test_requests_per_minute_spaces_the_requests(endpoint_proxy, tiny_server):
    conversations = [Conversation(key=i, user_turns=(q,)) for i, q in enumerate(_questions(3))]
    _ask(
        _endpoint(endpoint_proxy, tiny_server, concurrency=3, requests_per_minute=60),
        conversations,
        params={"max_new_tokens": 2},
    )
    arrivals = [seen.at for seen in endpoint_proxy.chats]
    assert len(arrivals) == 3
    # 60 a minute: the limiter releases one request a second. Arrivals at the server carry each
    # request's own client overhead (a new connection for each of the three concurrent ones),
    # which varies by tenths of a second on a loaded machine; without the limiter all three
    # arrive together.
    assert all(b - a >= 0.6 for a, b in zip(arrivals, arrivals[1:], strict=False))


def test_should_stop_sends_no_new_request(endpoint_proxy, tiny_server):
    conversations = [Conversation(key=i, user_turns=(q,)) for i, q in enumerate(_questions(6))]
    replies = _ask(
        _endpoint(endpoint_proxy, tiny_server, concurrency=1),
        conversations,
        params={"max_new_tokens": 2},
        should_stop=lambda: True,
    )
    # Asked once the first reply is in: at most the request in flight then completes.
    assert len(endpoint_proxy.chats) == len(replies) <= 2


def test_the_system_prompt_and_stop_strings_of_the_template_are_sent(endpoint_proxy, tiny_server):
    polite = "丁寧に答えてください。"
    template = dataclasses.replace(PLAIN, system_prompt=polite, stop_strings=("。",))
    (question,) = _questions(1)
    (reply,) = _ask(
        _endpoint(endpoint_proxy, tiny_server),
        [Conversation(key=1, user_turns=(question,))],
        template=template,
        params={"max_new_tokens": 32},
    )
    (seen,) = endpoint_proxy.chats
    assert seen.body["messages"][0] == {"role": "system", "content": polite}
    assert seen.body["stop"] == ["。"]
    assert "。" not in reply.text


def test_request_options_map_the_run_parameters():
    assert request_options({"max_new_tokens": 7}, 3) == {
        "max_tokens": 7,
        "seed": 3,
        "temperature": 0.0,
    }
    sampled = request_options(
        {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 20}, 1, ("USER:",)
    )
    assert sampled == {
        "max_tokens": client.DEFAULT_MAX_NEW_TOKENS,
        "seed": 1,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["USER:"],
        "extra_body": {"top_k": 20},
    }
    with pytest.raises(ValueError, match="typical_p"):
        request_options({"typical_p": 0.5}, 0)


def test_greedy_answers_from_the_server_equal_those_generated_in_the_worker(
    endpoint_proxy, tiny_server, tiny_model_dir
):
    # The server renders with the tokenizer's chat template; in the worker the chat_template
    # preset renders the same conversation: the same tokens in, the same greedy tokens out.
    questions = _questions(8)
    served = _ask(
        _endpoint(endpoint_proxy, tiny_server, concurrency=4),
        [Conversation(key=i, user_turns=(q,)) for i, q in enumerate(questions)],
        template=CHAT_TEMPLATE,
        params={"max_new_tokens": 24},
    )
    model, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    local = generate_answers(
        model,
        tokenizer,
        [Prompt.single(i, q) for i, q in enumerate(questions)],
        template=CHAT_TEMPLATE,
        params={"max_new_tokens": 24},
    )
    by_key = {r.key: r for r in served}
    for g in local:
        assert by_key[g.key].text == g.text
        assert by_key[g.key].prompt_tokens == g.prompt_tokens
        assert by_key[g.key].completion_tokens == g.new_tokens
    assert render.chat_messages(CHAT_TEMPLATE, render.conversation([questions[0]], [])) == [
        {"role": "user", "content": questions[0]}
    ]
