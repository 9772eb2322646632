"""The Prometheus metrics endpoint, routed with
``path("taskmill/metrics", include("taskmill_django.metrics.urls"))``.

Needs ``prometheus_client`` (``pip install taskmill-django[prometheus]``); without it the
system check ``taskmill.E073`` says so and the endpoint answers 503 with the same advice.
"""
