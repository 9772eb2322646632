"""Process-wide registry of domains and task definitions, filled when apps import tasks.py.

Workers resolve a row's ``task_type`` only through this registry, never by import path, so a
payload can never name code to run (RELIABILITY G10).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .exceptions import DomainNotRegistered, UnknownTaskType

if TYPE_CHECKING:
    from .domain import Domain, TaskDefinition

_domains: dict[str, Domain] = {}
_tasks: dict[str, TaskDefinition] = {}


def register_domain(domain: Domain) -> None:
    existing = _domains.get(domain.name)
    if existing is not None and existing is not domain:
        raise ValueError(f"domain {domain.name!r} is declared twice")
    _domains[domain.name] = domain


def register_task(definition: TaskDefinition) -> None:
    existing = _tasks.get(definition.task_type)
    if existing is not None and _origin(existing.func) != _origin(definition.func):
        # Re-importing one module (autoreload, tests) re-registers the same function; two
        # different functions claiming one name is an error.
        raise ValueError(
            f"task type {definition.task_type!r} is declared twice: "
            f"{_origin(existing.func)} and {_origin(definition.func)}"
        )
    _tasks[definition.task_type] = definition


def _origin(func: object) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', '?')}"


def get_domain(name: str) -> Domain:
    try:
        return _domains[name]
    except KeyError:
        raise DomainNotRegistered(
            f"no domain named {name!r}; known: {', '.join(sorted(_domains)) or 'none'}"
        ) from None


def find_domain(name: str) -> Domain | None:
    return _domains.get(name)


def get_task(task_type: str) -> TaskDefinition:
    try:
        return _tasks[task_type]
    except KeyError:
        raise UnknownTaskType(task_type) from None


def find_task(task_type: str) -> TaskDefinition | None:
    return _tasks.get(task_type)


def all_domains() -> list[Domain]:
    return [_domains[name] for name in sorted(_domains)]


def all_tasks() -> list[TaskDefinition]:
    return [_tasks[name] for name in sorted(_tasks)]


_state: dict[str, object] = {}


def register_state(name: str, value: object) -> None:
    _state[name] = value


def get_state(name: str) -> object:
    try:
        return _state[name]
    except KeyError:
        raise KeyError(
            f"no state named {name!r}; register it with scheduler.register_state()"
        ) from None
