"""The status page: what ``phototag status`` reports, plus the unreadable photos with their reasons
(real broken files scanned into a real library)."""

from __future__ import annotations

import html
import json
import shutil

import pytest
from conftest import TEST_PHOTOS, cli, cli_scan, save_sample

from web.conftest import screenshot, start_server


@pytest.fixture
def home_with_errors(web_home, tmp_path):
    """The scanned library plus a scan of a folder with a truncated JPEG and a truncated HEIC."""
    from phototag.config import use_settings

    folder = tmp_path / "incoming"
    whole = save_sample("rocket", folder / "whole.jpg").read_bytes()
    (folder / "cut-off.jpg").write_bytes(whole[: len(whole) // 3])
    (folder / "whole.jpg").unlink()
    shutil.copy(TEST_PHOTOS / "broken" / "truncated.heic", folder / "truncated.heic")
    try:
        report = cli_scan(web_home, folder)
    finally:
        use_settings(None)
    assert report["failed"] == 2, report
    return web_home


def reason(home, name: str) -> str:
    hits = json.loads(cli(home, "search", f"path:{name}", "status:error", "--format", "json").stdout)
    assert len(hits) == 1, hits
    error = json.loads(cli(home, "show", hits[0]["path"], "--format", "json").stdout)["error"]
    assert error
    return error


def test_status_page_lists_error_photos_with_their_reasons(home_with_errors):
    from starlette.testclient import TestClient

    from phototag.config import load_settings
    from phototag.library import Library
    from phototag.web.app import create_app

    home = home_with_errors
    expected = {name: reason(home, name) for name in ("cut-off.jpg", "truncated.heic")}
    cli_status = json.loads(cli(home, "status", "--format", "json").stdout)
    lib = Library(load_settings(home, environ={}))
    try:
        with TestClient(create_app(lib.settings, library=lib), base_url="http://127.0.0.1:8765") as client:
            page = client.get("/status")
            data = client.get("/status.json").json()
    finally:
        lib.close()
    assert page.status_code == 200
    text = html.unescape(page.text)
    for name, why in expected.items():
        assert name in text and why in text
    assert "not running" in text and "2 errors" in text
    assert {e["name"]: e["error"] for e in data.pop("error_photos")} == expected
    assert data == cli_status  # the same numbers as `phototag status`


def test_status_page_in_a_real_browser(home_with_errors, page):
    server = start_server(home_with_errors)
    try:
        page.goto(server.url + "status")
        row = page.get_by_role("row", name="cut-off.jpg")
        assert reason(home_with_errors, "cut-off.jpg") in row.inner_text()
        assert page.locator("#status-watcher").inner_text().startswith("not running")
        screenshot(page, "status")
    finally:
        server.stop()
