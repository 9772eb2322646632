"""URLs of the demo site: the admin, the taskmill REST API, and `/` → the admin."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("taskmill/api/", include("taskmill_django.api.urls")),
]
