"""Acceptance-test plumbing: the ``browser`` marker for tests that drive a real Chromium, and
the ``pgbouncer`` marker for tests behind a real PgBouncer.

Browser tests need Debian's ``chromium`` (or ``TASKMILL_CHROMIUM`` pointing at a Chromium
binary) and the ``playwright`` package; pooler tests need Debian's ``pgbouncer``. Without them
the tests are deselected, not skipped, so a run never counts them as passing, and the run's
summary says why.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections

from tests.acceptance.pgbouncer import PgBouncer, pgbouncer_binary, running_pgbouncer

CHROMIUM = os.environ.get("TASKMILL_CHROMIUM", "/usr/bin/chromium")


def browser_available() -> bool:
    return Path(CHROMIUM).exists() and importlib.util.find_spec("playwright") is not None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives headless Chromium (deselected when it is not installed)"
    )
    config.addinivalue_line(
        "markers", "pgbouncer: runs behind a real PgBouncer (deselected when it is not installed)"
    )
    config.addinivalue_line(
        "markers", "faketime: fakes worker clocks with libfaketime (deselected when it is missing)"
    )


# Debian's faketime package: skews the clock of the worker subprocesses a test starts.
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")

_missing: dict[str, int] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    absent = []
    if not browser_available():
        absent.append("browser")
    if pgbouncer_binary() is None:
        absent.append("pgbouncer")
    if not LIBFAKETIME.exists():
        absent.append("faketime")
    keep, drop = [], []
    for item in items:
        marker = next((m for m in absent if item.get_closest_marker(m)), None)
        (drop if marker else keep).append(item)
        if marker:
            _missing[marker] = _missing.get(marker, 0) + 1
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    needs = {
        "browser": f"chromium ({CHROMIUM}) and playwright",
        "pgbouncer": "pgbouncer",
        "faketime": f"libfaketime ({LIBFAKETIME}, Debian's faketime)",
    }
    for marker, count in _missing.items():
        terminalreporter.write_line(
            f"{count} {marker} test(s) deselected: {needs[marker]} not installed", yellow=True
        )


@pytest.fixture
def pgbouncer(transactional_db: None) -> Iterator[PgBouncer]:
    """A PgBouncer in transaction mode in front of the test database, on a free port."""
    with running_pgbouncer(connection.settings_dict) as bouncer:
        yield bouncer


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def site_url(transactional_db: None) -> Iterator[str]:
    """The test site served from a thread, static files included. Function-scoped (unlike
    pytest-django's ``live_server``) so it stops before the test database is flushed or
    dropped, and no server connection outlives the test."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.test.testcases import LiveServerThread

    thread = LiveServerThread("localhost", StaticFilesHandler)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    yield f"http://localhost:{thread.port}"
    thread.terminate()


@pytest.fixture
def new_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """``new_page(width=1400, sidebar=True)``: a Chromium page of that width, with the admin's
    app sidebar open or collapsed. Playwright's sync API runs an event loop in this thread, so
    Django's guard against ORM calls from async code is lifted for the test's own queries."""
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    pages: list[Any] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

        def open_page(width: int = 1360, sidebar: bool = True) -> Any:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.set_default_timeout(30_000)
            is_open = "true" if sidebar else "false"
            page.add_init_script(
                f"localStorage.setItem('django.admin.navSidebarIsOpen', '{is_open}')"
            )
            pages.append(page)
            return page

        try:
            yield open_page
        finally:
            for page in pages:
                page.goto("about:blank")  # stop the dashboard's polling before the server goes
            browser.close()
            # While Playwright's loop runs, Django keeps this thread's connections in a
            # context variable of their own: close them here, or they outlive the test.
            connections.close_all()


@pytest.fixture
def browser_page(new_page: Callable[..., Any]) -> Any:
    """A 1360 px page with the admin's app sidebar collapsed: roomier screenshots for the docs."""
    return new_page(1360, sidebar=False)
