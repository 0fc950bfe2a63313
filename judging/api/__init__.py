"""Staff-only REST API for judge prompts and judge runs (routes: judging/api_urls.py). Judge
identities, prompts and raw outputs are staff matters: nothing here is open to annotators."""

from .prompts import JudgePromptViewSet
from .runs import JudgeRunViewSet

__all__ = ["JudgePromptViewSet", "JudgeRunViewSet"]
