"""Runs split into shards: ranges of a run's items that different workers claim and execute at
once, each with its own heartbeat and requeue, the run's progress, cancel and retry over all."""

from __future__ import annotations

import pytest
from django.db.models import Count

from evalsite.errors import ServiceError
from evalsite.runs import lifecycle, shards
from evalsite.runs.models import RunShard
from generation.models import Answer, GenerationRun
from generation.registry import language_model_register, prompt_set_import, storage_relative
from generation.runs import GENERATION_RUN, generation_run_create
from tests.conftest import FIXTURES, wait_for
from tests.generation.conftest import kill_mid_run

# Generous guards against a hung worker only; nothing here asserts on time.
HUNG = 900


def _prompt_set(count: int, name: str = "sharded"):
    lines = (FIXTURES / "prompts_ja.jsonl").read_bytes().splitlines(keepends=True)[:count]
    return prompt_set_import(name=name, data=b"".join(lines), filename="p.jsonl")


def _model(tiny_model_dir, max_new_tokens: int = 16):
    return language_model_register(
        name="tiny",
        name_or_path=storage_relative(tiny_model_dir),
        prompt_format="line_sft",
        generation_defaults={"max_new_tokens": max_new_tokens},
    )


def _shards(run) -> list[RunShard]:
    return list(shards.of_run(run).order_by("index"))


def _texts(run) -> dict[tuple[int, int], str]:
    return {(a.question_id, a.turn): a.text for a in Answer.objects.filter(run=run)}


