"""Fixtures for store and query tests: running rows, outcomes, raw history rows, signals, and
the people of the permission table (roles) with a snapshot of what they could have changed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.dispatch import Signal
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from taskmill_django import registry
from taskmill_django.models import (
    PausedGroup,
    Schedule,
    SchedulerSetting,
    Task,
    TaskHistory,
    TaskTag,
)
from taskmill_django.store import claim, lifecycle


@contextmanager
def round_trips() -> Iterator[list[list[str]]]:
    """What a block sends, one list of statements per round trip: statements that travel
    together (one simple query, or one psycopg pipeline on PostgreSQL) share a list. The
    BEGIN and COMMIT Django sends itself are not counted."""
    trips: list[list[str]] = []
    last: list[object] = [None]  # the pipeline of the last statement (None: not in one)

    def count(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        pipeline = getattr(connection.connection, "_pipeline", None)
        if pipeline is None or pipeline is not last[0]:
            trips.append([])
        trips[-1].append(sql)
        last[0] = pipeline
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        yield trips


@contextmanager
def executed_plans() -> Iterator[list[dict[str, Any]]]:
    """The plans PostgreSQL executes on this connection meanwhile, as ``auto_explain``'s JSON
    of each (``Plan``, and ``Settings``: the planner settings that differ from the defaults)."""
    connection.ensure_connection()
    plans: list[dict[str, Any]] = []

    def keep(diagnostic: psycopg.errors.Diagnostic) -> None:
        message = diagnostic.message_primary or ""
        if "plan:" in message:
            plans.append(json.loads(message.split("plan:", 1)[1]))

    with connection.cursor() as cursor:
        cursor.execute("LOAD 'auto_explain'")
        for setting in ("log_min_duration = 0", "log_settings = on", "log_format = json"):
            cursor.execute(f"SET auto_explain.{setting}")
        cursor.execute("SET client_min_messages = log")
    connection.connection.add_notice_handler(keep)
    try:
        yield plans
    finally:
        connection.connection.remove_notice_handler(keep)
        with connection.cursor() as cursor:
            cursor.execute("RESET client_min_messages")
            cursor.execute("SET auto_explain.log_min_duration = -1")


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from plan_nodes(child)


def touching(plans: list[dict[str, Any]], operation: str, table: str) -> list[dict[str, Any]]:
    """The plans among ``plans`` with an ``operation`` node (Insert, Update...) on
    ``table``."""
    return [
        p
        for p in plans
        if any(
            n.get("Operation") == operation and n.get("Relation Name") == table
            for n in plan_nodes(p["Plan"])
        )
    ]


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Domains and task types declared in the test are forgotten afterwards."""
    monkeypatch.setattr(registry, "_domains", dict(registry._domains))
    monkeypatch.setattr(registry, "_tasks", dict(registry._tasks))


def claim_one(domains: list[str] | None = None, worker_id: uuid.UUID | None = None) -> Task:
    """Claim the next due task as a worker would: the row is ``running`` under a fresh lease."""
    (task,) = claim.claim_batch(worker_id or uuid.uuid4(), 1, domains)
    return task


def finish(task: Task, kind: str = lifecycle.COMPLETED, **fields: Any) -> lifecycle.Applied:
    """Report how the attempt on a claimed ``task`` ended, fenced by its lease."""
    return lifecycle.apply_outcomes(
        [lifecycle.Outcome(task.id, task.lease_token, kind, task.task_type, **fields)]
    )


@pytest.fixture
def history_factory() -> Callable[..., TaskHistory]:
    """Raw history rows for query tests that need exact numbers or old timestamps."""
    counter = iter(range(10_000_000, 20_000_000))

    def make(**fields: Any) -> TaskHistory:
        task_id = fields.pop("id", next(counter))
        now = timezone.now()
        defaults: dict[str, Any] = {
            "task_type": "tests::noop",
            "domain": "tests",
            "key": f"h{task_id}",
            "priority": 128,
            "status": "completed",
            "created_at": now - timedelta(seconds=1),
            "finished_at": now,
        }
        defaults.update(fields)
        return TaskHistory.objects.create(id=task_id, **defaults)

    return make


