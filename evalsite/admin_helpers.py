"""What every app's admin shares: actions that ask for input on an intermediate page, a service
applied to each selected object, an "Import from file" page, and the registry through which an
app adds actions to the admin of a model another app defines (instead of unregistering and
subclassing it). Run progress, cancel, retry and the no-worker warning are the spine's
(evalsite/runs/admin.py)."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse

from evalsite.errors import ServiceError
from evalsite.imports import TOO_LARGE, ImportFormatError


@dataclass(frozen=True)
class ExtraAction:
    function: Callable
    name: str
    description: str
    permissions: tuple[str, ...]


_EXTRA_ACTIONS: dict[str, dict[str, ExtraAction]] = {}


def admin_action_register(model, *, permissions: Sequence[str] = ()):
    """Decorator: add ``function(modeladmin, request, queryset)`` (an ``admin.action``, or one
    made with ``form_action``) to the admin of ``model``, a model of an app below the caller's;
    it is offered to users holding every permission in ``permissions`` (``app.codename``).

    The model's admin must be an ``ExtensibleAdmin``; registering the same name again replaces
    the action."""

    def register(function):
        description = getattr(function, "short_description", function.__name__)
        _EXTRA_ACTIONS.setdefault(model._meta.label_lower, {})[function.__name__] = ExtraAction(
            function, function.__name__, description, tuple(permissions)
        )
        return function

    return register


class ExtensibleAdmin:
    """A ModelAdmin whose model other apps add actions to (``admin_action_register``)."""

    def get_actions(self, request):
        actions = super().get_actions(request)
        if self.actions is None:  # actions switched off for this admin
            return actions
        extra = _EXTRA_ACTIONS.get(self.model._meta.label_lower, {})
        for action in extra.values():
            if request.user.has_perms(action.permissions):
                actions[action.name] = (action.function, action.name, action.description)
        return actions


def _action_page(modeladmin, request, queryset, form, action: str, title: str):
    """The intermediate page of an admin action that needs input (Django's own pattern)."""
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "form": form,
        "queryset": queryset,
        "action": action,
        "opts": modeladmin.model._meta,
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    }
    return render(request, "admin/action_form.html", context)


@dataclass
class _Outcome:
    """What ``apply_each`` did inside a form action: refusals are held back, so that a form
    whose every row was refused can be shown again with them instead of a changelist."""

    refused: list[tuple[str, int]] = field(default_factory=list)
    done: int = 0


_OUTCOME: contextvars.ContextVar[_Outcome | None] = contextvars.ContextVar(
    "admin_form_action_outcome", default=None
)


def form_action(
    form_class: type[forms.BaseForm],
    title: str,
    *,
    description: str,
    permissions: Sequence[str] | None = None,
):
    """An admin action that first asks for ``form_class`` on an intermediate page titled
    ``title``; once that page is submitted valid, the method runs with the bound form as its
    fourth argument (``action(self, request, queryset, form)``). ``permissions`` as in
    ``admin.action`` (each needs a ``has_<name>_permission`` on the admin).

    When the service refuses every selected row (``apply_each``: a parameter over its limit, a
    misspelt one), the page is shown again with the refusals above the form and the values as
    they were typed; when some rows were refused and others done, the refusals are messages on
    the changelist beside what was done."""

    def decorate(method):
        @admin.action(description=description, permissions=permissions)
        @functools.wraps(method)
        def action(modeladmin, request, queryset):
            # Bound only once the intermediate page is submitted (its "apply" button).
            form = form_class(request.POST if "apply" in request.POST else None)
            if not form.is_valid():
                return _action_page(modeladmin, request, queryset, form, method.__name__, title)
            outcome = _Outcome()
            token = _OUTCOME.set(outcome)
            try:
                response = method(modeladmin, request, queryset, form)
            except ServiceError as exc:  # an action that calls a service itself
                outcome.refused.append((str(exc), messages.ERROR))
                response = None
            finally:
                _OUTCOME.reset(token)
            if outcome.refused and not outcome.done:
                for text, _ in outcome.refused:
                    form.add_error(None, text)
                return _action_page(modeladmin, request, queryset, form, method.__name__, title)
            for text, level in outcome.refused:
                modeladmin.message_user(request, text, level)
            return response

        return action

    return decorate


def apply_each(
    modeladmin,
    request,
    objects,
    service: Callable[[Any], Any],
    done: Callable[[Any, Any], str],
    failed: Callable[[Any, ServiceError], str] = lambda obj, exc: str(exc),
    level: int = messages.ERROR,
) -> None:
    """Call ``service(obj)`` for each object and say what happened to it: ``done(obj, result)``,
    or ``failed(obj, error)`` at ``level`` when the service refuses (the others still run)."""
    outcome = _OUTCOME.get()
    for obj in objects:
        try:
            result = service(obj)
        except ServiceError as exc:
            if outcome is not None:  # the form action decides where it is said
                outcome.refused.append((failed(obj, exc), level))
            else:
                modeladmin.message_user(request, failed(obj, exc), level)
        else:
            if outcome is not None:
                outcome.done += 1
            modeladmin.message_user(request, done(obj, result))


