"""The watcher with a real watchdog observer, a real SQLite file and real photo files."""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from watch.helpers import (
    model_work, photo_bytes, photo_row, queue_length, tag_names, tagged_count, wait_for, watching, write_photo,
)


def test_new_photo_is_tagged_soon_after_it_is_stable(library, tagger, root):
    with watching(library, tagger, [root], stable_seconds=1.0, batch_timeout=0.5):
        started = time.monotonic()
        write_photo(root / "2024" / "red.jpg", 0, colour="red")
        wait_for(lambda: tagged_count(library) == 1, 15, what="the new photo tagged")
        elapsed = time.monotonic() - started
    # stable for 1 s, batch flush 0.5 s, plus a tiny model: well under stable + 2 s
    assert 1.0 <= elapsed < 3.5, elapsed
    assert "red" in tag_names(library, root / "2024" / "red.jpg")
    assert model_work(library) == 1


def test_burst_of_1000_photos_some_written_slowly_is_tagged_exactly_once(library, tagger, root, tmp_path):
    n, slow = 1000, 40
    with watching(library, tagger, [root], stable_seconds=1.0, batch_timeout=0.3) as watcher:
        def write(i: int) -> None:
            dest = root / f"d{i % 7}" / f"img_{i:04d}.jpg"
            data = photo_bytes(i)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if i < slow:  # a slow copy: chunks with pauses shorter than stable_seconds
                with open(dest, "wb") as fh:
                    for k in range(0, len(data), 400):
                        fh.write(data[k:k + 400])
                        fh.flush()
                        time.sleep(0.15)
            else:
                dest.write_bytes(data)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(n)))
        wait_for(lambda: tagged_count(library) == n and queue_length(library) == 0, 240, interval=0.5,
                 what=f"{n} photos tagged")
        time.sleep(1.5)  # late events must not cause a second tagging
        assert watcher.stats.failed == 0
    assert model_work(library) == n  # each store_prediction counted once: nobody tagged twice
    assert tagger.predicted == n
    assert queue_length(library) == 0


def test_ignored_files_are_never_tagged(library, tagger, root):
    with watching(library, tagger, [root]):
        write_photo(root / ".hidden.jpg", 1)
        write_photo(root / ".cache" / "thumb.jpg", 2)
        write_photo(root / "@eaDir" / "SYNOPHOTO_THUMB.jpg", 3)
        (root / "photo.jpg.xmp").write_text("<x:xmpmeta/>")
        (root / "notes.txt").write_text("hello")
        write_photo(root / "download.jpg.part", 4, fmt="JPEG")
        write_photo(root / "~lock.jpg", 5)
        write_photo(root / "real.jpg", 6)
        wait_for(lambda: tagged_count(library) == 1, 15, what="real.jpg tagged")
        time.sleep(1.0)
    with library.session() as s:
        from phototag.db.models import Photo
        from sqlalchemy import select

        assert s.scalars(select(Photo.path)).all() == [str(root / "real.jpg")]


def test_partial_download_renamed_into_place_is_tagged_once(library, tagger, root):
    with watching(library, tagger, [root]):
        part = root / "IMG_1.jpg.crdownload"
        part.write_bytes(photo_bytes(7))
        time.sleep(0.8)
        part.rename(root / "IMG_1.jpg")
        wait_for(lambda: tagged_count(library) == 1, 15)
        time.sleep(1.0)
    assert model_work(library) == 1


