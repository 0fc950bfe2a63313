"""The staff leaderboard: people's and the judge's strengths, a judge's grades and benchmark
scores joined for the same models, with lineage; sorting; the exports and the JSON carry the
page's numbers; only staff who may read results and benchmark runs get it.

Votes are cast through the annotation services and the judge's through the test factories;
benchmark results are written as rows (running lm-eval is tested in test_runs and friends:
here the join is what is tested)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from annotation import results
from annotation.loop.votes import vote_record
from annotation.models import Comparison, Study
from annotation.studies import study_open
from benchmarks import leaderboard_table as lt
from benchmarks.models import BenchmarkResult, BenchmarkRun
from generation.models import FineTuneRun, FineTuneRunDataset, InstructionDataset, LanguageModel
from generation.registry import language_model_register
from judging.grading import grading_results
from tests.annotation.conftest import take_pair
from tests.annotation.judged import CONSISTENT_B, judge_model, judged_run
from tests.conftest import logged_in
from tests.judging.factories import MODEL_NAMES, grading_run, judge_study

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

MC, GEN = "ja_fixture_mc", "ja_fixture_gen"
TUNED = "kestrelmoth-3b-sft-lora-sweep1"
PAGE, EXPORT, API = "/staff/leaderboard/", "/staff/leaderboard/export/", "/api/leaderboard/"


@dataclass
class Board:
    study: Study
    grading: object  # JudgeRun
    models: list[LanguageModel]  # MODEL_NAMES order, then the tuned one
    latest: dict[tuple[str, str], BenchmarkRun]  # (model, scoring) -> the run that counts


def _bench_run(model, scoring, values: dict[str, tuple[float, float]], *, status, age_days):
    finished = timezone.now() - timedelta(days=age_days)
    run = BenchmarkRun.objects.create(
        model=model,
        tasks=sorted({task for task in values}),
        scoring=scoring,
        status=status,
        done=len(values),
        total=len(values),
        finished_at=finished,
        harness_version="0.4.13",
    )
    for task, (value, stderr) in values.items():
        BenchmarkResult.objects.create(
            run=run,
            task=task,
            metric="acc" if task == MC else "exact_match",
            value=value,
            stderr=stderr,
            n=10,
            scoring=scoring,
            num_fewshot=0,
            prompt_format="raw" if scoring == "loglikelihood" else "line_sft v1",
            harness_version="0.4.13",
        )
    return run


def voted_study(annotator) -> Study:
    """Three models, three questions; people prefer them in MODEL_NAMES order (but for one
    upset on the last question, so that intervals have a width), the judge (both orders,
    consistent) the other way round."""
    study = judge_study(models=3, questions=3)
    study_open(study=study)
    rank = {m: i for i, m in enumerate(MODEL_NAMES)}
    while (assignment := take_pair(study, annotator)) is not None:
        c = Comparison.objects.select_related("run_a__model", "run_b__model", "question").get(
            pk=assignment.comparison_id
        )
        ranks = sorted((rank[c.run_a.model.name], rank[c.run_b.model.name]))
        upset = ranks == [0, 1] and c.question.position == 3
        a_wins = (rank[c.run_a.model.name] < rank[c.run_b.model.name]) != upset
        shown_a = assignment.left == "a"
        vote_record(assignment=assignment, choice="left" if a_wins == shown_a else "right")
    ids = list(Comparison.objects.filter(study=study).values_list("pk", flat=True))
    judged_run(study, dict.fromkeys(ids, CONSISTENT_B))
    return study


def benchmarks() -> tuple[list[LanguageModel], dict]:
    """Benchmark results for the first two of MODEL_NAMES (the third has none) and for a LoRA
    tuned from the first that is in no study; an older and a failed run must not count.
    Returns the models (MODEL_NAMES order, then the tuned one) and the runs that count."""
    models = [LanguageModel.objects.get(name=name) for name in MODEL_NAMES]

    base = models[0]
    tuned = language_model_register(name=TUNED, name_or_path=f"runs/{TUNED}")
    data = InstructionDataset.objects.create(name="oasst-ja-sample")
    origin = FineTuneRun.objects.create(
        base_model=base, method="lora", status="succeeded", result_model=tuned
    )
    FineTuneRunDataset.objects.create(run=origin, dataset=data, rows=200)
    models.append(tuned)

    latest = {}
    _bench_run(base, "loglikelihood", {MC: (0.1, 0.01)}, status="succeeded", age_days=3)  # older
    _bench_run(base, "loglikelihood", {MC: (0.99, 0.01)}, status="failed", age_days=0)
    latest[(base.name, "loglikelihood")] = _bench_run(
        base, "loglikelihood", {MC: (0.625, 0.0523)}, status="succeeded", age_days=1
    )
    latest[(base.name, "generative")] = _bench_run(
        base, "generative", {MC: (0.3, 0.0483), GEN: (0.25, 0.1)}, status="succeeded", age_days=1
    )
    latest[(models[1].name, "loglikelihood")] = _bench_run(
        models[1], "loglikelihood", {MC: (0.5, 0.0527)}, status="succeeded", age_days=1
    )
    latest[(TUNED, "loglikelihood")] = _bench_run(
        tuned, "loglikelihood", {MC: (0.75, 0.0457)}, status="succeeded", age_days=1
    )
    return models, latest


@pytest.fixture
def board(annotator) -> Board:
    """``voted_study``, a grading run that scores its models 5, 4 and 3 (one less on the last
    question), and ``benchmarks``."""
    study = voted_study(annotator)
    scores = {(m, p): 5 - m - (p == 3) for m in range(3) for p in (1, 2, 3)}
    grading = grading_run(study, judge_model(), scores)
    models, latest = benchmarks()
    return Board(study=study, grading=grading, models=models, latest=latest)


@pytest.fixture
def reader(django_user_model):
    """Staff who may read results and benchmark runs, and nothing else."""
    user = django_user_model.objects.create_user("reader", password="reader-pass", is_staff=True)
    wanted = [("annotation", "view_study"), ("annotation", "export_study")]
    wanted.append(("benchmarks", "view_benchmarkrun"))
    user.user_permissions.set(
        Permission.objects.get(content_type__app_label=app, codename=codename)
        for app, codename in wanted
    )
    return user


MC_LL = lt.bench_key(MC, "acc", "loglikelihood", 0)
MC_GEN = lt.bench_key(MC, "acc", "generative", 0)
GEN_GEN = lt.bench_key(GEN, "exact_match", "generative", 0)


def _page(client, query: str = ""):
    response = client.get(PAGE + query)
    assert response.status_code == 200, response.content[:500]
    return response


def _cells(response) -> dict[str, dict[str, str]]:
    """model -> column key -> the text the page shows."""
    keys = [c["key"] for c in response.context["columns"]]
    return {
        row["model"]: dict(zip(keys, (cell["text"] for cell in row["cells"]), strict=True))
        for row in response.context["rows"]
    }


def _run_url(run_id: int) -> str:
    return reverse("admin:benchmarks_benchmarkrun_change", args=[run_id])


def test_it_joins_people_the_judge_grades_and_benchmarks_for_the_same_models(board, reader):
    client = logged_in(reader)
    response = _page(client, f"?study={board.study.pk}&grading={board.grading.pk}")
    columns = [c["key"] for c in response.context["columns"]]
    assert columns == ["human", "judge", "grade", GEN_GEN, MC_GEN, MC_LL]
    cells = _cells(response)
    names = [m.name for m in board.models]
    assert sorted(cells) == sorted(names)

    people = results.study_ranking(study=board.study, voters="people")
    judge = results.study_ranking(study=board.study, voters="judge")
    assert people.names == list(MODEL_NAMES) and judge.names == list(MODEL_NAMES)[::-1]
    for name in MODEL_NAMES:
        for key, fitted in (("human", people), ("judge", judge)):
            m = fitted.model(name)
            assert cells[name][key] == f"{m.strength:.0f} [{m.ci_low:.0f}, {m.ci_high:.0f}]"
    graded = {m["model"]: m for m in grading_results(board.grading)["models"]}
    assert graded[MODEL_NAMES[0]]["mean"] == pytest.approx(14 / 3, abs=1e-4)
    for name in MODEL_NAMES:
        g = graded[name]
        assert cells[name]["grade"] == f"{g['mean']:.2f} [{g['low']:.2f}, {g['high']:.2f}]"

    base, second, third, tuned = names
    # The latest succeeded run's figure (not the older one, not the failed one), each mode its
    # own column; no figure: blank.
    assert cells[base][MC_LL] == "0.6250 ± 0.0523"
    assert cells[base][MC_GEN] == "0.3000 ± 0.0483"
    assert cells[base][GEN_GEN] == "0.2500 ± 0.1000"
    assert cells[second][MC_LL] == "0.5000 ± 0.0527" and cells[second][MC_GEN] == ""
    assert all(cells[third][key] == "" for key in (MC_LL, MC_GEN, GEN_GEN))
    # The tuned model is in no study: benchmark figures only.
    assert cells[tuned][MC_LL] == "0.7500 ± 0.0457"
    assert cells[tuned]["human"] == cells[tuned]["judge"] == cells[tuned]["grade"] == ""

    # Each figure links to what made it.
    page = response.content.decode()
    run = board.latest[(base, "loglikelihood")]
    assert f'title="run {run.pk}, n = 10, prompt: raw"><a href="{_run_url(run.pk)}">' in page
    assert _run_url(run.pk) and f'<a href="{_run_url(run.pk)}">0.6250 ± 0.0523</a>' in page
    results_url = reverse("annotation:results", args=[board.study.pk])
    assert f'href="{results_url}"' in page and f'href="{results_url}?voters=judge"' in page
    # The header says how a benchmark column was scored.
    detail = {c["key"]: c["detail"] for c in response.context["columns"]}
    assert detail[MC_LL].startswith("log-likelihood, 0-shot")
    assert detail[MC_GEN].startswith("generative, 0-shot")

    # Lineage: the tuned model names its base, method and data, and sits right under its base.
    rows = {row["model"]: row for row in response.context["rows"]}
    assert rows[tuned]["lineage"].base == base and rows[tuned]["lineage"].method == "lora"
    assert rows[tuned]["lineage"].data == ("oasst-ja-sample (200)",)
    order = [row["model"] for row in response.context["rows"]]
    assert order.index(tuned) == order.index(base) + 1
    assert f"{base} → lora" in page


def test_the_exports_and_the_json_carry_the_numbers_of_the_page(board, reader):
    client = logged_in(reader)
    query = f"study={board.study.pk}&grading={board.grading.pk}&sort=human&dir=desc"
    response = _page(client, "?" + query)
    cells = _cells(response)
    order = [row["model"] for row in response.context["rows"]]
    keys = [c["key"] for c in response.context["columns"]]
    headers = {c.key: lt.header(c) for c in response.context["table"].columns}
    assert response.context["exports"]["csv"] == f"{EXPORT}?{query}&format=csv"

    exported = client.get(f"{EXPORT}?{query}&format=csv")
    assert exported["Content-Type"].startswith("text/csv")
    assert 'filename="leaderboard.csv"' in exported["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.content.decode())))
    assert [r["model"] for r in rows] == order
    for r in rows:
        for key in keys:
            text = cells[r["model"]][key]
            value = r[headers[key]]
            if not text:
                assert value == ""
                continue
            # The same number: the page's first figure, and its error or interval.
            figures = text.replace("±", " ").replace("[", " ").replace(",", " ").strip("]").split()
            assert float(value) == float(figures[0])
            if key.startswith("bench:"):
                assert float(r[f"{headers[key]} stderr"]) == float(figures[1])
            else:
                assert float(r[f"{headers[key]} low"]) == float(figures[1])
                assert float(r[f"{headers[key]} high"]) == float(figures[2])
    base = next(r for r in rows if r["model"] == board.models[0].name)
    assert base[f"{headers[MC_LL]} prompt"] == "raw"
    assert base[f"{headers[MC_GEN]} prompt"] == "line_sft v1"
    assert base[f"{headers[MC_LL]} run"] == str(board.latest[(base["model"], "loglikelihood")].pk)
    tuned = next(r for r in rows if r["model"] == TUNED)
    assert tuned["base_model"] == board.models[0].name and tuned["method"] == "lora"

    md = client.get(f"{EXPORT}?{query}&format=md")
    assert md["Content-Type"].startswith("text/markdown")
    lines = md.content.decode().splitlines()
    assert f"| {MC} acc (generative, 0-shot) | {MC} acc (log-likelihood, 0-shot) |" in lines[2]
    table_lines = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert len(table_lines) == len(order)
    labels = {row["model"]: row["label"] for row in response.context["rows"]}
    for line, model in zip(table_lines, order, strict=True):
        parts = [p.strip() for p in line.strip("|").split(" | ")]
        assert parts[0] == labels[model]
        assert parts[2:] == [cells[model][key] for key in keys]

    api = client.get(f"{API}?{query}")
    assert api.status_code == 200
    found = api.json()
    assert found["study"] == {"id": board.study.pk, "name": board.study.name}
    assert [r["model"] for r in found["rows"]] == order
    for r in found["rows"]:
        for key in keys:
            got = r["figures"].get(key)
            assert (got["text"] if got else "") == cells[r["model"]][key]
    mc = next(r for r in found["rows"] if r["model"] == board.models[0].name)["figures"][MC_LL]
    assert mc["run"] == board.latest[(board.models[0].name, "loglikelihood")].pk
    assert mc["n"] == 10 and mc["value"] == 0.625


def test_it_sorts_by_any_column_with_missing_figures_last(board, reader):
    client = logged_in(reader)
    base = f"?study={board.study.pk}&grading={board.grading.pk}"
    names = [m.name for m in board.models]

    def order(query):
        return [row["model"] for row in _page(client, base + query).context["rows"]]

    # Human strength: best first, the model outside the study last either way.
    assert order("&sort=human&dir=desc") == names
    assert order("&sort=human&dir=asc") == [*names[:3][::-1], TUNED]
    assert order("&sort=judge&dir=desc") == [*names[:3][::-1], TUNED]
    assert order("&sort=grade&dir=desc") == names
    # A benchmark column: only three models have it; the third comes last both ways.
    assert order(f"&sort={MC_LL}&dir=desc") == [TUNED, names[0], names[1], names[2]]
    assert order(f"&sort={MC_LL}&dir=asc") == [names[1], names[0], TUNED, names[2]]
    assert order(f"&sort={GEN_GEN}&dir=asc")[0] == names[0]
    assert order("&sort=model&dir=desc") == sorted(names, reverse=True)

    # The header links: a figure first sorts best first, then the other way round.
    page = _page(client, base)
    human = next(c for c in page.context["columns"] if c["key"] == "human")
    assert "sort=human" in human["url"] and "dir=desc" in human["url"]
    assert f"study={board.study.pk}" in human["url"]
    again = _page(client, base + "&sort=human&dir=desc")
    human = next(c for c in again.context["columns"] if c["key"] == "human")
    assert "dir=asc" in human["url"] and human["aria_sort"] == "descending"


def test_a_model_without_benchmark_results_has_a_row_with_blank_scores(board, reader):
    client = logged_in(reader)
    response = _page(client, f"?study={board.study.pk}&grading=")
    third = next(r for r in response.context["rows"] if r["model"] == MODEL_NAMES[2])
    keys = [c["key"] for c in response.context["columns"]]
    texts = dict(zip(keys, (c["text"] for c in third["cells"]), strict=True))
    assert texts["human"] and texts["judge"]
    assert "grade" not in texts  # no grading run chosen
    assert texts[MC_LL] == texts[MC_GEN] == texts[GEN_GEN] == ""
    # Only one task asked for: its columns alone.
    response = _page(client, f"?study={board.study.pk}&task={GEN}")
    assert [c["key"] for c in response.context["columns"]] == ["human", "judge", "grade", GEN_GEN]
    # No study and no grading run: benchmark figures only, for the models that have them.
    response = _page(client, "?study=&grading=")
    assert sorted(r["model"] for r in response.context["rows"]) == sorted(
        [MODEL_NAMES[0], MODEL_NAMES[1], TUNED]
    )


def test_the_defaults_are_the_newest_voted_study_and_its_newest_grading_run(board, reader):
    context = _page(logged_in(reader)).context
    assert context["options"].study == board.study
    assert context["options"].grading == board.grading


def test_bad_queries_are_refused_plainly(board, reader):
    client = logged_in(reader)
    for query, message in [
        ("?sort=<b>bogus</b>", "unknown sort column"),
        ("?dir=sideways", "sort direction is asc or desc"),
        ("?study=999999", "no study"),
        (f"?grading={judged_pairwise(board)}", "no succeeded grading run"),
    ]:
        response = client.get(PAGE + query)
        assert response.status_code == 400, query
        assert response["Content-Type"].startswith("text/plain")
        assert message in response.content.decode()
    assert client.get(f"{EXPORT}?format=xlsx").status_code == 400
    assert client.get(f"{API}?sort=bogus").status_code == 400


def judged_pairwise(board) -> int:
    """A pairwise judge run of the board's study: not something grades come from."""
    return board.study.judge_runs.exclude(pk=board.grading.pk).values_list("pk", flat=True)[0]


def test_it_is_for_staff_who_may_read_results_and_benchmarks(
    board, annotator, bare_staff, staff_user, reader
):
    for user in (annotator, bare_staff, staff_user):  # staff_user may not view benchmark runs
        client = logged_in(user)
        for url in (PAGE, f"{EXPORT}?format=csv"):
            assert client.get(url).status_code in (302, 403), (user, url)
        assert client.get(API).status_code == 403
    assert logged_in(annotator).get(PAGE).status_code == 302  # to the staff sign-in
    # The staff home links to it for those who may read it.
    link = 'href="/staff/leaderboard/"'
    assert link in logged_in(reader).get("/staff/").content.decode()
    assert link not in logged_in(staff_user).get("/staff/").content.decode()
