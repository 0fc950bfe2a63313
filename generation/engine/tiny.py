"""The project's own tiny model: a BPE tokenizer (with byte fallback) and a 2-layer GPT-NeoX,
trained briefly on the project's Japanese question/answer text. Plain module, no Django.

Tests and the demo use it so that every step of the real path (save, load, prompt format, batch,
generate, LoRA) runs on any machine without a model hub. Trained on the answers of examples in
the LINE SFT format (``ユーザー: {question}\\nシステム: {answer}</s>``), its answers look like
Japanese and end with the end token. A build is deterministic: the same seed and steps give
byte-identical weights (on the same torch build and kind of CPU); different seeds give different
answers.

Builds are cached once per machine (``tiny_model``): a finished build is kept under
``cache_root()`` in a directory named by a hash of everything it is built from (this module's
source, the prompt format it trains in, the training text, seed, steps and the versions of torch,
transformers and tokenizers), and copied from there into the directory asked for. The demo and
the test suite share the cache, so each build runs once per machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from . import presets, render
from .presets import PRESETS

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CORPUS_FILE = "tiny_corpus_ja.jsonl"
PROMPTS_FILE = "prompts_ja.jsonl"
# Written last: a directory holding it with the same settings is a finished build.
MARKER_FILE = "tiny_build.json"
BUILD_VERSION = 1

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # ids 0, 1, 2, 3
VOCAB_SIZE = 3000
MAX_TOKENS = 192  # training examples are cut here; prompts are far shorter
MODEL_SHAPE = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "max_position_embeddings": 512,
}
BATCH_SIZE = 16
LEARNING_RATE = 1e-2
WARMUP_STEPS = 20
MAX_NEW_TOKENS = 128

# Renders a conversation the way the LINE SFT format does, so that the chat_template prompt
# format gives the same prompt as line_sft on this tokenizer.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}ユーザー: {{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}システム: {{ message['content'] }}\n"
    "{% else %}{{ message['content'] }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}システム: {% endif %}"
)

# The tiny model is trained in the LINE SFT format (the line_sft preset, version 1).
LINE_SFT = render.template_from("line_sft", 1, PRESETS["line_sft"])

NO_CORPUS = "the tiny model's training text is missing: {path}"

# Where finished builds are kept (one directory per build key); the variable overrides it.
CACHE_ENV = "TINY_MODEL_CACHE"

Log = Callable[[str], None]


def load_corpus(fixtures: Path = FIXTURES) -> tuple[list[tuple[str, str]], list[str]]:
    """(question, answer) pairs to train on, and extra question texts for the tokenizer."""
    corpus = fixtures / CORPUS_FILE
    if not corpus.is_file():
        raise FileNotFoundError(NO_CORPUS.format(path=corpus))
    pairs = [(row["question"], row["answer"]) for row in _jsonl(corpus)]
    questions = fixtures / PROMPTS_FILE
    extra = [row["text"] for row in _jsonl(questions)] if questions.is_file() else []
    return pairs, extra


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _training_texts(pairs: list[tuple[str, str]]) -> list[str]:
    return ["".join(render.render_example(LINE_SFT, _turn(q, a), None)) for q, a in pairs]


def _turn(question: str, answer: str) -> list[dict]:
    return render.conversation([question], [answer])


def train_tokenizer(texts: list[str], *, vocab_size: int = VOCAB_SIZE):
    """A BPE tokenizer over characters with byte fallback, as Llama-style sentencepiece BPE has.

    Japanese has no spaces to split words on, so BPE merges inside whole runs of text between
    whitespace characters. Every character of the corpus is in the vocabulary, so the
    model learns whole characters and its output is always valid text; a character it never saw
    is encoded as UTF-8 byte tokens rather than as unknown.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=UNK))
    # Each whitespace character is a token of its own, so a prompt that ends in "システム: "
    # ends in the same token that precedes every answer in training.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s"), behavior="isolated")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 256,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    # Byte pieces are added after training, as ordinary (not special) tokens, so that decoding
    # with skip_special_tokens still turns them back into characters.
    trained = json.loads(backend.to_str())["model"]
    vocab = dict(trained["vocab"])
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    backend.model = models.BPE(vocab=vocab, merges=merges, unk_token=UNK, byte_fallback=True)
    backend.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
        chat_template=CHAT_TEMPLATE,
    )


