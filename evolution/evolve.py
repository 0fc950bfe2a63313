"""What a claimed evolution run does: every round's missing items, then the new data set.

Round 1 evolves each row of the source data set; round r > 1 evolves the instructions kept in
round r-1 (one chain per source row, hence one item per (run, round, source row)). Per batch of
parents: the evolver rewrites each with the operation chosen for it (engine/operations), the
instruction rules run (engine/elimination; the judge, when the run has one, is asked about the
instructions left), the answer model answers the survivors, the answer rules run, and the batch's
items are committed together. A run that dies resumes at the first missing item.

When every round is done the kept items, all rounds, become a new instruction data set
(``derived_from`` the source) whose rows keep their lineage: ``operation``, ``round`` and
``parent``: for round 1 the source row, for round r > 1 the row of the new data set that it was
evolved from (so a chain is walked back row by row to the source row).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from evalsite.errors import ServiceError
from generation.engine.examples import join_instruction
from generation.instructions import ParsedExample
from generation.models import InstructionExample
from generation.training.data import instruction_dataset_create

from .asking import Asker, Stopped
from .engine import elimination, operations
from .models import EvolutionItem, EvolutionPrompt, EvolutionRun
from .prompts import as_rewrite_prompt
from .summary import evolution_counts, evolution_totals

# The answer model and the judge read plainly: the judge greedily, room for a short reason.
JUDGE_PARAMS = {"do_sample": False, "max_new_tokens": 64}


@dataclass(frozen=True)
class Parent:
    source_example_id: int
    # The source row's position: what operations and sampling are keyed by (with the seed and
    # the round), so a run over the same data set chooses the same in any database.
    position: int
    parent_item_id: int | None
    text: str


def evolve_missing(run_id: int, worker: str) -> None:
    run = EvolutionRun.objects.select_related(
        "source", "model", "answer_model", "judge", "model__base_model"
    ).get(pk=run_id)

    def still_mine() -> bool:
        return EvolutionRun.objects.filter(
            pk=run_id, status=EvolutionRun.Status.RUNNING, worker=worker
        ).exists()

    prompts = {
        row.operation: row for row in EvolutionPrompt.objects.filter(pk__in=run.prompts.values())
    }
    markers = elimination.prompt_markers(row.template for row in prompts.values())
    asker = Asker(still_mine)
    for round_ in range(1, run.rounds + 1):
        stored = set(
            EvolutionItem.objects.filter(run=run, round=round_).values_list(
                "source_example_id", flat=True
            )
        )
        missing = [p for p in _parents(run, round_) if p.source_example_id not in stored]
        for start in range(0, len(missing), run.batch_size):
            if not still_mine():
                return
            chunk = missing[start : start + run.batch_size]
            try:
                _evolve_batch(run, round_, chunk, prompts, markers, asker)
            except Stopped:
                return
        _estimate_total(run, round_)
    if not still_mine():
        return
    _finish(run, worker)


def _parents(run: EvolutionRun, round_: int) -> list[Parent]:
    if round_ == 1:
        rows = run.source.examples.order_by("position").values_list(
            "pk", "position", "instruction", "input"
        )
        return [Parent(pk, pos, None, join_instruction(i, x)) for pk, pos, i, x in rows]
    kept = (
        EvolutionItem.objects.filter(run=run, round=round_ - 1, kept=True)
        .select_related("source_example")
        .order_by("source_example__position")
    )
    return [
        Parent(i.source_example_id, i.source_example.position, i.pk, i.instruction) for i in kept
    ]


def _others(run: EvolutionRun, parent: Parent, source_rows, kept_items) -> list[tuple[str, str]]:
    """What rule 5 compares with: source rows but the parent, kept items but the parent."""
    others = [
        (f"source row #{pos}", text)
        for pk, pos, text in source_rows
        if not (parent.parent_item_id is None and pk == parent.source_example_id)
    ]
    others += [
        (f"the kept item of round {r} from row {src}", text)
        for pk, r, src, text in kept_items
        if pk != parent.parent_item_id
    ]
    return others


def _evolve_batch(run, round_, chunk: list[Parent], prompts, markers, asker: Asker) -> None:
    settings = run.rules
    chosen = {}
    for parent in chunk:
        op = operations.choose_operation(run.seed, round_, parent.position)
        prompt = prompts[op]
        chosen[parent.position] = (
            op,
            prompt,
            operations.render(as_rewrite_prompt(prompt), parent.text),
        )
    outputs = asker.ask(
        run.model,
        {key: text for key, (_, _, text) in chosen.items()},
        params=run.params,
        seed=run.seed + round_,
    )
    source_rows = [
        (pk, pos, join_instruction(i, x))
        for pk, pos, i, x in run.source.examples.values_list(
            "pk", "position", "instruction", "input"
        )
    ]
    kept_items = list(
        EvolutionItem.objects.filter(run=run, kept=True).values_list(
            "pk", "round", "source_example_id", "instruction"
        )
    )
    items: dict[int, EvolutionItem] = {}
    accepted: list[tuple[str, str]] = []  # instructions of this batch that passed so far
    for parent in chunk:
        key = parent.position
        op, prompt, text = chosen[key]
        output = outputs.get(key, "")
        evolved = operations.evolved_from_output(output)
        verdict = elimination.instruction_verdict(
            parent.text,
            evolved,
            others=_others(run, parent, source_rows, kept_items) + accepted,
            markers=markers,
            settings=settings,
            # With a judge, rule 1 here only drops copies; the judge decides the rest below.
            judge_gains=True if run.judge_id else None,
        )
        items[key] = EvolutionItem(
            run=run,
            round=round_,
            source_example_id=parent.source_example_id,
            parent_item_id=parent.parent_item_id,
            parent_text=parent.text,
            operation=op,
            prompt=prompt,
            prompt_text=text,
            output=output,
            instruction=evolved,
            kept=not verdict.dropped,
            drop_rule=verdict.rule,
            drop_detail=verdict.detail,
        )
        if not verdict.dropped:
            accepted.append((f"row #{key} in this batch", evolved))
    if run.judge_id:
        _ask_judge(run, items, asker)
    alive = {key: item.instruction for key, item in items.items() if item.kept}
    answers = asker.ask(run.answer_model, alive, params=run.answer_params, seed=run.seed + round_)
    for key in alive:
        item = items[key]
        item.answer = answers.get(key, "")
        verdict = elimination.answer_verdict(item.answer, settings)
        if verdict.dropped:
            item.kept, item.drop_rule, item.drop_detail = False, verdict.rule, verdict.detail
    _store(run, list(items.values()))


def _ask_judge(run, items: dict[int, EvolutionItem], asker) -> None:
    asking = {
        key: elimination.gain_judge_prompt(item.parent_text, item.instruction)
        for key, item in items.items()
        if item.kept
    }
    said = asker.ask(run.judge, asking, params=JUDGE_PARAMS, seed=run.seed)
    for key in asking:
        item = items[key]
        item.judge_output = said.get(key, "")
        gains = elimination.gain_judge_reads(item.judge_output)
        verdict = elimination.no_new_information(
            item.parent_text, item.instruction, run.rules, gains
        )
        if verdict.dropped:
            item.kept, item.drop_rule, item.drop_detail = False, verdict.rule, verdict.detail
        elif gains is None:
            item.drop_detail = "the judge's output did not parse; the cheap rule kept it"


def _store(run: EvolutionRun, items: list[EvolutionItem]) -> None:
    with transaction.atomic():
        # ignore_conflicts: an item an earlier attempt stored stays as it is.
        EvolutionItem.objects.bulk_create(items, ignore_conflicts=True)
        done = EvolutionItem.objects.filter(run=run).count()
        EvolutionRun.objects.filter(pk=run.pk).update(
            done=done,
            total=max(done, run.total),
            counts=evolution_counts(run),
            heartbeat_at=timezone.now(),
        )


def _estimate_total(run: EvolutionRun, round_: int) -> None:
    """Once a round is done: the items so far, plus its survivors for each round left."""
    items = EvolutionItem.objects.filter(run=run)
    kept = items.filter(round=round_, kept=True).count()
    run.total = items.count() + kept * (run.rounds - round_)
    EvolutionRun.objects.filter(pk=run.pk).update(total=run.total)


def _finish(run: EvolutionRun, worker: str) -> None:
    kept = list(
        EvolutionItem.objects.filter(run=run, kept=True)
        .select_related("source_example")
        .order_by("round", "source_example__position")
    )
    with transaction.atomic():
        locked = EvolutionRun.objects.select_for_update().get(pk=run.pk)
        if locked.status != EvolutionRun.Status.RUNNING or locked.worker != worker:
            return
        result = locked.result
        if result is None and kept:
            result = _write_dataset(run, kept)
        done = EvolutionItem.objects.filter(run=run).count()
        EvolutionRun.objects.filter(pk=run.pk).update(
            result=result,
            done=done,
            total=done,
            counts=evolution_counts(run),
            status=EvolutionRun.Status.SUCCEEDED,
            finished_at=timezone.now(),
            error="" if kept else "every evolution was dropped; see the items for why",
        )


def _write_dataset(run: EvolutionRun, kept: list[EvolutionItem]):
    counts = evolution_counts(run)
    try:
        dataset = instruction_dataset_create(
            name=run.name,
            examples=[
                ParsedExample(line=n, instruction=item.instruction, output=item.answer)
                for n, item in enumerate(kept, start=1)
            ],
            description=(
                f"Evol-Instruct run {run.pk}: {run.model.name} over {run.source.name}, "
                f"{run.rounds} round(s), seed {run.seed}; answers by {run.answer_model.name}"
            ),
            source=f"evolution run {run.pk}",
            derived_from=run.source,
            extra_stats={"evolution_run": run.pk, "evolution": evolution_totals(counts)},
            user=run.created_by,
        )
    except ServiceError:
        raise
    rows = {row.position: row for row in dataset.examples.order_by("position")}
    row_of_item: dict[int, InstructionExample] = {}
    for position, item in enumerate(kept, start=1):
        row = rows[position]
        row.operation = item.operation
        row.round = item.round
        if item.round == 1:
            row.parent_id = item.source_example_id
        else:
            row.parent_id = row_of_item[item.parent_item_id].pk
        row_of_item[item.pk] = row
    InstructionExample.objects.bulk_update(list(rows.values()), ["operation", "round", "parent"])
    return dataset
