"""pytest fixtures for projects that use taskmill_django, loaded by the ``pytest11`` entry point.

``taskmill_capture`` records what a test submits; ``taskmill_worker`` runs due tasks in the
test's own thread and transaction. Both need database access (``@pytest.mark.django_db``).
Models are imported only when a fixture is used: pytest loads this plugin in every project
where the package is installed, before Django is set up (the package itself imports no models).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import CapturedTask


class InProcessWorker:
    """What ``taskmill_worker`` gives a test: ``run_pending()`` as a worker would run the
    queue, in the calling thread (see ``taskmill_django.testing.run_pending``)."""

    def __init__(self) -> None:
        self.ran = 0  # attempts run through this fixture so far

    def run_pending(self, *, limit: int | None = None, domains: list[str] | None = None) -> int:
        """Run due tasks until none is left (or ``limit`` ran); return how many attempts ran."""
        from .testing import run_pending

        ran = run_pending(limit=limit, domains=domains)
        self.ran += ran
        return ran


@pytest.fixture
def taskmill_capture() -> Iterator[list[CapturedTask]]:
    """The tasks submitted during the test (``testing.capture()``); they are queued as usual."""
    from .testing import capture

    with capture() as captured:
        yield captured


@pytest.fixture
def taskmill_worker() -> InProcessWorker:
    """Runs due tasks in-process: ``taskmill_worker.run_pending()``."""
    return InProcessWorker()
