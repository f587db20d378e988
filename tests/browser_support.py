"""Run the real app and drive it with headless Chromium (tests and benchmarks).

- :func:`free_port` -- an unused TCP port.
- :class:`AppServer` -- ``streamlit run annotate_app/Home.py`` on a free port with
  ``RECFEEDBACK_STORE__DATA_DIR`` pointing at a given folder; waits for ``/_stcore/health``; kills the
  whole process group on exit.
- :func:`launch_chromium` -- Playwright's Chromium driver on Debian's ``/usr/bin/chromium``.
- :func:`login` -- fill the log-in form and wait for the app.
- pytest fixtures ``app_server`` (module scope; a seeded store) and ``browser`` (module scope).

The fixtures seed their own store with :func:`seed.seed_store`, so a test only needs to pick users.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("RECFEEDBACK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AppServer:
    """A live Streamlit app on a store folder; use as a context manager."""

    def __init__(self, data_dir: Path, *, port: int | None = None, env: dict[str, str] | None = None,
                 log_path: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.log_path = log_path or (self.data_dir / "streamlit.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> AppServer:
        env = {**os.environ, "RECFEEDBACK_STORE__DATA_DIR": str(self.data_dir), "HF_HUB_OFFLINE": "1",
               **self.extra_env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "annotate_app" / "Home.py"),
             "--server.port", str(self.port), "--server.address", "127.0.0.1", "--server.headless", "true",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"streamlit did not become healthy in {timeout_s:.0f} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> AppServer:  # noqa: PYI034 - start() returns self; Self needs 3.11
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() or shutil.which("chromium") is not None


@contextlib.contextmanager
def launch_chromium() -> Iterator[object]:
    """A Playwright Chromium browser on Debian's chromium binary (closed on exit)."""
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def login(page, base_url: str, user: str, password: str, *, path: str = "", timeout_ms: int = 30_000) -> None:
    """Open the app (optionally at a page path), log in, and wait until the log-in form is gone."""
    page.goto(f"{base_url}/{path}")
    page.get_by_role("textbox", name="User name").fill(user, timeout=timeout_ms)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name="Log out").wait_for(timeout=timeout_ms)
    # The session cookie is written by a script after the log-in rerun; a deep link opened before it
    # lands would meet the log-in form again.
    page.wait_for_function("() => document.cookie.includes('recfeedback_session=')", timeout=timeout_ms)


def wait_for_task_change(page, previous: str | None, timeout_ms: int = 15_000) -> str:
    """Wait until the Label page shows a pair other than ``previous``; return its marker."""
    page.wait_for_function(
        "prev => { const el = document.querySelector('[data-task]');"
        " return el && el.getAttribute('data-task') !== prev; }",
        arg=previous or "", timeout=timeout_ms,
    )
    return page.locator("[data-task]").first.get_attribute("data-task")


def current_task(page, timeout_ms: int = 15_000) -> str:
    page.locator("[data-task]").first.wait_for(state="attached", timeout=timeout_ms)
    return page.locator("[data-task]").first.get_attribute("data-task")


# ---------------------------------------------------------------- pytest fixtures

BROWSER_USERS = {"ann1": "annotator", "ann2": "annotator", "ann3": "annotator", "boss": "admin"}


@pytest.fixture(scope="module")
def seeded_app(tmp_path_factory) -> Iterator[tuple[AppServer, Path]]:
    """A live app on a fresh store with 12 pairs (one with a <script> title) and BROWSER_USERS, whose items
    are described with their colour and rating (``contexts.item_attributes``)."""
    if not chromium_available():
        pytest.skip("Debian chromium is not installed (make test installs it)")
    from seed import seed_store

    from storage import Store

    data_dir = tmp_path_factory.mktemp("browser") / "data"
    store = Store(data_dir / "recfeedback.duckdb")
    seed_store(store, n_pairs=12, evil_title=True, users=BROWSER_USERS, overlap_target=3)
    with AppServer(data_dir, env={"RECFEEDBACK_CONTEXTS__ITEM_ATTRIBUTES": '["color", "rating"]'}) as server:
        yield server, data_dir / "recfeedback.duckdb"


@pytest.fixture(scope="module")
def chromium():
    with launch_chromium() as browser:
        yield browser
