"""The :class:`Pipeline`: decode → batch → infer → persist, threaded (production) or sequential (tests).

* discovery + classification (:mod:`phototag.pipeline.classify`) runs in a producer thread;
* decoding (Pillow, EXIF, the tagger's ``prepare``) runs in the decode pool
  (:class:`phototag.ingest.pool.DecodePool`), so decode overlaps inference;
* inference runs in the calling thread, the one owner of the model; batches flush on size or after
  ``batch_timeout`` seconds so a lone new photo is not kept waiting;
* a writer thread stores batch n (:mod:`phototag.pipeline.store`) while the model works on n+1.

How the machine is used follows the tagger's device (:func:`phototag.ingest.pool.plan_resources`): on a
CPU the cores are split between the decode pool and the model's threads so they never oversubscribe;
on CUDA every core decodes, the batch is sized to the GPU's free memory, each prepared tensor is put in
pinned (page-locked) memory in the decode pool — the tagger copies it to the GPU with
``non_blocking=True`` — and decoded photos are prefetched three batches deep so the GPU never waits.
The model is loaded once, before the first batch (:meth:`Tagger.ready`), and the report keeps that
time apart from the tagging time (``load_seconds``, ``tagging_seconds``).

``Pipeline(..., sequential=True)`` runs the very same stages one after the other in the calling
thread — no decode pool, no producer or writer thread — like beets' pipeline in its tests: the
results are the same, and a test (or a debugger) sees one thread and one order. It suits a finite
list of jobs (a scan, a test): a batch is flushed when full or when the jobs end, not on a timer.
"""

from __future__ import annotations

import datetime
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from phototag.db.models import Photo
from phototag.ingest.decode import DecodeError, decode_photo, read_error
from phototag.ingest.exif import read_exif
from phototag.ingest.fingerprint import sha256_file
from phototag.ingest.keywords import PhotoKeywords, read_photo_keywords, sidecar_stat
from phototag.ingest.pool import DecodePool, ResourcePlan, plan_resources, usable_cpus
from phototag.ingest.queue import WorkQueue
from phototag.ingest.walk import FoundFile, iter_photo_files
from phototag.library import Library, PhotoFacts
from phototag.pipeline.classify import Classifier
from phototag.pipeline.jobs import CommitFn, Decoded, Job, PersistError, ProgressFn, Report
from phototag.pipeline.store import BatchStore
from phototag.tagging.base import Tagger

