"""Admin pieces the generation, evolution, benchmarks and sweeps admins share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpResponseRedirect
from django.urls import path, reverse

from evalsite.admin_helpers import apply_each


class ReadOnlyAdmin:
    """Mix in before ``admin.ModelAdmin`` for rows written by runs, imports or review pages:
    no add, change or delete in the admin."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ExtraPages:
    """Mix in before the model admin: ``pages`` are ``(route, view method name, URL name)``,
    served before the admin's own URLs behind its login and staff checks."""

    pages: tuple[tuple[str, str, str], ...] = ()

    def get_urls(self):
        extra = [
            path(route, self.admin_site.admin_view(getattr(self, view)), name=name)
            for route, view, name in self.pages
        ]
        return [*extra, *super().get_urls()]


def start_each(
    modeladmin,
    request,
    queryset,
    create: Callable[[Any], Any],
    done: Callable[[Any, Any], str],
    changelist: str,
) -> HttpResponseRedirect:
    """Start something (a run, a sweep) for each selected row with ``create(row)``, say
    ``done(row, started)`` or the row's name and why it was refused, then show ``changelist``."""
    apply_each(modeladmin, request, queryset, create, done, _refused)
    return HttpResponseRedirect(reverse(changelist))


def _refused(row, exc) -> str:
    return f"{row.name}: {exc}"
