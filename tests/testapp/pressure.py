"""Pressure sources for tests (``TASKMILL["PRESSURE_SOURCES"]`` takes their dotted paths).

``Fixed.level`` is a class attribute so a test can raise or lower the pressure a running
dispatcher measures (in-process only: worker subprocesses have their own copy).
"""

from __future__ import annotations


class Fixed:
    """Reports ``Fixed.level``; 0.6 throttles BACKGROUND work under the default policy."""

    name = "fixed"
    level = 0.6

    def pressure(self) -> float:
        return type(self).level


class Failing:
    """A broken sensor: measuring it raises."""

    name = "failing"

    def pressure(self) -> float:
        raise RuntimeError("sensor unavailable")
