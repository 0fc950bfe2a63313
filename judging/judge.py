"""What a claimed judge run does: store every verdict it is missing, then its judge votes.

Pairwise, each comparison is judged twice, once with each answer shown as answer 1
(``Judgment.first``); grading, each answer of the study once. The judge prompt
(judging/engine/verdicts.render) becomes a one-user-turn conversation in the judge model's own
template (``run.template``), whose system prompt the judge prompt's replaces when it has one.

The judge is shown the whole conversation (judging/plan.py): every user turn up to the one the
answers reply to, and both models' earlier replies (or the graded model's own), with the
prompt chosen by the number of turns (a multi-turn variant for more than one) and by the
question's category (a reference prompt for the run's reference categories). A run with
``last_turn_only`` shows only the last user turn and the replies to it. Each verdict records
the prompt that asked it (``Judgment.prompt``), whose format reads it and whose scale it is on.

Unparsable output is asked again, up to ``run.max_attempts`` tries in all. Try n uses seed
``run.seed + n - 1``; when the run decodes greedily, tries after the first sample at
temperature 0.7, since greedy decoding would only repeat the same output. A verdict is stored
once final (parsed, or unparsable after the last try, with every try's output), so a run
resumed after its worker died starts the tries of an unfinished verdict over.

Weights generate batch by batch (at most one batch in flight when a worker dies); each batch's
verdicts, tries included, are committed in one transaction together with the judge votes they
complete. A served judge's replies are committed as they arrive. Judge votes: once both orders
of a comparison are stored and parsed, two ``Vote`` rows (voter judge, one per order, no
annotator, no assignment), unless they disagree and the run leaves inconsistent ones out. They
never touch ``Comparison.vote_count`` (K counts people), assignments or leases.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotation.models import Vote
from generation.engine import render
from generation.registry import language_model_endpoint, language_model_load
from generation.runs import engine_chosen, engine_served
from generation.templates import as_template, template_for

from .engine import verdicts
from .models import JudgeRun, Judgment
from .plan import Item, PromptPlan, answer_items, comparisons_of, pair_items
from .runs import study_answers

USAGE_KEYS = ("prompt_tokens", "completion_tokens")
# Retries of a greedy run sample, so that they can differ from the try that failed.
RETRY_TEMPERATURE = 0.7
UNPARSABLE = Judgment.Verdict.UNPARSABLE
TOO_LONG = (
    "{count} judge prompt(s) do not fit judge {judge!r}: the longest is {longest} tokens, and "
    "its context of {context} leaves {room} beside the verdict's max_new_tokens; use a shorter "
    "judge prompt than {prompt} or fewer new tokens"
)


def judge_missing(run_id: int, worker: str) -> None:
    """Ask for the run's missing verdicts, then mark it succeeded or failed."""
    run = _run(run_id)

    def still_mine() -> bool:
        return JudgeRun.objects.filter(
            pk=run_id, status=JudgeRun.Status.RUNNING, worker=worker
        ).exists()

    _judge(run, None, still_mine)
    done = Judgment.objects.filter(run_id=run_id).count()
    finished = done >= run.total
    JudgeRun.objects.filter(pk=run_id, status=JudgeRun.Status.RUNNING, worker=worker).update(
        done=done,
        status=JudgeRun.Status.SUCCEEDED if finished else JudgeRun.Status.FAILED,
        error="" if finished else f"stopped with {done} of {run.total} verdicts",
        finished_at=timezone.now(),
    )


def run_items(run: JudgeRun) -> int:
    """How many comparisons (pairwise) or answers (grading) the run judges: the items its
    shards cut into ranges, in the order of their ids."""
    return _item_ids(run).count()


def _item_ids(run: JudgeRun):
    if run.grading:
        return study_answers(run.study).order_by("pk").values_list("pk", flat=True)
    return run_comparisons(run).order_by("pk").values_list("pk", flat=True)


def judge_shard(run_id: int, shard) -> bool:
    """Ask for the missing verdicts of the shard's comparisons (both orders: a comparison's
    judge votes are made in one shard) or answers; True when all of them are stored."""
    run = _run(run_id)
    ids = list(_item_ids(run)[shard.start : shard.stop])
    _judge(run, ids, shard.held)
    if run.grading:
        return Judgment.objects.filter(run=run, answer_id__in=ids).count() >= len(ids)
    return Judgment.objects.filter(run=run, comparison_id__in=ids).count() >= 2 * len(ids)


def _run(run_id: int) -> JudgeRun:
    run = JudgeRun.objects.select_related(
        "judge", "judge__base_model", "prompt", "template", "study"
    ).get(pk=run_id)
    if run.template is None:
        run.template = template_for(run.judge)
        JudgeRun.objects.filter(pk=run_id).update(template=run.template)
    return run


