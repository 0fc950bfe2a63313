"""The registry of run kinds: what the spine needs to know to queue, execute and show a run.

An app registers each of its kinds once, in its AppConfig.ready() (or at import of the module
that defines the work), so the spine never imports the apps built on it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

GPU = "gpu"
DEFAULT = "default"

UNKNOWN_KIND = "no run kind {key!r} is registered"


def _on_gpu(run) -> str:
    return GPU


def lazy(path: str) -> Callable:
    """The function at ``path`` (``"package.module.name"``), imported at its first call: a
    kind's work lives in a module that imports the one registering the kind."""
    module, name = path.rsplit(".", 1)

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__, call.__qualname__ = name, path
    return call


@dataclass(frozen=True)
class RunKind:
    """One kind of background run.

    ``work(run_id, worker)`` does what a claimed run does (it is called under the run's lease and
    heartbeat and must be safe to call again after a crash: do only what is missing).
    ``queue(run)`` names the queue a run is sent to when it is queued (``gpu`` for weights,
    ``default`` for a run that only sends requests). ``claimable`` narrows which rows may be
    claimed. ``done`` / ``total`` name the progress fields. ``cancel_action``, ``retry_action``:
    the audit actions the generic cancel and retry record (with the fields ``audit_fields``).

    A kind whose runs may be split into shards (evalsite/runs/shards.py) says how many items a
    run has in ``items(run)`` (in the one order its shards cut them into ranges), and does what
    a claimed shard is missing in ``work_shard(run_id, shard)``: only the items of
    ``shard.start`` to ``shard.stop``, while ``shard.held()``, keeping the run's progress over
    all its shards; it returns True when every item of its range is stored.

    How staff pages show a run: ``name`` is the kind's short name in URLs and filters
    ("generation"; blank: the model's name); ``variants`` names runs of the kind that read as a
    kind of their own (name -> queryset filter, such as judge runs that grade) and ``variant(run)``
    gives a run's variant name ("" for none); ``describe(run)`` is one line saying what the run
    works on (``related``: what it reads, for select_related); ``page_url(run)`` is the page a
    row links to (None: the run's admin change page); ``progress_text(run)`` what its page says
    beside the progress bar (None: "done/total (percent%) unit"). ``provenance``: the fields
    that say what the run was asked to do, kept as they are once it has left ``queued``
    (runs/provenance.py).
    """

    model: type
    label: str
    work: Callable[[int, str], None]
    queue: Callable[[object], str] = _on_gpu
    claimable: dict = field(default_factory=dict)
    done: str = "done"
    total: str = "total"
    unit: str = "items"
    cancel_action: str = ""
    retry_action: str = ""
    retry_word: str = "retried"
    audit_fields: tuple[str, ...] = ("done", "total")
    items: Callable[[object], int] | None = None
    work_shard: Callable[[int, object], bool] | None = None
    name: str = ""
    variants: dict = field(default_factory=dict)
    variant: Callable[[object], str] | None = None
    describe: Callable[[object], str] = str
    related: tuple[str, ...] = ()
    page_url: Callable[[object], str] | None = None
    provenance: tuple[str, ...] = ()
    progress_text: Callable[[object], str] | None = None

    @property
    def key(self) -> str:
        return self.model._meta.label_lower

    @property
    def slug(self) -> str:
        """The kind's name in URLs and filters."""
        return self.name or self.model._meta.model_name

    def shown_as(self, run) -> str:
        """The name a run's row shows: its variant's, else the kind's."""
        return (self.variant(run) if self.variant else "") or self.slug

    @property
    def on_success(self) -> list[Callable[[int], object]]:
        return _ON_SUCCESS.setdefault(self.key, [])


_KINDS: dict[str, RunKind] = {}
# Hooks per kind key, called with the id of a run that succeeded while its worker still holds it.
_ON_SUCCESS: dict[str, list[Callable[[int], object]]] = {}


def register(kind: RunKind) -> RunKind:
    """Make ``kind`` known to the spine (registering the same model again replaces it)."""
    _KINDS[kind.key] = kind
    return kind


def kind_of(model_or_run) -> RunKind:
    """The kind of a run model, a run row, or a kind key ("judging.judgerun")."""
    if isinstance(model_or_run, str):
        key = model_or_run
    else:
        model = model_or_run if isinstance(model_or_run, type) else type(model_or_run)
        key = model._meta.label_lower
    try:
        return _KINDS[key]
    except KeyError:
        raise LookupError(UNKNOWN_KIND.format(key=key)) from None


def all_kinds() -> tuple[RunKind, ...]:
    return tuple(_KINDS.values())


def kind_named(slug: str) -> RunKind:
    """The kind whose ``slug`` is ``slug`` (LookupError when none is)."""
    for kind in _KINDS.values():
        if kind.slug == slug:
            return kind
    raise LookupError(UNKNOWN_KIND.format(key=slug))


def on_succeeded(model, hook: Callable[[int], object]) -> Callable[[int], object]:
    """Register ``hook(run_id)`` for runs of ``model`` that succeed (an exception fails the run,
    so a retry finishes the hook's work). Registering twice calls it once."""
    hooks = _ON_SUCCESS.setdefault(model._meta.label_lower, [])
    if hook not in hooks:
        hooks.append(hook)
    return hook
