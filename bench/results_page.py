"""The staff results page on a study like the demo's with 900 votes: the first load (nothing
cached: every fit is made), the next load (the fits from the cache), and how many SQL queries of
each read the vote table.

A throw-away SQLite database under a temporary ``VAR_DIR`` is migrated (or the database
``DATABASE_URL`` names, with ``--database-url``: its tables are used as they are, so give it an
empty one); the fixture questions (100, ten categories) get answers from three imported "models";
three annotators vote on every comparison through the annotator loop (300 comparisons x 3 =
900 votes). The page is then fetched with Django's test client as a staff user, the fit cache
(local memory here) cleared before the first load.

    .venv/bin/python bench/results_page.py [--database-url postgres://...] [--loads 3]

Lines to read: ``results page first load: S.SSs, N vote-table queries`` and ``results page
cached load: S.SSs, N vote-table queries``. Run it from another checkout (PYTHONPATH) to set
one version beside another; no thresholds: it measures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path: put the repository in front
# (unless PYTHONPATH names another checkout to measure).
sys.path.insert(0, os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] or str(REPO))

MODELS = ("bench-model-a", "bench-model-b", "bench-model-c")
ANNOTATORS = ("bench-annotator-1", "bench-annotator-2", "bench-annotator-3")
CHOICES = ("left", "right", "tie", "left", "right")


def _django(var_dir: Path, database_url: str | None) -> None:
    os.environ["VAR_DIR"] = str(var_dir)
    os.environ["MODEL_STORAGE"] = str(var_dir / "models")
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    else:
        os.environ.pop("DATABASE_URL", None)
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ.pop("REDIS_URL", None)
    # Production-like: no debug query log growing through the 900 votes, no debug pages.
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "bench-results-page-" + "x" * 40)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _study():
    """Three imported answer sets over the fixture questions, a study of them (K = 3), and 900
    votes of three annotators through the annotator loop."""
    from django.contrib.auth import get_user_model

    from annotation.loop.assign import next_pair
    from annotation.loop.state import loop_state
    from annotation.loop.votes import vote_record
    from annotation.studies import study_create
    from generation.registry import language_model_register, prompt_set_import
    from generation.runs import generation_run_create_imported

    prompt_set = prompt_set_import(
        name="bench results questions",
        data=(REPO / "fixtures" / "prompts_ja.jsonl").read_bytes(),
        filename="prompts.jsonl",
    )
    questions = list(prompt_set.questions.order_by("position").values_list("pk", "position"))
    runs = []
    for index, name in enumerate(MODELS):
        model = language_model_register(name=name, name_or_path=f"bench/{name}")
        answers = {qid: [f"回答{index}-{pos}: 要点を三つ挙げます。"] for qid, pos in questions}
        runs.append(
            generation_run_create_imported(model=model, prompt_set=prompt_set, answers=answers)
        )
    study = study_create(name="bench results", runs=runs, votes_per_comparison=3, open_now=True)
    users = get_user_model()
    for u, username in enumerate(ANNOTATORS):
        annotator = users.objects.create_user(username=username, password="bench-pass")
        study.pool_users.add(annotator)
        n = 0
        while True:
            found = next_pair(state=loop_state(study_id=study.pk, annotator=annotator)).assignment
            if found is None:
                break
            vote_record(assignment=found, choice=CHOICES[(n + u * 2) % len(CHOICES)])
            n += 1
    return study


def _load(client, url: str) -> tuple[float, int, int]:
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    reset_queries()
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        response = client.get(url, secure=True)  # DEBUG off redirects plain http
        seconds = time.perf_counter() - started
    assert response.status_code == 200, response.status_code
    on_votes = sum('"annotation_vote"' in q["sql"] for q in queries.captured_queries)
    return seconds, on_votes, len(queries.captured_queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="an empty database to use instead of SQLite")
    parser.add_argument("--loads", type=int, default=3, help="first loads measured (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as var_dir:
        _django(Path(var_dir), args.database_url)
        from django.contrib.auth import get_user_model
        from django.core.cache import cache
        from django.test import Client

        from annotation.models import Vote

        study = _study()
        votes = Vote.objects.filter(comparison__study=study).count()
        staff = get_user_model().objects.create_superuser(username="bench-staff", password="x")
        client = Client()
        client.force_login(staff)
        url = f"/studies/{study.pk}/results/"
        first, cached = [], []
        for _ in range(args.loads):
            cache.clear()
            first.append(_load(client, url))
            cached.append(_load(client, url))
        first.sort()
        cached.sort()
        f, c = first[len(first) // 2], cached[len(cached) // 2]
        print(f"study: {votes} votes, {len(MODELS)} models, 100 questions in 10 categories")
        print(f"results page first load: {f[0]:.2f}s, {f[1]} vote-table queries ({f[2]} in all)")
        print(f"results page cached load: {c[0]:.2f}s, {c[1]} vote-table queries ({c[2]} in all)")
        print(f"first / cached load: {f[0] / c[0]:.2f}x")


if __name__ == "__main__":
    main()
