"""Persist: one batch of decoded, tagged photos → one transaction.

Photos, tags, embeddings, captions and the removal of the batch's work-queue rows commit together,
so a crash never leaves half a batch. A batch whose transaction fails for a reason that is not the
database's (a value SQLite cannot store) is stored again photo by photo, and the photo that fails is
recorded as that photo's error (:meth:`BatchStore.store_one_by_one`).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from phototag import plugins
from phototag.db.models import ModelRun, Photo
from phototag.ingest.queue import settle
from phototag.pipeline.jobs import Decoded, Report

if TYPE_CHECKING:
    from phototag.pipeline.stages import Pipeline

log = logging.getLogger("phototag.pipeline")


@dataclass
class Outcome:
    """What storing some photos did (added to the report once committed)."""

    count: collections.Counter = field(default_factory=collections.Counter)
    errors: list[tuple[str, str]] = field(default_factory=list)
    committed: list[int] = field(default_factory=list)

    def add(self, other: "Outcome") -> None:
        self.count.update(other.count)
        self.errors += other.errors
        self.committed += other.committed

    def add_to(self, report: Report) -> None:
        for name, n in self.count.items():
            setattr(report, name, getattr(report, name) + n)
        report.errors += self.errors


class BatchStore:
    """Stores the batches of one pipeline (its library and current tagger) and owns the model run
    they belong to: started with the first batch that ran the model, finished by :meth:`finish_run`."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.run_id: int | None = None

    def finish_run(self) -> None:
        if self.run_id is not None:
            lib = self.pipeline.library
            with lib.session() as session:
                lib.finish_model_run(session, self.run_id)
            self.run_id = None

    def store_batch(self, batch: list[Decoded], predicted: dict[int, Any]) -> Outcome:
        """Store ``batch`` in one transaction; if that fails for a reason that is not the database's,
        photo by photo, each failure recorded as that photo's error. A database problem (locked, disk
        full, removed) is raised: it is no photo's fault."""
        try:
            return self.store(batch, predicted)
        except Exception as exc:
            if database_failed(exc):
                raise
            log.warning("a batch could not be stored (%s: %s): storing its photos one by one",
                        type(exc).__name__, exc)
            return self.store_one_by_one(batch, predicted)

    def store_one_by_one(self, batch: list[Decoded], predicted: dict[int, Any]) -> Outcome:
        outcome = Outcome()
        for decoded in batch:
            try:
                outcome.add(self.store([decoded], predicted))
            except Exception as one:
                if database_failed(one):
                    raise
                log.warning("cannot store %s: %s: %s", decoded.job.path, type(one).__name__, one)
                outcome.add(self.store_failure(decoded, one))
        return outcome

    def store(self, items: list[Decoded], predicted: dict[int, Any]) -> Outcome:
        """Store ``items`` in one transaction; what it did, once it committed."""
        lib = self.pipeline.library
        tagger = self.pipeline.tagger
        out = Outcome()
        created_run = False
        try:
            # immediate: the batch's reads (is this path, this tag already there?) hold until it commits,
            # whatever other processes write meanwhile
            with lib.session(immediate=True) as session:
                run = None
                if any(d.error is None and d.kind == "model" for d in items):
                    if self.run_id is None:
                        self.run_id = lib.start_model_run(session, tagger).id
                        created_run = True
                    run = session.get(ModelRun, self.run_id)
                for decoded in items:
                    job = decoded.job
                    if decoded.error is not None:
                        lib.record_error(session, job.path, job.root, decoded.error, job.size, job.mtime, job.sha256)
                        settle(session, job.path, job.queued_at)
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
                        adjusted = plugins.adjust_tags(str(job.path), prediction.tags, tagger.model_id,
                                                       lib.settings)
                        lib.store_prediction(session, photo, run, tagger,
                                             dataclasses.replace(prediction, tags=adjusted))
                    elif kind == "copy":
                        source = session.get(Photo, job.copy_of)
                        if source is not None and source.tagged_run_id is not None:
                            lib.copy_model_results(session, photo, source, tagger.model_id)
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
                self.run_id = None
            raise
        return out

    def store_failure(self, decoded: Decoded, exc: Exception) -> Outcome:
        """``decoded`` could not be stored: record that as its error (a photo whose sidecar alone could not
        be read in keeps its tags and status; its sidecar is read again when it changes)."""
        job = decoded.job
        lib = self.pipeline.library
        out = Outcome()
        with lib.session(immediate=True) as session:
            if decoded.kind == "sidecar":
                error = f"its sidecar's keywords cannot be stored: {type(exc).__name__}: {exc}"
                photo = lib.photo_by_path(session, job.path)
                if photo is not None:
                    photo.sidecar_stat = decoded.facts.sidecar_stat
                settle(session, job.path, job.queued_at)
            else:
                error = f"cannot be stored: {type(exc).__name__}: {exc}"
                lib.record_error(session, job.path, job.root, error, job.size, job.mtime, job.sha256)
                settle(session, job.path, job.queued_at)
        out.count["failed"] += 1
        out.errors.append((str(job.path), error))
        return out


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
