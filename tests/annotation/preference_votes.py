"""A two-model study whose people vote through the real annotator loop, for the preference
export and DPO tests (plain functions: call them from a test that has the database)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from django.contrib.auth.models import Group, User

from annotation.loop.assign import next_pair
from annotation.loop.state import loop_state
from annotation.loop.votes import vote_record
from annotation.models import Study
from annotation.studies import study_create
from generation.importers import ParsedQuestion
from generation.models import LanguageModel
from generation.registry import language_model_register, prompt_set_create
from generation.runs import generation_run_create_imported
from tests.conftest import choice_for

# Topics of the questions (and of the careful answers); the test text is our own.
TOPICS = (
    "朝の散歩", "味噌汁の作り方", "部屋の片付け", "英単語の覚え方", "植物の水やり",
    "睡眠の質", "家計簿", "自転車の手入れ", "読書の習慣", "肩こり対策",
    "お弁当作り", "雨の日の洗濯", "ストレッチ", "時間の使い方", "手紙の書き方",
    "ごみの分別", "料理の塩加減", "猫の世話", "旅行の荷造り", "早起き",
    "集中力", "節電", "お茶の入れ方", "日記", "包丁の研ぎ方",
    "風邪の予防", "花の育て方", "会議の進め方", "写真の撮り方", "水分補給",
    "靴の手入れ", "本棚の整理",
)  # fmt: skip
CURT = ("わかりません。", "知りません。", "答えられません。", "さあ。")

_counter = itertools.count(1)


def question_text(position: int) -> str:
    return f"{TOPICS[(position - 1) % len(TOPICS)]}のこつを教えてください。"


def careful_answer(position: int) -> str:
    """The answer people prefer: concrete steps about the question's topic."""
    topic = TOPICS[(position - 1) % len(TOPICS)]
    return f"{topic}は、まず小さく始めて、毎日同じ時間に続け、週に一度ふり返るのがこつです。"


def curt_answer(position: int) -> str:
    return CURT[position % len(CURT)]


def annotators(n: int, prefix: str = "voter") -> list[User]:
    group, _ = Group.objects.get_or_create(name="annotators")
    users = []
    for i in range(n):
        user = User.objects.create_user(f"{prefix}-{next(_counter)}-{i}", password="pass")
        user.groups.add(group)
        users.append(user)
    return users


def _model(name: str) -> LanguageModel:
    return LanguageModel.objects.filter(name=name).first() or language_model_register(
        name=name, name_or_path=f"preference-tests/{name}"
    )


def two_model_study(
    *,
    questions: int,
    voters: int,
    answers: Sequence[Callable[[int], str]] = (careful_answer, curt_answer),
    names: Sequence[str] = ("heronmaple-careful", "badgerfern-curt"),
) -> Study:
    """An open study of two imported runs (model 0 is side ``a`` of every comparison), K =
    ``voters``."""
    n = next(_counter)
    prompt_set = prompt_set_create(
        name=f"preference-set-{n}",
        questions=[ParsedQuestion(line=p, text=question_text(p)) for p in range(1, questions + 1)],
    )
    ids = list(prompt_set.questions.order_by("position").values_list("pk", "position"))
    runs = [
        generation_run_create_imported(
            model=_model(name), prompt_set=prompt_set, answers={q: answer(p) for q, p in ids}
        )
        for name, answer in zip(names, answers, strict=True)
    ]
    return study_create(
        name=f"preference-study-{n}", runs=runs, votes_per_comparison=voters, open_now=True
    )


def vote_all(study: Study, people: Sequence[User], decide: Callable[[int, int], str]) -> int:
    """Every person votes on every pair the loop gives them; ``decide(person index, question
    position)`` says "a", "b" or "tie" (canonical sides), turned into the choice as shown."""
    cast = 0
    for index, person in enumerate(people):
        while True:
            assignment = next_pair(state=loop_state(study_id=study.pk, annotator=person)).assignment
            if assignment is None:
                break
            outcome = decide(index, assignment.comparison.question.position)
            vote_record(assignment=assignment, choice=choice_for(assignment, outcome))
            cast += 1
    return cast
