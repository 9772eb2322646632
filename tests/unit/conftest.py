"""Fixtures for tests that need no database."""

from __future__ import annotations

import pytest

from taskmill_django import registry


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Domains and task types declared in the test are forgotten afterwards."""
    monkeypatch.setattr(registry, "_domains", dict(registry._domains))
    monkeypatch.setattr(registry, "_tasks", dict(registry._tasks))
