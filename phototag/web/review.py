"""Review mode (``/review?tag=dog``): check one tag photo after photo, one keystroke each.

What can be reviewed. The library keeps only the tags that passed the model's thresholds
(``photo_tags``); a score below the threshold is not stored (calibration re-runs the model for
those, see :mod:`phototag.learn.corrections`). So review shows the photos the model gave the tag,
**least sure first** (ascending score: the ones nearest the threshold, where the model is most
often wrong), followed by the photos the user already decided: the ones tagged by hand and the
ones whose tag was removed (with the model's score at removal), so a decision can be changed.

A decision is stored exactly as ``phototag tag add/remove`` stores it (the same library calls,
then the same plugin hooks, so an automatic XMP export rewrites the sidecar): *accept* adds the
tag as a ``manual`` tag (an explicit positive that calibrate/finetune count, and that no model
run removes), *reject* removes it (any source) and records the removal with the model's score,
so a re-tag does not give it back. Accepting a rejected photo cancels the removal.

The page also shows how many corrections the learning has not seen yet and runs ``calibrate``
(with apply: the thresholds are saved for the next re-tag) or ``finetune`` (a new model version)
in a background thread, one job at a time, with progress at ``/review/job``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from phototag.db.models import Photo, PhotoStatus, PhotoTag, Tag, TagRemoval, TagSource
from phototag.web.common import (
    csrf_token,
    get_library,
    photo_or_404,
    render,
    require_csrf,
    writing,
)

ACCEPT, REJECT = "accept", "reject"
#: states of a photo in review: the model gave the tag and nobody decided yet, or the user decided
PENDING, ACCEPTED, REJECTED = "pending", "accepted", "rejected"
#: a review shows at most this many photos (the least sure first)
REVIEW_LIMIT = 2000


@dataclass
class ReviewItem:
    photo_id: int
    name: str  # the file name (the path is not shown in the page's data)
    score: float | None  # the model's score (at removal, for a rejected photo); None: tagged by hand only
    state: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.photo_id, "name": self.name, "score": None if self.score is None else round(self.score, 4),
                "state": self.state}


def review_items(session: Session, tag: str, limit: int = REVIEW_LIMIT) -> list[ReviewItem]:
    """The photos to review for ``tag``: undecided model tags by ascending score, then the decided
    ones (accepted, rejected) by ascending score. Only photos whose file is there (status ok)."""
    tag_id = session.scalar(select(Tag.id).where(Tag.name == tag))
    if tag_id is None:
        return []
    items: dict[int, ReviewItem] = {}
    rows = session.execute(
        select(Photo.id, Photo.path, PhotoTag.source, PhotoTag.score)
        .join(PhotoTag, PhotoTag.photo_id == Photo.id)
        .where(PhotoTag.tag_id == tag_id, Photo.status == PhotoStatus.ok.value)
    ).all()
    manual: set[int] = set()
    for pid, path, source, score in rows:
        item = items.setdefault(pid, ReviewItem(pid, Path(path).name, None, PENDING))
        if source == TagSource.manual.value:
            manual.add(pid)
        elif source == TagSource.model.value and score is not None:
            item.score = score if item.score is None else max(item.score, score)
        elif source != TagSource.model.value:  # imported / plugin: someone already said yes
            manual.add(pid)
    for pid in manual:
        items[pid].state = ACCEPTED
    for pid, path, score in session.execute(
        select(Photo.id, Photo.path, TagRemoval.score).join(TagRemoval, TagRemoval.photo_id == Photo.id)
        .where(TagRemoval.tag_id == tag_id, Photo.status == PhotoStatus.ok.value)
    ):
        items[pid] = ReviewItem(pid, Path(path).name, score, REJECTED)

    def order(item: ReviewItem):
        return (item.state != PENDING, item.score is None, item.score or 0.0, item.photo_id)

    return sorted(items.values(), key=order)[:limit]


def decide(library, session: Session, photo: Photo, tag: str, decision: str) -> tuple[str, bool]:
    """Store one review decision as ``phototag tag add``/``tag remove`` does. Returns (the photo's
    state for ``tag`` now, whether its tags changed). The caller commits, then calls
    :func:`after_commit` when they changed."""
    if decision == ACCEPT:
        changed = bool(library.add_manual_tags(session, photo, [tag]))
        return ACCEPTED, changed
    if decision == REJECT:
        had = session.scalar(select(func.count()).select_from(PhotoTag).join(Tag, Tag.id == PhotoTag.tag_id)
                             .where(PhotoTag.photo_id == photo.id, Tag.name == tag))
        if had:
            library.remove_tags(session, photo, [tag])
        return REJECTED, bool(had)
    raise ValueError(f"unknown decision {decision!r}")


def after_commit(library, photo_ids: list[int]) -> list[str]:
    """The plugins hear of the changed photos, as after ``tag add/remove`` (auto XMP export)."""
    from phototag.plugins import photos_tagged

    return photos_tagged(library, photo_ids)


# ---- corrections and learning -------------------------------------------------------------------


def last_learned(settings) -> dt.datetime | None:
    """When calibrate (--apply) or finetune last learned from the corrections for the default model
    (naive UTC, like the database's times), or None when they never ran."""
    from phototag.tagging.base import TaggerError
    from phototag.tagging.versions import list_versions, thresholds_path

    times: list[dt.datetime] = []
    with contextlib.suppress(TaggerError, OSError):  # a default model name that cannot have a thresholds file
        path = thresholds_path(settings, settings.default_model)
        if path.exists():
            times.append(dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).replace(tzinfo=None))
    try:
        versions = list_versions(settings)
    except (TaggerError, OSError):  # an unreadable version file: `phototag models list` says which
        versions = []
    for version in versions:
        created = version.get("created_at")
        if created:
            try:
                stamp = dt.datetime.fromisoformat(created)
            except ValueError:
                continue
            if stamp.tzinfo:
                stamp = stamp.astimezone(dt.UTC).replace(tzinfo=None)
            times.append(stamp)
    return max(times) if times else None


