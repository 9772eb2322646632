"""REST API (the only package importing rest_framework and django_filters)."""
