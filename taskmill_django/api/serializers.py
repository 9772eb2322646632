"""Serializers: parse request bodies into core arguments, present core results as JSON.

Input serializers check JSON types and bounds only; the rules themselves (known task type,
payload size, tag limits, dependency existence, ...) are the core's, raised as
``taskmill_django.ValidationError`` and answered as 400s by ``errors.exception_handler``.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from .. import registry
from ..cron import RecurringSchedule
from ..domain import SubmitOptions, TaskDefinition
from ..enums import (
    DependencyFailurePolicy,
    DuplicateStrategy,
    OutcomeKind,
    TaskStatus,
    TtlFrom,
)
from ..exceptions import ValidationError
from ..models import Task, TaskHistory
from ..records import IoBudget
from ..redaction import mask_json, mask_payload, mask_text
from ..validation import MAX_GROUP, MAX_LABEL, MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS
from .fields import (
    MAX_ID,
    MAX_INT32,
    MAX_SECONDS,
    AnyJson,
    Boolean,
    Integer,
    JsonObject,
    Mapping,
    Number,
    RunAfter,
    StringMap,
    Tags,
    TaskType,
    Text,
    string_map,
)

MAX_BULK = 1000


class StrictSerializer(serializers.Serializer):
    """Rejects fields it does not know (a typo such as ``prioirty`` is a 400, not ignored)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(name) for name in set(data) - set(self.fields))
            if unknown:
                allowed = ", ".join(self.fields)
                raise serializers.ValidationError(
                    {name: [f"unknown field; allowed: {allowed}"] for name in unknown}
                )
        return super().to_internal_value(data)


# --- submission -----------------------------------------------------------------------------


class IoBudgetInputSerializer(StrictSerializer):
    read_bytes = Integer(required=False, default=0, min_value=0, max_value=MAX_ID)
    write_bytes = Integer(required=False, default=0, min_value=0, max_value=MAX_ID)
    net_rx_bytes = Integer(required=False, default=0, min_value=0, max_value=MAX_ID)
    net_tx_bytes = Integer(required=False, default=0, min_value=0, max_value=MAX_ID)


class RecurringInputSerializer(StrictSerializer):
    """Exactly one of ``interval`` (seconds) and ``cron`` (five fields, in ``timezone``)."""

    interval = Number(required=False, allow_null=True, min_value=0.001, max_value=MAX_SECONDS)
    cron = Text(required=False, allow_null=True, max_length=200)
    timezone = Text(required=False, allow_null=True, max_length=64)
    initial_delay = Number(required=False, allow_null=True, min_value=0, max_value=MAX_SECONDS)
    max_occurrences = Integer(required=False, allow_null=True, min_value=1, max_value=MAX_INT32)
    catch_up = Boolean(required=False)


