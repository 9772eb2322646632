"""``manage.py taskmill_demo``: submit a mix of demo tasks and say what each submission did.

Safe to run again and again (``python3 dev.py demo`` runs it at every start): work that is still
queued from an earlier run is recognised by its dedup key and reported as a duplicate instead
of being queued twice.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from example_project.demo.tasks import (
    ALWAYS_TIMES_OUT,
    BOUNCES,
    build_report,
    publish_report,
    send,
    thumbnail,
    transcode,
)
from taskmill_django import DuplicateTaskError, Priority, SubmitOutcome, scheduler


class Command(BaseCommand):
    help = "Submit a mix of demo tasks (priorities, tags, duplicates, a dependency chain, a batch)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--images",
            type=int,
            default=12,
            help="Thumbnails in the batch submission (default 12).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.section("A batch of thumbnails, tagged by customer (one transaction)")
        paths = [f"photos/cat-{n:02d}.jpg" for n in range(max(options["images"], 1))]
        outcomes = thumbnail.using(tags={"customer": "acme"}).submit_batch(
            [{"path": path, "size": 256} for path in paths]
        )
        kinds = sorted({o.kind for o in outcomes})
        self.line(f"{len(outcomes)} thumbnails: {', '.join(kinds)}")

        self.section("The same work again: deduplicated by key")
        first = {"path": paths[0], "size": 256}
        self.show("same payload", thumbnail.submit(**first))
        self.show("same payload, HIGH", thumbnail.using(priority=Priority.HIGH).submit(**first))
        try:
            outcome = thumbnail.using(duplicate="reject").submit(**first)
        except DuplicateTaskError as exc:
            self.line(f"{'duplicate=reject':<26} DuplicateTaskError: {exc}")
        else:
            self.show("duplicate=reject", outcome)

        self.section("Priorities: urgent work jumps the queue")
        urgent = thumbnail.using(priority=Priority.REALTIME, tags={"customer": "globex"})
        self.show("REALTIME thumbnail", urgent.submit(path="avatars/ceo.png", size=64))
        self.show("BACKGROUND transcode", asyncio.run(transcode.asubmit(video="intro.mp4")))

        self.section("A dependency chain: build -> publish -> notify")
        month = "2024-06"
        built = build_report.submit(month=month)
        self.show("build", built)
        published = publish_report.using(depends_on=[built.id]).submit(month=month)
        self.show("publish, after build", published)
        notified = send.using(depends_on=[published.id]).submit(
            to="team@example.com", subject=f"Report {month} is out"
        )
        self.show("notify, after publish", notified)

        self.section("Supersede: the newest submission replaces a queued one")
        draft = build_report.using(duplicate="supersede", label="draft report")
        self.show("draft", draft.submit(month="draft"))
        # The first draft goes to history as "superseded"; replaced_id names it.
        self.show("draft again", draft.submit(month="draft"))

        self.section("Emails: retries, a bounce and a dead letter")
        for n in range(6):
            self.show(f"newsletter #{n}", send.submit(to=f"user{n}@example.com", subject="News"))
        self.show("always times out", send.submit(to=ALWAYS_TIMES_OUT, subject="News"))
        self.show("bounces", send.submit(to=BOUNCES, subject="News"))
        reminder = send.using(run_after=timedelta(seconds=5), tags={"kind": "reminder"})
        self.show("in 5 seconds", reminder.submit(to="user0@example.com", subject="Reminder"))

        self.section("The queue now")
        snapshot = scheduler.snapshot()
        self.line(
            f"pending={snapshot.pending_count} blocked={snapshot.blocked_count} "
            f"running={snapshot.running_count}"
        )
        for domain, counts in sorted(snapshot.counts_by_domain.items()):
            self.line(f"{domain}: " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        by_customer = scheduler.domain("media").count_by_tag("customer")
        self.line(f"media tasks by customer tag: {by_customer}")
        self.stdout.write(
            "\nWork the queue with `python manage.py runtaskmill`, then look at the history and "
            "the dead-letter list in the admin. (`--burst` stops once nothing is due: a retry "
            "still waiting for its backoff then stays pending until the next run.)"
        )

    def section(self, title: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"\n{title}"))

    def line(self, text: str) -> None:
        self.stdout.write(f"  {text}")

    def show(self, what: str, outcome: SubmitOutcome) -> None:
        text = f"{what:<26} {outcome.kind:<10} task #{outcome.id}"
        if outcome.replaced_id is not None:
            text += f" (replaced #{outcome.replaced_id})"
        self.line(text)
