"""Staff-only REST API for prompt sets, questions, models, prompt templates, generation runs and
their answers, instruction data sets and fine-tune runs: one module per resource (routes:
api_urls.py)."""

from .answers import AnswerViewSet
from .datasets import InstructionDatasetViewSet
from .finetune import FineTuneRunViewSet
from .language_models import LanguageModelViewSet
from .prompt_sets import PromptSetViewSet, QuestionViewSet
from .runs import GenerationRunViewSet
from .templates import PromptTemplateViewSet

__all__ = [
    "AnswerViewSet",
    "FineTuneRunViewSet",
    "GenerationRunViewSet",
    "InstructionDatasetViewSet",
    "LanguageModelViewSet",
    "PromptSetViewSet",
    "PromptTemplateViewSet",
    "QuestionViewSet",
]