def correction_counts(session: Session, settings) -> dict[str, Any]:
    """Explicit corrections (removals + manual tags) in all, and those made since calibrate or
    finetune last ran: the ones that wait."""
    since = last_learned(settings)

    def count(stmt, created):
        total = session.scalar(stmt) or 0
        new = (session.scalar(stmt.where(created > since)) or 0) if since else total
        return total, new

    removals = count(select(func.count()).select_from(TagRemoval), TagRemoval.created_at)
    manual = count(select(func.count()).select_from(PhotoTag).where(PhotoTag.source == TagSource.manual.value),
                   PhotoTag.created_at)
    return {"total": removals[0] + manual[0], "waiting": removals[1] + manual[1],
            "last_learned": since.isoformat(timespec="seconds") if since else None}


@dataclass
class LearnJob:
    """One calibrate or finetune run in a background thread."""

    kind: str
    state: str = "running"  # running | done | failed
    done: int = 0
    total: int | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    message: str = ""
    result: dict[str, Any] | None = None

    def progress(self, event: str, n: int) -> None:
        if event == "total":
            self.total, self.done = n, 0
        else:
            self.done += n

    def as_dict(self) -> dict[str, Any]:
        end = self.finished or time.time()
        return {"kind": self.kind, "state": self.state, "done": self.done, "total": self.total,
                "seconds": round(end - self.started, 1), "message": self.message, "result": self.result}


_jobs_lock = threading.Lock()
_jobs: dict[str, LearnJob] = {}  # by library home: the last job run for it


def current_job(library) -> LearnJob | None:
    return _jobs.get(str(library.settings.home))


def start_job(library, kind: str, run: Callable[[LearnJob], tuple[dict[str, Any], str]] | None = None) -> LearnJob:
    """Start ``calibrate`` or ``finetune`` on ``library`` in a thread (409 while one runs)."""
    if kind not in ("calibrate", "finetune"):
        raise HTTPException(400, f"unknown learning job {kind!r} (calibrate or finetune)")
    key = str(library.settings.home)
    with _jobs_lock:
        running = _jobs.get(key)
        if running is not None and running.state == "running":
            raise HTTPException(409, f"{running.kind} is running already; wait for it to finish")
        job = _jobs[key] = LearnJob(kind)
    work = run or (_calibrate if kind == "calibrate" else _finetune)

    def target() -> None:
        try:
            job.result, job.message = work(library, job)
            job.state = "done"
        except Exception as exc:  # noqa: BLE001 - a thread's last resort: shown in the page, traceback in the log
            from phototag.errors import PhototagError

            job.message = str(exc) if isinstance(exc, PhototagError) else f"{type(exc).__name__}: {exc}"
            job.state = "failed"
            if not isinstance(exc, PhototagError):
                traceback.print_exc()
        finally:
            job.finished = time.time()

    threading.Thread(target=target, name=f"phototag-{kind}", daemon=True).start()
    return job


def _calibrate(library, job: LearnJob) -> tuple[dict[str, Any], str]:
    from phototag.learn.calibrate import calibrate

    result = calibrate(library, None, apply=True, progress=job.progress)
    data = result.as_dict()
    if not result.tuned:
        message = ("no tag has 3 or more corrections yet, so no threshold moved; "
                   "agreement on held-out photos is shown")
    else:
        message = (f"tuned {len(result.tuned)} tag thresholds of {result.model}; saved, the next "
                   "`phototag retag` applies them")
    if result.held_out_photos:
        message += (f" (agreement with you on {result.held_out_photos} held-out photos: F1 "
                    f"{result.before.f1:.2f} → {result.after.f1:.2f})")
    return data, message


