"""Judge prompts as versioned rows: the shipped presets, lookup, checks, and the rule that a
version a judge run used is kept.

Versioning follows generation/templates.py: a version any judge run points at (whatever its
status: a failed run can be retried and must render as it did) is never changed in place;
saving changes to it creates the next version of the name, and ``judge_prompt_for`` returns
the latest. A name keeps its kind (pairwise or grading), so asking for a name never turns a
pairwise judge into a grader.

Prompts also come from files (files.py): a benchmark's own, or one an admin wrote.
"""

from __future__ import annotations

import dataclasses

from django.db import IntegrityError, transaction
from django.db.models import Q
from jinja2 import TemplateError

from evalsite.accounts.services import Action, audit_record
from evalsite.errors import ServiceError
from evalsite.versioned import Versions

from ..engine import verdicts
from ..engine.presets import DEFAULT_GRADING, DEFAULT_PAIRWISE, PRESETS
from ..models import JudgePrompt, JudgeRun, Judgment

# What staff may set on a judge prompt (the API serializer and the admin form list these).
PROMPT_FIELDS = [
    "name",
    "description",
    "kind",
    "system_prompt",
    "template",
    "verdict_format",
    "score_min",
    "score_max",
    "category",
    "source",
]
# Fields whose change alters what the judge is asked or how its answer is read.
RENDERED_FIELDS = [
    f for f in PROMPT_FIELDS if f not in ("name", "description", "category", "source")
]
# Read from the template whenever a prompt is saved (judge_prompt_fields_check), never given.
DERIVED_FIELDS = ["multi_turn", "reference"]

# Shown beside the shipped prompts (migration 0002 copies these words).
PRESET_DESCRIPTIONS = {
    "ja_pairwise": "The team's Japanese pairwise judge: five points, order ignored, last line "
    "1 / 2 / 3",
    "ja_grading": "The team's Japanese grader: a 1-5 score against the reference and criteria",
    "ja_pairwise-multi-turn": "ja_pairwise over whole conversations: both models' earlier "
    "replies, then the last turn",
    "ja_grading-multi-turn": "ja_grading over whole conversations: the model's earlier replies, "
    "then the last turn",
    "elyza_grading": "ELYZA-tasks-100's 1-5 scale: each task's eval_aspect and the published "
    "general deductions",
    "mtbench_grading": "MT-Bench single-answer grading, 1-10, [[rating]]; every turn",
    "mtbench_grading_reference": "MT-Bench single-answer grading, 1-10, against the reference "
    "answer (math, reasoning, coding); every turn",
}

UNKNOWN_PROMPT = "unknown judge prompt {name!r}; known judge prompts: {known}"
WRONG_KIND = "judge prompt {name!r} is a {kind} prompt; {wanted} needs a {wanted_kind} prompt"
NAME_TAKEN = (
    "a judge prompt named {name!r} already exists; edit it instead (a used version is kept and "
    "the edit saved as a new version)"
)
NO_RENAME = (
    "a judge prompt keeps its name (runs and commands refer to it by name); create a new one"
)
NO_KIND_CHANGE = "a judge prompt keeps its kind ({kind}); create a new name for a {other} prompt"
GONE = "{row} no longer exists"
IN_USE = "{prompt} was used by a judge run and is kept as it is"
UNKNOWN_FIELDS = "unknown judge prompt field(s): {fields}"
BAD_FIELD = "{field}: {problem}"
EMPTY_NAME = "a judge prompt needs a name"
NAME_TOO_LONG = "at most {limit} characters"


def judge_prompt_in_use(row: JudgePrompt) -> bool:
    """Whether a judge run recorded this version, as its prompt or one of its multi-turn or
    reference prompts, or a verdict was asked with it (it is then kept as it is)."""
    if row.pk is None:
        return False
    return (
        JudgeRun.objects.filter(
            Q(prompt=row)
            | Q(multi_turn_prompt=row)
            | Q(reference_prompt=row)
            | Q(reference_multi_turn_prompt=row)
        ).exists()
        or Judgment.objects.filter(prompt=row).exists()
    )


VERSIONS = Versions(
    JudgePrompt,
    key="name",
    fields=PROMPT_FIELDS + DERIVED_FIELDS,
    rendered=RENDERED_FIELDS,
    in_use=judge_prompt_in_use,
    unknown=UNKNOWN_FIELDS,
    gone=GONE,
)


