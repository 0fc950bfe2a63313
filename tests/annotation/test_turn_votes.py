"""Judgments of an earlier turn of a two-turn question (FastChat's MT-bench judgments give turn 1
and turn 2 apart): imported, not refused; kept with their turn; never counted against K; read by
results only when asked for that turn, and exported with their own turn and conversation
(issue 28)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.core.management import CommandError, call_command

from annotation import exchange, results, results_export
from annotation.models import Comparison, Study, Vote
from tests.conftest import logged_in

from .test_multiturn import _vote_all

pytestmark = pytest.mark.django_db


def _as_turn(line: str, turn: int | None, winner: str | None = None) -> dict:
    """An exported battle made a judgment of the conversation up to ``turn`` (None: no turn
    field), its conversations cut to that turn as FastChat's turn-1 records may be."""
    record = json.loads(line)
    if turn is None:
        del record["turn"]
    else:
        record["turn"] = turn
    upto = 2 * (turn or 1)
    for side in ("conversation_a", "conversation_b"):
        record[side] = record[side][:upto]
    if winner:
        record["winner"] = winner
    return record


def _jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


@pytest.fixture
def two_turns(make_study, annotator):
    """A two-turn study (2 models x 2 questions, K = 1), voted on in the app, and its battles."""
    study = make_study(models=2, questions=2, turns=2, k=1)
    _vote_all(logged_in(annotator), study)
    lines = results_export.export(study=study, fmt="battles")[0].splitlines()
    assert len(lines) == 2 and all(json.loads(x)["turn"] == 2 for x in lines)
    return study, lines


def test_turn_one_judgments_are_imported_and_kept_by_turn(two_turns, client, staff_user):
    study, lines = two_turns
    counts_before = dict(Comparison.objects.filter(study=study).values_list("pk", "vote_count"))
    # Turn 1 given, turn not given (1, as FastChat reads it), and one of the whole conversation.
    records = [_as_turn(lines[0], 1, "model_b"), _as_turn(lines[1], None), json.loads(lines[1])]
    summary = exchange.votes_import(
        data=_jsonl(records), filename="mt.jsonl", study_name=study.name
    )
    assert summary.votes == 3 and summary.earlier_turns == {1: 2}

    imported = Vote.objects.filter(comparison__study=study, imported=True)
    assert sorted(imported.values_list("turn", flat=True), key=str) == [1, 1, None]
    # Only the whole-conversation vote counts against K.
    after = dict(Comparison.objects.filter(study=study).values_list("pk", "vote_count"))
    assert sum(after.values()) == sum(counts_before.values()) + 1

    # Results read the whole conversation unless asked for a turn.
    whole = results.study_results(study=study, bootstrap=0)
    first = results.study_results(study=study, bootstrap=0, turn=1)
    assert whole.n_votes == 3 and first.n_votes == 2

    client.force_login(staff_user)
    api = client.get(f"/api/studies/{study.pk}/results/?turn=1&bootstrap=0").json()
    assert api["turn"] == 1 and api["n_votes"] == 2
    assert client.get(f"/api/studies/{study.pk}/results/").json()["n_votes"] == 3
    page = client.get(f"/studies/{study.pk}/results/?turn=1")
    assert page.status_code == 200 and 'name="turn" min="1" value="1"' in page.content.decode()

    # The exports write each vote's own turn, and a turn-1 battle holds the first turn only.
    rows = list(
        csv.DictReader(io.StringIO(results_export.export(study=study, fmt="votes", turn=1)[0]))
    )
    assert [row["turn"] for row in rows] == ["1", "1"]
    battles = results_export.export(study=study, fmt="battles", turn=1)[0].splitlines()
    first_turns = {q.turns[0] for q in study.prompt_set.questions.all()}
    for line in battles:
        record = json.loads(line)
        assert record["turn"] == 1
        assert [t["role"] for t in record["conversation_a"]] == ["user", "assistant"]
        assert record["conversation_a"][0]["content"] in first_turns
    whole_rows = results_export.export(study=study, fmt="votes")[0].strip().splitlines()
    assert len(whole_rows) == 1 + 3


def test_a_bad_turn_option_is_a_clear_400_and_the_command_refuses_it(two_turns, client, staff_user):
    study, _ = two_turns
    client.force_login(staff_user)
    for bad in ("0", "x", "-1", "１"):
        response = client.get(f"/api/studies/{study.pk}/results/?turn={bad}")
        assert response.status_code == 400
        assert response.json()["detail"].startswith("turn must be a whole number from 1")
        page = client.get(f"/studies/{study.pk}/results/?turn={bad}")
        assert page.status_code == 400
    with pytest.raises(CommandError, match="turn must be a whole number from 1"):
        call_command("export_results", study.name, "--format", "csv", "--turn", "0")


def test_a_turn_beyond_the_question_still_refuses_the_whole_file(two_turns):
    study, lines = two_turns
    before = Vote.objects.filter(comparison__study=study).count()
    records = [_as_turn(lines[0], 1), json.loads(lines[1]) | {"turn": 3}]
    with pytest.raises(exchange.VoteImportError, match="line 2: turn is 3"):
        exchange.votes_import(data=_jsonl(records), filename="mt.jsonl", study_name=study.name)
    assert Vote.objects.filter(comparison__study=study).count() == before


def test_a_new_study_from_turn_one_and_turn_two_judgments_has_both_turns(two_turns, tmp_path):
    """The file's first judgment of each question is turn 1 with the first turn only: the
    study made from it still takes every turn from the longer conversations after it."""
    _, lines = two_turns
    records = [_as_turn(line, 1) for line in lines] + [json.loads(line) for line in lines]
    path = tmp_path / "mt.jsonl"
    path.write_bytes(_jsonl(records))
    out = io.StringIO()
    call_command("import_votes", str(path), "--study", "mt copy", stdout=out)
    assert "2 of them judged the conversation up to turn 1 only" in out.getvalue()
    copy = Study.objects.get(name="mt copy")
    assert [len(q.turns) for q in copy.prompt_set.questions.all()] == [2, 2]
    assert copy.votes_per_comparison == 1  # K from the whole-conversation judgments
    votes = Vote.objects.filter(comparison__study=copy)
    assert sorted(votes.values_list("turn", flat=True), key=str) == [1, 1, None, None]
    assert set(Comparison.objects.filter(study=copy).values_list("vote_count", flat=True)) == {1}


def test_importing_the_same_file_twice_adds_nothing_the_second_time(two_turns):
    """Each row has a content key (issue 27): a second import of one file is recognised, adds
    no vote and no count against K, and says how many rows were already there."""
    study, lines = two_turns
    data = _jsonl([_as_turn(lines[0], 1), json.loads(lines[1])])
    first = exchange.votes_import(data=data, filename="mt.jsonl", study_name=study.name)
    counts = dict(Comparison.objects.filter(study=study).values_list("pk", "vote_count"))
    second = exchange.votes_import(data=data, filename="mt.jsonl", study_name=study.name)
    assert (first.votes, first.already) == (2, 0)
    assert (second.votes, second.already) == (0, 2)
    assert Vote.objects.filter(comparison__study=study, turn=1).count() == 1
    assert Vote.objects.filter(comparison__study=study, imported=True).count() == 2
    assert dict(Comparison.objects.filter(study=study).values_list("pk", "vote_count")) == counts
