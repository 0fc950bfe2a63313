"""Model strengths from pairwise votes (plain module: no Django).

Votes are first aggregated into per-question count matrices (``aggregate``); every fit works on
summed k x k matrices, so its cost does not depend on the number of votes. A tie is half a win
for each side (the Chatbot Arena and Rakuda convention).

- ``bradley_terry`` (default): choix's ``ilsr_pairwise_dense`` on wins + ties/2.
- ``davidson``: Davidson's tie model, P(i wins) = p_i / D, P(tie) = nu * sqrt(p_i p_j) / D with
  D = p_i + p_j + nu * sqrt(p_i p_j), fitted with scipy (choix has none).
- ``position=True`` (Bradley-Terry only): P(shown-first wins) = sigmoid(a + b_first - b_second),
  fitted with scipy; ``a`` is reported in Elo points.

Regularisation. choix's ``alpha`` (prior transition rates of the LSR chain) is, at the fixed
point, exactly the penalty ``alpha * k * sum(exp(theta) - theta)`` on the log-strengths: it pulls
every strength towards the mean, keeps models that won (or lost) everything finite and ties
together groups of models that never met. The scipy fits use that same penalty (plus a ridge
``alpha * x^2 / 2`` on log nu or on the advantage), so ``alpha`` means the same for every method.

Bootstrap. Each round resamples whole questions (or single votes) by reweighting the
per-question counts, never by looping over votes. All rounds are then fitted together by a
batched Newton's method on the same penalised likelihood as the point fit (thousands of separate
choix or scipy calls would dominate the run time); the tests check both give the same answer.

Strengths are centred natural log-strengths (``log_strength``, mean 0 over the models with votes)
and the Elo-like scale ``strength = 1000 + 400 * log10(e) * log_strength`` (400 points per
factor of 10 in odds). ``strength`` is the fit on all votes; ``ci_low`` / ``ci_high`` are
percentile bootstrap bounds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import choix
import numpy as np
from scipy import stats
from scipy.optimize import minimize
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import expit, log_expit

ELO_PER_LOG = 400 / math.log(10)
ELO_MEAN = 1000.0
DEFAULT_ALPHA = 0.01
DEFAULT_BOOTSTRAP = 1000
METHODS = ("bradley_terry", "davidson")
RESAMPLE = ("question", "vote")

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

UNKNOWN_METHOD = "unknown method {method!r}: use one of {choices}"
UNKNOWN_RESAMPLE = "unknown resample {resample!r}: use one of {choices}"
BAD_ALPHA = "alpha must be positive (it keeps strengths finite); got {alpha!r}"
BAD_BOOTSTRAP = "bootstrap must be 0 (no intervals) or a positive number of rounds; got {n!r}"
BAD_CONFIDENCE = "confidence must be between 0 and 1; got {confidence!r}"
POSITION_NEEDS_BT = "the position-advantage fit is available for bradley_terry only"
POSITION_NEEDS_COUNTS = "position=True needs counts aggregated with first_shown"
SAME_MODEL = "vote {index}: a model cannot be compared with itself ({name!r})"
UNKNOWN_MODEL = "vote {index}: unknown model {name!r} (not in models)"
BAD_OUTCOME = "vote {index}: unknown outcome {value!r}: use 'a', 'tie' or 'b'"
BAD_FIRST_SHOWN = "vote {index}: unknown first_shown {value!r}: use 'a', 'b' or None"
MODELS_MISMATCH = "models names {n_names} models but the counts hold {n_models}"
DUPLICATE_MODEL = "model {name!r} is listed twice"
ARRAY_LENGTHS = "model_a_idx, model_b_idx, outcome, question_idx and first_shown differ in length"
INDEX_RANGE = "{what} index out of range (0 <= index < {limit})"
SAME_INDEX = "model_a_idx equals model_b_idx in {n} vote(s), e.g. vote {first}"
BAD_CODE = "{what} codes must lie in {low}..{high}"

NOTE_NO_VOTES = "There are no votes: every model is shown at the mean (1000)."
NOTE_MODEL_UNSEEN = "{name} has no votes: it is shown at the mean with no information."
NOTE_NEVER_LOST = (
    "{names} never lost a vote to the other models {they} met: {pronoun} lead is held finite "
    "only by the regularisation (alpha={alpha:g}); read it as a lower bound."
)
NOTE_NEVER_WON = (
    "{names} never won or tied a vote against the other models {they} met: {pronoun} gap is "
    "held finite only by the regularisation (alpha={alpha:g}); read it as an upper bound."
)
NOTE_DISCONNECTED = (
    "The models fall into {n} groups with no votes between them ({groups}): strengths in "
    "different groups are not comparable (only the regularisation relates them)."
)
NOTE_UNMET_PAIRS = (
    "{n} of {total} model pairs never met: their win probabilities are inferred through common "
    "opponents."
)
NOTE_NO_QUESTIONS = (
    "The votes carry no question ids, so the bootstrap resamples single votes instead of questions."
)
NOTE_ONE_QUESTION = (
    "All votes are on one question, so the bootstrap resamples single votes instead of questions."
)
NOTE_FEW_QUESTIONS = "Only {n} questions: intervals from resampling so few questions are rough."
NOTE_NO_BOOTSTRAP = "No bootstrap was run: ci_low and ci_high equal the strength."
NOTE_DAVIDSON_NO_TIES = "There are no ties: the Davidson fit reduces to Bradley-Terry."
NOTE_NO_POSITION = (
    "No vote records which answer was shown first: the position advantage was not estimated."
)
NOTE_CHOIX_FALLBACK = (
    "choix did not converge ({error}); the same regularised fit was solved by Newton's method."
)


@dataclass(frozen=True)
class Battle:
    """One vote, as the Django layer hands it over.

    ``outcome`` is "a", "b" or "tie"; ``first_shown`` says which answer was shown first (on the
    left), "a", "b" or None when unknown; ``question`` groups votes for the question bootstrap
    (None: the vote is its own group).
    """

    model_a: str
    model_b: str
    outcome: str
    question: str | None = None
    first_shown: str | None = None


@dataclass(frozen=True)
class Counts:
    """Votes aggregated per question: ``per_question[q, channel, i, j]`` (see POS_UNKNOWN).

    Only questions with votes are kept. ``clustered`` is False when the votes carried no question
    ids (then ``per_question`` has a single row and the bootstrap resamples votes).
    """

    per_question: np.ndarray
    positioned: bool
    n_votes: int
    clustered: bool = True

    @property
    def n_models(self) -> int:
        return self.per_question.shape[-1]

    @property
    def n_questions(self) -> int:
        return self.per_question.shape[0] if self.clustered else 0

    def totals(self) -> np.ndarray:
        """Counts summed over questions, shape (channels, k, k)."""
        return self.per_question.sum(axis=0).astype(np.float64)


class PairMap(Mapping):
    """Read-only ``{(a, b): value}`` over ordered model pairs, read from a k x k (x m) array.

    Built in O(1) and computed on access, so a ranking of many models stays cheap. Values are
    floats, or tuples of ints for a (k, k, m) integer array. ``present`` limits the keys.
    """

    def __init__(self, names: Sequence[str], values: np.ndarray, present: np.ndarray | None = None):
        self._names = list(names)
        self._index = {name: i for i, name in enumerate(self._names)}
        self._values = values
        k = len(self._names)
        self._present = (
            ~np.eye(k, dtype=bool) if present is None else present & ~np.eye(k, dtype=bool)
        )

    def __getitem__(self, key: tuple[str, str]):
        try:
            i, j = self._index[key[0]], self._index[key[1]]
        except (KeyError, TypeError, IndexError):
            raise KeyError(key) from None
        if not self._present[i, j]:
            raise KeyError(key)
        value = self._values[i, j]
        if np.ndim(value):
            return tuple(int(v) for v in value)
        return float(value)

    def __iter__(self):
        for i, j in zip(*np.nonzero(self._present), strict=True):
            yield self._names[i], self._names[j]

    def __len__(self) -> int:
        return int(self._present.sum())

    def __repr__(self) -> str:
        return f"PairMap({dict(self)!r})"


@dataclass(frozen=True)
class ModelStrength:
    name: str
    strength: float
    ci_low: float
    ci_high: float
    log_strength: float
    wins: int
    ties: int
    losses: int
    games: int
    win_rate: float | None  # (wins + ties / 2) / games; None without games


@dataclass(frozen=True)
class Ranking:
    """A fitted ranking; ``models`` is strongest first."""

    models: list[ModelStrength]
    win_probability: PairMap  # (a, b) -> expected score of a against b, every ordered pair
    notes: list[str]
    method: str
    position_advantage_elo: float | None
    n_votes: int
    n_questions: int
    bootstrap: int
    resample: str
    seed: int
    alpha: float
    confidence: float
    # (a, b) -> (wins of a over b, ties, losses of a to b), both orders, only pairs that met.
    pair_counts: PairMap | dict = field(default_factory=dict)
    position_advantage_ci: tuple[float, float] | None = None
    tie_parameter: float | None = None  # Davidson's nu
    tie_probability: PairMap | None = None  # Davidson only

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def model(self, name: str) -> ModelStrength:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


# --- aggregation ---------------------------------------------------------------------------


def aggregate(
    model_a_idx: Sequence[int] | np.ndarray,
    model_b_idx: Sequence[int] | np.ndarray,
    outcome: Sequence[int | str] | np.ndarray,
    question_idx: Sequence[int] | np.ndarray | None,
    n_models: int,
    n_questions: int | None = None,
    first_shown: Sequence[int | str | None] | np.ndarray | None = None,
) -> Counts:
    """Aggregate votes (parallel arrays, one entry per vote) into per-question counts.

    ``outcome``: OUTCOME_A / OUTCOME_TIE / OUTCOME_B (or "a" / "tie" / "b").
    ``question_idx``: 0 <= q < n_questions, or None when the votes carry no question (enough for
    a fit without bootstrap, or one that resamples votes).
    ``first_shown``: FIRST_A / FIRST_B / FIRST_UNKNOWN (or "a" / "b" / None); give it to keep the
    shown order for the position-advantage fit.
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
    if any(x.size != n for x in arrays):
        raise ValueError(ARRAY_LENGTHS)
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
    per_question = np.zeros(size, dtype=np.int64)
    buffer = np.empty(min(n, _BLOCK), dtype=dtype)
    cell = k * k
    for begin in range(0, n, _BLOCK):
        end = min(begin + _BLOCK, n)
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
        np.add.at(per_question, flat, 1)
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
    return Counts(
        per_question=per_question,
        positioned=fs is not None,
        n_votes=int(n),
        clustered=q is not None,
    )


