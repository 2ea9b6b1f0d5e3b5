"""Background re-tagging: which photos the watcher should queue for the model again, and when.

A photo is due when the default model changed since it was tagged (another model, or other weights
of it), or when ``retag.every`` is set and it was tagged longer ago than that; nothing is due outside
``retag.window``. :func:`schedule_background_retag` queues the due photos with the queue's lowest
priority (:meth:`phototag.ingest.queue.WorkQueue.enqueue_retag`), so new photos are tagged first;
the watcher (:mod:`phototag.watch.hotswap`) calls it every ``retag.check_seconds``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from phototag.config import Settings
from phototag.db.models import ModelRun, Photo, PhotoStatus, WorkItem
from phototag.ingest.queue import WorkQueue
from phototag.library import Library
from phototag.retag import RetagError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_every(text: str | None) -> dt.timedelta | None:
    """``retag.every``: ``"30d"``, ``"12h"``, ``"2w"`` … (None/"" = never re-tag on a schedule)."""
    if text is None or str(text).strip() in ("", "0", "never", "off"):
        return None
    match = _DURATION.match(str(text))
    if not match:
        raise RetagError(f"retag.every = {text!r}: expected a number and a unit, e.g. 30d, 12h, 2w")
    value, unit = float(match.group(1)), match.group(2).lower()
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[unit]
    if value <= 0:
        return None
    return dt.timedelta(seconds=value * seconds)


def parse_window(text: str | None) -> tuple[dt.time, dt.time] | None:
    """``retag.window``: ``"01:00-06:00"`` (local time; may wrap midnight: ``"22:00-05:00"``)."""
    if text is None or str(text).strip() == "":
        return None
    match = _WINDOW.match(str(text))
    if not match:
        raise RetagError(f"retag.window = {text!r}: expected HH:MM-HH:MM, e.g. 01:00-06:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59:
        raise RetagError(f"retag.window = {text!r}: not a time of day")
    end = dt.time(23, 59, 59, 999999) if (h2, m2) == (24, 0) else dt.time(h2, m2)
    return dt.time(h1, m1), end


def in_window(window: tuple[dt.time, dt.time] | None, now: dt.datetime) -> bool:
    if window is None:
        return True
    start, end = window
    t = now.time()
    if start <= end:
        return start <= t < end
    return t >= start or t < end  # wraps midnight


@dataclass
class RetagPolicy:
    every: dt.timedelta | None
    window: tuple[dt.time, dt.time] | None
    model: str
    weights_sha256: str | None
    batch_limit: int

    @classmethod
    def from_settings(cls, settings: Settings, weights_sha256: str | None = None) -> "RetagPolicy":
        return cls(
            every=parse_every(settings.get("retag.every")),
            window=parse_window(settings.get("retag.window")),
            model=settings.default_model,
            weights_sha256=weights_sha256,
            batch_limit=int(settings.get("retag.batch_limit") or 1000),
        )


def due_retag(
    session: Session, settings: Settings, now: dt.datetime, *, weights_sha256: str | None = None,
    limit: int | None = None,
) -> list[int]:
    """Ids of the photos that background re-tagging should queue now (oldest tagging first).

    A photo is due when it has status ok, is not queued already, and

    * it was tagged by another model than the default (``default_model`` changed), or by other
      weights of it (when ``weights_sha256`` of the default model is given), or
    * ``retag.every`` is set and it was tagged longer ago than that.

    Nothing is due outside ``retag.window`` (local time of ``now``; ``now`` naive = local).
    Photos never tagged are the scanner's business, not re-tagging's.
    """
    policy = RetagPolicy.from_settings(settings, weights_sha256)
    local_now = now.astimezone() if now.tzinfo is not None else now
    if not in_window(policy.window, local_now):
        return []
    other_model = ModelRun.model_name != policy.model
    if policy.weights_sha256:
        other_model = or_(other_model, ModelRun.weights_sha256 != policy.weights_sha256)
    conditions = [other_model]
    if policy.every is not None:
        utc_now = now.astimezone(dt.timezone.utc).replace(tzinfo=None) if now.tzinfo else (
            now.astimezone().astimezone(dt.timezone.utc).replace(tzinfo=None))
        conditions.append(Photo.tagged_at < utc_now - policy.every)
    queued = select(WorkItem.path)
    stmt = (
        select(Photo.id)
        .join(ModelRun, ModelRun.id == Photo.tagged_run_id)
        .where(Photo.status == PhotoStatus.ok.value, Photo.path.not_in(queued), or_(*conditions))
        .order_by(Photo.tagged_at, Photo.id)
        .limit(limit or policy.batch_limit)
    )
    return list(session.scalars(stmt))


def schedule_background_retag(
    library: Library, settings: Settings | None = None, now: dt.datetime | None = None, *,
    weights_sha256: str | None = None,
) -> int:
    """Queue the photos :func:`due_retag` finds, with the queue's re-tag priority (after new photos)
    and ``model_name`` None (= whatever the default model is when the row is processed). Cheap when
    nothing is due (one indexed query). Returns the number of rows queued."""
    settings = settings or library.settings
    now = now or dt.datetime.now().astimezone()
    with library.session() as session:
        ids = due_retag(session, settings, now, weights_sha256=weights_sha256)
        if not ids:
            return 0
        paths = [p for p in session.scalars(select(Photo.path).where(Photo.id.in_(ids)))]
    return WorkQueue(library).enqueue_retag(paths, None)
