"""Throttling hook of the submit endpoint: ``API_SUBMIT_THROTTLE_RATE`` ("100/min"; None = off).

Counts per user (per client IP for anonymous requests, where permissions allow them) in
Django's default cache, like DRF's own throttles; use a shared cache (Redis, Memcached, the
database cache) when several web processes serve the API.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from rest_framework.throttling import UserRateThrottle

from ..conf import app_settings


class SubmitRateThrottle(UserRateThrottle):
    scope = "taskmill_submit"

    def __init__(self) -> None:
        # DRF parses the rate here; allow_request() does it per request instead.
        pass

    def get_rate(self) -> str | None:
        return app_settings.API_SUBMIT_THROTTLE_RATE

    def allow_request(self, request: Any, view: Any) -> bool:
        # The rate is read per request, so changing the setting needs no restart.
        self.rate = self.get_rate()
        self.num_requests, self.duration = parse_submit_rate(self.rate)
        return super().allow_request(request, view)


def parse_submit_rate(rate: Any) -> tuple[int | None, int | None]:
    """(requests, seconds) of an ``API_SUBMIT_THROTTLE_RATE`` value, (None, None) when off;
    ImproperlyConfigured for anything else (also raised by the system check at startup)."""
    if rate is not None and not isinstance(rate, str):
        raise _bad_rate(rate)
    try:
        num, duration = UserRateThrottle.parse_rate(SubmitRateThrottle(), rate)
    except (ValueError, KeyError, AttributeError, IndexError):
        raise _bad_rate(rate) from None
    if num is not None and num < 0:
        raise _bad_rate(rate)
    return num, duration


def _bad_rate(rate: Any) -> ImproperlyConfigured:
    return ImproperlyConfigured(
        "TASKMILL['API_SUBMIT_THROTTLE_RATE'] must be None or a rate like '100/min' "
        f"(per second, min, hour or day), got {rate!r}"
    )