def test_moves_renames_and_deletes(library, tagger, root, tmp_path):
    (root / "a").mkdir()
    with watching(library, tagger, [root]):
        write_photo(root / "a" / "one.jpg", 1)
        write_photo(root / "a" / "two.jpg", 2)
        wait_for(lambda: tagged_count(library) == 2, 15)
        one_id = photo_row(library, root / "a" / "one.jpg").id
        tags = tag_names(library, root / "a" / "one.jpg")
        with library.session() as s:  # a manual tag must survive the moves
            library.add_manual_tags(s, library.photo_by_path(s, root / "a" / "one.jpg"), ["holiday"])

        (root / "a" / "one.jpg").rename(root / "a" / "uno.jpg")  # rename
        wait_for(lambda: photo_row(library, root / "a" / "uno.jpg"), 10, what="rename followed")
        (root / "a").rename(root / "b")  # folder rename
        wait_for(lambda: photo_row(library, root / "b" / "uno.jpg"), 10, what="folder rename followed")
        (root / "c").mkdir()
        shutil.move(root / "b" / "uno.jpg", root / "c" / "uno.jpg")  # move across folders
        wait_for(lambda: photo_row(library, root / "c" / "uno.jpg"), 10, what="move followed")
        row = photo_row(library, root / "c" / "uno.jpg")
        assert row.id == one_id and row.status == "ok"
        assert tag_names(library, root / "c" / "uno.jpg") == tags | {"holiday"}

        (root / "b" / "two.jpg").unlink()  # delete
        wait_for(lambda: photo_row(library, root / "b" / "two.jpg").status == "missing", 10, what="missing")
        assert tag_names(library, root / "b" / "two.jpg")  # never purged: tags kept
    assert model_work(library) == 2  # moves cost no model work


def test_move_between_two_roots_resolves_by_content_hash(library, tagger, tmp_path):
    r1, r2 = tmp_path / "phone", tmp_path / "archive"
    r1.mkdir(), r2.mkdir()
    with watching(library, tagger, [r1, r2]):
        write_photo(r1 / "p.jpg", 11)
        wait_for(lambda: tagged_count(library) == 1, 15)
        pid = photo_row(library, r1 / "p.jpg").id
        shutil.move(r1 / "p.jpg", r2 / "p.jpg")  # two watches: a delete here, a create there
        wait_for(lambda: photo_row(library, r2 / "p.jpg"), 15, what="moved photo found by hash")
        assert photo_row(library, r2 / "p.jpg").id == pid
    assert model_work(library) == 1


def test_changed_photo_is_tagged_again(library, tagger, root):
    with watching(library, tagger, [root]):
        write_photo(root / "p.jpg", 3, colour="red")
        wait_for(lambda: "red" in tag_names(library, root / "p.jpg"), 15)
        time.sleep(0.05)
        write_photo(root / "p.jpg", 4, colour="blue")
        wait_for(lambda: "blue" in tag_names(library, root / "p.jpg"), 15, what="retagged after edit")
        assert "red" not in tag_names(library, root / "p.jpg")
    assert model_work(library) == 2


def test_catch_up_on_start(library, tagger, root):
    write_photo(root / "keep.jpg", 1)
    write_photo(root / "gone.jpg", 2)
    write_photo(root / "moveme.jpg", 3)
    with watching(library, tagger, [root]):
        wait_for(lambda: tagged_count(library) == 3, 15)
    moved_id = photo_row(library, root / "moveme.jpg").id
    # while the daemon is off: one new, one deleted, one moved
    write_photo(root / "new.jpg", 4)
    (root / "gone.jpg").unlink()
    (root / "sub").mkdir()
    (root / "moveme.jpg").rename(root / "sub" / "moved.jpg")
    with watching(library, tagger, [root]):
        wait_for(lambda: photo_row(library, root / "new.jpg") and photo_row(library, root / "sub" / "moved.jpg")
                 and photo_row(library, root / "gone.jpg").status == "missing", 15, what="catch-up")
    assert photo_row(library, root / "sub" / "moved.jpg").id == moved_id
    assert model_work(library) == 4


def test_vanished_root_is_paused_not_marked_missing(library, tagger, tmp_path):
    drive = tmp_path / "drive"
    root = drive / "Pictures"
    for i in range(3):
        write_photo(root / f"p{i}.jpg", i)
    with watching(library, tagger, [root]) as watcher:
        wait_for(lambda: tagged_count(library) == 3, 15)
        drive.rename(tmp_path / "drive.unplugged")  # the drive goes away
        wait_for(lambda: watcher.roots[0].paused, 10, what="root paused")
        time.sleep(2.5)  # longer than the delete delay and a root check
        assert {photo_row(library, root / f"p{i}.jpg").status for i in range(3)} == {"ok"}
        write_photo(tmp_path / "drive.unplugged" / "Pictures" / "while_away.jpg", 9)
        (tmp_path / "drive.unplugged").rename(drive)  # plugged in again
        wait_for(lambda: not watcher.roots[0].paused, 10, what="root resumed")
        wait_for(lambda: tagged_count(library) == 4, 15, what="catch-up after resume")
        write_photo(root / "after.jpg", 10)  # watched again
        wait_for(lambda: tagged_count(library) == 5, 15, what="watching after resume")
    assert {photo_row(library, root / f"p{i}.jpg").status for i in range(3)} == {"ok"}


