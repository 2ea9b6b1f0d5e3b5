"""``phototag serve`` in a real browser (Chromium through Playwright) over a real library of real
photos, checked against the real command line: what a user sees and does, and what it stores."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from web.conftest import (
    copy_home,
    outward_address,
    photo_id,
    run_cli,
    screenshot,
    start_server,
)


def test_search_cat_shows_chelsea_and_its_page(server, page):
    page.goto(server.url)
    page.fill("input[name=q]", "cat")
    page.keyboard.press("Enter")
    page.wait_for_url("**/?q=cat*")
    assert page.locator("#result-count").inner_text().startswith("1 photo")
    image = page.locator("#results img[alt='chelsea.jpg']")
    image.wait_for()
    # the thumbnail really is an image the browser decoded
    assert page.evaluate("img => img.complete && img.naturalWidth > 0", image.element_handle())
    screenshot(page, "search-cat")

    image.click()
    page.wait_for_url("**/photos/*")
    assert page.locator("h1").inner_text() == "chelsea.jpg"
    preview = page.locator("figure.preview img")
    preview.wait_for()
    page.wait_for_function("() => document.querySelector('figure.preview img').naturalWidth > 0")
    tags = page.locator("table.tags tbody tr td:first-child").all_inner_texts()
    assert "cat" in [t.strip(" ✎") for t in tags]
    assert "猫" in page.locator("table.tags").inner_text()  # the built-in model's Chinese name of the class
    assert page.locator("#similar img").count() >= 5  # every other photo of the library, most alike first
    screenshot(page, "photo-chelsea")


def test_whole_library_and_paging_links(server, page):
    page.goto(server.url)
    assert page.locator("#results img").count() == 7  # an empty query lists the library, as `phototag search` does
    names = sorted(page.locator("#results img").evaluate_all("imgs => imgs.map(i => i.alt)"))
    assert names == sorted(["astronaut.jpg", "chelsea.jpg", "china.jpg", "coffee.jpg", "flower.jpg", "pug.heic",
                            "rocket.jpg"])
    page.wait_for_function("() => [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
    screenshot(page, "search-all")
    # neighbours: the second photo's page links back to the first and on to the third
    page.locator("#results a").nth(1).click()
    page.wait_for_url("**/photos/*")
    assert page.locator(".neighbours").inner_text().count("2 of 7") == 1
    first = page.locator("#prev").get_attribute("href")
    page.click("#next")
    page.wait_for_url("**i=2*")
    page.click("#prev")
    page.wait_for_url("**i=1*")
    page.keyboard.press("ArrowLeft")  # the keys do what the links do
    page.wait_for_url("**i=0*")
    assert page.url.endswith(first)
    page.keyboard.press("ArrowRight")
    page.wait_for_url("**i=1*")


def test_heic_preview_is_shown_as_jpeg(server, page):
    page.goto(f"{server.url}photos/{photo_id(server.home, 'pug.heic')}")
    page.wait_for_function("() => document.querySelector('figure.preview img').naturalWidth > 0")
    width = page.evaluate("() => document.querySelector('figure.preview img').naturalWidth")
    assert width == 1600  # the 4032×3024 iPhone photo, decoded from HEIC, sized for the page
    screenshot(page, "photo-heic")


def test_remove_and_add_a_tag_as_the_cli_stores_it(server, page):
    chelsea = photo_id(server.home, "chelsea.jpg")
    page.goto(f"{server.url}photos/{chelsea}")
    page.click("button[aria-label='Remove tag cat']")
    page.wait_for_selector(".message")
    assert "removed cat" in page.locator(".message").inner_text()
    assert page.locator("button[aria-label='Remove tag cat']").count() == 0

    shown = json.loads(run_cli(server.home, "show", f"#{chelsea}", "--format", "json").stdout)
    assert "cat" not in [t["name"] for t in shown["tags"]] and "animal" in [t["name"] for t in shown["tags"]]

    page.fill("input[name=tag]", "my cat Chelsea")
    page.click("form.add-tag button")
    page.wait_for_selector("button[aria-label='Remove tag my cat Chelsea']")
    listed = json.loads(run_cli(server.home, "tag", "list", f"#{chelsea}", "--format", "json").stdout)
    added = [t for t in listed["tags"] if t["name"] == "my cat Chelsea"]
    assert added == [{"name": "my cat Chelsea", "name_zh": None, "score": 1.0, "source": "manual", "model": None}]
    # the removal is the CLI's: remembered, so that a re-tag does not bring the tag back
    assert listed["removed"] == ["cat"]
    screenshot(page, "photo-corrected")


def test_wrong_query_shows_the_cli_message(server, page):
    query = "taken:2019..sometime"
    cli = run_cli(server.home, "search", query, code=2)
    message = cli.stderr.strip().removeprefix("error: ")
    page.goto(server.url)
    page.fill("input[name=q]", query)
    page.keyboard.press("Enter")
    page.wait_for_selector("#query-error")
    assert page.locator("#query-error").inner_text() == message
    screenshot(page, "search-error")


def test_tag_browser_and_suggestions(server, page):
    page.goto(server.url + "tags")
    text = page.locator(".tag-tree").inner_text()
    assert "animal" in text and "动物" in text
    screenshot(page, "tags")
    page.locator(".tag-tree a", has_text="espresso").first.click()
    page.wait_for_url("**/?q=*")
    assert "coffee.jpg" in page.locator("#results img").evaluate_all("imgs => imgs.map(i => i.alt)")

    page.fill("input[name=q]", "mam")
    page.wait_for_function("() => document.querySelectorAll('#tag-suggestions option').length > 0")
    options = page.locator("#tag-suggestions option").evaluate_all("os => os.map(o => o.value)")
    assert "mammal" in options


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_api_equals_the_cli_json(server):
    for query in ("animal", "^animal"):
        status, body = _get(f"{server.url}api/search?q={urllib.request.quote(query)}")
        assert status == 200
        cli = run_cli(server.home, "search", *([query] if query else []), "--format", "json",
                      code=0 if json.loads(body) else 1)
        assert body.decode() == cli.stdout, query
    for name in ("pug.heic",):
        pid = photo_id(server.home, name)
        status, body = _get(f"{server.url}api/photos/{pid}")
        assert status == 200
        assert body.decode() == run_cli(server.home, "show", f"#{pid}", "--format", "json").stdout


def test_beyond_localhost_the_token_is_required(scanned_home, tmp_path, browser):
    address = outward_address()
    host = address or "0.0.0.0"
    remote = start_server(copy_home(scanned_home, tmp_path / "home"), "--host", host)
    try:
        assert remote.token, "a server beyond localhost printed no token"
        url = remote.url if address else remote.url.replace(remote.url.split("/")[2].rsplit(":", 1)[0], "127.0.0.1")
        for path in ("", "api/search?q=cat", "thumb/1", "static/style.css", "photos/1"):
            status, body = _get(url + path)
            assert status == 403, (path, status)
            assert b"token" in body
            assert _get(url + path, "not-" + remote.token)[0] == 403
        status, body = _get(url + "api/search?q=cat", remote.token)
        assert status == 200 and json.loads(body)[0]["path"].endswith("chelsea.jpg")
        # a browser opens the printed address once; the token then lives in an HttpOnly cookie
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{url}?token={remote.token}")
        page.wait_for_url(lambda address: "token" not in address)  # out of the address bar (and the history)
        page.locator("#results").wait_for()
        page.goto(url + "?q=cat")
        assert page.locator("#results img[alt='chelsea.jpg']").count() == 1
        cookie = next(c for c in context.cookies() if c["name"] == "phototag_token")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        context.close()
    finally:
        remote.stop()


@pytest.mark.parametrize("path", ["/photos/1/../../../../etc/passwd", "/static/../app.py", "/static/%2e%2e/app.py",
                                  "/static/", "/thumb/..%2f..%2fetc%2fpasswd", "/photos/999999"])
def test_nothing_but_library_photos_is_served(server, path):
    status, body = _get(server.url.rstrip("/") + path)
    assert status == 404, (path, status)
    assert b"root:" not in body and b"import" not in body


def test_sigterm_stops_serve_cleanly(scanned_home, tmp_path):
    """A service manager's stop (SIGTERM) ends serve with exit 0, as Ctrl-C does."""
    import signal

    server = start_server(copy_home(scanned_home, tmp_path / "home"))
    try:
        assert _get(server.url + "api/photos/1")[0] == 200
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(15) == 0, server.process.stderr.read()
    finally:
        server.stop()
