"""The generation app's models, one module per concern; import them from here."""

from .language_models import LanguageModel
from .prompt_sets import PromptSet, Question
from .runs import Answer, GeneratesWithEngine, GenerationRun
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
    "GeneratesWithEngine",
    "InstructionDataset",
    "InstructionExample",
    "LanguageModel",
    "PreferenceDataset",
    "PreferencePair",
    "PromptSet",
    "PromptTemplate",
    "Question",
]
