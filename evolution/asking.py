"""One way to ask any registered model a batch of one-turn prompts: weights are loaded once per
run and generate in batches (generation/engine/generate.py); a served model is asked through
generation/engine/endpoint.py. Each model answers in its own prompt template."""

from __future__ import annotations

from collections.abc import Callable

from generation.models import LanguageModel
from generation.registry import language_model_endpoint, language_model_load
from generation.templates import as_template, template_for


class Stopped(Exception):
    """The run stopped being this worker's (cancelled) while a model was being asked."""


class Asker:
    def __init__(self, still_mine: Callable[[], bool] | None = None):
        self._loaded: dict[int, tuple] = {}
        self._still_mine = still_mine

    def _weights(self, model: LanguageModel):
        if model.pk not in self._loaded:
            self._loaded[model.pk] = language_model_load(model=model)
        return self._loaded[model.pk]

    def ask(self, model: LanguageModel, prompts: dict, *, params: dict, seed: int) -> dict:
        """{key: reply text} for {key: prompt text} (one user turn each)."""
        if not prompts:
            return {}
        template = as_template(template_for(model))
        if model.is_endpoint:
            return self._ask_endpoint(model, template, prompts, params, seed)
        from generation.engine.generate import Prompt, generate_answers

        tokenizer, weights = self._weights(model)
        generated = generate_answers(
            weights,
            tokenizer,
            [Prompt.single(key, text) for key, text in prompts.items()],
            template=template,
            params=params,
            seed=seed,
            batch_size=len(prompts),
        )
        return {g.key: g.text for g in generated}

    def _ask_endpoint(self, model, template, prompts: dict, params: dict, seed: int) -> dict:
        from generation.engine.endpoint import Conversation, ask

        replies: dict = {}

        def on_reply(reply) -> None:
            replies[reply.key] = reply.text

        ask(
            language_model_endpoint(model=model),
            template,
            [Conversation(key, (text,)) for key, text in prompts.items()],
            params=params,
            seed=seed,
            on_reply=on_reply,
            should_stop=(lambda: not self._still_mine()) if self._still_mine else None,
        )
        if len(replies) < len(prompts):
            raise Stopped
        return replies
