"""A study's votes as preference pairs for DPO.

Per comparison, the outcome most of its people chose (the votes the results count: people's
only, never a gold check's, never an excluded annotator's). A comparison whose most-chosen
outcome is a tie, or whose top count is shared by two outcomes, gives no pair. The prompt is
the question rendered with the template of the model to be tuned (the one renderer that
fine-tuning and generation use); without a model it is the plain question.

Only single-turn questions give pairs: a multi-turn comparison holds two different earlier
conversations, so there is no one prompt both answers follow.
"""

from __future__ import annotations

import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from evalsite.accounts.services import Action, audit_record
from evalsite.errors import ServiceError
from evalsite.query import is_whole_number
from generation.engine import render
from generation.models import LanguageModel, PreferenceDataset
from generation.templates import as_template, template_for
from generation.training.preferences import preference_dataset_create, preferences_write
from generation.web_tokenizer import web_tokenizer

from .models import Comparison, Study, Vote

NO_STUDY = "no study named (or with id) {study!r}"
NO_PAIRS = "study {name!r} gives no preference pairs from {votes} counted people's votes: {why}"
# Why each voted comparison gave no pair (study_preference_pairs' ``dropped``), in the words of
# the refusal: the real reason, not a guess.
WHY_NO_PAIR = {
    "multi_turn": (
        "{n} voted comparison(s) are of multi-turn conversations, and only single-turn "
        "questions give pairs (two different earlier conversations leave no one prompt both "
        "answers follow)"
    ),
    "tie": "{n} have a tie as their most-chosen outcome",
    "split": "{n} have their top count shared by two outcomes",
    "same_or_empty": "{n} have the same or an empty answer on both sides",
}
NO_VOTES = "no comparison has a people's vote that counts"
NAME_TAKEN = "a preference data set named {name!r} already exists"
BAD_NAME_CHARACTER = (
    "a preference data set name cannot hold control characters such as a newline or a tab "
    "(character {position} is {char!r})"
)
# Control (a newline, NUL), format (a right-to-left override) and surrogate characters: the name
# is a file name when the pairs are downloaded and a line of the command's output.
_REFUSED_CATEGORIES = ("Cc", "Cf", "Cs")
UNKNOWN_MODEL = "no model named {name!r}"


def study_find(study: str | int | Study) -> Study:
    if isinstance(study, Study):
        return study
    found = Study.objects.filter(name=str(study)).first()
    if found is None and is_whole_number(str(study)):
        found = Study.objects.filter(pk=int(str(study))).first()
    if found is None:
        raise ServiceError(NO_STUDY.format(study=study))
    return found


def name_check(name: str) -> None:
    """ServiceError naming the first character a preference data set's name may not hold."""
    for position, char in enumerate(name, start=1):
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise ServiceError(BAD_NAME_CHARACTER.format(position=position, char=char))


def majority(counts: Counter) -> str | None:
    """ "a" or "b" when that side has strictly more votes than either other outcome; None for a
    tie majority, a shared top count, or no votes."""
    ranked = counts.most_common()
    if not ranked:
        return None
    top, n = ranked[0]
    if top == Vote.Outcome.TIE or (len(ranked) > 1 and ranked[1][1] == n):
        return None
    return top


def _shared_top(counts: Counter) -> bool:
    ranked = counts.most_common(2)
    return len(ranked) > 1 and ranked[0][1] == ranked[1][1]


def _prompt_renderer(model: LanguageModel | None):
    if model is None:
        return lambda question: question
    template = as_template(template_for(model))
    # Rendered in the web process (admin, API, command): never with the repository's own code.
    tokenizer = None if template.kind == render.TURNS else web_tokenizer(model)

    def rendered(question: str) -> str:
        return render.render_prompt(template, render.conversation([question], []), tokenizer)

    return rendered


