"""Review mode on a real library (real photos scanned by the built-in model): the order, decisions
stored exactly as ``phototag tag add/remove`` stores them (checked with the real CLI), CSRF, the
learning job, and the keyboard in a real browser."""

from __future__ import annotations

import html
import json
import re
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import cli

from web.conftest import copy_home, screenshot

TAG = "animal"  # the built-in model gives it to chelsea.jpg (the cat) and pug.heic


def phototag(home: Path, *args: str) -> str:
    """The real command line, in this process (typer's runner: no interpreter start per call)."""
    return cli(home, *args).stdout


def show(home: Path, name: str) -> dict:
    """``phototag show PHOTO --format json`` of the library photo whose file is ``name``."""
    hits = json.loads(phototag(home, "search", f"path:{name}", "--format", "json"))
    assert len(hits) == 1, hits
    return json.loads(phototag(home, "show", hits[0]["path"], "--format", "json"))


def tag_list(home: Path, path: str) -> dict:
    return json.loads(phototag(home, "tag", "list", path, "--format", "json"))


def rows(home: Path) -> tuple[list, list]:
    """The tag rows and removals of the library file, without ids and times."""
    conn = sqlite3.connect(home / "phototag.db")
    try:
        tags = conn.execute("SELECT photo_id, tag_id, source, score, model_run_id FROM photo_tags ORDER BY 1, 2, 3").fetchall()
        removals = conn.execute("SELECT photo_id, tag_id, score FROM tag_removals ORDER BY 1, 2").fetchall()
    finally:
        conn.close()
    return tags, removals


@pytest.fixture
def client(web_home):
    """The app over a copy of the scanned library, through Starlette's test client (in-process)."""
    from starlette.testclient import TestClient

    from phototag.config import load_settings
    from phototag.library import Library
    from phototag.web.app import create_app

    lib = Library(load_settings(web_home, environ={}))
    with TestClient(create_app(lib.settings, library=lib), base_url="http://127.0.0.1:8765") as c:
        c.home = web_home
        yield c
    lib.close()


def review_data(client, tag: str) -> tuple[dict, str]:
    """The page's review data (what its script reads) and its CSRF token."""
    page = client.get("/review", params={"tag": tag})
    assert page.status_code == 200, page.text
    data = json.loads(html.unescape(re.search(r'data-review="([^"]*)"', page.text).group(1)))
    return data, data["csrf"]


def test_review_order_is_least_sure_first(client):
    data, _ = review_data(client, TAG)
    items = data["items"]
    assert sorted(i["name"] for i in items) == ["chelsea.jpg", "pug.heic"]
    assert [i["state"] for i in items] == ["pending", "pending"]
    scores = {i["name"]: i["score"] for i in items}
    for name, score in scores.items():  # the scores the CLI shows for the tag
        shown = next(t for t in show(client.home, name)["tags"] if t["name"] == TAG)
        assert shown["score"] == pytest.approx(score, abs=1e-4) and shown["source"] == "model"
    assert [i["score"] for i in items] == sorted(scores.values())
    assert data["start"] == 0
    assert client.get("/review", params={"tag": "no-such-tag"}).text.count("has no tag") == 1


def test_decisions_are_stored_as_tag_add_and_remove_store_them(client, scanned_home, tmp_path):
    """The same decisions made with the web page in one copy of the library and with the CLI in
    another leave the same rows: accept = `tag add`, reject = `tag remove`."""
    by_cli = copy_home(scanned_home, tmp_path / "cli-home")
    web = client.home
    data, csrf = review_data(client, TAG)
    ids = {i["name"]: i["id"] for i in data["items"]}

    def post(name, decision):
        return client.post("/review/decide", data={"csrf": csrf, "tag": TAG, "photo_id": ids[name],
                                                   "decision": decision}, headers={"accept": "application/json"})

    accepted = post("chelsea.jpg", "accept")
    assert accepted.status_code == 200 and accepted.json()["state"] == "accepted"
    rejected = post("pug.heic", "reject")
    assert rejected.json()["state"] == "rejected" and rejected.json()["corrections"]["waiting"] == 2
    cat, pug = show(web, "chelsea.jpg")["path"], show(web, "pug.heic")["path"]
    phototag(by_cli, "tag", "add", cat, TAG)
    phototag(by_cli, "tag", "remove", pug, TAG)

    assert rows(web) == rows(by_cli)
    for name in ("chelsea.jpg", "pug.heic"):
        assert show(web, name) == show(by_cli, name)
    assert ("animal", "manual") in {(t["name"], t["source"]) for t in show(web, "chelsea.jpg")["tags"]}
    assert TAG not in {t["name"] for t in show(web, "pug.heic")["tags"]}
    assert tag_list(web, pug)["removed"] == [TAG]

    # the page now shows both as decided; deciding again is harmless, and accept undoes a reject
    data, _ = review_data(client, TAG)
    assert {i["name"]: i["state"] for i in data["items"]} == {"chelsea.jpg": "accepted", "pug.heic": "rejected"}
    assert post("pug.heic", "reject").json()["changed"] is False
    assert post("pug.heic", "accept").json()["state"] == "accepted"
    assert tag_list(web, pug)["removed"] == []
    # without the page's script the buttons are plain forms: a redirect to the next photo
    plain = client.post("/review/decide", data={"csrf": csrf, "tag": TAG, "photo_id": ids["pug.heic"],
                                                "decision": "reject", "next": "1"}, follow_redirects=False)
    assert plain.status_code == 303 and plain.headers["location"] == f"/review?tag={TAG}&i=1"
    assert tag_list(web, pug)["removed"] == [TAG]


