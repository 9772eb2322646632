"""The admin at the widths operators use (1400 px and 1920 px, with the admin's app sidebar
open), in headless Chromium: what only a real layout engine shows. The links of the app page read
as words, the dashboard is one click from the admin index, lists show every column, object pages
tell times to the second and offer only the actions the task's state allows, and the dashboard's
charts show work that came and went within a minute, each domain chart with its legend.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from taskmill_django import scheduler
from taskmill_django.models import Task, TaskHistory
from tests.testapp.tasks import record

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = [1400, 1920]
PASSWORD = "a-long-test-password"  # noqa: S105 - test only
LONG_ERROR = (
    "RetryableError: upstream said no: HTTP 503 from "
    "https://billing.example.com/api/v2/invoices/2024-11/export?format=csv&tenant=acme after 30 s"
)


@pytest.fixture
def operator_page(site_url: str, new_page: Any, request: pytest.FixtureRequest) -> Any:
    """A logged-in superuser's page, ``request.param`` pixels wide, the app sidebar open."""
    User.objects.create_superuser("operator", "ops@example.com", PASSWORD)
    page = new_page(request.param, sidebar=True)
    page.goto(f"{site_url}/admin/login/?next=/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")
    page.base = site_url
    return page


def history_row(n: int, **fields: Any) -> TaskHistory:
    now = timezone.now()
    values = {
        "task_type": "tests::record",
        "domain": "tests",
        "key": f"browser-{n}",
        "priority": 128,
        "status": "completed",
        "created_at": now - timedelta(seconds=30),
        "finished_at": now - timedelta(seconds=20),
        **fields,
    }
    return TaskHistory.objects.create(id=80_000_000 + n, **values)


def by_width(test: Any) -> Any:
    return pytest.mark.parametrize("operator_page", WIDTHS, indirect=True)(test)


@by_width
def test_admin_app_page__operations_links_read_as_words(operator_page):
    page = operator_page
    page.goto(f"{page.base}/admin/taskmill_django/")

    links = page.locator(".tm-operations th a")
    assert links.count() == 3
    for box in (links.nth(i).bounding_box() for i in range(3)):
        assert box["width"] > box["height"] * 3, box  # one line, not one letter per line


@by_width
def test_admin_index__dashboard_is_one_click_away(operator_page):
    page = operator_page
    page.goto(f"{page.base}/admin/")

    page.click("#content-main .app-taskmill_django a:text-is('Dashboard')")

    page.wait_for_selector("#tm-dashboard")
    assert page.url.endswith("/admin/taskmill_django/task/dashboard/")


def columns_fit(page: Any) -> bool:
    """The result table is no wider than the area showing it (nothing scrolled out of sight)."""
    return page.evaluate(
        "() => { const r = document.querySelector('.results');"
        " return r.scrollWidth <= r.clientWidth; }"
    )


@by_width
def test_admin_lists__every_column_in_sight(operator_page):
    page = operator_page
    for n in range(3):
        record.using(
            label=f"quarterly export for tenant-{n} of the northern region",
            group="tenant-a",
            run_after=timedelta(hours=1),
        ).submit(n=n)
    for n in range(3):
        history_row(n, status="failed", last_error=LONG_ERROR)
    history_row(9, status="dead_letter", last_error=LONG_ERROR, label="nightly export")

    for path, last_column in [
        ("/admin/taskmill_django/task/", "column-age_display"),
        ("/admin/taskmill_django/taskhistory/?status__exact=failed", "column-error_excerpt"),
        ("/admin/taskmill_django/deadletter/", "column-requeued_display"),
    ]:
        page.goto(page.base + path)
        assert page.locator(f"#result_list th.{last_column}").is_visible(), path
        assert columns_fit(page), path


@by_width
def test_admin_object_pages__times_to_the_second(operator_page):
    page = operator_page
    row = history_row(1)

    page.goto(f"{page.base}/admin/taskmill_django/taskhistory/{row.id}/change/")

    finished = page.inner_text(".field-finished_at .readonly")
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", finished), finished


@by_width
def test_admin_task_page__actions_follow_the_state(operator_page):
    page = operator_page
    pending = record.submit(n=1).id
    by_hand = record.submit(n=2).id
    Task.objects.filter(id=by_hand).update(status="paused", pause_reason="manual")

    def tools(task_id: int) -> list[str]:
        page.goto(f"{page.base}/admin/taskmill_django/task/{task_id}/change/")
        return page.locator(".object-tools button.tm-tool").all_inner_texts()

    assert [t.lower() for t in tools(pending)] == ["cancel", "pause", "change priority…"]
    assert [t.lower() for t in tools(by_hand)] == ["cancel", "resume", "change priority…"]
    children = page.inner_text(".field-children_display .readonly")
    assert page.locator(".field-children_display .readonly a").count() == 0, children


@by_width
def test_admin_dashboard__quick_work_shows_in_the_queue_depth_and_legends_sit_with_their_charts(
    operator_page,
):
    page = operator_page
    now = timezone.now()
    for n in range(3):  # came and went within the last minute, nine seconds each
        arrived = now - timedelta(seconds=40 - 10 * n)
        history_row(n, created_at=arrived, finished_at=arrived + timedelta(seconds=9))
    scheduler.pause_group("tenant-b")  # the dashboard has something in every panel

    page.goto(f"{page.base}/admin/taskmill_django/task/dashboard/")

    figures = page.locator("[data-panel=charts] figure")
    assert [figures.nth(i).locator(".tm-legend").count() for i in range(4)] == [1, 1, 0, 0]
    depth = figures.nth(2).locator("svg.tm-chart title").all_text_contents()
    assert any(re.search(r"up to [1-9]\d* unfinished", tip) for tip in depth), depth[-3:]