def judge_presets_install() -> list[str]:
    """Create version 1 of every shipped judge prompt (judging/engine/presets.py) whose name has
    no row yet; returns the names created. Migration 0002 ships them; this restores them after
    the database was emptied (``flush``, a transactional test). Idempotent."""
    return VERSIONS.presets_install(
        {
            preset.name: {
                "description": PRESET_DESCRIPTIONS.get(preset.name, ""),
                "kind": preset.kind,
                "system_prompt": preset.system_prompt,
                "template": preset.template,
                "verdict_format": preset.verdict_format,
                "score_min": preset.score_min,
                "score_max": preset.score_max,
                **derived_fields(preset),
            }
            for preset in PRESETS
        }
    )


def derived_fields(judge: verdicts.JudgeTemplate) -> dict:
    """What the template itself says: whether it shows every turn, and the reference answer."""
    sample = verdicts.sample_turns(judge.kind, 2)
    try:
        text = verdicts.render(judge, turns=sample)
    except (TemplateError, ValueError):
        return {"multi_turn": False, "reference": False}
    shown = [turn["reference"] for turn in sample]
    return {
        "multi_turn": sample[0]["question"] in text,
        "reference": any(value in text for value in shown),
    }


def judge_prompt_names() -> list[str]:
    return VERSIONS.keys()


def _known() -> str:
    return ", ".join(judge_prompt_names()) or "(none)"


def judge_prompt_latest(name: str) -> JudgePrompt | None:
    return VERSIONS.latest(name)


def judge_prompt_for(name: str | None = None, grading: bool = False) -> JudgePrompt:
    """The latest version of ``name`` (None: the shipped default, ``ja_pairwise`` or, when
    ``grading``, ``ja_grading``). ServiceError when there is no such prompt or it is of the
    other kind."""
    if name is None:
        name = DEFAULT_GRADING if grading else DEFAULT_PAIRWISE
    row = judge_prompt_latest(name)
    if row is None:
        raise ServiceError(UNKNOWN_PROMPT.format(name=name, known=_known()))
    wanted_kind = JudgePrompt.Kind.GRADING if grading else JudgePrompt.Kind.PAIRWISE
    if row.kind != wanted_kind:
        raise ServiceError(
            WRONG_KIND.format(
                name=name,
                kind=row.kind,
                wanted="grading" if grading else "a pairwise judge run",
                wanted_kind=wanted_kind,
            )
        )
    return row


def as_judge_template(row: JudgePrompt) -> verdicts.JudgeTemplate:
    """The engine's view of a row."""
    return verdicts.JudgeTemplate(
        name=row.name,
        version=row.version,
        kind=row.kind,
        template=row.template,
        verdict_format=row.verdict_format,
        system_prompt=row.system_prompt,
        score_min=row.score_min,
        score_max=row.score_max,
        multi_turn=row.multi_turn,
    )


def judge_prompt_problems(fields: dict) -> dict[str, str]:
    """Field -> what is wrong with a whole prompt as it would be stored (empty when it is fine).
    The template is rendered once with sample values (verdicts.problems)."""
    found: dict[str, str] = {}
    name = (fields.get("name") or "").strip()
    limit = JudgePrompt._meta.get_field("name").max_length
    if not name:
        found["name"] = EMPTY_NAME
    elif len(name) > limit:
        found["name"] = NAME_TOO_LONG.format(limit=limit)
    if not (fields.get("template") or "").strip():
        found["template"] = "the template is empty"
        return found
    candidate = _as_template({**fields, "name": name})
    candidate = dataclasses.replace(candidate, **_multi_turn(candidate))
    # The database asks score_min < score_max of every row, pairwise ones too.
    if not candidate.score_min < candidate.score_max:
        found["score_max"] = "the highest score must be above the lowest"
    found.update(verdicts.problems(candidate))
    return found


def judge_prompt_fields_check(fields: dict) -> dict:
    """``fields`` as they will be stored, or ServiceError naming each problem by field."""
    found = judge_prompt_problems(fields)
    if found:
        raise ServiceError(
            "; ".join(BAD_FIELD.format(field=f, problem=p) for f, p in sorted(found.items()))
        )
    values = {**fields, "name": fields["name"].strip()}
    return {**values, **derived_fields(_as_template(values))}


def _multi_turn(judge: verdicts.JudgeTemplate) -> dict:
    return {"multi_turn": derived_fields(judge)["multi_turn"]}


