"""docs/reference/python-api.md lists the public methods of the scheduler, TaskStore and
DomainHandle: every method the code has is in its table, and every name a table gives exists.

The tables' first cells name methods in backticks (`` `cancel(task_id)` ``, several to a cell);
a method added, renamed or removed without the reference fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from taskmill_django import scheduler
from taskmill_django.handles import DomainHandle, TaskStore
from taskmill_django.scheduler import Scheduler

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "python-api.md"


def section(start: str, end: str) -> str:
    text = REFERENCE.read_text()
    begin = text.index(start)
    return text[begin : text.index(end, begin)]


def documented_names(text: str) -> set[str]:
    """Names in backticks in the first cell of each table row (a call or a bare attribute)."""
    names = set()
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        names |= set(re.findall(r"`(\w+)(?:\(|`)", first_cell))
    return names


def public_methods(cls: type, own_only: bool = False) -> set[str]:
    names = vars(cls) if own_only else dir(cls)
    return {n for n in names if not n.startswith("_") and callable(getattr(cls, n))}


TABLES = [
    (Scheduler, "## The scheduler", "### `Snapshot`", False),
    (TaskStore, "### `TaskStore`", "### `DomainHandle`", False),
    # The DomainHandle table lists what it adds to TaskStore (and its ``name``).
    (DomainHandle, "### `DomainHandle`", "### Progress estimates", True),
]


@pytest.mark.parametrize(("cls", "start", "end", "own_only"), TABLES)
def test_python_api_reference__lists_every_public_method(cls, start, end, own_only):
    missing = public_methods(cls, own_only) - documented_names(section(start, end))
    assert not missing, f"{cls.__name__} methods missing from {REFERENCE.name}: {missing}"


@pytest.mark.parametrize(("cls", "start", "end", "own_only"), TABLES)
def test_python_api_reference__names_only_what_exists(cls, start, end, own_only):
    instance = scheduler.domain("tests") if cls is DomainHandle else cls()  # attributes too
    unknown = {n for n in documented_names(section(start, end)) if not hasattr(instance, n)}
    assert not unknown, f"{REFERENCE.name} documents {cls.__name__}.{unknown}, which do not exist"
