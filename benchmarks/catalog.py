"""The benchmark tasks this site offers: the team's task folders (settings.BENCHMARK_TASK_DIRS,
default fixtures/benchmarks) and lm-eval's Japanese group when lm-eval is installed."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from .engine.catalogue import Catalogue, catalogue, lm_eval_tasks_dir


def task_dirs() -> list[str]:
    """Folders of the team's own lm-eval task YAML (with their local data files)."""
    default = [Path(settings.BASE_DIR) / "fixtures" / "benchmarks"]
    return [str(Path(d)) for d in getattr(settings, "BENCHMARK_TASK_DIRS", default)]


def available_tasks() -> Catalogue:
    return catalogue(task_dirs())


BROKEN = "broken"


def task_rows(known: Catalogue | None = None) -> list[dict]:
    """What the API and the admin list: every task and group a run may name, then every task
    file left out because it cannot be read (kind ``broken``, with its ``error``)."""
    known = known or available_tasks()
    rows = [
        {
            "name": info.name,
            "kind": info.kind,
            "output_type": info.output_type,
            "members": list(info.members),
            "source": info.source,
            "path": shown_path(info.path),
            "error": "",
        }
        for info in sorted(known.tasks.values(), key=lambda i: (i.source, i.name))
    ]
    rows += [
        {
            "name": Path(bad.path).stem,
            "kind": BROKEN,
            "output_type": "",
            "members": [],
            "source": bad.source,
            "path": shown_path(bad.path),
            "error": shown_text(bad.error),
        }
        for bad in known.broken
    ]
    return rows


def shown_text(text: str) -> str:
    """``text`` (an error naming files) with every server folder it names written as
    ``shown_path`` writes it."""
    builtin = lm_eval_tasks_dir()
    folders = [Path(d).resolve() for d in task_dirs()] + [Path(settings.BASE_DIR).resolve()]
    if builtin is not None:
        folders.insert(0, builtin.resolve())
    for folder in folders:
        text = text.replace(str(folder), shown_path(folder))
    return text


def shown_path(path: str | Path) -> str:
    """A task file or folder as staff see it, never an absolute server path: relative to the
    repository, to lm-eval's task folder (``lm_eval/tasks/...``) or to the task folder that
    holds it (``<folder name>/...``); else its name alone."""
    target = Path(path).resolve()
    bases = []
    builtin = lm_eval_tasks_dir()
    if builtin is not None:  # first: lm-eval may be installed inside the repository (.venv)
        bases.append((builtin.resolve(), "lm_eval/tasks"))
    bases.append((Path(settings.BASE_DIR).resolve(), ""))
    bases += [(Path(d).resolve(), Path(d).resolve().name) for d in task_dirs()]
    for base, prefix in bases:
        if target == base or base in target.parents:
            relative = target.relative_to(base).as_posix()
            return "/".join(p for p in (prefix, relative) if p and p != ".") or target.name
    return target.name
