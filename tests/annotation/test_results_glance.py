"""The results page reads at a glance: one read of the votes per request, the per-category fits
cached with the main fit, headed and aligned tables, "1 vote", one name per annotator, and
intervals that never read "-0"."""

from __future__ import annotations

import dataclasses
import re

import pytest
from django.core.cache import cache
from django.db import connection
from django.template import Context, Template
from django.test.utils import CaptureQueriesContext

from annotation import results
from annotation.models import Vote
from annotation.ranking.sentences import TEMPLATES, Note
from annotation.ranking.summaries import NOT_SETTLED, pair_orders
from generation.models import Question

pytestmark = pytest.mark.django_db


def _vote_all(client, user, study, choose) -> int:
    """Vote through the annotator API until nothing is left; the number of votes cast."""
    client.force_login(user)
    n = 0
    while True:
        response = client.get(f"/api/studies/{study.pk}/next/")
        if response.status_code == 204:
            return n
        token = response.json()["token"]
        voted = client.post(
            f"/api/assignments/{token}/vote/",
            {"choice": choose(n)},
            content_type="application/json",
        )
        assert voted.status_code in (200, 201), voted.content
        n += 1


def _with_categories(study, names=("writing", "math")) -> None:
    # Set up two question categories (the builder makes uncategorised questions).
    for i, question in enumerate(Question.objects.filter(prompt_set=study.prompt_set)):
        Question.objects.filter(pk=question.pk).update(category=names[i % len(names)])


def _vote_queries(captured) -> list[str]:
    return [q["sql"] for q in captured if '"annotation_vote"' in q["sql"]]


@pytest.fixture
def voted(client, make_study, annotator, other_annotator):
    study = make_study(models=3, questions=4, k=2)
    _with_categories(study)
    _vote_all(client, annotator, study, lambda i: ["left", "tie", "right"][i % 3])
    _vote_all(client, other_annotator, study, lambda i: ["right", "left"][i % 2])
    return study


def test_the_results_page_reads_the_vote_table_once_per_request(client, staff_user, voted):
    client.force_login(staff_user)
    for _ in range(2):  # first load (every fit made) and a cached one
        with CaptureQueriesContext(connection) as captured:
            page = client.get(f"/studies/{voted.pk}/results/")
        assert page.status_code == 200
        assert len(_vote_queries(captured.captured_queries)) == 1
    with CaptureQueriesContext(connection) as captured:
        api = client.get(f"/api/studies/{voted.pk}/results/")
    assert api.status_code == 200 and api.json()["n_votes"] == 24
    assert len(_vote_queries(captured.captured_queries)) == 1


def test_per_category_fits_live_in_the_main_fits_cache_entry(client, staff_user, voted):
    client.force_login(staff_user)
    key = results.fit_cache_key(study=voted, options=results.fit_options())
    assert cache.get(key) is None
    assert client.get(f"/studies/{voted.pk}/results/").status_code == 200
    cached = cache.get(key)
    assert sorted(cached.categories) == ["math", "writing"]
    assert cached.categories["math"].n_votes + cached.categories["writing"].n_votes == 24
    # The next view reads them from there: a marked cached fit is what the page shows.
    marked = results.StudyFit(
        main=cached.main,
        categories={
            name: dataclasses.replace(
                fit,
                models=[dataclasses.replace(m, name=f"cached-{name}-{m.name}") for m in fit.models],
            )
            for name, fit in cached.categories.items()
        },
    )
    cache.set(key, marked)
    body = client.get(f"/studies/{voted.pk}/results/").content.decode()
    assert "cached-math-" in body and "cached-writing-" in body
    # A new vote is a new key: nothing is invalidated by hand, and the next view refits.
    Vote.objects.filter(comparison__study=voted).latest("pk").delete()
    body = client.get(f"/studies/{voted.pk}/results/").content.decode()
    assert "cached-math-" not in body


def test_the_category_tables_have_headers_and_say_1_vote(client, staff_user, make_study, annotator):
    study = make_study(models=2, questions=3, k=1)
    _with_categories(study, names=("writing", "math", "math"))
    _vote_all(client, annotator, study, lambda i: "left")
    client.force_login(staff_user)
    body = client.get(f"/studies/{study.pk}/results/").content.decode()
    section = body[
        body.index('id="by-category"') : body.index("</section>", body.index('id="by-category"'))
    ]
    assert section.count("<thead>") == 2 and section.count('class="aligned"') == 2
    for header in ("Model pair", "Win", "Tie", "Loss", "Votes"):
        assert f">{header}</th>" in section
    assert ">1 vote</td>" in section and ">2 votes</td>" in section
    assert "1 votes" not in body


def test_one_name_per_annotator_in_every_table(
    client, staff_user, voted, annotator, other_annotator
):
    annotator.first_name, annotator.last_name = "Hanako", "Yamada"
    annotator.save(update_fields=["first_name", "last_name"])
    client.force_login(staff_user)
    body = client.get(f"/studies/{voted.pk}/results/").content.decode()
    names = re.findall(r'<td class="annotator">([^<]*)</td>', body)
    unnamed = f"annotator {other_annotator.pk}"
    # Agreement table and time-on-task table: the same two names, each twice.
    assert sorted(names) == sorted(["Hanako Yamada", unnamed] * 2)
    assert "user " not in " ".join(names)
    found = results.study_results(study=voted)
    assert {a.annotator for a in found.annotators} == {"Hanako Yamada", unnamed}
    assert {q.name for q in found.quality} == {"Hanako Yamada", unnamed}


def test_intervals_never_read_minus_zero():
    rendered = Template(
        "{% load results_text %}{% interval low high %}|{{ x|whole }}|{{ y|whole }}"
    ).render(Context({"low": -0.4, "high": 734.6, "x": -0.2, "y": None}))
    assert rendered == "0 – 735|0|–"
    (order,) = pair_orders(["a", "b"], [(0, 1, 120.0, -0.3, 734.6)], 95)
    assert "(0 to 735)" in order.sentence and "-0" not in order.sentence
    assert order.sentence.template == NOT_SETTLED and NOT_SETTLED in TEMPLATES


def test_a_note_is_plain_english_text_and_survives_the_cache():
    import pickle

    note = Note("{name} has no votes.", name="model-x")
    assert note == "model-x has no votes." and isinstance(note, str)
    again = pickle.loads(pickle.dumps(note))
    assert (again, again.template, again.values) == (note, note.template, {"name": "model-x"})
