"""People's, the LLM judge's and prediction-powered strengths of a study, side by side, with
what each rests on: the design that chose people's comparisons, the votes counted, and the
audit of the judge against people with its interval (results page, API, JSON export).

The three fits come from one engine (``ranking.ppi.fit_ppi``), on one scale, with sandwich
intervals clustered by question:

- **people**: people's votes alone, each comparison with people's votes counted once (the mean
  of its votes) and divided by its stratum's share of comparisons with people's votes, so a
  design that gives people some comparisons more often than others (routing gives them the
  ones the judge was unsure of) does not tilt the strengths; the votes of a design that
  records each vote's chance of being asked (adaptive K, the staged design) are weighted by it
  instead;
- **judge**: the judge's verdicts alone (each comparison's mean score over its verdicts);
- **prediction-powered**: the judge's verdicts on every comparison corrected by people's on
  those they voted on (PPI++), unbiased for people's strengths whatever the judge's bias.

Judge and people are combined only that way: their votes are never added (``voters=all``
reads the prediction-powered fit). A design is told apart by ``hooks.people_design`` (judging's
routing registers one); without one, every comparison is in one stratum.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import norm

from evalsite.exports import csv_text, markdown_table, markdown_text

from . import staging
from .hooks import PeopleDesign
from .models import Comparison, Study
from .ranking import ELO_MEAN, ELO_PER_LOG
from .ranking.designs import stage_weight
from .ranking.ppi import PPIFit, fit_ppi
from .ranking.sentences import Note, sentence
from .ranking.summaries import PairOrder, gap_intervals, gap_rank_ranges, pair_orders

PEOPLE, JUDGE, POWERED = "people", "judge", "prediction-powered"
KINDS = (PEOPLE, JUDGE, POWERED)
LABELS = {
    PEOPLE: sentence("People alone"),
    JUDGE: sentence("LLM judge alone"),
    POWERED: sentence("Prediction-powered (judge corrected by people)"),
}
# The labels inside a note's sentence.
LOWER_LABELS = {kind: sentence(label.lower()) for kind, label in LABELS.items()}
CONFIDENCE = 0.95
SCORES = {"a": 1.0, "tie": 0.5, "b": 0.0}
ALL = sentence("all comparisons")
NO_PEOPLE = sentence(
    "No people's votes: neither the people nor the prediction-powered fit can be made."
)
NO_JUDGE = sentence(
    "No judge votes: the prediction-powered fit needs the judge's verdicts (run a judge over "
    "the study, or import its verdicts with --voters judge)."
)
UNSAMPLED = sentence(
    "No people's votes on the comparisons in stratum {stratum!r} ({n}): the prediction-powered "
    "fit takes the judge's word on them unchecked, and people's strengths leave them out."
)
NO_INTERVALS = sentence("The {label} fit has no intervals: its covariance could not be computed.")
NOT_FITTED = sentence(
    "The {label} fit could not be made (too few votes, or a model that wins or loses all)."
)
POOLING = sentence(
    "People's and the judge's votes are never added together: 'people and the judge' "
    "(voters=all) reads the prediction-powered strengths."
)


@dataclass(frozen=True)
class Strength:
    name: str
    strength: float | None  # Elo-like scale (mean 1000); None: not estimated
    low: float | None
    high: float | None
    rank_low: int | None
    rank_high: int | None

    @property
    def estimated(self) -> bool:
        return self.strength is not None


@dataclass(frozen=True)
class LabelledFit:
    kind: str  # KINDS
    label: str
    models: list[Strength]  # strongest first, models not estimated last
    orders: list[PairOrder]
    human_votes: int  # people's votes the fit rests on
    judge_votes: int  # the judge's
    people_comparisons: int  # comparisons with people's votes
    judged_comparisons: int  # comparisons with a judge verdict
    n_questions: int
    lam: float | None  # how much the judge counts (prediction-powered only)


@dataclass(frozen=True)
class Stratum:
    name: str
    comparisons: int
    with_people: int  # ... of which people voted on

    @property
    def share(self) -> float:
        return self.with_people / self.comparisons if self.comparisons else 0.0


@dataclass(frozen=True)
class Audit:
    """People against the judge on the comparisons drawn to check it (routing's audit), or on
    every comparison both voted on; each side's outcome is the one most of its votes gave."""

    sample: str  # "routing audit", "first votes" (adaptive K) or "both voted"
    size: int  # comparisons in the sample
    compared: int  # ... with votes of both
    agreeing: int
    rate: float | None
    low: float | None  # Wilson interval, CONFIDENCE
    high: float | None


@dataclass(frozen=True)
class Combined:
    design: str  # "uniform", "active", "routing", "routing + active"
    strata: list[Stratum]
    human_votes: int
    judge_votes: int
    fits: dict[str, LabelledFit | None]
    audit: Audit | None
    notes: list[str] = field(default_factory=list)
    # The staged design (staging.staged_summary): the stage reached of how many, the budget,
    # each stage's share, comparisons and votes; None in other designs.
    staged: dict | None = None

    @property
    def powered(self) -> LabelledFit | None:
        return self.fits.get(POWERED)

    @property
    def columns(self) -> list[LabelledFit | None]:
        return [self.fits[kind] for kind in KINDS]

    @property
    def rows(self) -> list[tuple[str, list[Strength | None]]]:
        """Per model (in the first fit's order, prediction-powered first): its strength in
        each fit, KINDS order (None where that fit was not made)."""
        first = next((self.fits[k] for k in (POWERED, PEOPLE, JUDGE) if self.fits[k]), None)
        if first is None:
            return []
        found = {kind: {m.name: m for m in fit.models} for kind, fit in self.fits.items() if fit}
        return [(m.name, [found.get(kind, {}).get(m.name) for kind in KINDS]) for m in first.models]


def wilson(agreeing: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson's score interval for a proportion agreeing / n (n > 0)."""
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    p = agreeing / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _majority(outcomes: list[str]) -> str:
    """The outcome most votes gave; a draw at the top is a tie."""
    ranked = Counter(outcomes).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return "tie"
    return ranked[0][0]


# How the results name a sampling design (others by their value).
SAMPLING_NAMES = {Study.Sampling.STAGED: "staged (prediction-powered)"}


def design_name(study: Study, found: PeopleDesign | None) -> str:
    sampling = study.sampling if study.sampling != "uniform" else ""
    sampling = SAMPLING_NAMES.get(sampling, sampling)
    if found is None:
        return sampling or "uniform"
    return f"{found.name} + {sampling}" if sampling else found.name


def study_combined(
    *,
    study: Study,
    models: list[str],
    labels: dict[str, str],
    people: Iterable[tuple[int, str, int | None, float | None, float | None]],
    judge: Iterable[tuple[int, str]],
    design: PeopleDesign | None,
) -> Combined:
    """The three fits of the study and what they rest on. ``models``: labels in the study's
    order; ``labels``: model name -> label; ``people`` / ``judge``: (comparison id, outcome)
    of the counted votes of each (the turn chosen; the judge's those ``design`` rests on), with
    each person's vote's adaptive-K cap and chance of being asked (None outside adaptive K)
    and the staged design's stage share (then cap and asked are the slots and the draw's
    probability; None outside it);
    ``design``: how people's comparisons were chosen (``hooks.people_design``)."""
    comparisons = list(
        Comparison.objects.filter(study=study, gold=False)
        .order_by("pk")
        .values_list("pk", "question_id", "run_a__model__name", "run_b__model__name")
    )
    row = {pk: i for i, (pk, *_) in enumerate(comparisons)}
    index = {name: i for i, name in enumerate(models)}
    model_a = np.array([index[labels[a]] for _, _, a, _ in comparisons], dtype=np.int64)
    model_b = np.array([index[labels[b]] for _, _, _, b in comparisons], dtype=np.int64)
    question = np.array([q for _, q, _, _ in comparisons], dtype=np.int64)

    people_outcomes: dict[int, list[str]] = defaultdict(list)
    # Adaptive K's votes: 1 / (cap x the chance each was asked) in place of 1 / votes; the
    # staged design's: share / (slots x the chance its comparison was drawn).
    adaptive: dict[int, list[float]] = defaultdict(list)
    staged: set[int] = set()  # their weights carry the draw's chance: no stratum share
    for pk, outcome, cap, asked, share in people:
        if pk in row:
            people_outcomes[pk].append(outcome)
            if asked is None or not cap:
                adaptive[pk].append(math.nan)
            elif share is not None:
                adaptive[pk].append(stage_weight(share, cap, asked))
                staged.add(pk)
            else:
                adaptive[pk].append(1.0 / (cap * asked))
    judge_outcomes: dict[int, list[str]] = defaultdict(list)
    for pk, outcome in judge:
        if pk in row:
            judge_outcomes[pk].append(outcome)
    human_votes = sum(map(len, people_outcomes.values()))
    judge_votes = sum(map(len, judge_outcomes.values()))

    strata_of = design.strata if design is not None else {}
    stratum = [strata_of.get(pk, ALL) for pk, *_ in comparisons]
    sizes = Counter(stratum)
    voted = Counter(
        s for (pk, *_), s in zip(comparisons, stratum, strict=True) if pk in people_outcomes
    )
    strata = [Stratum(name, sizes[name], voted[name]) for name in sorted(sizes)]
    share = {s.name: s.share for s in strata}
    notes = [
        Note(UNSAMPLED, stratum=s.name, n=s.comparisons, words=("stratum",))
        for s in strata
        if s.with_people == 0 and human_votes
    ]

    judge_score = np.full(len(comparisons), np.nan)
    for pk, outcomes in judge_outcomes.items():
        judge_score[row[pk]] = float(np.mean([SCORES[o] for o in outcomes]))
    vote_comparison, vote_score, vote_weight = [], [], []
    for pk, outcomes in people_outcomes.items():
        i = row[pk]
        recorded = adaptive[pk]
        if not np.isfinite(recorded).all():  # not all adaptive: each vote 1 / votes
            recorded = [1.0 / len(outcomes)] * len(outcomes)
        for outcome, weight in zip(outcomes, recorded, strict=True):
            vote_comparison.append(i)
            vote_score.append(SCORES[outcome])
            vote_weight.append(weight if pk in staged else weight / share[stratum[i]])
    no_judge = np.full(len(comparisons), np.nan)
    votes = (np.array(vote_comparison, np.int64), np.array(vote_score), np.array(vote_weight))
    empty = (np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    base = (model_a, model_b, question)
    k = len(models)
    fits: dict[str, LabelledFit | None] = dict.fromkeys(KINDS)
    with_people = len(people_outcomes)
    counts = {
        PEOPLE: (human_votes, 0, with_people),
        JUDGE: (0, judge_votes, 0),
        POWERED: (human_votes, judge_votes, with_people),
    }
    runs = {
        PEOPLE: (no_judge, votes, 0.0),
        JUDGE: (judge_score, empty, 1.0),
        POWERED: (judge_score, votes, None),
    }
    wanted = {PEOPLE: bool(human_votes), JUDGE: bool(judge_votes)}
    wanted[POWERED] = wanted[PEOPLE] and wanted[JUDGE]
    for kind in KINDS:
        if not wanted[kind]:
            continue
        scores, chosen, lam = runs[kind]
        try:
            fitted = fit_ppi(*base, scores, *chosen, k, lam=lam)
        except np.linalg.LinAlgError:  # a singular sandwich: strengths without intervals
            fitted = fit_ppi(*base, scores, *chosen, k, lam=lam, covariance=False)
            notes.append(Note(NO_INTERVALS, label=LOWER_LABELS[kind], words=("label",)))
        found = _labelled(kind, fitted, models, *counts[kind])
        fits[kind] = found
        if found is None:
            notes.append(Note(NOT_FITTED, label=LOWER_LABELS[kind], words=("label",)))
    if not human_votes:
        notes.append(NO_PEOPLE)
    if not judge_votes:
        notes.append(NO_JUDGE)
    return Combined(
        design=design_name(study, design),
        strata=strata,
        human_votes=human_votes,
        judge_votes=judge_votes,
        fits=fits,
        audit=_audit(
            design, people_outcomes, judge_outcomes, first=study.sampling == Study.Sampling.ADAPTIVE
        ),
        notes=notes,
        staged=staging.staged_summary(study),
    )


def _labelled(
    kind: str,
    fitted: PPIFit,
    models: list[str],
    human_votes: int,
    judge_votes: int,
    people_comparisons: int,
) -> LabelledFit | None:
    if not fitted.converged or fitted.fitted.sum() < 2:
        return None
    theta, cov = fitted.theta, fitted.covariance
    elo = ELO_MEAN + ELO_PER_LOG * theta
    active = np.flatnonzero(fitted.fitted)
    half = float(norm.ppf(1 - (1 - CONFIDENCE) / 2)) * fitted.se() * ELO_PER_LOG
    best = worst = None
    if cov is not None:
        best, worst = gap_rank_ranges(active, theta, CONFIDENCE, covariance=cov)
    order = sorted(active.tolist(), key=lambda i: -theta[i])
    rows = []
    for i in order:
        at = int(np.flatnonzero(active == i)[0])
        known = cov is not None
        rows.append(
            Strength(
                name=models[i],
                strength=float(elo[i]),
                low=float(elo[i] - half[i]) if known else None,
                high=float(elo[i] + half[i]) if known else None,
                rank_low=int(best[at]) if known else None,
                rank_high=int(worst[at]) if known else None,
            )
        )
    rows += [
        Strength(models[i], None, None, None, None, None)
        for i in range(len(models))
        if not fitted.fitted[i]
    ]
    gaps = gap_intervals(order, elo, CONFIDENCE, covariance=cov, scale=ELO_PER_LOG)
    return LabelledFit(
        kind=kind,
        label=LABELS[kind],
        models=rows,
        orders=pair_orders(models, gaps, round(CONFIDENCE * 100)),
        human_votes=human_votes,
        judge_votes=judge_votes,
        people_comparisons=people_comparisons,
        judged_comparisons=fitted.judged if kind != PEOPLE else 0,
        n_questions=fitted.n_questions,
        lam=fitted.lam if kind == POWERED else None,
    )


def _audit(
    design: PeopleDesign | None,
    people: dict[int, list[str]],
    judge: dict[int, list[str]],
    *,
    first: bool = False,
) -> Audit | None:
    """Routing's audit sample when the design drew one, else every comparison both voted on.
    ``first`` (adaptive K): people's side is each comparison's first vote, the one always
    asked (later votes depend on whether earlier ones agreed with the judge)."""
    if design is not None and design.audited:
        sample, chosen = "routing audit", set(design.audited)
    else:
        sample, chosen = ("first votes" if first else "both voted"), set(people) & set(judge)
        if not chosen:
            return None
    if first:
        people = {pk: outcomes[:1] for pk, outcomes in people.items()}
    both = [pk for pk in chosen if pk in people and pk in judge]
    agreeing = sum(_majority(people[pk]) == _majority(judge[pk]) for pk in both)
    low = high = rate = None
    if both:
        rate = agreeing / len(both)
        low, high = wilson(agreeing, len(both))
    return Audit(sample, len(chosen), len(both), agreeing, rate, low, high)


def combined_json(found: Combined) -> dict:
    """``Combined`` as the API and the JSON export give it."""
    return {
        "design": found.design,
        "strata": [{**asdict(s), "share": s.share} for s in found.strata],
        "human_votes": found.human_votes,
        "judge_votes": found.judge_votes,
        "audit": asdict(found.audit) if found.audit is not None else None,
        "fits": {kind: _fit_json(fit) for kind, fit in found.fits.items()},
        "notes": list(found.notes),
        "staged": found.staged,
    }


def _fit_json(fit: LabelledFit | None) -> dict | None:
    if fit is None:
        return None
    out = asdict(fit)
    out["models"] = models_json(fit)
    return out


def models_json(fit: LabelledFit) -> list[dict]:
    """A fit's strengths in the export's ``models`` shape (rank, name, strength, interval)."""
    return [
        {
            "rank": i,
            "name": m.name,
            "strength": m.strength,
            "ci_low": m.low,
            "ci_high": m.high,
            "rank_low": m.rank_low,
            "rank_high": m.rank_high,
            "estimated": m.estimated,
        }
        for i, m in enumerate(fit.models, start=1)
    ]


STRENGTH_COLUMNS = ("rank", "name", "strength", "ci_low", "ci_high", "rank_low", "rank_high")


def strengths_csv(fit: LabelledFit | None) -> str:
    rows = models_json(fit) if fit is not None else []
    return csv_text(STRENGTH_COLUMNS, ([r[c] for c in STRENGTH_COLUMNS] for r in rows))


def markdown(found: Combined) -> str:
    """The three fits side by side, ready to paste (labels escaped as every Markdown export)."""
    head = (
        f"Design: {markdown_text(found.design)}; {found.human_votes} human votes, "
        f"{found.judge_votes} judge votes."
    )
    rows = []
    for name, cells in found.rows:
        row = [name]
        for m in cells:
            if m is None or not m.estimated:
                row.append("–")
            elif m.low is None:
                row.append(f"{m.strength:.0f}")
            else:
                row.append(f"{m.strength:.0f} ({m.low:.0f}–{m.high:.0f})")
        rows.append(row)
    table = markdown_table(("Model", *(LABELS[k] for k in KINDS)), rows, align="lrrr")
    return head + "\n\n" + table + "\n"