class SubmitSerializer(StrictSerializer):
    """``POST tasks/``: a task type, its payload, and any option of ``using()``."""

    task_type = TaskType(max_length=200, help_text="Qualified task type, 'domain::name'.")
    payload = JsonObject(required=False, help_text="Keyword arguments of the task function.")
    priority = Integer(required=False, allow_null=True, min_value=0, max_value=255)
    run_after = RunAfter(required=False, allow_null=True)
    key = Text(required=False, allow_null=True, min_length=1, max_length=1024)
    # A declared field: DRF takes it off the class, so no attribute clashes.
    label = Text(required=False, allow_null=True, allow_blank=True, max_length=MAX_LABEL)  # type: ignore[assignment]
    tags = StringMap(
        required=False,
        allow_null=True,
        max_key=MAX_TAG_KEY,
        max_value=MAX_TAG_VALUE,
        max_items=MAX_TAGS,
    )
    depends_on = serializers.ListField(
        child=Integer(min_value=1, max_value=MAX_ID), required=False, max_length=MAX_BULK
    )
    on_dependency_failure = serializers.ChoiceField(DependencyFailurePolicy.choices, required=False)
    # A declared field: DRF takes it off the class, so no attribute clashes.
    parent = Integer(required=False, allow_null=True, min_value=1, max_value=MAX_ID)  # type: ignore[assignment]
    fail_fast = Boolean(required=False)
    group = Text(required=False, allow_null=True, min_length=1, max_length=MAX_GROUP)
    ttl = Number(required=False, allow_null=True, min_value=0, max_value=MAX_SECONDS)
    ttl_from = serializers.ChoiceField(TtlFrom.choices, required=False)
    timeout = Number(required=False, allow_null=True, min_value=0.001, max_value=MAX_SECONDS)
    duplicate = serializers.ChoiceField(DuplicateStrategy.choices, required=False, allow_null=True)
    max_retries = Integer(required=False, allow_null=True, min_value=0, max_value=MAX_INT32)
    expected_io = IoBudgetInputSerializer(required=False, allow_null=True)
    recurring = RecurringInputSerializer(required=False, allow_null=True)

    def validate_task_type(self, value: str) -> str:
        try:
            registry.get_task(value)
        except ValidationError as exc:
            raise serializers.ValidationError(exc.message) from None
        return value

    def validate_payload(self, value: dict[str, Any]) -> dict[str, Any]:
        if "self" in value:
            # ``submit(**payload)`` is a bound method: "self" cannot be passed as a keyword.
            raise serializers.ValidationError("the key 'self' is reserved")
        return value

    def validate_recurring(self, value: dict[str, Any] | None) -> RecurringSchedule | None:
        if value is None:
            return None
        try:
            return RecurringSchedule(
                interval=value.get("interval"),
                cron=value.get("cron"),
                timezone=value.get("timezone"),
                initial_delay=value.get("initial_delay"),
                max_occurrences=value.get("max_occurrences"),
                catch_up=value.get("catch_up", False),
            )
        except ValidationError as exc:
            if exc.field == "recurring":
                raise serializers.ValidationError(exc.message) from None
            raise serializers.ValidationError({exc.field: [exc.message]}) from None

    def validate_expected_io(self, value: dict[str, int] | None) -> IoBudget | None:
        return None if value is None else IoBudget(**value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("recurring") is not None and attrs.get("key") is None:
            # Over HTTP a retried request must not create a second schedule: the key names it,
            # and submitting the same name again is a duplicate.
            raise serializers.ValidationError(
                {"key": ["required with recurring: it names the schedule"]}
            )
        return attrs

    def submission(self) -> tuple[TaskDefinition, dict[str, Any], dict[str, Any]]:
        """(task definition, ``using()`` options, payload) of the validated body. Options left
        out or null take the task's defaults."""
        data = dict(self.validated_data)
        definition = registry.get_task(data.pop("task_type"))
        payload = data.pop("payload", None) or {}
        options = {k: v for k, v in data.items() if v is not None}
        return definition, options, payload


# Every option of using() is accepted above; this fails at import if they drift apart.
_MISSING = set(SubmitOptions.__dataclass_fields__) - set(SubmitSerializer._declared_fields)
if _MISSING:  # pragma: no cover - a guard for whoever adds an option to using()
    raise ImportError(f"SubmitSerializer lacks the using() options {sorted(_MISSING)}")


class SubmitOutcomeSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(OutcomeKind.choices, read_only=True)
    id = serializers.IntegerField(read_only=True, allow_null=True)
    group_paused = serializers.BooleanField(read_only=True)
    replaced_id = serializers.IntegerField(read_only=True, allow_null=True)
    schedule_id = serializers.IntegerField(read_only=True, allow_null=True)


# --- tasks and history ----------------------------------------------------------------------


class RedactedRowMixin:
    """Shows a task or history row as a person may see it: its payload through
    ``redaction.mask_payload``, texts that may echo the payload through ``mask_text``, its
    result through ``mask_json``. The row itself keeps the real values."""

    TEXTS = ("label", "progress_message", "last_error", "traceback")

    def to_representation(self, instance: Any) -> Any:
        data = super().to_representation(instance)  # type: ignore[misc]
        task_type, payload = instance.task_type, instance.payload
        data["payload"] = mask_payload(payload, task_type)
        for name in self.TEXTS:
            if data.get(name):
                data[name] = mask_text(data[name], task_type, payload)
        if data.get("result") is not None:
            data["result"] = mask_json(data["result"], task_type, payload)
        return data


class TaskSerializer(RedactedRowMixin, serializers.ModelSerializer):
    tags = Tags()
    effective_priority = serializers.IntegerField(
        read_only=True, help_text="The priority dispatch uses: priority after aging."
    )

    class Meta:
        model = Task
        fields = (
            "id",
            "task_type",
            "domain",
            "key",
            "label",
            "priority",
            "effective_priority",
            "status",
            "payload",
            "group_key",
            "tags",
            "parent_id",
            "fail_fast",
            "on_dependency_failure",
            "retry_count",
            "max_retries",
            "rescue_count",
            "last_error",
            "run_after",
            "ttl_seconds",
            "ttl_from",
            "expires_at",
            "timeout_seconds",
            "created_at",
            "started_at",
            "first_started_at",
            "worker_id",
            "cancel_reason",
            "has_requeue",
            "pause_reason",
            "paused_at",
            "paused_seconds",
            "progress",
            "progress_message",
            "progress_at",
            "progress_bytes_done",
            "progress_bytes_total",
            "read_bytes",
            "write_bytes",
            "net_rx_bytes",
            "net_tx_bytes",
            "expected_read_bytes",
            "expected_write_bytes",
            "expected_net_rx_bytes",
            "expected_net_tx_bytes",
            "has_children",
        )
        read_only_fields = fields


class HistorySerializer(RedactedRowMixin, serializers.ModelSerializer):
    tags = Tags()
    result = AnyJson(read_only=True, allow_null=True)

    class Meta:
        model = TaskHistory
        fields = (
            "id",
            "task_type",
            "domain",
            "key",
            "label",
            "priority",
            "status",
            "payload",
            "group_key",
            "tags",
            "parent_id",
            "retry_count",
            "max_retries",
            "rescue_count",
            "last_error",
            "traceback",
            "result",
            "created_at",
            "started_at",
            "finished_at",
            "duration_ms",
            "read_bytes",
            "write_bytes",
            "net_rx_bytes",
            "net_tx_bytes",
            "worker_id",
            "retried_at",
            "retried_as_id",
        )
        read_only_fields = fields


class PrioritySerializer(StrictSerializer):
    priority = Integer(min_value=0, max_value=255, help_text="0 runs first, 255 last.")


class TaskActionSerializer(serializers.Serializer):
    """What a task action did: ``changed`` is false when there was nothing to do."""

    id = serializers.IntegerField(read_only=True)
    changed = serializers.BooleanField(read_only=True)
    status = serializers.CharField(read_only=True, help_text="Active or terminal status now.")
    message = serializers.CharField(read_only=True)


class RelatedTaskSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    task_type = serializers.CharField(read_only=True, allow_null=True)
    status = serializers.CharField(read_only=True, allow_null=True)
    is_active = serializers.BooleanField(read_only=True)


class ReasonSerializer(serializers.Serializer):
    code = serializers.CharField(read_only=True)
    message = serializers.CharField(read_only=True)
    # A declared field: DRF takes it off the class, so no attribute clashes.
    data = Mapping(string_map())  # type: ignore[assignment]


class ExplainSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    status = serializers.CharField(read_only=True)
    reasons = ReasonSerializer(many=True, read_only=True)


# --- dead letters ---------------------------------------------------------------------------


class BulkRetrySerializer(StrictSerializer):
    """Either ``ids`` or ``all_matching: true`` (with the list's filters in the query)."""

    ids = serializers.ListField(
        child=Integer(min_value=1, max_value=MAX_ID),
        required=False,
        min_length=1,
        max_length=MAX_BULK,
    )
    all_matching = Boolean(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if bool(attrs.get("ids")) == bool(attrs.get("all_matching")):
            raise serializers.ValidationError(
                {"ids": ["give either ids or all_matching: true (with filters in the query)"]}
            )
        return attrs


class BulkRetryItemSerializer(serializers.Serializer):
    history_id = serializers.IntegerField(read_only=True)
    kind = serializers.ChoiceField(OutcomeKind.choices, read_only=True, allow_null=True)
    id = serializers.IntegerField(read_only=True, allow_null=True)
    error = serializers.CharField(read_only=True, allow_null=True)


class BulkRetryResultSerializer(serializers.Serializer):
    retried = serializers.IntegerField(read_only=True)
    failed = serializers.IntegerField(read_only=True)
    results = BulkRetryItemSerializer(many=True, read_only=True)


# --- cluster views --------------------------------------------------------------------------


class RunningTaskSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    task_type = serializers.CharField(read_only=True)
    # A declared field: DRF takes it off the class, so no attribute clashes.
    label = serializers.CharField(read_only=True, allow_blank=True)  # type: ignore[assignment]
    priority = serializers.IntegerField(read_only=True)
    worker_id = serializers.CharField(read_only=True, allow_null=True)
    started_at = serializers.DateTimeField(read_only=True, allow_null=True)
    progress = serializers.FloatField(read_only=True, allow_null=True)
    progress_message = serializers.CharField(read_only=True, allow_blank=True)
    effective_priority = serializers.IntegerField(read_only=True, allow_null=True)


class EstimatedProgressSerializer(serializers.Serializer):
    task_id = serializers.IntegerField(read_only=True)
    task_type = serializers.CharField(read_only=True)
    reported_percent = serializers.FloatField(read_only=True, allow_null=True)
    extrapolated_percent = serializers.FloatField(read_only=True, allow_null=True)
    percent = serializers.FloatField(read_only=True)
    is_overdue = serializers.BooleanField(read_only=True)


class PausedGroupSerializer(serializers.Serializer):
    group = serializers.CharField(read_only=True)
    paused_at = serializers.DateTimeField(read_only=True)
    paused_until = serializers.DateTimeField(read_only=True, allow_null=True)
    paused_count = serializers.IntegerField(read_only=True)
    pending_count = serializers.IntegerField(read_only=True)


class WorkerSerializer(serializers.Serializer):
    id = serializers.CharField(read_only=True)
    name = serializers.CharField(read_only=True)
    hostname = serializers.CharField(read_only=True)
    pid = serializers.IntegerField(read_only=True)
    concurrency = serializers.IntegerField(read_only=True)
    claim_ahead = serializers.IntegerField(read_only=True)
    running_count = serializers.IntegerField(read_only=True)
    heartbeat_age_seconds = serializers.FloatField(read_only=True)
    is_alive = serializers.BooleanField(read_only=True)
    io = Mapping(
        {
            "type": "object",
            "nullable": True,
            "description": "IO throughput measured on the worker's machine, per direction.",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "rate": {"type": "number"},
                    "capacity": {"type": "number", "nullable": True},
                    "saturated": {"type": "boolean"},
                    "budget": {"type": "integer", "nullable": True},
                },
            },
        },
        allow_null=True,
    )


