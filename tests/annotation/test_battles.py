"""FastChat battle JSONL and Rakuda tournaments: parsing, writing, errors (no db)."""

from __future__ import annotations

import io
import json

import pytest

from annotation import battles
from annotation.battles import BattleFormatError, BattleRecord, parse_battles, write_battles

QUESTION = "四国地方の４つの県名を挙げてください。"


def conversation(answer: str, question: str = QUESTION) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


RECORDS = [
    BattleRecord(
        model_a="line-3.6b",
        model_b="rinna-3.6b",
        winner="model_a",
        question_id=81,
        judge="annotator_1",
        tstamp=1690000000.5,
        conversation_a=conversation("徳島県、香川県、愛媛県、高知県です。"),
        conversation_b=conversation("わかりません。"),
        turn=1,
        extra={"anony": True},
    ),
    BattleRecord("rinna-3.6b", "open-calm-7b", "tie (bothbad)", question_id="q-2", judge="gpt-4"),
    BattleRecord("open-calm-7b", "line-3.6b", "model_b", question_id=3),
    BattleRecord("line-3.6b", "open-calm-7b", "tie", conversation_a=conversation("はい")),
]


def valid_line(**changes) -> str:
    obj = {"question_id": 1, "model_a": "x", "model_b": "y", "winner": "model_a", "judge": "j"}
    obj.update(changes)
    return json.dumps({k: v for k, v in obj.items() if v is not _DROP}, ensure_ascii=False)


_DROP = object()


def test_written_battles_read_back_equal():
    text = write_battles(RECORDS)

    parsed = parse_battles(text)

    assert parsed == RECORDS
    assert write_battles(parsed) == text
    assert len(text.splitlines()) == 4
    assert QUESTION in text  # UTF-8 kept, not \u-escaped
    first = json.loads(text.splitlines()[0])
    assert list(first)[:4] == ["question_id", "model_a", "model_b", "winner"]
    assert first["turn"] == 1 and first["anony"] is True


def test_battles_are_read_from_a_path_bytes_lines_or_a_file(tmp_path):
    text = write_battles(RECORDS)
    path = tmp_path / "battles.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # with a byte-order mark

    assert parse_battles(path) == RECORDS
    assert parse_battles(str(path)) == RECORDS
    assert parse_battles(text.encode()) == RECORDS
    assert parse_battles(text.splitlines()) == RECORDS
    assert parse_battles(io.StringIO(text)) == RECORDS
    assert parse_battles(io.BytesIO(text.encode())) == RECORDS
    assert [r.line for r in parse_battles("\n" + text)] == [2, 3, 4, 5]


def test_a_json_array_of_battles_is_read_too():
    text = "[\n" + ",\n".join(write_battles(RECORDS).splitlines()) + "\n]\n"

    assert parse_battles(text) == RECORDS
    assert parse_battles("[]") == []


def test_records_expose_outcome_question_and_answers():
    first, bothbad, b_won, only_a = RECORDS

    assert (first.outcome, bothbad.outcome, b_won.outcome) == ("a", "tie", "b")
    assert first.question_text() == QUESTION
    assert first.answer_a() == "徳島県、香川県、愛媛県、高知県です。"
    assert first.answer_b() == "わかりません。"
    assert only_a.answer_b() is None
    assert battles.assistant_answer([{"role": "assistant", "content": "early"}]) is None
    battle = first.to_battle()
    assert (battle.model_a, battle.model_b, battle.outcome, battle.question) == (
        "line-3.6b",
        "rinna-3.6b",
        "a",
        "81",
    )
    assert only_a.to_battle().question == QUESTION  # no question_id: the question text
    assert only_a.question_key() == QUESTION


def test_blank_lines_are_skipped_and_an_empty_file_has_no_battles():
    assert parse_battles("") == []
    assert len(parse_battles("\n" + valid_line() + "\n\n" + valid_line() + "\n")) == 2


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ('{"model_a": "x",', "not valid JSON"),
        ("[1, 2]", battles.NOT_AN_OBJECT.format(kind="an array")),
        (valid_line(winner=_DROP), battles.MISSING_FIELD.format(field="winner")),
        (valid_line(model_b=_DROP), battles.MISSING_FIELD.format(field="model_b")),
        (valid_line(winner="a"), battles.UNKNOWN_WINNER.format(value="a")),
        (valid_line(model_b="x"), battles.SAME_MODELS.format(name="x")),
        (valid_line(model_a=""), battles.NOT_A_NAME.format(field="model_a", value="")),
        (valid_line(model_a=7), battles.NOT_A_NAME.format(field="model_a", value=7)),
        (valid_line(question_id=[1]), battles.BAD_QUESTION_ID.format(value=[1])),
        (valid_line(question_id=_DROP), battles.NO_QUESTION),
        (valid_line(turn=0), battles.BAD_TURN_COUNT.format(value=0)),
        (valid_line(turn="2"), battles.BAD_TURN_COUNT.format(value="2")),
        (valid_line(turn=True), battles.BAD_TURN_COUNT.format(value=True)),
        (valid_line(judge=3), battles.BAD_JUDGE.format(value=3)),
        (valid_line(tstamp="noon"), battles.BAD_TSTAMP.format(value="noon")),
        (
            valid_line(conversation_a="hi"),
            battles.BAD_CONVERSATION.format(field="conversation_a", kind="a string"),
        ),
        (
            valid_line(conversation_b=[{"role": "user"}]),
            battles.BAD_TURN.format(field="conversation_b", turn=1),
        ),
    ],
)
def test_every_error_names_its_line(bad_line, problem):
    text = valid_line() + "\n\n" + bad_line + "\n" + valid_line() + "\n"

    with pytest.raises(BattleFormatError) as caught:
        parse_battles(text)

    assert str(caught.value).startswith("line 3: ")
    assert problem in str(caught.value)
    assert caught.value.line == 3


