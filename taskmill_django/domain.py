"""Domains and task definitions: how user code declares work and submits it.

>>> media = Domain("doc_media")
>>> @media.task("thumbnail", priority=Priority.HIGH)
... def thumbnail(ctx, path: str) -> None: ...
>>> thumbnail.task_type
'doc_media::thumbnail'
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async

from . import registry
from .conf import app_settings
from .cron import RecurringSchedule
from .enums import DependencyFailurePolicy, DuplicateStrategy, OutcomeKind, Priority, TtlFrom
from .exceptions import ValidationError
from .records import IoBudget, NewTask, SubmitOutcome
from .retry import RetryPolicy
from .validation import (
    dedup_key,
    validate_choice,
    validate_group,
    validate_ids,
    validate_key,
    validate_label,
    validate_payload,
    validate_priority,
    validate_run_after,
    validate_seconds,
    validate_sensitive,
    validate_tags,
    validate_timeout,
)

if TYPE_CHECKING:
    from .handles import DomainHandle

TaskFunc = Callable[..., Any]
KeyFunc = Callable[..., str]

_SEPARATOR = "::"


def _check_name(field: str, name: Any) -> str:
    if not isinstance(name, str) or not name or _SEPARATOR in name or len(name) > 100:
        raise ValidationError(field, f"must be a non-empty name without '::', got {name!r}")
    return name


class Domain:
    """A named bundle of task types with shared defaults and an optional concurrency cap."""

    def __init__(
        self,
        name: str,
        *,
        default_priority: int = Priority.NORMAL,
        max_concurrency: int | None = None,
        default_retry: RetryPolicy | None = None,
        default_group: str | None = None,
        default_ttl: float | timedelta | None = None,
        default_tags: Mapping[str, str] | None = None,
    ) -> None:
        self.name = _check_name("name", name)
        self.default_priority = validate_priority(default_priority)
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise ValidationError("max_concurrency", f"must be >= 1 or None: {max_concurrency!r}")
        self.max_concurrency = max_concurrency
        self.default_retry = default_retry
        self.default_group = validate_group(default_group)
        self.default_ttl = validate_seconds("default_ttl", default_ttl)
        self.default_tags = validate_tags(default_tags)
        registry.register_domain(self)

    def __repr__(self) -> str:
        return f"Domain({self.name!r})"

    def task(
        self,
        name: str | None = None,
        *,
        priority: int | None = None,
        group: str | None = None,
        ttl: float | timedelta | None = None,
        timeout: float | timedelta | None = None,
        retry: RetryPolicy | None = None,
        expected_io: IoBudget | None = None,
        key: KeyFunc | None = None,
        duplicate: str = DuplicateStrategy.SKIP,
        tags: Mapping[str, str] | None = None,
        schedule: RecurringSchedule | None = None,
        sensitive: Iterable[str] = (),
    ) -> Callable[[TaskFunc], TaskDefinition]:
        """Register the decorated function as task type ``<domain>::<name>``.

        ``name`` defaults to the function name. ``key`` computes an explicit dedup key from the
        payload (``key=lambda path, size: path`` makes every size of one path the same task).
        ``schedule`` declares a recurring run (empty payload), synced when workers start.
        ``timeout`` limits each attempt: past it the attempt is asked to stop (reason
        ``"timeout"``, ``on_cancel`` runs) and fails "timed out after N s", retried per
        ``retry``.
        ``sensitive`` names payload keys, as dotted paths into nested objects
        (``("password", "card.number")``), whose values are masked wherever a person or a log
        sees them (``taskmill_django.redaction``); the task itself receives the real values.
        """
        if schedule is not None and not isinstance(schedule, RecurringSchedule):
            raise ValidationError("schedule", "must be a RecurringSchedule")
        sensitive_paths = validate_sensitive(sensitive)

        def decorate(func: TaskFunc) -> TaskDefinition:
            definition = TaskDefinition(
                domain=self,
                name=_check_name("name", name or func.__name__),
                func=func,
                priority=validate_priority(self.default_priority if priority is None else priority),
                group=validate_group(group if group is not None else self.default_group),
                ttl=validate_seconds("ttl", ttl if ttl is not None else self.default_ttl),
                timeout=validate_timeout(timeout),
                retry=retry or self.default_retry,
                expected_io=expected_io or IoBudget(),
                key_func=key,
                duplicate=validate_choice("duplicate", duplicate, DuplicateStrategy),
                tags={**self.default_tags, **validate_tags(tags)},
                sensitive=sensitive_paths,
            )
            definition.schedule = schedule
            registry.register_task(definition)
            return definition

        return decorate

    def handle(self) -> DomainHandle:
        """The DomainHandle for this domain (scoped queries and control)."""
        from .handles import DomainHandle  # upward import: handles sit above store

        return DomainHandle(self)


@dataclass(frozen=True)
class SubmitOptions:
    """Per-submission overrides given to ``using()``; None means "use the task's default"."""

    priority: int | None = None
    run_after: datetime | timedelta | None = None
    key: str | None = None
    label: str | None = None
    tags: Mapping[str, str] | None = None
    depends_on: tuple[int, ...] = ()
    on_dependency_failure: str = DependencyFailurePolicy.CANCEL
    parent: int | None = None
    fail_fast: bool = True
    group: str | None = None
    ttl: float | None = None
    ttl_from: str = TtlFrom.SUBMISSION
    timeout: float | None = None
    duplicate: str | None = None
    expected_io: IoBudget | None = None
    max_retries: int | None = None
    recurring: RecurringSchedule | None = None


def build_options(**opts: Any) -> SubmitOptions:
    """Validate ``using()`` keyword arguments eagerly, naming the bad field."""
    allowed = set(SubmitOptions.__dataclass_fields__)
    unknown = set(opts) - allowed
    if unknown:
        raise ValidationError(
            sorted(unknown)[0], f"unknown option; allowed: {', '.join(sorted(allowed))}"
        )
    clean: dict[str, Any] = {}
    for name, value in opts.items():
        clean[name] = _validate_option(name, value)
    return SubmitOptions(**clean)


def _validate_option(name: str, value: Any) -> Any:
    if name == "priority":
        return None if value is None else validate_priority(value)
    if name == "run_after":
        return validate_run_after(value)
    if name == "key":
        return None if value is None else validate_key(value)
    if name == "label":
        return None if value is None else validate_label(value)
    if name == "tags":
        return validate_tags(value)
    if name == "depends_on":
        return tuple(validate_ids("depends_on", value))
    if name == "on_dependency_failure":
        return validate_choice(name, value, DependencyFailurePolicy)
    if name == "parent":
        return None if value is None else validate_ids("parent", [value])[0]
    if name in ("fail_fast",):
        if not isinstance(value, bool):
            raise ValidationError(name, f"must be True or False, got {value!r}")
        return value
    if name == "group":
        return validate_group(value)
    if name == "ttl":
        return validate_seconds("ttl", value)
    if name == "timeout":
        return validate_timeout(value)
    if name == "ttl_from":
        return validate_choice(name, value, TtlFrom)
    if name == "duplicate":
        return None if value is None else validate_choice(name, value, DuplicateStrategy)
    if name == "expected_io":
        if value is not None and not isinstance(value, IoBudget):
            raise ValidationError(name, "must be an IoBudget (IoBudget.disk(...) / .net(...))")
        return value
    if name == "recurring":
        if value is not None and not isinstance(value, RecurringSchedule):
            raise ValidationError(name, "must be a RecurringSchedule(interval=... | cron=...)")
        return value
    if name == "max_retries":
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise ValidationError(name, f"must be a non-negative integer, got {value!r}")
        return value
    raise ValidationError(name, "unknown option")  # pragma: no cover - guarded by build_options


class TaskDefinition:
    """A registered task type. Submit with ``submit(**payload)`` or ``using(...).submit(...)``."""

    def __init__(
        self,
        *,
        domain: Domain,
        name: str,
        func: TaskFunc,
        priority: int,
        group: str | None,
        ttl: float | None,
        retry: RetryPolicy | None,
        timeout: float | None = None,
        expected_io: IoBudget,
        key_func: KeyFunc | None,
        duplicate: str,
        tags: dict[str, str],
        sensitive: tuple[str, ...] = (),
    ) -> None:
        self.domain = domain
        self.name = name
        self.task_type = f"{domain.name}{_SEPARATOR}{name}"
        self.func = func
        self.is_async = inspect.iscoroutinefunction(func)
        self._signature = _signature_or_none(func)
        self._shape = _PayloadShape.of(self._signature)
        self.priority = priority
        self.group = group
        self.ttl = ttl
        self.timeout = timeout
        self.retry = retry
        self.expected_io = expected_io
        self.key_func = key_func
        self.duplicate = duplicate
        self.tags = tags
        self.sensitive = sensitive
        # Internal task types (the Django Tasks backend's) are never submitted over HTTP,
        # whatever API_SUBMIT_TYPES says: their payloads are written by taskmill itself.
        self.internal = False
        self.schedule: RecurringSchedule | None = None
        self.finalize_func: TaskFunc | None = None
        self.on_cancel_func: TaskFunc | None = None
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__

    def __repr__(self) -> str:
        return f"<TaskDefinition {self.task_type}>"

    @property
    def max_retries(self) -> int:
        return self.retry.max_retries if self.retry else int(app_settings.MAX_RETRIES)

    def finalize(self, func: TaskFunc) -> TaskFunc:
        """Register ``func(ctx, memo, **payload)`` to run once all spawned children finished."""
        self.finalize_func = func
        return func

    def on_cancel(self, func: TaskFunc) -> TaskFunc:
        """Register ``func(ctx, **payload)`` to run when a running instance is cancelled."""
        self.on_cancel_func = func
        return func

    # --- submission front doors -------------------------------------------------------------

    def using(self, **options: Any) -> TaskCall:
        """Bind submission options (priority, run_after, key, tags, ...) for the next submit."""
        return TaskCall(self, build_options(**options))

    def submit(self, /, **payload: Any) -> SubmitOutcome:
        return TaskCall(self, SubmitOptions()).submit(**payload)

    def submit_batch(self, payloads: Iterable[Mapping[str, Any]]) -> list[SubmitOutcome]:
        return TaskCall(self, SubmitOptions()).submit_batch(payloads)

    async def asubmit(self, /, **payload: Any) -> SubmitOutcome:
        return await TaskCall(self, SubmitOptions()).asubmit(**payload)

    async def asubmit_batch(self, payloads: Iterable[Mapping[str, Any]]) -> list[SubmitOutcome]:
        return await TaskCall(self, SubmitOptions()).asubmit_batch(payloads)

    def build(self, payload: Mapping[str, Any], options: SubmitOptions) -> NewTask:
        """Validate one payload against this definition and the options; no database access."""
        return self.builder(options).build(payload)

    def builder(self, options: SubmitOptions) -> _Builder:
        """What every task of one ``using()`` call shares, resolved once: a batch then pays
        per payload only for its validation, its key and its record."""
        io = options.expected_io or self.expected_io
        explicit = options.key
        return _Builder(
            definition=self,
            explicit_key=explicit,
            # Children of different parents are different work even with equal payloads.
            key_material=(
                self.task_type
                if options.parent is None
                else f"{self.task_type}\x00parent:{options.parent}"
            ),
            label=options.label,
            shared={
                "task_type": self.task_type,
                "domain": self.domain.name,
                "priority": self.priority if options.priority is None else options.priority,
                "max_retries": (
                    self.max_retries if options.max_retries is None else options.max_retries
                ),
                "group_key": options.group if options.group is not None else self.group,
                "tags": (
                    validate_tags({**self.tags, **(options.tags or {})})
                    if self.tags or options.tags
                    else {}
                ),
                "run_after": options.run_after,
                "ttl_seconds": _first_set(options.ttl, self.ttl, app_settings.DEFAULT_TTL),
                "ttl_from": options.ttl_from,
                "timeout_seconds": _first_set(options.timeout, self.timeout, None),
                "expected_io": io,
                "duplicate": options.duplicate or self.duplicate,
                "parent_id": options.parent,
                "depends_on": options.depends_on,
                "on_dependency_failure": options.on_dependency_failure,
                "fail_fast": options.fail_fast,
            },
        )


@dataclass(frozen=True)
class _Builder:
    """Builds ``NewTask`` records of one definition with one set of options."""

    definition: TaskDefinition
    explicit_key: str | None
    key_material: str
    label: str | None
    shared: dict[str, Any]

    def build(self, payload: Mapping[str, Any]) -> NewTask:
        definition = self.definition
        canonical = validate_payload(payload)
        shape = definition._shape
        if definition._signature is not None and not (shape and shape.fits(payload)):
            try:
                definition._signature.bind(None, **payload)
            except TypeError as exc:
                raise ValidationError(
                    "payload", f"does not fit {definition.task_type}(ctx, ...): {exc}"
                ) from None
        explicit = self.explicit_key
        if explicit is None and definition.key_func is not None:
            try:
                explicit = validate_key(definition.key_func(**payload))
            except TypeError as exc:
                raise ValidationError("payload", f"does not fit the key function: {exc}") from exc
        return NewTask(
            key=dedup_key(self.key_material, canonical, explicit),
            label=self.label if self.label is not None else (explicit or definition.name)[:255],
            payload=dict(payload),
            payload_json=canonical,
            **self.shared,
        )


class TaskCall:
    """A task definition with bound options; what ``using()`` returns."""

    def __init__(self, definition: TaskDefinition, options: SubmitOptions) -> None:
        self.definition = definition
        self.options = options

    def using(self, **options: Any) -> TaskCall:
        merged = build_options(**options)
        changed = {k: getattr(merged, k) for k in options}
        return TaskCall(self.definition, replace(self.options, **changed))

    def submit(self, /, **payload: Any) -> SubmitOutcome:
        from .store.submit import submit_tasks  # upward import: the front door calls the store

        new = self.definition.build(payload, self.options)
        if self.options.recurring is not None:
            return self._schedule(new)
        return submit_tasks([new])[0]

    def _schedule(self, new: NewTask) -> SubmitOutcome:
        """``using(recurring=...)``: store a schedule; its first occurrence runs now if due."""
        from .store.recurring import SCHEDULE_OPTIONS, create_schedule

        opts = self.options
        if opts.depends_on or opts.parent is not None:
            raise ValidationError("recurring", "cannot be combined with depends_on or parent")
        options = {
            name: getattr(opts, name)
            for name in SCHEDULE_OPTIONS
            if getattr(opts, name) not in (None, {}, "submission")
        }
        assert opts.recurring is not None  # noqa: S101 - checked by the caller
        if opts.key is not None and len(opts.key) > 200:
            raise ValidationError("key", "names the schedule: at most 200 characters")
        schedule, task_id, created = create_schedule(
            new.task_type, new.payload, options, opts.recurring, name=opts.key
        )
        kind = OutcomeKind.INSERTED if created else OutcomeKind.DUPLICATE
        return SubmitOutcome(kind, task_id, schedule_id=schedule.id)

    def submit_batch(self, payloads: Iterable[Mapping[str, Any]]) -> list[SubmitOutcome]:
        """Submit many payloads in one transaction (all or nothing), one round trip per chunk."""
        from .store.submit import submit_tasks

        if isinstance(payloads, Mapping) or isinstance(payloads, str | bytes):
            raise ValidationError("payloads", "must be a list of payload dicts")
        new = []
        builder = self.definition.builder(self.options)
        for index, payload in enumerate(payloads):
            try:
                new.append(builder.build(payload))
            except ValidationError as exc:
                raise ValidationError(f"payloads[{index}].{exc.field}", exc.message) from exc
        return submit_tasks(new) if new else []

    async def asubmit(self, /, **payload: Any) -> SubmitOutcome:
        return await sync_to_async(self.submit)(**payload)

    async def asubmit_batch(self, payloads: Iterable[Mapping[str, Any]]) -> list[SubmitOutcome]:
        return await sync_to_async(self.submit_batch)(list(payloads))


def _first_set(*values: float | None) -> float | None:
    """TTL precedence: per task, then per type (which already includes the domain's), then
    the global DEFAULT_TTL."""
    for value in values:
        if value is not None:
            return float(value)
    return None


@dataclass(frozen=True)
class _PayloadShape:
    """Which keyword payloads bind to ``func(ctx, ...)``, as name sets: checking them is a
    fraction of ``Signature.bind`` on the batch submission path. A payload that does not fit
    goes through ``bind`` for its error message."""

    ctx: str
    required: frozenset[str]
    allowed: frozenset[str] | None  # None: **kwargs takes any name

    @classmethod
    def of(cls, signature: inspect.Signature | None) -> _PayloadShape | None:
        params = list(signature.parameters.values()) if signature is not None else []
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if not params or params[0].kind not in positional:
            return None
        required, allowed, any_name = set(), set(), False
        for p in params[1:]:
            if p.kind == inspect.Parameter.VAR_KEYWORD:
                any_name = True
            elif p.kind == inspect.Parameter.POSITIONAL_ONLY:
                if p.default is p.empty:
                    return None  # cannot be given by keyword: bind() explains
            elif p.kind != inspect.Parameter.VAR_POSITIONAL:
                allowed.add(p.name)
                if p.default is p.empty:
                    required.add(p.name)
        return cls(params[0].name, frozenset(required), None if any_name else frozenset(allowed))

    def fits(self, payload: Mapping[str, Any]) -> bool:
        names = payload.keys()
        return (
            self.required <= names
            and self.ctx not in names
            and (self.allowed is None or names <= self.allowed)
        )


def _signature_or_none(func: TaskFunc) -> inspect.Signature | None:
    """The function's signature, so a payload that could never bind fails at submit, not as
    a retried-then-dead-lettered TypeError in a worker."""
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None
