"""Masking of sensitive payload values: declared paths, SENSITIVE_KEYS names, free text."""

from __future__ import annotations

import doctest

import pytest
from django.test import override_settings

import taskmill_django.redaction
from taskmill_django import Domain, ValidationError
from taskmill_django.context import TaskContext
from taskmill_django.models import Task
from taskmill_django.redaction import MASK, mask_json, mask_payload, mask_text
from tests.settings import TASKMILL

CHARGE = "tests::charge"  # sensitive=("card.number", "pin") in tests/testapp/tasks.py
PAYLOAD = {
    "card": {"number": "4111111111111111", "holder": "Ann Smith"},
    "pin": "9876",
    "api_key": "sk_live_abc123",
    "amount": 250,
}


def test_doctests__redaction_examples_hold():
    result = doctest.testmod(taskmill_django.redaction)
    assert result.attempted > 0
    assert result.failed == 0


def test_mask_payload__declared_paths_and_sensitive_names_are_masked():
    assert mask_payload(PAYLOAD, CHARGE) == {
        "card": {"number": MASK, "holder": "Ann Smith"},
        "pin": MASK,
        "api_key": MASK,
        "amount": 250,
    }


def test_mask_payload__leaves_the_original_untouched():
    original = {"card": {"number": "4111111111111111"}, "pin": "9876"}
    mask_payload(original, CHARGE)
    assert original == {"card": {"number": "4111111111111111"}, "pin": "9876"}


def test_mask_payload__paths_run_through_lists():
    payload = {"card": [{"number": "4111"}, {"number": "5500", "holder": "Bo"}], "pin": "1"}
    assert mask_payload(payload, CHARGE) == {
        "card": [{"number": MASK}, {"number": MASK, "holder": "Bo"}],
        "pin": MASK,
    }


def test_mask_payload__a_sensitive_object_is_masked_whole():
    payload = {"credentials": {"user": "ann", "otp": "123456"}}
    assert mask_payload(payload, "tests::noop") == {"credentials": MASK}


@pytest.mark.parametrize("key", ["password", "DB_PASSWORD", "smtp-password", "X-Api-Key"])
def test_mask_payload__default_names_match_anywhere_in_a_key_ignoring_case(key):
    assert mask_payload({"nested": {key: "s3cret!"}}, "tests::noop") == {"nested": {key: MASK}}


def test_mask_payload__unknown_task_type_still_masks_sensitive_names():
    assert mask_payload({"token": "abc", "n": 1}, "gone::away") == {"token": MASK, "n": 1}


def test_mask_payload__sensitive_keys_setting_replaces_the_defaults():
    with override_settings(TASKMILL={**TASKMILL, "SENSITIVE_KEYS": ["iban"]}):
        masked = mask_payload({"iban": "DE89", "password": "pw"}, "tests::noop")
    assert masked == {"iban": MASK, "password": "pw"}


def test_mask_payload__empty_sensitive_keys_masks_only_declared_paths():
    with override_settings(TASKMILL={**TASKMILL, "SENSITIVE_KEYS": []}):
        assert mask_payload({"password": "pw"}, "tests::noop") == {"password": "pw"}
        assert mask_payload(PAYLOAD, CHARGE)["pin"] == MASK


def test_mask_text__values_of_the_payload_are_masked_wherever_they_appear():
    error = f"ValueError: card declined: card={PAYLOAD['card']!r} pin 9876 via sk_live_abc123"
    masked = mask_text(error, CHARGE, PAYLOAD)
    for secret in ("4111111111111111", "9876", "sk_live_abc123"):
        assert secret not in masked
    assert "Ann Smith" in masked
    assert masked.startswith("ValueError: card declined:")


def test_mask_text__escaped_spellings_are_masked_too():
    payload = {"password": 'quo"te\\back'}
    assert mask_text('{"password_again": "quo\\"te\\\\back"}', "tests::noop", payload) == (
        '{"password_again": "' + MASK + '"}'
    )
    assert "quo" not in mask_text(repr(payload["password"]), "tests::noop", payload)


def test_mask_text__name_value_pairs_are_masked_without_the_payload():
    text = "login password=hunter22&user=ann; {'api_key': 'k-123'} Authorization: Bearer abc.def"
    assert mask_text(text, "tests::noop") == (
        f"login password={MASK}&user=ann; {{'api_key': '{MASK}'}} Authorization: {MASK}"
    )


def test_mask_text__code_in_a_traceback_is_left_readable():
    line = '    password = kwargs["password"]'
    assert mask_text(line, "tests::noop") == line


def test_mask_text__very_short_values_are_not_searched_for():
    assert mask_text("took 12 ms", "tests::noop", {"pin": "12"}) == "took 12 ms"


def test_mask_json__results_mask_sensitive_names_and_payload_values():
    result = {"charged": 250, "receipt": {"api_key": "sk_live_abc123"}, "note": "pin 9876"}
    assert mask_json(result, CHARGE, PAYLOAD) == {
        "charged": 250,
        "receipt": {"api_key": MASK},
        "note": f"pin {MASK}",
    }


def test_sensitive_option__is_kept_on_the_definition(isolated_registry):
    domain = Domain("redact_probe")

    @domain.task("t", sensitive=["a.b", "c"])
    def t(ctx, **payload): ...

    assert t.sensitive == ("a.b", "c")
    assert mask_payload({"a": {"b": 1, "x": 2}, "c": 3}, "redact_probe::t") == {
        "a": {"b": MASK, "x": 2},
        "c": MASK,
    }


@pytest.mark.parametrize("bad", ["password", ["a..b"], [""], [3], None])
def test_sensitive_option__bad_paths_are_a_validation_error(isolated_registry, bad):
    domain = Domain("redact_bad")
    with pytest.raises(ValidationError) as info:
        domain.task("t", sensitive=bad)
    assert info.value.field == "sensitive"


def test_progress_message__is_masked_as_it_is_reported():
    ctx = TaskContext(Task(id=1, task_type=CHARGE, payload=PAYLOAD), None)
    ctx.progress.report(0.5, "charging 4111111111111111 token=abc123")
    assert ctx.progress.message == f"charging {MASK} token={MASK}"
    assert ctx.record.payload["card"]["number"] == "4111111111111111"