def test_bytes_that_are_not_utf8_name_their_line():
    data = (valid_line() + "\n").encode() + b'{"model_a": "\xff"}\n'

    with pytest.raises(BattleFormatError, match=r"^line 2: not UTF-8 text"):
        parse_battles(data)
    with pytest.raises(BattleFormatError, match=r"^line 2: not UTF-8 text"):
        parse_battles(io.BytesIO(data))


def test_errors_in_a_json_array_name_the_record_and_its_line():
    text = "[\n" + valid_line() + ",\n" + valid_line(winner="draw") + "\n]"

    with pytest.raises(BattleFormatError, match=r"^record 2 \(line 3\): unknown winner 'draw'"):
        parse_battles(text)
    with pytest.raises(BattleFormatError, match=r"^line 2: expected ',' or '\]'"):
        parse_battles("[\n" + valid_line() + " " + valid_line() + "]")
    with pytest.raises(BattleFormatError, match=r"^line 3: not valid JSON"):
        parse_battles("[\n" + valid_line() + ",\n{oops}\n]")


def test_nothing_is_returned_when_a_later_line_is_bad():
    text = valid_line() + "\n" + valid_line() + "\n" + valid_line(winner="?") + "\n"

    with pytest.raises(BattleFormatError, match="^line 3: "):
        parse_battles(text)


def rakuda(*matches, reviewer="prompts/gpt4_reviewer.jsonl") -> dict:
    return {"metadata": {"reviewer_path": reviewer}, "model_metadata": {}, "matches": list(matches)}


def match(score, model1="m1", model2="m2", qid="Q1"):
    return {
        "model1_id": model1,
        "model2_id": model2,
        "question_id": qid,
        "question": QUESTION,
        "response1": "一つ目の答え",
        "response2": "二つ目の答え",
        "referee_comments": "コメント",
        "score": score,
    }


def test_a_rakuda_tournament_becomes_battles_and_unparsable_scores_are_dropped():
    records = battles.rakuda_tournament_to_battles(
        rakuda(match(1), match(2, qid="Q2"), match(3, qid="Q3"), match(-1, qid="Q4"))
    )

    assert [r.winner for r in records] == ["model_a", "model_b", "tie"]
    first = records[0]
    assert (first.model_a, first.model_b, first.question_id, first.judge) == (
        "m1",
        "m2",
        "Q1",
        "gpt4_reviewer",
    )
    assert first.question_text() == QUESTION
    assert (first.answer_a(), first.answer_b()) == ("一つ目の答え", "二つ目の答え")
    assert first.extra == {"referee_comments": "コメント"}
    assert parse_battles(write_battles(records)) == records


def test_a_rakuda_tournament_is_read_from_text_or_a_path(tmp_path):
    obj = rakuda(match(1))
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")

    assert battles.rakuda_tournament_to_battles(path) == battles.rakuda_tournament_to_battles(obj)
    assert battles.rakuda_tournament_to_battles(json.dumps(obj), judge="me")[0].judge == "me"


@pytest.mark.parametrize(
    ("tournament", "message"),
    [
        ({"matches": "none"}, "input: " + battles.NOT_RAKUDA),
        (rakuda(match(1), match(4)), "match 2: " + battles.UNKNOWN_SCORE.format(value=4)),
        (
            rakuda(match(1), {k: v for k, v in match(1).items() if k != "response2"}),
            "match 2: " + battles.MISSING_FIELD.format(field="response2"),
        ),
        (rakuda(match(1, model2="m1")), "match 1: " + battles.SAME_MODELS.format(name="m1")),
    ],
)
def test_rakuda_errors_name_the_match(tournament, message):
    with pytest.raises(BattleFormatError) as caught:
        battles.rakuda_tournament_to_battles(tournament)

    assert str(caught.value) == message
