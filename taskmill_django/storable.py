"""Make any text or JSON value a task produces storable on every supported database.

Task code can hand the worker anything: an exception message with a NUL byte, a progress
message with a lone surrogate decoded from a broken file name, a megabyte-long traceback, a
result whose strings carry ``\\u0000``. PostgreSQL refuses NUL in ``text`` and ``jsonb``;
MariaDB and SQLite cannot encode lone surrogates as UTF-8; every database has size limits. One
such value must never block the outcome batch it travels in, or the worker writing it (RELIABILITY
G11), so the worker passes every string it writes through these functions first.

Bad characters are escaped visibly (a NUL becomes the four characters ``\\x00``, a lone
surrogate ``\\udcff``) so an operator still sees what the task said; oversize text is cut with a
marker saying how much was dropped.

>>> storable_text("bad\\x00byte")
'bad\\\\x00byte'
>>> storable_text("x" * 50, limit=30)
'xxxxxxxx… [truncated 42 chars]'
"""

from __future__ import annotations

import re
from typing import Any

# NUL, and UTF-16 surrogates that are not part of a pair (Python strings may hold them, e.g.
# from ``os.fsdecode`` of an undecodable name; no UTF-8 encoder accepts them).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_MARKER = "… [truncated {} chars]"


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return "\\x00" if code == 0 else f"\\u{code:04x}"


def storable_text(value: object, limit: int | None = None, *, keep: str = "head") -> str:
    """``value`` as a string every database can store: NUL and lone surrogates escaped,
    at most ``limit`` characters (``keep="tail"`` keeps the end, as a traceback wants)."""
    text = value if isinstance(value, str) else _safe_str(value)
    if _UNSTORABLE.search(text):
        text = _UNSTORABLE.sub(_escape, text)
    if limit is not None and len(text) > limit:
        room = limit
        for _ in range(3):  # the marker's length depends on the count it states
            marker = _MARKER.format(len(text) - room)
            room = max(limit - len(marker), 0)
        text = text[:room] + marker if keep == "head" else marker + text[len(text) - room :]
    return text


def storable_json(value: Any) -> Any:
    """A copy of a JSON value with every string (keys included) made storable."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(k): storable_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(v) for v in value]
    return value


def _safe_str(value: object) -> str:
    """``str(value)``, or a description of the value when its ``__str__`` itself fails."""
    try:
        return str(value)
    except Exception as exc:  # a task's exception class may have a broken __str__
        return f"<unprintable {type(value).__name__}: {type(exc).__name__}>"
