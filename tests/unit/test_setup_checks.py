"""System checks of a project's setup: the API extra, SQLite modes, task signatures (E070-E072,
W071, W072). Projects missing a package or misconfigured run in a subprocess of their own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from taskmill_django import Domain
from taskmill_django.checks_setup import check_api_packages, check_sqlite, check_task_functions

ROOT = Path(__file__).resolve().parents[2]

# A project installed without [api]: None in sys.modules makes both ``import`` and
# ``importlib.util.find_spec`` treat the packages as absent.
WITHOUT_API = """
import sys
sys.modules["rest_framework"] = None
sys.modules["django_filters"] = None
"""


def _check(tmp_path: Path, *, databases: str, urls: str, hide_api: bool) -> str:
    """``manage.py check`` of a minimal project; its output (errors included)."""
    (tmp_path / "probe_settings.py").write_text(
        textwrap.dedent(
            f"""
            SECRET_KEY = "probe"
            USE_TZ = True
            INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth",
                              "taskmill_django"]
            ROOT_URLCONF = "probe_urls"
            DATABASES = {databases}
            # Harmless on SQLite, and reported by Django 6's check (docs/reference/checks.md).
            SILENCED_SYSTEM_CHECKS = ["models.W040"]
            """
        )
    )
    (tmp_path / "probe_urls.py").write_text(textwrap.dedent(urls))
    code = (WITHOUT_API if hide_api else "") + textwrap.dedent(
        """
        import django
        from django.core.management import call_command
        django.setup()
        call_command("check")
        """
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "probe_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    run = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return run.stdout + run.stderr


MEMORY_DB = '{"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}'
API_URLS = """
from django.urls import include, path
urlpatterns = [path("taskmill/api/", include("taskmill_django.api.urls"))]
"""


def test_checks__api_urls_without_drf_is_e070(tmp_path):
    out = _check(tmp_path, databases=MEMORY_DB, urls=API_URLS, hide_api=True)
    assert "taskmill.E070" in out
    assert "djangorestframework and django-filter are not installed" in out
    assert 'pip install "taskmill-django[api]"' in out
    assert "ModuleNotFoundError" not in out


def test_checks__no_api_urls_without_drf_is_clean(tmp_path):
    out = _check(tmp_path, databases=MEMORY_DB, urls="urlpatterns = []", hide_api=True)
    assert "System check identified no issues" in out, out


def test_checks__sqlite_file_without_wal_or_immediate_warns_w071(tmp_path):
    plain = f'{{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": "{tmp_path}/db"}}}}'
    out = _check(tmp_path, databases=plain, urls="urlpatterns = []", hide_api=False)
    assert "taskmill.W071" in out
    assert '"transaction_mode": "IMMEDIATE"' in out
    assert "PRAGMA journal_mode=WAL" in out


def test_checks__setup_of_the_test_settings_is_clean():
    # tests/settings.py: SQLite as the quick start says, the API installed, tasks take ctx.
    assert check_api_packages() == []
    assert check_sqlite() == []
    assert check_task_functions() == []


def test_checks__task_without_ctx_is_e072(isolated_registry):
    mail = Domain("mail_probe")

    @mail.task("send")
    def send(*, to: str) -> None: ...

    @mail.task("ping")
    def ping() -> None: ...

    messages = [m for m in check_task_functions() if "mail_probe" in m.msg]
    assert [m.id for m in messages] == ["taskmill.E072", "taskmill.E072"]
    assert "does not take ctx as its first argument" in messages[0].msg


def test_checks__first_parameter_not_named_like_a_context_warns_w072(isolated_registry):
    mail = Domain("mail_probe2")

    @mail.task("send")
    def send(to: str, subject: str) -> None: ...

    (message,) = [m for m in check_task_functions() if "mail_probe2" in m.msg]
    assert message.id == "taskmill.W072"
    assert "is 'to': it receives the TaskContext" in message.msg


def test_checks__finalize_hook_without_memo_is_e072(isolated_registry):
    flows = Domain("flows_probe")

    @flows.task("parent")
    def parent(ctx) -> None: ...

    @parent.finalize
    def done(ctx) -> None: ...

    (message,) = [m for m in check_task_functions() if "flows_probe" in m.msg]
    assert message.id == "taskmill.E072"
    assert "finalize hook" in message.msg and "ctx, memo" in message.msg