class WorkerDetailSerializer(WorkerSerializer):
    domains = serializers.ListField(child=serializers.CharField(), read_only=True, allow_null=True)
    status = serializers.CharField(read_only=True)
    started_at = serializers.DateTimeField(read_only=True)


class RecurringSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True, allow_null=True)
    task_type = serializers.CharField(read_only=True)
    interval_seconds = serializers.FloatField(read_only=True, allow_null=True)
    cron = serializers.CharField(read_only=True, allow_null=True)
    timezone = serializers.CharField(read_only=True)
    next_run_at = serializers.DateTimeField(read_only=True, allow_null=True)
    occurrences = serializers.IntegerField(read_only=True)
    remaining = serializers.IntegerField(read_only=True, allow_null=True)
    skipped = serializers.IntegerField(read_only=True)
    is_paused = serializers.BooleanField(read_only=True)
    is_declarative = serializers.BooleanField(read_only=True)


_RATE = {
    "type": "object",
    "properties": {
        "rate": {"type": "number"},
        "burst": {"type": "number"},
        "tokens": {"type": "number", "nullable": True},
    },
}


class SnapshotSerializer(serializers.Serializer):
    running = RunningTaskSerializer(many=True, read_only=True)
    pending_count = serializers.IntegerField(read_only=True)
    running_count = serializers.IntegerField(read_only=True)
    paused_count = serializers.IntegerField(read_only=True)
    blocked_count = serializers.IntegerField(read_only=True)
    waiting_count = serializers.IntegerField(read_only=True)
    max_concurrency = serializers.IntegerField(read_only=True, allow_null=True)
    is_paused = serializers.BooleanField(read_only=True)
    counts_by_domain = Mapping(string_map(string_map({"type": "integer"})))
    workers = WorkerSerializer(many=True, read_only=True)
    paused_groups = PausedGroupSerializer(many=True, read_only=True)
    pressure = serializers.FloatField(read_only=True)
    pressure_breakdown = Mapping(string_map({"type": "number"}))
    recurring = RecurringSerializer(many=True, read_only=True)
    aging = Mapping({"type": "object", "nullable": True}, allow_null=True)
    group_allocations = Mapping(string_map({"type": "integer"}))
    rate_limits = Mapping(string_map(_RATE))
    progress = EstimatedProgressSerializer(many=True, read_only=True)


