"""The admin dashboard in a real browser: a live server, a real worker, headless Chromium.

Checks what unit tests cannot: the page's script polls and swaps in fresh panels, the charts
and progress bars are really drawn, and an operator can retry a dead-letter entry from the list.
Leaves screenshots in the test's tmp folder; with TASKMILL_UPDATE_DOC_SCREENSHOTS=1 it also
refreshes the ones in ``docs/img/``.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from taskmill_django import scheduler
from taskmill_django.models import Schedule, Task, TaskHistory
from taskmill_django.policy.ratelimit import RateLimit
from tests.conftest import ROOT, wait_until
from tests.testapp.tasks import progress, record, sleep

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DEAD_KEY = "dead-letter-in-browser"


def _history() -> None:
    """An hour of finished work across three domains, and one dead-letter entry."""
    now = timezone.now()
    rows = []
    next_id = iter(range(50_000_000, 60_000_000))
    plan = [
        ("tests", "tests::record", 3, 80),
        ("other", "other::noop", 2, 35),
        ("flows", "flows::wf_step", 1, 900),
        ("tests", "tests::sleep", 0, 30_000),
    ]
    for minute in range(60):
        finished = now - timedelta(minutes=59 - minute, seconds=5)
        for domain, task_type, per_minute, duration in plan:
            wave = 1 + (minute // 7) % 3
            for n in range(per_minute * wave if per_minute else (1 if minute % 6 == 0 else 0)):
                rows.append(
                    TaskHistory(
                        id=next(next_id),
                        task_type=task_type,
                        domain=domain,
                        key=f"hist-{domain}-{minute}-{n}",
                        priority=128,
                        status="completed",
                        created_at=finished - timedelta(seconds=duration / 1000 + 9 * n + wave * 8),
                        started_at=finished - timedelta(milliseconds=duration),
                        finished_at=finished,
                        duration_ms=duration + (minute * 7 + n * 13) % max(duration // 2, 1),
                        read_bytes=4096,
                        write_bytes=1024,
                    )
                )
        if minute % 9 == 4:
            rows.append(
                TaskHistory(
                    id=next(next_id),
                    task_type="other::noop",
                    domain="other",
                    key=f"fail-{minute}",
                    priority=64,
                    status="failed",
                    created_at=finished - timedelta(seconds=1),
                    finished_at=finished,
                    last_error="ValueError: upstream said no",
                )
            )
    rows.append(
        TaskHistory(
            id=next(next_id),
            task_type="tests::record",
            domain="tests",
            key=DEAD_KEY,
            label="nightly export",
            priority=128,
            status="dead_letter",
            payload={"n": 4242},
            retry_count=3,
            max_retries=3,
            created_at=now - timedelta(minutes=3),
            finished_at=now - timedelta(minutes=2),
            last_error="RetryableError: relay timed out (attempt 4)",
        )
    )
    TaskHistory.objects.bulk_create(rows)


def _cluster_settings() -> None:
    scheduler.set_group_limit("tenant-a", 2)
    scheduler.pause_group("tenant-b")
    scheduler.set_rate_limit("tests::record", RateLimit.per_second(20))
    Schedule.objects.create(
        name="hourly-digest",
        task_type="tests::record",
        domain="tests",
        payload={"n": 1},
        interval_seconds=3600,
        next_run_at=timezone.now() + timedelta(minutes=23),
        occurrence_count=12,
    )


def _login(page: Any, base: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")


def test_dashboard__live_panels_and_dead_letter_retry(
    site_url, worker_factory, browser_page, tmp_path
):
    User.objects.create_superuser("operator", "ops@example.com", "a-long-test-password")
    _history()
    _cluster_settings()
    for n in range(3):
        sleep.using(label=f"render report {n + 1}", group="tenant-a").submit(seconds=60, n=n)
    progress.using(label="import catalogue").submit(seconds=60)
    record.using(run_after=timedelta(hours=1), tags={"customer": "acme"}).submit(n=1)
    worker_factory("--concurrency", "4", "--name", "web-1")
    wait_until(lambda: Task.objects.filter(status="running").count() >= 3, timeout=60)

    _check_dashboard(browser_page, site_url, tmp_path)
    _tour(browser_page, site_url, tmp_path)
    _retry_dead_letter(browser_page, site_url, tmp_path)


def _check_dashboard(page: Any, base: str, tmp_path: Any) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _login(page, base)
    page.goto(f"{base}/admin/taskmill_django/task/dashboard/")

    charts = page.locator("[data-panel=charts] svg.tm-chart")
    assert charts.count() == 4
    assert page.locator("[data-panel=charts] svg.tm-chart").first.locator("rect").count() > 60
    assert page.locator("[data-panel=workers]").inner_text().count("web-1") == 1
    bars = page.locator("[data-panel=running] .tm-progress > span")
    wait_until(lambda: bars.count() >= 3, timeout=30)
    first = page.get_attribute("#tm-dashboard", "data-generated-at")
    widths = _bar_widths(page)

    # The script polls the JSON view and swaps the panels in place.
    page.wait_for_function(
        "(first) => document.getElementById('tm-dashboard').dataset.generatedAt !== first",
        arg=first,
        timeout=30_000,
    )
    page.wait_for_function(
        "(before) => JSON.stringify(Array.from(document.querySelectorAll("
        "'[data-panel=running] .tm-progress > span')).map(s => s.style.width)) !== before",
        arg=_json(widths),
        timeout=30_000,
    )
    assert "Updated" in page.inner_text("#tm-live")
    assert "halfway" in page.inner_text("[data-panel=running]")
    assert not errors, errors

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("TASKMILL_UPDATE_DOC_SCREENSHOTS"):
        docs = ROOT / "docs" / "img"
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, docs / "dashboard.png")


def _bar_widths(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "[data-panel=running] .tm-progress > span", "spans => spans.map(s => s.style.width)"
    )


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _tour(page: Any, base: str, tmp_path: Any) -> None:
    """Every other page renders without script errors; screenshots for the docs."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    running = Task.objects.filter(status="running", task_type="tests::sleep").order_by("id")[0]
    pages = {
        "tasks": "/admin/taskmill_django/task/?status__exact=running",
        "task": f"/admin/taskmill_django/task/{running.id}/change/",
        "dead-letters": "/admin/taskmill_django/deadletter/",
        "history": "/admin/taskmill_django/taskhistory/?status__exact=failed",
        "controls": "/admin/taskmill_django/task/controls/",
        "tags": "/admin/taskmill_django/task/tags/?key=customer",
    }
    for name, path in pages.items():
        response = page.goto(base + path)
        assert response.status == 200, (name, response.status)
        page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    assert not errors, errors
    for name in ("task", "dead-letters"):
        if os.environ.get("TASKMILL_UPDATE_DOC_SCREENSHOTS"):
            shutil.copyfile(tmp_path / f"{name}.png", ROOT / "docs" / "img" / f"{name}.png")


def _retry_dead_letter(page: Any, base: str, tmp_path: Any) -> None:
    entry = TaskHistory.objects.get(key=DEAD_KEY)
    page.goto(f"{base}/admin/taskmill_django/deadletter/")
    page.check(f"input.action-select[value='{entry.id}']")
    page.select_option("select[name=action]", "retry_entries")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist .success")
    assert "1 inserted" in page.inner_text(".messagelist")
    page.screenshot(path=str(tmp_path / "dead-letter-retried.png"), full_page=True)
    wait_until(
        lambda: TaskHistory.objects.filter(key=DEAD_KEY, status="completed").exists(),
        timeout=60,
    )
    retried = TaskHistory.objects.get(key=DEAD_KEY, status="completed")
    assert retried.payload == {"n": 4242}
