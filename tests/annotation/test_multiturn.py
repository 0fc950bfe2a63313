"""Studies on multi-turn questions: pairs of whole conversations, the earlier turns on the pair
payload, ``turn`` in the exports and the battle exchange, and answer provenance in exports."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.core.management import call_command

from annotation import exchange, results_export, studies
from annotation.exports import PROVENANCE_COLUMNS
from annotation.models import Comparison, IdentityFlag, Vote
from evalsite.errors import ServiceError
from generation.models import Answer, GenerationRun, PromptTemplate
from generation.registry import language_model_register
from generation.runs import generation_run_create_imported
from tests.conftest import logged_in

from .conftest import HISTORY_FIELDS, MODEL_SPECS, PAIR_FIELDS, earlier_answer_text

pytestmark = pytest.mark.django_db


def _vote_all(client, study, choice: str = "left") -> list[dict]:
    """Every pair the client is given, voted on; the payloads seen."""
    seen = []
    while (response := client.get(f"/api/studies/{study.pk}/next/")).status_code == 200:
        data = response.json()
        seen.append(data)
        posted = client.post(
            f"/api/assignments/{data['token']}/vote/",
            {"choice": choice},
            content_type="application/json",
        )
        assert posted.status_code == 201, posted.content
    return seen


def test_a_two_turn_study_compares_the_answers_to_the_last_turn(make_study):
    study = make_study(models=3, questions=2, turns=2)

    comparisons = list(
        Comparison.objects.filter(study=study).select_related("answer_a", "answer_b")
    )
    assert len(comparisons) == 2 * 3  # questions x model pairs
    for c in comparisons:
        assert c.answer_a.turn == c.answer_b.turn == 2
        assert (c.answer_a.run_id, c.answer_b.run_id) == (c.run_a_id, c.run_b_id)
        assert c.answer_a.question_id == c.answer_b.question_id == c.question_id


def test_a_run_missing_a_turn_of_a_question_has_no_pair_on_it(make_runs):
    built = make_runs(models=2, questions=2, turns=2)
    first, second = built.prompt_set.questions.order_by("position")
    # A third model answered question 1 only in its first turn, question 2 in both.
    model = language_model_register(name="otter-1b", name_or_path="otters/otter-1b")
    partial = generation_run_create_imported(
        model=model,
        prompt_set=built.prompt_set,
        answers={first.pk: ["一つ目だけ"], second.pk: ["一つ目", "二つ目"]},
    )

    study = studies.study_create(name="partial", runs=[*built.runs, partial])

    with_partial = Comparison.objects.filter(study=study, run_b=partial)
    assert {c.question_id for c in with_partial} == {second.pk}
    assert Comparison.objects.filter(study=study).count() == 2 + 2  # the full pair + 2 with it
    # Runs with no complete conversation in common make no study.
    lonely = generation_run_create_imported(
        model=language_model_register(name="heron-1b", name_or_path="herons/heron-1b"),
        prompt_set=built.prompt_set,
        answers={first.pk: ["はい", "いいえ"]},
    )
    with pytest.raises(ServiceError, match=studies.NO_COMMON_QUESTIONS):
        studies.study_create(name="none", runs=[partial, lonely])


def test_the_pair_payload_holds_the_earlier_turns_of_each_side(make_study, annotator):
    study = make_study(models=2, questions=1, turns=2, k=1)
    built = study.built
    run_of = {built.texts[(run.pk, 1)]: run.pk for run in built.runs}
    client = logged_in(annotator)

    data = client.get(f"/api/studies/{study.pk}/next/").json()

    assert list(data) == PAIR_FIELDS
    question = built.prompt_set.questions.get()
    assert data["question"] == question.turns[-1]  # the last user turn
    assert len(data["history"]) == 1
    turn = data["history"][0]
    assert list(turn) == HISTORY_FIELDS
    assert turn["question"] == question.turns[0]
    # Each side's earlier reply is its own: the same run as its last reply.
    left_run, right_run = run_of[data["left"]], run_of[data["right"]]
    assert turn["left"] == built.turn_texts[(left_run, 1, 1)]
    assert turn["right"] == built.turn_texts[(right_run, 1, 1)]
    assert turn["left"] != turn["right"]
    assert "<strong>要点</strong>" in turn["left_html"]
    assert turn["question_html"].startswith("<p>質問1")
    _vote_all(client, study)
    assert Vote.objects.filter(comparison__study=study).count() == 1


def test_a_single_turn_pair_has_an_empty_history(make_study, annotator):
    study = make_study(models=2, questions=1, k=1)

    data = logged_in(annotator).get(f"/api/studies/{study.pk}/next/").json()

    assert data["history"] == []


def _naming_earlier(model_index: int, position: int, turn: int) -> str:
    name, _, maker = MODEL_SPECS[model_index]
    return f"私は{name}です。{maker}によって開発されました。\n" + earlier_answer_text(
        model_index, position, turn
    )


def test_identity_flags_are_found_and_masked_on_every_turn(make_study, annotator):
    study = make_study(models=2, questions=1, turns=3, k=1, earlier=_naming_earlier)

    flagged = IdentityFlag.objects.filter(study=study).values_list("answer__turn", "answer_id")
    assert {turn for turn, _ in flagged} == {1, 2}
    assert len({answer for _, answer in flagged}) == 4  # the earlier turns of both runs
    assert not IdentityFlag.objects.filter(study=study, masked=False).exists()
    data = logged_in(annotator).get(f"/api/studies/{study.pk}/next/").json()
    assert len(data["history"]) == 2
    for turn in data["history"]:
        for side in ("left", "right", "left_html", "right_html"):
            assert "[…]" in turn[side]
            assert "私は" not in turn[side] and "開発" not in turn[side]
            assert not any(name in turn[side] for name, _, _ in MODEL_SPECS)


def test_battles_carry_turn_and_every_turn_and_round_trip(make_study, annotator, tmp_path):
    study = make_study(models=2, questions=2, turns=2, k=1)
    _vote_all(logged_in(annotator), study, "left")

    text = results_export.export(study=study, fmt="battles")[0]
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 2 and all(line["turn"] == 2 for line in lines)
    built = study.built
    names = {m.name: run.pk for m, run in zip(built.models, built.runs, strict=True)}
    for line in lines:
        position = built.prompt_set.questions.get(position=int(line["question_id"])).position
        for side in ("a", "b"):
            run = names[line[f"model_{side}"]]
            assert [t["role"] for t in line[f"conversation_{side}"]] == [
                "user",
                "assistant",
                "user",
                "assistant",
            ]
            replies = [t["content"] for t in line[f"conversation_{side}"][1::2]]
            assert replies == [built.turn_texts[(run, position, t)] for t in (1, 2)]
    votes = list(csv.DictReader(io.StringIO(results_export.export(study=study, fmt="votes")[0])))
    assert [row["turn"] for row in votes] == ["2", "2"]

    # Into a new study: its questions have both turns, its runs every reply.
    path = tmp_path / "battles.jsonl"
    path.write_text(text, encoding="utf-8")
    call_command("import_votes", str(path), "--study", "copy")
    copy = studies.Study.objects.get(name="copy")
    assert [len(q.turns) for q in copy.prompt_set.questions.all()] == [2, 2]
    runs = copy.study_runs.values("run_id")
    assert Answer.objects.filter(run__in=runs).count() == 2 * 2 * 2
    assert all(c.answer_a.turn == 2 for c in Comparison.objects.filter(study=copy))
    again = [
        json.loads(line)
        for line in results_export.export(study=copy, fmt="battles")[0].splitlines()
    ]
    keep = ("model_a", "model_b", "winner", "turn", "conversation_a", "conversation_b")
    assert sorted([{k: x[k] for k in keep} for x in again], key=json.dumps) == sorted(
        [{k: x[k] for k in keep} for x in lines], key=json.dumps
    )
    # And back into the study it came from.
    exchange.votes_import(data=text.encode(), filename="battles.jsonl", study_name=study.name)
    assert Vote.objects.filter(comparison__study=study).count() == 4


def test_a_turn_that_does_not_match_the_question_is_refused_naming_the_line(make_study, annotator):
    # Issue 28: a turn below the question's (an earlier turn) is accepted and kept by turn
    # (tests/annotation/test_turn_votes.py); a turn beyond the question's is refused.
    study = make_study(models=2, questions=2, turns=2, k=1)
    _vote_all(logged_in(annotator), study)
    lines = results_export.export(study=study, fmt="battles")[0].splitlines()
    wrong = json.loads(lines[1])
    wrong["turn"] = 3

    for bad in (wrong,):
        data = (lines[0] + "\n" + json.dumps(bad, ensure_ascii=False) + "\n").encode()
        with pytest.raises(exchange.VoteImportError) as caught:
            exchange.votes_import(data=data, filename="b.jsonl", study_name=study.name)
        message = str(caught.value)
        assert message.startswith("b.jsonl, line 2: turn is 3, but question ")
        assert "has 2 user turn(s)" in message
    assert Vote.objects.filter(comparison__study=study).count() == 2  # nothing written


def _provenance(study) -> None:
    """Answers made the way generation records them: the first run's were cut off."""
    template = PromptTemplate.objects.filter(name="line_sft").order_by("-version").first()
    first, second = study.built.runs
    GenerationRun.objects.filter(pk__in=[first.pk, second.pk]).update(template=template)
    Answer.objects.filter(run=first).update(
        stop_reason="length", truncated=True, prompt_tokens=31, new_tokens=256, model_revision="a1"
    )
    Answer.objects.filter(run=second).update(
        stop_reason="eos", prompt_tokens=29, new_tokens=40, model_revision="b2"
    )


