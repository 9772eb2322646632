"""URLs: ``path("taskmill/api/", include("taskmill_django.api.urls"))``.

The namespace is ``taskmill_api`` (``reverse("taskmill_api:task-list")``). The API is an extra
(``pip install "taskmill-django[api]"``). Without Django REST framework or django-filter this
module still imports, with no routes, so that ``manage.py check`` can say what is missing
(system check taskmill.E070) instead of failing on an ImportError inside the URLconf.
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

API_PACKAGES = {"rest_framework": "djangorestframework", "django_filters": "django-filter"}
"""The modules the API imports, with the distribution that provides each."""

MISSING = sorted(module for module in API_PACKAGES if find_spec(module) is None)

app_name = "taskmill_api"
urlpatterns: list[Any]

if MISSING:
    urlpatterns = []
else:
    from .routes import api_patterns, urlpatterns  # noqa: F401 - api_patterns is public too