def _judge(run: JudgeRun, ids: list[int] | None, still_mine) -> None:
    """Ask for the missing verdicts of the run (``ids``: of those comparisons or answers only)
    while ``still_mine()``."""
    run_id = run.pk
    chat = as_template(run.template)
    plan = PromptPlan.of(run)
    items = missing_items(run, plan, ids)
    JudgeRun.objects.filter(pk=run_id).update(done=Judgment.objects.filter(run_id=run_id).count())

    loaded: list = []

    def weights():
        if not loaded:  # once per run, whatever the number of prompts
            loaded.extend(language_model_load(model=run.judge, engine=run.engine))
        return loaded

    if run.judge.is_endpoint:
        engine_served(run)
    else:
        engine_chosen(run)

    # One prompt at a time: each has its own system prompt, format and scale.
    for prompt in plan.prompts():
        asked = [item for item in items if item.prompt_id == prompt.pk]
        if not asked or not still_mine():
            continue
        template = chat
        if prompt.system_prompt:
            template = dataclasses.replace(chat, system_prompt=prompt.system_prompt)
        judge = plan.template(prompt)
        if run.judge.is_endpoint:
            _ask_endpoint(run, template, judge, asked, still_mine)
        else:
            _judge_in_worker(run, template, judge, asked, still_mine, weights)


def run_comparisons(run: JudgeRun):
    """The comparisons a pairwise run judges: its chosen ids, or every non-gold one."""
    return comparisons_of(run.study, run.comparison_ids)


def missing_items(run: JudgeRun, plan: PromptPlan, ids: list[int] | None = None) -> list[Item]:
    """Every verdict not stored yet (``ids``: of those comparisons or answers only), longest
    prompt first (batches of similar lengths), the two orders of a comparison side by side (so
    a batch tends to complete its votes)."""
    if run.grading:
        graded = Judgment.objects.filter(run=run).values_list("answer_id", flat=True)
        answers = study_answers(run.study).exclude(pk__in=graded)
        items = answer_items(plan, answers if ids is None else answers.filter(pk__in=ids))
    else:
        stored = set(Judgment.objects.filter(run=run).values_list("comparison_id", "first"))
        comparisons = run_comparisons(run)
        if ids is not None:
            comparisons = comparisons.filter(pk__in=ids)
        items = pair_items(plan, comparisons, stored)
    items.sort(key=lambda item: -len(item.text))  # stable: the two orders stay side by side
    return items


def _params_for(params: dict, attempt: int) -> dict:
    if attempt == 1 or params.get("do_sample"):
        return params
    return {**params, "do_sample": True, "temperature": RETRY_TEMPERATURE}


def _grade(judge: verdicts.JudgeTemplate, output: str) -> float | None:
    return verdicts.parse_grade(judge.verdict_format, output, judge.score_min, judge.score_max)


def _parsed(judge: verdicts.JudgeTemplate, item: Item, output: str) -> bool:
    if item.answer_id is not None:
        return _grade(judge, output) is not None
    return verdicts.parse_pairwise(judge.verdict_format, output) is not None


def _judgment(run: JudgeRun, judge: verdicts.JudgeTemplate, item: Item, outputs: list[str]):
    last = outputs[-1]
    score = None
    if item.answer_id is not None:
        score = _grade(judge, last)
        verdict = Judgment.Verdict.SCORED if score is not None else UNPARSABLE
    else:
        said = verdicts.parse_pairwise(judge.verdict_format, last)
        verdict = verdicts.in_comparison_terms(said, item.first) if said else UNPARSABLE
    return Judgment(
        run_id=run.pk,
        comparison_id=item.comparison_id,
        first=item.first,
        answer_id=item.answer_id,
        verdict=verdict,
        score=score,
        attempts=len(outputs),
        raw_output=last,
        outputs=list(outputs),
        prompt_text=item.text,
        prompt_id=item.prompt_id,
    )


@transaction.atomic
def votes_make(run: JudgeRun, comparison_ids, *, imported: bool = False) -> int:
    """Judge votes for the comparisons (None: all of the run's) whose two orders are stored and
    parsed and have none yet; returns how many were made. The judgments are locked, so two
    processes never both vote on one comparison; call it in the transaction that stores them."""
    pending = Judgment.objects.select_for_update().filter(
        run_id=run.pk, comparison__isnull=False, vote__isnull=True
    )
    if comparison_ids is not None:
        pending = pending.filter(comparison_id__in=comparison_ids)
    pairs: dict[int, list[Judgment]] = defaultdict(list)
    for row in pending.exclude(verdict=UNPARSABLE).order_by("comparison_id", "first"):
        pairs[row.comparison_id].append(row)
    linked, votes = [], []
    for comparison_id, pair in pairs.items():
        if len(pair) != 2:
            continue
        if pair[0].verdict != pair[1].verdict and run.inconsistent == JudgeRun.Inconsistent.EXCLUDE:
            continue
        for row in pair:
            vote = Vote(
                comparison_id=comparison_id,
                outcome=row.verdict,
                voter=Vote.Voter.JUDGE,
                judge=run.judge.name,
                first_shown=row.first,
                imported=imported,
            )
            votes.append(vote)
            linked.append((row, vote))
    if not votes:
        return 0
    Vote.objects.bulk_create(votes)
    for row, vote in linked:
        row.vote = vote
    Judgment.objects.bulk_update([row for row, _ in linked], ["vote"])
    return len(votes)


