"""What apps built on annotation register into, so annotation never imports them.

- ``on_study_opening(hook)``: ``hook(study)`` is called inside ``study_open``'s transaction,
  with the study's row locked, before it opens (judging's routing sets which comparisons people
  are given there; a ServiceError refuses the opening).
- ``results_section_register(section)``: a section of a study's results: its page template,
  the context it needs, and the keys it adds to the JSON export.
"""

from __future__ import annotations

from collections.abc import Callable
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
