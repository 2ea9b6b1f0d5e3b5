"""discover → fingerprint → decode → batch → infer → persist → after-commit hooks.

Shared by ``scan``, ``watch`` and ``retag``:

* discovery + classification (unchanged / moved / needs the model) runs in a producer thread;
* decoding (Pillow, EXIF, the tagger's ``prepare``) runs in a thread pool — Pillow, pillow-heif and
  the hash functions release the GIL, so decode overlaps inference;
* inference runs in the calling thread, the one owner of the model; batches flush on size or after
  ``batch_timeout`` seconds so a lone new photo is not kept waiting;
* each batch is persisted in one transaction (photos, tags, embeddings, captions, and the removal of
  the batch's work-queue rows), so a crash never leaves half a batch;
* ``scan`` claims each file that needs the model in the work queue before decoding it
  (:meth:`phototag.ingest.queue.WorkQueue.claim_path`): two scans of one library, or a scan and the
  watcher, never tag one file twice; a file another live process holds is left to it;
* two kinds of job need no model: a photo whose XMP sidecar another app changed (its keywords are read
  again: two-way sync, ``docs/sync.md``) and a byte-identical copy of a photo the same model (same
  weights and settings) already tagged (its model tags, embedding and caption are copied);
* a batch whose transaction fails for a reason that is not the database's (a value SQLite cannot
  store) is stored again photo by photo, and the photo that fails is recorded as that photo's error.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from sqlalchemy import select

from phototag import plugins
from phototag.db.models import ModelRun, Photo, PhotoStatus
from phototag.ingest.decode import DecodeError, decode_photo
from phototag.ingest.exif import read_exif
from phototag.ingest.fingerprint import sha256_file
from phototag.ingest.keywords import PhotoKeywords, read_keywords, read_photo_keywords, sidecar_stat
from phototag.ingest.walk import FoundFile, iter_photo_files
from phototag.library import Library, PhotoFacts
from phototag.tagging.base import Tagger

log = logging.getLogger(__name__)


class PersistError(Exception):
    """A batch could not be stored (the database failed, not the photos): nothing is to blame on them."""


@dataclass
class Job:
    """One file that needs the model."""

    path: Path
    root: Path | None
    reason: str = "new"  # new | changed | retag | sidecar (its sidecar changed: keywords only, no model)
    size: int | None = None
    mtime: float | None = None
    sha256: str | None = None
    #: set for jobs claimed from the work queue: the row's ``enqueued_at`` at claim time. The batch
    #: deletes the row only if it was not enqueued again meanwhile (the file changed in flight).
    queued_at: datetime.datetime | None = None
    #: a tagged photo with the same content, model, weights and settings: its results are copied
    copy_of: int | None = None


@dataclass
class Report:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    moved: int = 0
    failed: int = 0
    missing: int = 0
    retagged: int = 0
    tagged: int = 0
    busy: int = 0  # files another running phototag process was tagging (left to it)
    copied: int = 0  # new/changed photos given the tags of a byte-identical photo (no model work)
    synced: int = 0  # unchanged photos whose sidecar changed: keywords read again (no model work)
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    model_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "new": self.new, "updated": self.updated, "unchanged": self.unchanged, "moved": self.moved,
            "failed": self.failed, "missing": self.missing, "retagged": self.retagged, "tagged": self.tagged,
            "busy": self.busy, "copied": self.copied, "synced": self.synced,
            "seconds": round(self.seconds, 3), "model_seconds": round(self.model_seconds, 3),
            "errors": [{"path": p, "error": e} for p, e in self.errors],
        }


@dataclass
class _Decoded:
    job: Job
    facts: PhotoFacts | None = None
    prepared: Any = None
    keywords: PhotoKeywords = field(default_factory=PhotoKeywords)  # the user's keywords and sidecar edits
    error: str | None = None

    @property
    def kind(self) -> str:
        """model | copy | sidecar: what storing it takes."""
        if self.job.reason == "sidecar":
            return "sidecar"
        return "copy" if self.job.copy_of is not None else "model"


ProgressFn = Callable[[str, int], None]  # (event, n): "total", "advance"
CommitFn = Callable[[list[int]], None]  # photo ids committed with new tags


class Pipeline:
    def __init__(
        self,
        library: Library,
        tagger: Tagger,
        *,
        decode_workers: int | None = None,
        batch_size: int | None = None,
        batch_timeout: float = 1.0,
        progress: ProgressFn | None = None,
        on_commit: CommitFn | None = None,
        stop_event: threading.Event | None = None,
    ):
        self.library = library
        self.tagger = tagger
        settings = library.settings
        self.decode_workers = decode_workers or int(settings.get("decode_workers") or 0) or (os.cpu_count() or 2)
        self.batch_size = batch_size or int(settings.get("batch_size") or 0) or tagger.batch_size
        self.batch_timeout = batch_timeout
        self.extensions = settings.get("scan.extensions")
        self.follow_symlinks = bool(settings.get("scan.follow_symlinks"))
        self.max_pixels = int(settings.get("scan.max_pixels") or 300_000_000)
        self.xmp_root = str(settings.get("plugins.xmp.root") or "phototag")  # our keywords are not "imported"
        self.progress = progress or (lambda event, n: None)
        self.on_commit = on_commit
        self.stop_event = stop_event or threading.Event()
        self._run_id: int | None = None
        self._claimed: dict[str, datetime.datetime] | None = None  # scan's claims not settled yet
        self._tagger_key: tuple[Tagger, tuple[str, str, str]] | None = None
        self._names_zh_filled_for: Tagger | None = None

    # ---- scanning -------------------------------------------------------------------------
    def scan(self, roots: Iterable[Path | str]) -> Report:
        """Bring the library up to date with ``roots``: tag new/changed photos, follow moves,
        mark vanished ones missing."""
        started = time.perf_counter()
        report = Report()
        roots = [Path(r).expanduser().resolve() for r in roots]
        found: list[FoundFile] = []
        for root in roots:
            if not root.exists():
                report.errors.append((str(root), "folder not found (nothing marked missing)"))
                continue
            found.extend(iter_photo_files(root, self.extensions, self.follow_symlinks))
        self.progress("total", len(found))
        from phototag.ingest.queue import WorkQueue

        claims = WorkQueue(self.library)
        claimed: dict[str, datetime.datetime] = {}
        self._claimed = claimed
        finished = False
        try:
            self.process(self._claim(claims, self._classify(found, report), report, claimed), report)
            finished = True
        finally:
            # claims never settled (stopped, or failed): back to the queue for the next scan or the watcher
            self._claimed = None
            claims.release(list(claimed), charge=not finished and not self.stop_event.is_set())
            claims.close()
        for root in roots:
            if root.is_dir():
                report.missing += self._mark_vanished(root, {str(f.path) for f in found})
        report.seconds = time.perf_counter() - started
        return report

    def _classify(self, found: list[FoundFile], report: Report) -> Iterator[Job]:
        """Yield the files that need work (the model, a copy, or a sidecar read); handle unchanged and
        moved files on the way."""
        for f in found:
            if self.stop_event.is_set():
                return
            job = self._classify_one(f, report)
            if job is None:
                self.progress("advance", 1)
            else:
                yield job

    def _classify_one(self, f: FoundFile, report: Report) -> Job | None:
        lib = self.library
        with lib.session() as session:
            photo = lib.photo_by_path(session, f.path)
            if (
                photo is not None and photo.size == f.size and photo.mtime == f.mtime
                and (photo.tagged_run_id is not None or photo.status == PhotoStatus.error.value)
            ):
                if photo.status == PhotoStatus.missing.value:
                    photo.status = PhotoStatus.ok.value
                if self._sidecar_changed(photo, f.path):
                    return Job(f.path, f.root, "sidecar", f.size, f.mtime, photo.sha256)
                report.unchanged += 1
                return None
            try:
                digest = sha256_file(f.path)
            except OSError as exc:
                lib.record_error(session, f.path, f.root, f"cannot read: {exc.strerror or exc}", f.size, f.mtime)
                report.failed += 1
                report.errors.append((str(f.path), f"cannot read: {exc.strerror or exc}"))
                return None
            if photo is not None and photo.sha256 == digest and (
                photo.tagged_run_id is not None or photo.status == PhotoStatus.error.value
            ):
                lib.touch_unchanged(session, photo, f.mtime)
                if self._sidecar_changed(photo, f.path):
                    return Job(f.path, f.root, "sidecar", f.size, f.mtime, digest)
                report.unchanged += 1
                return None
            if photo is None:
                moved_from = self._moved_source(session, digest, f.path)
                if moved_from is not None:
                    lib.move_photo(session, moved_from, f.path, f.root, f.mtime)
                    report.moved += 1
                    return None
            return Job(f.path, f.root, "new" if photo is None else "changed", f.size, f.mtime, digest,
                       copy_of=self._copy_source(session, digest, f.path))

    def _sidecar_changed(self, photo: Photo, path: Path) -> bool:
        """Whether another app changed the sidecars of this tagged photo since phototag last read or
        wrote them (their stat differs from the stored one). A photo that had none and still has none
        (or was never looked at and has none: a library from before 0005) just records that."""
        if photo.status == PhotoStatus.error.value or photo.tagged_run_id is None:
            return False
        now = sidecar_stat(path)
        if photo.sidecar_stat == now:
            return False
        if photo.sidecar_stat is None and now == "":
            photo.sidecar_stat = now
            return False
        return True

    def _model_key(self) -> tuple[str, str, str]:
        """(model id, weights sha256, settings) of the tagger: what a copy's source must have been tagged
        with. Computed once per tagger (some hash their weights file for it)."""
        if self._tagger_key is None or self._tagger_key[0] is not self.tagger:
            tagger = self.tagger
            key = (tagger.model_id, tagger.weights_sha256, json.dumps(tagger.settings(), sort_keys=True, default=str))
            self._tagger_key = (tagger, key)
        return self._tagger_key[1]

    def _copy_source(self, session, digest: str, path: Path) -> int | None:
        """A photo with this content that this model (same weights, same settings) tagged: its results
        are this file's too."""
        candidates = session.execute(
            select(Photo.id, ModelRun.model_id, ModelRun.weights_sha256, ModelRun.settings)
            .join(ModelRun, ModelRun.id == Photo.tagged_run_id)
            .where(Photo.sha256 == digest, Photo.path != str(path), Photo.status != PhotoStatus.error.value)
            .order_by(Photo.tagged_at.desc()).limit(8)
        ).all()
        if not candidates:
            return None
        model_id, weights, settings = self._model_key()
        for row in candidates:
            if (row.model_id, row.weights_sha256) == (model_id, weights) and \
                    json.dumps(row.settings, sort_keys=True, default=str) == settings:
                return row.id
        return None

    def _claim(self, claims, jobs: Iterable[Job], report: Report, claimed: dict) -> Iterator[Job]:
        """Claim each job's file in the work queue before it is decoded; a file another live process
        holds is left to it (``report.busy``), one it finished meanwhile is unchanged."""
        for job in jobs:
            item = claims.claim_path(job.path, job.reason)
            if item is None:
                report.busy += 1
                self.progress("advance", 1)
                continue
            if self._done_elsewhere(job):  # tagged by another process between our look and our claim
                claims.done(item)
                report.unchanged += 1
                self.progress("advance", 1)
                continue
            job.queued_at = item.enqueued_at
            claimed[str(job.path)] = item.enqueued_at
            yield job

    def _done_elsewhere(self, job: Job) -> bool:
        with self.library.session() as session:
            photo = self.library.photo_by_path(session, job.path)
            done = photo is not None and (photo.size, photo.mtime, photo.sha256) == (job.size, job.mtime, job.sha256) \
                and (photo.tagged_run_id is not None or photo.status == PhotoStatus.error.value)
            if done and job.reason == "sidecar":  # the photo was done before: was its sidecar read since?
                done = photo.sidecar_stat == sidecar_stat(job.path)
            return done

    def _moved_source(self, session, digest: str, new_path: Path) -> Photo | None:
        """A tagged photo with this content whose file is gone: the file was moved here."""
        candidates = session.scalars(
            select(Photo).where(Photo.sha256 == digest, Photo.path != str(new_path), Photo.tagged_run_id.is_not(None))
        ).all()
        for candidate in candidates:
            if candidate.status == PhotoStatus.missing.value or not os.path.exists(candidate.path):
                return candidate
        return None

    def _mark_vanished(self, root: Path, seen: set[str]) -> int:
        """Photos under ``root`` that the walk did not find are marked missing (never deleted)."""
        prefix = str(root).rstrip(os.sep) + os.sep
        with self.library.session() as session:
            rows = session.execute(
                select(Photo.path).where(Photo.path.startswith(prefix, autoescape=True),
                                         Photo.status != PhotoStatus.missing.value)
            ).scalars().all()
            gone = [p for p in rows if p not in seen and not os.path.exists(p)]
            return self.library.mark_missing(session, gone)

    # ---- decode → infer → persist -----------------------------------------------------------
    def _keywords(self, job: Job) -> tuple[str, PhotoKeywords]:
        """The sidecars' stat, then what the photo's files say about its tags (read after the stat: an
        edit in between is seen as a change next time, never missed)."""
        stat = sidecar_stat(job.path)
        return stat, read_photo_keywords(job.path, root=self.xmp_root)

    def _decode(self, job: Job) -> _Decoded:
        try:
            if job.reason == "sidecar":  # the photo is unchanged: its keywords only
                stat, keywords = self._keywords(job)
                facts = PhotoFacts(path=job.path, root=job.root, size=job.size, mtime=job.mtime, sha256=job.sha256,
                                   sidecar_stat=stat)
                return _Decoded(job, facts, None, keywords)
            if job.sha256 is None or job.size is None:
                st = job.path.stat()
                job.size, job.mtime = st.st_size, st.st_mtime
                job.sha256 = sha256_file(job.path)
            if job.copy_of is not None:
                with self.library.session() as session:
                    source = session.get(Photo, job.copy_of)
                    size = None if source is None else (source.width, source.height, source.format)
                if size is not None:
                    stat, keywords = self._keywords(job)
                    facts = PhotoFacts(
                        path=job.path, root=job.root, size=job.size, mtime=job.mtime, sha256=job.sha256,
                        width=size[0], height=size[1], format=size[2], exif=read_exif(job.path).as_columns(),
                        sidecar_stat=stat,
                    )
                    return _Decoded(job, facts, None, keywords)
                job.copy_of = None  # its twin went away meanwhile: the model it is
            decoded = decode_photo(job.path, max_pixels=self.max_pixels)
            exif = read_exif(job.path)
            prepared = self.tagger.prepare(decoded.image)
            stat, keywords = self._keywords(job)
            facts = PhotoFacts(
                path=job.path, root=job.root, size=job.size, mtime=job.mtime, sha256=job.sha256,
                width=decoded.width, height=decoded.height, format=decoded.format, exif=exif.as_columns(),
                sidecar_stat=stat,
            )
            return _Decoded(job, facts, prepared, keywords)
        except DecodeError as exc:
            return _Decoded(job, error=str(exc))
        except FileNotFoundError:
            return _Decoded(job, error="file vanished while it was being read")
        except PermissionError:
            return _Decoded(job, error="permission denied")
        except Exception as exc:  # one bad photo must never stop the run
            log.exception("unexpected error decoding %s", job.path)
            return _Decoded(job, error=f"unexpected error: {type(exc).__name__}: {exc}")

    def process(self, jobs: Iterable[Job], report: Report | None = None) -> Report:
        """Decode, tag and store ``jobs``. Returns (and fills) ``report``."""
        report = report if report is not None else Report()
        started = time.perf_counter()
        self._fill_names_zh()
        results: queue.Queue[_Decoded | None] = queue.Queue()
        max_in_flight = max(2 * self.batch_size, self.decode_workers * 2)
        slots = threading.Semaphore(max_in_flight)
        pool = ThreadPoolExecutor(self.decode_workers, thread_name_prefix="phototag-decode")
        producer_error: list[BaseException] = []

        def produce() -> None:
            try:
                for job in jobs:
                    if self.stop_event.is_set():
                        break
                    slots.acquire()
                    future = pool.submit(self._decode, job)
                    future.add_done_callback(lambda fut: results.put(fut.result()))
            except BaseException as exc:  # surfaced in the consumer
                producer_error.append(exc)
            finally:
                pool.shutdown(wait=True)
                results.put(None)

        producer = threading.Thread(target=produce, name="phototag-discover", daemon=True)
        producer.start()
        # The writer commits batch n while the model works on batch n+1 (at most two batches wait).
        writes: queue.Queue[tuple[list[_Decoded], list[_Decoded], list] | None] = queue.Queue(maxsize=2)
        writer_error: list[BaseException] = []

        def write() -> None:
            while (entry := writes.get()) is not None:
                if writer_error:
                    continue  # a batch failed to commit: drop the rest (their queue rows stay)
                try:
                    self._persist(*entry, report)
                except Exception as exc:  # surfaced in the consumer: the database failed, not the photos
                    try:
                        raise PersistError(f"cannot store a batch: {type(exc).__name__}: {exc}") from exc
                    except PersistError as wrapped:
                        writer_error.append(wrapped)
                    self.stop_event.set()
                except BaseException as exc:
                    writer_error.append(exc)
                    self.stop_event.set()

        writer = threading.Thread(target=write, name="phototag-writer", daemon=True)
        writer.start()
        batch: list[_Decoded] = []
        batch_started = 0.0
        done = False
        try:
            while not done:
                timeout = None
                if batch:
                    timeout = max(0.0, self.batch_timeout - (time.monotonic() - batch_started))
                try:
                    item = results.get(timeout=timeout)
                except queue.Empty:
                    item = "flush"
                if item is None:
                    done = True
                elif item != "flush":
                    slots.release()
                    if not batch:
                        batch_started = time.monotonic()
                    batch.append(item)
                if batch and (done or item == "flush" or len(batch) >= self.batch_size):
                    writes.put((batch, *self._infer(batch, report)))
                    batch = []
                if writer_error:
                    raise writer_error[0]
        except BaseException:
            # the consumer failed (e.g. the model raised): tell the producer to stop, and unblock it if it
            # waits for a slot, so that the join below returns (stop_event stays set: this run is over)
            self.stop_event.set()
            for _ in range(max_in_flight):
                slots.release()
            raise
        finally:
            writes.put(None)
            writer.join()
            producer.join()
            if self._run_id is not None:
                with self.library.session() as session:
                    self.library.finish_model_run(session, self._run_id)
                self._run_id = None
        if writer_error:
            raise writer_error[0]
        if producer_error:
            raise producer_error[0]
        report.seconds = report.seconds or (time.perf_counter() - started)
        return report

    def _fill_names_zh(self) -> None:
        """Once per tagger: tags without a Chinese name get the model's (a library tagged before the
        model had them); one query, nothing when all have one."""
        if self._names_zh_filled_for is self.tagger:
            return
        self._names_zh_filled_for = self.tagger
        try:
            names_zh = self.tagger.tag_names_zh()
            if names_zh:
                with self.library.session() as session:
                    self.library.fill_tag_names_zh(session, names_zh)
        except Exception as exc:  # names are a nicety: tagging goes on
            log.warning("could not fill in Chinese tag names: %s: %s", type(exc).__name__, exc)

    def _infer(self, batch: list[_Decoded], report: Report) -> tuple[list[_Decoded], list]:
        """Run the model on the decodable photos of ``batch`` (in the calling thread)."""
        good = [d for d in batch if d.error is None and d.kind == "model"]
        predictions: list = []
        if good:
            t0 = time.perf_counter()
            predictions = self.tagger.predict([d.prepared for d in good])
            report.model_seconds += time.perf_counter() - t0
        return good, predictions

    def _persist(self, batch: list[_Decoded], good: list[_Decoded], predictions: list, report: Report) -> None:
        """Store one batch in one transaction (in the writer thread), then run the after-commit hooks.

        A transaction that fails for a reason that is not the database's (a value SQLite cannot store,
        from one photo or a plugin) is tried again photo by photo: the photo that fails is recorded as
        that photo's error and the others are stored. A database problem (locked, disk full, removed)
        is raised: it is no photo's fault."""
        predicted = {id(d): p for d, p in zip(good, predictions)}
        try:
            outcome = self._store(batch, predicted)
        except Exception as exc:
            if database_failed(exc):
                raise
            log.warning("a batch could not be stored (%s: %s): storing its photos one by one",
                        type(exc).__name__, exc)
            outcome = _Outcome()
            for decoded in batch:
                try:
                    outcome.add(self._store([decoded], predicted))
                except Exception as one:
                    if database_failed(one):
                        raise
                    log.warning("cannot store %s: %s: %s", decoded.job.path, type(one).__name__, one)
                    outcome.add(self._store_failure(decoded, one))
        outcome.add_to(report)
        if self._claimed is not None:
            for d in batch:
                self._claimed.pop(str(d.job.path), None)
        self.progress("advance", len(batch))
        if outcome.committed and self.on_commit is not None:
            try:
                self.on_commit(outcome.committed)
            except Exception:  # an exporter failing must not lose tagging work
                log.exception("after-commit hook failed")

    def _store(self, items: list[_Decoded], predicted: dict[int, Any]) -> "_Outcome":
        """Store ``items`` in one transaction; what it did, once it committed."""
        from phototag.ingest.queue import settle

        lib = self.library
        out = _Outcome()
        created_run = False
        try:
            # immediate: the batch's reads (is this path, this tag already there?) hold until it commits,
            # whatever other processes write meanwhile
            with lib.session(immediate=True) as session:
                run = None
                if any(d.error is None and d.kind == "model" for d in items):
                    if self._run_id is None:
                        self._run_id = lib.start_model_run(session, self.tagger).id
                        created_run = True
                    run = session.get(ModelRun, self._run_id)
                for decoded in items:
                    job = decoded.job
                    if decoded.error is not None:
                        lib.record_error(session, job.path, job.root, decoded.error, job.size, job.mtime, job.sha256,
                                         queued_at=job.queued_at)
                        out.count["failed"] += 1
                        out.errors.append((str(job.path), decoded.error))
                        continue
                    kind = decoded.kind
                    if kind == "sidecar":
                        photo = lib.photo_by_path(session, job.path)
                        if photo is None:  # gone meanwhile (moved: its new path is classified on its own)
                            settle(session, job.path, job.queued_at)
                            continue
                        photo.sidecar_stat = decoded.facts.sidecar_stat
                    else:
                        photo = lib.upsert_photo(session, decoded.facts)
                    edits = decoded.keywords.edits
                    # a photo new to the library also takes the manual tags its sidecar records (an earlier
                    # library's, or another phototag's); a known photo takes only what the user changed there
                    lib.apply_sidecar_edits(session, photo, [*edits.added, *(edits.manual if job.reason == "new" else [])],
                                            edits.removed)
                    if kind == "model":
                        prediction = predicted[id(decoded)]
                        adjusted = plugins.adjust_tags(str(job.path), prediction.tags, self.tagger.model_id,
                                                       lib.settings)
                        lib.store_prediction(session, photo, run, self.tagger,
                                             dataclasses.replace(prediction, tags=adjusted))
                    elif kind == "copy":
                        source = session.get(Photo, job.copy_of)
                        if source is not None and source.tagged_run_id is not None:
                            lib.copy_model_results(session, photo, source, self.tagger.model_id)
                        # else its twin went away since: left untagged, the next scan gives it to the model
                    lib.set_imported_tags(session, photo, decoded.keywords.keywords)
                    out.committed.append(photo.id)
                    if kind == "sidecar":
                        out.count["synced"] += 1
                    else:
                        out.count[{"new": "new", "retag": "retagged"}.get(job.reason, "updated")] += 1
                        out.count["tagged" if kind == "model" else "copied"] += 1
                for d in items:  # the batch's queue rows are done with its tags (errors: in record_error)
                    if d.error is None:
                        settle(session, d.job.path, d.job.queued_at)
        except BaseException:
            if created_run:  # rolled back with the batch
                self._run_id = None
            raise
        return out

    def _store_failure(self, decoded: _Decoded, exc: Exception) -> "_Outcome":
        """``decoded`` could not be stored: record that as its error (a photo whose sidecar alone could not
        be read in keeps its tags and status; its sidecar is read again when it changes)."""
        from phototag.ingest.queue import settle

        job = decoded.job
        lib = self.library
        out = _Outcome()
        with lib.session(immediate=True) as session:
            if decoded.kind == "sidecar":
                error = f"its sidecar's keywords cannot be stored: {type(exc).__name__}: {exc}"
                photo = lib.photo_by_path(session, job.path)
                if photo is not None:
                    photo.sidecar_stat = decoded.facts.sidecar_stat
                settle(session, job.path, job.queued_at)
            else:
                error = f"cannot be stored: {type(exc).__name__}: {exc}"
                lib.record_error(session, job.path, job.root, error, job.size, job.mtime, job.sha256,
                                 queued_at=job.queued_at)
        out.count["failed"] += 1
        out.errors.append((str(job.path), error))
        return out


