"""Writing a row whose name is unique, with a clash said as a ServiceError."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import IntegrityError, transaction

from evalsite.errors import ServiceError


@contextmanager
def atomic_named(model, name: str, taken: str) -> Iterator[None]:
    """One transaction that creates a ``model`` row named ``name`` (and what belongs to it).

    If it fails on an integrity error while a row of that name exists (created meanwhile by
    someone else included), the transaction is rolled back and ``ServiceError(taken)`` is raised,
    ``taken`` formatted with the name; any other integrity error is raised as it is.
    """
    try:
        with transaction.atomic():
            yield
    except IntegrityError:
        if model.objects.filter(name=name).exists():
            raise ServiceError(taken.format(name=name)) from None
        raise
