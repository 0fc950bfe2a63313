"""Identity flags a team can trust: names and roles the question gave are no self-identification,
the finder meets its goal on the labelled real answers, and flags are reviewed (mask, keep, or a
whole kind) before a study opens, which then keeps those decisions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from annotation import studies
from annotation.identity import MASK, find_identity_spans, identity_terms
from annotation.models import IdentityFlag
from evalsite.accounts.models import AuditEntry
from evalsite.errors import ServiceError
from tests.conftest import logged_in

REPO = Path(__file__).resolve().parents[2]
WORDS = ["OpenAI", "ChatGPT", "Google", "Meta", "Stability", "LINE"]


def _bench():
    """bench/identity.py: the labelled set's reader and scorer, shared with the bench."""
    spec = importlib.util.spec_from_file_location("bench_identity", REPO / "bench" / "identity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_identity"] = module
    spec.loader.exec_module(module)
    return module


def _kinds(text: str, question: str = "", names=(), makers=()) -> list[tuple[str, str]]:
    terms = identity_terms(names=names, makers=makers, words=WORDS)
    return [(s.kind, s.text) for s in find_identity_spans(text, terms, question=question)]


# --- the finder --------------------------------------------------------------------------------


def test_a_role_the_question_asks_for_is_not_a_self_identification():
    question = "のび太になりきって、今日学校であったことを話してください。"
    assert _kinds("私はのび太です。今日は宿題を忘れました。", question) == []
    # A Latin name given as the role, too.
    question = "Sherlock Holmesとして答えてください。犯人は誰ですか？"
    assert _kinds("私はSherlock Holmesです。犯人は執事です。", question) == []
    # The same self-introduction with no role asked for gives a model name away.
    assert _kinds("私はVicunaです。犯人は執事です。", "犯人は誰ですか？") == [
        ("self_intro", "私はVicunaです")
    ]
    # Asked to play a cat, a model that says it is an AI still identifies itself.
    found = _kinds("私はAIアシスタントなので猫にはなれません。", "猫になりきってください。")
    assert found == [("self_intro", "私はAIアシスタントなので")]


def test_a_name_the_question_holds_is_not_flagged_in_the_answer():
    question = "Googleの検索エンジンはどのように順位を決めていますか？"
    assert _kinds("私の理解では、Googleはリンクの数と質を見ています。", question) == []
    # A model's own name that the question does not hold is.
    found = _kinds("私はzebra-7bです。", "自己紹介してください。", names=["zebra-7b"])
    assert ("name", "zebra-7b") in found


def test_opinions_government_documents_and_english_nouns_are_not_flagged():
    assert _kinds("私は、憲法改正に賛成です。") == []
    assert _kinds("首相官邸のスタッフが作成した文書に基づいて行われます。") == []
    assert _kinds("It provides stability and continuity. Stability: a strong point.") == []
    assert _kinds("Googleも使えないんですか？") == []


def test_real_self_identifications_are_flagged_in_japanese_and_english():
    assert _kinds("私はOpenAIによって開発されたAI言語モデルです。")
    assert _kinds("AI言語モデルとして、個人的な意見は持っていません。")
    assert _kinds("I'm just an AI, I don't have personal opinions.")
    assert _kinds("I apologize, but I'm a large language model, I cannot do that.")
    assert _kinds("As an AI developed by OpenAI, I cannot browse.")


def test_the_finder_meets_the_goal_on_the_labelled_real_answers(external_data):
    bench = _bench()
    answers, terms = bench.labelled_answers(external_data)
    assert len(answers) >= 100
    assert sum(a.label for a in answers) >= 5
    precision, recall = bench.score(answers, bench.new_finder(terms))
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)


def test_the_labelled_set_holds_references_and_labels_but_no_answer_text(external_data):
    bench = _bench()
    answers, _ = bench.labelled_answers(external_data)
    stored = (REPO / "fixtures" / "identity_labels.csv").read_text(encoding="utf-8")
    assert stored.splitlines()[0] == "source,model,question_id,label,note"
    # No answer's opening 20 characters appear in the file.
    assert not [a for a in answers if len(a.text) >= 20 and a.text[:20] in stored]


# --- review before opening ---------------------------------------------------------------------


def _answers(model_index: int, position: int) -> str:
    if model_index == 0:
        return f"私はzebrafalcon-7b-sftです。回答{position}。"
    if model_index == 1:
        return f"AIアシスタントとしてChatGPTのように答えます。回答{position}。"
    return f"普通の回答{position}。"