def test_ranges_cover_every_item_once_in_pieces_differing_by_one_at_most():
    assert shards.ranges(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shards.ranges(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    for items in range(1, 30):
        for count in range(1, items + 1):
            bounds = shards.ranges(items, count)
            covered = [i for start, stop in bounds for i in range(start, stop)]
            assert covered == list(range(items))
            sizes = {stop - start for start, stop in bounds}
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


@pytest.mark.django_db
def test_the_shards_option_is_checked_and_capped_by_the_items(tiny_model_dir):
    prompt_set, model = _prompt_set(4), _model(tiny_model_dir)
    for bad in (0, -2, "2", 1.5, True):
        with pytest.raises(ServiceError, match="shards must be a whole number of at least 1"):
            generation_run_create(model=model, prompt_set=prompt_set, enqueue=False, shards=bad)
    one = generation_run_create(model=model, prompt_set=prompt_set, enqueue=False, shards=1)
    assert _shards(one) == []
    # Executed in this process unless asked: one piece, whatever the workers.
    inline = generation_run_create(model=model, prompt_set=prompt_set, enqueue=False)
    assert _shards(inline) == []
    # Never more shards than questions.
    many = generation_run_create(model=model, prompt_set=prompt_set, enqueue=False, shards=50)
    assert [(s.index, s.start, s.stop) for s in _shards(many)] == [
        (0, 0, 1),
        (1, 1, 2),
        (2, 2, 3),
        (3, 3, 4),
    ]


@pytest.mark.django_db
def test_a_kind_that_cannot_be_split_refuses_more_than_one_shard(tiny_model_dir):
    from evalsite.runs.kinds import kind_of
    from generation.models import FineTuneRun

    kind = kind_of(FineTuneRun)
    assert kind.work_shard is None
    run = FineTuneRun(pk=1)
    with pytest.raises(ServiceError, match="cannot be split into shards"):
        shards.split(run, 2, enqueue=False)
    assert shards.split(run, 1, enqueue=False) == 1


@pytest.mark.slow
@pytest.mark.django_db
def test_a_split_run_executed_inline_answers_as_the_unsplit_run_does(
    tiny_model_dir, one_torch_thread
):
    prompt_set, model = _prompt_set(7), _model(tiny_model_dir)
    split = generation_run_create(
        model=model, prompt_set=prompt_set, enqueue=False, shards=3, batch_size=2
    )
    assert [(s.start, s.stop) for s in _shards(split)] == [(0, 3), (3, 5), (5, 7)]
    lifecycle.execute(GENERATION_RUN, split.pk)
    split.refresh_from_db()
    assert split.status == GenerationRun.Status.SUCCEEDED, split.error
    assert (split.done, split.total, split.answers.count()) == (7, 7, 7)
    assert split.attempts == 1 and split.started_at and split.finished_at
    assert {s.status for s in _shards(split)} == {RunShard.Status.SUCCEEDED}
    assert all(s.attempts == 1 and s.worker for s in _shards(split))

    whole = generation_run_create(model=model, prompt_set=prompt_set, enqueue=False, batch_size=2)
    lifecycle.execute(GENERATION_RUN, whole.pk)
    # Greedy: the same answers whichever shard (and batch) a question fell in.
    assert _texts(split) == _texts(whole)


@pytest.mark.slow
@pytest.mark.django_db
def test_cancel_and_retry_cover_every_shard_and_the_run_succeeds_with_its_last_shard(
    tiny_model_dir, one_torch_thread
):
    prompt_set, model = _prompt_set(4), _model(tiny_model_dir, max_new_tokens=4)
    run = generation_run_create(model=model, prompt_set=prompt_set, enqueue=False, shards=2)
    lifecycle.cancel(run)
    assert {s.status for s in _shards(run)} == {RunShard.Status.CANCELLED}
    # A cancelled run's shard is not claimable.
    assert lifecycle.execute(GENERATION_RUN, run.pk, 0) is None

    lifecycle.retry(run, send=False)
    assert {s.status for s in _shards(run)} == {RunShard.Status.QUEUED}
    lifecycle.execute(GENERATION_RUN, run.pk, 1)
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.RUNNING
    assert (run.done, run.answers.count()) == (2, 2)
    assert [s.status for s in _shards(run)] == [RunShard.Status.QUEUED, RunShard.Status.SUCCEEDED]
    # A finished shard is not claimed again.
    assert lifecycle.execute(GENERATION_RUN, run.pk, 1) is None

    lifecycle.execute(GENERATION_RUN, run.pk, 0)
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error
    assert (run.done, run.answers.count()) == (4, 4)
    # Cancelling a finished run is refused, and touches no shard.
    with pytest.raises(ServiceError):
        lifecycle.cancel(run)
    assert {s.status for s in _shards(run)} == {RunShard.Status.SUCCEEDED}


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_shard_has_its_shard_requeued_and_finished_nothing_twice(
    celery_worker_factory, tiny_model_dir, settings
):
    settings.WORKER_CENSUS_CACHE_SECONDS = 0  # the census of this moment, not a cached one
    settings.RUN_SHARDS_DEFAULT = 0  # one shard per worker (the suite's default is one piece)
    prompt_set = _prompt_set(100, name="fixture")
    model = _model(tiny_model_dir, max_new_tokens=48)
    first, second = celery_worker_factory(), celery_worker_factory()
    from evalsite.runs.workers import census

    wait_for(
        lambda: len(census().consumers("gpu")) == 2,
        timeout=HUNG,
        message=f"both workers to consume gpu; logs:\n{first.log_tail()}\n{second.log_tail()}",
    )
    # No shards option: one shard per worker consuming the run's queue.
    run = generation_run_create(model=model, prompt_set=prompt_set, batch_size=2)
    assert [(s.start, s.stop) for s in _shards(run)] == [(0, 50), (50, 100)]

    questions = list(prompt_set.questions.order_by("position").values_list("pk", flat=True))

    def both_generating() -> bool:
        rows = _shards(run)
        answered = [
            Answer.objects.filter(run=run, question__in=questions[s.start : s.stop]).count()
            for s in rows
        ]
        return (
            all(s.status == RunShard.Status.RUNNING for s in rows)
            and len({s.worker for s in rows}) == 2
            and min(answered) >= 4
        )

    kill_mid_run(first, both_generating, "both shards part-way", timeout=HUNG)
    held = {s.index: s.worker for s in _shards(run)}
    kept = set(Answer.objects.filter(run=run).values_list("pk", flat=True))
    assert len(kept) < 100

    wait_for(
        lambda: GenerationRun.objects.get(pk=run.pk).status not in GenerationRun.ACTIVE,
        timeout=HUNG,
        message=f"the surviving worker to finish the run; log:\n{second.log_tail()}",
    )
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.SUCCEEDED, run.error + second.log_tail()
    assert (run.done, run.total, run.answers.count()) == (100, 100, 100)
    per_question = Answer.objects.filter(run=run).values("question", "turn").annotate(n=Count("id"))
    assert {row["n"] for row in per_question} == {1}
    assert kept <= set(Answer.objects.filter(run=run).values_list("pk", flat=True))
    rows = _shards(run)
    assert {s.status for s in rows} == {RunShard.Status.SUCCEEDED}
    # The dead worker's shard was requeued by the periodic check and claimed again, by the
    # worker still alive; the other shard was claimed once.
    survivor = {s.worker for s in rows if s.attempts == 1}
    requeued = [s for s in rows if s.attempts >= 2]
    assert len(requeued) == 1 and len(survivor) == 1
    assert requeued[0].worker in survivor and held[requeued[0].index] not in survivor
    assert "requeued shards with a stale heartbeat" in second.log_tail(500_000)
