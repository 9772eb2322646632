"""Why isn't this task running? Every reason, from the rules the claim query applies.

``scheduler.explain(task_id)`` answers the most common operator question with a list of
``Reason`` values, most fundamental first: the task's own state (running, waiting for its
children, paused, blocked on a dependency), then its timing (``run_after``, expiry), then the
cluster's gates (pauses, concurrency caps, fair shares, rate limits, preemption, pressure), its
place in the queue, and whether any live worker serves its domain.

Read-only: a handful of queries over the active table, the runtime policy and the worker table.
Instants come from the database clock, like every lease and ``run_after`` comparison. Pressure is
the one exception: it is measured where it is read (each worker measures its own host), so the
``throttled`` reason reflects the pressure sources as seen from the calling process.

>>> Reason("run_after", "scheduled for later").code
'run_after'
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, Q
from django.db.models.expressions import RawSQL
from django.db.models.functions import Now

from ..conf import app_settings
from ..enums import InterruptReason, TaskStatus
from ..exceptions import TaskNotFound
from ..models import PausedGroup, RateBucket, Task, TaskDependency, TaskHistory, Worker
from ..policy import config, io
from ..policy.aging import aging_sql
from ..policy.config import Policy
from ..policy.pressure import DEFAULT_THROTTLE
from ..policy.ratelimit import RateLimit, refill, wait_for_token

__all__ = [
    "CANCEL_REQUESTED",
    "DEPENDENCY",
    "DOMAIN_CAP",
    "DOMAIN_PAUSED",
    "EXPIRED",
    "EXPIRES",
    "FAIR_SHARE",
    "FINISHED",
    "GLOBAL_CAP",
    "GROUP_CAP",
    "GROUP_PAUSED",
    "IO_SATURATED",
    "NO_LIVE_WORKER",
    "ORPHANED",
    "PAUSED",
    "PREEMPTOR_ACTIVE",
    "QUEUED_BEHIND",
    "RATE_LIMITED",
    "READY",
    "RUNNING",
    "RUN_AFTER",
    "SCHEDULER_PAUSED",
    "THROTTLED",
    "WAITING_FOR_CHILDREN",
    "Reason",
    "explain",
]

# Reason codes, in the order they are reported.
RUNNING = "running"
CANCEL_REQUESTED = "cancel_requested"
ORPHANED = "orphaned"
WAITING_FOR_CHILDREN = "waiting_for_children"
PAUSED = "paused"
DEPENDENCY = "dependency"
RUN_AFTER = "run_after"
EXPIRED = "expired"
EXPIRES = "expires"
SCHEDULER_PAUSED = "scheduler_paused"
DOMAIN_PAUSED = "domain_paused"
GROUP_PAUSED = "group_paused"
GLOBAL_CAP = "global_cap"
DOMAIN_CAP = "domain_cap"
GROUP_CAP = "group_cap"
FAIR_SHARE = "fair_share"
RATE_LIMITED = "rate_limited"
PREEMPTOR_ACTIVE = "preemptor_active"
THROTTLED = "throttled"
IO_SATURATED = "io_saturated"
QUEUED_BEHIND = "queued_behind"
NO_LIVE_WORKER = "no_live_worker"
READY = "ready"
FINISHED = "finished"

_PAUSE_MESSAGES: dict[str, str] = {
    InterruptReason.MANUAL: "paused by hand; resume it to let it run",
    InterruptReason.PREEMPTED: "paused by preemption; it resumes when no task at or above "
    "PREEMPT_PRIORITY is pending or running",
    InterruptReason.DOMAIN_PAUSED: "paused with its domain; it resumes when the domain is resumed",
    InterruptReason.GROUP_PAUSED: "paused with its group; it resumes when the group is resumed",
    InterruptReason.ALL_PAUSED: "paused with the whole scheduler; it resumes on resume_all()",
}


@dataclass(frozen=True)
class Reason:
    """One reason a task is not running now.

    ``code`` is stable (see the constants of this module); ``message`` is for people;
    ``data`` holds the numbers behind the message (JSON values and datetimes).
    """

    code: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Subject:
    task: Task
    now: datetime
    policy: Policy
    running: list[tuple[str, str | None, int]]
    workers: list[tuple[list[str] | None, int, int]]  # live ones: (domains, slots, running)


def explain(task_id: int) -> list[Reason]:
    """Every reason task ``task_id`` is not running now; never empty.

    A task that is running says so (``running``), a finished one says how it ended
    (``finished``), and a pending task that nothing holds back is ``ready``: the next poll of
    a worker serving its domain claims it. Raises TaskNotFound for an unknown id.
    """
    task = Task.objects.filter(id=task_id).annotate(db_now=Now()).first()
    if task is None:
        return [_finished(task_id)]
    now = task.db_now
    if task.status == TaskStatus.RUNNING:
        return _running(task, now)
    if task.status == TaskStatus.WAITING:
        return [_waiting(task)]
    subject = _Subject(task, now, _policy(), _running_counts(), _live_workers())
    reasons: list[Reason] = []
    for check in (
        _paused,
        _dependencies,
        _timing,
        _pauses,
        _caps,
        _fair_share,
        _rate_limits,
        _preemption,
        _throttle,
        _io_budget,
        _queue_position,
        _workers,
    ):
        reasons.extend(check(subject))
    if not reasons:
        reasons.append(
            Reason(READY, "ready: the next poll of a worker serving its domain claims it")
        )
    return reasons


def _policy() -> Policy:
    from ..store.control import load_policy
    from .snapshot import local_pressure

    return load_policy(local_pressure())


def _running_counts() -> list[tuple[str, str | None, int]]:
    return list(
        Task.objects.filter(status=TaskStatus.RUNNING)
        .values_list("domain", "group_key")
        .annotate(n=Count("id"))
        .order_by()
    )


def _finished(task_id: int) -> Reason:
    done = TaskHistory.objects.filter(id=task_id).values_list("status", "finished_at").first()
    if done is None:
        raise TaskNotFound(f"no task with id {task_id}")
    status, finished_at = done
    return Reason(
        FINISHED,
        f"finished as {status} at {finished_at.isoformat()}",
        {"status": status, "finished_at": finished_at},
    )


def _running(task: Task, now: datetime) -> list[Reason]:
    workers = Worker.objects.filter(id=task.worker_id) if task.worker_id else Worker.objects.none()
    worker = workers.values_list("name", "heartbeat_at").first()
    where = f" on worker {worker[0]}" if worker else ""
    since = f" since {task.started_at.isoformat()}" if task.started_at else ""
    reasons = [
        Reason(
            RUNNING,
            f"running{where}{since}",
            {"worker_id": str(task.worker_id) if task.worker_id else None},
        )
    ]
    if task.cancel_reason:
        reasons.append(
            Reason(
                CANCEL_REQUESTED,
                f"asked to stop ({task.cancel_reason}); its worker acts on it at the next "
                "heartbeat",
                {"cancel_reason": task.cancel_reason},
            )
        )
    if worker is None or now - worker[1] > app_settings.lease_timeout:
        reasons.append(
            Reason(
                ORPHANED,
                "its worker stopped sending heartbeats; another worker makes it pending again "
                "once the lease runs out",
                {"lease_timeout_seconds": float(app_settings.LEASE_TIMEOUT)},
            )
        )
    return reasons


def _waiting(task: Task) -> Reason:
    children = Task.objects.filter(parent_id=task.id).count()
    return Reason(
        WAITING_FOR_CHILDREN,
        f"its run returned; waiting for {children} child task(s) to finish before finalize",
        {"children": children},
    )


def _paused(s: _Subject) -> list[Reason]:
    if s.task.status != TaskStatus.PAUSED:
        return []
    reason = s.task.pause_reason
    message = _PAUSE_MESSAGES.get(reason, f"paused ({reason or 'no reason recorded'})")
    return [Reason(PAUSED, message, {"pause_reason": reason})]


def _dependencies(s: _Subject) -> list[Reason]:
    if s.task.status != TaskStatus.BLOCKED:
        return []
    edges = TaskDependency.objects.filter(task_id=s.task.id).values("depends_on_id")
    active = (
        Task.objects.filter(id__in=edges).order_by("id").values_list("id", "task_type", "status")
    )
    return [
        Reason(
            DEPENDENCY,
            f"waiting on dependency #{dep_id} ({task_type}, {status})",
            {"task_id": dep_id, "task_type": task_type, "status": status},
        )
        for dep_id, task_type, status in active
    ]


def _timing(s: _Subject) -> list[Reason]:
    reasons = []
    run_after = s.task.run_after
    if run_after is not None and run_after > s.now:
        wait = (run_after - s.now).total_seconds()
        reasons.append(
            Reason(
                RUN_AFTER,
                f"run_after is in the future: {run_after.isoformat()} (in {wait:.0f}s)",
                {"run_after": run_after, "seconds": wait},
            )
        )
    expires_at = s.task.expires_at
    if expires_at is not None and expires_at <= s.now:
        reasons.append(
            Reason(
                EXPIRED,
                f"expired at {expires_at.isoformat()}; the expiry sweep moves it to history",
                {"expires_at": expires_at},
            )
        )
    elif expires_at is not None:
        reasons.append(
            Reason(
                EXPIRES,
                f"expires at {expires_at.isoformat()} unless it starts before",
                {"expires_at": expires_at},
            )
        )
    return reasons


def _pauses(s: _Subject) -> list[Reason]:
    reasons = []
    if s.policy.is_paused:
        reasons.append(
            Reason(SCHEDULER_PAUSED, "the scheduler is paused (pause_all); no task starts")
        )
    if s.task.domain in s.policy.paused_domains:
        reasons.append(
            Reason(DOMAIN_PAUSED, f"domain {s.task.domain!r} is paused", {"domain": s.task.domain})
        )
    group = s.task.group_key
    if group is not None and group in s.policy.paused_groups:
        until = PausedGroup.objects.filter(group_key=group).values_list("paused_until").first()
        until_at = until[0] if until else None
        when = f" until {until_at.isoformat()}" if until_at else ""
        reasons.append(
            Reason(
                GROUP_PAUSED,
                f"group {group!r} is paused{when}",
                {"group": group, "paused_until": until_at},
            )
        )
    return reasons


def _caps(s: _Subject) -> list[Reason]:
    total = sum(n for _, _, n in s.running)
    by_domain: Counter[str] = Counter()
    by_group: Counter[str] = Counter()
    for domain, group, n in s.running:
        by_domain[domain] += n
        if group is not None:
            by_group[group] += n
    reasons = []
    cap = s.policy.max_concurrency
    if cap is not None and total >= cap:
        reasons.append(
            Reason(
                GLOBAL_CAP,
                f"the cluster is at its cap ({total}/{cap} running)",
                {"running": total, "cap": cap},
            )
        )
    domain = s.task.domain
    cap = s.policy.domain_caps.get(domain)
    if cap is not None and by_domain[domain] >= cap:
        reasons.append(
            Reason(
                DOMAIN_CAP,
                f"domain {domain!r} is at its cap ({by_domain[domain]}/{cap})",
                {"domain": domain, "running": by_domain[domain], "cap": cap},
            )
        )
    group = s.task.group_key
    cap = s.policy.group_cap(group)
    if group is not None and cap is not None and by_group[group] >= cap:
        reasons.append(
            Reason(
                GROUP_CAP,
                f"group {group!r} is at its cap ({by_group[group]}/{cap})",
                {"group": group, "running": by_group[group], "cap": cap},
            )
        )
    return reasons


def _fair_share(s: _Subject) -> list[Reason]:
    if not s.policy.is_fair:
        return []
    aging = s.policy.aging
    if aging and aging.urgent_threshold is not None and s.task.priority <= aging.urgent_threshold:
        return []  # urgent tasks bypass fair shares
    from ..policy.fair import UNGROUPED
    from ..store.claim import current_shares

    share_key = s.task.group_key or UNGROUPED
    share = current_shares(s.policy).get(share_key, 0)
    used = sum(n for _, group, n in s.running if (group or UNGROUPED) == share_key)
    if used < share:
        return []
    name = repr(s.task.group_key) if s.task.group_key else "of ungrouped tasks"
    return [
        Reason(
            FAIR_SHARE,
            f"group {name} has used its fair share of slots ({used}/{share})",
            {"group": s.task.group_key, "running": used, "share": share},
        )
    ]


def _rate_limits(s: _Subject) -> list[Reason]:
    limits: list[tuple[str, str, RateLimit]] = []
    task_type, group = s.task.task_type, s.task.group_key
    if task_type in s.policy.rate_limits:
        limits.append(
            (f"task type {task_type!r}", config.RATE + task_type, s.policy.rate_limits[task_type])
        )
    if group is not None and group in s.policy.group_rate_limits:
        limits.append(
            (f"group {group!r}", config.GROUP_RATE + group, s.policy.group_rate_limits[group])
        )
    if not limits:
        return []
    buckets = {
        b.name: b for b in RateBucket.objects.filter(name__in=[name for _, name, _ in limits])
    }
    reasons = []
    for what, name, limit in limits:
        bucket = buckets.get(name)
        if bucket is None:
            continue  # never used: a full bucket
        elapsed = (s.now - bucket.refreshed_at).total_seconds()
        tokens = refill(bucket.tokens, elapsed, limit)
        if tokens >= 1.0:
            continue
        next_token = s.now + timedelta(seconds=wait_for_token(tokens, limit))
        reasons.append(
            Reason(
                RATE_LIMITED,
                f"rate limit of {what} is exhausted ({limit.rate:g}/s): next token at "
                f"{next_token.isoformat()}",
                {"bucket": name, "tokens": tokens, "rate": limit.rate, "next_token_at": next_token},
            )
        )
    return reasons


def _preemption(s: _Subject) -> list[Reason]:
    top = s.policy.preemptor_priority
    if top is None or s.task.priority <= top:
        return []
    return [
        Reason(
            PREEMPTOR_ACTIVE,
            f"a preemptor at priority {top} is pending or running; less urgent tasks "
            f"(this one has {s.task.priority}) wait until it is done",
            {"preemptor_priority": top, "priority": s.task.priority},
        )
    ]


def _throttle(s: _Subject) -> list[Reason]:
    start = s.policy.throttle_from
    if start is None or s.task.priority < start:
        return []
    setting = app_settings.THROTTLE_POLICY
    levels = DEFAULT_THROTTLE if setting is None else {int(k): float(v) for k, v in setting.items()}
    limit = min(
        (v for k, v in levels.items() if k <= s.task.priority and s.policy.pressure > v),
        default=None,
    )
    above = f" > {limit:g}" if limit is not None else ""
    return [
        Reason(
            THROTTLED,
            f"throttled by pressure {s.policy.pressure:.2f}{above}: priorities >= {start} wait",
            {
                "pressure": s.policy.pressure,
                "limit": limit,
                "throttled_from": start,
                "breakdown": dict(s.policy.pressure_breakdown),
            },
        )
    ]


def _io_budget(s: _Subject) -> list[Reason]:
    """Every live worker serving the task's domain has less IO budget left in a direction
    than the task declares (workers measure their own machine and report their budgets; see
    policy.io)."""
    expected = io.expected_of(s.task)
    if not any(expected.values()) or s.task.priority <= io.EXEMPT_PRIORITY:
        return []
    live = Worker.objects.filter(
        heartbeat_at__gte=Now() - app_settings.lease_timeout, status="running"
    ).values_list("name", "domains", "io")
    serving = [
        (name, io_report or {})
        for name, domains, io_report in live
        if _serves(domains, s.task.domain)
    ]
    blocked = {name: io.over_budget(expected, _budgets(report)) for name, report in serving}
    if not serving or not all(blocked.values()):
        return []
    directions = sorted({d for found in blocked.values() for d in found})
    return [
        Reason(
            IO_SATURATED,
            f"IO budget: it expects more {', '.join(directions)} bytes than every worker "
            "serving its domain can take now (IO_CAPACITY)",
            {
                "directions": directions,
                "workers": blocked,
                "expected": {d: expected[d] for d in directions},
            },
        )
    ]


def _budgets(report: dict[str, Any]) -> dict[str, int]:
    """A worker's IO report as budgets; a report from before budgets were stored gives a
    saturated direction a budget of 0."""
    found = {}
    for direction, measured in report.items():
        if measured.get("budget") is not None:
            found[direction] = int(measured["budget"])
        elif measured.get("saturated"):
            found[direction] = 0
    return found


def _queue_position(s: _Subject) -> list[Reason]:
    """Claimable tasks that dispatch order puts first, when there are not enough free slots
    for all of them."""
    task = s.task
    if task.status != TaskStatus.PENDING:
        return []
    ahead = Task.objects.claimable().exclude(id=task.id).exclude(expires_at__lte=Now())
    if s.policy.paused_domains:
        ahead = ahead.exclude(domain__in=list(s.policy.paused_domains))
    if s.policy.paused_groups:
        ahead = ahead.exclude(group_key__in=list(s.policy.paused_groups))
    effective = task.priority
    if s.policy.aging is not None:
        sql, params = aging_sql(s.policy.aging, connection.vendor)
        mine = Task.objects.filter(id=task.id).annotate(e=RawSQL(sql, params))  # noqa: S611
        found = mine.values_list("e", flat=True).first()
        effective = task.priority if found is None else int(found)
        ahead = ahead.annotate(effective=RawSQL(sql, params))  # noqa: S611
        ahead = ahead.filter(Q(effective__lt=effective) | Q(effective=effective, id__lt=task.id))
    else:
        ahead = ahead.filter(Q(priority__lt=effective) | Q(priority=effective, id__lt=task.id))
    count = ahead.count()
    free = _free_slots(s)
    if count == 0 or (free is not None and count < free):
        return []
    return [
        Reason(
            QUEUED_BEHIND,
            f"behind {count} task(s) of higher effective priority",
            {"count": count, "effective_priority": int(effective), "free_slots": free},
        )
    ]


def _live_workers() -> list[tuple[list[str] | None, int, int]]:
    """Workers with a heartbeat within LEASE_TIMEOUT (database clock) that are not stopping."""
    return list(
        Worker.objects.filter(
            heartbeat_at__gte=Now() - app_settings.lease_timeout, status="running"
        ).values_list("domains", "concurrency", "running_count")
    )


def _serves(domains: list[str] | None, domain: str) -> bool:
    return domains is None or domain in domains


def _free_slots(s: _Subject) -> int | None:
    serving = [w for w in s.workers if _serves(w[0], s.task.domain)]
    if not serving:
        return None
    return max(sum(slots - running for _, slots, running in serving), 0)


def _workers(s: _Subject) -> list[Reason]:
    domain = s.task.domain
    if not s.workers:
        return [
            Reason(
                NO_LIVE_WORKER,
                "no live worker: none sent a heartbeat within LEASE_TIMEOUT "
                f"({float(app_settings.LEASE_TIMEOUT):g}s); start `manage.py runtaskmill`",
                {"domain": domain, "live_workers": 0},
            )
        ]
    if not any(_serves(w[0], domain) for w in s.workers):
        return [
            Reason(
                NO_LIVE_WORKER,
                f"no live worker serves domain {domain!r} ({len(s.workers)} live worker(s) "
                "serve other domains)",
                {"domain": domain, "live_workers": len(s.workers)},
            )
        ]
    return []
