"""Cluster endpoints: snapshots, domains, stats, tags, recurring schedules, groups, workers."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from typing import Any

from django.db.models import Count, Q
from django.db.models.functions import Now
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from .. import access, registry, scheduler
from ..exceptions import TaskNotFound
from ..models import PausedGroup, RateBucket, Task, Worker
from ..policy import config
from ..policy.ratelimit import RateLimit
from ..read import queries
from ..read.snapshot import worker_infos
from ..store.control import load_policy
from ..validation import validate_group
from .base import TaskmillAPIView, TaskmillViewSet
from .fields import text_problem
from .schema import TaskmillAutoSchema, documented
from .serializers import (
    DomainSerializer,
    GroupLimitSerializer,
    GroupPauseSerializer,
    GroupSerializer,
    GroupWeightSerializer,
    RateLimitInputSerializer,
    RecurringQuerySerializer,
    RecurringSerializer,
    ScheduleCancelledSerializer,
    SnapshotSerializer,
    StatsQuerySerializer,
    StatsSerializer,
    TagCountsQuerySerializer,
    TagCountsSerializer,
    TagKeysQuerySerializer,
    TagKeysSerializer,
    TagValuesQuerySerializer,
    TagValuesSerializer,
    WorkerDetailSerializer,
)


def _query(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    """Validated query parameters; a bad one is a 400 naming it."""
    query = serializer_class(data=request.query_params)
    query.is_valid(raise_exception=True)
    data = dict(query.validated_data)
    domain = data.get("domain")
    if domain is not None and registry.find_domain(domain) is None:
        raise serializers.ValidationError({"domain": [f"no domain named {domain!r}"]})
    return data


# Running tasks a snapshot lists (the longest-running ones); running_count counts them all.
SNAPSHOT_RUNNING = 100


class SnapshotView(TaskmillAPIView):
    """``snapshot/``: the whole cluster at a glance (``scheduler.snapshot()``)."""

    schema = TaskmillAutoSchema(tags=["cluster"])
    needs = {"get": access.READ_TASKS}  # noqa: RUF012

    @documented(
        "getSnapshot", response=SnapshotSerializer,
        description=f"Counts, limits, workers and schedules; running lists the "
        f"{SNAPSHOT_RUNNING} longest-running tasks (running_count counts all), without "
        "payloads.",
    )  # fmt: skip
    def get(self, request: Request) -> Response:
        snapshot = scheduler.snapshot(running_limit=SNAPSHOT_RUNNING)
        return Response(SnapshotSerializer(snapshot).data)


class StatsView(TaskmillAPIView):
    """``stats/?task_type=``: history statistics per task type."""

    schema = TaskmillAutoSchema(tags=["cluster"])
    needs = {"get": access.READ_HISTORY}  # noqa: RUF012

    @documented(
        "getStats", response=StatsSerializer, query=StatsQuerySerializer,
        description="Count, average duration and IO, failure rate and throughput from history, "
        "for one task type or for every declared one.",
    )  # fmt: skip
    def get(self, request: Request) -> Response:
        task_type = _query(StatsQuerySerializer, request).get("task_type")
        types = [task_type] if task_type else [t.task_type for t in registry.all_tasks()]
        store = scheduler.store()
        results = [
            {
                "task_type": name,
                **asdict(store.history_stats(name)),
                "avg_throughput": sum(store.avg_throughput(name)),
            }
            for name in types
        ]
        return Response(StatsSerializer({"results": results}).data)


class TagKeysView(TaskmillAPIView):
    schema = TaskmillAutoSchema(tags=["tags"])
    needs = {"get": access.READ_TASKS}  # noqa: RUF012

    @documented(
        "listTagKeys", response=TagKeysSerializer, query=TagKeysQuerySerializer,
        description="Distinct tag keys of active tasks starting with the prefix.",
    )  # fmt: skip
    def get(self, request: Request) -> Response:
        q = _query(TagKeysQuerySerializer, request)
        if q.get("domain"):
            keys = scheduler.domain(q["domain"]).tag_keys_by_prefix(q["prefix"])
        else:
            keys = queries.tag_keys_by_prefix(q["prefix"])
        return Response(TagKeysSerializer({"keys": keys}).data)


class TagValuesView(TaskmillAPIView):
    schema = TaskmillAutoSchema(tags=["tags"])
    needs = {"get": access.READ_TASKS}  # noqa: RUF012

    @documented(
        "listTagValues", response=TagValuesSerializer, query=TagValuesQuerySerializer,
        description="Distinct values of a tag key among active tasks.",
    )  # fmt: skip
    def get(self, request: Request) -> Response:
        q = _query(TagValuesQuerySerializer, request)
        if q.get("domain"):
            pairs = scheduler.domain(q["domain"]).tag_values(q["key"])
        else:
            pairs = queries.tag_values(q["key"])
        values = [value for value, _ in pairs]
        return Response(TagValuesSerializer({"key": q["key"], "values": values}).data)


class TagCountsView(TaskmillAPIView):
    schema = TaskmillAutoSchema(tags=["tags"])
    needs = {"get": access.READ_TASKS}  # noqa: RUF012

    @documented(
        "countTagValues", response=TagCountsSerializer, query=TagCountsQuerySerializer,
        description="Active tasks per value of a tag key (optionally of one status).",
    )  # fmt: skip
    def get(self, request: Request) -> Response:
        q = _query(TagCountsQuerySerializer, request)
        task_status = q.get("status")
        if q.get("domain"):
            counts = scheduler.domain(q["domain"]).count_by_tag(q["key"], task_status)
        else:
            counts = queries.count_by_tag(q["key"], task_status)
        body = {"key": q["key"], "status": task_status, "counts": counts}
        return Response(TagCountsSerializer(body).data)


class DomainViewSet(TaskmillViewSet):
    """Declared domains (from code) and their snapshots."""

    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    serializer_class = DomainSerializer
    schema = TaskmillAutoSchema(tags=["cluster"])
    needs = {  # noqa: RUF012
        "list": access.READ_TASKS,
        "retrieve": access.READ_TASKS,
        "snapshot": access.READ_TASKS,
    }

    @staticmethod
    def _info(domain: Any) -> dict[str, Any]:
        return {
            "name": domain.name,
            "max_concurrency": domain.max_concurrency,
            "default_priority": domain.default_priority,
            "default_group": domain.default_group,
            "task_types": [t.task_type for t in registry.all_tasks() if t.domain is domain],
        }

    @documented("listDomains", response=DomainSerializer, many=True, paginated=True)
    def list(self, request: Request) -> Response:
        return self.paginated([self._info(d) for d in registry.all_domains()], DomainSerializer)

    @documented("retrieveDomain", response=DomainSerializer)
    def retrieve(self, request: Request, name: str) -> Response:
        return Response(DomainSerializer(self._info(registry.get_domain(name))).data)

    @documented(
        "getDomainSnapshot", response=SnapshotSerializer,
        description=f"The domain's snapshot; running lists its {SNAPSHOT_RUNNING} "
        "longest-running tasks.",
    )  # fmt: skip
    @action(detail=True, methods=["get"])
    def snapshot(self, request: Request, name: str) -> Response:
        snapshot = scheduler.domain(name).snapshot(running_limit=SNAPSHOT_RUNNING)
        return Response(SnapshotSerializer(snapshot).data)


class RecurringViewSet(TaskmillViewSet):
    """Recurring schedules (created with ``recurring`` on submit, or declared in code and
    ``SCHEDULES``)."""

    serializer_class = RecurringSerializer
    schema = TaskmillAutoSchema(tags=["recurring"])
    needs = {  # noqa: RUF012
        "list": access.READ_SCHEDULES,
        "retrieve": access.READ_SCHEDULES,
        "pause": access.CHANGE_SCHEDULES,
        "resume": access.CHANGE_SCHEDULES,
        "cancel": access.CHANGE_SCHEDULES,
    }

    @documented(
        "listRecurring", response=RecurringSerializer, many=True, paginated=True,
        query=RecurringQuerySerializer,
    )  # fmt: skip
    def list(self, request: Request) -> Response:
        q = _query(RecurringQuerySerializer, request)
        source = scheduler.domain(q["domain"]) if q.get("domain") else scheduler.store()
        infos = source.recurring_schedules()
        if q.get("task_type"):
            infos = [i for i in infos if i.task_type == q["task_type"]]
        return self.paginated(infos, RecurringSerializer)

    def _info(self, schedule_id: int) -> Response:
        for info in scheduler.store().recurring_schedules():
            if info.id == schedule_id:
                return Response(RecurringSerializer(info).data)
        raise TaskNotFound(f"no recurring schedule with id {schedule_id}")

    @documented("retrieveRecurring", response=RecurringSerializer)
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        return self._info(self.object_id())

    @documented("pauseRecurring", response=RecurringSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str | None = None) -> Response:
        scheduler.pause_recurring(self.object_id())
        return self._info(self.object_id())

    @documented(
        "resumeRecurring", response=RecurringSerializer,
        description="Resume; occurrences missed while paused are not replayed.",
    )  # fmt: skip
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        scheduler.resume_recurring(self.object_id())
        return self._info(self.object_id())

    @documented(
        "cancelRecurring", response=ScheduleCancelledSerializer,
        description="Delete the schedule; tasks it already submitted are left alone.",
    )  # fmt: skip
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        schedule_id = self.object_id()
        scheduler.cancel_recurring(schedule_id)
        return Response(ScheduleCancelledSerializer({"id": schedule_id, "cancelled": True}).data)


def group_infos(only: str | None = None) -> list[dict[str, Any]]:
    """Groups seen in active tasks or named by the policy, with their limits and state."""
    policy = load_policy()
    tasks = Task.objects.exclude(group_key=None)
    if only is not None:
        tasks = tasks.filter(group_key=only)
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for group, task_status, n in (
        tasks.values_list("group_key", "status").annotate(n=Count("id")).order_by()
    ):
        counts[group][task_status] = n
    paused = dict(
        PausedGroup.objects.filter(
            Q(paused_until__isnull=True) | Q(paused_until__gt=Now())
        ).values_list("group_key", "paused_until")
    )
    tokens = dict(
        RateBucket.objects.filter(name__startswith=config.GROUP_RATE).values_list("name", "tokens")
    )
    if only is not None:
        names = {only}
    else:
        names = set(counts) | set(policy.group_caps) | set(paused)
        names |= set(policy.group_rate_limits) | set(policy.group_weights)
    infos = []
    for name in sorted(names):
        limit = policy.group_rate_limits.get(name)
        rate = None
        if limit is not None:
            rate = {
                "rate": limit.rate,
                "burst": limit.burst,
                "tokens": tokens.get(config.GROUP_RATE + name),
            }
        infos.append(
            {
                "name": name,
                "counts": counts.get(name, {}),
                "limit": policy.group_cap(name),
                "is_paused": name in paused,
                "paused_until": paused.get(name),
                "rate_limit": rate,
                "weight": policy.group_weights.get(name),
            }
        )
    return infos


class GroupViewSet(TaskmillViewSet):
    """Groups: pause/resume and limits, cluster-wide (stored in the database)."""

    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    serializer_class = GroupSerializer
    schema = TaskmillAutoSchema(tags=["groups"])
    needs = {  # noqa: RUF012
        "list": access.READ_TASKS,
        "retrieve": access.READ_TASKS,
        **dict.fromkeys(
            (
                "pause",
                "resume",
                "limit",
                "remove_limit",
                "rate_limit",
                "remove_rate_limit",
                "weight",
                "remove_weight",
            ),
            access.CONTROL,
        ),
    }

    def get_serializer_class(self) -> Any:
        return {
            "pause": GroupPauseSerializer,
            "limit": GroupLimitSerializer,
            "rate_limit": RateLimitInputSerializer,
            "weight": GroupWeightSerializer,
        }.get(self.action or "", GroupSerializer)

    def _group(self) -> str:
        raw = self.kwargs["name"]
        problem = text_problem(raw)
        if problem is not None:
            raise serializers.ValidationError({"group": [problem]})
        name = validate_group(raw)
        assert name is not None  # noqa: S101 - the URL never yields an empty name
        return name

    def _body(self, serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
        body = serializer_class(data=self.request.data)
        body.is_valid(raise_exception=True)
        return dict(body.validated_data)

    def _info(self, name: str) -> Response:
        return Response(GroupSerializer(group_infos(name)[0]).data)

    @documented("listGroups", response=GroupSerializer, many=True, paginated=True)
    def list(self, request: Request) -> Response:
        return self.paginated(group_infos(), GroupSerializer)

    @documented("retrieveGroup", response=GroupSerializer, errors=(400,))
    def retrieve(self, request: Request, name: str) -> Response:
        return self._info(self._group())

    @documented(
        "pauseGroup", request=GroupPauseSerializer, response=GroupSerializer,
        description="Stop starting the group's tasks (until 'until', when given).",
    )  # fmt: skip
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, name: str) -> Response:
        group = self._group()
        scheduler.pause_group(group, self._body(GroupPauseSerializer).get("until"))
        return self._info(group)

    @documented("resumeGroup", response=GroupSerializer, errors=(400,))
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, name: str) -> Response:
        group = self._group()
        scheduler.resume_group(group)
        return self._info(group)

    @documented("setGroupLimit", request=GroupLimitSerializer, response=GroupSerializer)
    @action(detail=True, methods=["post"])
    def limit(self, request: Request, name: str) -> Response:
        group = self._group()
        scheduler.set_group_limit(group, self._body(GroupLimitSerializer)["limit"])
        return self._info(group)

    @documented("removeGroupLimit", response=GroupSerializer, errors=(400,))
    @limit.mapping.delete
    def remove_limit(self, request: Request, name: str) -> Response:
        group = self._group()
        scheduler.remove_group_limit(group)
        return self._info(group)

    @documented(
        "setGroupRateLimit", request=RateLimitInputSerializer, response=GroupSerializer,
        description="Token bucket: 'rate' starts per 'per' (second or minute), bursts of "
        "up to 'burst'.",
    )  # fmt: skip
    @action(detail=True, methods=["post"], url_path="rate-limit")
    def rate_limit(self, request: Request, name: str) -> Response:
        group = self._group()
        body = self._body(RateLimitInputSerializer)
        limit = (
            RateLimit.per_minute(body["rate"])
            if body["per"] == "minute"
            else RateLimit.per_second(body["rate"])
        )
        if body.get("burst") is not None:
            limit = limit.with_burst(body["burst"])
        scheduler.set_group_rate_limit(group, limit)
        return self._info(group)

    @documented("removeGroupRateLimit", response=GroupSerializer, errors=(400,))
    @rate_limit.mapping.delete
    def remove_rate_limit(self, request: Request, name: str) -> Response:
        group = self._group()
        scheduler.set_group_rate_limit(group, None)
        return self._info(group)

    @documented("setGroupWeight", request=GroupWeightSerializer, response=GroupSerializer)
    @action(detail=True, methods=["post"])
    def weight(self, request: Request, name: str) -> Response:
        group = self._group()
        scheduler.set_group_weight(group, self._body(GroupWeightSerializer)["weight"])
        return self._info(group)

    @documented("removeGroupWeight", response=GroupSerializer, errors=(400,))
    @weight.mapping.delete
    def remove_weight(self, request: Request, name: str) -> Response:
        group = self._group()
        scheduler.remove_group_weight(group)
        return self._info(group)


class WorkerViewSet(TaskmillViewSet):
    """Worker processes, alive or not yet cleaned up."""

    serializer_class = WorkerDetailSerializer
    schema = TaskmillAutoSchema(tags=["cluster"])
    needs = {"list": access.READ_WORKERS}  # noqa: RUF012

    @documented("listWorkers", response=WorkerDetailSerializer, many=True, paginated=True)
    def list(self, request: Request) -> Response:
        extra = {
            str(row["id"]): row
            for row in Worker.objects.values("id", "domains", "status", "started_at")
        }
        rows = []
        for info in worker_infos():
            row = extra.get(info.id)
            if row is not None:
                rows.append({**asdict(info), **row, "id": info.id})
        return self.paginated(rows, WorkerDetailSerializer)