def _as_template(fields: dict) -> verdicts.JudgeTemplate:
    return verdicts.JudgeTemplate(
        name=fields["name"],
        version=1,
        kind=fields.get("kind") or JudgePrompt.Kind.PAIRWISE,
        template=fields["template"],
        verdict_format=fields.get("verdict_format") or "",
        system_prompt=fields.get("system_prompt") or "",
        score_min=fields.get("score_min", 1),
        score_max=fields.get("score_max", 5),
    )


def prompt_defaults() -> dict:
    return VERSIONS.defaults()


@transaction.atomic
def judge_prompt_create(*, name: str, user=None, **fields) -> JudgePrompt:
    """A new judge prompt (version 1). Fields not given take the model's defaults."""
    VERSIONS.check_known(fields)
    values = judge_prompt_fields_check({**prompt_defaults(), **fields, "name": name})
    if JudgePrompt.objects.filter(name=values["name"]).exists():
        raise ServiceError(NAME_TAKEN.format(name=values["name"]))
    try:
        with transaction.atomic():
            row = VERSIONS.create(values, user=user, version=1)
    except IntegrityError:
        raise ServiceError(NAME_TAKEN.format(name=values["name"])) from None
    audit_record(
        user=user,
        action=Action.JUDGE_PROMPT_CREATE,
        obj=row,
        name=row.name,
        version=row.version,
        kind=row.kind,
        source=row.source,
    )
    return row


@transaction.atomic
def judge_prompt_update(*, prompt: JudgePrompt, changes: dict, user=None) -> JudgePrompt:
    """Apply ``changes`` to ``prompt``; returns the row that now holds them.

    A version a judge run recorded is left as it is: changes to what it renders or how it is
    read are saved as a new version (one above the highest of that name) and that row is
    returned. Otherwise the row itself changes. A change that changes nothing saves nothing.
    """
    VERSIONS.check_known(changes)
    row = VERSIONS.lock(prompt)
    if changes.get("name", row.name).strip() != row.name:
        raise ServiceError(NO_RENAME)
    if changes.get("kind", row.kind) != row.kind:
        other = next(k for k in JudgePrompt.Kind.values if k != row.kind)
        raise ServiceError(NO_KIND_CHANGE.format(kind=row.kind, other=other))
    current = {f: getattr(row, f) for f in PROMPT_FIELDS}
    values = judge_prompt_fields_check({**current, **changes})
    edited = row
    row, changed = VERSIONS.apply(row, values, user=user)
    if not changed:
        return row
    audit_record(
        user=user,
        action=Action.JUDGE_PROMPT_EDIT,
        obj=row,
        name=row.name,
        fields=changed,
        edited_version=edited.version,
        version=row.version,
        source=row.source,
    )
    return row


def judge_prompt_save(*, user=None, **fields) -> JudgePrompt:
    """Create ``fields["name"]``, or apply ``fields`` to its latest version (a used version is
    kept and a new one made): how a prompt from a file is stored. Call inside a transaction."""
    latest = judge_prompt_latest(fields["name"].strip())
    if latest is None:
        return judge_prompt_create(user=user, **fields)
    return judge_prompt_update(prompt=latest, changes=fields, user=user)


def judge_prompt_delete_problem(row: JudgePrompt) -> str | None:
    """Why ``row`` may not be deleted (None when it may): a judge run recorded it."""
    return IN_USE.format(prompt=row) if judge_prompt_in_use(row) else None


@transaction.atomic
def judge_prompt_delete(*, prompt: JudgePrompt) -> None:
    row = JudgePrompt.objects.select_for_update().filter(pk=prompt.pk).first()
    if row is None:
        raise ServiceError(GONE.format(row=prompt))
    problem = judge_prompt_delete_problem(row)
    if problem:
        raise ServiceError(problem)
    row.delete()


def judge_prompt_preview(row: JudgePrompt, values: dict[str, str] | None = None) -> str:
    """The prompt ``row`` renders for ``values`` (None: the sample values below; a variable
    left out is blank)."""
    wanted = verdicts.VARIABLES[row.kind]
    filled = SAMPLE if values is None else values
    return verdicts.render(as_judge_template(row), **{n: filled.get(n, "") for n in wanted})


# What a preview shows when no values are given (the admin's preview uses these).
SAMPLE = {
    "question": "日本で一番高い山は何ですか？",
    "answer_1": "富士山です。標高は3776メートルです。",
    "answer_2": "北岳だと思います。",
    "answer": "富士山です。標高は3776メートルです。",
    "reference": "富士山 (3776 m) です。",
    "criteria": "- 山の名前が正しければ3点以上\n- 標高も正しければ満点",
}
