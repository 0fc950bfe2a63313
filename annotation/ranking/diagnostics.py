"""Where the votes alone would not give finite, comparable strengths: the graph checks behind
the ranking's notes (no votes, unseen models, disconnected groups, never won / never lost)."""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from .sentences import Note, sentence

NOTE_NO_VOTES = sentence("There are no votes: every model is shown at the mean (1000).")
NOTE_MODEL_UNSEEN = sentence("{name} has no votes: it is shown at the mean with no information.")
NOTE_NEVER_LOST = sentence(
    "{names} never lost a vote to the other models {they} met: {pronoun} lead is held finite "
    "only by the regularisation (alpha={alpha:g}); read it as a lower bound."
)
NOTE_NEVER_WON = sentence(
    "{names} never won or tied a vote against the other models {they} met: {pronoun} gap is "
    "held finite only by the regularisation (alpha={alpha:g}); read it as an upper bound."
)
NOTE_DISCONNECTED = sentence(
    "The models fall into {n} groups with no votes between them ({groups}): strengths in "
    "different groups are not comparable (only the regularisation relates them)."
)
NOTE_UNMET_PAIRS = sentence(
    "{n} of {total} model pairs never met: their win probabilities are inferred through common "
    "opponents."
)


def _join(names: list[str]) -> str:
    return ", ".join(names)


def graph_notes(
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
        notes.append(Note(NOTE_MODEL_UNSEEN, name=names[i]))
    n_weak, weak = connected_components(csr_matrix(games > 0), directed=False)
    groups = [
        [names[i] for i in np.flatnonzero(weak == c)]
        for c in range(n_weak)
        if played[weak == c].any()
    ]
    if len(groups) > 1:
        notes.append(
            Note(
                NOTE_DISCONNECTED,
                n=len(groups),
                groups="; ".join("{" + _join(g) + "}" for g in groups),
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
                notes.append(Note(NOTE_NEVER_LOST, **words))
            if label not in has_out:
                notes.append(Note(NOTE_NEVER_WON, **words))
    met = games[np.triu_indices(k, 1)] > 0
    in_same = (weak[:, None] == weak[None, :])[np.triu_indices(k, 1)]
    both_played = (played[:, None] & played[None, :])[np.triu_indices(k, 1)]
    unmet = int((~met & in_same & both_played).sum())
    if unmet:
        notes.append(Note(NOTE_UNMET_PAIRS, n=unmet, total=int(met.size)))
    return notes
