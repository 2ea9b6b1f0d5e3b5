"""Photo views: the plain data :meth:`Node.match` reads (the Python face's input).

A view is any object or mapping with the Photo columns by name (``id``, ``path``, ``status``,
``taken_at``, ``added_at``, ``camera_make``, ``camera_model``, ``lens``, ``iso``, ``width``,
``height``, ``size``, ``format``) plus ``tags`` (a sequence of :class:`TagView`, or of
``(name, name_zh, ancestors, score, source)`` tuples), ``captions`` (texts) and ``models``
(``(model_name, model_id)`` of the model runs that tagged it).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from phototag.db.models import Caption, ModelRun, Photo, PhotoTag, Tag


class TagView(NamedTuple):
    name: str
    name_zh: str | None
    ancestors: tuple[tuple[str, str | None], ...]  #: (name, name_zh) of parent, grandparent, …
    score: float | None
    source: str


@dataclass
class PhotoView:
    id: int
    path: str
    status: str = "ok"
    taken_at: dt.datetime | None = None
    added_at: dt.datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    lens: str | None = None
    iso: int | None = None
    width: int | None = None
    height: int | None = None
    size: int | None = None
    format: str | None = None
    tags: list[TagView] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    models: set[tuple[str, str]] = field(default_factory=set)


_COLUMNS = (
    "id path status taken_at added_at camera_make camera_model lens iso width height size format"
).split()


def load_views(session: Session, photo_ids: Iterable[int] | None = None) -> dict[int, PhotoView]:
    """Photo views for these photos (all photos when ``photo_ids`` is None), by id."""
    ids = None if photo_ids is None else set(photo_ids)
    views: dict[int, PhotoView] = {}
    for photo in session.scalars(select(Photo)):
        if ids is None or photo.id in ids:
            views[photo.id] = PhotoView(**{c: getattr(photo, c) for c in _COLUMNS})

    tags = {t.id: (t.name, t.name_zh, t.parent_id) for t in session.scalars(select(Tag))}

    def ancestors(tag_id: int) -> tuple[tuple[str, str | None], ...]:
        chain, seen, parent = [], {tag_id}, tags[tag_id][2]
        while parent is not None and parent not in seen and parent in tags:
            seen.add(parent)
            name, name_zh, next_parent = tags[parent]
            chain.append((name, name_zh))
            parent = next_parent
        return tuple(chain)

    runs = {r.id: (r.model_name, r.model_id) for r in session.scalars(select(ModelRun))}
    for pt in session.scalars(select(PhotoTag)):
        view = views.get(pt.photo_id)
        if view is None:
            continue
        name, name_zh, _ = tags[pt.tag_id]
        view.tags.append(TagView(name, name_zh, ancestors(pt.tag_id), pt.score, pt.source))
        if pt.model_run_id is not None and pt.model_run_id in runs:
            view.models.add(runs[pt.model_run_id])
    captions: dict[int, list[str]] = defaultdict(list)
    for cap in session.scalars(select(Caption)):
        captions[cap.photo_id].append(cap.text)
    for photo_id, texts in captions.items():
        if photo_id in views:
            views[photo_id].captions = texts
    return views
