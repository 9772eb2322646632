"""System checks of the metrics endpoint: its client library and its token."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Warning, register
from django.urls import NoReverseMatch, reverse

from ..conf import app_settings

MIN_TOKEN_LENGTH = 32


@register("taskmill")
def check_prometheus_client(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """The endpoint is routed but ``prometheus_client`` is missing: every scrape would fail."""
    if not _endpoint_routed():
        return []
    try:
        import prometheus_client  # noqa: F401 - optional: the 'prometheus' extra
    except ImportError:
        pass
    else:
        return []
    return [
        Error(
            "taskmill_django.metrics.urls is in the URLconf but prometheus_client is not "
            "installed.",
            hint="pip install 'taskmill-django[prometheus]' (the endpoint answers 503 until then).",
            id="taskmill.E073",
        )
    ]


@register("taskmill")
def check_metrics_token(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    token = app_settings.METRICS_TOKEN
    if token is None:
        return []
    if not isinstance(token, str):
        return [
            Error(
                f"TASKMILL['METRICS_TOKEN'] must be None or a string, got {type(token).__name__}.",
                id="taskmill.E033",
            )
        ]
    if len(token.strip()) < MIN_TOKEN_LENGTH:
        return [
            Warning(
                f"TASKMILL['METRICS_TOKEN'] is shorter than {MIN_TOKEN_LENGTH} characters"
                + (" (empty: no scraper can use it)." if not token.strip() else "."),
                hint="Use a long random secret, e.g. python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))', or None to allow only users with "
                "taskmill_django.view_metrics.",
                id="taskmill.W033",
            )
        ]
    return []


def _endpoint_routed() -> bool:
    try:
        reverse("taskmill_metrics:metrics")
    except NoReverseMatch:
        return False
    except Exception:  # a broken URLconf is reported by Django's own checks
        return False
    return True
