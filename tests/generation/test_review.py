"""Review of instruction data set rows: the services, the fine-tune mix under "accepted only",
the API and the admin page's plain form posts (the keyboard: test_review_browser.py)."""

from __future__ import annotations

import pytest

from evalsite.accounts.models import AuditEntry
from evalsite.errors import ServiceError
from generation.models import InstructionDataset, InstructionExample
from generation.review import (
    AUGMENTATION_PENDING,
    EDIT_WITHOUT_TEXT,
    EMPTY_FIELD,
    NO_SUCH_ROW,
    USED_BY_RUNS,
    RowReview,
    instruction_dataset_accepted_only_set,
    instruction_rows_review,
    review_counts,
)
from generation.training.data import instruction_dataset_augment, usable_examples
from generation.training.finetune import (
    EMPTY_DATASET,
    TOO_MANY_ROWS,
    finetune_run_create,
    finetune_run_examples,
)
from tests.conftest import logged_in
from tests.generation.conftest import instruction_dataset

pytestmark = pytest.mark.django_db

Review = InstructionExample.Review


def _rows(n: int, tag: str = "") -> list[tuple[str, str]]:
    return [
        (f"{tag}質問{i}: 日本の川について教えて", f"{tag}答え{i}: 信濃川が最長です。")
        for i in range(1, n + 1)
    ]


@pytest.fixture
def generated():
    return instruction_dataset("generated", _rows(6))


@pytest.fixture
def other():
    return instruction_dataset("other", _rows(3, "別"))


def _state(dataset: InstructionDataset) -> dict[int, tuple]:
    return {
        e.position: (e.review, e.edited, e.instruction, e.input, e.output, e.reviewed_by_id)
        for e in dataset.examples.all()
    }


# --- services ----------------------------------------------------------------------------------


def test_accept_edit_and_reject_change_exactly_the_rows_chosen(generated, other, staff_user):
    before, other_before = _state(generated), _state(other)
    counts = instruction_rows_review(
        dataset=generated,
        reviews=[
            RowReview(position=2, action="accept"),
            RowReview(position=3, action="reject"),
            RowReview(
                position=5, action="edit", output="答え: 最長の川は信濃川です。", input="補足"
            ),
        ],
        user=staff_user,
    )
    assert counts == {"pending": 3, "accepted": 2, "rejected": 1, "edited": 1}
    after = _state(generated)
    assert {p for p in after if after[p] != before[p]} == {2, 3, 5}
    assert after[2][:2] == (Review.ACCEPTED, False) and after[2][2:5] == before[2][2:5]
    assert after[3][:2] == (Review.REJECTED, False) and after[3][2:5] == before[3][2:5]
    assert after[5] == (
        Review.ACCEPTED,
        True,
        before[5][2],  # the instruction was not given: kept
        "補足",
        "答え: 最長の川は信濃川です。",
        staff_user.pk,
    )
    row = generated.examples.get(position=5)
    assert row.reviewed_at is not None
    assert _state(other) == other_before
    generated.refresh_from_db()
    assert generated.stats["rows_with_input"] == 1  # statistics follow the edit


def test_a_row_of_another_data_set_cannot_be_reviewed_through_this_one(generated, other):
    # "other" has a row 3, "generated" has no row 9: nothing of either changes.
    before, other_before = _state(generated), _state(other)
    with pytest.raises(ServiceError) as error:
        instruction_rows_review(
            dataset=generated,
            reviews=[
                RowReview(position=1, action="accept"),
                RowReview(position=9, action="reject"),
            ],
        )
    assert str(error.value) == NO_SUCH_ROW.format(name="generated", positions="9")
    assert _state(generated) == before and _state(other) == other_before
    instruction_rows_review(dataset=other, reviews=[RowReview(position=3, action="reject")])
    assert _state(generated) == before
    assert other.examples.get(position=3).review == Review.REJECTED


@pytest.mark.parametrize(
    ("review", "message"),
    [
        (RowReview(position=1, action="edit"), EDIT_WITHOUT_TEXT.format(position=1)),
        (
            RowReview(position=1, action="edit", output="  "),
            EMPTY_FIELD.format(position=1, field="output"),
        ),
    ],
)
def test_a_bad_edit_changes_nothing(generated, review, message):
    before = _state(generated)
    with pytest.raises(ServiceError, match=message):
        instruction_rows_review(
            dataset=generated, reviews=[RowReview(position=2, action="accept"), review]
        )
    assert _state(generated) == before


def test_a_review_is_audited_with_its_counts(generated, staff_user):
    instruction_rows_review(
        dataset=generated,
        reviews=[RowReview(position=1, action="accept"), RowReview(position=4, action="reject")],
        user=staff_user,
    )
    entry = AuditEntry.objects.get(action=AuditEntry.Action.DATASET_REVIEW)
    assert entry.user == staff_user and entry.object_id == str(generated.pk)
    assert entry.details["accepted"] == 1 and entry.details["rejected"] == 1
    assert entry.details["edited"] == 0 and entry.details["positions"] == [1, 4]
    assert entry.details["counts"] == review_counts(generated)


