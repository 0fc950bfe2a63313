"""What apps built on annotation register into, so annotation never imports them.

- ``on_study_opening(hook)``: ``hook(study)`` is called inside ``study_open``'s transaction,
  with the study's row locked, before it opens (judging's routing sets which comparisons people
  are given there; a ServiceError refuses the opening).
- ``results_section_register(section)``: a section of a study's results: its page template,
  the context it needs, and the keys it adds to the JSON export.
- ``people_design_register(provider)``: ``provider(study)`` says how the study's comparisons
  were chosen for people and which judge verdicts that rests on (``PeopleDesign``; judging's
  routing), so the prediction-powered fit can weight people's votes without importing judging.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

_OPENING: list[Callable[[object], object]] = []


def on_study_opening(hook: Callable[[object], object]) -> Callable[[object], object]:
    """Register ``hook(study)``; usable as a decorator. Registering twice calls it once."""
    if hook not in _OPENING:
        _OPENING.append(hook)
    return hook


def study_opening(study) -> None:
    for hook in _OPENING:
        hook(study)


@dataclass(frozen=True)
class ResultsSection:
    """``template`` is included in the results page with ``context(study)`` merged into the
    page's context; ``export(study)`` gives the keys the section adds to the JSON export."""

    name: str
    template: str
    context: Callable[[object], dict]
    export: Callable[[object], dict]


_SECTIONS: dict[str, ResultsSection] = {}


def results_section_register(section: ResultsSection) -> ResultsSection:
    """Register (or replace, by name) a section of the results page and export."""
    _SECTIONS[section.name] = section
    return section


def results_sections() -> tuple[ResultsSection, ...]:
    return tuple(_SECTIONS.values())


@dataclass(frozen=True)
class PeopleDesign:
    """How an app built on annotation chose the comparisons people vote on, for the
    prediction-powered fit (``annotation.powered``) to weight people's votes by.

    ``strata``: comparison id -> stratum; within a stratum, the comparisons people were given
    are a simple random sample of it (so each stratum's chance is the share of its comparisons
    with people's votes). ``judge_votes``: a ``Q`` on ``Vote`` selecting the judge's votes the
    design rests on (None: every judge vote of the study). ``audited``: the comparisons drawn
    to check the judge against people (empty: none drawn)."""

    name: str
    strata: Mapping[int, str]
    judge_votes: object | None = None
    audited: frozenset[int] = frozenset()
    judge_run: int | None = None


_DESIGNS: list[Callable[[object], PeopleDesign | None]] = []


def people_design_register(
    provider: Callable[[object], PeopleDesign | None],
) -> Callable[[object], PeopleDesign | None]:
    """Register ``provider(study)``, which gives the study's ``PeopleDesign`` or None when it
    did not choose the study's comparisons; usable as a decorator, registering twice once."""
    if provider not in _DESIGNS:
        _DESIGNS.append(provider)
    return provider


def people_design(study) -> PeopleDesign | None:
    """The first registered design that claims the study (None: every comparison alike)."""
    for provider in _DESIGNS:
        found = provider(study)
        if found is not None:
            return found
    return None
