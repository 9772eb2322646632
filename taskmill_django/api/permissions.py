"""Who may use the API: the ``API_PERMISSION_CLASSES`` setting, ``TaskmillPermission`` by default.

``TaskmillPermission`` applies the policy of ``taskmill_django.access`` (the admin's too): each
view says, per action, which ``access`` need it has (its ``needs`` mapping), and the user must
hold every permission of it. Replacing the setting replaces the policy wholesale; a class that
also defines ``allows_urgent(request)`` keeps deciding who may use a preempting priority.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from rest_framework.permissions import BasePermission

from .. import access
from ..conf import app_settings


class TaskmillPermission(BasePermission):
    """Django model permissions per action, as docs/howto/security.md tabulates them.

    An action a view does not list is refused (to superusers too: nobody can reach an endpoint
    the policy does not know), except DRF's ``OPTIONS`` metadata and methods the view does not
    answer (405), which need any permission of the app, like the API root and the schema.
    """

    message = "You do not have the permission this action needs."

    def has_permission(self, request: Any, view: Any) -> bool:
        need = required(view, request)
        if need is None:
            return False
        if not access.allowed(request.user, need):
            names = ", ".join(need) or "any permission of taskmill_django"
            self.message = f"This action needs the permission(s): {names}."
            return False
        return True

    def allows_urgent(self, request: Any) -> bool:
        """May this request submit or move a task to a preempting priority?"""
        return access.allowed(request.user, access.URGENT)


def required(view: Any, request: Any) -> access.Need | None:
    """The ``access`` need of this request's action, or None when the view does not say."""
    method = request.method.lower()
    action = getattr(view, "action", None) or method
    table = getattr(view, "needs", None) or {}
    if action in table:
        return table[action]
    if action in ("metadata", "options") or not _handles(view, method):
        return access.ANY  # OPTIONS, or a method the view answers with 405 anyway
    return None


def _handles(view: Any, method: str) -> bool:
    action_map = getattr(view, "action_map", None)
    if action_map is not None:  # a viewset: the route's methods
        return method in action_map
    return hasattr(view, method)


def permission_classes() -> list[type[BasePermission]]:
    """The configured permission classes (dotted paths or classes), read on every request so
    ``override_settings`` and runtime changes apply."""
    setting = app_settings.API_PERMISSION_CLASSES
    if isinstance(setting, str) or not isinstance(setting, list | tuple):
        raise ImproperlyConfigured(
            "TASKMILL['API_PERMISSION_CLASSES'] must be a list of DRF permission classes "
            f"(dotted paths), got {setting!r}"
        )
    return [_load(entry) for entry in setting]


def _load(entry: Any) -> type[BasePermission]:
    if isinstance(entry, str):
        try:
            entry = import_string(entry)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"TASKMILL['API_PERMISSION_CLASSES']: cannot import {entry!r}: {exc}"
            ) from exc
    if not callable(entry):
        # DRF instantiates each entry per request: classes, or composed ones (A & B).
        raise ImproperlyConfigured(
            f"TASKMILL['API_PERMISSION_CLASSES']: {entry!r} is not a permission class"
        )
    return entry
