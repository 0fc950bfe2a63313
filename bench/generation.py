"""Batched versus one-at-a-time generation on the tiny model (or any model directory).

Generates a fixed number of new tokens (end token held back) for each question of the fixture
prompt set, greedily, once one prompt at a time and once with the engine's batching, on the same
thread count; prints tokens per second for both and whether the token ids are identical.

    .venv/bin/python bench/generation.py [--model DIR] [--batch-size 16] [--threads 1]

The last line reads ``batched/sequential tokens per second: N.Nx, greedy outputs identical: yes``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its own name would shadow the
# `generation` package: put the repository in front of it.
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from generation.engine.generate import Generated, Prompt, generate_answers  # noqa: E402
from generation.engine.loading import load_model, load_tokenizer  # noqa: E402
from generation.engine.tiny import build_tiny_model  # noqa: E402
from generation.prompts import LINE_SFT  # noqa: E402

PROMPTS = REPO / "fixtures" / "prompts_ja.jsonl"


def _prompts(limit: int) -> list[Prompt]:
    with PROMPTS.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [Prompt(key=row["question_id"], question=row["text"]) for row in rows[:limit]]


def _timed(model, tokenizer, prompts, *, params, batch_size) -> tuple[list[Generated], float]:
    started = time.perf_counter()
    answers = generate_answers(
        model, tokenizer, prompts, fmt=LINE_SFT, params=params, batch_size=batch_size
    )
    return answers, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model directory (default: build the tiny one)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=100)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-tiny-") as scratch:
        model_dir = args.model
        if model_dir is None:
            started = time.process_time()
            model_dir = build_tiny_model(Path(scratch) / "tiny", seed=0)
            print(f"built the tiny model in {time.process_time() - started:.1f}s CPU")
        model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
        prompts = _prompts(args.prompts)
        params = {"min_new_tokens": args.new_tokens, "max_new_tokens": args.new_tokens}
        print(
            f"model {model_dir}: {len(prompts)} prompts, {args.new_tokens} new tokens each, "
            f"greedy, torch threads {torch.get_num_threads()}"
        )
        # One short warm-up so neither side pays for first-call setup.
        generate_answers(model, tokenizer, prompts[:2], fmt=LINE_SFT, params={"max_new_tokens": 2})

        one, one_seconds = _timed(model, tokenizer, prompts, params=params, batch_size=1)
        many, many_seconds = _timed(
            model, tokenizer, prompts, params=params, batch_size=args.batch_size
        )

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


if __name__ == "__main__":
    main()