def _is_built(out: Path, seed: int, steps: int) -> bool:
    marker = out / MARKER_FILE
    if not marker.is_file():
        return False
    try:
        done = json.loads(marker.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return done == {"version": BUILD_VERSION, "seed": seed, "steps": steps}


def build_tiny_model(
    out_dir: str | Path, *, seed: int = 0, steps: int = 300, log: Log | None = None
) -> Path:
    """Train the tiny tokenizer and model and save both to ``out_dir`` (returned).

    Returns at once if ``out_dir`` already holds a finished build for this seed and step count.
    Trains on one thread whatever the caller set (restored afterwards): CPU matrix products give
    different low bits with different thread counts, so the weights would otherwise depend on
    the machine; for matrices this small a second thread gains nothing anyway. The global random
    state is left as it was.
    """
    out = Path(out_dir)
    if _is_built(out, seed, steps):
        return out
    import torch
    from transformers import GenerationConfig, GPTNeoXConfig, GPTNeoXForCausalLM

    say = log or (lambda message: None)
    started = time.process_time()
    pairs, extra = load_corpus()
    texts = _training_texts(pairs)
    tokenizer = train_tokenizer(texts + extra)
    say(f"tokenizer: {len(tokenizer)} tokens from {len(pairs)} pairs and {len(extra)} questions")

    examples = _examples(tokenizer, pairs)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **MODEL_SHAPE,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = GPTNeoXForCausalLM(config)
            _train(model, examples, pad_id=tokenizer.pad_token_id, seed=seed, steps=steps, log=say)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=MAX_NEW_TOKENS,
        do_sample=False,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER_FILE).unlink(missing_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / MARKER_FILE).write_text(
        json.dumps({"version": BUILD_VERSION, "seed": seed, "steps": steps}), encoding="utf-8"
    )
    say(f"tiny model saved to {out} ({time.process_time() - started:.1f}s CPU)")
    return out