def _store(run: JudgeRun, rows: list[Judgment], **run_changes) -> None:
    with transaction.atomic():
        # ignore_conflicts: a verdict an earlier attempt stored stays as it is.
        Judgment.objects.bulk_create(rows, ignore_conflicts=True)
        compared = {row.comparison_id for row in rows if row.comparison_id is not None}
        if compared:
            votes_make(run, compared)
        JudgeRun.objects.filter(pk=run.pk).update(
            done=Judgment.objects.filter(run_id=run.pk).count(),
            heartbeat_at=timezone.now(),
            **run_changes,
        )


def _messages(item: Item) -> tuple[dict, ...]:
    return tuple(render.conversation([item.text], []))


# --- weights in the worker ---------------------------------------------------------------------


def _judge_in_worker(run, template, judge, items: list[Item], still_mine, weights) -> None:
    from generation.engine.generate import Prompt, generate_answers

    tokenizer, model = weights()
    _fits_context(run, template, items, model, tokenizer)
    for start in range(0, len(items), run.batch_size):
        if not still_mine():
            return
        chunk = items[start : start + run.batch_size]
        outputs: dict[tuple, list[str]] = {item.key: [] for item in chunk}
        pending = chunk
        for attempt in range(1, run.max_attempts + 1):
            generated = generate_answers(
                model,
                tokenizer,
                [Prompt(item.key, _messages(item)) for item in pending],
                template=template,
                params=_params_for(run.params, attempt),
                seed=run.seed + attempt - 1,
                batch_size=len(pending),
            )
            for item, g in zip(pending, generated, strict=True):
                outputs[item.key].append(g.text)
            pending = [i for i in pending if not _parsed(judge, i, outputs[i.key][-1])]
            if not pending:
                break
        _store(run, [_judgment(run, judge, item, outputs[item.key]) for item in chunk])


def _fits_context(run, template, items: list[Item], model, tokenizer) -> None:
    """Refuse, before generating anything, prompts the judge cannot read whole: past its
    context a model reads garbage (or fails mid-run), and every verdict would be worthless."""
    from generation.engine.generate import DEFAULT_MAX_NEW_TOKENS
    from generation.engine.paths import CONTEXT_KEYS

    config = getattr(model, "config", None)
    context = next((getattr(config, k) for k in CONTEXT_KEYS if getattr(config, k, None)), None)
    if not isinstance(context, int):
        return
    room = context - int(run.params.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
    lengths = [len(render.encode_prompt(template, _messages(i), tokenizer)) for i in items]
    too_long = sum(n > room for n in lengths)
    if too_long:
        raise ValueError(
            TOO_LONG.format(
                count=too_long,
                longest=max(lengths),
                judge=run.judge.name,
                context=context,
                room=room,
                prompt=run.prompt,
            )
        )


# --- served judges -----------------------------------------------------------------------------


def _ask_endpoint(run, template, judge, items: list[Item], still_mine) -> None:
    from generation.engine.endpoint import Conversation, ask

    endpoint = language_model_endpoint(model=run.judge)
    by_key = {item.key: item for item in items}
    outputs: dict[tuple, list[str]] = defaultdict(list)
    usage = {key: int((run.usage or {}).get(key, 0)) for key in USAGE_KEYS}
    pending = items
    for attempt in range(1, run.max_attempts + 1):
        if not pending or not still_mine():
            return
        again: list[Item] = []

        def on_reply(reply, attempt=attempt, again=again) -> None:
            item = by_key[reply.key]
            outputs[item.key].append(reply.text)
            usage["prompt_tokens"] += reply.prompt_tokens
            usage["completion_tokens"] += reply.completion_tokens
            final = attempt == run.max_attempts or _parsed(judge, item, reply.text)
            if not final:
                again.append(item)
            _store(
                run,
                [_judgment(run, judge, item, outputs[item.key])] if final else [],
                requests=F("requests") + reply.requests,
                usage={
                    **usage,
                    "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
                },
            )

        ask(
            endpoint,
            template,
            [Conversation(item.key, (item.text,), ()) for item in pending],
            params=_params_for(run.params, attempt),
            seed=run.seed + attempt - 1,
            on_reply=on_reply,
            should_stop=lambda: not still_mine(),
        )
        pending = again
