"""Input rules shared by every entry point: payloads, priorities, tags and dedup keys."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.test import override_settings

from taskmill_django import IoBudget, Priority, ValidationError
from taskmill_django.conf import DEFAULTS
from taskmill_django.validation import (
    dedup_key,
    validate_ids,
    validate_payload,
    validate_priority,
    validate_run_after,
    validate_tags,
)

MAX_PAYLOAD_BYTES = DEFAULTS["MAX_PAYLOAD_BYTES"]


def _field(call, *args):
    with pytest.raises(ValidationError) as info:
        call(*args)
    return info.value.field


# --- payload ---------------------------------------------------------------------------------


def test_validate_payload__returns_canonical_json():
    assert validate_payload({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'


@pytest.mark.parametrize(
    "payload",
    [{"when": datetime(2024, 1, 1, tzinfo=UTC)}, {"s": {1, 2}}, {"f": object()}],
    ids=["datetime", "set", "object"],
)
def test_validate_payload__not_json_serializable_is_rejected(payload):
    with pytest.raises(ValidationError, match="JSON-serializable") as info:
        validate_payload(payload)
    assert info.value.field == "payload"


def test_validate_payload__nan_is_rejected():
    assert _field(validate_payload, {"x": float("nan")}) == "payload"


@pytest.mark.parametrize("payload", [[1, 2], "text", 3, None], ids=["list", "str", "int", "None"])
def test_validate_payload__non_dict_is_rejected(payload):
    with pytest.raises(ValidationError, match="JSON object") as info:
        validate_payload(payload)
    assert info.value.field == "payload"


def test_validate_payload__non_string_keys_are_rejected():
    assert _field(validate_payload, {1: "x"}) == "payload"


def test_validate_payload__over_one_mebibyte_is_rejected():
    overhead = len(json.dumps({"x": ""}, separators=(",", ":")))
    with pytest.raises(ValidationError, match="limit") as info:
        validate_payload({"x": "a" * (MAX_PAYLOAD_BYTES - overhead + 1)})
    assert info.value.field == "payload"


def test_validate_payload__exactly_one_mebibyte_is_accepted():
    overhead = len(json.dumps({"x": ""}, separators=(",", ":")))
    text = validate_payload({"x": "a" * (MAX_PAYLOAD_BYTES - overhead)})
    assert len(text.encode()) == MAX_PAYLOAD_BYTES


def test_validate_payload__max_payload_bytes_setting_sets_the_limit():
    with override_settings(TASKMILL={"MAX_PAYLOAD_BYTES": 100}):
        validate_payload({"x": "a" * 90})
        with pytest.raises(ValidationError, match="MAX_PAYLOAD_BYTES") as info:
            validate_payload({"x": "a" * 100})
    assert info.value.field == "payload"


def test_validate_payload__size_counts_utf8_bytes_not_characters():
    overhead = len(json.dumps({"x": ""}, separators=(",", ":")))
    chars = (MAX_PAYLOAD_BYTES - overhead) // 2 + 1  # 2 bytes each in UTF-8
    assert _field(validate_payload, {"x": "é" * chars}) == "payload"


# --- priority --------------------------------------------------------------------------------


@pytest.mark.parametrize("priority", [0, 1, 128, 255, Priority.IDLE])
def test_validate_priority__in_range_is_accepted(priority):
    assert validate_priority(priority) == int(priority)


@pytest.mark.parametrize("priority", [-1, 256, 1000, True, False, 1.0, "1", None])
def test_validate_priority__out_of_range_or_not_int_is_rejected(priority):
    assert _field(validate_priority, priority) == "priority"


def test_priority__named_tiers_match_the_spec():
    assert (Priority.REALTIME, Priority.HIGH, Priority.NORMAL) == (0, 64, 128)
    assert (Priority.BACKGROUND, Priority.IDLE) == (192, 255)


def test_priority__tier_of_gives_highest_tier_not_above_value():
    assert Priority.tier_of(0) == Priority.REALTIME
    assert Priority.tier_of(100) == Priority.HIGH
    assert Priority.tier_of(200) == Priority.BACKGROUND
    assert Priority.tier_of(255) == Priority.IDLE


# --- tags ------------------------------------------------------------------------------------


def test_validate_tags__none_means_no_tags():
    assert validate_tags(None) == {}


def test_validate_tags__limits_are_inclusive():
    tags = {f"k{i}": "v" for i in range(31)}
    tags["x" * 64] = "y" * 256
    assert validate_tags(tags) == tags


def test_validate_tags__more_than_32_is_rejected():
    with pytest.raises(ValidationError, match="32") as info:
        validate_tags({f"k{i}": "v" for i in range(33)})
    assert info.value.field == "tags"


def test_validate_tags__key_over_64_chars_is_rejected():
    assert _field(validate_tags, {"k" * 65: "v"}) == "tags"


def test_validate_tags__value_over_256_chars_is_rejected():
    assert _field(validate_tags, {"k": "v" * 257}) == "tags"


@pytest.mark.parametrize(
    "tags",
    [{"k": 1}, {"k": None}, {1: "v"}, {"": "v"}, [("k", "v")], "k=v"],
    ids=["int-value", "none-value", "int-key", "empty-key", "list", "str"],
)
def test_validate_tags__non_string_or_non_mapping_is_rejected(tags):
    assert _field(validate_tags, tags) == "tags"


# --- other fields ----------------------------------------------------------------------------


def test_validate_run_after__naive_datetime_is_rejected():
    assert _field(validate_run_after, datetime(2030, 1, 1)) == "run_after"


def test_validate_run_after__negative_delay_is_rejected():
    assert _field(validate_run_after, timedelta(seconds=-1)) == "run_after"


@pytest.mark.parametrize("ids", [5, "1,2", [0], [-3], [True], ["1"]])
def test_validate_ids__anything_but_positive_int_list_is_rejected(ids):
    assert _field(validate_ids, "depends_on", ids) == "depends_on"


def test_io_budget__negative_bytes_are_rejected():
    assert _field(IoBudget.disk, -1, 0) == "read"
    assert _field(IoBudget.net, 0, -1) == "tx"


# --- dedup keys ------------------------------------------------------------------------------


def test_dedup_key__is_a_sha256_hex_digest():
    key = dedup_key("media::thumb", {"a": 1})
    assert len(key) == 64
    assert int(key, 16) >= 0


def test_dedup_key__ignores_key_order_at_every_level():
    a = dedup_key("media::thumb", {"b": 1, "a": {"y": [1, 2], "x": None}})
    b = dedup_key("media::thumb", {"a": {"x": None, "y": [1, 2]}, "b": 1})
    assert a == b


def test_dedup_key__payload_dict_and_its_canonical_text_agree():
    payload = {"b": 1, "a": "é"}
    assert dedup_key("m::t", payload) == dedup_key("m::t", validate_payload(payload))


def test_dedup_key__differs_by_payload_value():
    assert dedup_key("m::t", {"a": 1}) != dedup_key("m::t", {"a": 2})


def test_dedup_key__differs_by_task_type():
    assert dedup_key("m::a", {"x": 1}) != dedup_key("m::b", {"x": 1})


def test_dedup_key__explicit_key_ignores_payload():
    assert dedup_key("m::t", {"a": 1}, "k1") == dedup_key("m::t", {"a": 2}, "k1")


def test_dedup_key__explicit_key_is_scoped_by_task_type():
    assert dedup_key("m::a", None, "k1") != dedup_key("m::b", None, "k1")


def test_dedup_key__explicit_key_never_equals_a_payload_key():
    text = validate_payload({"a": 1})
    assert dedup_key("m::t", text) != dedup_key("m::t", None, text)


@pytest.mark.parametrize(
    ("value", "advice"),
    [
        (
            datetime(2024, 1, 1, tzinfo=UTC),
            "is of type datetime, which is not JSON-serializable: pass "
            "value.isoformat() and datetime.fromisoformat(text) in the task",
        ),
        (
            uuid.UUID(int=1),
            "is of type UUID, which is not JSON-serializable: pass str(value) and UUID(text)",
        ),
        (
            Decimal("1.50"),
            "is of type Decimal, which is not JSON-serializable: pass str(value) and "
            "Decimal(text) in the task (exact)",
        ),
        (Path("/srv/a.png"), "which is not JSON-serializable: pass str(value) and Path(text)"),
    ],
    ids=["datetime", "uuid", "decimal", "path"],
)
def test_validate_payload__django_json_values_are_refused_with_the_conversion(value, advice):
    with pytest.raises(ValidationError) as info:
        validate_payload({"job": {"inputs": [1, value]}})
    assert info.value.field == "payload"
    assert info.value.message.startswith("payload['job']['inputs'][1] ")
    assert advice in info.value.message
