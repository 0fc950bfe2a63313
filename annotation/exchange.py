"""Bringing judgments made elsewhere in, in FastChat's battle shape (the export is in results).

``votes_import`` parses the whole file first and writes in one transaction: a file with any
problem changes nothing, and the error names its line.

A battle's ``turn`` counts the user turns of the conversation judged (1 when not given). On a
question with more turns than that, the vote judged an earlier turn only (FastChat's MT-bench
judgments give turn 1 and turn 2 apart): it is kept with its turn (``Vote.turn``), read only
when results ask for that turn, and never counted against K (people here vote on the whole
conversation). Each row gets a content key (``import_keys``: the row's fields and the voter
kind, hashed, with its rank among identical rows of the file), stored on its vote: importing
the same file again adds nothing and says how many rows were already there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import F

from generation.importers import ParsedQuestion
from generation.models import LanguageModel
from generation.registry import language_model_register, prompt_set_create
from generation.runs import generation_run_create_imported

from . import battles
from .battles import BattleFormatError, BattleRecord, read_judgments
from .models import Comparison, Study, StudyRun, Vote
from .studies import study_create

UNKNOWN_MODEL = "line {line}: model {name!r} is not in study {study!r} (models: {models})"
UNKNOWN_QUESTION = "line {line}: question {key!r} is not in study {study!r}'s prompt set"
NO_COMPARISON = "line {line}: study {study!r} has no comparison of {a!r} and {b!r} on {key!r}"
NO_QUESTION_TEXT = (
    "line {line}: question {key!r} has no text: a new study needs the question as the first "
    "user turn of conversation_a or conversation_b"
)
WRONG_TURN = (
    "line {line}: turn is {turn}, but question {key!r} has {turns} user turn(s) in study "
    "{study!r}; turn counts the user turns of the conversation voted on (1 when not given), so "
    "it can be at most the question's"
)
NO_RECORDS = "the file holds no judgments"
TOO_LARGE = "is {size} bytes, over the {limit}-byte limit"
NAME_CLASH = "a model named {name!r} exists with another role; rename it in the file"


class VoteImportError(ValueError):
    """A file that cannot be imported; nothing was written."""


@dataclass(frozen=True)
class ImportSummary:
    study: Study
    votes: int
    created_study: bool
    models: int
    questions: int
    # Of ``votes``, how many judged an earlier turn than their question's last, by turn.
    earlier_turns: dict[int, int] = field(default_factory=dict)
    # Rows a previous import of the same content brought in already (not added again).
    already: int = 0


def votes_import(
    *,
    data: bytes,
    filename: str,
    study_name: str,
    shown_order: bool = True,
    voters: str = Vote.Voter.PEOPLE,
) -> ImportSummary:
    """Import judgments (FastChat battles, or a Rakuda tournament) into a study, creating it
    when none has that name. ``shown_order``: the file's ``model_a`` (Rakuda's ``model1``) is
    the answer the judge saw first, kept as the vote's shown order so the first-position
    advantage can be fitted; False for files where the order is not known. ``voters``:
    ``judge`` for an LLM judge's verdicts (kept apart, never counted against K)."""
    if voters not in Vote.Voter.values:
        raise VoteImportError(f"unknown voters {voters!r}; use one of: people, judge")
    limit = settings.MAX_VOTE_IMPORT_BYTES
    if len(data) > limit:
        raise VoteImportError(f"{filename}: " + TOO_LARGE.format(size=len(data), limit=limit))
    try:
        records = read_judgments(data)
    except BattleFormatError as exc:
        raise VoteImportError(f"{filename}, {exc}") from None
    if not records:
        raise VoteImportError(f"{filename}: {NO_RECORDS}")
    with transaction.atomic():
        study = Study.objects.select_for_update().filter(name=study_name).first()
        created = study is None
        if created:
            study = _study_from_records(records, study_name, filename)
        votes = _votes_for(study, records, filename, shown_order, voters)
        for vote, key in zip(votes, import_keys(records, voters=voters), strict=True):
            vote.import_key = key
        present = set(
            Vote.objects.filter(
                comparison__study=study, import_key__in=[v.import_key for v in votes]
            ).values_list("comparison_id", "import_key")
        )
        already = sum((v.comparison_id, v.import_key) in present for v in votes)
        votes = [v for v in votes if (v.comparison_id, v.import_key) not in present]
        Vote.objects.bulk_create(votes, batch_size=1000)
        if voters == Vote.Voter.PEOPLE:  # a judge never counts against K, nor an earlier turn
            _count_votes([vote for vote in votes if vote.turn is None])
    return ImportSummary(
        study=study,
        votes=len(votes),
        created_study=created,
        models=StudyRun.objects.filter(study=study).count(),
        questions=study.prompt_set.questions.count(),
        earlier_turns=dict(sorted(Counter(v.turn for v in votes if v.turn is not None).items())),
        already=already,
    )


