"""A judge run over a study made directly in the database: its prompt, its verdicts in both
orders (chosen by the test), and the judge votes the judging app's own ``votes_make`` turns
them into. For routing, results and blinding tests that need a judge's side without running a
judge (the judge itself is tested in tests/judging)."""

from __future__ import annotations

from collections.abc import Mapping

from django.db import transaction
from django.utils import timezone

from generation.models import LanguageModel
from generation.registry import language_model_register
from judging.judge import votes_make
from judging.models import JudgePrompt, JudgeRun, Judgment

# Names and outputs no page would contain by accident, so leaks can be searched for.
JUDGE_NAME = "owlbadger-judge-v7"
PROMPT_NAME = "heronquill-pairwise-ja"
RAW_MARK = "kestrelmoth"

# Verdicts (a first, b first) for each state a comparison can be in after a judge run.
CONSISTENT_A = ("a", "a")
CONSISTENT_B = ("b", "b")
INCONSISTENT = ("a", "b")
UNPARSABLE = ("a", "unparsable")


def judge_model(name: str = JUDGE_NAME) -> LanguageModel:
    found = LanguageModel.objects.filter(name=name).first()
    return found or language_model_register(name=name, name_or_path=f"judges/{name}")


def judge_prompt(name: str = PROMPT_NAME) -> JudgePrompt:
    prompt, _ = JudgePrompt.objects.get_or_create(
        name=name,
        version=1,
        defaults={
            "kind": JudgePrompt.Kind.PAIRWISE,
            "system_prompt": "あなたは公平な審査員です。",
            "template": "質問: {{ question }}\n回答1: {{ answer_1 }}\n回答2: {{ answer_2 }}\n"
            "良い方の番号だけを最後の行に書いてください。",
            "verdict_format": JudgePrompt.VerdictFormat.LAST_LINE_123,
        },
    )
    return prompt


def raw_output(comparison_id: int, first: str, verdict: str) -> str:
    """What the judge 'said': a distinctive reason line, then the verdict line it parsed to."""
    shown = {"a": "1", "b": "2", "tie": "3"}
    if verdict == "unparsable":
        return f"{RAW_MARK}-{comparison_id}{first}: どちらとも言えません。"
    as_shown = verdict if verdict == "tie" or first == "a" else {"a": "b", "b": "a"}[verdict]
    return f"{RAW_MARK}-{comparison_id}{first}: 理由を述べます。\n{shown[as_shown]}"


@transaction.atomic
def judged_run(
    study,
    verdicts: Mapping[int, tuple[str, str]],
    *,
    judge: LanguageModel | None = None,
    prompt: JudgePrompt | None = None,
    status: str = JudgeRun.Status.SUCCEEDED,
    inconsistent: str = JudgeRun.Inconsistent.TIE,
) -> JudgeRun:
    """A judge run over ``study`` whose verdicts per comparison id are ``(shown a first, shown b
    first)`` in the comparison's own terms (a, tie, b, unparsable), with its judge votes."""
    finished = timezone.now() if status == JudgeRun.Status.SUCCEEDED else None
    run = JudgeRun.objects.create(
        judge=judge or judge_model(),
        study=study,
        prompt=prompt or judge_prompt(),
        status=status,
        inconsistent=inconsistent,
        comparison_ids=sorted(verdicts),
        done=2 * len(verdicts),
        total=2 * len(verdicts),
        started_at=finished,
        finished_at=finished,
    )
    rows = []
    for comparison_id, pair in verdicts.items():
        for first, verdict in zip(("a", "b"), pair, strict=True):
            output = raw_output(comparison_id, first, verdict)
            rows.append(
                Judgment(
                    run=run,
                    comparison_id=comparison_id,
                    first=first,
                    verdict=verdict,
                    raw_output=output,
                    outputs=[output],
                    prompt_text=f"{PROMPT_NAME} で判定: 比較 {comparison_id}",
                )
            )
    Judgment.objects.bulk_create(rows)
    votes_make(run, None)
    return run