def test_root_removed_as_a_whole_marks_nothing_missing(library, tagger, tmp_path):
    root = tmp_path / "usb"
    for i in range(4):
        write_photo(root / "DCIM" / f"p{i}.jpg", i)
    with watching(library, tagger, [root]) as watcher:
        wait_for(lambda: tagged_count(library) == 4, 15)
        shutil.rmtree(root)
        wait_for(lambda: watcher.roots[0].paused, 10, what="root paused")
        time.sleep(2.0)
    assert {photo_row(library, root / "DCIM" / f"p{i}.jpg").status for i in range(4)} == {"ok"}


def test_empty_mount_point_at_start_is_paused(library, tagger, tmp_path):
    root = tmp_path / "mnt"
    write_photo(root / "p.jpg", 1)
    with watching(library, tagger, [root]):
        wait_for(lambda: tagged_count(library) == 1, 15)
    (root / "p.jpg").rename(tmp_path / "p.jpg")  # the mount point is empty: its drive is unmounted
    with watching(library, tagger, [root]) as watcher:
        assert watcher.roots[0].paused
        time.sleep(1.0)
    assert photo_row(library, root / "p.jpg").status == "ok"


def test_bad_files_are_recorded_and_the_daemon_goes_on(library, tagger, root, tmp_path):
    library.settings.data["scan"]["max_pixels"] = 1_000_000
    good = photo_bytes(1)
    with watching(library, tagger, [root]) as watcher:
        (root / "empty.jpg").write_bytes(b"")
        (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
        (root / "text.jpg").write_text("not a photo at all")
        write_photo(root / "actually_png.jpg", 2, fmt="PNG")  # wrong extension, real photo: tagged
        Image.new("L", (2000, 1000)).save(root / "bomb.png")  # over max_pixels (a decompression bomb)
        os.mkfifo(root / "pipe.jpg")  # reading it would block forever
        os.symlink(root, root / "loop")  # a symlink loop
        (root / "sub").mkdir()
        os.symlink(root / "sub", root / "sub" / "again")
        write_photo(tmp_path / "outside.jpg", 3)
        os.symlink(tmp_path / "outside.jpg", root / "link.jpg")  # links are not followed by default
        expected = {"empty.jpg": "empty file", "truncated.jpg": "truncated", "text.jpg": "not an image",
                    "bomb.png": "decompression bomb"}
        wait_for(lambda: all(photo_row(library, root / n) for n in [*expected, "actually_png.jpg"]), 20,
                 what="all files settled")
        for name, words in expected.items():
            row = photo_row(library, root / name)
            assert row.status == "error" and words in row.error, (name, row.error)
        assert photo_row(library, root / "actually_png.jpg").status == "ok"
        assert photo_row(library, root / "pipe.jpg") is None and photo_row(library, root / "link.jpg") is None
        write_photo(root / "after.jpg", 4)  # still alive
        wait_for(lambda: photo_row(library, root / "after.jpg"), 15, what="daemon still working")
        assert watcher.stats.failed >= 4
    assert queue_length(library) == 0


def test_unreadable_file_is_recorded(library, tagger, root):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading, so there is no unreadable file")
    with watching(library, tagger, [root]):
        p = write_photo(root / "secret.jpg", 1)
        p.chmod(0)
        wait_for(lambda: photo_row(library, p), 15)
        assert "permission denied" in photo_row(library, p).error


def test_file_gone_before_it_is_claimed_is_dropped(library, tagger, root):
    with watching(library, tagger, [root]) as watcher:
        watcher.queue.enqueue([root / "never_there.jpg"])
        watcher.wakeup.set()
        wait_for(lambda: queue_length(library) == 0, 10, what="row dropped")
        write_photo(root / "ok.jpg", 1)
        wait_for(lambda: tagged_count(library) == 1, 15)
    assert photo_row(library, root / "never_there.jpg") is None


def test_polling_mode(library, tagger, root):
    with watching(library, tagger, [root], polling=True, poll_seconds=0.3) as watcher:
        assert watcher.roots[0].mode == "polling"
        write_photo(root / "p.jpg", 1)
        wait_for(lambda: tagged_count(library) == 1, 15)
        (root / "p.jpg").rename(root / "q.jpg")
        wait_for(lambda: photo_row(library, root / "q.jpg"), 15, what="rename seen by polling")
        (root / "q.jpg").unlink()
        wait_for(lambda: photo_row(library, root / "q.jpg").status == "missing", 15)
    assert model_work(library) == 1


def test_inotify_watch_limit_falls_back_to_polling(library, tagger, root, monkeypatch):
    # The real limit (fs.inotify.max_user_watches) cannot be lowered from a test: inject the error
    # watchdog raises when the kernel refuses a watch.
    from watchdog.observers.inotify import InotifyObserver

    def refuse(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(InotifyObserver, "schedule", refuse)
    with watching(library, tagger, [root], poll_seconds=0.3) as watcher:
        assert watcher.roots[0].mode == "polling"
        assert "inotify watch limit" in watcher.roots[0].why_polling
        write_photo(root / "p.jpg", 1)
        wait_for(lambda: tagged_count(library) == 1, 15)


def test_network_filesystems_are_detected_from_proc_mounts():
    from phototag.watch.mounts import filesystem_type, is_network_filesystem

    mounts = (
        "/dev/sda1 / ext4 rw 0 0\n"
        "nas:/volume1/photo /mnt/nas nfs4 rw 0 0\n"
        "//server/share /mnt/smb cifs rw 0 0\n"
        "me@host:/pics /home/me/remote\\040pics fuse.sshfs rw 0 0\n"
        "/dev/sdb1 /mnt/nas/local ext4 rw 0 0\n"
    )
    assert filesystem_type("/mnt/nas/2024/x.jpg", mounts) == "nfs4"
    assert is_network_filesystem("/mnt/nas/2024", mounts)
    assert is_network_filesystem("/mnt/smb", mounts)
    assert is_network_filesystem("/home/me/remote pics/a", mounts)
    assert not is_network_filesystem("/mnt/nas/local/a", mounts)  # a local disk mounted inside
    assert not is_network_filesystem("/home/me/Pictures", mounts)
    assert not is_network_filesystem("/mnt/nasty", mounts)


def test_poison_photo_is_set_aside_after_failing_alone_and_retried_with_a_new_model(library, root):
    from watch.helpers import ColourTagger

    class Fussy(ColourTagger):
        """Fails on any batch holding a green photo (a model that crashes on one input)."""

        def predict(self, batch):
            if any(int(m.argmax()) == 1 for m in batch):
                raise RuntimeError("model crashed")
            return super().predict(batch)

    class Fixed(ColourTagger):
        model_id = "test/mean-colour-v2"  # a new model version: what was set aside is tried again

    for i in range(6):
        write_photo(root / f"red{i}.jpg", i, colour="red")
    write_photo(root / "green.jpg", 100, colour="green")
    with watching(library, Fussy(), [root]) as watcher:
        watcher.retry_seconds = 0.05
        wait_for(lambda: photo_row(library, root / "green.jpg")
                 and photo_row(library, root / "green.jpg").status == "error", 60, what="poison set aside")
        wait_for(lambda: tagged_count(library) == 6, 30, what="the others tagged")
        error = photo_row(library, root / "green.jpg").error
        assert "set aside after 3 failures while tagged alone" in error and "model crashed" in error
    assert queue_length(library) == 1  # kept, set aside for this phototag + model
    assert model_work(library) == 6
    with watching(library, Fussy(), [root]) as watcher:  # the same model again: not retried
        time.sleep(2)
    assert queue_length(library) == 1 and photo_row(library, root / "green.jpg").status == "error"
    with watching(library, Fixed(), [root]):
        wait_for(lambda: photo_row(library, root / "green.jpg").status == "ok", 60, what="retried with v2")
    assert queue_length(library) == 0 and tagged_count(library) == 7


def test_a_model_that_cannot_load_stops_the_watcher_and_blames_no_photo(library, root):
    from phototag.tagging.base import TaggerError
    from watch.helpers import ColourTagger

    class Unloadable(ColourTagger):
        def predict(self, batch):
            raise TaggerError("weights file not found: /nowhere/model.safetensors")

    write_photo(root / "p.jpg", 1)
    from phototag.watch.daemon import Watcher

    watcher = Watcher(library, Unloadable(), [root], stable_seconds=0.3, batch_timeout=0.1, decode_workers=1)
    with pytest.raises(TaggerError, match="weights file not found"):
        watcher.run()
    with library.session() as s:
        from phototag.db.models import WorkItem
        from sqlalchemy import select

        rows = s.execute(select(WorkItem.path, WorkItem.attempts)).all()
    assert [(r.path, r.attempts) for r in rows] == [(str(root / "p.jpg"), 0)]  # still queued, not charged
    assert photo_row(library, root / "p.jpg") is None


@pytest.mark.parametrize("moment", ["before_prepare", "after_prepare"])
def test_stop_while_a_claimed_row_is_prepared_loses_and_charges_nothing(library, tagger, root, moment):
    """SIGTERM can land while the job stream classifies a claimed row (hashing it) or just after it
    handed the job over: the row must be tagged or stay queued, and no row may stay charged a claim."""
    from sqlalchemy import func, select

    from phototag.db.models import WorkItem
    from phototag.watch.daemon import Watcher

    n = 20
    old = time.time() - 3600
    for i in range(n):  # there before the start and long stable: the catch-up pass enqueues them all
        os.utime(write_photo(root / f"p{i:02d}.jpg", i), (old, old))
    watcher = Watcher(library, tagger, [root], stable_seconds=0.5, batch_timeout=0.2, decode_workers=2)
    prepare, prepared = watcher.consumer.prepare, []

    def stops_mid_claim(item, report):
        prepared.append(item.path)
        if len(prepared) == 5 and moment == "before_prepare":
            watcher.stop()  # what the SIGTERM handler does, at this instant
        job = prepare(item, report)
        if len(prepared) == 5 and moment == "after_prepare":
            watcher.stop()
        return job

    watcher.consumer.prepare = stops_mid_claim
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "watcher did not stop"
    with library.session() as s:
        claimed = s.scalar(select(func.count()).select_from(WorkItem).where(WorkItem.attempts > 0))
    tagged, queued = tagged_count(library), queue_length(library)
    assert len(prepared) >= 5
    assert (tagged + queued, claimed) == (n, 0), (tagged, queued, claimed)
    assert model_work(library) == tagged


def test_suspect_whose_probe_process_hangs_is_set_aside_and_a_healthy_one_is_tagged(library, home, tagger, root):
    """Rows whose claims died twice (real processes that claimed them and died) are suspects: each
    is decoded alone in a probe process first. A probe that does not finish in time is evidence;
    three of them set the photo aside. The other suspect's probe passes and it is tagged."""
    from phototag.ingest.queue import ISOLATE_AFTER, WorkQueue
    from phototag.watch.daemon import Watcher
    from ingest.test_queue import claim_in_a_process_that_dies

    old = time.time() - 3600
    good, slow = root / "good.jpg", root / "slow.jpg"
    for i, p in enumerate((good, slow)):
        os.utime(write_photo(p, i), (old, old))
    WorkQueue(library).enqueue([good, slow])
    for _ in range(ISOLATE_AFTER):
        assert len(claim_in_a_process_that_dies(home, 2)) == 2

    watcher = Watcher(library, tagger, [root], stable_seconds=0.5, batch_timeout=0.2, decode_workers=2)
    consumer = watcher.consumer
    probe = consumer.probe

    def slow_probe(item):
        consumer.probe_timeout = 0.01 if item.path == slow else 120.0  # no Python starts in 10 ms
        return probe(item)

    consumer.probe = slow_probe
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: photo_row(library, good) and photo_row(library, good).tagged_run_id, 60, what="good tagged")
        wait_for(lambda: photo_row(library, slow) and photo_row(library, slow).status == "error", 60,
                 what="slow set aside")
        wait_for(lambda: queue_length(library) == 1, 30, what="good's row settled")
    finally:
        watcher.stop()
        thread.join(60)
    error = photo_row(library, slow).error
    assert "set aside after 3 failures" in error and "hung" in error
    assert model_work(library) == 1 and queue_length(library) == 1
