"""Fixtures of the ``phototag serve`` tests: a real library of real photos (scanned once per session
with the built-in model), real ``phototag serve`` processes on free ports, and a real browser
(Debian's Chromium driven by Playwright)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TEST_PHOTOS, cli_scan

#: where the screenshots of the pages go (look at them after a run)
SHOTS = Path(os.environ.get("PT_TEST_SHOTS", "/tmp/shots"))


def cli_env() -> dict[str, str]:
    """The environment of a real ``phototag`` process: no PHOTOTAG_* setting of the caller's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PHOTOTAG_")}


def run_cli(home: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess:
    """The real command line, ``phototag --home HOME ARGS``, in its own process."""
    proc = subprocess.run([sys.executable, "-m", "phototag", "--home", str(home), *args], capture_output=True,
                          text=True, env=cli_env(), timeout=120)
    assert proc.returncode == code, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="session")
def library_folder(sample_photos, tmp_path_factory) -> Path:
    """The photos of the web tests' library: scikit-image's and scikit-learn's (chelsea is the
    cat) and a real iPhone HEIC (its preview goes through JPEG)."""
    folder = tmp_path_factory.mktemp("web") / "Pictures"
    shutil.copytree(sample_photos, folder)
    shutil.copy(TEST_PHOTOS / "heic" / "pug.heic", folder / "pug.heic")
    return folder


@pytest.fixture(scope="session")
def scanned_home(library_folder, tmp_path_factory) -> Path:
    """A library home with ``library_folder`` scanned by the built-in model (once per session;
    copy it with :func:`copy_home` before changing it)."""
    from phototag.config import use_settings

    home = tmp_path_factory.mktemp("web-home") / "home"
    try:
        report = cli_scan(home, library_folder)
    finally:
        use_settings(None)
    assert report["failed"] == 0, report
    return home


def copy_home(home: Path, dest: Path) -> Path:
    """A copy of a (closed) library home: the tests that change tags each change their own."""
    shutil.copytree(home, dest)
    return dest


@pytest.fixture
def web_home(scanned_home, tmp_path) -> Path:
    """A copy of the scanned library home, for one test."""
    return copy_home(scanned_home, tmp_path / "home")


def photo_id(home: Path, name: str) -> int:
    """The id of the library photo whose file is called ``name`` (read from the database file)."""
    import sqlite3

    from phototag.config import load_settings

    with contextlib.closing(sqlite3.connect(load_settings(home, environ={}).db_path)) as db:
        ids = [row[0] for row in db.execute("SELECT id FROM photos WHERE path LIKE ?", (f"%/{name}",))]
    assert len(ids) == 1, ids
    return ids[0]


@dataclass
class Server:
    """A running ``phototag serve``: its address (with the port it got), its token, its process."""

    url: str
    token: str | None
    process: subprocess.Popen
    home: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_server(home: Path, *args: str, timeout: float = 30) -> Server:
    """Start a real ``phototag --home HOME serve --port 0 ARGS`` and wait until it answers. The
    URL is what it printed (the port it was given); the token, if it printed one."""
    process = subprocess.Popen([sys.executable, "-m", "phototag", "--home", str(home), "serve", "--port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        line = process.stdout.readline()  # "phototag serve: http://HOST:PORT/[?token=…]"
        if not line.startswith("phototag serve: "):
            process.kill()
            raise AssertionError(f"serve did not start: {line}{process.stdout.read()}{process.stderr.read()}")
        address = line.split(": ", 1)[1].strip()
        url, _, token = address.partition("?token=")
        server = Server(url, token or None, process, home)
        deadline = time.monotonic() + timeout
        while True:
            try:
                request = urllib.request.Request(url + "static/style.css")
                if token:
                    request.add_header("Authorization", f"Bearer {token}")
                with urllib.request.urlopen(request, timeout=2):
                    return server
            except (urllib.error.URLError, ConnectionError, OSError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"serve did not answer: {process.stderr.read() if process.poll() is not None else ''}")
                time.sleep(0.1)
    except BaseException:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        raise


@pytest.fixture(scope="module")
def server(scanned_home, tmp_path_factory):
    """``phototag serve`` on localhost over a copy of the scanned library (one per test module)."""
    home = copy_home(scanned_home, tmp_path_factory.mktemp("served") / "home")
    server = start_server(home)
    yield server
    server.stop()


def outward_address() -> str | None:
    """An address of this machine that is not loopback (None when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP: nothing is sent; the kernel picks the route's address
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, driven by Playwright (its own browser download cannot work here)."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("no chromium on PATH (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser tab (own cookies) that fails the test on a script error or a refused script/style."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    # a script or style the Content-Security-Policy refused is a bug of the pages (a 404 is not: tests ask for them)
    page.on("console", lambda msg: problems.append(f"console: {msg.text}") if "Refused" in msg.text else None)
    page.set_default_timeout(10_000)
    yield page
    context.close()
    assert not problems, problems


def screenshot(page, name: str) -> Path:
    """Save the page as SHOTS/NAME.png (for a person to look at)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
