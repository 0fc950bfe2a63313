"""LoRA against full fine-tuning of the tiny model: training tokens per second and peak memory.

Each method trains in a subprocess of its own, so the peak resident memory (``ru_maxrss``) one
reports is that method's alone. Throughput counts the non-padding tokens of the training
batches over the wall time of the optimizer steps, leaving out the first steps (warm-up) and
everything around them (loading, checkpoints). Prints a table and, as its last line, the ratios:

    lora/full tokens per second: R1x, lora/full peak memory: R2x

Usage: python bench/finetune.py [--steps 40] [--batch-size 8] [--max-length 256] [--model DIR]
(builds the tiny model under var/bench/ first if no --model is given). No Django needed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

METHODS = ("lora", "full")
# Learning rates that train the tiny model sensibly; throughput does not depend on them.
LEARNING_RATES = {"lora": 1e-2, "full": 1e-3}
WARMUP_STEPS = 3


def _examples():
    from generation.engine.examples import Example

    path = REPO / "fixtures" / "instructions_ja.jsonl"
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [Example(r["instruction"], r["output"], r.get("input") or "") for r in rows]


def child(method: str, model_dir: str, steps: int, batch_size: int, max_length: int) -> dict:
    """Train one method and return what it measured (runs inside its own process)."""
    import torch
    from transformers import TrainerCallback

    from generation.engine.loading import load_tokenizer
    from generation.engine.presets import PRESETS
    from generation.engine.render import template_from
    from generation.engine.train import TrainConfig, train

    class Stopwatch(TrainerCallback):
        def __init__(self) -> None:
            self.marks: dict[int, tuple[float, int]] = {}

        def on_step_end(self, args, state, control, **kwargs):
            self.marks[state.global_step] = (time.perf_counter(), state.num_input_tokens_seen)

    # Both children import everything either method may use, so the memory compared is the
    # training's own and not that of loading peft.
    import peft  # noqa: F401

    tokenizer = load_tokenizer(model_dir)
    examples = _examples()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    watch = Stopwatch()
    with tempfile.TemporaryDirectory() as scratch:
        config = TrainConfig(
            method=method,
            learning_rate=LEARNING_RATES[method],
            max_steps=steps,
            batch_size=batch_size,
            gradient_accumulation=1,
            max_length=max_length,
            eval_fraction=0.0,
            save_steps=10**9,
            save_total_limit=1,
        )
        result = train(
            model_path=model_dir,
            tokenizer=tokenizer,
            examples=examples,
            template=template_from("line_sft", 1, PRESETS["line_sft"]),
            config=config,
            checkpoint_dir=Path(scratch) / "checkpoints",
            output_dir=Path(scratch) / "out",
            resume=False,
            callbacks=[watch],
        )
    (t0, tokens0), (t1, tokens1) = watch.marks[WARMUP_STEPS], watch.marks[result.global_step]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "method": method,
        "steps": result.global_step - WARMUP_STEPS,
        "tokens": tokens1 - tokens0,
        "seconds": t1 - t0,
        "tokens_per_second": (tokens1 - tokens0) / (t1 - t0),
        "peak_rss_mib": peak / 1024,
        "rss_before_training_mib": rss_before / 1024,
        "threads": torch.get_num_threads(),
    }


def _tiny_model() -> str:
    from generation.engine.tiny import build_tiny_model

    out = REPO / "var" / "bench" / "tiny-0"
    print(f"building the tiny model in {out} (once)...", flush=True)
    return str(build_tiny_model(out, seed=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--model", default="", help="a saved causal LM (default: the tiny one)")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps must be above {WARMUP_STEPS}")

    if args.child:
        measured = child(args.child, args.model, args.steps, args.batch_size, args.max_length)
        print(json.dumps(measured))
        return

    model_dir = args.model or _tiny_model()
    results = {}
    for method in METHODS:
        command = [
            sys.executable,
            __file__,
            "--child",
            method,
            "--model",
            model_dir,
            "--steps",
            str(args.steps),
            "--batch-size",
            str(args.batch_size),
            "--max-length",
            str(args.max_length),
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
        )
        if done.returncode != 0:
            sys.exit(f"{method} failed:\n{done.stderr[-4000:]}")
        results[method] = json.loads(done.stdout.strip().splitlines()[-1])

    lora, full = results["lora"], results["full"]
    print(
        f"model {model_dir}; {args.steps} steps of batch {args.batch_size}, max length "
        f"{args.max_length}; timing leaves out the first {WARMUP_STEPS} steps; "
        f"torch threads {lora['threads']}"
    )
    print(f"{'':32}{'lora':>12}{'full':>12}")
    rows = [
        ("training tokens timed", "tokens", "{:.0f}"),
        ("seconds", "seconds", "{:.2f}"),
        ("training tokens per second", "tokens_per_second", "{:.0f}"),
        ("peak resident memory (MiB)", "peak_rss_mib", "{:.1f}"),
        ("  of which before training", "rss_before_training_mib", "{:.1f}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:32}{fmt.format(lora[key]):>12}{fmt.format(full[key]):>12}")
    speed = lora["tokens_per_second"] / full["tokens_per_second"]
    memory = lora["peak_rss_mib"] / full["peak_rss_mib"]
    print(f"lora/full tokens per second: {speed:.2f}x, lora/full peak memory: {memory:.2f}x")


if __name__ == "__main__":
    main()