# --- accepted only and the fine-tune mix -------------------------------------------------------


def test_accepted_only_restricts_the_fine_tune_mix(generated, base, staff_user):
    instruction_rows_review(
        dataset=generated,
        reviews=[
            RowReview(position=1, action="accept"),
            RowReview(position=2, action="reject"),
            RowReview(position=4, action="edit", instruction="改: 日本で一番長い川は？"),
            RowReview(position=6, action="accept"),
        ],
    )
    assert usable_examples(generated).count() == 6  # not restricted yet
    generated = instruction_dataset_accepted_only_set(
        dataset=generated, accepted_only=True, user=staff_user
    )
    assert sorted(usable_examples(generated).values_list("position", flat=True)) == [1, 4, 6]
    # The run's count agrees: 4 rows of 3 accepted cannot be sampled.
    with pytest.raises(ServiceError) as error:
        finetune_run_create(base_model=base, datasets=[(generated, 4)], enqueue=False)
    assert str(error.value) == TOO_MANY_ROWS.format(name="generated", count=3, rows=4)
    whole = finetune_run_create(base_model=base, datasets=[(generated, None)], enqueue=False)
    instructions = [e.instruction for e in finetune_run_examples(whole)]
    assert instructions == [
        "質問1: 日本の川について教えて",
        "改: 日本で一番長い川は？",
        "質問6: 日本の川について教えて",
    ]
    sampled = finetune_run_create(
        base_model=base, datasets=[(generated, 2)], params={"seed": 7}, enqueue=False
    )
    picked = {e.instruction for e in finetune_run_examples(sampled)}
    assert len(picked) == 2 and picked <= set(instructions)
    entry = AuditEntry.objects.get(
        action=AuditEntry.Action.DATASET_REVIEW, details__accepted_only=True
    )
    assert entry.user == staff_user


def test_a_set_with_no_accepted_rows_cannot_be_fine_tuned_under_accepted_only(generated, base):
    generated = instruction_dataset_accepted_only_set(dataset=generated, accepted_only=True)
    with pytest.raises(ServiceError, match=EMPTY_DATASET.format(name="generated")):
        finetune_run_create(base_model=base, datasets=[(generated, None)], enqueue=False)


def test_a_set_a_run_used_is_read_only(generated, base):
    run = finetune_run_create(base_model=base, datasets=[(generated, None)], enqueue=False)
    before = _state(generated)
    lock = USED_BY_RUNS.format(name="generated", runs=run.pk)
    for review in [
        RowReview(position=1, action="accept"),
        RowReview(position=1, action="edit", output="別"),
    ]:
        with pytest.raises(ServiceError) as error:
            instruction_rows_review(dataset=generated, reviews=[review])
        assert str(error.value) == lock
    with pytest.raises(ServiceError) as error:
        instruction_dataset_accepted_only_set(dataset=generated, accepted_only=True)
    assert str(error.value) == lock
    generated.refresh_from_db()
    assert _state(generated) == before and not generated.accepted_only
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.DATASET_REVIEW).exists()


def test_edits_wait_for_an_augmentation_of_the_set_but_accept_does_not(generated, base):
    # The augmentation maps its answers back to this set's instructions when it finishes.
    augmentation = instruction_dataset_augment(dataset=generated, model=base, name="answered")
    with pytest.raises(ServiceError) as error:
        instruction_rows_review(
            dataset=generated, reviews=[RowReview(position=1, action="edit", output="別の答え")]
        )
    assert str(error.value) == AUGMENTATION_PENDING.format(
        name="generated", augmentations=augmentation.pk
    )
    instruction_rows_review(dataset=generated, reviews=[RowReview(position=1, action="accept")])
    assert generated.examples.get(position=1).review == Review.ACCEPTED


# --- API ---------------------------------------------------------------------------------------


def _url(dataset, tail=""):
    return f"/api/instruction-datasets/{dataset.pk}/{tail}"