def test_provenance_is_in_the_exports_only_when_asked_for(make_study, annotator, tmp_path):
    study = make_study(models=2, questions=2, turns=2, k=1)
    _provenance(study)
    _vote_all(logged_in(annotator), study)

    plain = list(csv.DictReader(io.StringIO(results_export.export(study=study, fmt="votes")[0])))
    assert not set(PROVENANCE_COLUMNS) & set(plain[0])
    battles_plain = results_export.export(study=study, fmt="battles")[0]
    assert "provenance" not in battles_plain and "stop_reason" not in battles_plain

    rows = list(
        csv.DictReader(
            io.StringIO(results_export.export(study=study, fmt="votes", provenance=True)[0])
        )
    )
    first_model = study.built.models[0].name
    for row in rows:
        assert set(PROVENANCE_COLUMNS) <= set(row)
        a_first = row["model_a"] == first_model
        a, b = ("a", "b") if a_first else ("b", "a")
        assert (row[f"{a}_stop_reason"], row[f"{a}_truncated"], row[f"{a}_new_tokens"]) == (
            "length",
            "1",
            "256",
        )
        assert (row[f"{b}_stop_reason"], row[f"{b}_truncated"], row[f"{b}_prompt_tokens"]) == (
            "eos",
            "0",
            "29",
        )
        assert row["a_template"].startswith("line_sft v")
    for line in results_export.export(study=study, fmt="battles", provenance=True)[0].splitlines():
        record = json.loads(line)
        for side in ("a", "b"):
            made = record[f"provenance_{side}"]
            cut = record[f"model_{side}"] == first_model
            assert made["truncated"] is cut and made["model_revision"] == ("a1" if cut else "b2")
    out = tmp_path / "votes.csv"
    call_command("export_results", study.name, "--format", "votes", "--provenance", "--out", out)
    assert "a_stop_reason" in out.read_text(encoding="utf-8")


