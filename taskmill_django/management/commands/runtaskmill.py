"""``manage.py runtaskmill``: parse flags, build DispatcherOptions, run the dispatcher."""

from __future__ import annotations

import argparse
from importlib import metadata
from typing import Any

import django
from django.core.management.base import BaseCommand, CommandError, CommandParser

from taskmill_django import registry
from taskmill_django.conf import app_settings
from taskmill_django.dispatcher import Dispatcher, DispatcherOptions
from taskmill_django.management import logs


def _concurrency(value: str) -> int:
    """``--concurrency``: a sentence, not argparse's "invalid _positive_int value"."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(
            f"the number of tasks this worker runs at once must be 1 or more, not {value}"
        )
    return number


def _positive_int(value: str) -> int:
    """A count of 1 or more, refused in a sentence."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, not {value}")
    return number


class Command(BaseCommand):
    help = "Run a taskmill worker: claim due tasks and execute them until stopped."

    def get_version(self) -> str:
        """``--version``: this package's version (Django's own comes second)."""
        try:
            version = metadata.version("taskmill-django")
        except metadata.PackageNotFoundError:
            version = "(not installed)"
        return f"taskmill-django {version} (Django {django.get_version()})"

    def add_arguments(self, parser: CommandParser) -> None:
        settings = app_settings
        parser.add_argument(
            "--concurrency",
            type=_concurrency,
            default=4,
            metavar="N",
            help="Tasks this process runs at once, its local pool size (default: 4).",
        )
        parser.add_argument(
            "--domains",
            default="",
            metavar="A,B",
            help="Comma-separated domains to serve (default: all).",
        )
        parser.add_argument(
            "--name", default="", help="Worker name shown to operators (default: host:pid)."
        )
        parser.add_argument(
            "--burst",
            action="store_true",
            help="Exit 0 as soon as nothing is due and nothing runs (default: run until stopped).",
        )
        parser.add_argument(
            "--shutdown-timeout",
            type=float,
            default=None,
            metavar="S",
            help="Seconds running tasks get to finish when the worker is asked to stop "
            f"(default: SHUTDOWN_TIMEOUT, {float(settings.SHUTDOWN_TIMEOUT):g}).",
        )
        parser.add_argument(
            "--max-tasks",
            type=_positive_int,
            default=None,
            metavar="N",
            help="Exit gracefully after claiming this many tasks, for a supervisor to start a "
            "fresh process (frees threads of abandoned tasks; default: no limit).",
        )
        parser.add_argument(
            "--max-memory",
            type=float,
            default=None,
            metavar="MB",
            help="Exit gracefully once this process's resident memory passes MB megabytes "
            "(default: no limit).",
        )
        parser.add_argument(
            "--log-format",
            choices=("text", "json"),
            default="text",
            help="text lines for people, or one JSON object per line for log shippers "
            "(default: text).",
        )
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=None,
            metavar="S",
            help="Seconds between looks at the queue when idle "
            f"(default: POLL_INTERVAL, {float(settings.POLL_INTERVAL):g}).",
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