log = logging.getLogger("phototag.pipeline")


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
        sequential: bool = False,
    ):
        self.library = library
        settings = library.settings
        self._workers_asked = decode_workers or int(settings.get("decode_workers") or 0)
        self._batch_asked = batch_size or int(settings.get("batch_size") or 0)
        self.use_tagger(tagger)
        self.batch_timeout = batch_timeout
        self.sequential = sequential
        self.extensions = settings.get("scan.extensions")
        self.follow_symlinks = bool(settings.get("scan.follow_symlinks"))
        self.max_pixels = int(settings.get("scan.max_pixels") or 300_000_000)
        self.xmp_root = str(settings.get("plugins.xmp.root") or "phototag")  # our keywords are not "imported"
        self.progress = progress or (lambda event, n: None)
        self.on_commit = on_commit
        self.stop_event = stop_event or threading.Event()
        self._claimed: dict[str, datetime.datetime] | None = None  # scan's claims not settled yet
        self._names_zh_filled_for: Tagger | None = None
        self._ready_for: Tagger | None = None  # the tagger whose model ready() loaded (timed once)
        self._ready_lock = threading.Lock()
        self._load_seconds = 0.0  # load time not yet added to a report
        self._ready_error: tuple[Tagger, Exception] | None = None
        self._classifier = Classifier(self)
        self._store = BatchStore(self)

    # ---- scanning -------------------------------------------------------------------------

    def use_tagger(self, tagger: Tagger) -> None:
        """Tag with ``tagger`` from the next run on (``watch`` swaps the model when the default changes):
        the split of cores and the batch size follow its device and cost again."""
        self.tagger = tagger
        self.device = tagger_device(tagger)
        self.plan = plan_for(tagger, self.device, workers=self._workers_asked, batch_size=self._batch_asked)
        self.decode_workers = self.plan.decode_workers
        self.batch_size = self.plan.batch_size
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
        claims = WorkQueue(self.library)
        claimed: dict[str, datetime.datetime] = {}
        self._claimed = claimed
        finished = False
        try:
            self.process(self._classifier.claim(claims, self.classify(found, report), report, claimed), report)
            finished = True
        finally:
            # claims never settled (stopped, or failed): back to the queue for the next scan or the watcher
            self._claimed = None
            claims.release(list(claimed), charge=not finished and not self.stop_event.is_set())
            claims.close()
        for root in roots:
            if root.is_dir():
                report.missing += self._classifier.mark_vanished(root, {str(f.path) for f in found})
        report.seconds = time.perf_counter() - started
        return report

    def classify(self, found: Iterable[FoundFile], report: Report) -> Iterator[Job]:
        """The scan's rules for ``found`` files (:mod:`phototag.pipeline.classify`): yields the jobs
        that need work (the model, a copy, or a sidecar read); unchanged and moved files are handled
        on the way (counted in ``report``, progress advanced). Stops when the stop event is set."""
        return self._classifier.classify(found, report)

    # ---- decode → infer → persist -----------------------------------------------------------
    def _keywords(self, job: Job) -> tuple[str, PhotoKeywords]:
        """The sidecars' stat, then what the photo's files say about its tags (read after the stat: an
        edit in between is seen as a change next time, never missed)."""
        stat = sidecar_stat(job.path)
        return stat, read_photo_keywords(job.path, root=self.xmp_root)

    def _decode(self, job: Job) -> Decoded:
        try:
            if job.reason == "sidecar":  # the photo is unchanged: its keywords only
                stat, keywords = self._keywords(job)
                facts = PhotoFacts(path=job.path, root=job.root, size=job.size, mtime=job.mtime, sha256=job.sha256,
                                   sidecar_stat=stat)
                return Decoded(job, facts, None, keywords)
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
                    return Decoded(job, facts, None, keywords)
                job.copy_of = None  # its twin went away meanwhile: the model it is
            decoded = decode_photo(job.path, max_pixels=self.max_pixels)
            exif = read_exif(job.path)
            try:
                self._ready()  # the model (and what prepare reads with it) loaded once, before the first photo
            except Exception:  # not this photo's fault: the batch raises it again and the run stops
                return Decoded(job)
            prepared = self.tagger.prepare(decoded.image)
            if self.device == "cuda":
                prepared = _pinned(prepared)
            stat, keywords = self._keywords(job)
            facts = PhotoFacts(
                path=job.path, root=job.root, size=job.size, mtime=job.mtime, sha256=job.sha256,
                width=decoded.width, height=decoded.height, format=decoded.format, exif=exif.as_columns(),
                sidecar_stat=stat,
            )
            return Decoded(job, facts, prepared, keywords)
        except (DecodeError, FileNotFoundError, PermissionError) as exc:
            return Decoded(job, error=read_error(exc))
        except Exception as exc:  # one bad photo must never stop the run
            log.exception("unexpected error decoding %s", job.path)
            return Decoded(job, error=read_error(exc))

    def process(self, jobs: Iterable[Job], report: Report | None = None) -> Report:
        """Decode, tag and store ``jobs``. Returns (and fills) ``report``."""
        report = report if report is not None else Report()
        started = time.perf_counter()
        self._fill_names_zh()
        previous_threads = self.tagger.set_threads(self.plan.model_threads)
        try:
            if self.sequential:
                self._process_sequentially(jobs, report)
            else:
                self._process_threaded(jobs, report)
        finally:
            if previous_threads is not None:
                self.tagger.set_threads(previous_threads)
        report.seconds = report.seconds or (time.perf_counter() - started)
        return report

    def _process_sequentially(self, jobs: Iterable[Job], report: Report) -> None:
        """The stages one after the other in the calling thread (``sequential=True``)."""
        batch: list[Decoded] = []
        try:
            for job in jobs:
                if self.stop_event.is_set():
                    break
                batch.append(self._decode(job))
                if len(batch) >= self.batch_size:
                    self._write(batch, *self._infer(batch, report), report)
                    batch = []
            if batch:
                self._write(batch, *self._infer(batch, report), report)
        except BaseException:
            self.stop_event.set()  # this run is over, as in the threaded mode
            raise
        finally:
            self._store.finish_run()

    def _write(self, batch: list[Decoded], good: list[Decoded], predictions: list, report: Report) -> None:
        """Persist a batch in the calling thread: a failure is the database's (:class:`PersistError`)."""
        try:
            self._persist(batch, good, predictions, report)
        except Exception as exc:
            self.stop_event.set()
            raise PersistError(f"cannot store a batch: {type(exc).__name__}: {exc}") from exc

    def _process_threaded(self, jobs: Iterable[Job], report: Report) -> None:
        # decoded photos waiting for the model: the next batch is ready while the model runs this one;
        # a GPU gets three batches of prefetch (decoding on the CPU must never leave it waiting)
        depth = 3 if self.device == "cuda" else 2
        max_in_flight = max(depth * self.batch_size, self.decode_workers * 2)
        pool: DecodePool[Job, Decoded] = DecodePool(self._decode, self.decode_workers, max_in_flight)
        producer = threading.Thread(target=pool.feed, args=(jobs, self.stop_event), name="phototag-discover",
                                    daemon=True)
        producer.start()
        # The writer commits batch n while the model works on batch n+1 (at most two batches wait).
        writes: queue.Queue[tuple[list[Decoded], list[Decoded], list] | None] = queue.Queue(maxsize=2)
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
        batch: list[Decoded] = []
        batch_started = 0.0
        done = False
        try:
            while not done:
                timeout = None
                if batch:
                    timeout = max(0.0, self.batch_timeout - (time.monotonic() - batch_started))
                try:
                    item: Any = pool.get(timeout=timeout)
                except queue.Empty:
                    item = "flush"
                if item is None:
                    done = True
                elif item != "flush":
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
            pool.abort()
            raise
        finally:
            writes.put(None)
            writer.join()
            producer.join()
            self._store.finish_run()
        if writer_error:
            raise writer_error[0]
        if pool.error is not None:
            raise pool.error

    def _ready(self) -> None:
        """Load the tagger's model once (:meth:`Tagger.ready`), timed apart from tagging: on the first
        photo that needs it (a decode thread: the others wait), or before the first batch."""
        if self._ready_for is self.tagger:
            return
        with self._ready_lock:
            if self._ready_error is not None and self._ready_error[0] is self.tagger:
                raise self._ready_error[1]  # tried once: not again for every photo
            if self._ready_for is not self.tagger:
                t0 = time.perf_counter()
                try:
                    self.tagger.ready()
                except Exception as exc:
                    self._ready_error = (self.tagger, exc)
                    raise
                self._load_seconds += time.perf_counter() - t0
                self._ready_for = self.tagger

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

    def _infer(self, batch: list[Decoded], report: Report) -> tuple[list[Decoded], list]:
        """Run the model on the decodable photos of ``batch`` (in the calling thread)."""
        good = [d for d in batch if d.error is None and d.kind == "model"]
        predictions: list = []
        if good:
            self._ready()
            report.load_seconds, self._load_seconds = report.load_seconds + self._load_seconds, 0.0
            t0 = time.perf_counter()
            predictions = self.tagger.predict([d.prepared for d in good])
            report.model_seconds += time.perf_counter() - t0
            report.model_photos += len(good)
        return good, predictions

    def _persist(self, batch: list[Decoded], good: list[Decoded], predictions: list, report: Report) -> None:
        """Store one batch in one transaction (in the writer thread), then run the after-commit hooks.

        A transaction that fails for a reason that is not the database's (a value SQLite cannot store,
        from one photo or a plugin) is tried again photo by photo: the photo that fails is recorded as
        that photo's error and the others are stored. A database problem (locked, disk full, removed)
        is raised: it is no photo's fault."""
        predicted = {id(d): p for d, p in zip(good, predictions)}
        outcome = self._store.store_batch(batch, predicted)
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



