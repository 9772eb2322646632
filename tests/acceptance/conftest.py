"""Acceptance-test plumbing: the ``browser`` marker for tests that drive a real Chromium.

Browser tests need Debian's ``chromium`` (or ``TASKMILL_CHROMIUM`` pointing at a Chromium
binary) and the ``playwright`` package. Without them the tests are deselected, not skipped, so
a run never counts them as passing.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("TASKMILL_CHROMIUM", "/usr/bin/chromium")


def browser_available() -> bool:
    return Path(CHROMIUM).exists() and importlib.util.find_spec("playwright") is not None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives headless Chromium (deselected when it is not installed)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if browser_available():
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("browser") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
