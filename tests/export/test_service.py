"""The export service and ``phototag export``: state, skipping, failures, transactions, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from conftest import save_sample
from sqlalchemy import select
from typer.testing import CliRunner

from phototag import plugins
from phototag.config import dump_toml, load_settings, use_settings
from phototag.db.models import ExportState, Photo, PhotoStatus
from phototag.export import ExportError, Exporter, ExportResult
from phototag.export.service import PENDING_PREFIX, STALE, export_photos
from phototag.library import Library, PhotoFacts
from phototag.tagging.base import Prediction, Tagger, TagScore


class OneTagger(Tagger):
    name = "one"
    model_id = "test/one"

    def __init__(self, tags):
        self.tags = tags

    @property
    def weights_sha256(self):
        return "0" * 64

    def tag_parents(self):
        return {"tabby cat": "cat", "cat": "animal"}

    def prepare(self, image):
        return image

    def predict(self, batch):
        return [Prediction(tags=[TagScore(n, 0.8) for n in self.tags]) for _ in batch]


class RecordingExporter(Exporter):
    name = "rec"

    def __init__(self, fail_on: str | None = None, transactional: bool = False, fail_close: bool = False):
        super().__init__({})
        self.fail_on, self.transactional, self.fail_close = fail_on, transactional, fail_close
        self.written: list[int] = []
        self.pending: list[int] = []
        self.events: list[str] = []

    def open(self, dry_run):
        self.events.append("open")

    def write(self, item, dry_run):
        if self.fail_on and item.path.name == self.fail_on:
            raise OSError(f"cannot write {item.path.name}")
        self.pending.append(item.photo_id)
        return ExportResult(self.name, item.photo_id, str(item.path), "written", "somewhere")

    def is_current(self, item, state_target):
        return True

    def close(self, ok):
        self.events.append(f"close ok={ok}")
        if self.fail_close:
            raise OSError("commit failed")
        if ok:
            self.written += self.pending


@pytest.fixture
def lib(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(dump_toml({"plugins": {"enabled": ["xmp"]}}))
    settings = load_settings(home, environ={})
    use_settings(settings)
    plugins.reset_plugins()
    library = Library(settings)
    yield library
    library.close()
    use_settings(None)
    plugins.reset_plugins()


def _add(lib: Library, path: Path, tags: list[str]) -> int:
    data = path.read_bytes()
    with lib.session() as session:
        photo = lib.upsert_photo(session, PhotoFacts(path=path, root=path.parent, size=len(data), mtime=0.0,
                                                     sha256=hashlib.sha256(data).hexdigest()))
        tagger = OneTagger(tags)
        run = lib.start_model_run(session, tagger)
        lib.store_prediction(session, photo, run, tagger, tagger.predict([None])[0])
        return photo.id


@pytest.fixture
def photos(lib, tmp_path):
    ids = {}
    for name, tags in (("chelsea", ["tabby cat", "indoor"]), ("coffee", ["coffee"]), ("rocket", ["rocket"]),
                       ("astronaut", ["person"]), ("china", ["building"])):
        ids[name] = _add(lib, save_sample(name, tmp_path / "photos" / f"{name}.jpg", size=64), tags)
    return ids


def _states(lib) -> dict[int, str]:
    """photo id → the content hash its export state claims is written (pending marks left out)."""
    with lib.session() as session:
        return {s.photo_id: s.content_hash for s in session.query(ExportState)
                if not s.content_hash.startswith(PENDING_PREFIX) and s.content_hash != STALE}


def test_batches_state_and_skipping(lib, photos):
    exporter = RecordingExporter()
    report = export_photos(lib, None, [exporter], batch_size=2)
    assert report.counts() == {"written": 5}
    assert sorted(exporter.pending) == sorted(photos.values())
    assert exporter.events == ["open", "close ok=True"]  # opened once for all batches
    assert set(_states(lib)) == set(photos.values())

    again = RecordingExporter()
    assert export_photos(lib, None, [again]).counts() == {"unchanged": 5}
    assert again.pending == []

    _add(lib, Path(lib.db.path).parent.parent / "photos" / "coffee.jpg", ["espresso"])  # a re-tag
    changed = RecordingExporter()
    assert export_photos(lib, None, [changed]).counts() == {"unchanged": 4, "written": 1}
    assert changed.pending == [photos["coffee"]]


def test_item_carries_hierarchy_and_leaves_imported_tags_out(lib, photos):
    from phototag.export.service import load_items

    with lib.session() as session:
        item = load_items(session, [photos["chelsea"]])[0]
    assert [t.path for t in item.tags] == [("animal", "cat", "tabby cat"), ("indoor",)]
    assert all(t.sources == ("model",) for t in item.tags)


def test_a_failing_photo_is_reported_and_the_rest_go_on(lib, photos):
    exporter = RecordingExporter(fail_on="rocket.jpg")
    report = export_photos(lib, None, [exporter])
    assert report.counts() == {"written": 4, "failed": 1}
    assert report.failed[0].detail == "cannot write rocket.jpg"
    assert photos["rocket"] not in _states(lib)  # tried again next time
    assert export_photos(lib, None, [RecordingExporter()]).counts() == {"unchanged": 4, "written": 1}


def test_missing_photos_are_skipped(lib, photos):
    with lib.session() as session:
        session.get(Photo, photos["china"]).status = PhotoStatus.missing.value
    report = export_photos(lib, [photos["china"], photos["coffee"]], [RecordingExporter()])
    assert [(r.photo_id, r.action) for r in report.results] == [
        (photos["china"], "skipped"), (photos["coffee"], "written")]
    assert export_photos(lib, None, [RecordingExporter()]).counts() == {"written": 3, "unchanged": 1}


def test_transactional_exporter_state_is_stored_only_after_its_commit(lib, photos):
    broken = RecordingExporter(transactional=True, fail_close=True)
    with pytest.raises(ExportError, match="failed to finish"):
        export_photos(lib, None, [broken])
    assert _states(lib) == {}
    export_photos(lib, None, [RecordingExporter(transactional=True)])
    assert set(_states(lib)) == set(photos.values())


def test_unknown_exporter_names_the_fix(lib, photos):
    with pytest.raises(ExportError, match=r"no exporter named 'lightroom' \(installed: digikam, xmp\)"):
        export_photos(lib, None, ["lightroom"])


def _cli(lib):
    from phototag.cli.export import register

    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        use_settings(lib.settings)
        ctx.ensure_object(dict)["library"] = lib

    register(app)
    return app


def test_cli_export_query_dry_run_then_write(lib, photos):
    app = _cli(lib)
    runner = CliRunner()
    result = runner.invoke(app, ["export", "indoor", "--to", "xmp", "--dry-run", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["dry_run"] is True and data["counts"] == {"would-write": 1}
    sidecar = Path(data["results"][0]["target"])
    assert sidecar.name == "chelsea.jpg.xmp" and not sidecar.exists()

    result = runner.invoke(app, ["export", "--to", "xmp"])
    assert result.exit_code == 0, result.output
    assert "5 written" in result.output
    assert sidecar.exists()
    result = runner.invoke(app, ["export", "--to", "xmp"])
    assert "5 unchanged" in result.output


def test_cli_export_exit_code_on_failure(lib, photos, tmp_path):
    (tmp_path / "photos" / "rocket.jpg.xmp").write_text("this is not XMP")
    result = CliRunner().invoke(_cli(lib), ["export", "--to", "xmp", "--format", "json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["counts"] == {"written": 4, "failed": 1}
    assert (tmp_path / "photos" / "rocket.jpg.xmp").read_text() == "this is not XMP"  # left as it was


# ---- a real kill -9 of a real `phototag export` --------------------------------------------------

needs_exiftool = pytest.mark.skipif(shutil.which("exiftool") is None,
                                    reason="exiftool (Debian: libimage-exiftool-perl) is not installed")


def _bulk_add(lib: Library, folder: Path, count: int, tags: list[str]) -> list[int]:
    """``count`` real JPEG files (copies of one photo), each tagged ``tags`` by one model run."""
    sample = save_sample("chelsea", folder / "p0000.jpg", size=48)
    data = sample.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    tagger = OneTagger(tags)
    ids = []
    with lib.session() as session:
        run = lib.start_model_run(session, tagger)
        for n in range(count):
            path = folder / f"p{n:04d}.jpg"
            if n:
                path.write_bytes(data)
            photo = lib.upsert_photo(session, PhotoFacts(path=path, root=folder, size=len(data), mtime=0.0,
                                                         sha256=digest))
            lib.store_prediction(session, photo, run, tagger, tagger.predict([None])[0])
            ids.append(photo.id)
    return ids


def _edit_tags(lib: Library, ids: list[int], *, remove: list[str] = (), add: list[str] = ()) -> None:
    with lib.session() as session:
        for photo in session.scalars(select(Photo).where(Photo.id.in_(ids))):
            lib.remove_tags(session, photo, remove)
            lib.add_manual_tags(session, photo, add)


def _phototag(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PHOTOTAG_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "phototag", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _kill_when_rewritten(proc: subprocess.Popen, sidecar: Path, timeout: float = 120) -> None:
    """kill -9 ``proc`` as soon as ``sidecar`` was replaced (its inode changes on the rename)."""
    before = sidecar.stat().st_ino
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if sidecar.stat().st_ino != before:
                os.kill(proc.pid, signal.SIGKILL)
                break
        except FileNotFoundError:  # between unlink and rename on some file systems
            pass
        time.sleep(0.001)
    proc.wait(30)


@needs_exiftool
def test_kill_between_sidecar_writes_and_state_commit_never_leaves_stale_sidecars(lib, tmp_path):
    """Tags change, `phototag export` is killed after it replaced sidecars but before it recorded
    them, tags go back to what the old sidecars' state says: every sidecar must still end up
    holding the library's tags (before the fix, the state claimed the old tags were written and the
    re-export called the rewritten sidecars "unchanged")."""
    folder = tmp_path / "photos"
    ids = _bulk_add(lib, folder, 450, ["tabby cat", "indoor"])  # > 2 batches of 200
    assert export_photos(lib, None, ["xmp"]).counts() == {"written": 450}
    sidecars = [folder / f"p{n:04d}.jpg.xmp" for n in range(450)]
    home = Path(lib.settings.home)

    for attempt in range(5):  # until the kill lands mid-run (some, not all, sidecars rewritten)
        _edit_tags(lib, ids, remove=["indoor"])
        proc = _phototag(home, "export", "--to", "xmp")
        _kill_when_rewritten(proc, sidecars[0])
        rewritten = sum(b"indoor" not in p.read_bytes() for p in sidecars)
        _edit_tags(lib, ids, add=["indoor"])  # back to the state the old sidecars were recorded with
        if proc.returncode == -signal.SIGKILL and 0 < rewritten < len(sidecars):
            break
        assert export_photos(lib, None, ["xmp"]).counts().get("failed") is None  # reset, try again
    else:
        pytest.fail("could not kill `phototag export` in the middle of its run")

    proc = _phototag(home, "export", "--to", "xmp", "--format", "json")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    counts = json.loads(output[output.index(b"{"):])["counts"]
    assert counts.get("written", 0) >= rewritten  # every sidecar the killed run touched is rewritten

    read = subprocess.run(["exiftool", "-j", "-XMP-digiKam:TagsList", "-XMP-dc:Subject", "-SourceFile",
                           *map(str, sidecars)], capture_output=True, check=True)
    held = {Path(r["SourceFile"]).name: r for r in json.loads(read.stdout)}
    wrong = [name for name, r in held.items()
             if sorted(r.get("TagsList", [])) != ["phototag/animal/cat/tabby cat", "phototag/indoor"]
             or sorted(r.get("Subject", [])) != ["indoor", "tabby cat"]]
    assert len(held) == 450 and wrong == [], f"{len(wrong)} sidecars do not hold the library's tags: {wrong[:5]}"
    assert export_photos(lib, None, ["xmp"]).counts() == {"unchanged": 450}


# ---- naming an installed exporter is consent ----------------------------------------------------


def test_readme_export_line_works_on_a_fresh_library_without_config(tmp_path):
    """`phototag export --to xmp --dry-run`, as the README prints it, on a library whose home has no
    config.toml: naming an installed exporter runs it; enabling decides only what runs by itself."""
    home = tmp_path / "home"
    home.mkdir()
    settings = load_settings(home, environ={})
    use_settings(settings)
    plugins.reset_plugins()
    library = Library(settings)
    try:
        photo = save_sample("chelsea", tmp_path / "photos" / "chelsea.jpg", size=64)
        _add(library, photo, ["tabby cat"])
        assert plugins.exporters(settings) == {}  # nothing enabled, so nothing runs after tagging
    finally:
        library.close()
        use_settings(None)
        plugins.reset_plugins()
    assert not (home / "config.toml").exists()

    def run(*args):
        done = subprocess.run([sys.executable, "-m", "phototag", "--home", str(home), "export", *args],
                              capture_output=True, text=True, timeout=300)
        return done.returncode, done.stdout, done.stderr

    code, stdout, stderr = run("--to", "xmp", "--dry-run")
    assert code == 0, stderr
    assert "would-write" in stdout and "1 would-write" in stderr
    assert not (tmp_path / "photos" / "chelsea.jpg.xmp").exists()
    code, stdout, stderr = run("--to", "xmp")
    assert code == 0, stderr
    assert (tmp_path / "photos" / "chelsea.jpg.xmp").exists()

    code, stdout, stderr = run("--to", "lightroom")
    assert code == 2
    assert stderr.strip().splitlines() == [
        "error: no exporter named 'lightroom' (installed: digikam, xmp). "
        "`phototag plugins` lists the installed plugins."]
    code, stdout, stderr = run()  # no --to: the enabled exporters, and none is
    assert code == 2 and "--to xmp" in stderr


def test_min_score_keeps_weak_model_tags_out_of_sidecars_but_never_the_users(lib, tmp_path):
    class Scored(OneTagger):
        def predict(self, batch):
            return [Prediction(tags=[TagScore("tabby cat", 0.9), TagScore("weapon", 0.15)]) for _ in batch]

    path = save_sample("chelsea", tmp_path / "photos" / "chelsea.jpg", size=64)
    data = path.read_bytes()
    with lib.session() as session:
        photo = lib.upsert_photo(session, PhotoFacts(path=path, root=path.parent, size=len(data), mtime=0.0,
                                                     sha256=hashlib.sha256(data).hexdigest()))
        tagger = Scored([])
        lib.store_prediction(session, photo, lib.start_model_run(session, tagger), tagger, tagger.predict([None])[0])
        lib.add_manual_tags(session, photo, ["grandma"])  # score 1.0, source manual

    def subjects() -> set[str]:
        out = subprocess.run(["exiftool", "-j", "-XMP-dc:Subject", str(path) + ".xmp"], capture_output=True,
                             text=True, check=True)
        value = json.loads(out.stdout)[0].get("Subject", [])
        return {value} if isinstance(value, str) else set(value)

    assert export_photos(lib, None, ["xmp"], settings=lib.settings).counts() == {"written": 1}
    assert {"weapon", "tabby cat", "grandma"} <= subjects()  # default 0: everything stored is exported
    lib.settings.set_value("export.min_score", 0.5)
    assert export_photos(lib, None, ["xmp"], settings=lib.settings).counts() == {"written": 1}  # not "unchanged"
    got = subjects()
    assert "weapon" not in got and {"tabby cat", "grandma"} <= got
    with lib.session() as session:  # still in the library, still searchable
        assert "weapon" in {t["name"] for t in lib.photo_tags(session, photo.id)}