def tagger_device(tagger: Tagger) -> str:
    """``cpu``, ``cuda`` or ``mps``: where ``tagger``'s model runs (its ``device``; CPU when it has none)."""
    kind = getattr(tagger, "device_type", None)  # a RAM pack says so without importing torch
    if kind:
        return kind if kind in ("cuda", "mps") else "cpu"
    device = getattr(tagger, "device", None)
    kind = getattr(device, "type", None) or (str(device).split(":", 1)[0] if device else "cpu")
    return kind if kind in ("cuda", "mps") else "cpu"


def plan_for(tagger: Tagger, device: str, *, workers: int = 0, batch_size: int = 0) -> ResourcePlan:
    """:func:`plan_resources` for ``tagger`` on this machine (the GPU's free memory asked only on CUDA,
    where torch is already in use)."""
    free = None
    if device == "cuda":
        import torch

        try:
            free = torch.cuda.mem_get_info(getattr(tagger, "device", None))[0]
        except Exception:  # noqa: BLE001 - no memory figure: the tagger's own preference
            free = None
    return plan_resources(
        usable_cpus(), device, prepare_share=tagger.prepare_share, cpu_batch=tagger.batch_size,
        free_memory=free, input_size=tagger.input_size, workers=workers, batch_size=batch_size,
    )


def _pinned(prepared: Any) -> Any:
    """``prepared`` with its tensor(s) in pinned memory (the GPU copies from it asynchronously); anything
    else unchanged."""
    import torch

    if isinstance(prepared, torch.Tensor):
        try:
            return prepared.pin_memory()
        except RuntimeError:  # no page-locked memory to spare: a plain (synchronous) copy, not a failed photo
            return prepared
    if isinstance(prepared, tuple) and hasattr(prepared, "_fields"):  # a NamedTuple (e.g. the built-in model's)
        return type(prepared)(*(_pinned(p) if isinstance(p, torch.Tensor) else p for p in prepared))
    return prepared
