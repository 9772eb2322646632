from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("taskmill/api/", include("taskmill_django.api.urls")),
    path("taskmill/metrics", include("taskmill_django.metrics.urls")),
]
