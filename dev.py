#!/usr/bin/env python3
"""Developer entry point for taskmill_django: run the tests, the demo site or the benchmarks.

    python3 dev.py test [--quick] [pytest args...]  lint, type-check and import contracts, then
                                                    the suite on each reachable database
    python3 dev.py demo [--port N]                  example_project with a worker, on SQLite
    python3 dev.py bench [args...]                  bench/run.py

Lint is ruff, mypy (with django-stubs) and import-linter (the contracts in setup.cfg); a
finding fails the run, and the tests run anyway. `--quick` skips MariaDB and the Django 6
stack (.venv-dj6: the newest Python here, 3.13 when found, with the latest Django 6.x;
TASKMILL_SKIP_DJANGO6=1 skips it too). With CI set, an unreachable PostgreSQL is a failure.

Standard library only, so it runs with any python3 >= 3.11 on a fresh machine: it builds `.venv`
itself and reinstalls only when setup.cfg or pyproject.toml change.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_DJ6 = ROOT / ".venv-dj6"
STAMP_NAME = ".taskmill-stamp"
LINT_TARGETS = ["taskmill_django", "tests"]
# The Django 6 stack: the newest Python the machines have, and the newest Django 6 release.
DJANGO6_PYTHON = (3, 13)
DJANGO6_REQUIREMENT = "Django>=6.0,<7"
NO_TESTS_COLLECTED = 5
DEMO_BANNER = """
  admin:  http://127.0.0.1:{port}/admin/   user admin, password admin
  API:    http://127.0.0.1:{port}/taskmill/api/
  Ctrl-C stops the server and the worker (its running tasks get {timeout:g} s to finish;
  a second Ctrl-C releases them at once).
"""
SHUTDOWN_MARGIN = 10.0  # seconds a worker may take beyond SHUTDOWN_TIMEOUT to release and exit


def run(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Run a command from the repository root and return its exit code."""
    return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


def python_in(venv: Path) -> Path:
    """The interpreter inside a virtual environment."""
    return venv / "bin" / "python"


def ensure_venv(
    venv: Path, interpreter: str, extra: tuple[str, ...] = (), extras: str = "test"
) -> Path | None:
    """Create `venv` with `interpreter` if needed and install the package with `extras`
    ("test": everything the suite needs; "": the package alone, which the demo needs).

    The install is skipped when the stamp file holds the hash of the packaging files (and of
    `extra`) for those extras or more, so repeated runs start in a second. Returns the venv's
    python, or None on failure.
    """
    digest = hashlib.sha256("\n".join(extra).encode())
    for name in ("setup.cfg", "pyproject.toml"):
        path = ROOT / name
        digest.update(path.read_bytes() if path.exists() else b"")
    stamp = venv / STAMP_NAME
    python = python_in(venv)
    if python.exists() and python_version(str(python)) != python_version(interpreter):
        print(f"{venv.name} was built with another Python: building it again")
        shutil.rmtree(venv)
    if not python.exists():
        print(f"creating {venv.name} with {interpreter}")
        if run([interpreter, "-m", "venv", str(venv)]) != 0:
            print(f"ERROR: could not create {venv.name}")
            return None
    label = extras or "package"
    installed = stamp.read_text().split() if stamp.exists() else []
    # A venv with the test extras has everything the demo needs too.
    if installed[-1:] == [digest.hexdigest()] and installed[0] in {label, "test"}:
        return python
    target = f".[{extras}]" if extras else "."
    print(f"installing taskmill-django{f'[{extras}]' if extras else ''} into {venv.name}")
    if run([str(python), "-m", "pip", "install", "-q", "-e", target, *extra]) != 0:
        print(f"ERROR: pip install into {venv.name} failed")
        return None
    stamp.write_text(f"{label} {digest.hexdigest()}\n")
    return python


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def ensure_postgres() -> bool:
    """Make PostgreSQL reachable on 127.0.0.1:5432, starting the local cluster if there is one."""
    if port_open(5432):
        return True
    conf = Path("/etc/postgresql")
    if shutil.which("pg_ctlcluster") and conf.is_dir():
        for version in sorted(p.name for p in conf.iterdir()):
            print(f"starting PostgreSQL {version} (pg_ctlcluster)")
            run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if port_open(5432):
                return True
            time.sleep(0.5)
    return False


