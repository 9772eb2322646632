"""System checks of a project's setup around ``settings.TASKMILL`` (taskmill.E070-E072, W071,
W072).

What a newcomer gets wrong before any setting: the REST API's URLs included without the
``[api]`` extra, SQLite left in its default journal and transaction modes (two workers then
fail with "database is locked"), a task function that does not take ``ctx``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Iterator
from importlib.util import find_spec
from typing import Any

from django.core.checks import CheckMessage, Error, Tags, Warning, register

API_URLS = "taskmill_django.api.urls"
_API_PACKAGES = {"rest_framework": "djangorestframework", "django_filters": "django-filter"}


@register(Tags.urls, "taskmill")
def check_api_packages(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E070: ``include("taskmill_django.api.urls")`` without DRF or django-filter installed
    (the include then serves nothing)."""
    missing = [module for module in _API_PACKAGES if find_spec(module) is None]
    if not missing or not _api_urls_included():
        return []
    names = " and ".join(_API_PACKAGES[m] for m in missing)
    return [
        Error(
            f"The taskmill REST API's URLs ({API_URLS}) are included, but {names} "
            f"{'is' if len(missing) == 1 else 'are'} not installed: the API serves nothing.",
            hint='pip install "taskmill-django[api]" and add "rest_framework" and '
            '"django_filters" to INSTALLED_APPS, or remove the include.',
            id="taskmill.E070",
        )
    ]


def _api_urls_included() -> bool:
    from django.urls import get_resolver

    try:
        patterns = get_resolver().url_patterns
    except Exception:  # a broken URLconf is reported by Django's own URL checks
        return False
    return any(name == API_URLS for name in _included_modules(patterns))


def _included_modules(patterns: Iterable[Any]) -> Iterator[str]:
    for pattern in patterns:
        module = getattr(pattern, "urlconf_module", None)
        if module is None:
            continue
        name = getattr(module, "__name__", None)
        if isinstance(name, str):
            yield name
        if name != API_URLS:
            try:
                yield from _included_modules(pattern.url_patterns)
            except Exception:  # noqa: S112 - as above: Django reports it
                continue


_WAL = re.compile(r"journal_mode\s*=\s*'?wal\b", re.IGNORECASE)


@register("taskmill")
def check_sqlite(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W071: a SQLite database holding taskmill's tables without WAL or IMMEDIATE
    transactions, the settings of the quick start."""
    from django.conf import settings
    from django.db import router

    messages: list[CheckMessage] = []
    databases: dict[str, dict[str, Any]] = settings.DATABASES
    for alias, config in databases.items():
        if "sqlite3" not in str(config.get("ENGINE", "")):
            continue
        if not router.allow_migrate(alias, "taskmill_django"):
            continue
        name = str(config.get("NAME") or "")
        if not name or name == ":memory:" or "mode=memory" in name:
            continue  # one process only: nothing to share, nothing to lock
        options = config.get("OPTIONS") or {}
        lacking = []
        if str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
            lacking.append('"transaction_mode": "IMMEDIATE"')
        if not _WAL.search(str(options.get("init_command", ""))):
            lacking.append('"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"')
        if lacking:
            messages.append(
                Warning(
                    f"DATABASES[{alias!r}] is SQLite without WAL or IMMEDIATE transactions: a "
                    "worker beside the web server (or a second worker) fails with "
                    '"database is locked".',
                    hint=f"Add to DATABASES[{alias!r}]['OPTIONS']: {', '.join(lacking)} (see "
                    "docs/quickstart.md). Silence taskmill.W071 if the file was switched to "
                    "WAL by other means and only one process writes.",
                    id="taskmill.W071",
                )
            )
    return messages


_POSITIONAL = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.VAR_POSITIONAL,
)


@register("taskmill")
def check_task_functions(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E072: a task function (or its finalize / on_cancel hook) that cannot take the
    TaskContext as its first positional argument; every run would fail with a TypeError."""
    from . import registry

    messages: list[CheckMessage] = []
    for definition in registry.all_tasks():
        hooks = (
            ("", definition.func, 1),
            ("finalize hook ", definition.finalize_func, 2),
            ("on_cancel hook ", definition.on_cancel_func, 1),
        )
        for what, func, needed in hooks:
            if func is not None and not _takes_positionals(func, needed):
                args = "ctx, memo" if needed == 2 else "ctx"
                messages.append(
                    Error(
                        f"The {what}of task {definition.task_type!r} "
                        f"({_describe(func)}) does not take {args} as its first argument.",
                        hint=f"taskmill calls it as func({args}, **payload): declare it as "
                        f"def {getattr(func, '__name__', 'func')}({args}, ...).",
                        obj=func,
                        id="taskmill.E072",
                    )
                )
            elif func is not None and (first := _first_name(func)) is not None:
                messages.append(
                    Warning(
                        f"The first parameter of the {what}of task {definition.task_type!r} "
                        f"({_describe(func)}) is {first!r}: it receives the TaskContext, not "
                        "a payload value.",
                        hint="Name it ctx (or _ctx when unused); payload values follow it.",
                        obj=func,
                        id="taskmill.W072",
                    )
                )
    return messages


def _first_name(func: Any) -> str | None:
    """The first parameter's name when it does not look like a context (``ctx``,
    ``context``, ``task_ctx``, ``_``...): the sign of ``def send(to, subject)``."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return None
    if not params or params[0].kind == inspect.Parameter.VAR_POSITIONAL:
        return None
    name = params[0].name
    looks_right = "ctx" in name or "context" in name or name.startswith("_") or name == "self"
    return None if looks_right else name


def _takes_positionals(func: Any, count: int) -> bool:
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return True  # a builtin or C callable: nothing to say
    for index in range(count):
        if index >= len(params):
            return False
        if params[index].kind == inspect.Parameter.VAR_POSITIONAL:
            return True
        if params[index].kind not in _POSITIONAL:
            return False
    return True


def _describe(func: Any) -> str:
    try:
        signature = str(inspect.signature(func))
    except (TypeError, ValueError):
        signature = "(...)"
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', func)}{signature}"
