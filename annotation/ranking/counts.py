"""Votes -> per-question count matrices, and the win / tie / position matrices read from them.

Votes are aggregated once (``aggregate``, or ``battles_to_counts`` for ``Battle`` records); every
fit then works on summed k x k matrices, so its cost does not depend on the number of votes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# Outcome codes for ``aggregate`` (strings "a" / "tie" / "b" are accepted too).
OUTCOME_A, OUTCOME_TIE, OUTCOME_B = 0, 1, 2
OUTCOME_CODES = {"a": OUTCOME_A, "tie": OUTCOME_TIE, "b": OUTCOME_B}
# Which answer was shown first (left) for ``aggregate``'s ``first_shown``.
FIRST_A, FIRST_B, FIRST_UNKNOWN = 0, 1, -1
FIRST_CODES = {"a": FIRST_A, "b": FIRST_B, None: FIRST_UNKNOWN}

# ``Counts.per_question[q, channel, i, j]`` counts votes on question q with model_a = i and
# model_b = j; channel = 3 * position + outcome, position 0 when unknown (or not kept), 1 when
# model a was shown first, 2 when model b was. The cells never overlap: each vote is in one.
POS_UNKNOWN, POS_A_FIRST, POS_B_FIRST = 0, 1, 2

SAME_MODEL = "vote {index}: a model cannot be compared with itself ({name!r})"
UNKNOWN_MODEL = "vote {index}: unknown model {name!r} (not in models)"
BAD_OUTCOME = "vote {index}: unknown outcome {value!r}: use 'a', 'tie' or 'b'"
BAD_FIRST_SHOWN = "vote {index}: unknown first_shown {value!r}: use 'a', 'b' or None"
DUPLICATE_MODEL = "model {name!r} is listed twice"
ARRAY_LENGTHS = (
    "model_a_idx, model_b_idx, outcome, question_idx, first_shown and weights differ in length"
)
BAD_WEIGHTS = "weights must be finite and positive (vote {index}: {value!r})"
INDEX_RANGE = "{what} index out of range (0 <= index < {limit})"
SAME_INDEX = "model_a_idx equals model_b_idx in {n} vote(s), e.g. vote {first}"
BAD_CODE = "{what} codes must lie in {low}..{high}"


@dataclass(frozen=True)
class Battle:
    """One vote, as the Django layer hands it over.

    ``outcome`` is "a", "b" or "tie"; ``first_shown`` says which answer was shown first (on the
    left), "a", "b" or None when unknown; ``question`` groups votes for the question bootstrap
    (None: the vote is its own group); ``weight``: what the vote counts for in the fit (1 / its
    sampling probability relative to a uniform pick, under active sampling).
    """

    model_a: str
    model_b: str
    outcome: str
    question: str | None = None
    first_shown: str | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class Counts:
    """Votes aggregated per question: ``per_question[q, channel, i, j]`` (see POS_UNKNOWN).

    Only questions with votes are kept. ``clustered`` is False when the votes carried no question
    ids (then ``per_question`` has a single row and the bootstrap resamples votes). With
    weighted votes ``per_question`` holds sums of weights (floats) and ``votes`` the plain counts
    summed over questions (channels, k, k); unweighted, ``votes`` is None.
    """

    per_question: np.ndarray
    positioned: bool
    n_votes: int
    clustered: bool = True
    votes: np.ndarray | None = None

    @property
    def weighted(self) -> bool:
        return self.votes is not None

    @property
    def n_models(self) -> int:
        return self.per_question.shape[-1]

    @property
    def n_questions(self) -> int:
        return self.per_question.shape[0] if self.clustered else 0

    def totals(self) -> np.ndarray:
        """Counts (or weights) summed over questions, shape (channels, k, k)."""
        return self.per_question.sum(axis=0).astype(np.float64)

    def vote_totals(self) -> np.ndarray:
        """Plain vote counts summed over questions, shape (channels, k, k)."""
        return self.totals() if self.votes is None else self.votes.astype(np.float64)


# --- aggregation ---------------------------------------------------------------------------


def aggregate(
    model_a_idx: Sequence[int] | np.ndarray,
    model_b_idx: Sequence[int] | np.ndarray,
    outcome: Sequence[int | str] | np.ndarray,
    question_idx: Sequence[int] | np.ndarray | None,
    n_models: int,
    n_questions: int | None = None,
    first_shown: Sequence[int | str | None] | np.ndarray | None = None,
    weights: Sequence[float] | np.ndarray | None = None,
) -> Counts:
    """Aggregate votes (parallel arrays, one entry per vote) into per-question counts.

    ``outcome``: OUTCOME_A / OUTCOME_TIE / OUTCOME_B (or "a" / "tie" / "b").
    ``question_idx``: 0 <= q < n_questions, or None when the votes carry no question (enough for
    a fit without bootstrap, or one that resamples votes).
    ``first_shown``: FIRST_A / FIRST_B / FIRST_UNKNOWN (or "a" / "b" / None); give it to keep the
    shown order for the position-advantage fit.
    ``weights``: what each vote counts for (positive; None: 1 each), e.g. the inverse of its
    sampling probability under active sampling.
    Vectorised, no Python loop over votes; int32 index arrays are the fastest input.
    """
    a = _index_array(model_a_idx)
    b = _index_array(model_b_idx)
    out = _codes(outcome, OUTCOME_CODES, BAD_OUTCOME)
    n, k = a.size, int(n_models)
    arrays = [b, out]
    q = None
    if question_idx is not None:
        q = _index_array(question_idx)
        arrays.append(q)
    fs = None
    if first_shown is not None:
        fs = _codes(first_shown, FIRST_CODES, BAD_FIRST_SHOWN)
        arrays.append(fs)
    w = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).ravel()
        arrays.append(w)
    if any(x.size != n for x in arrays):
        raise ValueError(ARRAY_LENGTHS)
    if w is not None:
        bad = np.flatnonzero(~(np.isfinite(w) & (w > 0)))
        if bad.size:
            raise ValueError(BAD_WEIGHTS.format(index=int(bad[0]), value=float(w[bad[0]])))
    nq = 1
    if q is not None and n:
        nq = int(n_questions) if n_questions is not None else int(q.max()) + 1
    n_channels = 9 if fs is not None else 3
    size = max(nq, 1) * n_channels * k * k
    checks = [
        (a, 0, k - 1, INDEX_RANGE.format(what="model_a", limit=k)),
        (b, 0, k - 1, INDEX_RANGE.format(what="model_b", limit=k)),
        (out, 0, 2, BAD_CODE.format(what="outcome", low=0, high=2)),
    ]
    if fs is not None:
        checks.append((fs, -1, 1, BAD_CODE.format(what="first_shown", low=-1, high=1)))
    if q is not None:
        checks.append((q, 0, nq - 1, INDEX_RANGE.format(what="question", limit=nq)))
    checks = [_RangeCheck(*check) for check in checks]
    # flat = ((q * channels + channel) * k + a) * k + b, with channel = 3 * position + outcome,
    # computed as ((outcome * k + a) * k + b) + (position * 3 + q * channels) * k * k. The votes
    # go through in blocks small enough to stay in the CPU cache: each block of every input is
    # read from memory once (range check, then arithmetic in one reused buffer), and nothing
    # vote-sized is allocated. At 10^6 votes this is about 1.4 times as fast as whole-array
    # passes. int32 when the index fits: half the memory traffic of int64.
    dtype = np.int32 if size < 2**31 else np.int64
    per_question = np.zeros(size, dtype=np.int64 if w is None else np.float64)
    buffer = np.empty(min(n, BLOCK), dtype=dtype)
    cell = k * k
    for begin in range(0, n, BLOCK):
        end = min(begin + BLOCK, n)
        for check in checks:
            check(begin, end)
        flat = buffer[: end - begin]
        np.multiply(out[begin:end], k, out=flat)
        flat += a[begin:end]
        flat *= k
        flat += b[begin:end]
        if fs is not None:
            # FIRST_UNKNOWN / FIRST_A / FIRST_B (-1 / 0 / 1) -> POS_UNKNOWN / POS_A_FIRST /
            # POS_B_FIRST (0 / 1 / 2), times 3 outcome channels
            flat += np.multiply(fs[begin:end] + 1, 3 * cell, dtype=dtype)
        if q is not None:
            flat += np.multiply(q[begin:end], n_channels * cell, dtype=dtype)
        np.add.at(per_question, flat, 1 if w is None else w[begin:end])
    per_question = per_question.reshape(max(nq, 1), n_channels, k, k)
    diagonal = per_question[..., np.arange(k), np.arange(k)]
    if diagonal.any():
        same = np.flatnonzero(a == b)
        raise ValueError(SAME_INDEX.format(n=same.size, first=int(same[0])))
    if q is not None and nq > 1:
        # Keep only questions that have votes (the question bootstrap draws among those).
        present = per_question.reshape(nq, -1).any(axis=1)
        if not present.all():
            per_question = per_question[present]
    votes = None
    if w is not None:
        # The plain counts too (robustness removes whole votes): the same cells, unweighted.
        cells = (out * k + a) * k + b
        if fs is not None:
            cells = cells + (fs + 1) * 3 * k * k
        votes = np.bincount(cells, minlength=n_channels * k * k).reshape(n_channels, k, k)
    return Counts(
        per_question=per_question,
        positioned=fs is not None,
        n_votes=int(n),
        clustered=q is not None,
        votes=votes,
    )


# Votes per block in ``aggregate``: 32768 int32 values are 128 KiB per array, so a block of every
# input and the work buffer (under 1 MiB together) stay in a CPU core's L2 cache.
BLOCK = 32_768


def _index_array(values) -> np.ndarray:
    arr = np.asarray(values).ravel()
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        as_int = arr.astype(np.int64)
        if not np.array_equal(as_int, arr):
            raise ValueError("index arrays must hold integers")
        return as_int
    return _signed(arr)


def _signed(arr: np.ndarray) -> np.ndarray:
    """Unsigned integers as int64 (mixed with the signed work buffer, numpy would use floats);
    a uint64 beyond int64 wraps to a negative number, which the range checks then refuse."""
    return arr.astype(np.int64) if arr.dtype.kind == "u" else arr


class _RangeCheck:
    """Raise ValueError(message) unless low <= arr[begin:end] <= high (checked block by block)."""

    def __init__(self, arr: np.ndarray, low: int, high: int, message: str):
        self.low, self.high, self.message = low, high, message
        self.unsigned = low == 0
        # One pass instead of two: seen as unsigned, a negative value is a huge one.
        self.arr = arr.view(arr.dtype.str.replace("i", "u")) if self.unsigned else arr

    def __call__(self, begin: int, end: int) -> None:
        block = self.arr[begin:end]
        if block.max() > self.high or (not self.unsigned and block.min() < self.low):
            raise ValueError(self.message)


def battles_to_counts(
    battles: Iterable[Battle], models: Sequence[str] | None = None, *, position: bool = False
) -> tuple[Counts, list[str]]:
    """Aggregate ``Battle`` records; returns the counts and the model names (index order).

    Without ``models`` the names are taken in order of first appearance.
    """
    battles = list(battles)
    names = list(models) if models is not None else []
    index: dict[str, int] = {}
    for name in names:
        if name in index:
            raise ValueError(DUPLICATE_MODEL.format(name=name))
        index[name] = len(index)
    a_idx, b_idx, outcome, first, q_idx, weights = [], [], [], [], [], []
    questions: dict[str, int] = {}
    unique_groups = 0
    for i, battle in enumerate(battles):
        ids = []
        for name in (battle.model_a, battle.model_b):
            if name not in index:
                if models is not None:
                    raise ValueError(UNKNOWN_MODEL.format(index=i, name=name))
                index[name] = len(index)
                names.append(name)
            ids.append(index[name])
        if ids[0] == ids[1]:
            raise ValueError(SAME_MODEL.format(index=i, name=battle.model_a))
        if battle.outcome not in OUTCOME_CODES:
            raise ValueError(BAD_OUTCOME.format(index=i, value=battle.outcome))
        if battle.first_shown not in FIRST_CODES:
            raise ValueError(BAD_FIRST_SHOWN.format(index=i, value=battle.first_shown))
        a_idx.append(ids[0])
        b_idx.append(ids[1])
        outcome.append(OUTCOME_CODES[battle.outcome])
        first.append(FIRST_CODES[battle.first_shown])
        weights.append(battle.weight)
        if battle.question is None:
            q_idx.append(-1 - unique_groups)  # its own group; numbered below
            unique_groups += 1
        else:
            q_idx.append(questions.setdefault(battle.question, len(questions)))
    q = np.asarray(q_idx, dtype=np.int64)
    q = np.where(q < 0, len(questions) - 1 - q, q)
    counts = aggregate(
        np.asarray(a_idx, dtype=np.int64),
        np.asarray(b_idx, dtype=np.int64),
        np.asarray(outcome, dtype=np.int64),
        q,
        len(names),
        len(questions) + unique_groups,
        first_shown=np.asarray(first, dtype=np.int64) if position else None,
        weights=None if all(w == 1 for w in weights) else np.asarray(weights, dtype=np.float64),
    )
    return counts, names


def _codes(values, mapping: dict, template: str) -> np.ndarray:
    """Integer codes from ints, or from the names in ``mapping`` (vectorised)."""
    arr = np.asarray(values).ravel()
    if arr.dtype.kind in "iu":
        return _signed(arr)
    text = arr.astype(str)  # None -> "None"
    result = np.full(text.size, _NO_CODE, dtype=np.int64)
    for key, code in mapping.items():
        result[(text == str(key)) | (text == str(code))] = code
    bad = np.flatnonzero(result == _NO_CODE)
    if bad.size:
        value = arr[bad[0]]
        value = value.item() if isinstance(value, np.generic) else value
        raise ValueError(template.format(index=int(bad[0]), value=value))
    return result


_NO_CODE = -99


# --- matrices from channels ------------------------------------------------------------------


def swap(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -1, -2)


def _channels(totals: np.ndarray) -> np.ndarray:
    """(..., S*3, k, k) -> (..., S, 3, k, k): position state by outcome."""
    return totals.reshape(*totals.shape[:-3], -1, 3, *totals.shape[-2:])


def wins_ties(totals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wins W[i, j] (i beat j) and symmetric ties T from channel totals (..., C, k, k)."""
    by_outcome = _channels(totals).sum(axis=-4)
    ties = by_outcome[..., OUTCOME_TIE, :, :]
    wins = by_outcome[..., OUTCOME_A, :, :] + swap(by_outcome[..., OUTCOME_B, :, :])
    return wins, ties + swap(ties)


