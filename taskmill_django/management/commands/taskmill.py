"""``manage.py taskmill status|prune|retry|cancel``: operator commands over the query API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from taskmill_django import scheduler
from taskmill_django.exceptions import TaskmillError


class Command(BaseCommand):
    help = "Inspect and steer the taskmill queue: status, prune, retry, cancel, pause, resume."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("status", help="Counts per domain and status, and live workers.")
        prune = sub.add_parser("prune", help="Delete old history.")
        prune.add_argument("--keep", type=int, help="Keep the newest N rows.")
        prune.add_argument("--days", type=float, help="Delete rows older than N days.")
        retry = sub.add_parser("retry", help="Re-submit dead-letter entries.")
        retry.add_argument("history_ids", nargs="+", type=int)
        cancel = sub.add_parser("cancel", help="Cancel active tasks by id.")
        cancel.add_argument("task_ids", nargs="+", type=int)
        for verb in ("pause", "resume"):
            cmd = sub.add_parser(verb, help=f"{verb.title()} the cluster, a domain or a group.")
            target = cmd.add_mutually_exclusive_group()
            target.add_argument("--domain", help=f"{verb.title()} one domain.")
            target.add_argument("--group", help=f"{verb.title()} one group.")
            if verb == "pause":
                cmd.add_argument(
                    "--minutes",
                    type=float,
                    help="With --group: resume automatically after N minutes.",
                )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, f"do_{options['action']}")(options)
        except TaskmillError as exc:
            raise CommandError(str(exc)) from exc

    def do_status(self, options: dict[str, Any]) -> None:
        # Counts only: the running tasks themselves (all of them, in a large cluster) stay unread.
        snap = scheduler.snapshot(running_limit=0)
        self.stdout.write(
            f"pending={snap.pending_count} running={snap.running_count} "
            f"paused={snap.paused_count} blocked={snap.blocked_count} waiting={snap.waiting_count}"
        )
        for domain, counts in sorted(snap.counts_by_domain.items()):
            parts = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            self.stdout.write(f"  {domain}: {parts}")
        for w in snap.workers:
            state = "alive" if w.is_alive else "silent"
            self.stdout.write(
                f"worker {w.name} {state} running={w.running_count}/{w.concurrency} "
                f"heartbeat={w.heartbeat_age_seconds:.1f}s ago"
            )

    def do_prune(self, options: dict[str, Any]) -> None:
        keep, days = options.get("keep"), options.get("days")
        if keep is None and days is None:
            raise CommandError("prune needs --keep N and/or --days N")
        if (keep is not None and keep < 0) or (days is not None and days < 0):
            raise CommandError("--keep and --days must be >= 0")
        store = scheduler.store()
        deleted = 0
        if days is not None:
            deleted += store.prune_history_by_age(days)
        if keep is not None:
            deleted += store.prune_history_by_count(keep)
        self.stdout.write(f"deleted {deleted} history rows")

    def do_retry(self, options: dict[str, Any]) -> None:
        for history_id in options["history_ids"]:
            outcome = scheduler.retry_dead_letter(history_id)
            self.stdout.write(f"{history_id}: {outcome.kind} as task {outcome.id}")

    def do_pause(self, options: dict[str, Any]) -> None:
        minutes = options.get("minutes")
        if minutes is not None and (minutes <= 0 or not options.get("group")):
            raise CommandError("--minutes takes a positive number and goes with --group")
        if options.get("domain"):
            count = scheduler.domain(options["domain"]).pause()
            self.stdout.write(f"domain {options['domain']} paused ({count} running tasks pausing)")
        elif options.get("group"):
            until = timezone.now() + timedelta(minutes=minutes) if minutes else None
            count = scheduler.pause_group(options["group"], until)
            self.stdout.write(
                f"group {options['group']} paused"
                + (f" until {until}" if until else "")
                + f" ({count} running tasks pausing)"
            )
        else:
            count = scheduler.pause_all()
            self.stdout.write(f"all dispatching paused ({count} running tasks pausing)")

    def do_resume(self, options: dict[str, Any]) -> None:
        if options.get("domain"):
            count = scheduler.domain(options["domain"]).resume()
            self.stdout.write(f"domain {options['domain']} resumed ({count} tasks pending again)")
        elif options.get("group"):
            scheduler.resume_group(options["group"])
            self.stdout.write(f"group {options['group']} resumed")
        else:
            count = scheduler.resume_all()
            self.stdout.write(f"dispatching resumed ({count} tasks pending again)")

    def do_cancel(self, options: dict[str, Any]) -> None:
        for task_id in options["task_ids"]:
            done = scheduler.cancel(task_id)
            self.stdout.write(f"{task_id}: {'cancelled' if done else 'not active'}")