def cache_root() -> Path:
    """The per-machine cache of finished builds: $TINY_MODEL_CACHE, else
    $XDG_CACHE_HOME/pairwise-eval/tiny (~/.cache/pairwise-eval/tiny)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pairwise-eval" / "tiny"


def build_key(*, seed: int = 0, steps: int = 300, fixtures: Path = FIXTURES) -> str:
    """A hash of what a build is made from: the same key, the same model.

    This module's source and the prompt-format code it trains in, the training text, the seed
    and steps, and the versions of the libraries whose numerics and file formats the weights
    depend on. Any change to one of them is a new key, so a stale build is never reused.
    """
    import tokenizers
    import torch
    import transformers

    digest = hashlib.sha256()

    def part(label: str, data: bytes) -> None:
        digest.update(f"{label}:{len(data)}:".encode())
        digest.update(data)

    for module in (sys.modules[__name__], render, presets):
        part(module.__name__, Path(module.__file__).read_bytes())
    for name in (CORPUS_FILE, PROMPTS_FILE):
        path = fixtures / name
        part(name, path.read_bytes() if path.is_file() else b"")
    settings = {
        "version": BUILD_VERSION,
        "seed": seed,
        "steps": steps,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
    }
    part("settings", json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def tiny_model(
    out_dir: str | Path, *, seed: int = 0, steps: int = 300, log: Log | None = None
) -> Path:
    """The tiny model for ``seed`` and ``steps`` in ``out_dir`` (returned), from the cache.

    Returns at once if ``out_dir`` already holds the finished build; otherwise copies the
    cached build into it, building it into the cache first if this machine has none yet.
    """
    out = Path(out_dir)
    if _is_built(out, seed, steps):
        return out
    _copy_build(cached_build(seed=seed, steps=steps, log=log), out)
    return out


def tiny_models(
    targets: dict[int, Path], *, steps: int = 300, log: Log | None = None
) -> dict[int, Path]:
    """``tiny_model`` for several seeds (seed -> directory). Builds the cache lacks run side by
    side in child processes, one per core (each trains on one thread), their progress lines
    prefixed with the seed; the rest are copied from the cache."""
    say = log or (lambda message: None)
    missing = {s: Path(out) for s, out in targets.items() if not _is_built(Path(out), s, steps)}
    to_build = {
        s: out
        for s, out in missing.items()
        if not _is_built(cache_root() / build_key(seed=s, steps=steps), s, steps)
    }
    for s, out in missing.items():
        if s not in to_build:
            say(f"tiny model seed {s}: copied from the cache {cache_root()}")
            tiny_model(out, seed=s, steps=steps)
    if len(to_build) == 1:
        [(s, out)] = to_build.items()
        tiny_model(out, seed=s, steps=steps, log=lambda m: say(f"[seed {s}] {m}"))
    elif to_build:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        say(f"building {len(to_build)} tiny models side by side (seeds {sorted(to_build)})")
        workers = min(len(to_build), os.cpu_count() or 1)
        context = multiprocessing.get_context("spawn")  # no fork of a process holding threads
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            done = [pool.submit(_child_build, str(out), s, steps) for s, out in to_build.items()]
            for future in done:
                future.result()
    return {s: Path(out) for s, out in targets.items()}


def _child_build(out: str, seed: int, steps: int) -> None:
    def say(message: str) -> None:
        print(f"[seed {seed}] {message}", flush=True)

    tiny_model(out, seed=seed, steps=steps, log=say)


def cached_build(*, seed: int = 0, steps: int = 300, log: Log | None = None) -> Path:
    """The cache entry of this build, made first if missing (never read it half-written).

    A build goes into a temporary directory beside the entry and is renamed into place when
    finished, so an entry that exists is whole. A lock file per key makes a second process that
    wants the same build wait for the first one's and reuse it instead of training again.
    """
    say = log or (lambda message: None)
    root = cache_root()
    key = build_key(seed=seed, steps=steps)
    entry = root / key
    if _is_built(entry, seed, steps):
        return entry
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f"{key}.lock"):
        if _is_built(entry, seed, steps):  # built by another process while this one waited
            return entry
        say(f"building the tiny model (seed {seed}, {steps} steps) into the cache {entry}")
        scratch = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            build_tiny_model(scratch, seed=seed, steps=steps, log=log)
            if entry.exists():  # an unfinished entry left by hand: replace it
                shutil.rmtree(entry)
            scratch.rename(entry)
            say(f"cached as {entry}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return entry


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) across processes."""
    import fcntl

    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _copy_build(entry: Path, out: Path) -> None:
    """Copy a finished build's files (copies, not links: nothing done to ``out`` can change
    the cache), the marker last, as a build writes it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER_FILE).unlink(missing_ok=True)
    for source in sorted(entry.iterdir()):
        if source.name != MARKER_FILE and source.is_file():
            shutil.copyfile(source, out / source.name)
    shutil.copyfile(entry / MARKER_FILE, out / MARKER_FILE)


def _examples(tokenizer, pairs: list[tuple[str, str]]) -> list[tuple[list[int], int]]:
    """Token ids of each prompt + answer + end token, and where the answer starts."""
    examples = []
    for question, answer in pairs:
        prompt, reply = render.render_example(LINE_SFT, _turn(question, answer), None)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + reply_ids)[: MAX_TOKENS - 1] + [tokenizer.eos_token_id]
        examples.append((ids, min(len(prompt_ids), len(ids) - 1)))
    return examples


def _train(
    model, examples: list[tuple[list[int], int]], *, pad_id: int, seed: int, steps: int, log: Log
) -> None:
    """Plain AdamW on random batches; loss on the answer tokens, the end token included."""
    import torch

    order = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)

    def rate(step: int) -> float:
        if step < WARMUP_STEPS:
            return (step + 1) / WARMUP_STEPS
        progress = (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    model.train()
    for step in range(steps):
        picks = torch.randint(len(examples), (BATCH_SIZE,), generator=order).tolist()
        batch = [examples[i] for i in picks]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, (ids, answer_start) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
            labels[row, answer_start : len(ids)] = input_ids[row, answer_start : len(ids)]
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == steps - 1:
            log(f"step {step + 1}/{steps} loss {loss.item():.3f}")


def build_tiny_sentencepiece_tokenizer(out_dir: str | Path, *, seed: int = 0) -> Path:
    """A tiny sentencepiece (unigram) tokenizer laid out like the LINE and rinna repositories.

    ``spiece.model`` plus a ``tokenizer_config.json`` naming ``T5Tokenizer``, and no
    ``tokenizer.json``: the layout transformers 5 no longer loads faithfully by itself (see
    ``loading.load_tokenizer``). Byte fallback on, text not normalized, so newlines survive as
    they do in the LINE tokenizer.
    """
    import sentencepiece

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs, extra = load_corpus()
    sentences = _training_texts(pairs) + extra
    sentencepiece.set_random_generator_seed(seed)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type="unigram",
        vocab_size=2000,
        hard_vocab_limit=False,
        character_coverage=0.9995,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        num_threads=1,
        minloglevel=2,
    )
    (out / "spiece.model").write_bytes(model.getvalue())
    tokenizer_config = {
        "tokenizer_class": "T5Tokenizer",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "pad_token": PAD,
        "extra_ids": 0,
        "model_max_length": MODEL_SHAPE["max_position_embeddings"],
    }
    (out / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    return out
