"""Running lm-eval tasks on a model, one task at a time (lm-eval is imported lazily here only).

A multiple-choice task scores the way the run asks: ``loglikelihood`` (lm-eval's own: the
most likely option wins) or ``generative``: the app writes the task's generative variant, in
which the model writes an answer that must equal the correct option's text (spaces, case and
punctuation aside). A ``generate_until`` task is always generative. Same task, two numbers: the
stored result says which made it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalogue import JAPANESE_GROUP_DIR, lm_eval_tasks_dir
from .reading import TaskOutcome, outcome_of

LM_EVAL_MISSING = (
    "lm-evaluation-harness (lm_eval) cannot be imported in this process ({problem}); "
    "install the benchmark extra with `pip install -e '.[bench]'` where benchmark runs execute "
    "(the gpu worker, or this process for --inline)"
)
NO_LOGLIKELIHOOD = (
    "task {task!r} is {output_type}: it can only be scored generatively (generate, then match)"
)
SERVED_NO_LOGLIKELIHOOD = (
    "served models are evaluated through the chat-completions API, which returns no "
    "log-likelihoods: multiple-choice task(s) {tasks} can only be scored generatively "
    "(scoring 'generative')"
)
SERVED_ROLLING = "served models cannot score {task!r} ({output_type}): it needs log-likelihoods"

SERVED_RAW = (
    "a served model is always sent chat messages (the server applies its template): "
    "raw-text prompting is for models with weights"
)

LOGLIKELIHOOD = "loglikelihood"
GENERATIVE = "generative"
TEMPLATE = "template"  # lm-eval's chat path, rendered by the model's prompt template
RAW = "raw"
RAW_FORMAT = "raw"  # the task's own prompt text, no chat template around it
SERVED_FORMAT = "chat (the server's template)"
FEWSHOT_TURNS = "few-shot as turns"
FEWSHOT_ONE_TURN = "few-shot in one turn"
SYSTEM_INSTRUCTION = "system instruction"

# The generative variant of a multiple-choice task: one line of answer, matched to the option.
GENERATIVE_VARIANT = {
    "output_type": "generate_until",
    "generation_kwargs": {"until": ["\n"], "do_sample": False, "max_gen_toks": 32},
    "filter_list": [
        {
            "name": "strip",
            "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}],
        }
    ],
    "metric_list": [
        {
            "metric": "exact_match",
            "aggregation": "mean",
            "higher_is_better": True,
            "ignore_case": True,
            "ignore_punctuation": True,
        }
    ],
}


class HarnessMissing(RuntimeError):
    """lm-eval is not importable here; the message names what to install."""


def require_lm_eval():
    """The lm_eval module, or HarnessMissing naming `pip install -e '.[bench]'`."""
    try:
        import lm_eval
        import lm_eval.tasks  # noqa: F401
    except ImportError as exc:
        raise HarnessMissing(LM_EVAL_MISSING.format(problem=exc)) from None
    return lm_eval


def harness_version() -> str:
    lm_eval = require_lm_eval()
    return f"lm_eval {getattr(lm_eval, '__version__', 'unknown')}"


def scoring_of(output_type: str, requested: str) -> str:
    """How a task of ``output_type`` is scored in a run that asks for ``requested``."""
    return requested if output_type == "multiple_choice" else GENERATIVE


def scoring_problems(
    output_types: dict[str, str], requested: str, *, served: bool = False
) -> list[str]:
    """Why a run (task -> output_type) cannot be made as asked; empty when it can."""
    problems = []
    rolling = [t for t, kind in output_types.items() if kind == "loglikelihood_rolling"]
    for task in rolling:
        if requested == GENERATIVE or served:
            template = SERVED_ROLLING if served else NO_LOGLIKELIHOOD
            problems.append(template.format(task=task, output_type="loglikelihood_rolling"))
    if served and requested == LOGLIKELIHOOD:
        mc = [t for t, kind in output_types.items() if kind == "multiple_choice"]
        if mc:
            problems.append(SERVED_NO_LOGLIKELIHOOD.format(tasks=", ".join(mc)))
    return problems


def prompt_format(
    label: str, *, num_fewshot: int, fewshot_as_multiturn: bool, system_instruction: str
) -> str:
    """What a result records of how its prompts were made: ``raw``, the template's name and
    version (``line_sft v1``) or the served chat, then how few-shot examples and a system
    instruction went in when there were any."""
    if label == RAW_FORMAT:
        return label
    parts = [label]
    if num_fewshot:
        parts.append(FEWSHOT_TURNS if fewshot_as_multiturn else FEWSHOT_ONE_TURN)
    if system_instruction:
        parts.append(SYSTEM_INSTRUCTION)
    return ", ".join(parts)[:200]


@dataclass
class TaskSpec:
    """One task of a run, as the engine runs it."""

    name: str
    scoring: str = LOGLIKELIHOOD
    num_fewshot: int = 0
    limit: int | None = None
    seed: int = 0
    gen_kwargs: dict = field(default_factory=dict)
    bootstrap_iters: int = 1000
    system_instruction: str = ""
    fewshot_as_multiturn: bool = True


class Harness:
    """An lm-eval model plus a task index over the team's folders and the Japanese group.

    ``chat``: lm-eval's chat path (the model renders each example's conversation: a local
    model through its template, ``templated_model``; a served one as messages). ``label`` is
    what results record of the prompt (``prompt_format``)."""

    def __init__(
        self,
        lm: Any,
        task_dirs: Sequence[str | Path],
        *,
        chat: bool = False,
        label: str = RAW_FORMAT,
    ):
        require_lm_eval()
        from lm_eval.tasks import TaskManager

        self.lm = lm
        self.chat = chat
        self.label = label
        paths = [str(Path(p).resolve()) for p in task_dirs if Path(p).is_dir()]
        builtin = lm_eval_tasks_dir()
        if builtin is not None and (builtin / JAPANESE_GROUP_DIR).is_dir():
            paths.insert(0, str(builtin / JAPANESE_GROUP_DIR))
        # Only these folders are indexed: lm-eval's whole task tree takes long to scan. (A file
        # it cannot read is left out of its index, as the catalogue leaves it out.)
        self.tasks = TaskManager(include_path=paths, include_defaults=False)

    def prompt_format(self, spec: TaskSpec) -> str:
        return prompt_format(
            self.label,
            num_fewshot=spec.num_fewshot,
            fewshot_as_multiturn=spec.fewshot_as_multiturn,
            system_instruction=spec.system_instruction if self.chat else "",
        )

    def config(self, name: str, scoring: str) -> dict:
        """The task's YAML config, data files made absolute, in its generative variant when a
        multiple-choice task is scored generatively."""
        from lm_eval.tasks._yaml_loader import load_yaml

        entry = self.tasks.task_index.get(name)
        if entry is None or entry.yaml_path is None:
            raise ValueError(f"unknown benchmark task {name!r}")
        cfg = copy.deepcopy(load_yaml(entry.yaml_path, resolve_func=True))
        for key in ("tag", "group", "task_list"):
            cfg.pop(key, None)
        _absolute_data_files(cfg, Path(entry.yaml_path).parent)
        output_type = cfg.get("output_type", "generate_until")
        if output_type == "multiple_choice" and scoring == GENERATIVE:
            cfg = self._generative_variant(cfg)
        return cfg

    @staticmethod
    def _generative_variant(cfg: dict) -> dict:
        from lm_eval.api.task import ConfigurableTask

        # The multiple-choice task itself answers "which option is right" for each document.
        source = ConfigurableTask(config=copy.deepcopy(cfg))

        def correct_option(doc: dict) -> str:
            target = source.doc_to_target(doc)
            choices = source.doc_to_choice(doc)
            if isinstance(target, int) and 0 <= target < len(choices):
                return str(choices[target])
            return str(target)

        variant = {
            k: v
            for k, v in cfg.items()
            if k not in ("doc_to_choice", "metric_list", "filter_list", "generation_kwargs")
        }
        variant.update(copy.deepcopy(GENERATIVE_VARIANT))
        variant["doc_to_target"] = correct_option
        variant.setdefault("metadata", {})
        if isinstance(variant["metadata"], dict):
            variant["metadata"]["scored_as"] = "generative variant of a multiple-choice task"
        return variant

    def evaluate(self, spec: TaskSpec) -> TaskOutcome:
        """Run one task and return its metrics, samples and resolved configuration."""
        import lm_eval

        cfg = self.config(spec.name, spec.scoring)
        results = lm_eval.simple_evaluate(
            model=self.lm,
            tasks=[cfg],
            task_manager=self.tasks,
            num_fewshot=spec.num_fewshot,
            limit=spec.limit,
            log_samples=True,
            gen_kwargs=dict(spec.gen_kwargs) or None,
            apply_chat_template=self.chat,
            system_instruction=(spec.system_instruction or None) if self.chat else None,
            fewshot_as_multiturn=self.chat and spec.fewshot_as_multiturn,
            bootstrap_iters=spec.bootstrap_iters,
            random_seed=spec.seed,
            numpy_random_seed=spec.seed,
            torch_random_seed=spec.seed,
            fewshot_random_seed=spec.seed,
        )
        if results is None:  # a non-zero rank of a distributed run; not how the app runs
            raise RuntimeError(f"lm-eval returned no results for {spec.name!r}")
        return outcome_of(results, spec.name, getattr(self.lm, "conversations", None))


def _absolute_data_files(cfg: dict, base: Path) -> None:
    # A team's YAML names its JSONL next to it; lm-eval would read it relative to the cwd.
    kwargs = cfg.get("dataset_kwargs")
    if not isinstance(kwargs, dict) or "data_files" not in kwargs:
        return
    files = kwargs["data_files"]

    def fix(value):
        if isinstance(value, str) and "://" not in value and not Path(value).is_absolute():
            return str((base / value).resolve())
        return value

    if isinstance(files, dict):
        kwargs["data_files"] = {
            k: [fix(v) for v in val] if isinstance(val, list) else fix(val)
            for k, val in files.items()
        }
    elif isinstance(files, list):
        kwargs["data_files"] = [fix(v) for v in files]
    else:
        kwargs["data_files"] = fix(files)


def hf_model(model: Any, tokenizer: Any, *, batch_size: int = 8) -> Any:
    """lm-eval's HFLM around weights the app loaded with from_pretrained (adapter applied)."""
    require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def templated_model(model: Any, tokenizer: Any, template: Any, *, batch_size: int = 8) -> Any:
    """lm-eval's HFLM prompting through ``template`` (a ``generation.engine.render.Template``)
    as generation does (``local.TemplatedHFLM``)."""
    require_lm_eval()
    from .local import TemplatedHFLM

    return TemplatedHFLM(
        pretrained=model, tokenizer=tokenizer, batch_size=batch_size, template=template
    )


def served_model(endpoint: Any, template: Any) -> Any:
    """An lm-eval model for a served model (``generation.engine.endpoint.Endpoint``): chat
    completions through the app's one client, the messages as ``template`` writes them,
    generative only (``served.ServedChat``)."""
    require_lm_eval()
    from .served import ServedChat

    return ServedChat(endpoint, template)


def output_types(harness_dirs: Iterable[str | Path], names: Sequence[str]) -> dict[str, str]:
    """Output types of ``names`` from the catalogue (no lm-eval needed)."""
    from .catalogue import catalogue

    known = catalogue(harness_dirs)
    return {n: known.tasks[n].output_type for n in names if n in known.tasks}
