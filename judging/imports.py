"""FastChat ``model_judgment`` files brought in as a judge's verdicts and grades.

Two shapes, one per file, read line by line (JSON Lines):

- pairwise (``gpt-4_pair.jsonl``): ``question_id, model_1, model_2, g1_winner, g2_winner,
  judge, turn`` (and the prompts and outputs ``g1_user_prompt``, ``g1_judgment``, ``g2_...``).
  Game 1 showed ``model_1`` as answer A, game 2 ``model_2``; both winners are in the models'
  terms (``model_1``, ``model_2``, ``tie``, or ``error`` when the judge's output did not parse).
- single (``gpt-4_single.jsonl``): ``question_id, model, score, judge, turn`` (and
  ``user_prompt``, ``judgment``); ``score`` -1 is FastChat's unparsable.

``judge`` is ``[judge model, judge prompt name]``: the prompt must be loaded first
(``load_judge_prompt judge_prompts.jsonl``), so each verdict is read on its prompt's scale.
Each judge model of the file becomes one judge run of the study (``JudgeRun.source`` names the
file), succeeded, its verdicts ``Judgment`` rows and, for a comparison with both games, two
judge votes (``Vote`` voter judge, imported): kept apart from people's votes as the app's own
judge runs are, never counted against K. The whole file is checked before anything is written;
importing the same file again finds its runs and adds nothing. A pairwise verdict on an earlier
turn of a multi-turn question is skipped (the study compares the last turn) and counted.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation.models import Comparison, Study, StudyRun
from evalsite.errors import ServiceError
from generation.importers import ImportFormatError, decode, json_records, read_limited
from generation.models import Answer, LanguageModel
from generation.registry import language_model_register

from .judge import votes_make
from .models import JudgePrompt, JudgeRun, Judgment
from .prompts import judge_prompt_latest

NO_RECORDS = "holds no judgments"
NOT_AN_OBJECT = "expected an object, got {kind}"
MIXED = "mixes pairwise (g1_winner) and single (score) judgments; import them as two files"
NEITHER = "is neither a pairwise judgment (g1_winner, g2_winner) nor a single one (score)"
MISSING = "{key!r} is missing"
BAD_JUDGE = "'judge' must be [judge model, judge prompt name], got {value!r}"
UNKNOWN_PROMPT = (
    "judge prompt {name!r} is not loaded; load the judge prompts the judgments were made with "
    "first (manage.py load_judge_prompt judge_prompts.jsonl)"
)
WRONG_KIND = "judge prompt {name!r} is a {kind} prompt, and this is a {shape} judgment"
UNKNOWN_QUESTION = "question {key!r} is not in study {study!r} (matched by its external id)"
UNKNOWN_MODEL = "model {name!r} is not in study {study!r} (models: {models})"
BAD_TURN = "turn must be a positive integer, got {value!r}"
NO_ANSWER = "{model!r} has no answer to turn {turn} of question {key!r}"
NO_COMPARISON = "study {study!r} has no comparison of {a!r} and {b!r} on question {key!r}"
BAD_WINNER = "{key} must be model_1, model_2, tie or error, got {value!r}"
BAD_SCORE = "score {value!r} is outside judge prompt {name!r}'s scale {low}-{high} (-1: none)"
SAME_MODEL = "model_1 and model_2 are both {name!r}"

PAIRWISE, SINGLE = "pairwise", "single"


@dataclass
class JudgmentsImported:
    study: Study
    shape: str  # pairwise or single
    runs: list[JudgeRun]
    added: int  # verdicts written
    already: int  # verdicts the runs already held (the same file imported before)
    skipped_turns: int  # pairwise verdicts on an earlier turn of a multi-turn question
    votes: int  # judge votes made
    per_judge: dict[str, int] = field(default_factory=dict)

    def message(self) -> str:
        what = "verdicts" if self.shape == PAIRWISE else "grades"
        parts = [f"{self.added} {what} imported into study {self.study.name!r}"]
        if self.already:
            parts.append(f"{self.already} were already imported (nothing added for them)")
        if self.skipped_turns:
            parts.append(
                f"{self.skipped_turns} on earlier turns of multi-turn questions skipped "
                "(the study compares the last turn)"
            )
        if self.votes:
            parts.append(f"{self.votes} judge votes made")
        runs = ", ".join(f"judge run {r.pk} ({r.judge.name})" for r in self.runs)
        return "; ".join(parts) + f": {runs}"


def judgments_load(path, *, study: Study, user=None) -> JudgmentsImported:
    """``judgments_import`` of the file at ``path``."""
    data = read_limited(path, settings.MAX_UPLOAD_BYTES)
    return judgments_import(data=data, filename=str(path), study=study, user=user)


def judgments_import(*, data: bytes, filename: str, study: Study, user=None) -> JudgmentsImported:
    """Import a FastChat ``model_judgment`` file into ``study`` (see the module's words).
    ImportFormatError names the line of the first problem; nothing is written then."""
    text = decode(data, filename)
    records = json_records(text, filename, array=False, what="judgment")
    if not records:
        raise ImportFormatError(filename, NO_RECORDS)
    context = _Context(study)
    shape = None
    parsed = []
    for line, record in records:
        try:
            found = _shape(record)
            if shape is not None and found != shape:
                raise ValueError(MIXED)
            shape = found
            parsed.append(context.pairwise(record) if shape == PAIRWISE else context.single(record))
        except ValueError as exc:
            raise ImportFormatError(filename, str(exc), line) from None
    digest = hashlib.sha256(data).hexdigest()[:16]
    source = f"{os.path.basename(filename)} (sha256 {digest})"
    with transaction.atomic():
        return _write(
            study,
            shape,
            [p for p in parsed if p is not None],
            source,
            user,
            skipped=sum(p is None for p in parsed),
        )


def _shape(record) -> str:
    if not isinstance(record, dict):
        raise ValueError(NOT_AN_OBJECT.format(kind=type(record).__name__))
    if "g1_winner" in record or "g2_winner" in record:
        return PAIRWISE
    if "score" in record:
        return SINGLE
    raise ValueError(NEITHER)


def _need(record: dict, key: str):
    if key not in record:
        raise ValueError(MISSING.format(key=key))
    return record[key]


class _Context:
    """The study's questions, models, answers and comparisons, and the loaded prompts."""

    def __init__(self, study: Study):
        self.study = study
        self.questions = {
            q.external_id: q for q in study.prompt_set.questions.all() if q.external_id
        }
        self.runs = {
            sr.model.name: sr.run_id
            for sr in StudyRun.objects.filter(study=study).select_related("model")
        }
        self.comparisons = {
            (c.question_id, c.run_a_id, c.run_b_id): c
            for c in Comparison.objects.filter(study=study).select_related("answer_a")
        }
        self.answers = {
            (a.run_id, a.question_id, a.turn): a.pk
            for a in Answer.objects.filter(run_id__in=self.runs.values()).only(
                "pk", "run", "question", "turn"
            )
        }
        self.prompts: dict[str, JudgePrompt] = {}

    def prompt(self, record: dict, shape: str) -> tuple[str, JudgePrompt]:
        judge = _need(record, "judge")
        if not (
            isinstance(judge, list)
            and len(judge) >= 2
            and all(isinstance(part, str) and part.strip() for part in judge[:2])
        ):
            raise ValueError(BAD_JUDGE.format(value=judge))
        model, name = judge[0].strip()[:200], judge[1].strip()
        if name not in self.prompts:
            row = judge_prompt_latest(name)
            if row is None:
                raise ValueError(UNKNOWN_PROMPT.format(name=name))
            self.prompts[name] = row
        row = self.prompts[name]
        wanted = JudgePrompt.Kind.PAIRWISE if shape == PAIRWISE else JudgePrompt.Kind.GRADING
        if row.kind != wanted:
            raise ValueError(WRONG_KIND.format(name=name, kind=row.kind, shape=shape))
        return model, row

    def question(self, record: dict):
        key = str(_need(record, "question_id"))
        question = self.questions.get(key)
        if question is None:
            raise ValueError(UNKNOWN_QUESTION.format(key=key, study=self.study.name))
        return key, question

    def run_of(self, name) -> int:
        run = self.runs.get(name) if isinstance(name, str) else None
        if run is None:
            models = ", ".join(self.runs)
            raise ValueError(UNKNOWN_MODEL.format(name=name, study=self.study.name, models=models))
        return run

    def pairwise(self, record: dict):
        judge, prompt = self.prompt(record, PAIRWISE)
        key, question = self.question(record)
        one, two = _need(record, "model_1"), _need(record, "model_2")
        run_1, run_2 = self.run_of(one), self.run_of(two)
        if run_1 == run_2:
            raise ValueError(SAME_MODEL.format(name=one))
        turn = _turn(record)
        winners = {}
        for game in ("g1_winner", "g2_winner"):
            value = _need(record, game)
            if value not in ("model_1", "model_2", "tie", "error"):
                raise ValueError(BAD_WINNER.format(key=game, value=value))
            winners[game] = value
        comparison = self.comparisons.get((question.pk, min(run_1, run_2), max(run_1, run_2)))
        if comparison is None:
            raise ValueError(NO_COMPARISON.format(study=self.study.name, a=one, b=two, key=key))
        if turn != comparison.answer_a.turn:
            return None  # an earlier turn: the study compares the last one
        side = {"model_1": "a" if run_1 < run_2 else "b"}
        side["model_2"] = "b" if side["model_1"] == "a" else "a"
        games = []
        for game, shown_first in (("g1", "model_1"), ("g2", "model_2")):
            winner = winners[f"{game}_winner"]
            verdict = (
                Judgment.Verdict.UNPARSABLE
                if winner == "error"
                else Judgment.Verdict.TIE
                if winner == "tie"
                else side[winner]
            )
            games.append(
                {
                    "comparison_id": comparison.pk,
                    "first": side[shown_first],
                    "verdict": verdict,
                    "prompt_text": _text(record.get(f"{game}_user_prompt")),
                    "raw_output": _text(record.get(f"{game}_judgment")),
                }
            )
        return judge, prompt, games

    def single(self, record: dict):
        judge, prompt = self.prompt(record, SINGLE)
        key, question = self.question(record)
        model = _need(record, "model")
        run = self.run_of(model)
        turn = _turn(record)
        answer = self.answers.get((run, question.pk, turn))
        if answer is None:
            raise ValueError(NO_ANSWER.format(model=model, turn=turn, key=key))
        score = _need(record, "score")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ValueError(
                BAD_SCORE.format(
                    value=score, name=prompt.name, low=prompt.score_min, high=prompt.score_max
                )
            )
        if score == -1:
            verdict, score = Judgment.Verdict.UNPARSABLE, None
        elif prompt.score_min <= score <= prompt.score_max:
            verdict, score = Judgment.Verdict.SCORED, float(score)
        else:
            raise ValueError(
                BAD_SCORE.format(
                    value=score, name=prompt.name, low=prompt.score_min, high=prompt.score_max
                )
            )
        game = {
            "answer_id": answer,
            "verdict": verdict,
            "score": score,
            "prompt_text": _text(record.get("user_prompt")),
            "raw_output": _text(record.get("judgment")),
        }
        return judge, prompt, [game]


def _turn(record: dict) -> int:
    turn = record.get("turn", 1)
    if isinstance(turn, bool) or not isinstance(turn, int) or turn < 1:
        raise ValueError(BAD_TURN.format(value=turn))
    return turn


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _judge_model(name: str) -> LanguageModel:
    found = LanguageModel.objects.filter(name=name).first()
    if found is not None:
        return found
    try:
        return language_model_register(name=name, name_or_path="", maker="imported judge")
    except ServiceError as exc:
        raise ImportFormatError(name, str(exc)) from None


def _write(study, shape, parsed, source: str, user, *, skipped: int) -> JudgmentsImported:
    by_judge: dict[str, list] = defaultdict(list)
    for judge, prompt, games in parsed:
        by_judge[judge].append((prompt, games))
    runs, added, already, votes, per_judge = [], 0, 0, 0, {}
    now = timezone.now()
    for judge_name, entries in by_judge.items():
        judge = _judge_model(judge_name)
        prompts = {p.pk: p for p, _ in entries}
        run = (
            JudgeRun.objects.select_for_update()
            .filter(study=study, judge=judge, source=source)
            .first()
        )
        if run is None:
            run = JudgeRun.objects.create(
                judge=judge,
                study=study,
                prompt=_main_prompt(list(prompts.values())),
                source=source,
                status=JudgeRun.Status.SUCCEEDED,
                started_at=now,
                finished_at=now,
                created_by=user if getattr(user, "pk", None) else None,
            )
        rows = [
            Judgment(run=run, prompt=prompt, attempts=1, outputs=[game["raw_output"]], **game)
            for prompt, games in entries
            for game in games
        ]
        before = Judgment.objects.filter(run=run).count()
        # ignore_conflicts: a verdict already held (this file imported before) stays as it is.
        Judgment.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
        held = Judgment.objects.filter(run=run).count()
        added += held - before
        already += len(rows) - (held - before)
        per_judge[judge.name] = held - before
        if shape == PAIRWISE:
            votes += votes_make(run, None, imported=True)
        JudgeRun.objects.filter(pk=run.pk).update(total=held, done=held)
        run.refresh_from_db()
        runs.append(run)
    return JudgmentsImported(
        study=study,
        shape=shape,
        runs=runs,
        added=added,
        already=already,
        skipped_turns=skipped,
        votes=votes,
        per_judge=per_judge,
    )


def _main_prompt(prompts: list[JudgePrompt]) -> JudgePrompt:
    """The run's prompt: a single-turn one without a reference when the file used one."""
    return sorted(prompts, key=lambda p: (p.multi_turn, p.reference, p.name))[0]
