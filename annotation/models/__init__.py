"""Studies, comparisons, assignments and votes (DESIGN.md, Data and Blinding).

Annotators only ever see a study id and an assignment token; everything that could name a model
(runs, answers, comparisons) stays on this side of the annotator loop (``annotation/loop``).

By subject: ``study`` (studies, their models and comparisons), ``votes`` (assignments and votes),
``people`` (the staged design's stages; identity flags, stored progress and exclusions of
annotators).
"""

from .people import AnnotatorExclusion, AnnotatorProgress, IdentityFlag, StageDraw, StagePlan
from .study import Comparison, Study, StudyRun
from .votes import Assignment, Vote

__all__ = [
    "AnnotatorExclusion",
    "AnnotatorProgress",
    "Assignment",
    "Comparison",
    "IdentityFlag",
    "StageDraw",
    "StagePlan",
    "Study",
    "StudyRun",
    "Vote",
]
