"""Small studies and judges for the judge-prompt, grading, API and admin tests, built through the
services (plain functions: call them from a test that has the database)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

from annotation.models import Study
from annotation.studies import study_create
from generation.importers import ParsedQuestion, parse_prompt_file
from generation.models import Answer, LanguageModel
from generation.registry import language_model_register, prompt_set_create
from generation.runs import generation_run_create_imported
from judging.models import JudgePrompt, JudgeRun, Judgment
from tests.conftest import EXTERNAL_DATA

ELYZA = EXTERNAL_DATA / "elyza-tasks-100" / "data" / "test" / "elyza100_jp.jsonl"
MODEL_NAMES = ("kestrelmoth-3b-sft", "otterlynx-7b-dpo", "wombatkite-1b")

_counter = itertools.count(1)


def judge_study(
    *,
    models: int = 2,
    questions: Sequence[ParsedQuestion] | int = 3,
    answers=lambda model, position: f"回答{model}-{position}: 手順を順に説明します。",
) -> Study:
    """A draft study of ``models`` imported runs over ``questions`` (a count, or parsed
    questions), answer texts from ``answers(model index, position)``."""
    n = next(_counter)
    if isinstance(questions, int):
        questions = [
            ParsedQuestion(line=p, text=f"質問{p}: 朝の散歩を続けるこつは？")
            for p in range(1, questions + 1)
        ]
    prompt_set = prompt_set_create(name=f"judging-set-{n}", questions=questions)
    ids = list(prompt_set.questions.order_by("position").values_list("pk", "position"))
    runs = []
    for index, name in enumerate(MODEL_NAMES[:models]):
        model = LanguageModel.objects.filter(name=name).first() or language_model_register(
            name=name, name_or_path=f"judging-tests/{name}"
        )
        texts = {qid: answers(index, position) for qid, position in ids}
        runs.append(
            generation_run_create_imported(model=model, prompt_set=prompt_set, answers=texts)
        )
    return study_create(name=f"judging-study-{n}", runs=runs, votes_per_comparison=2)


def idle_judge(name: str = "heronquill-judge", url: str = "http://127.0.0.1:9/v1"):
    """A judge served by an OpenAI-compatible endpoint (nothing listens at the default URL:
    runs made with it are only queued)."""
    return LanguageModel.objects.filter(name=name).first() or language_model_register(
        name=name, endpoint_url=url, endpoint_model="judge", prompt_format="plain"
    )


def elyza_questions(count: int = 100) -> list[ParsedQuestion]:
    """The first ``count`` ELYZA-tasks-100 tasks, with reference answer and criteria."""
    return parse_prompt_file(ELYZA.read_bytes(), ELYZA.name)[:count]


def elyza_records(count: int = 100) -> list[dict]:
    lines = ELYZA.read_text(encoding="utf-8").splitlines()[:count]
    return [json.loads(line) for line in lines]


def grading_run(study: Study, judge: LanguageModel, scores: dict[tuple[int, int], int | None]):
    """A grading run over ``study`` whose Judgment rows are written here: ``scores`` maps
    (model index, question position) to a score, or None for an unparsable reply."""
    prompt = JudgePrompt.objects.get(name="ja_grading", version=1)
    run = JudgeRun.objects.create(
        judge=judge, study=study, prompt=prompt, total=len(scores), status="succeeded"
    )
    runs = {sr.model.name: sr.run for sr in study.study_runs.select_related("model", "run")}
    for (model_index, position), score in scores.items():
        answer = Answer.objects.get(run=runs[MODEL_NAMES[model_index]], question__position=position)
        Judgment.objects.create(
            run=run,
            answer=answer,
            verdict=Judgment.Verdict.SCORED if score is not None else Judgment.Verdict.UNPARSABLE,
            score=score,
            raw_output=f"理由を述べます。\n評価: {score}" if score is not None else "わかりません",
        )
    run.done = len(scores)
    run.save(update_fields=["done"])
    return run


def judging_staff(django_user_model, username: str = "judging-staff", *, run_models: bool = True):
    """Staff with every permission of the generation, annotation and judging apps (without the
    right to run models when ``run_models`` is false)."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(username, password="pass", is_staff=True)
    perms = Permission.objects.filter(
        content_type__app_label__in=["generation", "annotation", "judging"]
    )
    if not run_models:
        perms = perms.exclude(codename="run_languagemodel")
    user.user_permissions.set(perms)
    return user