class DomainSerializer(serializers.Serializer):
    name = serializers.CharField(read_only=True)
    max_concurrency = serializers.IntegerField(read_only=True, allow_null=True)
    default_priority = serializers.IntegerField(read_only=True)
    default_group = serializers.CharField(read_only=True, allow_null=True)
    task_types = serializers.ListField(child=serializers.CharField(), read_only=True)


class TypeStatsSerializer(serializers.Serializer):
    task_type = serializers.CharField(read_only=True)
    count = serializers.IntegerField(read_only=True)
    avg_duration_ms = serializers.FloatField(read_only=True)
    avg_read_bytes = serializers.FloatField(read_only=True)
    avg_write_bytes = serializers.FloatField(read_only=True)
    failure_rate = serializers.FloatField(read_only=True)
    avg_throughput = serializers.FloatField(
        read_only=True, help_text="Bytes per second (read + write) over the newest completed runs."
    )


class StatsSerializer(serializers.Serializer):
    results = TypeStatsSerializer(many=True, read_only=True)


class GroupSerializer(serializers.Serializer):
    name = serializers.CharField(read_only=True)
    counts = Mapping(string_map({"type": "integer"}), help_text="Active tasks per status.")
    limit = serializers.IntegerField(read_only=True, allow_null=True)
    is_paused = serializers.BooleanField(read_only=True)
    paused_until = serializers.DateTimeField(read_only=True, allow_null=True)
    rate_limit = Mapping({**_RATE, "nullable": True}, allow_null=True)
    weight = serializers.FloatField(read_only=True, allow_null=True)


