"""The benchmark tasks this site offers: the team's task folders (settings.BENCHMARK_TASK_DIRS,
default fixtures/benchmarks) and lm-eval's Japanese group when lm-eval is installed."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from .engine.catalogue import Catalogue, catalogue


def task_dirs() -> list[str]:
    """Folders of the team's own lm-eval task YAML (with their local data files)."""
    default = [Path(settings.BASE_DIR) / "fixtures" / "benchmarks"]
    return [str(Path(d)) for d in getattr(settings, "BENCHMARK_TASK_DIRS", default)]


def available_tasks() -> Catalogue:
    return catalogue(task_dirs())


def task_rows() -> list[dict]:
    """What the API and the admin list: every task and group a run may name."""
    return [
        {
            "name": info.name,
            "kind": info.kind,
            "output_type": info.output_type,
            "members": list(info.members),
            "source": info.source,
            "path": info.path,
        }
        for info in sorted(available_tasks().tasks.values(), key=lambda i: (i.source, i.name))
    ]