@dataclass
class _Outcome:
    """What storing some photos did (added to the report once committed)."""

    count: collections.Counter = field(default_factory=collections.Counter)
    errors: list[tuple[str, str]] = field(default_factory=list)
    committed: list[int] = field(default_factory=list)

    def add(self, other: "_Outcome") -> None:
        self.count.update(other.count)
        self.errors += other.errors
        self.committed += other.committed

    def add_to(self, report: Report) -> None:
        for name, n in self.count.items():
            setattr(report, name, getattr(report, name) + n)
        report.errors += self.errors


def database_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is the database's problem (locked, busy, disk full, I/O error, read-only, removed,
    corrupt), not one photo's: then retrying the photos one by one is pointless."""
    import sqlite3

    from sqlalchemy import exc as sa_exc

    if isinstance(exc, (OSError, MemoryError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa_exc.OperationalError):
            return True
        return type(exc.orig) in (sqlite3.OperationalError, sqlite3.DatabaseError, sqlite3.InternalError)
    return isinstance(exc, (sqlite3.OperationalError, sqlite3.InternalError)) or type(exc) is sqlite3.DatabaseError


# ---- the probe: one suspect photo decoded in a separate process -----------------------------------
PROBE_OK, PROBE_UNREADABLE = 0, 3


def probe_decode(path: Path | str, max_pixels: int) -> None:
    """Everything the pipeline does to one file before the model (hash, decode, EXIF, keywords):
    native decoders (libjpeg, libheif, libraw, exiv2) are where a file can crash a process."""
    path = Path(path)
    sha256_file(path)
    decode_photo(path, max_pixels=max_pixels)
    read_exif(path)
    read_keywords(path)


def _probe_main(argv: list[str]) -> int:
    path, max_pixels = argv[0], int(argv[1])
    try:
        probe_decode(path, max_pixels)
    except Exception:  # a Python-level error is handled (recorded) by the pipeline itself: no crash
        return PROBE_UNREADABLE
    return PROBE_OK


def probe_in_child(path: Path | str, max_pixels: int, timeout: float = 120.0) -> str | None:
    """Decode ``path`` in a child process. None when the child came through (the file decodes, or
    fails with an ordinary error the pipeline records); else what happened to the child — the
    evidence that this file kills a process (:mod:`phototag.ingest.queue`)."""
    code = ("import sys; from phototag.pipeline import _probe_main; "
            "sys.exit(_probe_main(sys.argv[1:]))")
    try:
        done = subprocess.run([sys.executable, "-c", code, os.fsencode(str(path)), str(max_pixels)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"decoding it alone in a separate process hung for over {timeout:g} s"
    if done.returncode in (PROBE_OK, PROBE_UNREADABLE):
        return None
    if done.returncode < 0:
        import signal

        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return f"decoding it alone in a separate process crashed that process ({name})"
    tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    return f"decoding it alone in a separate process failed (exit {done.returncode}) {tail[0]}".strip()
