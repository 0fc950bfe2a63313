"""A study's votes as preference pairs: people's majority per comparison, ties and split votes
dropped, judge and excluded votes left out, the prompt rendered with the tuned model's template,
JSONL in TRL's shape; the command; the import of such files with clear errors."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Vote
from annotation.preferences import majority, preferences_export
from annotation.quality import annotator_exclude
from evalsite.accounts.models import AuditEntry
from evalsite.errors import ServiceError
from generation.importers import ImportFormatError
from generation.models import PreferenceDataset
from generation.registry import language_model_register
from generation.training.preferences import (
    preference_dataset_import,
    preferences_from_study,
    preferences_parse,
)
from tests.annotation.preference_votes import (
    annotators,
    careful_answer,
    curt_answer,
    question_text,
    two_model_study,
    vote_all,
)

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

# Per question position, what each of three people chose (canonical sides).
PLAN = {
    1: ("a", "a", "b"),  # a wins 2-1
    2: ("b", "b", "tie"),  # b wins
    3: ("tie", "tie", "a"),  # most said tie: dropped
    4: ("a", "b", "tie"),  # no majority: dropped
    5: ("a", "a", "a"),  # a; the judge's votes for b must not count
    6: ("b", "a", "a"),  # a, unless the third person is excluded (then 1-1: dropped)
}


@pytest.fixture
def study():
    study = two_model_study(questions=len(PLAN), voters=3)
    people = annotators(3)
    assert vote_all(study, people, lambda person, pos: PLAN[pos][person]) == 18
    five = study.comparisons.get(question__position=5)
    for _ in range(4):  # a judge run's verdicts: voter "judge", no annotator
        Vote.objects.create(comparison=five, outcome="b", voter=Vote.Voter.JUDGE)
    study.people = people
    return study


def _by_question(dataset: PreferenceDataset) -> dict[str, tuple[str, str]]:
    return {p.question: (p.chosen, p.rejected) for p in dataset.pairs.all()}


def test_majority_rule():
    from collections import Counter

    assert majority(Counter(a=2, b=1)) == "a"
    assert majority(Counter(b=2, tie=1)) == "b"
    assert majority(Counter(tie=2, a=1)) is None
    assert majority(Counter(a=1, b=1, tie=1)) is None
    assert majority(Counter(a=1, b=1)) is None
    assert majority(Counter()) is None


def test_export_keeps_peoples_majority_and_drops_ties(study, tmp_path):
    out = tmp_path / "prefs.jsonl"
    dataset = preferences_export(study=study, name="prefs", out=out)
    pairs = _by_question(dataset)
    assert pairs == {
        question_text(1): (careful_answer(1), curt_answer(1)),
        question_text(2): (curt_answer(2), careful_answer(2)),
        question_text(5): (careful_answer(5), curt_answer(5)),
        question_text(6): (careful_answer(6), curt_answer(6)),
    }
    assert dataset.stats["dropped"] == {"tie": 1, "split": 1}
    assert dataset.stats["votes"] == 18  # the judge's four are not among them
    assert (dataset.source_study_id, dataset.source_study_name) == (study.pk, study.name)
    five = dataset.pairs.get(question=question_text(5))
    assert five.origin["votes"] == {"a": 3, "tie": 0, "b": 0}
    assert five.origin["comparison"] == study.comparisons.get(question__position=5).pk
    # Without a model the prompt is the plain question.
    assert five.prompt == question_text(5)

    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 4
    for record in records:
        assert all(isinstance(record[key], str) for key in ("prompt", "chosen", "rejected"))
    entry = AuditEntry.objects.get(action=AuditEntry.Action.PREFERENCES_EXPORT)
    assert entry.details["pairs"] == 4 and entry.object_id == str(study.pk)


def test_excluded_annotators_votes_do_not_count(study):
    annotator_exclude(study=study, annotator_id=study.people[2].pk, excluded=True)
    pairs = _by_question(preferences_export(study=study, name="prefs-excluded"))
    # Question 6 is now 1-1 and question 3 a plain a-less tie; the others keep their winner.
    assert set(pairs) == {question_text(1), question_text(2), question_text(5)}


def test_prompt_is_rendered_with_the_tuned_models_template(study):
    model = language_model_register(
        name="tuned-later", name_or_path="preference-tests/tuned", prompt_format="rinna"
    )
    dataset = preferences_export(study=study, model=model, name="prefs-rinna")
    pair = dataset.pairs.get(question=question_text(1))
    assert pair.prompt == f"ユーザー: {question_text(1)}<NL>システム: "
    assert dataset.rendered_for == "tuned-later"


def test_the_registered_source_is_what_generation_reaches(study):
    dataset = preferences_from_study(study.name, name="via-hook")
    assert dataset.pairs.count() == 4 and dataset.source_study_name == study.name


def test_a_study_without_a_clear_majority_gives_an_error_and_no_data_set():
    study = two_model_study(questions=2, voters=2)
    vote_all(study, annotators(2), lambda person, pos: "tie")
    with pytest.raises(ServiceError, match="gives no preference pairs") as refused:
        preferences_export(study=study, name="nothing")
    # The real reason: every voted comparison's most-chosen outcome is a tie.
    assert "2 have a tie as their most-chosen outcome" in str(refused.value)
    assert "multi-turn" not in str(refused.value)
    assert not PreferenceDataset.objects.filter(name="nothing").exists()


def test_export_command(study, tmp_path, capsys):
    language_model_register(name="tiny", name_or_path="preference-tests/tiny")
    out = tmp_path / "prefs.jsonl"
    call_command(
        "export_preferences", study.name, "--model", "tiny", "--out", str(out), "--name", "prefs"
    )
    printed = capsys.readouterr().out
    print(printed)
    assert "4 pairs from 6 voted comparisons (18 people's votes)" in printed
    assert "prompts rendered with the template of 'tiny'" in printed
    assert "dropped: split 1, tie 1" in printed
    assert len(out.read_text(encoding="utf-8").splitlines()) == 4
    with pytest.raises(CommandError, match="no study named"):
        call_command("export_preferences", "no-such-study")


def test_import_round_trips_and_reports_file_line_and_field(study, tmp_path):
    out = tmp_path / "round.jsonl"
    preferences_export(study=study, name="first", out=out)
    again = preference_dataset_import(name="again", data=out.read_bytes(), filename="round.jsonl")
    assert _by_question(again) == _by_question(PreferenceDataset.objects.get(name="first"))

    good = json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}, ensure_ascii=False)
    cases = {
        json.dumps({"prompt": "p", "chosen": "c"}): "bad.jsonl, line 2: no 'rejected' field",
        json.dumps({"prompt": "p", "chosen": "c", "rejected": "c"}): "line 2: 'chosen' and",
        json.dumps({"prompt": [{"role": "user"}], "chosen": "c", "rejected": "r"}): (
            "line 2: field 'prompt' must be a string, got list"
        ),
        json.dumps({"prompt": "p", "chosen": " ", "rejected": "r"}): "field 'chosen' is empty",
    }
    for bad, message in cases.items():
        with pytest.raises(ImportFormatError) as caught:
            preferences_parse(f"{good}\n{bad}\n".encode(), "bad.jsonl")
        assert message in str(caught.value)
    with pytest.raises(ImportFormatError):
        preference_dataset_import(name="broken", data=b'{"prompt": 1}\n', filename="x.jsonl")
    assert not PreferenceDataset.objects.filter(name="broken").exists()