def import_keys(records: list[BattleRecord], *, voters: str) -> list[str]:
    """A content key per record: sha256 of its fields (not its line number) and the voter kind,
    with its rank among identical records of the same file, so a file that really holds one
    judgment twice keeps both and a second import of it finds both."""
    seen: Counter[str] = Counter()
    keys = []
    for record in records:
        content = {k: v for k, v in dataclasses.asdict(record).items() if k != "line"}
        text = json.dumps([voters, content], sort_keys=True, ensure_ascii=False, default=str)
        seen[text] += 1
        keys.append(hashlib.sha256(f"{seen[text]}:{text}".encode()).hexdigest())
    return keys


def _count_votes(votes: list[Vote]) -> None:
    """Add the new votes to their comparisons' ``vote_count`` (an increment, so votes cast in
    the app at the same time are not lost: the UPDATE waits for their row lock)."""
    per_comparison = Counter(vote.comparison_id for vote in votes)
    by_amount: dict[int, list[int]] = defaultdict(list)
    for comparison_id, n in per_comparison.items():
        by_amount[n].append(comparison_id)
    for n, ids in by_amount.items():
        Comparison.objects.filter(pk__in=ids).update(vote_count=F("vote_count") + n)


def _key(record: BattleRecord) -> str:
    return record.question_key() or ""


def _study_from_records(records: list[BattleRecord], study_name: str, filename: str) -> Study:
    """A prompt set, one imported run per model and a draft study, all from the file itself."""
    texts: dict[str, list[str]] = {}  # question key -> its user turns
    order: list[str] = []
    # model -> question key -> its replies, one per user turn
    answers: dict[str, dict[str, list[str]]] = defaultdict(dict)
    first_line: dict[str, int] = {}
    is_id: dict[str, bool] = {}
    for record in records:
        key = _key(record)
        if key not in first_line:
            first_line[key] = record.line or 0
            is_id[key] = record.question_id is not None
            order.append(key)
        # The longest conversation seen holds every turn (a turn-1 judgment may hold only one).
        turns = record.user_turns()
        if turns and turns[0] and len(turns) > len(texts.get(key, ())):
            texts[key] = turns
        for model, conversation in (
            (record.model_a, record.conversation_a),
            (record.model_b, record.conversation_b),
        ):
            replies = battles.assistant_replies(conversation)
            if len(replies) > len(answers[model].get(key, ())):
                answers[model][key] = replies
    for key in order:
        if key not in texts:
            raise VoteImportError(
                f"{filename}, " + NO_QUESTION_TEXT.format(line=first_line[key], key=key)
            )
    prompt_set = prompt_set_create(
        name=_free_prompt_set_name(f"{study_name} (imported questions)"),
        source=filename,
        questions=[
            ParsedQuestion(
                line=first_line[key],
                text=texts[key][0],
                external_id=key if is_id[key] else "",
                follow_ups=tuple(texts[key][1:]),
            )
            for key in order
        ],
    )
    questions = {q.external_id or q.text: q.pk for q in prompt_set.questions.all()}
    models = list(dict.fromkeys(m for r in records for m in (r.model_a, r.model_b)))
    runs = []
    for name in models:
        model = LanguageModel.objects.filter(name=name).first()
        if model is None:
            model = language_model_register(name=name, name_or_path="")
        # Questions without an answer in the file get empty ones so the pairs exist.
        texts_by_question = {
            questions[key]: _padded(answers[name].get(key, []), len(texts[key]))
            for key in order
            if key in questions
        }
        runs.append(
            generation_run_create_imported(
                model=model, prompt_set=prompt_set, answers=texts_by_question
            )
        )
    # K: the most votes a comparison has on the whole conversation (earlier turns aside).
    per_comparison = Counter(
        (_key(r), frozenset((r.model_a, r.model_b)))
        for r in records
        if (r.turn or 1) >= len(texts[_key(r)])
    )
    return study_create(
        name=study_name,
        runs=runs,
        votes_per_comparison=max(per_comparison.values(), default=1),
        instructions="Imported judgments.",
    )


