"""What a claimed generation run does: store every answer it is missing, turn by turn.

A question with several user turns is answered one turn at a time. Each turn's prompt holds the
earlier user turns and THIS run's own earlier replies, read back from the stored answers, so a
run resumed after a crash continues at its first missing (question, turn) and generates or asks
for nothing it already stored. Weights are loaded into the worker and generate in batches
(engine/generate.py); a served model is asked through its endpoint (engine/endpoint.py), several
requests at a time, each answer committed as it arrives, with the requests and token usage
counted on the run. Every answer carries its provenance (see ``Answer``).
"""

from __future__ import annotations

import json

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .engine import render
from .models import Answer, GenerationRun, Question
from .registry import language_model_endpoint, language_model_load
from .runs import engine_chosen, engine_served
from .templates import as_template, template_for

USAGE_KEYS = ("prompt_tokens", "completion_tokens")


def generate_missing(run_id: int, worker: str) -> None:
    """Generate (or ask for) the run's missing answers, then mark it succeeded or failed."""
    run = _run(run_id)

    def still_mine() -> bool:
        return GenerationRun.objects.filter(
            pk=run_id, status=GenerationRun.Status.RUNNING, worker=worker
        ).exists()

    _answer(run, list(run.prompt_set.questions.order_by("position")), still_mine)
    done = Answer.objects.filter(run_id=run_id).count()
    finished = done >= run.total
    GenerationRun.objects.filter(
        pk=run_id, status=GenerationRun.Status.RUNNING, worker=worker
    ).update(
        done=done,
        status=GenerationRun.Status.SUCCEEDED if finished else GenerationRun.Status.FAILED,
        error="" if finished else f"stopped with {done} of {run.total} answers",
        finished_at=timezone.now(),
    )


def run_questions(run: GenerationRun) -> int:
    """How many questions the run answers: the items its shards cut into ranges."""
    return run.prompt_set.questions.count()


def generate_shard(run_id: int, shard) -> bool:
    """Generate the missing answers of the shard's questions (by position, ``shard.start`` to
    ``shard.stop``: every turn of a question stays in one shard, since a later turn is asked
    with this run's earlier replies); True when each of them has all its answers."""
    run = _run(run_id)
    questions = list(run.prompt_set.questions.order_by("position")[shard.start : shard.stop])
    stored = _answer(run, questions, shard.held, only=True)
    return all((q.pk, t) in stored for q in questions for t in range(1, len(q.turns) + 1))


def _run(run_id: int) -> GenerationRun:
    run = GenerationRun.objects.select_related(
        "model", "model__base_model", "prompt_set", "template"
    ).get(pk=run_id)
    if run.template is None:  # a run queued before templates were rows
        run.template = template_for(run.model)
        GenerationRun.objects.filter(pk=run_id).update(template=run.template)
    return run


def _answer(
    run: GenerationRun, questions: list[Question], still_mine, *, only: bool = False
) -> dict:
    """Generate (or ask for) the missing answers of ``questions`` while ``still_mine()``; the
    answers stored at the end, by (question id, turn): of those questions when ``only``, else
    of the whole run (``questions`` is then all of its questions)."""
    template = as_template(run.template)
    answers = Answer.objects.filter(run_id=run.pk)
    if only:
        answers = answers.filter(question__in=questions)
    stored = {
        (qid, turn): text for qid, turn, text in answers.values_list("question_id", "turn", "text")
    }
    GenerationRun.objects.filter(pk=run.pk).update(
        done=Answer.objects.filter(run_id=run.pk).count()
    )
    missing = any((q.pk, t) not in stored for q in questions for t in range(1, len(q.turns) + 1))
    if run.model.is_endpoint:
        engine_served(run)
    else:
        engine_chosen(run)
    if missing and run.model.is_endpoint:
        _ask_endpoint(run, template, questions, stored, still_mine)
    elif missing:
        _generate_in_worker(run, template, questions, stored, still_mine)
    return stored


def _replies_so_far(question: Question, stored: dict) -> list[str]:
    """The stored replies to the question's first turns, up to the first one missing."""
    replies = []
    for turn in range(1, len(question.turns) + 1):
        if (question.pk, turn) not in stored:
            break
        replies.append(stored[(question.pk, turn)])
    return replies