@pytest.mark.django_db
def test_reviewed_flags_open_as_decided_and_unreviewed_ones_masked(make_study, admin_user):
    study = make_study(models=2, questions=2, open_now=False, answers=_answers)
    flags = IdentityFlag.objects.filter(study=study)
    assert flags.exists() and not flags.filter(reviewed_at__isnull=False).exists()
    word = flags.filter(kind="word")
    names = flags.filter(kind="name")
    keep_one = names.order_by("pk").first()

    done = studies.identity_flags_review(
        study=study, kinds={"word": "keep"}, flags={keep_one.pk: "keep"}, user=admin_user
    )
    assert done["reviewed"] == word.count() + 1
    studies.study_open(study=study, user=admin_user)

    assert not word.filter(masked=True).exists()  # kept: the whole kind
    assert not IdentityFlag.objects.get(pk=keep_one.pk).masked  # kept: one flag
    unreviewed = flags.filter(reviewed_at__isnull=True)
    assert unreviewed.exists() and not unreviewed.filter(masked=False).exists()
    entry = AuditEntry.objects.filter(action="study.open").latest("pk")
    assert entry.details["identity_flags_unreviewed"] == unreviewed.count()


@pytest.mark.django_db
def test_a_review_is_checked_whole_before_anything_changes(make_study, admin_user):
    study = make_study(models=2, questions=1, open_now=False, answers=_answers)
    other = make_study(models=2, questions=1, open_now=False, answers=_answers)
    flag = IdentityFlag.objects.filter(study=study).first()
    foreign = IdentityFlag.objects.filter(study=other).first()
    for kwargs, message in [
        ({"kinds": {"colour": "mask"}}, "unknown kind"),
        ({"kinds": {"word": "hide"}}, "unknown decision"),
        ({"flags": {flag.pk: "keep", foreign.pk: "keep"}}, "is not a flag of study"),
    ]:
        with pytest.raises(ServiceError, match=message):
            studies.identity_flags_review(study=study, user=admin_user, **kwargs)
    assert not IdentityFlag.objects.filter(reviewed_at__isnull=False).exists()


@pytest.mark.django_db
def test_staff_review_flags_through_the_api(make_study, staff_user, annotator):
    study = make_study(models=2, questions=1, open_now=False, answers=_answers)
    client = logged_in(staff_user)
    url = f"/api/studies/{study.pk}/identity-flags/"
    listed = client.get(url).json()
    assert {f["kind"] for f in listed} >= {"name", "word", "self_intro"}
    assert all(f["masked"] and not f["reviewed"] for f in listed)
    name_flag = next(f for f in listed if f["kind"] == "name")

    reply = client.post(
        url,
        {"kinds": {"word": "keep"}, "flags": {str(name_flag["id"]): "keep"}},
        content_type="application/json",
    )
    assert reply.status_code == 200
    after = {f["id"]: f for f in reply.json()}
    assert not after[name_flag["id"]]["masked"] and after[name_flag["id"]]["reviewed"]
    assert all(not f["masked"] for f in after.values() if f["kind"] == "word")

    bad = client.post(url, {"kinds": {"colour": "mask"}}, content_type="application/json")
    assert bad.status_code == 400 and "unknown kind" in bad.json()["detail"]
    assert logged_in(annotator).get(url).status_code == 403


@pytest.mark.django_db
def test_the_admin_review_page_lists_flags_by_kind_and_saves_decisions(make_study, admin_user):
    study = make_study(models=2, questions=1, open_now=False, answers=_answers)
    client = logged_in(admin_user)
    url = f"/admin/annotation/study/{study.pk}/identity-flags/"
    page = client.get(url).content.decode()
    assert "identity-review" in page and "mask all of this kind" in page
    assert "zebrafalcon-7b-sft" in page and MASK in page
    change = client.get(f"/admin/annotation/study/{study.pk}/change/").content.decode()
    assert url in change

    word = IdentityFlag.objects.filter(study=study, kind="word").first()
    self_intro = IdentityFlag.objects.filter(study=study, kind="self_intro").first()
    reply = client.post(url, {"kind-word": "keep", f"flag-{self_intro.pk}": "mask"})
    assert reply.status_code == 302
    word.refresh_from_db()
    self_intro.refresh_from_db()
    assert not word.masked and word.reviewed_by == admin_user
    assert self_intro.masked and self_intro.reviewed_at is not None
