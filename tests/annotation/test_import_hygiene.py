"""Vote imports are idempotent on real data (issue 27): a Rakuda tournament imported twice adds
nothing the second time and says so; a file that really holds one judgment twice keeps both."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from annotation import exchange
from annotation.models import Comparison, Study, Vote

pytestmark = pytest.mark.django_db

TOURNAMENT = "rakuda/hist_ea2b4dc/jrank/tournaments/rakuda_v1_gpt4.jsonl"


def test_a_rakuda_tournament_imported_twice_adds_nothing_the_second_time(external_data):
    path = external_data / TOURNAMENT
    matches = len(json.loads(path.read_text(encoding="utf-8"))["matches"])
    first, second = io.StringIO(), io.StringIO()
    call_command("import_votes", str(path), "--study", "rakuda twice", stdout=first)
    study = Study.objects.get(name="rakuda twice")
    votes = Vote.objects.filter(comparison__study=study)
    counts = sorted(Comparison.objects.filter(study=study).values_list("pk", "vote_count"))
    assert votes.count() == matches
    assert f"({matches} new, 0 already imported;" in first.getvalue()

    call_command("import_votes", str(path), "--study", "rakuda twice", stdout=second)
    assert f"imported 0 votes into study 'rakuda twice' (0 new, {matches} already imported;" in (
        second.getvalue()
    )
    assert votes.count() == matches
    assert sorted(Comparison.objects.filter(study=study).values_list("pk", "vote_count")) == counts
    # Every vote carries its row's key; no two share one in a comparison.
    assert not votes.filter(import_key="").exists()
    assert votes.values("comparison", "import_key").distinct().count() == matches


def test_a_judgment_the_file_holds_twice_is_kept_twice_and_found_again(external_data):
    path = external_data / TOURNAMENT
    tournament = json.loads(path.read_text(encoding="utf-8"))
    tournament["matches"] = tournament["matches"][:3] + tournament["matches"][:1]
    data = json.dumps(tournament, ensure_ascii=False).encode()
    first = exchange.votes_import(data=data, filename="dup.json", study_name="dup")
    assert (first.votes, first.already) == (4, 0)
    # The same file again, and a longer one holding it: only the new rows come in.
    again = exchange.votes_import(data=data, filename="dup.json", study_name="dup")
    assert (again.votes, again.already) == (0, 4)
    # A judge's verdicts on the same rows are other votes (voter kind is part of the key).
    judged = exchange.votes_import(data=data, filename="dup.json", study_name="dup", voters="judge")
    assert (judged.votes, judged.already) == (4, 0)
    assert Vote.objects.filter(comparison__study__name="dup").count() == 8