def _finetune(library, job: LearnJob) -> tuple[dict[str, Any], str]:
    from phototag.learn.finetune import finetune

    result = finetune(library, None, progress=job.progress)
    message = f"new model version {result.name}"
    if result.held_out_photos:
        message += (f" (agreement with you on {result.held_out_photos} held-out photos: F1 "
                    f"{result.before.f1:.2f} → {result.after.f1:.2f})")
    message += f"; re-tag with: phototag retag --model {result.name}"
    return result.as_dict(), message


# ---- routes -------------------------------------------------------------------------------------


def _tag_param(request: Request) -> str:
    return (request.query_params.get("tag") or "").strip()


def review_page(request: Request) -> Response:
    lib = get_library(request)
    tag = _tag_param(request)
    with lib.session() as session:
        items = review_items(session, tag) if tag else []
        counts = correction_counts(session, lib.settings)
        known = bool(tag) and session.scalar(select(Tag.id).where(Tag.name == tag)) is not None
        suggestions = [] if tag else [t for t in lib.tag_counts(session)[:40]]
    try:
        start = int(request.query_params.get("i", ""))
    except ValueError:
        start = next((n for n, item in enumerate(items) if item.state == PENDING), 0)
    start = max(0, min(start, len(items) - 1)) if items else 0
    job = current_job(lib)
    data = {"tag": tag, "items": [i.as_dict() for i in items], "start": start, "csrf": csrf_token(request),
            "job": job.as_dict() if job else None}
    return render(request, "review.html", tag=tag, known=known, items=items, start=start,
                  current_item=items[start] if items else None, counts=counts, suggestions=suggestions,
                  job=job.as_dict() if job else None, data_json=json.dumps(data, ensure_ascii=False),
                  decided=sum(1 for i in items if i.state != PENDING))


async def review_decide(request: Request) -> Response:
    """POST photo_id, tag, decision (accept|reject), csrf. JSON for scripts (``Accept:
    application/json``), else a redirect to the next photo."""
    form = await request.form()
    require_csrf(request, form)
    tag = str(form.get("tag") or "").strip()
    decision = str(form.get("decision") or "")
    try:
        photo_id = int(str(form.get("photo_id") or ""))
    except ValueError:
        raise HTTPException(400, "photo_id must be a photo's id (a number)") from None
    if not tag or decision not in (ACCEPT, REJECT):
        raise HTTPException(400, "give a tag and a decision (accept or reject)")
    result = await run_in_threadpool(_store_decision, request, photo_id, tag, decision)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(result)
    try:
        nxt = int(str(form.get("next") or ""))
    except ValueError:
        nxt = 0
    return RedirectResponse("/review?" + urlencode({"tag": tag, "i": nxt}), status_code=303)


def _store_decision(request: Request, photo_id: int, tag: str, decision: str) -> dict[str, Any]:
    lib = get_library(request)
    with writing(request) as session:
        photo = photo_or_404(session, photo_id)
        state, changed = decide(lib, session, photo, tag, decision)
    errors = after_commit(lib, [photo_id]) if changed else []
    with lib.session() as session:
        counts = correction_counts(session, lib.settings)
    return {"id": photo_id, "tag": tag, "state": state, "changed": changed, "corrections": counts,
            "plugin_errors": errors}


async def learn_start(request: Request) -> Response:
    """POST kind (calibrate|finetune), csrf: start it in the background; 202 with the job."""
    form = await request.form()
    require_csrf(request, form)
    job = await run_in_threadpool(start_job, get_library(request), str(form.get("kind") or ""))
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(job.as_dict(), status_code=202)
    back = str(form.get("tag") or "")
    return RedirectResponse("/review" + (("?" + urlencode({"tag": back})) if back else ""), status_code=303)


def learn_job(request: Request) -> Response:
    """GET: the last learning job (or null) and the corrections that wait, as JSON (polled)."""
    lib = get_library(request)
    job = current_job(lib)
    with lib.session() as session:
        counts = correction_counts(session, lib.settings)
    return JSONResponse({"job": job.as_dict() if job else None, "corrections": counts},
                        headers={"cache-control": "no-store"})


routes = [
    Route("/review", review_page, methods=["GET"]),
    Route("/review/decide", review_decide, methods=["POST"]),
    Route("/review/learn", learn_start, methods=["POST"]),
    Route("/review/job", learn_job, methods=["GET"]),
]
