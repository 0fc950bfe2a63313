"""LoRA against full fine-tuning: training tokens per second and peak memory, on the tiny model
and on a GPT-NeoX large enough for the difference to show.

Each method trains in a subprocess of its own, so the peak resident memory (``ru_maxrss``) one
reports is that method's alone (torch's CPU allocations are invisible to tracemalloc; the
child's peak RSS sees them). Throughput counts the non-padding tokens of the training batches
over the wall time of the optimizer steps, leaving out the first steps (warm-up) and everything
around them (loading, checkpoints); the median of the single steps' rates is printed beside it
(on a shared machine, a burst of other work skews the total but hardly the median). Each
method runs ``--repeats`` times, alternating with the other, and its fastest run counts. For
each model it prints a table and the ratios:

    lora/full tokens per second: R1x, lora/full peak memory: R2x

then both models' ratios side by side, and data parallelism on the second model (full
fine-tuning, each process with one torch thread and the same per-process batch, the two
processes on torchrun and gloo, as a fine-tune run with ``processes: 2`` trains on a CPU
worker), measured side by side in the same invocation:

    two processes / one process, tokens per second: R

with the load average beside it (on a shared machine the second process competes with everyone
else's work, so R says as much about the machine as about the code). The tiny model (0.3M
parameters) is all embeddings and overhead, so its ratios say little; the second model is a
GPT-NeoX built here with random weights (``--neox-hidden 512 --neox-layers 8``: about 28M
parameters with the tiny tokenizer's vocabulary), saved once under var/bench/ and loaded with
``from_pretrained`` like any model.

Usage: python bench/finetune.py [--steps 40] [--batch-size 8] [--max-length 256] [--model DIR]
[--neox-steps 12] [--neox-batch-size 4] [--neox-max-length 128] [--neox-hidden 512]
[--neox-layers 8] [--no-neox] [--no-processes] [--processes-only] [--repeats 3] (builds the
tiny model under var/bench/ first if no --model is given). No Django needed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# First, ahead of bench/ itself: bench/generation.py would otherwise shadow the app.
if sys.path[0] != str(REPO):
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
        "median_step_tokens_per_second": statistics.median(
            (watch.marks[step][1] - watch.marks[step - 1][1])
            / (watch.marks[step][0] - watch.marks[step - 1][0])
            for step in range(WARMUP_STEPS + 1, result.global_step + 1)
        ),
        "peak_rss_mib": peak / 1024,
        "rss_before_training_mib": rss_before / 1024,
        "threads": torch.get_num_threads(),
    }


def neox_model(tokenizer_dir: str, hidden: int, layers: int) -> tuple[str, int]:
    """A GPT-NeoX of ``layers`` x ``hidden`` with random weights and the tiny tokenizer, saved
    under var/bench/ (once per shape); (its directory, its parameter count)."""
    import torch
    from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM

    out = REPO / "var" / "bench" / f"neox-{layers}x{hidden}"
    marker = out / "parameters.txt"
    if marker.is_file():
        return str(out), int(marker.read_text())
    print(f"building a {layers}-layer, {hidden}-wide GPT-NeoX in {out} (once)...", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=4 * hidden,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(config)
    count = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    marker.write_text(str(count))
    return str(out), count


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
    parser.add_argument("--neox-steps", type=int, default=12)
    parser.add_argument("--neox-batch-size", type=int, default=4)
    parser.add_argument("--neox-max-length", type=int, default=128)
    parser.add_argument("--neox-hidden", type=int, default=512)
    parser.add_argument("--neox-layers", type=int, default=8)
    parser.add_argument("--no-neox", action="store_true", help="the tiny model (or --model) only")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs per method, alternating; the fastest counts (a shared machine is noisy)",
    )
    parser.add_argument(
        "--no-processes", action="store_true", help="leave out two processes against one"
    )
    parser.add_argument(
        "--processes-only", action="store_true", help="only two processes against one"
    )
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps <= WARMUP_STEPS or args.neox_steps <= WARMUP_STEPS:
        parser.error(f"--steps and --neox-steps must be above {WARMUP_STEPS}")

    if args.child:
        measured = child(args.child, args.model, args.steps, args.batch_size, args.max_length)
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the group
            print(json.dumps(measured))
        return
    if args.processes_only:
        model_dir = args.model or _tiny_model()
        neox_dir, count = neox_model(model_dir, args.neox_hidden, args.neox_layers)
        report_processes(neox_dir, count, args)
        return

    model_dir = args.model or _tiny_model()
    ratios = {
        "tiny" if not args.model else "--model": report(
            model_dir, args.steps, args.batch_size, args.max_length, args.repeats
        )
    }
    if not args.no_neox:
        neox_dir, count = neox_model(model_dir, args.neox_hidden, args.neox_layers)
        print()
        shape = f"{args.neox_layers} layers x {args.neox_hidden}"
        print(f"GPT-NeoX {shape}: {count / 1e6:.1f}M parameters, random weights")
        name = f"neox-{count / 1e6:.0f}M"
        ratios[name] = report(
            neox_dir, args.neox_steps, args.neox_batch_size, args.neox_max_length, args.repeats
        )
    if len(ratios) > 1:
        print()
        print(f"{'lora/full':32}" + "".join(f"{name:>12}" for name in ratios))
        print(f"{'tokens per second':32}" + "".join(f"{s:>11.2f}x" for s, _ in ratios.values()))
        print(f"{'peak memory':32}" + "".join(f"{m:>11.2f}x" for _, m in ratios.values()))
    if not args.no_neox and not args.no_processes:
        print()
        report_processes(neox_dir, count, args)


def report_processes(model_dir: str, count: int, args) -> float:
    """Full fine-tuning of ``model_dir`` in one process and in two (torchrun, gloo), alternating
    ``args.repeats`` times, each keeping its fastest run; prints the table and the ratio line."""
    steps, batch, length = args.neox_steps, args.neox_batch_size, args.neox_max_length
    best: dict[int, dict] = {}
    loads = []
    for _ in range(args.repeats):
        for processes in (1, 2):
            loads.append(os.getloadavg()[0])
            measured = _measure(model_dir, "full", steps, batch, length, processes=processes)
            if processes not in best or (
                measured["tokens_per_second"] > best[processes]["tokens_per_second"]
            ):
                best[processes] = measured
    one, two = best[1], best[2]
    print(
        f"GPT-NeoX {count / 1e6:.0f}M parameters, full fine-tuning, {steps} steps of batch "
        f"{batch} per process, max length {length}; one torch thread per process"
        + (f"; fastest of {args.repeats} runs each" if args.repeats > 1 else "")
    )
    print(f"{'':32}{'1 process':>12}{'2 processes':>12}")
    for label, key, fmt in (
        ("training tokens timed", "tokens", "{:.0f}"),
        ("seconds", "seconds", "{:.2f}"),
        ("training tokens per second", "tokens_per_second", "{:.0f}"),
        ("  median of the steps' rates", "median_step_tokens_per_second", "{:.0f}"),
    ):
        print(f"{label:32}{fmt.format(one[key]):>12}{fmt.format(two[key]):>12}")
    ratio = two["tokens_per_second"] / one["tokens_per_second"]
    print(
        f"load average (1 min) during the runs: {min(loads):.2f} to {max(loads):.2f} "
        f"on {os.cpu_count()} cores"
    )
    print(f"two processes / one process, tokens per second: {ratio:.2f}")
    return ratio


def _measure(
    model_dir: str, method: str, steps: int, batch_size: int, max_length: int, processes: int = 0
) -> dict:
    """One child's measurement; with ``processes`` (1 or more) under torchrun, one torch thread
    per process, distributed over gloo (accelerate goes distributed on a CPU only when told)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    launcher = [sys.executable]
    if processes:
        env.update(OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nnodes", "1"]
        launcher += ["--nproc_per_node", str(processes)]
    command = [
        *launcher,
        __file__,
        "--child",
        method,
        "--model",
        model_dir,
        "--steps",
        str(steps),
        "--batch-size",
        str(batch_size),
        "--max-length",
        str(max_length),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{method} failed:\n{done.stderr[-4000:]}")
    lines = done.stdout.strip().splitlines()
    return json.loads(next(line for line in reversed(lines) if line.startswith("{")))


def report(
    model_dir: str, steps: int, batch_size: int, max_length: int, repeats: int = 1
) -> tuple[float, float]:
    """Measure both methods on one model (``repeats`` times each, alternating, keeping each
    method's fastest run), print the table and the ratios line; the ratios."""
    results: dict[str, dict] = {}
    for _ in range(repeats):
        for method in METHODS:
            measured = _measure(model_dir, method, steps, batch_size, max_length)
            best = results.get(method)
            if best is None or measured["tokens_per_second"] > best["tokens_per_second"]:
                results[method] = measured
    lora, full = results["lora"], results["full"]
    print(
        f"model {model_dir}; {steps} steps of batch {batch_size}, max length "
        f"{max_length}; timing leaves out the first {WARMUP_STEPS} steps; "
        f"torch threads {lora['threads']}"
        + (f"; fastest of {repeats} runs per method" if repeats > 1 else "")
    )
    print(f"{'':32}{'lora':>12}{'full':>12}")
    rows = [
        ("training tokens timed", "tokens", "{:.0f}"),
        ("seconds", "seconds", "{:.2f}"),
        ("training tokens per second", "tokens_per_second", "{:.0f}"),
        ("  median of the steps' rates", "median_step_tokens_per_second", "{:.0f}"),
        ("peak resident memory (MiB)", "peak_rss_mib", "{:.1f}"),
        ("  of which before training", "rss_before_training_mib", "{:.1f}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:32}{fmt.format(lora[key]):>12}{fmt.format(full[key]):>12}")
    speed = lora["tokens_per_second"] / full["tokens_per_second"]
    memory = lora["peak_rss_mib"] / full["peak_rss_mib"]
    print(f"lora/full tokens per second: {speed:.2f}x, lora/full peak memory: {memory:.2f}x")
    return speed, memory


if __name__ == "__main__":
    main()
