"""Who may use the API: the ``API_PERMISSION_CLASSES`` setting (staff only by default)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from rest_framework.permissions import BasePermission

from ..conf import app_settings


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
