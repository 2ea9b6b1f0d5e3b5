"""Which found files need work: the scan's rules (unchanged / moved / copy / sidecar / the model).

A file whose size and mtime (then content hash) match a done photo is unchanged; one whose content
is a tagged photo whose file is gone was moved (its tags follow it); one whose content a photo
tagged by the same model (weights, settings) has is a copy (its results are copied); an unchanged
photo whose XMP sidecar another app changed has its keywords read again. Everything else goes to
the model. ``scan`` claims each job in the work queue before it is decoded, and marks photos whose
files vanished missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from sqlalchemy import select

from phototag.db.models import ModelRun, Photo, PhotoStatus
from phototag.ingest.fingerprint import sha256_file
from phototag.ingest.keywords import sidecar_stat
from phototag.ingest.queue import settle
from phototag.ingest.walk import FoundFile
from phototag.pipeline.jobs import Job, Report

if TYPE_CHECKING:
    from phototag.pipeline.stages import Pipeline
    from phototag.tagging.base import Tagger


class Classifier:
    """The scan's rules for one :class:`~phototag.pipeline.Pipeline` (its library, its current
    tagger, its progress callback and stop event, all read when used: the watcher swaps them)."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self._tagger_key: tuple[Tagger, tuple[str, str, str]] | None = None

    def classify(self, found: Iterable[FoundFile], report: Report) -> Iterator[Job]:
        """Yield the files that need work (the model, a copy, or a sidecar read); handle unchanged and
        moved files on the way."""
        p = self.pipeline
        for f in found:
            if p.stop_event.is_set():
                return
            job = self._classify_one(f, report)
            if job is None:
                p.progress("advance", 1)
            else:
                yield job

    def _classify_one(self, f: FoundFile, report: Report) -> Job | None:
        lib = self.pipeline.library
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
                settle(session, f.path, None)
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
        if self._tagger_key is None or self._tagger_key[0] is not self.pipeline.tagger:
            tagger = self.pipeline.tagger
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

    def claim(self, claims, jobs: Iterable[Job], report: Report, claimed: dict) -> Iterator[Job]:
        """Claim each job's file in the work queue before it is decoded; a file another live process
        holds is left to it (``report.busy``), one it finished meanwhile is unchanged."""
        p = self.pipeline
        for job in jobs:
            item = claims.claim_path(job.path, job.reason)
            if item is None:
                report.busy += 1
                p.progress("advance", 1)
                continue
            if self._done_elsewhere(job):  # tagged by another process between our look and our claim
                claims.done(item)
                report.unchanged += 1
                p.progress("advance", 1)
                continue
            job.queued_at = item.enqueued_at
            claimed[str(job.path)] = item.enqueued_at
            yield job

    def _done_elsewhere(self, job: Job) -> bool:
        lib = self.pipeline.library
        with lib.session() as session:
            photo = lib.photo_by_path(session, job.path)
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

    def mark_vanished(self, root: Path, seen: set[str]) -> int:
        """Photos under ``root`` that the walk did not find are marked missing (never deleted)."""
        lib = self.pipeline.library
        prefix = str(root).rstrip(os.sep) + os.sep
        with lib.session() as session:
            rows = session.execute(
                select(Photo.path).where(Photo.path.startswith(prefix, autoescape=True),
                                         Photo.status != PhotoStatus.missing.value)
            ).scalars().all()
            gone = [p for p in rows if p not in seen and not os.path.exists(p)]
            return lib.mark_missing(session, gone)
