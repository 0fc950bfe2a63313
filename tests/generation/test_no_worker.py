"""No silent waits: `generate --wait` / `finetune --wait` and the run admin pages say when no
worker consumes the run's queue, with the command that starts one; a worker that consumes it
later still takes the run. Real command processes, a real Redis broker, real workers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.utils import timezone

from evalsite.runs.workers import (
    CONSUMERS_UNKNOWN,
    INLINE_ALTERNATIVE,
    NO_CONSUMER,
    PICKED_UP,
    WORKER_COMMAND,
    Census,
    census,
    no_worker_message,
)
from generation.models import FineTuneRun, GenerationRun
from generation.registry import language_model_register, prompt_set_import
from generation.runs import generation_run_create
from generation.training.finetune import finetune_run_cancel, finetune_run_create
from tests.conftest import REPO, logged_in, this_test_database_url, wait_for
from tests.generation.conftest import register_tiny

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]

# Only guards against a hung test; nothing here asserts on time.
HUNG = 600
START_GPU_WORKER = WORKER_COMMAND.format(queue="gpu")


@pytest.fixture(autouse=True)
def _fresh_census(settings):
    # The admin asks the workers afresh on every page: no census cached by an earlier test.
    settings.WORKER_CENSUS_CACHE_SECONDS = 0


class Command:
    """A real `manage.py` command in its own process, its output (both streams) in a file."""

    def __init__(self, tmp_path: Path, *args: str, **env):
        self.log = tmp_path / f"{args[0]}.log"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", *args],
                cwd=REPO,
                env={
                    **os.environ,
                    "DATABASE_URL": this_test_database_url(),
                    "OMP_NUM_THREADS": "1",
                    # The command asks the workers after a second rather than five, and looks
                    # at its run five times a second: the same lines, sooner.
                    "WAIT_NO_WORKER_SECONDS": "1",
                    "WAIT_POLL_SECONDS": "0.2",
                    **env,
                },
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str) -> None:
        wait_for(
            lambda: text in self.output() or self.process.poll() is not None,
            timeout=HUNG,
            message=f"{text!r} in the command's output",
        )
        assert text in self.output(), self.output()

    def finish(self) -> int:
        try:
            return self.process.wait(timeout=HUNG)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture
def prompt_set():
    return prompt_set_import(
        name="ops", data="question\n空はなぜ青い?\n猫の名前は?\n".encode(), filename="ops.csv"
    )


def test_generate_wait_says_no_worker_consumes_gpu_then_a_worker_consuming_it_later_finishes_it(
    tmp_path, tiny_model_dir, prompt_set, shared_worker
):
    register_tiny(tiny_model_dir, max_new_tokens=8)
    command = Command(
        tmp_path, "generate", "--model", "tiny", "--prompt-set", "ops", "--seed", "1", "--wait"
    )

    command.wait_for_output(START_GPU_WORKER)
    said = command.output()
    assert NO_CONSUMER.format(queue="gpu") in said
    assert INLINE_ALTERNATIVE in said
    run = GenerationRun.objects.get()
    assert run.status == GenerationRun.Status.QUEUED  # it keeps waiting

    # The session's worker, idle until now, begins to consume gpu: the run queued above is
    # still in the queue (the fixture purged the queues before the test, not at the lease).
    worker = shared_worker(queues="gpu")

    assert command.finish() == 0, command.output() + worker.log_tail()
    run.refresh_from_db()
    assert run.status == GenerationRun.Status.SUCCEEDED
    said = command.output()
    assert PICKED_UP.format(label="generation run", id=run.pk, worker=run.worker) in said
    assert f"run {run.pk} succeeded: 2/2" in said


def test_finetune_wait_says_no_worker_consumes_gpu_and_keeps_waiting(
    tmp_path, base, fixture_dataset
):
    command = Command(
        tmp_path, "finetune", "--base", base.name, "--dataset", fixture_dataset.name, "--wait"
    )

    command.wait_for_output(START_GPU_WORKER)
    assert INLINE_ALTERNATIVE in command.output()
    [run] = FineTuneRun.objects.all()
    assert run.status == FineTuneRun.Status.QUEUED
    assert command.process.poll() is None  # still waiting after the warning

    finetune_run_cancel(run=run)

    assert command.finish() == 1
    assert f"fine-tune run {run.pk} cancelled" in command.output()


def test_without_a_broker_answer_the_message_says_the_workers_are_unknown(prompt_set):
    model = language_model_register(name="m", name_or_path="tiny-0")
    run = generation_run_create(model=model, prompt_set=prompt_set, enqueue=False)
    unknown = Census(known=False, taken_at=timezone.now())

    message = no_worker_message(run, unknown, inline=True)

    assert CONSUMERS_UNKNOWN.format(queue="gpu") in message
    assert START_GPU_WORKER in message and INLINE_ALTERNATIVE in message


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_run_admin_warns_about_a_queued_run_until_a_worker_consumes_gpu(
    prompt_set, staff_user, shared_worker
):
    model = language_model_register(name="m", name_or_path="tiny-0")
    # Not enqueued: a worker that starts below consumes the queue but has nothing to take.
    run = generation_run_create(model=model, prompt_set=prompt_set, enqueue=False)
    client = logged_in(staff_user)
    pages = [
        "/admin/generation/generationrun/",
        f"/admin/generation/generationrun/{run.pk}/change/",
    ]
    expected = no_worker_message(run, census())

    for page in pages:
        warnings = _messages(client.get(page))
        assert expected in warnings, (page, warnings)
        assert START_GPU_WORKER in expected

    shared_worker(queues="gpu")
    wait_for(lambda: census().consumers("gpu"), timeout=HUNG, message="the worker to answer")

    for page in pages:
        assert not any(START_GPU_WORKER in m for m in _messages(client.get(page))), page


@pytest.mark.quick  # `make test-quick` runs this one of its family
def test_the_fine_tune_admin_warns_about_a_queued_run_no_worker_consumes(
    base, fixture_dataset, staff_user
):
    run = finetune_run_create(base_model=base, datasets=[(fixture_dataset, None)], enqueue=False)
    client = logged_in(staff_user)

    for page in [
        "/admin/generation/finetunerun/",
        f"/admin/generation/finetunerun/{run.pk}/change/",
    ]:
        warnings = _messages(client.get(page))
        assert any(
            re.search(rf"fine-tune run {run.pk}\b", m) and START_GPU_WORKER in m for m in warnings
        ), (page, warnings)


def test_the_filesystem_broker_also_answers_which_workers_consume_a_queue(
    tmp_path, celery_worker_factory
):
    # The embedded default (no CELERY_BROKER_URL): kombu's filesystem transport under VAR_DIR.
    embedded = {"CELERY_BROKER_URL": "", "VAR_DIR": str(tmp_path / "var")}
    celery_worker_factory(queues="gpu", **embedded)
    ask = [
        sys.executable,
        "-c",
        "import django; django.setup(); from evalsite.runs.workers import census; "
        "found = census(); print(found.known, found.consumers('gpu'))",
    ]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "evalsite.settings", **embedded}
    answers: list[str] = []

    def answered() -> bool:
        result = subprocess.run(ask, cwd=REPO, env=env, capture_output=True, text=True, check=True)
        answers.append(result.stdout.strip())
        return "['test-" in answers[-1]

    wait_for(answered, timeout=HUNG, interval=1, message=f"a filesystem census: {answers}")
    assert answers[-1].startswith("True")
