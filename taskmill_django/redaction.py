"""Masking of sensitive payload values wherever a person or a log sees them.

A payload value is *sensitive* when its path is one of the task type's ``sensitive=`` dotted
paths (``@domain.task(..., sensitive=("password", "card.number"))``), or when its key, at any
depth, contains one of the ``SENSITIVE_KEYS`` names (ignoring case; ``-`` counts as ``_``).
Lists are transparent to paths: ``"cards.number"`` masks the number of every card.

Three functions, each for one kind of thing shown:

- ``mask_payload(payload, task_type)``: a copy of a payload with sensitive values replaced by
  ``MASK`` (whole values: a sensitive object is masked as a whole);
- ``mask_text(text, task_type, payload)``: free text that may echo the payload (an error
  message, a traceback, a progress message, a log line) with every sensitive value of
  ``payload`` masked, and ``name=value`` / ``"name": value`` pairs of sensitive names masked
  even when the payload is not at hand;
- ``mask_json(value, task_type, payload)``: other JSON (a result, a memo): keys with sensitive
  names masked at any depth, strings masked like free text.

Only what is *shown* is masked: the database keeps the real values, the task body receives
them, and signal receivers get the real rows.

>>> mask_payload({"user": "ann", "db_password": "hunter22"}, "doc::unknown")
{'user': 'ann', 'db_password': '********'}
>>> mask_text("login failed for password=hunter22", "doc::unknown")
'login failed for password=********'
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import registry
from .conf import app_settings
from .validation import JSONValue

MASK = "********"
# Shorter sensitive values are masked in payloads but not searched for in free text: masking
# every "1" or "ab" of a traceback would destroy it, and such values protect nothing.
MIN_TEXT_SECRET = 3

__all__ = ["MASK", "mask_json", "mask_payload", "mask_text"]


def mask_payload(payload: JSONValue, task_type: str) -> JSONValue:
    """``payload`` with the values of its sensitive paths and keys replaced by ``MASK``."""
    rules = _rules_for(task_type)
    if not rules.masks_anything:
        return payload
    return _masked(payload, rules.paths, rules)


def mask_json(value: JSONValue, task_type: str, payload: JSONValue = None) -> JSONValue:
    """Any JSON a task produced (result, memo): sensitive key names masked at any depth, and
    strings with the sensitive values of ``payload`` masked."""
    rules = _rules_for(task_type)
    secrets = _secrets_pattern(payload, rules)
    return _masked(value, (), rules, secrets)


def mask_text(text: str, task_type: str, payload: JSONValue = None) -> str:
    """``text`` with every sensitive value of ``payload`` (when given) masked, and every
    ``name=value`` or ``"name": "value"`` pair whose name is sensitive masked."""
    if not text:
        return text
    rules = _rules_for(task_type)
    secrets = _secrets_pattern(payload, rules)
    if secrets is not None:
        text = secrets.sub(MASK, text)
    if rules.pairs is not None:
        text = rules.pairs.sub(_mask_pair, text)
    return text


# --- rules ----------------------------------------------------------------------------------


Path = tuple[str, ...]


@dataclass(frozen=True)
class _Rules:
    paths: tuple[Path, ...]  # the task type's sensitive= paths, split at dots
    names: tuple[str, ...]  # SENSITIVE_KEYS, lower case, "-" as "_"
    pairs: re.Pattern[str] | None  # "name=value" pairs in free text

    @property
    def masks_anything(self) -> bool:
        return bool(self.paths or self.names)

    def is_sensitive_name(self, key: str) -> bool:
        folded = key.lower().replace("-", "_")
        return any(name in folded for name in self.names)


def _rules_for(task_type: str) -> _Rules:
    definition = registry.find_task(task_type)
    sensitive = definition.sensitive if definition is not None else ()
    names = app_settings.SENSITIVE_KEYS or ()
    return _compile(tuple(sensitive), tuple(str(n) for n in names))


@functools.lru_cache(maxsize=256)
def _compile(sensitive: tuple[str, ...], names: tuple[str, ...]) -> _Rules:
    paths = tuple(tuple(path.split(".")) for path in sensitive)
    folded = tuple(sorted({n.lower().replace("-", "_") for n in names if n}))
    # In free text, a key *containing* a SENSITIVE_KEYS name, or *equal* to the last segment
    # of a sensitive= path, then "=" (no spaces: "x = y" is code in a traceback) or ":", then
    # a value: quoted, or up to a separator.
    alternatives = [rf"[\w.-]*{_loose(name)}[\w.-]*" for name in folded]
    alternatives += [rf"{re.escape(path[-1])}" for path in paths]
    pairs = None
    if alternatives:
        pairs = re.compile(
            rf"""(?P<key>(?<![\w.-])["']?(?:{"|".join(alternatives)})["']?(?:=|\s*:\s*))"""
            r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'"""
            r"""|(?:(?:bearer|basic|token)\s+)?[^\s,;&)}\]'"]+)""",
            re.IGNORECASE,
        )
    return _Rules(paths, folded, pairs)


def _loose(name: str) -> str:
    """A folded name as a pattern that also matches ``-`` where it has ``_``."""
    return "[_-]".join(re.escape(part) for part in name.split("_"))


def _mask_pair(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group('key')}{quote}{MASK}{quote}"


# --- walking JSON ---------------------------------------------------------------------------


def _masked(
    value: Any,
    paths: Iterable[Path],
    rules: _Rules,
    secrets: re.Pattern[str] | None = None,
) -> Any:
    paths = tuple(paths)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if (key,) in paths or (isinstance(key, str) and rules.is_sensitive_name(key)):
                out[key] = MASK
            else:
                deeper = tuple(p[1:] for p in paths if len(p) > 1 and p[0] == key)
                out[key] = _masked(item, deeper, rules, secrets)
        return out
    if isinstance(value, list):
        return [_masked(item, paths, rules, secrets) for item in value]
    if isinstance(value, str) and secrets is not None:
        return secrets.sub(MASK, value)
    return value


def _sensitive_values(value: Any, paths: tuple[Path, ...], rules: _Rules) -> Iterator[Any]:
    """The sensitive values of a payload (whole values: objects and lists included)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if (key,) in paths or (isinstance(key, str) and rules.is_sensitive_name(key)):
                yield item
            else:
                deeper = tuple(p[1:] for p in paths if len(p) > 1 and p[0] == key)
                yield from _sensitive_values(item, deeper, rules)
    elif isinstance(value, list):
        for item in value:
            yield from _sensitive_values(item, paths, rules)


def _leaves(value: Any) -> Iterator[str]:
    """Every scalar inside a sensitive value, as text might spell it."""
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, str):
        yield value
        yield json.dumps(value)[1:-1]  # as JSON would escape it
        yield repr(value)[1:-1]  # as a Python repr (an exception message) would
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)


def _secrets_pattern(payload: Any, rules: _Rules) -> re.Pattern[str] | None:
    """One pattern matching every sensitive value of ``payload``, longest first."""
    if not payload or not rules.masks_anything:
        return None
    found = {
        leaf
        for value in _sensitive_values(payload, rules.paths, rules)
        for leaf in _leaves(value)
        if len(leaf) >= MIN_TEXT_SECRET and leaf != MASK
    }
    if not found:
        return None
    return re.compile("|".join(re.escape(s) for s in sorted(found, key=len, reverse=True)))
