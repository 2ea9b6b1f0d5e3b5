"""The status page (``/status``, and ``/status.json`` for scripts): what ``phototag status``
reports (the watcher, the queue, photo counts, the last tagged photo: the same function,
:func:`phototag.watch.status.library_status`) plus the photos that could not be read, with their
reasons: what ``phototag search status:error`` finds (the same query service)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from phototag.web.common import get_library, render

#: the page lists at most this many unreadable photos (the count says how many there are)
ERROR_LIMIT = 200


def error_photos(lib, limit: int = ERROR_LIMIT) -> list[dict]:
    """The photos ``phototag search status:error`` finds, newest first: id, path, name, reason."""
    from phototag.query.service import parse_query, search_ids

    with lib.session() as session:
        ids = search_ids(session, parse_query("status:error"))
        photos = list(lib.iter_photos(session, ids))
    photos.sort(key=lambda p: (p.updated_at is not None, p.updated_at, p.id), reverse=True)
    return [{"id": p.id, "path": p.path, "name": Path(p.path).name, "error": p.error,
             "updated_at": p.updated_at.isoformat(timespec="seconds") if p.updated_at else None}
            for p in photos[:limit]]


def status_data(lib) -> dict:
    from phototag.watch.status import library_status

    data = library_status(lib)
    data["error_photos"] = error_photos(lib)
    return data


def status_page(request: Request) -> Response:
    data = status_data(get_library(request))
    return render(request, "status.html", status=data, error_limit=ERROR_LIMIT)


def status_json(request: Request) -> Response:
    return JSONResponse(status_data(get_library(request)), headers={"cache-control": "no-store"})


routes = [
    Route("/status", status_page, methods=["GET"]),
    Route("/status.json", status_json, methods=["GET"]),
]
