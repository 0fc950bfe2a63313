"""The per-machine cache of tiny model builds (generation/engine/tiny.py): a build is made once
per key, copied out from there, made whole before anyone sees it even when two processes want
it at once, and keyed on what the model is built from."""

from __future__ import annotations

import json
import multiprocessing
import shutil

import pytest

from generation.engine.tiny import (
    CACHE_ENV,
    CORPUS_FILE,
    FIXTURES,
    MARKER_FILE,
    PROMPTS_FILE,
    build_key,
    build_tiny_model,
    cache_root,
    tiny_model,
    tiny_models,
)

pytestmark = pytest.mark.slow

STEPS = 2  # the cache is under test, not the model: two steps make a whole (poor) build


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(root))
    return root


def _files(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_the_variable_names_the_cache_and_the_default_is_under_the_users_cache(
    cache, monkeypatch, tmp_path
):
    assert cache_root() == cache
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "pairwise-eval" / "tiny"


def test_a_build_is_made_once_into_the_cache_and_copied_out_after(cache, tmp_path):
    said: list[str] = []
    first = tiny_model(tmp_path / "a", seed=5, steps=STEPS, log=said.append)
    building = [m for m in said if m.startswith("building the tiny model")]
    assert len(building) == 1

    entry = cache / build_key(seed=5, steps=STEPS)
    assert json.loads((entry / MARKER_FILE).read_text()) == {
        "version": 1,
        "seed": 5,
        "steps": STEPS,
    }
    assert _files(first) == _files(entry)
    # No half-built directories are left beside the entry.
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [entry.name]

    said.clear()
    weights = (entry / "model.safetensors").stat().st_mtime_ns
    second = tiny_model(tmp_path / "b", seed=5, steps=STEPS, log=said.append)
    assert said == []  # copied, not built
    assert _files(second) == _files(first)
    assert (entry / "model.safetensors").stat().st_mtime_ns == weights

    # Copies, not links: what is done to a copy leaves the cache alone.
    (second / "model.safetensors").write_bytes(b"overwritten")
    assert _files(entry) == _files(first)


def test_the_cached_build_is_the_build_itself(cache, tmp_path):
    cached = tiny_model(tmp_path / "cached", seed=6, steps=STEPS)
    direct = build_tiny_model(tmp_path / "direct", seed=6, steps=STEPS)
    assert _files(cached) == _files(direct)


def test_the_key_follows_what_the_model_is_built_from(tmp_path):
    key = build_key(seed=0, steps=300)
    assert key == build_key(seed=0, steps=300)
    assert key != build_key(seed=1, steps=300)
    assert key != build_key(seed=0, steps=299)

    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    for name in (CORPUS_FILE, PROMPTS_FILE):
        shutil.copyfile(FIXTURES / name, fixtures / name)
    assert build_key(seed=0, steps=300, fixtures=fixtures) == key
    with (fixtures / CORPUS_FILE).open("a", encoding="utf-8") as corpus:
        corpus.write(json.dumps({"question": "追加の質問", "answer": "追加の回答"}) + "\n")
    assert build_key(seed=0, steps=300, fixtures=fixtures) != key


def _build_in_a_process(out: str, cache: str, queue) -> None:
    import os

    os.environ[CACHE_ENV] = cache
    said: list[str] = []
    tiny_model(out, seed=9, steps=STEPS, log=said.append)
    queue.put(sum(m.startswith("building the tiny model") for m in said))


def test_two_processes_wanting_the_same_build_at_once_build_it_once(cache, tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    outs = [tmp_path / "one", tmp_path / "two"]
    processes = [
        context.Process(target=_build_in_a_process, args=(str(out), str(cache), queue))
        for out in outs
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=600)
        assert process.exitcode == 0
    assert sorted(queue.get(timeout=10) for _ in processes) == [0, 1]
    assert _files(outs[0]) == _files(outs[1]) == _files(cache / build_key(seed=9, steps=STEPS))


def test_several_seeds_missing_from_the_cache_are_built_side_by_side(cache, tmp_path, capfd):
    tiny_model(tmp_path / "seed-3", seed=3, steps=STEPS)  # already cached
    said: list[str] = []
    made = tiny_models(
        {3: tmp_path / "m3", 4: tmp_path / "m4", 7: tmp_path / "m7"}, steps=STEPS, log=said.append
    )
    assert said[0] == f"tiny model seed 3: copied from the cache {cache}"
    assert said[1] == "building 2 tiny models side by side (seeds [4, 7])"
    printed = capfd.readouterr().out  # the child processes print their own progress
    assert "[seed 4] building the tiny model" in printed
    assert "[seed 7] building the tiny model" in printed
    for seed, out in made.items():
        assert _files(out) == _files(cache / build_key(seed=seed, steps=STEPS))
