"""The leaderboard's reads: for the chosen study and grading run, every model's human strength,
judge strength or grade, and benchmark scores, with its lineage, as a ``leaderboard_table.Table``.

Nothing is computed here that the results pages compute otherwise: strengths are the results
page's fit (``annotation.results.study_ranking``, the cached one when the page has just made
it), grades the grading run's (``judging.grading.grading_results``), lineage the model admin's
(``generation.lineage.model_lineage``). A benchmark column is one task and metric scored one way
(log-likelihood or generative) with one few-shot count, since the modes give different numbers;
each model's cell is its latest succeeded run's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Exists, OuterRef, Q
from django.urls import NoReverseMatch, reverse

from annotation.models import Study, Vote
from generation.lineage import model_lineage
from generation.models import LanguageModel
from judging.models import JudgePrompt, JudgeRun

from . import leaderboard_table as lt
from .models import BenchmarkResult, BenchmarkRun

# The fit (annotation.results: numpy, scipy) and the grades (numpy) are imported by the functions
# that read them: the URLs import this module in every process at start-up.

NOT_A_STUDY = "no study {value!r}"
NOT_A_GRADING_RUN = "no succeeded grading run {value!r}"
BAD_TASK = "a task name has no NUL character"


@dataclass
class Options:
    """What the page's form and the exports' query choose (``parse_options``)."""

    study: Study | None = None
    grading: JudgeRun | None = None
    tasks: list[str] = field(default_factory=list)  # benchmark tasks shown (empty: all)
    sort: str = lt.LINEAGE
    direction: str = lt.ASC


def grading_runs():
    """Succeeded grading runs, newest first (the page's choice of a judge's grades)."""
    return (
        JudgeRun.objects.filter(
            prompt__kind=JudgePrompt.Kind.GRADING, status=JudgeRun.Status.SUCCEEDED
        )
        .select_related("study", "judge", "prompt")
        .order_by("-created_at", "-pk")
    )


def default_study() -> Study | None:
    """The newest study people have voted in."""
    voted = Vote.objects.filter(
        comparison__study=OuterRef("pk"), voter=Vote.Voter.PEOPLE, comparison__gold=False
    )
    return Study.objects.filter(Exists(voted)).order_by("-created_at", "-pk").first()


def _id(value: str) -> int:
    """A row id from the query (0 when it cannot be one: no row has it)."""
    if value.isascii() and value.isdigit() and len(value) < 10:
        return int(value)
    return 0


def parse_options(params) -> Options:
    """Options from a query string (ValueError names what is wrong). ``study``: a study id,
    blank for none, absent for ``default_study``; ``grading``: a grading run id, blank for
    none, absent for the study's newest; ``task`` (repeated): benchmark tasks to show;
    ``sort`` a column key, ``dir`` asc or desc."""
    options = Options()
    value = params.get("study")
    if value is None:
        options.study = default_study()
    elif value:
        options.study = Study.objects.filter(pk=_id(value)).first()
        if options.study is None:
            raise ValueError(NOT_A_STUDY.format(value=value))
    value = params.get("grading")
    if value is None:
        if options.study is not None:
            options.grading = grading_runs().filter(study=options.study).first()
    elif value:
        options.grading = grading_runs().filter(pk=_id(value)).first()
        if options.grading is None:
            raise ValueError(NOT_A_GRADING_RUN.format(value=value))
    options.tasks = [task for task in params.getlist("task") if task]
    if any("\x00" in task for task in options.tasks):
        raise ValueError(BAD_TASK)
    options.sort = params.get("sort") or lt.LINEAGE
    options.direction = params.get("dir") or lt.default_direction(options.sort)
    if options.direction not in (lt.ASC, lt.DESC):
        raise ValueError(lt.UNKNOWN_DIR.format(value=options.direction))
    return options


def _url(name: str, *args, query: str = "") -> str:
    """A link if the page is there (the admin registers its pages when its app is installed)."""
    try:
        return reverse(name, args=args) + query
    except NoReverseMatch:
        return ""


# --- figures per source: {model name: Figure} --------------------------------------------------


def _strengths(study: Study, voters: str) -> tuple[dict[str, lt.Figure], float | None]:
    """The study's fit of ``voters``' votes as figures by model name, and its interval level."""
    from annotation import results

    fitted = results.study_ranking(study=study, voters=voters)
    if fitted is None:
        return {}, None
    by_label = {label: name for name, label in results.study_labels(study=study).items()}
    query = "" if voters == "people" else f"?voters={voters}"
    url = _url("annotation:results", study.pk, query=query)
    found = {
        by_label.get(m.name, m.name): lt.Figure(
            value=m.strength, low=m.ci_low, high=m.ci_high, n=m.games, url=url
        )
        for m in fitted.models
    }
    return found, fitted.confidence


def _strength_column(
    study: Study, voters: str, key: str, who: str, whose: str
) -> tuple[lt.Column, dict[str, lt.Figure]]:
    """The column of the study's strengths from ``voters``' votes, and its figures."""
    found, level = _strengths(study, voters)
    percent = f"{round((level or 0.95) * 100)}%"
    column = lt.Column(
        key=key,
        kind=key,
        title=f"{who} strength",
        detail=f"{study.name}: Elo scale, {percent} interval, {whose}",
    )
    return column, found


def _grades(run: JudgeRun) -> tuple[dict[str, lt.Figure], dict]:
    from judging.grading import grading_results

    graded = grading_results(run)
    url = _url("admin:judging_judgerun_change", run.pk)
    found = {
        m["model"]: lt.Figure(
            value=m["mean"], low=m["low"], high=m["high"], n=m["graded"], run=run.pk, url=url
        )
        for m in graded["models"]
        if m["mean"] is not None
    }
    return found, graded


def _benchmarks(tasks: list[str]) -> tuple[list[lt.Column], dict[str, dict[str, lt.Figure]]]:
    """Columns (task, metric, scoring, few-shot) and per model name the latest succeeded
    run's result in each."""
    rows = (
        BenchmarkResult.objects.filter(run__status=BenchmarkRun.Status.SUCCEEDED)
        .filter(Q(task__in=tasks) if tasks else Q())
        .order_by("run__finished_at", "run_id")  # later runs overwrite earlier ones below
        .values_list(
            "run_id",
            "run__model__name",
            "task",
            "metric",
            "scoring",
            "num_fewshot",
            "value",
            "stderr",
            "n",
            "prompt_format",
        )
    )
    columns: dict[str, lt.Column] = {}
    figures: dict[str, dict[str, lt.Figure]] = {}
    for run_id, model, task, metric, scoring, fewshot, value, stderr, n, prompt in rows:
        key = lt.bench_key(task, metric, scoring, fewshot)
        if key not in columns:
            columns[key] = lt.Column(
                key=key,
                kind=lt.BENCH,
                title=f"{task} {metric}",
                detail=f"{lt.SCORING_WORDS.get(scoring, scoring)}, {fewshot}-shot, ± stderr",
                task=task,
                metric=metric,
                scoring=scoring,
                num_fewshot=fewshot,
            )
        figures.setdefault(model, {})[key] = lt.Figure(
            value=value,
            stderr=stderr,
            n=n,
            run=run_id,
            url=_url("admin:benchmarks_benchmarkrun_change", run_id),
            prompt_format=prompt,
        )
    ordered = sorted(columns.values(), key=lambda c: (c.task, c.scoring, c.num_fewshot, c.metric))
    return ordered, figures