def test_staff_download_provenance_and_see_truncated_counts(
    client, staff_user, make_study, annotator
):
    study = make_study(models=2, questions=2, turns=2, k=1)
    _provenance(study)
    _vote_all(logged_in(annotator), study)
    client.force_login(staff_user)

    page = client.get(f"/studies/{study.pk}/results/").content.decode()
    table = page.split('id="truncation"')[1].split("</table>")[0]
    first, second = (m.name for m in study.built.models)
    assert f'<td>{first}</td><td class="num"><strong class="error">4</strong></td>' in table
    assert f'<td>{second}</td><td class="num">0</td><td class="num">4</td>' in table
    for url in (
        f"/studies/{study.pk}/results/download/votes/?provenance=1",
        f"/api/studies/{study.pk}/export/votes/?provenance=1",
    ):
        assert "a_truncated" in client.get(url).content.decode()
    assert (
        "a_truncated" not in client.get(f"/api/studies/{study.pk}/export/votes/").content.decode()
    )
    # Annotators cannot fetch any of it.
    annotator_client = logged_in(annotator)
    for url in (
        f"/studies/{study.pk}/results/download/votes/?provenance=1",
        f"/api/studies/{study.pk}/export/battles/?provenance=1",
    ):
        assert annotator_client.get(url).status_code in (302, 403)


def test_preferences_from_a_multi_turn_study_are_refused_for_the_real_reason(make_study, annotator):
    from annotation.preferences import preferences_export
    from evalsite.errors import ServiceError

    study = make_study(models=2, questions=2, turns=2, k=1)
    _vote_all(logged_in(annotator), study, "left")
    with pytest.raises(ServiceError) as refused:
        preferences_export(study=study, name="two-turn-prefs")
    message = str(refused.value)
    assert "2 voted comparison(s) are of multi-turn conversations" in message
    assert "only single-turn questions give pairs" in message
    assert "tie" not in message and "majority" not in message