def run_action(service, done: str, *, description: str):
    """An admin action applying a run service (cancel, retry, resume) to each selected run;
    ``done`` is the message for a run it changed, formatted with the run's id. (Run admins on
    the spine's RunAdmin have cancel and retry already; sweeps, judging and evolution use this.)"""

    @admin.action(description=description)
    def action(modeladmin, request, queryset):
        apply_each(
            modeladmin,
            request,
            queryset,
            lambda run: service(run=run, user=request.user),
            lambda run, _: done.format(run.pk),
            level=messages.WARNING,
        )

    return action


def _small_enough(form: forms.Form) -> bool:
    """Refuse an upload over MAX_UPLOAD_BYTES by its size, before it is read into memory."""
    upload = form.cleaned_data["file"]
    if upload.size > settings.MAX_UPLOAD_BYTES:
        problem = TOO_LARGE.format(size=upload.size, limit=settings.MAX_UPLOAD_BYTES)
        form.add_error("file", f"{upload.name}: {problem}")
        return False
    return True


class ImportFromFile:
    """An "Import from file" page at ``import/`` (URL name ``<app>_<model>_import``), open to
    users who may add the model; a file the service refuses shows its error on the form.

    ``import_form`` has at least ``name``, ``file`` and ``description``.
    """

    import_form: type[forms.Form]
    import_title: str
    import_template: str

    def import_file(self, request: HttpRequest, upload: dict, data: dict) -> tuple[Any, str]:
        """Import ``upload`` (the service's name, data, filename and description) with the
        form's other ``data``: the new object and the message to show."""
        raise NotImplementedError

    def get_urls(self):
        opts = self.model._meta
        page = path(
            "import/",
            self.admin_site.admin_view(self.import_view),
            name=f"{opts.app_label}_{opts.model_name}_import",
        )
        return [page, *super().get_urls()]

    def import_view(self, request: HttpRequest):
        opts = self.model._meta
        # Not has_add_permission: an admin may refuse "Add" (rows only come from a file).
        if not request.user.has_perm(f"{opts.app_label}.{get_permission_codename('add', opts)}"):
            return HttpResponseRedirect(reverse("admin:index"))
        form = self.import_form(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid() and _small_enough(form):
            data = form.cleaned_data
            upload = {
                "name": data["name"],
                "data": data["file"].read(),
                "filename": data["file"].name,
                "description": data["description"],
            }
            try:
                obj, message = self.import_file(request, upload, data)
            except (ImportFormatError, ServiceError) as exc:
                form.add_error("file", str(exc))
            else:
                self.message_user(request, message)
                return HttpResponseRedirect(
                    reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": self.import_title,
            "form": form,
            "opts": opts,
        }
        return render(request, self.import_template, context)


class VersionedRowAdmin:
    """Mix in before ``admin.ModelAdmin`` for versioned rows (evalsite/versioned.py): deleting
    goes one row at a time through the check that keeps used versions, and saving goes through
    the services, which keep a used version as it was and store the changes as a new one.

    ``new_version`` is the warning then shown (with ``{old}``, ``{new}`` and ``{name}``).
    """

    new_version: str

    def delete_problem(self, obj) -> str | None:
        """Why ``obj`` may not be deleted (None: it may)."""
        raise NotImplementedError

    def delete_row(self, obj) -> None:
        raise NotImplementedError

    def create_row(self, request: HttpRequest, values: dict):
        raise NotImplementedError

    def update_row(self, request: HttpRequest, stored, values: dict):
        """The row that holds ``values`` now: ``stored`` or its new version."""
        raise NotImplementedError

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request, obj=None):
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or self.delete_problem(obj) is None)

    def delete_model(self, request, obj):
        self.delete_row(obj)

    def save_versioned(self, request: HttpRequest, obj, values: dict, change: bool) -> None:
        if not change:
            saved = self.create_row(request, values)
        else:
            stored = type(obj).objects.get(pk=obj.pk)
            saved = self.update_row(request, stored, values)
            if saved.pk != stored.pk:
                message = self.new_version.format(old=stored, new=saved, name=saved.name)
                self.message_user(request, message, messages.WARNING)
        # The admin goes on with ``obj`` (its messages, log entry and redirect): make it the
        # row that now holds the changes.
        for field_ in type(obj)._meta.concrete_fields:
            setattr(obj, field_.attname, getattr(saved, field_.attname))
        obj._state.adding = False


class VerbatimTextForm(forms.ModelForm):
    """A model form whose ``text_fields`` keep their text as typed (a prompt's spaces and
    newlines are part of what a model or judge reads), with a browser's CRLF made "\\n"."""

    text_fields: Sequence[str] = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in self.text_fields:
            if name in self.fields:
                self.fields[name].strip = False

    def clean(self):
        data = super().clean()
        for name in self.text_fields:
            if isinstance(data.get(name), str):
                data[name] = data[name].replace("\r\n", "\n")
        return data
