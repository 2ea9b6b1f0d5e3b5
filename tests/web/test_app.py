"""``phototag serve``'s app in-process (Starlette's TestClient) over a real scanned library: the
safety rules (CSRF, POST only, token, Host, no path from the request) and the pages' answers."""

from __future__ import annotations

import html
import re
import socket

import pytest
from conftest import cli
from starlette.testclient import TestClient

from web.conftest import photo_id, run_cli


@pytest.fixture
def settings(web_home):
    from phototag.config import load_settings

    return load_settings(web_home, environ={})


@pytest.fixture
def client(settings):
    from phototag.web.app import create_app

    with TestClient(create_app(settings), base_url="http://127.0.0.1:8765", follow_redirects=False) as client:
        yield client


def tags_of(client, pid: int) -> list[str]:
    return [t["name"] for t in client.get(f"/api/photos/{pid}").json()["tags"]]


def csrf_of(client, pid: int) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(f"/photos/{pid}").text)[1]


def test_a_change_needs_post_and_the_csrf_token(client, web_home):
    pid = photo_id(web_home, "chelsea.jpg")
    assert "cat" in tags_of(client, pid)
    assert client.post(f"/photos/{pid}/tags/remove", data={"tag": "cat"}).status_code == 403
    assert client.post(f"/photos/{pid}/tags/remove", data={"tag": "cat", "csrf": "guess"}).status_code == 403
    assert client.post(f"/photos/{pid}/tags/add", data={"tag": "dog"}).status_code == 403
    assert client.get(f"/photos/{pid}/tags/remove", params={"tag": "cat", "csrf": csrf_of(client, pid)}).status_code == 405
    assert "cat" in tags_of(client, pid) and "dog" not in tags_of(client, pid)

    response = client.post(f"/photos/{pid}/tags/remove", data={"tag": "cat", "csrf": csrf_of(client, pid)})
    assert response.status_code == 303 and response.headers["location"].startswith(f"/photos/{pid}?")
    assert "cat" not in tags_of(client, pid)
    # the header form, for scripts
    response = client.post(f"/photos/{pid}/tags/add", data={"tag": "dog"}, headers={"X-CSRF-Token": csrf_of(client, pid)})
    assert response.status_code == 303 and "dog" in tags_of(client, pid)


def test_removing_a_tag_the_photo_lacks_changes_nothing_and_says_why(client, web_home):
    pid = photo_id(web_home, "chelsea.jpg")
    before = client.get(f"/api/photos/{pid}").json()
    response = client.post(f"/photos/{pid}/tags/remove", data={"tag": "dgo", "csrf": csrf_of(client, pid)},
                           follow_redirects=True)
    assert "has no tag &#39;dgo&#39;; nothing removed" in response.text
    assert client.get(f"/api/photos/{pid}").json() == before


@pytest.mark.parametrize("path", ["/photos/999999", "/photos/999999/preview", "/thumb/999999", "/api/photos/999999",
                                  "/photos/-1", "/static/", "/static/../app.py", "/static/%2e%2e/app.py",
                                  "/static/..%2fapp.py", "/thumb/..%2f..%2f..%2fetc%2fpasswd",
                                  "/photos/1/../../../etc/passwd", "/static//etc/passwd", "/templates/base.html"])
def test_only_library_photos_and_the_static_files_are_served(client, path):
    response = client.get(path)
    assert response.status_code == 404, path
    assert "root:" not in response.text and "import" not in response.text


def test_every_response_has_the_security_headers(client):
    for path in ("/", "/tags", "/api/search?q=cat", "/static/style.css", "/photos/999999"):
        headers = client.get(path).headers
        assert headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "'unsafe-inline'" not in headers["content-security-policy"]
    # no page has an inline script the policy would refuse
    assert "<script>" not in client.get("/").text


def test_a_page_addressed_to_another_host_name_is_refused(client):
    """A site that points its own name at 127.0.0.1 (DNS rebinding) reaches a refusal, not the library."""
    assert client.get("/api/search?q=cat", headers={"host": "evil.example:8765"}).status_code == 403
    assert client.get("/api/search?q=cat", headers={"host": "localhost:8765"}).status_code == 200


