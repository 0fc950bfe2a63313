"""The generation app's models, one module per concern; import them from here."""

from .language_models import LanguageModel
from .prompt_sets import PromptSet, Question
from .runs import Answer, GenerationRun
from .templates import PromptTemplate
from .training import (
    DatasetAugmentation,
    FineTuneLog,
    FineTuneRun,
    FineTuneRunDataset,
    InstructionDataset,
    InstructionExample,
    PreferenceDataset,
    PreferencePair,
)

__all__ = [
    "Answer",
    "DatasetAugmentation",
    "FineTuneLog",
    "FineTuneRun",
    "FineTuneRunDataset",
    "GenerationRun",
    "InstructionDataset",
    "InstructionExample",
    "LanguageModel",
    "PreferenceDataset",
    "PreferencePair",
    "PromptSet",
    "PromptTemplate",
    "Question",
]