def mariadb_ready(python: Path) -> bool:
    """Whether MariaDB listens on 3306 and mysqlclient is importable (installed once on demand)."""
    if not port_open(3306):
        print("MariaDB not reachable on 127.0.0.1:3306: MariaDB run skipped")
        return False
    probe = [str(python), "-c", "import MySQLdb"]
    if subprocess.run(probe, cwd=ROOT, capture_output=True, check=False).returncode == 0:
        return True
    if run([str(python), "-m", "pip", "install", "-q", "mysqlclient"]) == 0:
        return True
    # mysqlclient builds against the MariaDB client headers: install them and try again.
    if apt_install(["libmariadb-dev", "pkg-config"]):
        if run([str(python), "-m", "pip", "install", "-q", "mysqlclient"]) == 0:
            return True
    print("WARNING: MariaDB run skipped: mysqlclient could not be installed")
    return False


def python_version(interpreter: str) -> tuple[int, ...] | None:
    """(major, minor) of an interpreter, or None when it does not run."""
    probe = [interpreter, "-c", "import sys; print(*sys.version_info[:2])"]
    result = subprocess.run(probe, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None
    return tuple(int(part) for part in result.stdout.split())


def find_python(version: tuple[int, int]) -> str | None:
    """A working python3.N from PATH or pyenv; shims that cannot run are passed over."""
    name = "python{}.{}".format(*version)
    candidates = [shutil.which(name)]
    pattern = "/root/.pyenv/versions/{}.{}*/bin/{}".format(*version, name)
    candidates += sorted(glob.glob(pattern), reverse=True)
    for candidate in filter(None, candidates):
        if python_version(candidate) == version:
            return candidate
    return None


_apt_updated = False


def apt_install(packages: list[str]) -> bool:
    """Install Debian packages when running as root with apt (best effort, quiet)."""
    global _apt_updated
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return False
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, **quiet)
        _apt_updated = True
    install = ["apt-get", "install", "-y", "-qq", *packages]
    return subprocess.run(install, check=False, env=env, **quiet).returncode == 0


def ensure_browser(python: Path) -> None:
    """Best effort: Debian's chromium and the playwright package for the browser test, which
    is deselected (never counted) where they are missing."""
    if not Path("/usr/bin/chromium").exists():
        print("installing chromium for the browser test (apt-get)")
        apt_install(["chromium"])
    probe = [str(python), "-c", "import playwright"]
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        run([str(python), "-m", "pip", "install", "-q", "playwright"])
    if not Path("/usr/bin/chromium").exists():
        print("WARNING: chromium not available: the browser test is deselected")


def ensure_pgbouncer() -> None:
    """Best effort: Debian's pgbouncer for the tests behind a transaction-mode pooler, which
    are deselected (never counted) where it is missing."""
    if not shutil.which("pgbouncer", path=PGBOUNCER_PATH):
        print("installing pgbouncer for the pooler tests (apt-get)")
        apt_install(["pgbouncer"])
    if not shutil.which("pgbouncer", path=PGBOUNCER_PATH):
        print("WARNING: pgbouncer not available: the pooler tests are deselected")


def ensure_faketime() -> None:
    """Best effort: Debian's libfaketime for the clock-offset tests, which are deselected
    (never counted) where it is missing."""
    if not LIBFAKETIME.exists():
        print("installing faketime for the clock-offset tests (apt-get)")
        apt_install(["faketime"])
    if not LIBFAKETIME.exists():
        print("WARNING: libfaketime not available: the clock-offset tests are deselected")


LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
# Debian installs pgbouncer in /usr/sbin, which a non-root PATH may lack.
PGBOUNCER_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def lint(python: Path) -> bool:
    """ruff check and ruff format --check over the package and the tests."""
    ruff = str(python.parent / "ruff")
    print("== ruff ==")
    ok = run([ruff, "check", *LINT_TARGETS]) == 0
    return run([ruff, "format", "--check", *LINT_TARGETS]) == 0 and ok


def type_check(python: Path) -> bool:
    """mypy over the package (settings in pyproject.toml, with the django-stubs plugin)."""
    print("== mypy ==", flush=True)
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return run([str(python), "-m", "mypy"], env=env) == 0


def import_contracts(python: Path) -> bool:
    """import-linter: the layering of the package (contracts in setup.cfg)."""
    print("== import-linter ==", flush=True)
    return run([str(python.parent / "lint-imports"), "--no-cache"]) == 0


def pytest(python: Path, db: str, label: str, args: list[str]) -> int:
    """Run the suite against one database; 'no tests collected' counts as a failure."""
    print(f"\n== tests on {label} ==", flush=True)
    # pytest-django prefers DJANGO_SETTINGS_MODULE from the environment over pyproject.toml.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["TASKMILL_TEST_DB"] = db
    code = run([str(python), "-m", "pytest", "-p", "no:cacheprovider", *args], env=env)
    if code == NO_TESTS_COLLECTED:
        print(f"no tests collected on {label}: counted as a failure")
    return code


def cmd_test(argv: list[str]) -> int:
    """Lint, then run the suite on SQLite, PostgreSQL and, when available, MariaDB and Django 6."""
    quick = "--quick" in argv
    args = [a for a in argv if a != "--quick"]
    python = ensure_venv(VENV, sys.executable)
    if python is None:
        return 1
    results: dict[str, int | str] = {
        "ruff": 0 if lint(python) else 1,
        "mypy": 0 if type_check(python) else 1,
        "import-linter": 0 if import_contracts(python) else 1,
    }
    for name in ("ruff", "mypy", "import-linter"):
        if results[name]:
            print(f"{name} found problems; running the tests anyway")

    if not quick:
        ensure_browser(python)
    results["sqlite"] = pytest(python, "sqlite", "sqlite", args)
    has_postgres = ensure_postgres()
    if has_postgres:
        ensure_pgbouncer()
        ensure_faketime()
        results["postgres"] = pytest(python, "postgres", "postgres", args)
    elif os.environ.get("CI"):
        print("ERROR: PostgreSQL is not reachable on 127.0.0.1:5432 and CI is set")
        results["postgres"] = "unreachable"
    else:
        print("\nWARNING: PostgreSQL is not reachable on 127.0.0.1:5432: PostgreSQL run SKIPPED")
        results["postgres"] = "skipped"

    if not quick:
        ready = mariadb_ready(python)
        results["mariadb"] = pytest(python, "mariadb", "mariadb", args) if ready else "skipped"

    newest = (
        None if quick or os.environ.get("TASKMILL_SKIP_DJANGO6") else find_python(DJANGO6_PYTHON)
    )
    dj6 = ensure_venv(VENV_DJ6, newest, (DJANGO6_REQUIREMENT,)) if newest else None
    if newest and dj6 is None:
        results["Django 6 venv"] = "install failed"
    elif dj6 is not None:
        results["sqlite (Django 6)"] = pytest(dj6, "sqlite", "sqlite (Django 6)", args)
        if has_postgres:
            results["postgres (Django 6)"] = pytest(dj6, "postgres", "postgres (Django 6)", args)
    elif not quick:
        version = "{}.{}".format(*DJANGO6_PYTHON)
        print(f"Django 6 stack skipped (no working python{version}, or TASKMILL_SKIP_DJANGO6 set)")

    print("\n== summary ==")
    for name, status in results.items():
        verdict = status if isinstance(status, str) else "ok" if status == 0 else "FAILED"
        print(f"  {name:<22} {verdict}" + ("" if isinstance(status, str) else f" (exit {status})"))
    return 1 if any(status not in (0, "skipped") for status in results.values()) else 0


