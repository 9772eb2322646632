"""The public facade is typed: what users call returns real types an editor can follow."""

from __future__ import annotations

import inspect
import typing

import pytest

from taskmill_django import domain, explain, handles, models, records
from taskmill_django.policy import ratelimit
from taskmill_django.scheduler import Scheduler

# Names the facade imports only for type checkers (importing the package loads no models).
_NAMES = {
    **vars(records),
    **vars(models),
    **vars(handles),
    **vars(domain),
    **vars(explain),
    **vars(ratelimit),
}


def _public_methods(cls: type) -> list[tuple[str, object]]:
    return [
        (name, member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    ]


def _mentions_any(hint: object) -> bool:
    return hint is typing.Any or any(_mentions_any(arg) for arg in typing.get_args(hint))


@pytest.mark.parametrize("cls", [Scheduler, handles.TaskStore, handles.DomainHandle])
def test_public_facade__every_method_declares_a_return_type_without_any(cls):
    untyped = []
    for name, method in _public_methods(cls):
        module = vars(inspect.getmodule(method))
        hints = typing.get_type_hints(method, globalns={**_NAMES, **module})
        if "return" not in hints or _mentions_any(hints["return"]):
            untyped.append(name)
    assert untyped == []