def positioned_scores(totals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores for the position model, from positioned totals (..., 9, k, k).

    Returns (first's score, second's score), both indexed [first, second], and the score matrix
    of votes whose position is unknown. Scores count a tie as half.
    """
    ch = _channels(totals)

    def cell(position: int, outcome: int) -> np.ndarray:
        return ch[..., position, outcome, :, :]

    half_tie_a_first = cell(POS_A_FIRST, OUTCOME_TIE) / 2
    half_tie_b_first = cell(POS_B_FIRST, OUTCOME_TIE) / 2
    first = cell(POS_A_FIRST, OUTCOME_A) + half_tie_a_first
    first = first + swap(cell(POS_B_FIRST, OUTCOME_B) + half_tie_b_first)
    second = cell(POS_A_FIRST, OUTCOME_B) + half_tie_a_first
    second = second + swap(cell(POS_B_FIRST, OUTCOME_A) + half_tie_b_first)
    tie = cell(POS_UNKNOWN, OUTCOME_TIE)
    unpositioned = cell(POS_UNKNOWN, OUTCOME_A) + swap(cell(POS_UNKNOWN, OUTCOME_B))
    return first, second, unpositioned + (tie + swap(tie)) / 2


def submatrix(totals: np.ndarray, active: np.ndarray) -> np.ndarray:
    """The rows and columns of ``active`` models in (..., k, k) counts."""
    return totals[..., active[:, None], active[None, :]]