def test_the_api_reviews_rows_and_shows_the_counts(generated, other, staff_user):
    client = logged_in(staff_user)
    response = client.post(
        _url(generated, "review/"),
        {
            "rows": [
                {"position": 1, "action": "accept"},
                {"position": 2, "action": "edit", "output": "新しい答え\n二行目"},
                {"position": 3, "action": "reject"},
            ]
        },
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"pending": 3, "accepted": 2, "rejected": 1, "edited": 1}
    assert generated.examples.get(position=2).output == "新しい答え\n二行目"
    listed = {d["name"]: d for d in client.get("/api/instruction-datasets/").json()["results"]}
    assert listed["generated"]["review"] == {
        "pending": 3,
        "accepted": 2,
        "rejected": 1,
        "edited": 1,
    }
    assert listed["other"]["review"] == {"pending": 3, "accepted": 0, "rejected": 0, "edited": 0}
    assert listed["generated"]["accepted_only"] is False

    refused = client.post(
        _url(generated, "review/"),
        {"rows": [{"position": 4, "action": "accept"}, {"position": 7, "action": "reject"}]},
        content_type="application/json",
    )
    assert refused.status_code == 400
    assert NO_SUCH_ROW.format(name="generated", positions="7") in refused.json()["detail"]
    assert generated.examples.get(position=4).review == Review.PENDING

    switched = client.patch(
        _url(generated), {"accepted_only": True}, content_type="application/json"
    )
    assert switched.status_code == 200 and switched.json()["accepted_only"] is True
    generated.refresh_from_db()
    assert generated.accepted_only


def test_the_api_refuses_the_switch_on_a_set_a_run_used(generated, base, staff_user):
    finetune_run_create(base_model=base, datasets=[(generated, None)], enqueue=False)
    response = logged_in(staff_user).patch(
        _url(generated), {"accepted_only": True}, content_type="application/json"
    )
    assert response.status_code == 400
    assert "read-only" in response.json()["accepted_only"][0]
    generated.refresh_from_db()
    assert not generated.accepted_only


def test_annotators_cannot_review(generated, annotator):
    client = logged_in(annotator)
    before = _state(generated)
    api = client.post(
        _url(generated, "review/"),
        {"rows": [{"position": 1, "action": "accept"}]},
        content_type="application/json",
    )
    assert api.status_code == 403
    page = f"/admin/generation/instructiondataset/{generated.pk}/review/"
    assert client.post(page, {"position": 1, "action": "accept"}).status_code == 302  # to login
    assert client.get(page).status_code == 302
    assert _state(generated) == before


# --- the admin page without JavaScript --------------------------------------------------------


def test_the_review_page_works_as_plain_form_posts(generated, staff_user):
    parent = generated.examples.get(position=1)
    InstructionExample.objects.filter(dataset=generated, position=3).update(
        parent=parent, operation="deepen", round=1
    )
    client = logged_in(staff_user)
    page = f"/admin/generation/instructiondataset/{generated.pk}/review/"
    shown = client.get(page)
    assert shown.status_code == 200
    html = shown.content.decode()
    assert 'id="row-1"' in html and "deepen" in html and "generated #1" in html
    assert "generation/review.js" in html and "<script>" not in html  # CSP: files only

    response = client.post(f"{page}?state=pending&page=1", {"position": "2", "action": "accept"})
    assert response.status_code == 302 and response["Location"].endswith("#row-3")
    response = client.post(
        f"{page}?state=pending&page=1",
        {
            "position": "3",
            "action": "edit",
            "instruction": "改めた指示\r\n二行目",
            "input": "",
            "output": "答え",
        },
    )
    assert response["Location"].endswith("#row-4")
    client.post(page, {"position": "4", "action": "reject"})
    assert {p: s[:2] for p, s in _state(generated).items()} == {
        1: (Review.PENDING, False),
        2: (Review.ACCEPTED, False),
        3: (Review.ACCEPTED, True),
        4: (Review.REJECTED, False),
        5: (Review.PENDING, False),
        6: (Review.PENDING, False),
    }
    assert generated.examples.get(position=3).instruction == "改めた指示\n二行目"
    pending = client.get(page).content.decode()
    assert 'id="row-2"' not in pending and 'id="row-5"' in pending
    listed = client.get("/admin/generation/instructiondataset/").content.decode()
    assert "3 pending</a>, 2 accepted, 1 rejected, 1 edited" in listed
    change = client.get(f"/admin/generation/instructiondataset/{generated.pk}/change/")
    assert "pending 3, accepted 2, rejected 1, edited 1" in change.content.decode()


def test_the_admin_switch_is_refused_once_a_run_used_the_set(generated, base, staff_user):
    client = logged_in(staff_user)
    change = f"/admin/generation/instructiondataset/{generated.pk}/change/"
    response = client.post(change, {"name": "generated", "description": "", "accepted_only": "on"})
    assert response.status_code == 302
    generated.refresh_from_db()
    assert generated.accepted_only
    instruction_rows_review(dataset=generated, reviews=[RowReview(position=1, action="accept")])
    finetune_run_create(base_model=base, datasets=[(generated, None)], enqueue=False)
    client.post(change, {"name": "generated", "description": ""})  # the box is read-only now
    generated.refresh_from_db()
    assert generated.accepted_only
    page = client.get(f"/admin/generation/instructiondataset/{generated.pk}/review/")
    assert "review-lock" in page.content.decode() and "review-form" not in page.content.decode()