@pytest.fixture
def received() -> Iterator[Callable[[Signal], list[dict[str, Any]]]]:
    """``events = received(signals.task_completed)``: every send, as kwargs plus ``sender``."""
    connected: list[tuple[Signal, Callable[..., None]]] = []

    def listen(signal: Signal) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []

        def receiver(sender: Any, **kwargs: Any) -> None:
            kwargs.pop("signal", None)
            events.append({"sender": sender, **kwargs})

        signal.connect(receiver, weak=False)
        connected.append((signal, receiver))
        return events

    yield listen
    for signal, receiver in connected:
        signal.disconnect(receiver)


# --- roles of the permission table (docs/howto/security.md) --------------------------------

VIEW = ("view_task", "view_taskhistory", "view_deadletter", "view_worker", "view_schedule")
ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "staff": (),  # is_staff and nothing else: grants nothing
    "viewer": VIEW,
    "operator": (*VIEW, "add_task", "change_task", "change_schedule"),
    "controller": (*VIEW, "control_scheduler"),
}
ROLES = ("anonymous", "staff", "viewer", "operator", "controller", "superuser")
# Task types the API tests may submit over HTTP (API_SUBMIT_TYPES is empty by default).
SUBMITTABLE = ["tests::*", "other::*", "flows::*"]


@pytest.fixture
def user_factory() -> Callable[..., User | None]:
    """``user_factory("operator")``: a staff user holding that role's permissions (plus
    ``extra`` codenames); None for "anonymous"; a superuser for "superuser"; a plain user with
    every permission of the app for "everything"."""

    def make(role: str, extra: tuple[str, ...] = ()) -> User | None:
        if role == "anonymous":
            return None
        name = f"{role}-{User.objects.count()}"
        if role == "superuser":
            return User.objects.create_superuser(name, f"{name}@example.com", "pw")
        ours = Permission.objects.filter(content_type__app_label="taskmill_django")
        user = User.objects.create_user(name, is_staff=role != "everything")
        if role != "everything":
            ours = ours.filter(codename__in=(*ROLE_PERMISSIONS[role], *extra))
        user.user_permissions.set(ours)
        return user

    return make


@pytest.fixture
def api_client_for(user_factory: Callable[..., User | None]) -> Callable[..., APIClient]:
    """``api_client_for("viewer")``: a REST client authenticated as a new user of that role."""

    def make(role: str, extra: tuple[str, ...] = (), **client_options: Any) -> APIClient:
        client = APIClient(**client_options)
        user = user_factory(role, extra)
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def admin_client_for(user_factory: Callable[..., User | None]) -> Callable[..., Client]:
    """``admin_client_for("viewer")``: a browser session logged in as a new user of that role."""

    def make(role: str, extra: tuple[str, ...] = ()) -> Client:
        client = Client()
        user = user_factory(role, extra)
        if user is not None:
            client.force_login(user)
        return client

    return make


@pytest.fixture
def api(api_client_for: Callable[..., APIClient]) -> APIClient:
    """A REST client holding every permission of the app (docs/howto/security.md)."""
    return api_client_for("everything")


@pytest.fixture
def api_submit_types(settings: Any) -> None:
    """Let the REST API submit the test apps' task types."""
    settings.TASKMILL = {**settings.TASKMILL, "API_SUBMIT_TYPES": SUBMITTABLE}


def db_state() -> tuple[Any, ...]:
    """Everything a request could change, to compare before and after a refused one."""
    return (
        sorted(
            Task.objects.values_list(
                "id", "status", "priority", "pause_reason", "cancel_reason", "group_key"
            )
        ),
        sorted(TaskHistory.objects.values_list("id", "status", "retried_at")),
        sorted(TaskTag.objects.values_list("task_id", "key", "value")),
        sorted(Schedule.objects.values_list("id", "is_paused", "next_run_at")),
        sorted(
            (name, repr(value))
            for name, value in SchedulerSetting.objects.values_list("name", "value")
        ),
        sorted(PausedGroup.objects.values_list("group_key", "paused_until")),
    )
