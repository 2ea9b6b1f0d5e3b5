"""Background re-tagging in the watch daemon: a real Watcher (real watchdog, real SQLite file) whose
models come through the real registry (``get_tagger`` → plugin taggers), and a default model that
changes in config.toml while it runs."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest
from sqlalchemy import select

from phototag import plugins
from phototag.db.models import ModelRun, Photo, WorkItem
from phototag.hookspecs import hookimpl
from phototag.ingest.queue import WorkQueue
from phototag.pipeline import Pipeline
from phototag.tagging.base import Prediction, TagScore
from phototag.tagging.registry import get_tagger

from watch.helpers import ColourTagger, model_work, queue_length, tag_names, wait_for, watching, write_photo


class ShadeTagger(ColourTagger):
    """A second tiny model: other tag names for the colour, the same bright/dark tag."""

    name = "shade"
    model_id = "test/shade"

    @property
    def weights_sha256(self) -> str:
        return "1" * 64

    def predict(self, batch):
        out = []
        for p in super().predict(batch):
            colour, light = p.tags[0].name, p.tags[1]
            out.append(Prediction([TagScore(f"{colour}ish", 0.8), light]))
        return out


class TestModels:
    """A plugin providing both models, so ``default_model = "shade"`` loads through the registry."""

    @staticmethod
    @hookimpl
    def register_taggers(settings):
        return [ColourTagger(), ShadeTagger()]


@pytest.fixture
def models(library):
    plugins.register_plugin(TestModels, "watch-test-models")
    library.settings.set_value("default_model", "colour")
    library.settings.set_value("retag.check_seconds", 0.5)
    yield
    plugins.unregister_plugin("watch-test-models")


def run_models(lib) -> dict[str, str]:
    """path → name of the model whose run tagged it last."""
    with lib.session() as s:
        rows = s.execute(select(Photo.path, ModelRun.model_name).join(ModelRun, ModelRun.id == Photo.tagged_run_id))
        return dict(rows.all())


def scan(lib, root, tagger) -> None:
    report = Pipeline(lib, tagger, decode_workers=2).scan([root])
    assert report.failed == 0


def photos_in(root, n: int, prefix: str = "img") -> list:
    return [write_photo(root / f"{prefix}_{i}.jpg", i, colour=("red", "green", "blue")[i % 3]) for i in range(n)]


def test_new_default_model_retags_in_the_background_keeping_corrections(library, root, models):
    paths = photos_in(root, 3)
    tagger = get_tagger(library.settings)
    assert tagger.name == "colour"
    with watching(library, tagger, [root]) as watcher:
        wait_for(lambda: len(run_models(library)) == 3, 20, what="3 photos tagged by colour")
        first = paths[0]
        before = tag_names(library, first)
        assert "red" in before and "bright" not in before and "dark" in before
        with library.session() as s:
            photo = library.photo_by_path(s, first)
            library.add_manual_tags(s, photo, ["holiday"])
            library.remove_tags(s, photo, ["dark"])

        library.settings.set_value("default_model", "shade")  # config.toml changes under the daemon
        wait_for(lambda: set(run_models(library).values()) == {"shade"}, 30, what="re-tagged by shade")
        assert watcher.tagger.name == "shade"
        time.sleep(1.5)  # a few more checks: the photos are not due any more, nothing is tagged again
        assert model_work(library) == 6 and queue_length(library) == 0
    tags = tag_names(library, first)
    assert "redish" in tags and "red" not in tags  # model tags replaced by the new model's
    assert "holiday" in tags  # the manual tag is kept
    assert "dark" not in tags  # the removed tag stays removed although shade gives it too
    assert "dark" in tag_names(library, paths[1]) and "greenish" in tag_names(library, paths[1])


def test_nothing_is_retagged_outside_the_window(library, root, models):
    photos_in(root, 3)
    scan(library, root, get_tagger(library.settings))
    hour = dt.datetime.now().hour
    library.settings.set_value("retag.window", f"{(hour + 2) % 24:02d}:00-{(hour + 3) % 24:02d}:00")
    library.settings.set_value("default_model", "shade")
    with watching(library, get_tagger(library.settings), [root]) as watcher:
        assert watcher.tagger.name == "shade"
        time.sleep(3.0)  # several checks
        with library.session() as s:
            assert s.scalars(select(WorkItem.reason)).all() == []
    assert set(run_models(library).values()) == {"colour"}
    assert model_work(library) == 3


def test_bad_retag_setting_is_logged_once_and_watching_goes_on(library, root, models, caplog):
    photos_in(root, 2)
    scan(library, root, get_tagger(library.settings))
    library.settings.set_value("retag.every", "monthly")
    with watching(library, get_tagger(library.settings), [root]):
        time.sleep(2.5)
        write_photo(root / "new.jpg", 7)
        wait_for(lambda: "new.jpg" in "".join(run_models(library)), 15, what="new photo tagged")
    errors = [r for r in caplog.records if "retag.every" in r.getMessage()]
    assert len(errors) == 1


def test_rows_of_a_retag_model_session_are_left_alone(library, root, models):
    paths = photos_in(root, 3)
    scan(library, root, get_tagger(library.settings))
    # what `phototag retag --model shade` queued before it was interrupted
    assert WorkQueue(library).enqueue_retag([str(p) for p in paths], "shade") == 3
    with watching(library, get_tagger(library.settings), [root]):
        write_photo(root / "new.jpg", 9)
        wait_for(lambda: "new.jpg" in "".join(run_models(library)), 15, what="new photo tagged")
        time.sleep(1.5)
    with library.session() as s:
        rows = s.execute(select(WorkItem.path, WorkItem.model_name, WorkItem.attempts)).all()
    assert sorted(rows) == sorted((str(p), "shade", 0) for p in paths)  # not claimed, not charged
    assert set(run_models(library).values()) == {"colour"} and model_work(library) == 4


def test_new_photos_are_tagged_before_queued_retags(library, root, models):
    old = photos_in(root, 8, "old")
    scan(library, root, get_tagger(library.settings))
    library.settings.set_value("default_model", "shade")
    # arrived while the daemon was off; larger, and slower to prepare: were re-tags queued beside them,
    # the re-tags claimed after them would be decoded first and stored in an earlier batch
    new = [write_photo(root / f"new_{i}.jpg", 100 + i, size=256) for i in range(3)]
    t = time.time() - 3600  # written a while ago: the catch-up pass queues them at once (already stable)
    for p in new:
        os.utime(p, (t, t))

    class SlowToPrepareLarge(ShadeTagger):
        def prepare(self, image):
            if image.width > 64:
                time.sleep(0.4)
            return super().prepare(image)

    batches: list[list[int]] = []
    with watching(library, SlowToPrepareLarge(), [root], batch_size=2,
                  on_commit=lambda ids: batches.append(list(ids))):
        wait_for(lambda: set(run_models(library).values()) == {"shade"} and queue_length(library) == 0, 30,
                 what="everything tagged by shade")
    with library.session() as s:
        ids = dict(s.execute(select(Photo.path, Photo.id)).all())
    batch_of = {pid: i for i, batch in enumerate(batches) for pid in batch}
    assert len(batch_of) == 11
    last_new = max(batch_of[ids[str(p)]] for p in new)
    first_retag = min(batch_of[ids[str(p)]] for p in old)
    assert last_new < first_retag, batches
    assert model_work(library) == 8 + 11  # the first scan, then each photo once with shade


def test_a_new_photo_jumps_ahead_of_a_long_background_retag(library, root, models):
    old = photos_in(root, 20, "old")
    scan(library, root, get_tagger(library.settings))

    class SlowShade(ShadeTagger):
        def predict(self, batch):
            time.sleep(0.3 * len(batch))
            return super().predict(batch)

    library.settings.set_value("default_model", "shade")
    with watching(library, SlowShade(), [root], batch_size=2):
        wait_for(lambda: any(m == "shade" for m in run_models(library).values()), 20, what="re-tagging started")
        write_photo(root / "new.jpg", 42)
        wait_for(lambda: run_models(library).get(str(root / "new.jpg")) == "shade", 20, what="new photo tagged")
        still_old = sum(1 for p in old if run_models(library)[str(p)] == "colour")
    assert still_old > 0  # the new photo did not wait for the whole re-tag
