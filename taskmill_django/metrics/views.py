"""The metrics view: checks access, then renders ``read.metrics.report()`` in Prometheus'
text exposition format with ``prometheus_client``."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import auth

MISSING_CLIENT = (
    "The metrics endpoint needs prometheus_client: pip install 'taskmill-django[prometheus]'\n"
)


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Serve the metrics to an allowed scraper; 401/403 otherwise (without saying more)."""
    verdict = auth.decide(request)
    if verdict == 401:
        response = HttpResponse("Authentication required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="taskmill"'
        return response
    if verdict == 403:
        return HttpResponse("Permission denied.\n", status=403, content_type="text/plain")
    try:
        import prometheus_client  # noqa: F401 - optional: the 'prometheus' extra

        from .exposition import CONTENT_TYPE, render
    except ImportError:
        return HttpResponse(MISSING_CLIENT, status=503, content_type="text/plain")
    return HttpResponse(render(), content_type=CONTENT_TYPE)