def test_a_decision_without_the_csrf_token_is_refused(client):
    data, _ = review_data(client, TAG)
    before = rows(client.home)
    for form in ({"tag": TAG, "photo_id": data["items"][0]["id"], "decision": "reject"},
                 {"csrf": "wrong", "tag": TAG, "photo_id": data["items"][0]["id"], "decision": "reject"}):
        assert client.post("/review/decide", data=form).status_code == 403
    assert client.post("/review/learn", data={"kind": "calibrate"}).status_code == 403
    assert client.get("/review/decide").status_code == 405  # a change is never a GET
    assert rows(client.home) == before


def wait_for_job(client, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get("/review/job").json()["job"]
        if job["state"] != "running":
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def test_calibrate_runs_in_the_background_with_progress(client):
    _, csrf = review_data(client, TAG)
    # no corrections yet: the job fails with calibrate's own one-line reason
    started = client.post("/review/learn", data={"csrf": csrf, "kind": "calibrate"}, headers={"accept": "application/json"})
    assert started.status_code == 202 and started.json()["kind"] == "calibrate"
    job = wait_for_job(client)
    assert job["state"] == "failed" and "correct" in job["message"] and "Traceback" not in job["message"]

    data, _ = review_data(client, TAG)
    for item, decision in zip(data["items"], ("accept", "reject")):
        client.post("/review/decide", data={"csrf": csrf, "tag": TAG, "photo_id": item["id"], "decision": decision})
    assert client.get("/review/job").json()["corrections"]["waiting"] == 2
    client.post("/review/learn", data={"csrf": csrf, "kind": "calibrate"})
    job = wait_for_job(client)
    assert job["state"] == "done", job
    assert job["total"] == job["done"] and job["total"] >= 1  # the model ran on the reviewed photos
    assert {"held_out_before", "held_out_after", "applied"} <= set(job["result"])
    assert job["result"]["applied"]  # the thresholds were saved for the next retag
    counts = client.get("/review/job").json()["corrections"]
    assert counts["waiting"] == 0 and counts["total"] == 2 and counts["last_learned"]
    assert client.post("/review/learn", data={"csrf": csrf, "kind": "nonsense"}).status_code == 400


def test_keyboard_review_in_a_real_browser(server, page):
    from playwright.sync_api import expect

    page.goto(server.url + "review?tag=" + TAG)
    counter = page.locator("#review-position")
    assert counter.inner_text() == "1 / 2"
    first = page.locator("#review-image").get_attribute("alt")
    expect(page.locator("#review-image")).to_have_js_property("complete", True)
    screenshot(page, "review")
    page.keyboard.press("a")  # accept the first photo
    expect(counter).to_have_text("2 / 2")
    second = page.locator("#review-image").get_attribute("alt")
    assert {first, second} == {"chelsea.jpg", "pug.heic"}
    page.keyboard.press("x")  # reject the second
    expect(page.locator("#review-decided")).to_have_text("2")
    expect(page.locator("#review")).to_have_attribute("data-saving", "0")  # both saves answered
    expect(page.locator("#review-state")).to_contain_text("rejected")
    expect(page.locator("#learn-waiting")).to_have_text("2")
    expect(page.locator("#learn-total")).to_have_text("2")
    page.keyboard.press("ArrowLeft")  # back to the first: shown as accepted
    expect(page.locator("#review-state")).to_have_text("accepted")
    expect(counter).to_have_text("1 / 2")
    screenshot(page, "review-decided")

    first_tags = show(server.home, first)["tags"]
    assert (TAG, "manual") in {(t["name"], t["source"]) for t in first_tags}
    second_path = show(server.home, second)["path"]
    assert TAG not in {t["name"] for t in show(server.home, second)["tags"]}
    assert tag_list(server.home, second_path)["removed"] == [TAG]