# --- lineage -------------------------------------------------------------------------------


def lineage_of(model: LanguageModel) -> lt.Lineage:
    """``generation.lineage.model_lineage`` in the table's terms: the direct base, the root its
    chain starts from, how many tunings lie between, and the last tuning's method and data."""
    found = model_lineage(model)
    prefs = found["preferences"] or {}
    study = prefs.get("study_name") or (str(prefs["study_id"]) if prefs.get("study_id") else "")
    return lt.Lineage(
        base=found["parent"],
        root=found["base_model"],
        depth=len(found["generations"]),
        method=found["method"],
        data=tuple(
            f"{d['name']} ({d['rows']})" if d["rows"] else d["name"] for d in found["datasets"]
        ),
        preferences=prefs.get("name", ""),
        preference_study=study,
        finetune_run=found["finetune_run_id"],
    )


# --- the table ---------------------------------------------------------------------------------


def leaderboard(options: Options) -> lt.Table:
    """The table the page, the exports and the API show (ValueError: unknown sort column)."""
    columns: list[lt.Column] = []
    figures: dict[str, dict[str, lt.Figure]] = {}  # model name -> column key -> figure
    notes: list[str] = []
    names: list[str] = []  # every model with a row: the study's, then any with a figure

    def add(column: lt.Column, found: dict[str, lt.Figure]) -> None:
        columns.append(column)
        for model, figure in found.items():
            figures.setdefault(model, {})[column.key] = figure

    study = options.study
    if study is not None:
        from annotation import results

        names += list(results.study_labels(study=study))
        column, people = _strength_column(study, "people", lt.HUMAN, "Human", "people's votes")
        add(column, people)
        if not people:
            notes.append(f"Nobody has voted in {study.name} yet.")
        if results.counted_votes(study, "judge").exists():
            add(*_strength_column(study, "judge", lt.JUDGE, "Judge", "the LLM judge's votes"))
    if options.grading is not None:
        run = options.grading
        grades, graded = _grades(run)
        names += [m["model"] for m in graded["models"]]
        add(
            lt.Column(
                key=lt.GRADE,
                kind=lt.GRADE,
                title="Judge grade",
                detail=(
                    f"grading run {run.pk} by {graded['judge']} on {run.study.name}: mean of "
                    f"{graded['score_min']}-{graded['score_max']}, "
                    f"{round(graded['level'] * 100)}% interval"
                ),
            ),
            grades,
        )
    bench_columns, bench = _benchmarks(options.tasks)
    for column in bench_columns:
        add(column, {m: f[column.key] for m, f in bench.items() if column.key in f})
    names += sorted(bench)
    names = list(dict.fromkeys(names))
    models = LanguageModel.objects.in_bulk(names, field_name="name")
    rows = [
        lt.Row(
            model=name,
            label=models[name].label,
            lineage=lineage_of(models[name]),
            figures=figures.get(name, {}),
        )
        for name in names
        if name in models
    ]
    return lt.Table(
        columns=columns,
        rows=lt.sort_rows(rows, columns, options.sort, options.direction),
        sort=options.sort,
        direction=options.direction,
        notes=notes,
    )


def context(options: Options) -> dict:
    """What a caller reports besides the table: the chosen study and grading run."""
    study, grading = options.study, options.grading
    return {
        "study": {"id": study.pk, "name": study.name} if study is not None else None,
        "grading_run": grading.pk if grading is not None else None,
        "tasks": options.tasks,
    }
