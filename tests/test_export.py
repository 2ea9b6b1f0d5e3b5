"""The export service and ``phototag export``: state, skipping, failures, transactions, the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import typer
from conftest import save_sample
from typer.testing import CliRunner

from phototag import plugins
from phototag.config import dump_toml, load_settings, use_settings
from phototag.db.models import ExportState, Photo, PhotoStatus
from phototag.export import (
    ExportError,
    ExportResult,
    Exporter,
    export_photos,
)
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
    with lib.session() as session:
        return {s.photo_id: s.content_hash for s in session.query(ExportState)}


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
    from phototag.export import load_items

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
    with pytest.raises(ExportError, match=r"no exporter named 'lightroom' \(available: xmp\).*enabled"):
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
