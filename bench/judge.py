"""Judge throughput: the tiny local judge batched vs one verdict at a time, and a served judge
(``transformers serve`` over the same weights) at concurrency 1 vs 8. Ratios, side by side.

Everything goes through the app's own execution path (judging.runs.judge_run_execute, which
runs judging/judge.py inline, as a worker would): a throw-away SQLite database under a temporary
``VAR_DIR`` is migrated, the tiny model is built and taught the verdict format
(judging/teaching.py: 300 examples, full fine-tuning), three "models" (the tiny weights sampled
with seeds 0, 1, 2) answer the first questions of the fixture set, and a study of them is judged
four times by the same judge weights: in the worker with batch size 8 and 1, and served at
endpoint concurrency 1 and 8. Each run asks every comparison in both orders, greedily, one try
per verdict (no retries, so every run asks the same number of prompts). A run's seconds are its
wall time, model loading and database writes included, as a team would see them.

    .venv/bin/python bench/judge.py [--questions 16] [--threads 1] [--no-endpoint]

Lines to read: ``local judge batched / one at a time: R.RRx``, ``served judge concurrency 8 /
1: R.RRx``, and the share of parsed verdicts of each run. No thresholds: it measures.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path: put the repository in front.
sys.path.insert(0, str(REPO))

from served import serve  # noqa: E402  (bench/served.py: this folder is on sys.path)

SEEDS = (0, 1, 2)
TEACHING_EXAMPLES = 300
JUDGE_PARAMS = {"max_new_tokens": 48}


def _django(var_dir: Path) -> None:
    """Settings on a fresh SQLite file and model storage under ``var_dir``; migrated."""
    os.environ["VAR_DIR"] = str(var_dir)
    os.environ["MODEL_STORAGE"] = str(var_dir / "models")
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _study(tiny, questions: int):
    """Three sampled answer sets of the tiny weights over the first fixture questions."""
    import json

    from annotation.studies import study_create
    from generation.importers import ParsedQuestion
    from generation.registry import language_model_register, prompt_set_create
    from generation.runs import generation_run_create, generation_run_execute

    with (REPO / "fixtures" / "prompts_ja.jsonl").open(encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle if line.strip()][:questions]
    prompt_set = prompt_set_create(
        name="bench questions",
        questions=[ParsedQuestion(line=i, text=t) for i, t in enumerate(texts, start=1)],
    )
    runs = []
    for seed in SEEDS:
        model = language_model_register(
            name=f"tiny-seed{seed}",
            name_or_path=tiny.name_or_path,
            generation_defaults={"max_new_tokens": 64, "do_sample": True, "top_p": 0.9},
        )
        run = generation_run_create(model=model, prompt_set=prompt_set, seed=seed, enqueue=False)
        runs.append(generation_run_execute(run_id=run.pk))
    return study_create(name="bench study", runs=runs)


def _judged(judge, study, prompt, *, batch_size: int = 8, comparisons=None):
    """(seconds, verdicts, parsed) of one judge run executed inline."""
    from judging.models import JudgeRun, Judgment
    from judging.runs import judge_run_create, judge_run_execute

    run = judge_run_create(
        judge=judge,
        study=study,
        prompt=prompt,
        comparisons=comparisons,
        params=JUDGE_PARAMS,
        batch_size=batch_size,
        max_attempts=1,
        enqueue=False,
    )
    started = time.perf_counter()
    judge_run_execute(run.pk)
    seconds = time.perf_counter() - started
    run.refresh_from_db()
    if run.status != JudgeRun.Status.SUCCEEDED:
        raise SystemExit(f"judge run {run.pk} {run.status}: {run.error.strip()[-1500:]}")
    rows = Judgment.objects.filter(run=run)
    parsed = rows.exclude(verdict=Judgment.Verdict.UNPARSABLE).count()
    return seconds, rows.count(), parsed


def _warm_up(judge, study, prompt) -> None:
    """Two comparisons first, not counted: the first call pays for set-up (a server's too)."""
    first_two = list(study.comparisons.order_by("pk").values_list("pk", flat=True)[:2])
    _judged(judge, study, prompt, comparisons=first_two)


def _line(label: str, seconds: float, verdicts: int, parsed: int) -> float:
    rate = verdicts / seconds
    print(
        f"{label}: {verdicts} verdicts in {seconds:.2f}s, {rate:.1f}/s, "
        f"parsed {parsed}/{verdicts} ({parsed / verdicts:.0%})"
    )
    return rate


def _served(taught, study, prompt, threads: int, scratch: Path) -> dict[int, float]:
    """Verdicts per second of the taught weights behind ``transformers serve``, registered as
    a served judge at endpoint concurrency 1 and 8."""
    from django.conf import settings

    from generation.engine.loading import resolve_path
    from generation.registry import language_model_register

    model_dir = Path(resolve_path(taught.name_or_path, settings.MODEL_STORAGE))
    process, url = serve(model_dir, threads, scratch / "serve.log")
    # One log line per request from the endpoint client would bury the figures (the openai
    # client's HTTP library logs as "httpx2", httpx itself as "httpx").
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    rates = {}
    try:
        for concurrency in (1, 8):
            served = language_model_register(
                name=f"served-judge-c{concurrency}",
                prompt_format="line_sft",
                endpoint_url=url,
                endpoint_model=str(model_dir),
                endpoint_concurrency=concurrency,
            )
            if concurrency == 1:
                _warm_up(served, study, prompt)
            rates[concurrency] = _line(
                f"served judge (transformers serve, concurrency {concurrency})",
                *_judged(served, study, prompt),
            )
    finally:
        process.terminate()
        process.wait(timeout=30)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=16, help="questions in the study")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both sides)")
    parser.add_argument("--no-endpoint", action="store_true", help="skip the served judge")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-judge-") as scratch:
        scratch = Path(scratch)
        _django(scratch / "var")
        import torch

        from generation.engine.tiny import build_tiny_model
        from generation.registry import language_model_register, storage_relative
        from judging.teaching import (
            TINY_PAIRWISE,
            corpus_pairs,
            teach_judge,
            tiny_pairwise_prompt,
            verdict_examples,
        )

        torch.set_num_threads(args.threads)
        from django.conf import settings

        path = build_tiny_model(settings.MODEL_STORAGE / "tiny", seed=0)
        tiny = language_model_register(name="tiny", name_or_path=storage_relative(path))
        examples = verdict_examples(TINY_PAIRWISE, corpus_pairs(), TEACHING_EXAMPLES)
        taught = teach_judge(base=tiny, name="tiny-judge", examples=examples)
        print(f"taught the tiny judge on {taught.examples} examples in {taught.seconds:.1f}s")
        study = _study(tiny, args.questions)
        prompt = tiny_pairwise_prompt()
        print(
            f"study: {len(SEEDS)} models x {args.questions} questions = "
            f"{study.comparisons.count()} comparisons, each judged in both orders; "
            f"torch threads {torch.get_num_threads()}"
        )
        _warm_up(taught.model, study, prompt)
        one = _line(
            "local judge, one at a time", *_judged(taught.model, study, prompt, batch_size=1)
        )
        many = _line("local judge, batch 8", *_judged(taught.model, study, prompt, batch_size=8))
        rates = (
            {} if args.no_endpoint else _served(taught.model, study, prompt, args.threads, scratch)
        )

    print(f"local judge batched / one at a time: {many / one:.2f}x")
    if rates:
        print(f"served judge concurrency 8 / 1: {rates[8] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
