"""Who may use the staff API: staff members, within Django's model permissions.

The admin already asks for view/add/change/delete per model; the API asked only for
``is_staff``, so a staff user the admin lets "view or edit nothing" could still delete a prompt
set through the API. This class applies the same permissions: reads need ``view``, ``POST``
``add``, ``PUT``/``PATCH`` ``change``, ``DELETE`` ``delete`` on the view's model. A view names
other needs itself: ``action_permissions`` maps a viewset action (``cancel``, ``export``...) to
the permissions it needs; an ``APIView`` without a queryset lists ``required_permissions``.
A view that says neither is refused (fail closed). Superusers hold every permission.
"""

from __future__ import annotations

from rest_framework.permissions import BasePermission

_METHOD_ACTIONS = {
    "GET": "view",
    "HEAD": "view",
    "OPTIONS": "view",
    "POST": "add",
    "PUT": "change",
    "PATCH": "change",
    "DELETE": "delete",
}

_STANDARD_ACTIONS = {"list", "retrieve", "create", "update", "partial_update", "destroy", None}


def model_permission(model, action: str) -> str:
    return f"{model._meta.app_label}.{action}_{model._meta.model_name}"


def required(request, view) -> list[str] | None:
    """The permissions this request needs, or None when the view does not say (refuse)."""
    action = getattr(view, "action", None)
    named = getattr(view, "action_permissions", {})
    if action in named:
        return list(named[action])
    if hasattr(view, "required_permissions"):
        return list(view.required_permissions)
    queryset = getattr(view, "queryset", None)
    if queryset is None:
        return None
    kind = _METHOD_ACTIONS.get(request.method, "change")
    if action not in _STANDARD_ACTIONS and kind != "view":
        kind = "change"  # a custom write (cancel, close...) changes an existing row
    return [model_permission(queryset.model, kind)]


class StaffModelPermissions(BasePermission):
    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active and user.is_staff):
            return False
        perms = required(request, view)
        return perms is not None and user.has_perms(perms)