# Votes per block in ``aggregate``: 32768 int32 values are 128 KiB per array, so a block of every
# input and the work buffer (under 1 MiB together) stay in a CPU core's L2 cache.
_BLOCK = 32_768


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
    a_idx, b_idx, outcome, first, q_idx = [], [], [], [], []
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


def _swap(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -1, -2)


def _channels(totals: np.ndarray) -> np.ndarray:
    """(..., S*3, k, k) -> (..., S, 3, k, k): position state by outcome."""
    return totals.reshape(*totals.shape[:-3], -1, 3, *totals.shape[-2:])


def _wins_ties(totals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wins W[i, j] (i beat j) and symmetric ties T from channel totals (..., C, k, k)."""
    by_outcome = _channels(totals).sum(axis=-4)
    ties = by_outcome[..., OUTCOME_TIE, :, :]
    wins = by_outcome[..., OUTCOME_A, :, :] + _swap(by_outcome[..., OUTCOME_B, :, :])
    return wins, ties + _swap(ties)


def _positioned_scores(totals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    first = first + _swap(cell(POS_B_FIRST, OUTCOME_B) + half_tie_b_first)
    second = cell(POS_A_FIRST, OUTCOME_B) + half_tie_a_first
    second = second + _swap(cell(POS_B_FIRST, OUTCOME_A) + half_tie_b_first)
    tie = cell(POS_UNKNOWN, OUTCOME_TIE)
    unpositioned = cell(POS_UNKNOWN, OUTCOME_A) + _swap(cell(POS_UNKNOWN, OUTCOME_B))
    return first, second, unpositioned + (tie + _swap(tie)) / 2


# --- fits ----------------------------------------------------------------------------------


# Each ``_*_terms`` function returns the penalised log-likelihood, its gradient and the negated
# Hessian for a batch of parameter vectors x (r, p) and count matrices (r, k, k) (or one (k, k)
# shared by all rows). The scipy point fits and the batched Newton bootstrap both use them, so
# they solve the same problem. Count matrices have zero diagonals.


def _laplacian(curvature: np.ndarray) -> np.ndarray:
    """-c off the diagonal, row sums on it: the curvature of pairwise log-likelihoods."""
    k = curvature.shape[-1]
    out = -curvature
    out[..., np.arange(k), np.arange(k)] = curvature.sum(axis=-1)
    return out


def _strength_penalty(theta: np.ndarray, alpha: float):
    """choix's alpha as a penalty alpha * k * sum(exp(t) - t): value, gradient, curvature."""
    k = theta.shape[-1]
    w = np.exp(theta)
    return alpha * k * (w - theta).sum(axis=-1), alpha * k * (w - 1), alpha * k * w


def _bt_terms(x: np.ndarray, scores: np.ndarray, alpha: float):
    d = x[:, :, None] - x[:, None, :]
    games = scores + _swap(scores)
    p = expit(d)
    pen, pen_grad, pen_curv = _strength_penalty(x, alpha)
    value = (scores * log_expit(d)).sum(axis=(-1, -2)) - pen
    grad = (scores - games * p).sum(axis=-1) - pen_grad
    neg_hess = _laplacian(games * p * (1 - p))
    neg_hess[:, np.arange(x.shape[1]), np.arange(x.shape[1])] += pen_curv
    return value, grad, neg_hess


def _davidson_terms(x: np.ndarray, wins: np.ndarray, ties: np.ndarray, alpha: float):
    """x = (log-strengths, log nu). Ties symmetric; log nu gets a ridge alpha * u^2 / 2."""
    r, k = x.shape[0], x.shape[1] - 1
    theta, u = x[:, :k], x[:, k]
    d = theta[:, :, None] - theta[:, None, :]
    uu = u[:, None, None]
    games = wins + _swap(wins) + ties
    log_z = np.logaddexp(np.logaddexp(d / 2, -d / 2), uu)
    p_i, p_j, p_t = np.exp(d / 2 - log_z), np.exp(-d / 2 - log_z), np.exp(uu - log_z)
    m = (p_i - p_j) / 2  # d log Z / d d
    pen, pen_grad, pen_curv = _strength_penalty(theta, alpha)
    tie_total = ties.sum(axis=(-1, -2)) / 2
    value = (wins * d).sum(axis=(-1, -2)) / 2 + tie_total * u
    value = value - (games * log_z).sum(axis=(-1, -2)) / 2 - pen - alpha * u * u / 2
    grad = np.empty((r, k + 1))
    grad[:, :k] = (wins - _swap(wins)).sum(axis=-1) / 2 - (games * m).sum(axis=-1) - pen_grad
    grad[:, k] = tie_total - (games * p_t).sum(axis=(-1, -2)) / 2 - alpha * u
    neg_hess = np.empty((r, k + 1, k + 1))
    neg_hess[:, :k, :k] = _laplacian(games * ((p_i + p_j) / 4 - m * m))
    neg_hess[:, np.arange(k), np.arange(k)] += pen_curv
    cross = -(games * m * p_t).sum(axis=-1)
    neg_hess[:, :k, k] = neg_hess[:, k, :k] = cross
    neg_hess[:, k, k] = (games * p_t * (1 - p_t)).sum(axis=(-1, -2)) / 2 + alpha
    return value, grad, neg_hess


def _position_terms(x, first, second, unpositioned, alpha: float):
    """x = (log-strengths, first-position advantage a); a gets a ridge alpha * a^2 / 2."""
    r, k = x.shape[0], x.shape[1] - 1
    theta, adv = x[:, :k], x[:, k]
    d = theta[:, :, None] - theta[:, None, :]
    z = adv[:, None, None] + d
    shown = first + second
    games_u = unpositioned + _swap(unpositioned)
    s, s_u = expit(z), expit(d)
    pen, pen_grad, pen_curv = _strength_penalty(theta, alpha)
    value = (first * log_expit(z) + second * log_expit(-z)).sum(axis=(-1, -2))
    value = value + (unpositioned * log_expit(d)).sum(axis=(-1, -2)) - pen - alpha * adv * adv / 2
    resid = first - shown * s
    grad = np.empty((r, k + 1))
    grad[:, :k] = resid.sum(axis=-1) - resid.sum(axis=-2)
    grad[:, :k] += (unpositioned - games_u * s_u).sum(axis=-1) - pen_grad
    grad[:, k] = resid.sum(axis=(-1, -2)) - alpha * adv
    c = shown * s * (1 - s)
    neg_hess = np.empty((r, k + 1, k + 1))
    neg_hess[:, :k, :k] = _laplacian(c + _swap(c)) + _laplacian(games_u * s_u * (1 - s_u))
    neg_hess[:, np.arange(k), np.arange(k)] += pen_curv
    neg_hess[:, :k, k] = neg_hess[:, k, :k] = c.sum(axis=-1) - c.sum(axis=-2)
    neg_hess[:, k, k] = c.sum(axis=(-1, -2)) + alpha
    return value, grad, neg_hess


def _newton(terms, x0: np.ndarray, tol: float = 1e-10, max_iter: int = 200) -> np.ndarray:
    """Maximise a strictly concave objective for every row of x0 (r, p) at once.

    Newton steps, capped at 2 in any coordinate and halved where the objective would fall.
    """
    x = x0.copy()
    value, grad, neg_hess = terms(x)
    for _ in range(max_iter):
        step = np.linalg.solve(neg_hess, grad[..., None])[..., 0]
        biggest = np.abs(step).max(axis=1, keepdims=True)
        step *= np.minimum(1.0, 2.0 / np.maximum(biggest, 1e-300))
        for _ in range(40):
            trial = x + step
            new_value, new_grad, new_hess = terms(trial)
            worse = new_value < value - 1e-12 * np.abs(value)
            if not worse.any():
                break
            step[worse] /= 2
        x, value, grad, neg_hess = trial, new_value, new_grad, new_hess
        if biggest.max() < tol:
            break
    return x


def _on_penalty_surface(theta: np.ndarray) -> np.ndarray:
    """Shift log-strengths so sum(exp) = k, where every penalised optimum lies."""
    k = theta.shape[-1]
    return theta - np.log(np.exp(theta).sum(axis=-1, keepdims=True) / k)


def _centred(theta: np.ndarray) -> np.ndarray:
    return theta - theta.mean(axis=-1, keepdims=True)


def _scipy_fit(terms, x0: np.ndarray, scale: float) -> np.ndarray:
    """One fit with scipy's trust-region Newton on the same objective (scaled per vote)."""

    def fun(y):
        value, grad, _ = terms(y[None])
        return -value[0] / scale, -grad[0] / scale

    def hess(y):
        return terms(y[None])[2][0] / scale

    result = minimize(fun, x0, jac=True, hess=hess, method="trust-exact", options={"gtol": 1e-10})
    return result.x


def fit_bradley_terry(scores: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Centred log-strengths from a k x k score matrix (wins + ties/2), with choix."""
    return _fit_bt_choix(scores, alpha)[0]


def _fit_bt_choix(scores: np.ndarray, alpha: float) -> tuple[np.ndarray, str | None]:
    try:
        # tol bounds the mean change of a log-strength between iterations: 1e-6 is 2e-4 Elo,
        # far below what is reported; it saves one or two ILSR iterations of the 1e-8 default.
        theta = choix.ilsr_pairwise_dense(scores, alpha=alpha, max_iter=1000, tol=1e-6)
    except (RuntimeError, ValueError) as exc:
        theta = _fit_bt_newton(scores[None], alpha)[0]
        return theta, NOTE_CHOIX_FALLBACK.format(error=exc)
    return _centred(theta), None


def _fit_bt_newton(scores: np.ndarray, alpha: float, start: np.ndarray | None = None) -> np.ndarray:
    """Bradley-Terry for many score matrices (r, k, k) at once; centred (r, k).

    The same penalised likelihood as choix's ILSR with ``alpha`` (see the module docstring), so
    it gives choix's answer; the bootstrap uses it, where thousands of fits are needed.
    """
    r, k, _ = scores.shape
    x0 = np.zeros((r, k)) if start is None else np.broadcast_to(start, (r, k))
    x = _newton(lambda x: _bt_terms(x, scores, alpha), _on_penalty_surface(x0))
    return _centred(x)


def _fit_davidson(
    wins: np.ndarray, ties: np.ndarray, alpha: float, start: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Davidson's model: centred log-strengths and nu. One (k, k) fit uses scipy; a batch
    (r, k, k) uses the batched Newton (``start``: a previous fit's x)."""
    k = wins.shape[-1]
    if wins.ndim == 2:
        games = (wins.sum() * 2 + ties.sum()) / 2
        share = ties.sum() / 2 / max(games, 1.0)
        x0 = np.zeros(k + 1)
        # Equal strengths: P(tie) = nu / (2 + nu) = share.
        x0[k] = math.log(2 * max(share, 1e-4) / max(1 - share, 1e-4))
        x = _scipy_fit(lambda y: _davidson_terms(y, wins, ties, alpha), x0, max(games, 1.0))
        return _centred(x[:k]), np.exp(x[k])
    x0 = np.broadcast_to(start, (wins.shape[0], k + 1)).copy()
    x0[:, :k] = _on_penalty_surface(x0[:, :k])
    x = _newton(lambda y: _davidson_terms(y, wins, ties, alpha), x0)
    return _centred(x[:, :k]), np.exp(x[:, k])


def _fit_position(
    first: np.ndarray,
    second: np.ndarray,
    unpositioned: np.ndarray,
    alpha: float,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bradley-Terry with a first-position term: centred strengths and the advantage. One
    (k, k) fit uses scipy; a batch (r, k, k) uses the batched Newton."""
    k = first.shape[-1]

    def terms(y):
        return _position_terms(y, first, second, unpositioned, alpha)

    if first.ndim == 2:
        games = first.sum() + second.sum() + unpositioned.sum()
        x = _scipy_fit(terms, np.zeros(k + 1), max(games, 1.0))
        return _centred(x[:k]), x[k]
    x0 = np.broadcast_to(start, (first.shape[0], k + 1)).copy()
    x0[:, :k] = _on_penalty_surface(x0[:, :k])
    x = _newton(terms, x0)
    return _centred(x[:, :k]), x[:, k]


def _sub(totals: np.ndarray, active: np.ndarray) -> np.ndarray:
    """The rows and columns of ``active`` models in (..., k, k) counts."""
    return totals[..., active[:, None], active[None, :]]


def _fit(
    totals: np.ndarray,
    kind: str,
    alpha: float,
    start: tuple[np.ndarray, float | None] | None = None,
):
    """Fit channel totals. One (C, k, k): (centred log-strengths, nu or advantage, note), by
    choix or scipy. A batch (r, C, k, k), started from ``start`` = (log-strengths, extra):
    ((r, k), (r,) or None, None), by the batched Newton."""
    batch = totals.ndim == 4
    if kind == "position":
        x0 = None if start is None else np.append(start[0], start[1])
        theta, advantage = _fit_position(*_positioned_scores(totals), alpha, start=x0)
        return theta, advantage if batch else float(advantage), None
    wins, ties = _wins_ties(totals)
    if kind == "davidson":
        x0 = None if start is None else np.append(start[0], math.log(start[1]))
        theta, nu = _fit_davidson(wins, ties, alpha, start=x0)
        return theta, nu if batch else float(nu), None
    if batch:
        return _fit_bt_newton(wins + ties / 2, alpha, start=start[0]), None, None
    theta, note = _fit_bt_choix(wins + ties / 2, alpha)
    return theta, None, note


# --- bootstrap -----------------------------------------------------------------------------


def _resampled_totals(counts: Counts, rounds: int, resample: str, rng: np.random.Generator):
    """Yield chunks of resampled channel totals, shape (r, C, k, k), ``rounds`` in all."""
    per_q = counts.per_question
    nq, n_channels, k, _ = per_q.shape
    cells = n_channels * k * k
    chunk = max(1, min(rounds, 4_000_000 // cells))
    flat = per_q.reshape(nq, cells).astype(np.float64)
    if resample == "vote":
        totals = flat.sum(axis=0)
        nonzero = np.flatnonzero(totals)
        p = totals[nonzero] / totals[nonzero].sum()
        done = 0
        while done < rounds:
            r = min(chunk, rounds - done)
            out = np.zeros((r, cells))
            out[:, nonzero] = rng.multinomial(counts.n_votes, p, size=r)
            yield out.reshape(r, n_channels, k, k)
            done += r
        return
    done = 0
    while done < rounds:
        r = min(chunk, rounds - done)
        draws = rng.integers(0, nq, size=(r, nq))
        offsets = (np.arange(r) * nq)[:, None]
        weights = np.bincount((draws + offsets).ravel(), minlength=r * nq).reshape(r, nq)
        yield (weights.astype(np.float64) @ flat).reshape(r, n_channels, k, k)
        done += r


# --- the entry point -------------------------------------------------------------------------


def rank(
    data: Counts | Iterable[Battle],
    *,
    models: Sequence[str] | None = None,
    method: str = "bradley_terry",
    bootstrap: int = DEFAULT_BOOTSTRAP,
    resample: str = "question",
    seed: int = 0,
    alpha: float = DEFAULT_ALPHA,
    position: bool = False,
    confidence: float = 0.95,
) -> Ranking:
    """Fit strengths, bootstrap intervals and pairwise win probabilities.

    ``data``: ``Battle`` records, or ``Counts`` from ``aggregate`` (then ``models`` names the
    k indices and is required). With battles, ``models`` fixes the model list (models without
    votes are kept and noted); otherwise names are taken from the battles.
    ``bootstrap``: rounds (0: intervals equal the point estimate). ``resample``: "question"
    (all votes on a question together) or "vote". ``position``: also fit a first-position
    advantage (Bradley-Terry only; needs ``Battle.first_shown`` or counts with first_shown).
    """
    if method not in METHODS:
        raise ValueError(UNKNOWN_METHOD.format(method=method, choices=", ".join(METHODS)))
    if resample not in RESAMPLE:
        raise ValueError(UNKNOWN_RESAMPLE.format(resample=resample, choices=", ".join(RESAMPLE)))
    if not (isinstance(alpha, int | float) and alpha > 0 and math.isfinite(alpha)):
        raise ValueError(BAD_ALPHA.format(alpha=alpha))
    if not (isinstance(bootstrap, int) and bootstrap >= 0):
        raise ValueError(BAD_BOOTSTRAP.format(n=bootstrap))
    if not 0 < confidence < 1:
        raise ValueError(BAD_CONFIDENCE.format(confidence=confidence))
    if position and method != "bradley_terry":
        raise ValueError(POSITION_NEEDS_BT)

    if isinstance(data, Counts):
        counts = data
        if models is None:
            models = [str(i) for i in range(counts.n_models)]
        names = list(models)
        if len(names) != counts.n_models:
            raise ValueError(MODELS_MISMATCH.format(n_names=len(names), n_models=counts.n_models))
        if len(set(names)) != len(names):
            raise ValueError(DUPLICATE_MODEL.format(name=_first_duplicate(names)))
        if position and not counts.positioned:
            raise ValueError(POSITION_NEEDS_COUNTS)
    else:
        counts, names = battles_to_counts(data, models, position=position)

    k = len(names)
    notes: list[str] = []
    totals = counts.totals()
    wins, ties = _wins_ties(totals)
    scores = wins + ties / 2
    games = wins + wins.T + ties
    notes.extend(_graph_notes(names, scores, games, alpha, counts.n_votes))

    use_position = position
    if position:
        first, second, _ = _positioned_scores(totals)
        if (first + second).sum() == 0:
            notes.append(NOTE_NO_POSITION)
            use_position = False
    if method == "davidson" and ties.sum() == 0 and counts.n_votes:
        notes.append(NOTE_DAVIDSON_NO_TIES)

    # Models without votes stay out of the fit and sit at the mean (log-strength 0).
    active = np.flatnonzero(games.sum(axis=1) > 0)
    fit_kind = "position" if use_position else method
    theta = np.zeros(k)
    extra: float | None = {"position": 0.0, "davidson": 1.0}.get(fit_kind)
    if len(active) >= 2:
        theta_active, extra, fallback = _fit(_sub(totals, active), fit_kind, alpha)
        theta[active] = theta_active
        if fallback:
            notes.append(fallback)

    effective_resample = resample
    if bootstrap and counts.n_votes and resample == "question":
        if not counts.clustered:
            notes.append(NOTE_NO_QUESTIONS)
            effective_resample = "vote"
        elif counts.n_questions < 2:
            notes.append(NOTE_ONE_QUESTION)
            effective_resample = "vote"
        elif counts.n_questions < 20:
            notes.append(NOTE_FEW_QUESTIONS.format(n=counts.n_questions))

    tail = (1 - confidence) / 2 * 100
    low, high = theta, theta
    extra_ci = (extra, extra)
    if not bootstrap and counts.n_votes:
        notes.append(NOTE_NO_BOOTSTRAP)
    if bootstrap and len(active) >= 2:
        rng = np.random.default_rng(seed)
        start = theta[active]
        samples, extra_samples = [], []
        for chunk in _resampled_totals(counts, bootstrap, effective_resample, rng):
            fitted, fitted_extra, _ = _fit(
                _sub(chunk, active), fit_kind, alpha, start=(start, extra)
            )
            samples.append(fitted)
            if fitted_extra is not None:
                extra_samples.append(fitted_extra)
        low, high = theta.copy(), theta.copy()
        low[active], high[active] = np.percentile(
            np.concatenate(samples), [tail, 100 - tail], axis=0
        )
        if extra_samples:
            bounds = np.percentile(np.concatenate(extra_samples), [tail, 100 - tail])
            extra_ci = (float(bounds[0]), float(bounds[1]))

    nu = extra if fit_kind == "davidson" else None
    advantage = extra if fit_kind == "position" else None
    advantage_ci = None
    if advantage is not None:
        advantage_ci = (extra_ci[0] * ELO_PER_LOG, extra_ci[1] * ELO_PER_LOG)

    row_wins, row_ties, row_losses = wins.sum(axis=1), ties.sum(axis=1), wins.sum(axis=0)
    elo, elo_low, elo_high = (ELO_MEAN + ELO_PER_LOG * x for x in (theta, low, high))
    model_rows = []
    for i, name in enumerate(names):
        w_i, t_i, l_i = int(row_wins[i]), int(row_ties[i]), int(row_losses[i])
        n_i = w_i + t_i + l_i
        model_rows.append(
            ModelStrength(
                name=name,
                strength=float(elo[i]),
                ci_low=float(elo_low[i]),
                ci_high=float(elo_high[i]),
                log_strength=float(theta[i]),
                wins=w_i,
                ties=t_i,
                losses=l_i,
                games=n_i,
                win_rate=(w_i + t_i / 2) / n_i if n_i else None,
            )
        )
    model_rows.sort(key=lambda m: (-m.log_strength, m.name))

    win_probability, tie_probability = _probabilities(names, theta, nu)
    pair_counts = PairMap(names, np.stack([wins, ties, wins.T], axis=-1), present=games > 0)
    return Ranking(
        models=model_rows,
        win_probability=win_probability,
        notes=notes,
        method=method,
        position_advantage_elo=advantage * ELO_PER_LOG if advantage is not None else None,
        position_advantage_ci=advantage_ci,
        n_votes=counts.n_votes,
        n_questions=counts.n_questions,
        bootstrap=bootstrap,
        resample=effective_resample,
        seed=seed,
        alpha=float(alpha),
        confidence=confidence,
        pair_counts=pair_counts,
        tie_parameter=nu,
        tie_probability=tie_probability,
    )


def rank_arrays(
    model_a_idx: Sequence[int] | np.ndarray,
    model_b_idx: Sequence[int] | np.ndarray,
    outcome: Sequence[int | str] | np.ndarray,
    question_idx: Sequence[int] | np.ndarray | None,
    *,
    models: Sequence[str],
    first_shown: Sequence[int | str | None] | np.ndarray | None = None,
    **options,
) -> Ranking:
    """``aggregate`` then ``rank``: votes as parallel arrays indexing ``models``."""
    counts = aggregate(
        model_a_idx, model_b_idx, outcome, question_idx, len(models), first_shown=first_shown
    )
    return rank(counts, models=models, **options)


def _first_duplicate(names: Sequence[str]) -> str:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return ""


def _probabilities(
    names: list[str], theta: np.ndarray, nu: float | None
) -> tuple[PairMap, PairMap | None]:
    """Expected score of a against b (P(win) + P(tie)/2) for every ordered pair; Davidson's
    tie probabilities."""
    d = theta[:, None] - theta[None, :]
    if nu is None:
        return PairMap(names, expit(d)), None
    log_z = np.logaddexp(np.logaddexp(d / 2, -d / 2), math.log(nu))
    tie = np.exp(math.log(nu) - log_z)
    return PairMap(names, np.exp(d / 2 - log_z) + tie / 2), PairMap(names, tie)


def _join(names: list[str]) -> str:
    return ", ".join(names)


def _graph_notes(
    names: list[str], scores: np.ndarray, games: np.ndarray, alpha: float, n_votes: int
) -> list[str]:
    """Say where the data alone would not give finite, comparable strengths."""
    if not n_votes:
        return [NOTE_NO_VOTES]
    k = len(names)
    if (scores + np.eye(k) > 0).all():
        return []  # every model scored against every other: nothing to say
    notes = []
    played = games.sum(axis=1) > 0
    for i in np.flatnonzero(~played):
        notes.append(NOTE_MODEL_UNSEEN.format(name=names[i]))
    n_weak, weak = connected_components(csr_matrix(games > 0), directed=False)
    groups = [
        [names[i] for i in np.flatnonzero(weak == c)]
        for c in range(n_weak)
        if played[weak == c].any()
    ]
    if len(groups) > 1:
        notes.append(
            NOTE_DISCONNECTED.format(
                n=len(groups), groups="; ".join("{" + _join(g) + "}" for g in groups)
            )
        )
    # Within a connected group, a set of models that never ceded score to the rest (or never
    # earned any) would run off to +/- infinity without the penalty.
    _, strong = connected_components(csr_matrix(scores > 0), directed=True, connection="strong")
    edges = np.argwhere((scores > 0) & (strong[:, None] != strong[None, :]))
    has_in = {int(strong[j]) for _, j in edges}
    has_out = {int(strong[i]) for i, _ in edges}
    for c in range(n_weak):
        members = np.flatnonzero(weak == c)
        labels = sorted({int(strong[i]) for i in members})
        if len(labels) < 2:
            continue
        for label in labels:
            group = [names[i] for i in members if strong[i] == label]
            words = {"names": _join(group), "alpha": alpha}
            words |= (
                {"they": "it", "pronoun": "its"}
                if len(group) == 1
                else {"they": "they", "pronoun": "their"}
            )
            if label not in has_in:
                notes.append(NOTE_NEVER_LOST.format(**words))
            if label not in has_out:
                notes.append(NOTE_NEVER_WON.format(**words))
    met = games[np.triu_indices(k, 1)] > 0
    in_same = (weak[:, None] == weak[None, :])[np.triu_indices(k, 1)]
    both_played = (played[:, None] & played[None, :])[np.triu_indices(k, 1)]
    unmet = int((~met & in_same & both_played).sum())
    if unmet:
        notes.append(NOTE_UNMET_PAIRS.format(n=unmet, total=int(met.size)))
    return notes


# --- comparing two studies -------------------------------------------------------------------


@dataclass(frozen=True)
class PairWinRates:
    model_a: str
    model_b: str
    win_rate_1: float | None  # (wins + ties/2) / games of model_a against model_b, study 1
    win_rate_2: float | None
    games_1: int
    games_2: int


@dataclass(frozen=True)
class StudyComparison:
    models: list[str]  # models in both studies, by strength in the first
    kendall_tau: float | None
    p_value: float | None
    strengths: list[tuple[str, float, float]]  # (name, strength in 1, strength in 2)
    pairs: list[PairWinRates]


def compare(first: Ranking, second: Ranking) -> StudyComparison:
    """Kendall's tau of the strengths of the common models, and per pair both win rates."""
    in_second = set(second.names)
    common = [m.name for m in first.models if m.name in in_second]
    s1 = [first.model(n).strength for n in common]
    s2 = [second.model(n).strength for n in common]
    tau = p = None
    if len(common) >= 2:
        result = stats.kendalltau(s1, s2)
        if not math.isnan(result.statistic):
            tau, p = float(result.statistic), float(result.pvalue)
    pairs = []
    for i, a in enumerate(common):
        for b in common[i + 1 :]:
            rate_1, games_1 = _pair_rate(first, a, b)
            rate_2, games_2 = _pair_rate(second, a, b)
            pairs.append(PairWinRates(a, b, rate_1, rate_2, games_1, games_2))
    return StudyComparison(
        models=common,
        kendall_tau=tau,
        p_value=p,
        strengths=list(zip(common, s1, s2, strict=True)),
        pairs=pairs,
    )


def _pair_rate(ranking: Ranking, a: str, b: str) -> tuple[float | None, int]:
    wins, ties, losses = ranking.pair_counts.get((a, b), (0, 0, 0))
    games = wins + ties + losses
    return ((wins + ties / 2) / games if games else None), games
