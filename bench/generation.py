"""Batched versus one-at-a-time generation on the tiny model (or any model directory), and
generation through an OpenAI-compatible server (``transformers serve``) beside it.

Generates a fixed number of new tokens (end token held back) for each question of the fixture
prompt set, greedily, once one prompt at a time and once with the engine's batching, on the same
thread count; prints tokens per second for both and whether the token ids are identical.

Then (unless ``--no-endpoint``) it starts ``transformers serve`` on the same model (offline, same
thread count) and asks it for the same questions through the app's endpoint client at
concurrency 1 and 8, greedy, answers ending at the end token (a server takes no
min_new_tokens); beside it the engine's batched generation of the same answers in this process
(the tokenizer's chat template, which is what the server renders with). It prints tokens per
second of each, the ratios, and how many greedy answers agree between server and worker.

Then (unless ``--no-sharded``) one generation run of the same questions through real Celery
workers, side by side: two workers (one torch thread each) on a run split into two shards, and
one worker on the same run in one piece (a throw-away SQLite database and filesystem broker, as
the demo's; each worker is warmed up first). It prints answers per second of each, the load
average, and whether the two runs' greedy answers are identical.

    .venv/bin/python bench/generation.py [--model DIR] [--batch-size 16] [--threads 1]
    .venv/bin/python bench/generation.py --sharded-only [--sharded-new-tokens 256]

The endpoint line reads ``endpoint/in-worker batched tokens per second: concurrency 1 N.NNx,
concurrency 8 N.NNx, greedy outputs agreeing: K/N``; the batched line reads
``batched/sequential tokens per second: N.Nx, greedy outputs identical: yes``; the sharded
lines read ``sharded over 2 workers / one worker, answers per second: R`` and ``greedy answers
identical (sharded vs one worker): yes``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its own name would shadow the
# `generation` package: put the repository in front of it.
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from served import serve  # noqa: E402  (bench/served.py: this folder is on sys.path)

from generation.engine import render  # noqa: E402
from generation.engine.endpoint import Conversation, Endpoint, ask  # noqa: E402
from generation.engine.generate import Generated, Prompt, generate_answers  # noqa: E402
from generation.engine.loading import load_model, load_tokenizer  # noqa: E402
from generation.engine.presets import PRESETS  # noqa: E402
from generation.engine.tiny import build_tiny_model  # noqa: E402

LINE_SFT = render.template_from("line_sft", 1, {**PRESETS["line_sft"], "stop_strings": ()})
CHAT_TEMPLATE = render.template_from("chat_template", 1, PRESETS["chat_template"])

PROMPTS = REPO / "fixtures" / "prompts_ja.jsonl"


def _prompts(limit: int) -> list[Prompt]:
    with PROMPTS.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [Prompt.single(row["question_id"], row["text"]) for row in rows[:limit]]


def _timed(
    model, tokenizer, prompts, *, params, batch_size, template=LINE_SFT
) -> tuple[list[Generated], float]:
    started = time.perf_counter()
    answers = generate_answers(
        model, tokenizer, prompts, template=template, params=params, batch_size=batch_size
    )
    return answers, time.perf_counter() - started


def _endpoint_bench(model, tokenizer, model_dir: Path, prompts, args, scratch: str) -> None:
    params = {"max_new_tokens": args.new_tokens}
    conversations = [
        Conversation(key=p.key, user_turns=(p.messages[-1]["content"],)) for p in prompts
    ]
    local, local_seconds = _timed(
        model, tokenizer, prompts, params=params, batch_size=args.batch_size, template=CHAT_TEMPLATE
    )
    local_rate = sum(g.new_tokens for g in local) / local_seconds
    process, url = serve(model_dir, args.threads, Path(scratch) / "serve.log")
    try:
        rates, served = {}, {}
        # One short warm-up request so neither concurrency pays for the server's first call.
        warm = Endpoint(url=url, model=str(model_dir), concurrency=1)
        warm_params = {"max_new_tokens": 2}
        ask(warm, CHAT_TEMPLATE, conversations[:1], params=warm_params, on_reply=lambda r: None)
        for concurrency in (1, 8):
            replies = []
            endpoint = Endpoint(url=url, model=str(model_dir), concurrency=concurrency)
            started = time.perf_counter()
            ask(endpoint, CHAT_TEMPLATE, conversations, params=params, on_reply=replies.append)
            seconds = time.perf_counter() - started
            tokens = sum(r.completion_tokens for r in replies)
            rates[concurrency], served[concurrency] = tokens / seconds, replies
            print(
                f"endpoint (transformers serve, concurrency {concurrency}): {tokens} tokens in "
                f"{seconds:.2f}s, {tokens / seconds:.0f}/s"
            )
    finally:
        process.terminate()
        process.wait(timeout=30)
    tokens = sum(g.new_tokens for g in local)
    print(
        f"in-worker batched (batch size {args.batch_size}, chat template): {tokens} tokens in "
        f"{local_seconds:.2f}s, {local_rate:.0f}/s"
    )
    by_key = {r.key: r.text for r in served[8]}
    agreeing = sum(by_key.get(g.key) == g.text for g in local)
    same_across = sum(a.text == by_key.get(a.key) for a in served[1])
    print(
        f"endpoint/in-worker batched tokens per second: concurrency 1 {rates[1] / local_rate:.2f}x,"
        f" concurrency 8 {rates[8] / local_rate:.2f}x, greedy outputs agreeing: "
        f"{agreeing}/{len(local)} (concurrency 1 vs 8: {same_across}/{len(local)})"
    )


def _django(var_dir: Path, model_storage: Path) -> dict[str, str]:
    """Settings on a fresh SQLite file and filesystem broker under ``var_dir`` (migrated); the
    environment the workers get."""
    env = {
        "VAR_DIR": str(var_dir),
        "MODEL_STORAGE": str(model_storage),
        "DJANGO_SETTINGS_MODULE": "evalsite.settings",
    }
    os.environ.update(env)
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("CELERY_BROKER_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return env


def _start_worker(name: str, env: dict[str, str], threads: int, log: Path) -> subprocess.Popen:
    worker_env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "CELERY_BROKER_URL")
    }
    worker_env.update(env)
    worker_env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": str(threads),
        }
    )
    command = [sys.executable, "-m", "celery", "-A", "evalsite", "worker", "-Q", "gpu"]
    command += ["--concurrency", "1", "--pool", "prefork", "--loglevel", "WARNING", "-n", name]
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=REPO,
            env=worker_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _finished(run_id: int, timeout: float = 3600) -> float:
    """Wait for the run to leave queued/running; the monotonic time it was seen finished."""
    from generation.models import GenerationRun

    deadline = time.monotonic() + timeout
    while True:
        run = GenerationRun.objects.get(pk=run_id)
        if run.status not in GenerationRun.ACTIVE:
            if run.status != GenerationRun.Status.SUCCEEDED:
                raise SystemExit(f"run {run_id} {run.status}: {run.error}")
            return time.monotonic()
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run_id} did not finish within {timeout:.0f}s")
        time.sleep(0.05)


def _sharded_bench(model_dir: Path, args, scratch: str) -> None:
    """One run over two workers in two shards vs the same run on one worker, same params."""
    from generation.importers import ParsedQuestion

    var_dir = Path(scratch) / "sharded"
    var_dir.mkdir()
    env = _django(var_dir, Path(model_dir).resolve().parent)
    from evalsite.celery import app
    from generation.models import Answer
    from generation.registry import language_model_register, prompt_set_create
    from generation.runs import generation_run_create

    with PROMPTS.open(encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle if line.strip()][: args.prompts]
    prompt_set = prompt_set_create(
        name="bench questions",
        questions=[ParsedQuestion(line=i, text=t) for i, t in enumerate(texts, start=1)],
    )
    model = language_model_register(
        name="tiny", name_or_path=Path(model_dir).name, prompt_format="line_sft"
    )
    tokens = args.sharded_new_tokens
    params = {"min_new_tokens": tokens, "max_new_tokens": tokens}
    workers = [
        _start_worker(f"bench-{i}@%h", env, args.threads, var_dir / f"worker-{i}.log")
        for i in range(2)
    ]
    try:
        deadline = time.monotonic() + 300
        while len(app.control.ping(timeout=1.0) or []) < 2:
            if time.monotonic() > deadline:
                raise SystemExit(f"the two workers did not start; logs in {var_dir}")
        # Warm-up: each worker takes one shard, so both have imported torch and transformers.
        warm = generation_run_create(
            model=model, prompt_set=prompt_set, params={"max_new_tokens": 2}, shards=2
        )
        _finished(warm.pk)

        def timed(shards: int):
            started = time.monotonic()
            run = generation_run_create(
                model=model,
                prompt_set=prompt_set,
                params=params,
                batch_size=args.batch_size,
                shards=shards,
            )
            seconds = _finished(run.pk) - started
            answers = {a.question_id: a.text for a in Answer.objects.filter(run=run)}
            taken = set(run.shards.values_list("worker", flat=True))
            if shards > 1 and len(taken) < shards:
                print(f"(the {shards} shards of run {run.pk} were taken by {len(taken)} worker)")
            run.refresh_from_db()
            for shard in run.shards.order_by("index"):
                # Where the time between the run's creation and its end went, shard by shard.
                print(
                    f"  shard {shard.index} ({shard.stop - shard.start} answers): claimed after "
                    f"{(shard.started_at - run.created_at).total_seconds():.2f}s, ran "
                    f"{(shard.finished_at - shard.started_at).total_seconds():.2f}s"
                )
            return answers, seconds

        one, one_seconds = timed(1)
        two, two_seconds = timed(2)
    finally:
        for process in workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in workers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
    one_rate, two_rate = len(one) / one_seconds, len(two) / two_seconds
    print(
        f"one worker (one shard, {args.threads} torch thread): {len(one)} answers in "
        f"{one_seconds:.2f}s, {one_rate:.2f}/s"
    )
    print(
        f"two workers (two shards, {args.threads} torch thread each): {len(two)} answers in "
        f"{two_seconds:.2f}s, {two_rate:.2f}/s"
    )
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average (1, 5, 15 min): {load} on {os.cpu_count()} cores")
    print(f"{len(texts)} answers of {tokens} new tokens each, batches of {args.batch_size}")
    # Batches are the unit of work: one worker runs ceil(n / b) of them, the larger shard
    # ceil(ceil(n / 2) / b); their ratio bounds R while a batch costs about the same full or not.
    whole = math.ceil(len(texts) / args.batch_size)
    half = math.ceil(math.ceil(len(texts) / 2) / args.batch_size)
    print(f"batches one worker / largest shard (the ceiling of R at this size): {whole / half:.2f}")
    print(f"sharded over 2 workers / one worker, answers per second: {two_rate / one_rate:.2f}")
    same = sum(one.get(key) == text for key, text in two.items())
    identical = "yes" if same == len(one) == len(two) == len(texts) else "no"
    print(f"greedy answers identical (sharded vs one worker): {identical} ({same}/{len(texts)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model directory (default: build the tiny one)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument(
        "--sharded-new-tokens",
        type=int,
        default=256,
        help="new tokens per answer in the sharded runs (an answer's usual length: at 64 the "
        "tiny model's whole run takes about a second and the run's dispatch weighs in it)",
    )
    parser.add_argument(
        "--no-endpoint", action="store_true", help="skip generation through transformers serve"
    )
    parser.add_argument(
        "--no-sharded", action="store_true", help="skip the sharded run through two workers"
    )
    parser.add_argument(
        "--sharded-only", action="store_true", help="only the sharded run through two workers"
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-tiny-") as scratch:
        model_dir = args.model
        if model_dir is None:
            started = time.process_time()
            model_dir = build_tiny_model(Path(scratch) / "tiny", seed=0)
            print(f"built the tiny model in {time.process_time() - started:.1f}s CPU")
        if args.sharded_only:
            _sharded_bench(Path(model_dir), args, scratch)
            return
        model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
        prompts = _prompts(args.prompts)
        params = {"min_new_tokens": args.new_tokens, "max_new_tokens": args.new_tokens}
        print(
            f"model {model_dir}: {len(prompts)} prompts, {args.new_tokens} new tokens each, "
            f"greedy, torch threads {torch.get_num_threads()}"
        )
        # One short warm-up so neither side pays for first-call setup.
        generate_answers(
            model, tokenizer, prompts[:2], template=LINE_SFT, params={"max_new_tokens": 2}
        )

        one, one_seconds = _timed(model, tokenizer, prompts, params=params, batch_size=1)
        many, many_seconds = _timed(
            model, tokenizer, prompts, params=params, batch_size=args.batch_size
        )
        if not args.no_endpoint:
            _endpoint_bench(model, tokenizer, Path(model_dir), prompts, args, scratch)

    one_tokens = sum(g.new_tokens for g in one)
    many_tokens = sum(g.new_tokens for g in many)
    one_rate, many_rate = one_tokens / one_seconds, many_tokens / many_seconds
    print(f"sequential (batch size 1): {one_tokens} tokens in {one_seconds:.2f}s, {one_rate:.0f}/s")
    print(
        f"batched (batch size {args.batch_size}): {many_tokens} tokens in {many_seconds:.2f}s, "
        f"{many_rate:.0f}/s"
    )
    differing = [a.key for a, b in zip(one, many, strict=True) if a.token_ids != b.token_ids]
    if differing:
        print(f"token ids differ for {len(differing)} prompts: {', '.join(map(str, differing))}")
    identical = "yes" if not differing and len(one) == len(prompts) else "no"
    print(
        f"batched/sequential tokens per second: {many_rate / one_rate:.1f}x, "
        f"greedy outputs identical: {identical}"
    )
    if not args.no_sharded:
        with tempfile.TemporaryDirectory(prefix="bench-sharded-") as scratch:
            model_dir = args.model or build_tiny_model(Path(scratch) / "tiny", seed=0)
            _sharded_bench(Path(model_dir), args, scratch)


if __name__ == "__main__":
    main()