def _store(run_id: int, answers: list[Answer], **run_changes) -> None:
    with transaction.atomic():
        # ignore_conflicts: an answer already stored by an earlier attempt stays as it is.
        Answer.objects.bulk_create(answers, ignore_conflicts=True)
        GenerationRun.objects.filter(pk=run_id).update(
            done=Answer.objects.filter(run_id=run_id).count(),
            heartbeat_at=timezone.now(),
            **run_changes,
        )


# --- weights in the worker ---------------------------------------------------------------------


def _generate_in_worker(run, template, questions, stored, still_mine) -> None:
    from .engine.generate import Prompt, decoding_of, generate_answers, prepared_config
    from .engine.loading import resolve_path
    from .engine.revision import model_revision

    tokenizer, model = language_model_load(model=run.model, engine=run.engine)
    weights = run.model.base_model if run.model.adapter_path else run.model
    adapter = run.model.adapter_path
    revision = model_revision(
        model,
        resolve_path(weights.name_or_path, settings.MODEL_STORAGE),
        resolve_path(adapter, settings.MODEL_STORAGE) if adapter else None,
    )
    decoding = decoding_of(prepared_config(model, tokenizer, run.params), run.params, run.seed)

    def on_batch(batch) -> None:
        rows = []
        for g in batch:
            question_id, turn = g.key
            stored[(question_id, turn)] = g.text
            rows.append(
                Answer(
                    run_id=run.pk,
                    question_id=question_id,
                    turn=turn,
                    text=g.text,
                    new_tokens=g.new_tokens,
                    prompt_text=g.prompt_text,
                    prompt_tokens=g.prompt_tokens,
                    model_revision=revision,
                    decoding=decoding,
                    stop_reason=g.stop_reason,
                    truncated=g.truncated,
                )
            )
        _store(run.pk, rows)

    most_turns = max(len(q.turns) for q in questions)
    for turn in range(1, most_turns + 1):
        prompts = []
        for q in questions:
            replies = _replies_so_far(q, stored)
            if len(q.turns) >= turn and len(replies) == turn - 1:
                messages = render.conversation(q.turns[:turn], replies)
                prompts.append(Prompt(key=(q.pk, turn), messages=tuple(messages)))
        if not prompts:
            continue
        if not still_mine():
            return
        generate_answers(
            model,
            tokenizer,
            prompts,
            template=template,
            params=run.params,
            seed=run.seed,
            batch_size=run.batch_size,
            on_batch=on_batch,
            should_stop=lambda: not still_mine(),
        )


# --- served models -----------------------------------------------------------------------------


def _ask_endpoint(run, template, questions, stored, still_mine) -> None:
    from .engine.endpoint import Conversation, ask

    endpoint = language_model_endpoint(model=run.model)
    conversations = []
    for q in questions:
        replies = _replies_so_far(q, stored)
        if len(replies) < len(q.turns):
            conversations.append(Conversation(q.pk, tuple(q.turns), tuple(replies)))
    usage = {key: int((run.usage or {}).get(key, 0)) for key in USAGE_KEYS}

    def on_reply(reply) -> None:
        usage["prompt_tokens"] += reply.prompt_tokens
        usage["completion_tokens"] += reply.completion_tokens
        answer = Answer(
            run_id=run.pk,
            question_id=reply.key,
            turn=reply.turn,
            text=reply.text,
            new_tokens=reply.completion_tokens,
            prompt_text=json.dumps(list(reply.messages), ensure_ascii=False),
            prompt_tokens=reply.prompt_tokens,
            model_revision=reply.model[:200],
            decoding={**reply.decoding},
            stop_reason=reply.stop_reason,
            truncated=reply.truncated,
        )
        _store(
            run.pk,
            [answer],
            requests=F("requests") + reply.requests,
            usage={**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]},
        )

    ask(
        endpoint,
        template,
        conversations,
        params=run.params,
        seed=run.seed,
        on_reply=on_reply,
        should_stop=lambda: not still_mine(),
    )
