"""Declaring domains and task types, and eager validation of submission options (no DB)."""

from __future__ import annotations

import inspect

import pytest
from django.test import override_settings

from taskmill_django import (
    Domain,
    DomainNotRegistered,
    Priority,
    RetryPolicy,
    ValidationError,
    registry,
    scheduler,
)
from taskmill_django.domain import SubmitOptions
from tests.testapp.tasks import echo, keyed, record

pytestmark = pytest.mark.usefixtures("isolated_registry")


def _noop(ctx, **payload):
    return None


def test_domain_task__type_is_qualified_with_domain():
    media = Domain("unit_media")
    thumb = media.task("thumbnail")(_noop)
    assert thumb.task_type == "unit_media::thumbnail"
    assert registry.get_task("unit_media::thumbnail") is thumb


def test_domain_task__name_defaults_to_function_name():
    media = Domain("unit_media")

    @media.task()
    def resize(ctx):
        return None

    assert resize.task_type == "unit_media::resize"


def test_domain_task__inherits_domain_defaults():
    media = Domain(
        "unit_media",
        default_priority=Priority.HIGH,
        default_group="disks",
        default_retry=RetryPolicy.constant(7, 1),
        default_tags={"team": "media"},
    )
    thumb = media.task("thumbnail")(_noop)
    assert (thumb.priority, thumb.group, thumb.max_retries) == (64, "disks", 7)
    assert thumb.tags == {"team": "media"}


def test_domain_task__own_options_override_domain_defaults():
    media = Domain("unit_media", default_priority=Priority.HIGH, default_tags={"team": "media"})
    thumb = media.task(
        "thumbnail", priority=Priority.IDLE, retry=RetryPolicy.constant(1), tags={"kind": "img"}
    )(_noop)
    assert (thumb.priority, thumb.max_retries) == (255, 1)
    assert thumb.tags == {"team": "media", "kind": "img"}


def test_domain_task__max_retries_defaults_to_setting():
    thumb = Domain("unit_media").task("thumbnail")(_noop)
    assert thumb.max_retries == 3
    with override_settings(TASKMILL={"MAX_RETRIES": 9}):
        assert thumb.max_retries == 9


def test_domain__declared_twice_is_an_error():
    Domain("unit_twice")
    with pytest.raises(ValueError, match="declared twice"):
        Domain("unit_twice")


def test_domain_task__two_functions_for_one_type_is_an_error():
    media = Domain("unit_media")

    @media.task("thumbnail")
    def first(ctx):
        return None

    with pytest.raises(ValueError, match="declared twice"):

        @media.task("thumbnail")
        def second(ctx):
            return None


def test_domain_task__same_function_name_in_two_modules_is_an_error():
    media = Domain("unit_media")

    def thumbnail(ctx):
        return None

    def other_thumbnail(ctx):
        return None

    other_thumbnail.__qualname__ = thumbnail.__qualname__
    other_thumbnail.__module__ = "someone_elses_app.tasks"
    media.task("thumbnail")(thumbnail)
    with pytest.raises(ValueError, match="declared twice"):
        media.task("thumbnail")(other_thumbnail)


@pytest.mark.parametrize("name", ["", "a::b", 3, "x" * 101])
def test_domain__bad_name_is_rejected(name):
    with pytest.raises(ValidationError) as info:
        Domain(name)
    assert info.value.field == "name"


def test_domain_task__bad_task_name_is_rejected():
    with pytest.raises(ValidationError) as info:
        Domain("unit_media").task("a::b")(_noop)
    assert info.value.field == "name"


@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_domain__bad_max_concurrency_is_rejected(value):
    with pytest.raises(ValidationError) as info:
        Domain("unit_media", max_concurrency=value)
    assert info.value.field == "max_concurrency"


def test_domain__bad_default_priority_is_rejected():
    with pytest.raises(ValidationError) as info:
        Domain("unit_media", default_priority=256)
    assert info.value.field == "priority"


def test_domain__too_many_default_tags_are_rejected():
    with pytest.raises(ValidationError) as info:
        Domain("unit_media", default_tags={f"k{i}": "v" for i in range(33)})
    assert info.value.field == "tags"


def test_domain_task__bad_duplicate_strategy_is_rejected():
    with pytest.raises(ValidationError) as info:
        Domain("unit_media").task("t", duplicate="ignore")(_noop)
    assert info.value.field == "duplicate"


# --- using() options, validated before any database access ---------------------------------


def test_using__unknown_option_names_the_field():
    with pytest.raises(ValidationError, match="allowed:") as info:
        record.using(priorty=1)
    assert info.value.field == "priorty"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("priority", 256),
        ("priority", True),
        ("tags", {"k": 1}),
        ("depends_on", [0]),
        ("on_dependency_failure", "explode"),
        ("duplicate", "ignore"),
        ("ttl", -1),
        ("ttl_from", "never"),
        ("fail_fast", "yes"),
        ("group", ""),
        ("key", ""),
        ("max_retries", -1),
        ("expected_io", {"read_bytes": 1}),
        ("run_after", 10),
    ],
)
def test_using__bad_value_names_the_field(option, value):
    with pytest.raises(ValidationError) as info:
        record.using(**{option: value})
    assert info.value.field == option


