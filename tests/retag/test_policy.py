"""Background re-tagging policy: what is due, when, and how it is queued (low priority)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from phototag.db.models import Photo, WorkItem
from phototag.ingest.queue import PRIORITY_NEW, PRIORITY_RETAG, WorkQueue
from phototag.retag import RetagError, policy


def test_parse_every_and_window():
    assert policy.parse_every("30d") == dt.timedelta(days=30)
    assert policy.parse_every("12h") == dt.timedelta(hours=12)
    assert policy.parse_every(None) is None and policy.parse_every("off") is None
    with pytest.raises(RetagError, match="30d"):
        policy.parse_every("monthly")
    window = policy.parse_window("01:00-06:00")
    assert policy.in_window(window, dt.datetime(2026, 1, 1, 3, 0))
    assert not policy.in_window(window, dt.datetime(2026, 1, 1, 6, 0))
    wrap = policy.parse_window("22:00-05:00")
    assert policy.in_window(wrap, dt.datetime(2026, 1, 1, 23, 30))
    assert policy.in_window(wrap, dt.datetime(2026, 1, 1, 4, 59))
    assert not policy.in_window(wrap, dt.datetime(2026, 1, 1, 12, 0))
    with pytest.raises(RetagError, match="HH:MM"):
        policy.parse_window("1am-6am")


def test_nothing_due_for_a_fresh_library(scanned):
    lib, _ = scanned
    with lib.session() as s:
        assert policy.due_retag(s, lib.settings, dt.datetime.now()) == []
    assert policy.schedule_background_retag(lib, now=dt.datetime.now()) == 0


def test_new_default_model_makes_everything_due_inside_the_window_only(scanned):
    lib, photos = scanned
    lib.settings.set_value("default_model", "builtin-ft1")
    lib.settings.set_value("retag.window", "01:00-06:00")
    with lib.session() as s:
        assert policy.due_retag(s, lib.settings, dt.datetime(2026, 3, 1, 12, 0)) == []
        due = policy.due_retag(s, lib.settings, dt.datetime(2026, 3, 1, 2, 0))
    assert len(due) == 12
    # a photo already waiting (e.g. a new version of the file) is not queued twice
    WorkQueue(lib).enqueue([photos / "coffee.jpg"], "changed", PRIORITY_NEW)
    assert policy.schedule_background_retag(lib, now=dt.datetime(2026, 3, 1, 2, 0)) == 11
    with lib.session() as s:
        rows = s.execute(select(WorkItem.reason, WorkItem.priority, WorkItem.model_name)).all()
    assert sorted(set(rows)) == [("changed", PRIORITY_NEW, None), ("retag", PRIORITY_RETAG, None)]
    # queued photos are no longer due: a second call adds nothing
    assert policy.schedule_background_retag(lib, now=dt.datetime(2026, 3, 1, 2, 5)) == 0


def test_every_makes_old_taggings_due(scanned):
    lib, photos = scanned
    lib.settings.set_value("retag.every", "30d")
    now = dt.datetime.now().astimezone()
    with lib.session() as s:
        assert policy.due_retag(s, lib.settings, now) == []
        s.execute(update(Photo).where(Photo.path.like("%chelsea%"))
                  .values(tagged_at=(now - dt.timedelta(days=31)).astimezone(dt.timezone.utc).replace(tzinfo=None)))
    with lib.session() as s:
        due = policy.due_retag(s, lib.settings, now)
        paths = sorted(p.rsplit("/", 1)[1] for p in s.scalars(select(Photo.path).where(Photo.id.in_(due))))
    assert paths == ["chelsea-b.jpg", "chelsea.jpg"]


def test_other_weights_of_the_default_model_make_photos_due(scanned):
    lib, _ = scanned
    with lib.session() as s:
        assert policy.due_retag(s, lib.settings, dt.datetime.now(), weights_sha256="0" * 64) != []