class GroupPauseSerializer(StrictSerializer):
    until = serializers.DateTimeField(required=False, allow_null=True)


class GroupLimitSerializer(StrictSerializer):
    limit = Integer(min_value=1, max_value=MAX_INT32)


class GroupWeightSerializer(StrictSerializer):
    weight = Number(min_value=0.001, max_value=1_000_000)


class RateLimitInputSerializer(StrictSerializer):
    """``rate`` starts per ``per`` (second or minute), in bursts of up to ``burst``."""

    rate = Number(min_value=0.001, max_value=1_000_000)
    per = serializers.ChoiceField(["second", "minute"], required=False, default="second")
    burst = Number(required=False, allow_null=True, min_value=1, max_value=1_000_000)


class ScheduleCancelledSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    cancelled = serializers.BooleanField(read_only=True)


# --- query parameters (others are refused by TaskmillAPIMixin.check_query_parameters) ------


class QuerySerializer(serializers.Serializer):
    """Query parameters: an empty value for a choice is an error, not "absent"."""

    def to_internal_value(self, data: Any) -> Any:
        empty = [
            name
            for name, f in self.fields.items()
            if isinstance(f, serializers.ChoiceField) and data.get(name) == ""
        ]
        if empty:
            raise serializers.ValidationError({name: ["must not be empty"] for name in empty})
        return super().to_internal_value(data)


class StatsQuerySerializer(QuerySerializer):
    task_type = Text(
        required=False, max_length=200, help_text="One task type; default: every declared one."
    )


class TagKeysQuerySerializer(QuerySerializer):
    prefix = Text(required=False, default="", allow_blank=True, max_length=64)
    domain = Text(required=False, max_length=100)


class TagValuesQuerySerializer(QuerySerializer):
    key = Text(max_length=64)
    domain = Text(required=False, max_length=100)


class TagCountsQuerySerializer(TagValuesQuerySerializer):
    status = serializers.ChoiceField(TaskStatus.choices, required=False)


class RecurringQuerySerializer(QuerySerializer):
    domain = Text(required=False, max_length=100)
    task_type = Text(required=False, max_length=200)


class TagKeysSerializer(serializers.Serializer):
    keys = serializers.ListField(child=serializers.CharField(), read_only=True)


class TagValuesSerializer(serializers.Serializer):
    key = serializers.CharField(read_only=True)
    values = serializers.ListField(child=serializers.CharField(), read_only=True)


class TagCountsSerializer(serializers.Serializer):
    key = serializers.CharField(read_only=True)
    status = serializers.CharField(read_only=True, allow_null=True)
    counts = Mapping(string_map({"type": "integer"}))
