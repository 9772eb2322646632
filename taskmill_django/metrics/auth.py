"""Who may scrape: a user holding ``taskmill_django.view_metrics``, or a request that carries
``Authorization: Bearer <TASKMILL["METRICS_TOKEN"]>`` (what a Prometheus server sends)."""

from __future__ import annotations

import hmac

from django.http import HttpRequest

from .. import access
from ..conf import app_settings


def bearer_token(request: HttpRequest) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, or None without one."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def token_matches(token: str) -> bool:
    """Compared in constant time; no token is configured: nothing matches (not even "")."""
    expected = app_settings.METRICS_TOKEN
    if not isinstance(expected, str) or not expected or not token:
        return False
    return hmac.compare_digest(token.encode(), expected.encode())


def decide(request: HttpRequest) -> int:
    """200 to serve, 401 to ask for credentials, 403 when the credentials are not enough."""
    token = bearer_token(request)
    if token is not None:
        return 200 if token_matches(token) else 401
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return 401
    return 200 if access.allowed(user, access.READ_METRICS) else 403