def _padded(replies: list[str], turns: int) -> list[str]:
    """One reply per user turn: missing ones empty, extra ones dropped."""
    return [*replies[:turns], *[""] * (turns - len(replies))]


def _free_prompt_set_name(base: str) -> str:
    from generation.models import PromptSet

    name, n = base, 1
    while PromptSet.objects.filter(name=name).exists():
        n += 1
        name = f"{base} {n}"
    return name


def _votes_for(
    study: Study,
    records: list[BattleRecord],
    filename: str,
    shown_order: bool = True,
    voters: str = Vote.Voter.PEOPLE,
) -> list[Vote]:
    runs = {
        sr.model.name: sr.run_id
        for sr in StudyRun.objects.filter(study=study).select_related("model")
    }
    questions: dict[str, int] = {}
    turn_counts: dict[int, int] = {}
    for q in study.prompt_set.questions.all():
        questions.setdefault(q.text, q.pk)
        if q.external_id:
            questions[q.external_id] = q.pk
        turn_counts[q.pk] = len(q.turns)
    comparisons = {
        (c.question_id, c.run_a_id, c.run_b_id): c.pk
        for c in Comparison.objects.filter(study=study).only("pk", "question", "run_a", "run_b")
    }
    votes = []
    for record in records:
        for name in (record.model_a, record.model_b):
            if name not in runs:
                raise VoteImportError(
                    f"{filename}, "
                    + UNKNOWN_MODEL.format(
                        line=record.line, name=name, study=study.name, models=", ".join(runs)
                    )
                )
        key = _key(record)
        question_id = questions.get(key)
        if question_id is None and record.question_text():
            question_id = questions.get(record.question_text())
        if question_id is None:
            raise VoteImportError(
                f"{filename}, "
                + UNKNOWN_QUESTION.format(line=record.line, key=key, study=study.name)
            )
        turn = 1 if record.turn is None else record.turn
        if turn > turn_counts[question_id]:
            raise VoteImportError(
                f"{filename}, "
                + WRONG_TURN.format(
                    line=record.line,
                    turn=turn,
                    key=key,
                    turns=turn_counts[question_id],
                    study=study.name,
                )
            )
        run_a, run_b = runs[record.model_a], runs[record.model_b]
        outcome = record.outcome
        first_shown = "a"  # the record's model_a, shown first
        if run_a > run_b:  # comparisons are stored in canonical order
            run_a, run_b = run_b, run_a
            outcome = {"a": "b", "b": "a", "tie": "tie"}[outcome]
            first_shown = "b"
        comparison_id = comparisons.get((question_id, run_a, run_b))
        if comparison_id is None:
            raise VoteImportError(
                f"{filename}, "
                + NO_COMPARISON.format(
                    line=record.line, study=study.name, a=record.model_a, b=record.model_b, key=key
                )
            )
        votes.append(
            Vote(
                comparison_id=comparison_id,
                outcome=outcome,
                tie_kind=_tie_kind(record.winner),
                first_shown=first_shown if shown_order else "",
                imported=True,
                voter=voters,
                judge=(record.judge or "")[:200],
                turn=turn if turn < turn_counts[question_id] else None,
            )
        )
    return votes


def _tie_kind(winner: str) -> str:
    """FastChat's ``tie`` is both good, ``tie (bothbad)`` both bad; no kind for a win."""
    return {"tie": Vote.TieKind.BOTH_GOOD, "tie (bothbad)": Vote.TieKind.BOTH_BAD}.get(winner, "")
