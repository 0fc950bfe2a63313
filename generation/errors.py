"""The service error lives in the platform (evalsite/errors.py); kept here for imports."""

from evalsite.errors import ServiceError, StateConflict

__all__ = ["ServiceError", "StateConflict"]