def say(text: str) -> None:
    """Print, also when stdout is a pipe whose reader is gone (``dev.py demo | tee`` after
    Ctrl-C, which stops tee too): the message goes to stderr instead of raising, so shutting
    down the children never stops half-way."""
    try:
        print(text, flush=True)
    except OSError:
        sys.stdout = open(os.devnull, "w")  # the broken stream is replaced for good
        try:
            print(text, file=sys.stderr, flush=True)
        except OSError:
            pass


def stop(process: subprocess.Popen[bytes], name: str, timeout: float = 10.0) -> None:
    """SIGTERM a child, give it ``timeout`` seconds to shut down gracefully, then kill it."""
    if process.poll() is not None:
        return
    say(f"stopping {name} (pid {process.pid}, waiting up to {timeout:g} s)")
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        say(f"{name} did not stop within {timeout:g} s: killing it")
        process.kill()
        process.wait()


def cmd_demo(argv: list[str]) -> int:
    """Migrate example_project, seed an admin user and demo tasks, then serve it with a worker."""
    port = argv[argv.index("--port") + 1] if "--port" in argv[:-1] else "8000"
    python = ensure_venv(VENV, sys.executable, extras="postgres" if _demo_on_postgres() else "")
    if python is None:
        return 1
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "example_project.settings"}
    manage = [str(python), "manage.py"]
    prepare = (
        "from django.contrib.auth import get_user_model\n"
        "from taskmill_django.conf import app_settings\n"
        "User = get_user_model()\n"
        "if not User.objects.filter(**{User.USERNAME_FIELD: 'admin'}).exists():\n"
        "    User.objects.create_superuser('admin', 'admin@example.com', 'admin')\n"
        "print(float(app_settings.SHUTDOWN_TIMEOUT))\n"
    )
    if run([*manage, "migrate", "--noinput"], env=env) != 0:
        return 1
    prepared = subprocess.run(
        [*manage, "shell", "-c", prepare], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if prepared.returncode != 0 or run([*manage, "taskmill_demo"], env=env) != 0:
        say(prepared.stderr)
        return 1
    shutdown_timeout = float(prepared.stdout.split()[-1])

    worker: subprocess.Popen[bytes] | None = None
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        """The first Ctrl-C (or SIGTERM, SIGHUP) stops the demo; later ones only tell the
        worker to release its tasks at once: nothing may leave the worker running."""
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt
        if signum == signal.SIGINT and worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGINT)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    server = None
    try:
        # Own session: Ctrl-C reaches only the server and us; the worker hears from us alone.
        worker = subprocess.Popen(
            [*manage, "runtaskmill", "--concurrency", "4"],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        say(DEMO_BANNER.format(port=port, timeout=shutdown_timeout))
        server = subprocess.Popen(
            [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"], cwd=ROOT, env=env
        )
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stopping = True
        if server is not None:
            stop(server, "server")
        if worker is not None:
            # The wait covers the worker's own SHUTDOWN_TIMEOUT, and then some.
            stop(worker, "worker", shutdown_timeout + SHUTDOWN_MARGIN)


def _demo_on_postgres() -> bool:
    return os.environ.get("TASKMILL_DEMO_DB") == "postgres"


def cmd_bench(argv: list[str]) -> int:
    """Run bench/run.py in the project venv, passing the arguments through."""
    python = ensure_venv(VENV, sys.executable)
    if python is None:
        return 1
    return run([str(python), "bench/run.py", *argv])


COMMANDS = {"test": cmd_test, "demo": cmd_demo, "bench": cmd_bench}


def main(argv: list[str]) -> int:
    """Dispatch to a subcommand."""
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