def study_preference_pairs(
    *, study: Study, model: LanguageModel | None = None
) -> tuple[list[dict], dict]:
    """(pairs, statistics). Each pair: ``prompt``, ``chosen``, ``rejected``, ``question`` and
    ``origin`` (comparison id, people's votes for a / tie / b, which side won)."""
    from .results import counted_votes  # results imports scipy: not at Django's start-up

    counts: dict[int, Counter] = defaultdict(Counter)
    votes = 0
    for comparison_id, outcome in counted_votes(study, "people").values_list(
        "comparison_id", "outcome"
    ):
        counts[comparison_id][outcome] += 1
        votes += 1
    render_prompt = _prompt_renderer(model)
    comparisons = (
        Comparison.objects.filter(pk__in=counts)
        .select_related("question", "answer_a", "answer_b")
        .order_by("question__position", "pk")
    )
    pairs = []
    dropped = Counter()
    for comparison in comparisons:
        tally = counts[comparison.pk]
        side = majority(tally)
        if side is None:
            dropped["split" if _shared_top(tally) else "tie"] += 1
            continue
        a, b = comparison.answer_a, comparison.answer_b
        if a.turn > 1 or b.turn > 1:
            dropped["multi_turn"] += 1
            continue
        chosen, rejected = (a.text, b.text) if side == Vote.Outcome.A else (b.text, a.text)
        if chosen.strip() == rejected.strip() or not chosen.strip() or not rejected.strip():
            dropped["same_or_empty"] += 1
            continue
        question = comparison.question.text
        pairs.append(
            {
                "question": question,
                "prompt": render_prompt(question),
                "chosen": chosen,
                "rejected": rejected,
                "origin": {
                    "comparison": comparison.pk,
                    "votes": {o: tally.get(o, 0) for o in ("a", "tie", "b")},
                    "winner": side,
                },
            }
        )
    stats = {
        "votes": votes,
        "comparisons_voted": len(counts),
        "dropped": dict(dropped),
    }
    return pairs, stats


def preferences_export(
    *,
    study: str | int | Study,
    model: LanguageModel | str | None = None,
    name: str = "",
    out: str | Path | None = None,
    user=None,
) -> PreferenceDataset:
    """Store a study's votes as a preference data set (and write its JSONL to ``out``)."""
    study = study_find(study)
    if isinstance(model, str):
        found = LanguageModel.objects.filter(name=model).first()
        if found is None:
            raise ServiceError(UNKNOWN_MODEL.format(name=model))
        model = found
    name = name or f"{study.name}-prefs-{timezone.now():%Y%m%d-%H%M%S}"
    name_check(name)
    if PreferenceDataset.objects.filter(name=name).exists():
        raise ServiceError(NAME_TAKEN.format(name=name))
    pairs, stats = study_preference_pairs(study=study, model=model)
    if not pairs:
        why = [WHY_NO_PAIR[k].format(n=n) for k, n in stats["dropped"].items() if n]
        raise ServiceError(
            NO_PAIRS.format(
                name=study.name, votes=stats["votes"], why="; ".join(why) if why else NO_VOTES
            )
        )
    with transaction.atomic():
        dataset = preference_dataset_create(
            name=name,
            pairs=pairs,
            description=f"People's majority votes of study {study.name}",
            source=f"study {study.name}",
            source_study_id=study.pk,
            source_study_name=study.name,
            rendered_for=model.name if model else "",
            stats=stats,
            user=user,
        )
        audit_record(
            user=user,
            action=Action.PREFERENCES_EXPORT,
            obj=study,
            dataset=dataset.name,
            pairs=len(pairs),
            rendered_for=dataset.rendered_for,
            out=str(out) if out else "",
            **stats,
        )
    if out:
        preferences_write(dataset, out)
    return dataset


def preference_source(study, *, model=None, name="", user=None) -> PreferenceDataset:
    """The hook generation calls for ``finetune --preferences-from STUDY`` (registered in
    AnnotationConfig.ready())."""
    return preferences_export(study=study, model=model, name=name, user=user)
