"""Answers generated elsewhere (FastChat's ``model_answer`` JSONL) brought in as imported runs.

The whole file is parsed and checked against the prompt set before anything is written; then
every run (one per model) is written in one transaction. A file with any problem changes
nothing, and the error names the file, the line and what is wrong.
"""

from __future__ import annotations

import os
from collections import defaultdict

from django.conf import settings
from django.db import transaction

from evalsite.accounts.services import Action, audit_record
from evalsite.errors import ServiceError

from .importers import (
    DUPLICATE_ANSWER,
    ImportFormatError,
    ParsedAnswer,
    parse_answer_file,
    read_limited,
)
from .models import GenerationRun, LanguageModel, PromptSet
from .registry import language_model_register
from .runs import generation_run_create_imported

UNKNOWN_QUESTION = (
    "question_id {qid!r} is not in prompt set {name!r} (answers are matched to questions by "
    "their question_id)"
)
TURN_COUNT = (
    "question_id {qid!r} has {expected} user turn(s) in prompt set {name!r}, but the answer "
    "has {got}"
)
NO_MODEL = "no 'model_id': give one on every line, or name the model"
TWO_MODELS = (
    "'model_id' {got!r} differs from {first!r} (line {first_line}): a file imported as one "
    "model holds one model's answers"
)
NO_PROMPT_SET = "no prompt set named {name!r}"
NO_EXTERNAL_IDS = (
    "prompt set {name!r} has no question_ids, so no answer can be matched to its question; "
    "import the questions with their question_id"
)


def answers_import(
    *, data: bytes, filename: str, prompt_set: PromptSet, model_name: str = "", user=None
) -> list[GenerationRun]:
    """One imported (succeeded) run per model of the file, with one answer per question turn.

    ``model_name`` names the model of every answer (the file's ``model_id`` is then only
    checked to be one model); without it each ``model_id`` is a model, registered as an
    imported one (no weights, nothing to load) when no model has that name.
    """
    answers = parse_answer_file(data, filename, limit=settings.MAX_UPLOAD_BYTES)
    by_model = _answers_by_model(answers, filename, model_name.strip())
    questions = {
        q.external_id: q for q in prompt_set.questions.exclude(external_id="").order_by("position")
    }
    if not questions:
        raise ImportFormatError(filename, NO_EXTERNAL_IDS.format(name=prompt_set.name))
    for answer in answers:
        question = questions.get(answer.question_id)
        if question is None:
            problem = UNKNOWN_QUESTION.format(qid=answer.question_id, name=prompt_set.name)
            raise ImportFormatError(filename, problem, line=answer.line)
        if len(answer.turns) != len(question.turns):
            problem = TURN_COUNT.format(
                qid=answer.question_id,
                expected=len(question.turns),
                name=prompt_set.name,
                got=len(answer.turns),
            )
            raise ImportFormatError(filename, problem, line=answer.line)
    with transaction.atomic():
        runs = []
        for name, model_answers in by_model.items():
            model = LanguageModel.objects.filter(name=name).first()
            if model is None:
                model = language_model_register(name=name, name_or_path="", user=user)
            texts = {questions[a.question_id].pk: list(a.turns) for a in model_answers}
            run = generation_run_create_imported(model=model, prompt_set=prompt_set, answers=texts)
            audit_record(
                user=user,
                action=Action.ANSWERS_IMPORT,
                obj=run,
                model=model.name,
                prompt_set=prompt_set.name,
                questions=len(texts),
                answers=run.total,
                file=os.path.basename(filename),
            )
            runs.append(run)
    return runs


def answers_import_file(
    *, path: str | os.PathLike, prompt_set_name: str, model_name: str = "", user=None
) -> list[GenerationRun]:
    """``answers_import`` of a file on disk into the prompt set named ``prompt_set_name``."""
    prompt_set = PromptSet.objects.filter(name=prompt_set_name).first()
    if prompt_set is None:
        raise ServiceError(NO_PROMPT_SET.format(name=prompt_set_name))
    return answers_import(
        data=read_limited(path, settings.MAX_UPLOAD_BYTES),
        filename=os.fspath(path),
        prompt_set=prompt_set,
        model_name=model_name,
        user=user,
    )


def _answers_by_model(
    answers: list[ParsedAnswer], filename: str, model_name: str
) -> dict[str, list[ParsedAnswer]]:
    """The file's answers grouped by the model they go to (in order of first appearance)."""
    by_model: dict[str, list[ParsedAnswer]] = defaultdict(list)
    seen: dict[tuple[str, str], int] = {}
    first: ParsedAnswer | None = None
    for answer in answers:
        if model_name:
            if answer.model_id and first is not None and answer.model_id != first.model_id:
                problem = TWO_MODELS.format(
                    got=answer.model_id, first=first.model_id, first_line=first.line
                )
                raise ImportFormatError(filename, problem, line=answer.line)
            first = first or (answer if answer.model_id else None)
        elif not answer.model_id:
            raise ImportFormatError(filename, NO_MODEL, line=answer.line)
        model = model_name or answer.model_id
        key = (model, answer.question_id)
        if key in seen:
            problem = DUPLICATE_ANSWER.format(model=model, qid=answer.question_id, first=seen[key])
            raise ImportFormatError(filename, problem, line=answer.line)
        seen[key] = answer.line
        by_model[model].append(answer)
    return dict(by_model)
