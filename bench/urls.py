"""URLs of the bench project: the admin and the REST API, mounted as in example_project."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("taskmill/api/", include("taskmill_django.api.urls")),
]
