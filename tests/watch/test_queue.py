"""The persistent work queue: order, upserts, attempts, and the in-flight re-enqueue rule."""

from __future__ import annotations

from sqlalchemy import select

from phototag.db.models import WorkItem
from phototag.ingest.queue import ISOLATE_AFTER, PRIORITY_CATCH_UP, PRIORITY_NEW, PRIORITY_RETAG, WorkQueue
from phototag.pipeline import Job, Pipeline
from watch.helpers import ColourTagger, model_work, photo_row, queue_length, write_photo


def test_claim_order_is_priority_then_fifo_and_enqueue_keeps_the_higher_priority(library, tmp_path):
    q = WorkQueue(library)
    q.enqueue([tmp_path / "a.jpg", tmp_path / "b.jpg"], priority=PRIORITY_CATCH_UP)
    q.enqueue([tmp_path / "c.jpg"], priority=PRIORITY_RETAG, reason="retag")
    q.enqueue([tmp_path / "d.jpg"], priority=PRIORITY_NEW)
    q.enqueue([tmp_path / "b.jpg"], priority=PRIORITY_NEW)  # upsert: b is now urgent, keeps its place among them
    q.enqueue([tmp_path / "a.jpg"], priority=PRIORITY_RETAG)  # a lower priority never demotes
    assert q.length() == 4
    claimed = q.claim(10)
    assert [c.path.name for c in claimed] == ["b.jpg", "d.jpg", "a.jpg", "c.jpg"]
    assert all(c.attempts == 0 for c in claimed)
    with library.session() as s:
        assert set(s.scalars(select(WorkItem.attempts)).all()) == {1}


def test_a_path_in_flight_is_not_claimed_twice(library, tmp_path):
    q = WorkQueue(library)
    q.enqueue([tmp_path / "a.jpg", tmp_path / "b.jpg"])
    (first,) = q.claim(1)
    assert [c.path.name for c in q.claim(5, skip={str(first.path)})] == ["b.jpg"]
    q.enqueue([first.path])  # changed while in flight: queued again, with a later stamp
    assert q.claim(5, skip={str(first.path), str(tmp_path / "b.jpg")}) == []  # not while the first job runs
    assert q.still_queued({str(first.path): first.enqueued_at}) == set()
    assert q.queued_paths([str(first.path)]) == {str(first.path)}
    (again,) = q.claim(5, skip={str(tmp_path / "b.jpg")})  # once it is done
    assert again.path == first.path and again.enqueued_at > first.enqueued_at


def test_rows_that_failed_twice_are_claimed_alone(library, tmp_path):
    q = WorkQueue(library)
    q.enqueue([tmp_path / f"{i}.jpg" for i in range(5)])
    for _ in range(ISOLATE_AFTER):
        assert len(q.claim(5)) == 5  # claimed, never finished (the process "died")
    alone = q.claim(5)
    assert len(alone) == 1 and alone[0].isolated and alone[0].attempts == ISOLATE_AFTER


def test_batch_does_not_drop_a_row_enqueued_again_while_in_flight(library, tmp_path):
    photo = write_photo(tmp_path / "p.jpg", 1)
    q = WorkQueue(library)
    q.enqueue([photo])
    (item,) = q.claim(1)
    q.enqueue([photo])  # the file changed again while its batch was in flight
    Pipeline(library, ColourTagger(), decode_workers=1).process(
        [Job(photo, tmp_path, queued_at=item.enqueued_at)])
    assert photo_row(library, photo).tagged_run_id is not None
    assert queue_length(library) == 1  # still queued: the newer version will be looked at
    # a claim that is current is removed with its batch
    (item,) = q.claim(1)
    Pipeline(library, ColourTagger(), decode_workers=1).process(
        [Job(photo, tmp_path, queued_at=item.enqueued_at)])
    assert queue_length(library) == 0
    assert model_work(library) == 2


def test_scan_still_clears_queue_rows_by_path(library, tmp_path):
    root = tmp_path / "r"
    write_photo(root / "p.jpg", 1)
    WorkQueue(library).enqueue([root / "p.jpg"])
    Pipeline(library, ColourTagger(), decode_workers=1).scan([root])
    assert queue_length(library) == 0


def test_file_vanishing_after_its_claim_is_recorded_and_its_row_settled(library, tmp_path):
    photo = write_photo(tmp_path / "p.jpg", 1)
    q = WorkQueue(library)
    q.enqueue([photo])
    (item,) = q.claim(1)
    st = photo.stat()
    photo.unlink()  # gone between classification (size, mtime, hash known) and decoding
    report = Pipeline(library, ColourTagger(), decode_workers=1).process(
        [Job(photo, tmp_path, size=st.st_size, mtime=st.st_mtime, sha256="0" * 64, queued_at=item.enqueued_at)])
    assert report.failed == 1 and "vanished" in report.errors[0][1]
    row = photo_row(library, photo)
    assert row.status == "error" and "vanished" in row.error
    assert queue_length(library) == 0
