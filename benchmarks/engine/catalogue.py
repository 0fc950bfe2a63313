"""Which lm-eval tasks a run may name, read from YAML without importing lm-eval.

The catalogue is the team's own task folders plus lm-eval's Japanese group (found on disk
through ``importlib.util.find_spec``, so nothing of lm-eval is imported). A group expands to its
member tasks; the run stores leaf tasks, each scored and stored on its own.

A file that cannot be read as a task (malformed YAML, a missing include, no task name) is left
out and kept in ``Catalogue.broken`` with its error, so the catalogue shows it and one bad file
never stops runs of the others.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

JAPANESE_GROUP_DIR = "japanese_leaderboard"
UNKNOWN_TASK = "unknown benchmark task {name!r}; known tasks: {known}"
NO_TASKS = "name at least one benchmark task"
BAD_YAML = "{path}: not a readable task config ({problem})"
NO_TASK_NAME = "names no task (a `task:` name, or `group:` with a `task:` list)"


@dataclass(frozen=True)
class TaskInfo:
    name: str
    kind: str  # "task" or "group"
    path: str
    output_type: str = ""
    members: tuple[str, ...] = ()
    source: str = ""  # "custom" (the team's folders) or "lm-eval"


@dataclass(frozen=True)
class BrokenTask:
    """A task file left out of the catalogue, and why."""

    path: str
    error: str
    source: str = ""


@dataclass
class Catalogue:
    tasks: dict[str, TaskInfo] = field(default_factory=dict)
    broken: list[BrokenTask] = field(default_factory=list)

    def names(self) -> list[str]:
        return sorted(self.tasks)

    def leaf_names(self) -> list[str]:
        return sorted(name for name, info in self.tasks.items() if info.kind == "task")

    def folders(self) -> list[str]:
        return sorted({str(Path(info.path).parent) for info in self.tasks.values()})


class _Loader(yaml.SafeLoader):
    """YAML with lm-eval's ``!function`` tag kept as its text (nothing is imported)."""


_Loader.add_constructor("!function", lambda loader, node: f"!function {node.value}")


def _read(path: Path, seen: frozenset = frozenset()) -> dict:
    try:
        with path.open(encoding="utf-8") as handle:
            cfg = yaml.load(handle, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(BAD_YAML.format(path=path, problem=exc)) from None
    if not isinstance(cfg, dict):
        raise ValueError(BAD_YAML.format(path=path, problem="not a mapping"))
    includes = cfg.pop("include", None)
    if not includes or path in seen:
        return cfg
    merged: dict = {}
    for inc in includes if isinstance(includes, list) else [includes]:
        inc_path = Path(inc) if Path(inc).is_absolute() else path.parent / inc
        merged.update(_read(inc_path, seen | {path}))
    return {**merged, **cfg}


def _scan(folder: Path, source: str, into: Catalogue) -> None:
    for path in sorted(folder.rglob("*.yaml")):
        if path.name.startswith("_") and source == "custom":
            continue  # shared bases of the team's own tasks, by lm-eval's convention
        try:
            cfg = _read(path)
        except ValueError as exc:
            into.broken.append(BrokenTask(str(path), str(exc), source))
            continue
        group, task = cfg.get("group"), cfg.get("task")
        if isinstance(group, str) and isinstance(task, list):
            members = tuple(t for t in task if isinstance(t, str))
            into.tasks[group] = TaskInfo(group, "group", str(path), members=members, source=source)
        elif isinstance(task, str):
            into.tasks[task] = TaskInfo(
                task, "task", str(path), output_type=str(cfg.get("output_type", "")), source=source
            )
        elif source == "custom":
            into.broken.append(
                BrokenTask(str(path), BAD_YAML.format(path=path, problem=NO_TASK_NAME), source)
            )


def lm_eval_tasks_dir() -> Path | None:
    """lm-eval's task folder, or None when lm-eval is not installed (nothing is imported)."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "tasks"


def catalogue(custom_dirs: Iterable[str | Path], *, with_japanese: bool = True) -> Catalogue:
    """The tasks a run may name: lm-eval's Japanese group (when installed), then the team's
    folders (a team task of the same name wins, as lm-eval's include_path does)."""
    found = Catalogue()
    builtin = lm_eval_tasks_dir()
    if with_japanese and builtin is not None and (builtin / JAPANESE_GROUP_DIR).is_dir():
        _scan(builtin / JAPANESE_GROUP_DIR, "lm-eval", found)
    for folder in custom_dirs:
        if Path(folder).is_dir():
            _scan(Path(folder), "custom", found)
    return found


def expand(names: Sequence[str], known: Catalogue) -> list[str]:
    """Leaf task names for ``names`` (groups expanded, order kept, duplicates dropped)."""
    names = [n.strip() for n in names if n and n.strip()]
    if not names:
        raise ValueError(NO_TASKS)
    out: list[str] = []

    def add(name: str, depth: int = 0) -> None:
        info = known.tasks.get(name)
        if info is None:
            raise ValueError(UNKNOWN_TASK.format(name=name, known=", ".join(known.names())))
        if info.kind == "group" and depth < 5:
            for member in info.members:
                add(member, depth + 1)
        elif name not in out:
            out.append(name)

    for name in names:
        add(name)
    return out
