"""The results' options as a query string gives them (page, API, exports, tracker): no numpy,
no scipy, so the views and the API schema can name them without loading the fit at start-up
(``results`` re-exports them)."""

from __future__ import annotations

from .ranking.options import METHODS, RESAMPLE

# Whose votes a reading counts: people (cast here or imported human judgments), the LLM
# judge's (imported with ``--voters judge``, or a judge run's), or both combined, which is the
# prediction-powered fit (``powered``): the two kinds of votes are never added together.
VOTERS = ("people", "judge", "all")
RESULT_OPTIONS = {"method": METHODS, "resample": RESAMPLE, "voters": VOTERS}
BAD_OPTION = "unknown {name} {value!r}; use one of: {choices}"
BAD_TURN = (
    "turn must be a whole number from 1 (the user turns of the conversation judged: votes on "
    "an earlier turn of multi-turn questions); got {value!r}"
)


def parse_options(params) -> dict:
    """Fit options from a query string (?method=davidson&resample=vote&position=1)."""
    options = {}
    for name, choices in RESULT_OPTIONS.items():
        value = params.get(name)
        if value:
            if value not in choices:
                raise ValueError(
                    BAD_OPTION.format(name=name, value=value, choices=", ".join(choices))
                )
            options[name] = value
    if params.get("position") in ("1", "true", "yes"):
        options["position"] = True
        options["method"] = "bradley_terry"
    if params.get("style") in ("1", "true", "yes"):
        options["style_control"] = True
    turn = params.get("turn")
    if turn:
        if not (turn.isascii() and turn.isdigit() and int(turn) >= 1):
            raise ValueError(BAD_TURN.format(value=turn))
        options["turn"] = int(turn)
    return options


def wants_provenance(params) -> bool:
    """?provenance=1: the votes and battles exports say how each answer was made (staff)."""
    return params.get("provenance") in ("1", "true", "yes")
