"""``manage.py runtaskmill``: parse flags, build DispatcherOptions, run the dispatcher."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from taskmill_django import registry
from taskmill_django.dispatcher import Dispatcher, DispatcherOptions
from taskmill_django.management import logs


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = "Run a taskmill worker: claim due tasks and execute them until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--concurrency",
            type=_positive_int,
            default=4,
            help="Tasks this process runs at once (its local pool size).",
        )
        parser.add_argument(
            "--domains", default="", help="Comma-separated domains to serve (default: all)."
        )
        parser.add_argument("--name", default="", help="Worker name shown to operators.")
        parser.add_argument(
            "--burst",
            action="store_true",
            help="Exit 0 as soon as nothing is due and nothing runs.",
        )
        parser.add_argument(
            "--shutdown-timeout",
            type=float,
            default=None,
            help="Seconds to wait for running tasks on SIGTERM.",
        )
        parser.add_argument(
            "--max-tasks",
            type=_positive_int,
            default=None,
            help="Exit gracefully after claiming this many tasks, for a supervisor to start a "
            "fresh process (frees threads of abandoned tasks).",
        )
        parser.add_argument(
            "--max-memory",
            type=float,
            default=None,
            metavar="MB",
            help="Exit gracefully once this process's resident memory passes MB megabytes.",
        )
        parser.add_argument(
            "--log-format",
            choices=("text", "json"),
            default="text",
            help="text lines for people, or one JSON object per line for log shippers.",
        )
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=None,
            help="Seconds between polls when idle (default POLL_INTERVAL).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        domains = [d.strip() for d in options["domains"].split(",") if d.strip()]
        for name in domains:
            if registry.find_domain(name) is None:
                known = ", ".join(d.name for d in registry.all_domains()) or "none"
                raise CommandError(f"--domains: unknown domain {name!r} (known: {known})")
        timeout = options["shutdown_timeout"]
        if timeout is not None and timeout < 0:
            raise CommandError("--shutdown-timeout must be >= 0")
        poll = options["poll_interval"]
        if poll is not None and poll <= 0:
            raise CommandError("--poll-interval must be > 0")
        memory = options["max_memory"]
        if memory is not None and memory <= 0:
            raise CommandError("--max-memory must be a number of megabytes > 0")
        logs.configure(options["log_format"], int(options["verbosity"]))
        dispatcher = Dispatcher(
            DispatcherOptions(
                concurrency=options["concurrency"],
                domains=domains or None,
                name=options["name"],
                burst=options["burst"],
                shutdown_timeout=timeout,
                poll_interval=poll,
                max_tasks=options["max_tasks"],
                max_memory_mb=memory,
            )
        )
        dispatcher.run()
