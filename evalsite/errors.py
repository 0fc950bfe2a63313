"""The error every service raises for a request the data does not allow, and its one mapping
to an API answer (``api_exception_handler``, settings.REST_FRAMEWORK)."""

BAD_CHARACTERS = "The request holds characters that cannot be stored (such as a NUL byte)."


class ServiceError(ValueError):
    """A request the data does not allow; the message is meant for the person who asked.

    The API answers it as 400 with ``{"detail": message}``."""


class StateConflict(ServiceError):
    """A request the object's current state forbids (cancel a finished run, retry a running
    one). The API answers it as 409."""


def api_exception_handler(exc, context):
    """DRF's handler, plus the project's errors: a ServiceError is a 400 with its message (409
    for a StateConflict), data the database refuses to store is a 400, never a server error."""
    from django.db import DataError
    from rest_framework.response import Response
    from rest_framework.views import exception_handler, set_rollback

    if isinstance(exc, ServiceError | DataError):
        # As DRF's own handler does: an atomic request's changes are rolled back.
        set_rollback()
        status = 409 if isinstance(exc, StateConflict) else 400
        detail = BAD_CHARACTERS if isinstance(exc, DataError) else str(exc)
        return Response({"detail": detail}, status=status)
    return exception_handler(exc, context)
