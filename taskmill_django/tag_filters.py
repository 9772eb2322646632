"""The one tag filter syntax of the admin and the REST API.

``tag=key:value`` keeps rows carrying that tag; the value is everything after the first colon
(``tag=url:https://x`` is key ``url``, value ``https://x``). ``tag=key`` keeps rows carrying
the key, whatever its value. Repeated ``tag`` parameters must all match. ``tag_prefix=cust``
keeps rows carrying a tag whose key starts with ``cust``; repeated, all must match too.

>>> parse_tag_filter("customer:acme"), parse_tag_filter("customer")
(('customer', 'acme'), ('customer', None))
>>> parse_tag_filter("customer=acme")
Traceback (most recent call last):
...
taskmill_django.exceptions.ValidationError: tag: expected key:value or key, got 'customer=acme'
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Model, QuerySet

from .exceptions import ValidationError
from .validation import MAX_TAG_KEY, MAX_TAG_VALUE


def parse_tag_filter(raw: str) -> tuple[str, str | None]:
    """``"key:value"`` → ``(key, value)``, ``"key"`` → ``(key, None)``; anything else is a
    ValidationError on ``tag``. A bare key with ``=`` is refused: it is almost always the
    ``key=value`` spelling of another tool, which would silently match nothing."""
    if "\x00" in raw:
        raise ValidationError("tag", "must not contain NUL characters")
    key, colon, value = raw.partition(":")
    if not key or (not colon and "=" in key):
        raise ValidationError("tag", f"expected key:value or key, got {raw[:80]!r}")
    if len(key) > MAX_TAG_KEY or len(value) > MAX_TAG_VALUE:
        raise ValidationError(
            "tag", f"keys have at most {MAX_TAG_KEY} characters, values {MAX_TAG_VALUE}"
        )
    return key, value if colon else None


def with_tags(
    queryset: QuerySet[Any],
    tag_model: type[Model],
    owner: str,
    pairs: Iterable[tuple[str, str | None]] = (),
    prefixes: Iterable[str] = (),
) -> QuerySet[Any]:
    """Rows of ``queryset`` carrying every ``(key, value)`` tag (value None: the key with any
    value) and, for every prefix, a tag whose key starts with it. ``owner`` is the tag model's
    column naming the row."""
    tags = tag_model.objects  # type: ignore[attr-defined]
    for key, value in pairs:
        wanted = {"key": key} if value is None else {"key": key, "value": value}
        queryset = queryset.filter(id__in=tags.filter(**wanted).values(owner))
    for prefix in prefixes:
        if prefix:
            queryset = queryset.filter(id__in=tags.filter(key__startswith=prefix).values(owner))
    return queryset
