"""Thumbnails cached in the library home: real photos (a 12 MP JPEG, an iPhone HEIC, EXIF-rotated
JPEGs), a real SQLite library, the real decoder. The photo rows are made through the library API
(what a scan stores about a file), so no model runs here."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_PHOTOS, save_sample
from PIL import Image

pytestmark = pytest.mark.skipif(not TEST_PHOTOS.is_dir(), reason="needs ../shared/test-photos")


def add_photo(lib, path: Path):
    """The photo row a scan stores for ``path`` (size, mtime, content hash)."""
    from phototag.ingest.fingerprint import sha256_file
    from phototag.library import PhotoFacts

    st = path.stat()
    with lib.session() as session:
        photo = lib.upsert_photo(session, PhotoFacts(path=path.resolve(), root=path.parent.resolve(), size=st.st_size,
                                                     mtime=st.st_mtime, sha256=sha256_file(path)))
        session.expunge(photo)
    return photo


def jpeg_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        assert img.format == "JPEG"
        return img.size


def test_heic_and_12mp_jpeg(library, tmp_path):
    from phototag.web.thumbnails import thumbnail_path

    big = tmp_path / "photos" / "astronaut-12mp.jpg"
    big.parent.mkdir()
    Image.fromarray(np.asarray(Image.open(save_sample("astronaut", tmp_path / "a.jpg")).resize((4000, 3000)))).save(big)
    heic = tmp_path / "photos" / "pug.heic"
    shutil.copy(TEST_PHOTOS / "heic" / "pug.heic", heic)
    for path, expected in ((big, (360, 270)), (heic, (360, 270))):
        photo = add_photo(library, path)
        thumb = thumbnail_path(library, photo)  # the serve.thumbnail_size default: 360
        assert jpeg_size(thumb) == expected
        assert thumb.is_relative_to(library.settings.home / "thumbnails")
    assert jpeg_size(thumbnail_path(library, photo, 128)) == (128, 96)


def test_exif_orientation_is_applied(library, tmp_path):
    """hopper_orientation_N.jpg store the same picture rotated/mirrored with EXIF Orientation N:
    once oriented, every thumbnail shows the same upright picture."""
    from phototag.web.thumbnails import thumbnail_path

    thumbs = {}
    for n in (2, 3, 5, 6, 8):
        photo = add_photo(library, TEST_PHOTOS / "orientation" / f"hopper_orientation_{n}.jpg")
        with Image.open(thumbnail_path(library, photo, 64)) as img:
            thumbs[n] = np.asarray(img.convert("L"), dtype=np.float32)
    with Image.open(TEST_PHOTOS / "orientation" / "hopper_orientation_6.jpg") as raw:
        stored = np.asarray(raw.convert("L").resize(thumbs[6].shape[::-1]), dtype=np.float32)
    for n, thumb in thumbs.items():
        assert thumb.shape == thumbs[2].shape
        assert np.abs(thumb - thumbs[2]).mean() < 12, n  # JPEG noise only
    assert np.abs(stored - thumbs[2]).mean() > 25  # the file's own pixel order is not upright


def test_cache_hit_does_not_regenerate_and_a_changed_photo_gets_a_new_thumbnail(library, tmp_path, monkeypatch):
    from phototag.ingest import decode
    from phototag.web.thumbnails import thumbnail_path

    decodes = []
    real = decode.decode_photo
    monkeypatch.setattr(decode, "decode_photo", lambda *a, **k: decodes.append(a[0]) or real(*a, **k))

    path = save_sample("chelsea", tmp_path / "photos" / "cat.jpg")
    photo = add_photo(library, path)
    first = thumbnail_path(library, photo)
    stat = first.stat()
    assert len(decodes) == 1
    again = thumbnail_path(library, photo)
    assert again == first and len(decodes) == 1
    assert again.stat().st_ino == stat.st_ino and again.stat().st_mtime_ns == stat.st_mtime_ns

    # the file changes (another photo saved over it), a rescan updates its row: a new thumbnail
    save_sample("coffee", path)
    os.utime(path, (stat.st_mtime + 10, stat.st_mtime + 10))
    changed = add_photo(library, path)
    assert changed.id == photo.id
    fresh = thumbnail_path(library, changed)
    assert fresh != first and len(decodes) == 2
    assert not first.exists(), "the stale thumbnail is removed"
    with Image.open(fresh) as new_img, Image.open(save_sample("coffee", tmp_path / "ref.jpg", size=360)) as ref:
        assert new_img.size == ref.size  # coffee's proportions, not the cat's
    assert sorted(p.name for p in fresh.parent.iterdir()) == [fresh.name]


def test_concurrent_requests_make_one_thumbnail(library, tmp_path, monkeypatch):
    from phototag.ingest import decode
    from phototag.web.thumbnails import thumbnail_path

    decodes = []
    real = decode.decode_photo
    monkeypatch.setattr(decode, "decode_photo", lambda *a, **k: decodes.append(a[0]) or real(*a, **k))
    photo = add_photo(library, save_sample("astronaut", tmp_path / "photos" / "astronaut.jpg"))
    results, errors = [], []
    barrier = threading.Barrier(8)

    def worker():
        try:
            barrier.wait()
            results.append(thumbnail_path(library, photo))
        except Exception as exc:  # noqa: BLE001 - any error of a thread is shown by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and len(decodes) == 1
    assert jpeg_size(results[0]) == (360, 360)
    assert [p.name for p in results[0].parent.iterdir()] == [results[0].name]  # no temp file left


def test_unreadable_photo_is_a_thumbnail_error(library, tmp_path):
    from phototag.web.thumbnails import ThumbnailError, thumbnail_path

    path = save_sample("coffee", tmp_path / "photos" / "coffee.jpg")
    photo = add_photo(library, path)
    path.write_bytes(path.read_bytes()[:200])  # truncated after the scan
    with pytest.raises(ThumbnailError, match="coffee.jpg"):
        thumbnail_path(library, photo)
    path.unlink()
    with pytest.raises(ThumbnailError, match="vanished"):
        thumbnail_path(library, photo)


def test_served_only_by_photo_id(library, tmp_path):
    """The app's image routes take a photo id: no request path, traversal or listing reaches a file."""
    from starlette.testclient import TestClient

    from phototag.web.app import create_app

    photo = add_photo(library, save_sample("chelsea", tmp_path / "photos" / "cat.jpg"))
    secret = tmp_path / "secret.txt"
    secret.write_text("not a photo")
    with TestClient(create_app(library.settings, library=library), base_url="http://127.0.0.1:8765") as client:
        ok = client.get(f"/thumb/{photo.id}")
        assert ok.status_code == 200 and ok.headers["content-type"] == "image/jpeg"
        assert client.get(f"/thumb/{photo.id + 1}").status_code == 404
        for url in ("/thumb/../../secret.txt", f"/thumb/{tmp_path}/secret.txt", "/thumb/%2e%2e%2fsecret.txt",
                    "/thumb/", "/static/../thumbnails/", f"/thumb/{photo.id}?path={secret}"):
            response = client.get(url)
            assert b"not a photo" not in response.content, url
            assert response.status_code in (200, 404), url
            if response.status_code == 200:  # only the query-string case: the photo's own thumbnail
                assert response.content == ok.content, url


def test_pregenerate_makes_the_thumbnails_a_page_asks_for(library, tmp_path):
    """What a scan could call after each committed batch: later requests find the files made."""
    from phototag.web.thumbnails import cached_path, pregenerate, thumbnail_size

    photos = [add_photo(library, save_sample(name, tmp_path / "photos" / f"{name}.jpg")) for name in ("chelsea", "rocket")]
    broken = tmp_path / "photos" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    bad = add_photo(library, broken)
    made, errors = pregenerate(library, [p.id for p in photos] + [bad.id, 999])
    assert made == 2 and len(errors) == 1 and "broken.jpg" in errors[0]
    size = thumbnail_size(library.settings)
    assert all(cached_path(library.settings.home, p, size).is_file() for p in photos)