def test_with_a_token_every_request_needs_it(settings):
    from phototag.web.app import create_app

    app = create_app(settings, token="s3cret-token")
    with TestClient(app, base_url="http://192.0.2.1:8765", follow_redirects=False) as client:
        assert client.get("/").status_code == 403
        assert client.get("/static/style.css").status_code == 403
        assert client.get("/", headers={"authorization": "Bearer wrong"}).status_code == 403
        assert client.get("/api/search?q=cat", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
        response = client.get("/?q=cat&token=s3cret-token")
        assert response.status_code == 200 and 'content="0; url=/?q=cat"' in response.text
        assert "s3cret" not in response.text
        cookie = response.headers["set-cookie"]
        assert "phototag_token=s3cret-token" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        client.cookies.set("phototag_token", "s3cret-token")
        assert client.get("/?q=cat").status_code == 200
        # the token lets a request in; a change still needs the CSRF token
        pid = client.get("/api/search?q=cat").json()[0]["id"]
        assert client.post(f"/photos/{pid}/tags/remove", data={"tag": "cat"}).status_code == 403


def test_a_wrong_query_shows_the_cli_message(client, web_home):
    message = run_cli(web_home, "search", "taken:2019..sometime", code=2).stderr.strip().removeprefix("error: ")
    page = client.get("/", params={"q": "taken:2019..sometime"})
    assert page.status_code == 400
    assert html.unescape(re.search(r'id="query-error">(.*?)</p>', page.text, re.DOTALL)[1]) == message
    api = client.get("/api/search", params={"q": "taken:2019..sometime"})
    assert api.status_code == 400 and api.json() == {"error": message}


def test_results_are_paged(client, web_home, monkeypatch):
    from phototag.web import search

    monkeypatch.setattr(search, "PAGE_SIZE", 3)
    first = client.get("/").text
    assert "7 photos" in first and "showing 1–3" in first and "page 1 of 3" in first
    last = client.get("/", params={"page": 3}).text
    assert last.count("<img ") == 1 and "showing 7–7" in last
    assert 'href="/photos/' in last and "i=6" in last  # the photo link carries its place in the results
    assert client.get("/", params={"page": 99}).text == last


def test_tag_suggestions_and_the_tag_tree(client):
    names = [t["name"] for t in client.get("/api/tags", params={"prefix": "MAM"}).json()]
    assert names == ["mammal"]
    assert [t["name"] for t in client.get("/api/tags", params={"prefix": "哺乳"}).json()] == ["mammal"]
    page = client.get("/tags").text
    # the hierarchy: cat sits under mammal, under animal
    assert page.index(">animal<") < page.index(">mammal<") < page.index(">cat<")


def test_a_parent_that_no_photo_carries_still_holds_its_children(client, web_home):
    pid = photo_id(web_home, "chelsea.jpg")
    client.post(f"/photos/{pid}/tags/remove", data={"tag": "cat", "csrf": csrf_of(client, pid)})
    page = client.get("/tags").text
    # "cat" (now on no photo) is still between mammal and its children, not a second root
    assert page.index(">mammal<") < page.index(">cat<") < page.index(">tiger cat<")
    assert page.count(">cat<") == 1


def test_serve_refuses_a_port_in_use_in_one_line(web_home):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        result = cli(web_home, "serve", "--port", str(taken.getsockname()[1]), code=2)
    assert result.output.startswith("error: cannot listen on 127.0.0.1:") and result.output.count("\n") == 1


def test_a_thumbnail_is_sent_once_then_checked(client, web_home):
    pid = photo_id(web_home, "chelsea.jpg")
    first = client.get(f"/thumb/{pid}")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    assert first.content[:3] == b"\xff\xd8\xff"
    again = client.get(f"/thumb/{pid}", headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    preview = client.get(f"/photos/{pid}/preview")
    assert preview.status_code == 200 and preview.headers["etag"] != first.headers["etag"]


def test_a_link_cannot_make_a_page_say_what_it_likes(client, web_home):
    pid = photo_id(web_home, "chelsea.jpg")
    for forged in ("message", "note"):
        assert "Your library is lost" not in client.get(f"/photos/{pid}", params={forged: "Your library is lost"}).text
    done = client.post(f"/photos/{pid}/tags/add", data={"tag": "sofa", "csrf": csrf_of(client, pid)})
    assert "added sofa" in client.get(done.headers["location"]).text
    assert "added sofa" not in client.get(done.headers["location"]).text  # said once


def test_a_file_name_that_is_not_utf8_is_shown_and_its_photo_served(client, web_home, library_folder, tmp_path):
    import os
    import shutil
    import sqlite3

    from phototag.config import load_settings
    from phototag.db.models import encode_path

    odd = os.fsdecode(bytes(tmp_path) + b"/caf\xe9 \x07.jpg")
    shutil.copy(library_folder / "coffee.jpg", odd)
    pid = photo_id(web_home, "coffee.jpg")
    with sqlite3.connect(load_settings(web_home, environ={}).db_path) as db:
        db.execute("UPDATE photos SET path = ? WHERE id = ?", (encode_path(odd), pid))
    db.close()
    page = client.get("/", params={"q": "espresso"})
    assert page.status_code == 200 and 'alt="caf\\xe9 \\x07.jpg"' in page.text
    assert client.get(f"/photos/{pid}").status_code == 200
    assert client.get(f"/thumb/{pid}").headers["content-type"] == "image/jpeg"
    assert client.get(f"/api/photos/{pid}").json()["path"] == odd  # as `show --format json` writes it: \\udce9


def test_a_correction_rewrites_the_sidecar_as_tag_add_does(web_home, library_folder, tmp_path):
    """With the xmp plugin on (and [export] auto), a tag added or removed in the page is in the
    photo's sidecar at once, as after `phototag tag add/remove`."""
    import shutil
    import sqlite3

    from phototag.config import load_settings
    from phototag.web.app import create_app

    run_cli(web_home, "plugins", "enable", "xmp")
    photo = tmp_path / "Pictures" / "chelsea.jpg"  # a folder of its own: the sidecar is written next to it
    photo.parent.mkdir()
    shutil.copy(library_folder / "chelsea.jpg", photo)
    pid = photo_id(web_home, "chelsea.jpg")
    with sqlite3.connect(load_settings(web_home, environ={}).db_path) as db:
        db.execute("UPDATE photos SET path = ?, root = ? WHERE id = ?", (str(photo), str(photo.parent), pid))
    db.close()
    sidecar = photo.with_name("chelsea.jpg.xmp")
    with TestClient(create_app(load_settings(web_home, environ={})), base_url="http://127.0.0.1") as client:
        client.post(f"/photos/{pid}/tags/add", data={"tag": "Chelsea the cat", "csrf": csrf_of(client, pid)})
        assert "Chelsea the cat" in sidecar.read_text()
        client.post(f"/photos/{pid}/tags/remove", data={"tag": "tiger cat", "csrf": csrf_of(client, pid)})
        assert "tiger cat" not in sidecar.read_text() and "Chelsea the cat" in sidecar.read_text()