def test_submit__payload_not_json_is_rejected_before_the_database():
    with pytest.raises(ValidationError) as info:
        echo.submit(value={1, 2})
    assert info.value.field == "payload"


def test_submit__payload_not_fitting_key_function_is_rejected():
    with pytest.raises(ValidationError) as info:
        keyed.submit(path="a.png")
    assert info.value.field == "payload"


def test_submit__payload_not_fitting_task_function_is_rejected():
    with pytest.raises(ValidationError, match="tests::echo") as info:
        echo.submit(valu=1)
    assert info.value.field == "payload"


def test_submit_batch__payload_not_fitting_task_function_names_its_index():
    with pytest.raises(ValidationError) as info:
        echo.submit_batch([{"value": 1}, {"value": 2, "extra": 3}])
    assert info.value.field == "payloads[1].payload"


def test_submit__key_function_returning_non_string_is_rejected():
    media = Domain("unit_media")
    thumb = media.task("thumbnail", key=lambda n: n)(_noop)
    with pytest.raises(ValidationError) as info:
        thumb.submit(n=5)
    assert info.value.field == "key"


def test_submit_batch__single_dict_instead_of_list_is_rejected():
    with pytest.raises(ValidationError) as info:
        record.submit_batch({"n": 1})
    assert info.value.field == "payloads"


def test_submit_batch__bad_payload_field_names_its_index():
    with pytest.raises(ValidationError) as info:
        echo.submit_batch([{"value": 1}, {"value": 2}, {"value": {1}}])
    assert info.value.field == "payloads[2].payload"


# --- scheduler.domain() ---------------------------------------------------------------------


def test_scheduler_domain__unknown_domain_raises():
    with pytest.raises(DomainNotRegistered, match="nope"):
        scheduler.domain("nope")


def test_scheduler_try_domain__unknown_domain_is_none():
    assert scheduler.try_domain("nope") is None


def test_scheduler_domain__known_domain_gives_scoped_handle():
    assert scheduler.domain("tests").name == "tests"
    assert scheduler.try_domain("other").name == "other"


def _plain(ctx, a, b=1): ...
def _keyword_only(ctx, *, a, b=1): ...
def _any_name(ctx, a, **rest): ...
def _star_args(ctx, *args, a): ...
def _positional_only(ctx, a, /, b=1): ...
def _positional_only_default(ctx, a=0, /, *, b): ...
def _no_ctx(): ...
def _keyword_ctx(*, ctx, a): ...


@pytest.mark.parametrize(
    "func",
    [
        _plain,
        _keyword_only,
        _any_name,
        _star_args,
        _positional_only,
        _positional_only_default,
        _no_ctx,
        _keyword_ctx,
    ],
)
@pytest.mark.parametrize(
    "payload",
    [{}, {"a": 1}, {"a": 1, "b": 2}, {"b": 2}, {"a": 1, "c": 3}, {"ctx": 1, "a": 1}, {"rest": 1}],
)
def test_submit__payload_check_agrees_with_python_binding(isolated_registry, func, payload):
    # Submission checks payload names against the function without calling
    # Signature.bind when they fit; that shortcut must accept exactly what binding accepts.
    definition = Domain("shapes").task(name=func.__name__.strip("_"))(func)
    try:
        inspect.signature(func).bind(None, **payload)
        binds = True
    except TypeError:
        binds = False

    if binds:
        definition.build(payload, SubmitOptions())
    else:
        with pytest.raises(ValidationError, match="does not fit"):
            definition.build(payload, SubmitOptions())


def test_timeout__declared_on_the_task_and_overridden_per_submission():
    from datetime import timedelta

    media = Domain("unit_limits")
    slow = media.task("slow", timeout=timedelta(minutes=2))(_noop)

    assert slow.build({}, SubmitOptions()).timeout_seconds == 120.0
    assert slow.build({}, slow.using(timeout=5).options).timeout_seconds == 5.0
    assert media.task("free")(_noop).build({}, SubmitOptions()).timeout_seconds is None


@pytest.mark.parametrize("value", [0, -1, "10", True])
def test_timeout__not_a_positive_duration_is_refused_naming_the_field(value):
    media = Domain("unit_bad_limits")
    with pytest.raises(ValidationError) as caught:
        media.task("t", timeout=value)(_noop)
    assert caught.value.field == "timeout"
    with pytest.raises(ValidationError) as caught:
        record.using(timeout=value)
    assert caught.value.field == "timeout"
