"""The photo page (``/photos/ID``): preview, tags with score/source/model, caption, EXIF, similar
photos, neighbours in the result set; and the two corrections (add a tag, remove a tag).

Image bytes are only ever those of a library photo named by its id: no path comes from the request."""

from __future__ import annotations

import threading
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from phototag.display import shown_value
from phototag.errors import PhototagError
from phototag.web.common import (
    get_library,
    leave_note,
    photo_or_404,
    printable,
    render,
    require_csrf,
    take_note,
    writing,
)

_SIMILAR_LOCK = threading.Lock()

#: longest side of the photo page's preview, in pixels
PREVIEW_SIZE = 1600

#: the EXIF facts the page lists (key of ``phototag show --format json``, label)
EXIF_FIELDS = [
    ("taken_at", "Taken"), ("taken_at_offset", "UTC offset"), ("camera_make", "Camera make"),
    ("camera_model", "Camera"), ("lens", "Lens"), ("iso", "ISO"), ("exposure_time", "Exposure"),
    ("f_number", "Aperture"), ("focal_length", "Focal length"), ("width", "Width"), ("height", "Height"),
    ("format", "Format"), ("size", "File size"), ("gps_lat", "Latitude"), ("gps_lon", "Longitude"),
    ("orientation", "Orientation"), ("status", "Status"), ("error", "Error"), ("added_at", "Added"),
    ("tagged_at", "Tagged"), ("sha256", "SHA-256"),
]


def _photo_id(request: Request) -> int:
    return request.path_params["photo_id"]


def image_of(lib, photo, size: int, if_none_match: str | None = None) -> Response:
    """The photo as a JPEG whose longest side is at most ``size`` (the thumbnail cache's file: made
    once, from the draft-decoded photo, so HEIC and RAW show too). Its ETag is the cache key (it
    changes with the photo's content), so a browser's copy is re-checked with a 304, never re-sent."""
    from phototag.web.thumbnails import thumbnail_path

    try:
        path = thumbnail_path(lib, photo, size)
    except PhototagError as exc:
        raise HTTPException(404, f"photo {photo.id} cannot be shown: {exc}") from exc
    headers = {"cache-control": "private, max-age=60", "etag": f'"{path.stem}"'}
    if if_none_match is not None and headers["etag"] in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type="image/jpeg", headers=headers)


async def thumbnail(request: Request) -> Response:
    from phototag.web.thumbnails import thumbnail_size

    return await _image(request, thumbnail_size(get_library(request).settings))


async def preview(request: Request) -> Response:
    return await _image(request, PREVIEW_SIZE)


async def _image(request: Request, size: int) -> Response:
    return await run_in_threadpool(_image_response, get_library(request), _photo_id(request), size,
                                   request.headers.get("if-none-match"))


def _image_response(lib, photo_id: int, size: int, if_none_match: str | None) -> Response:
    with lib.session() as session:
        photo = photo_or_404(session, photo_id)
        session.expunge(photo)
    return image_of(lib, photo, size, if_none_match)


def _neighbours(lib, session, photo_id: int, query: str | None, index: str | None) -> dict | None:
    """Where the photo stands in the result set of ``query`` (the link carried q and its index):
    {index, total, prev, next} (prev/next: links, or None at the ends). None without a query or
    when the photo is no longer in its results."""
    from phototag.web.search import result_ids

    if query is None:
        return None
    try:
        ids = result_ids(lib, session, query)
    except PhototagError:
        return None
    try:
        i = int(index) if index is not None else -1
    except ValueError:
        i = -1
    if not (0 <= i < len(ids) and ids[i] == photo_id):
        if photo_id not in ids:
            return None
        i = ids.index(photo_id)

    def link(j: int) -> str | None:
        return f"/photos/{ids[j]}?" + urlencode({"q": query, "i": j}) if 0 <= j < len(ids) else None

    return {"index": i, "total": len(ids), "prev": link(i - 1), "next": link(i + 1),
            "back": "/?" + urlencode({"q": query, "page": i // 100 + 1})}


def _similar(lib, session, photo_id: int) -> list[dict]:
    """Up to 12 photos that look most like this one (what ``phototag similar #ID`` lists); none
    when the library has no embeddings."""
    from phototag.search import SearchError
    from phototag.search.service import find_similar

    try:
        with _SIMILAR_LOCK:  # one index update at a time when several pages open at once
            hits = find_similar(lib, session, f"#{photo_id}", limit=13)
    except (SearchError, PhototagError):
        return []
    return [{"id": h.photo_id, "name": printable(h.path.rsplit("/", 1)[-1]), "score": h.score}
            for h in hits if h.photo_id != photo_id][:12]


def photo_page(request: Request) -> Response:
    from phototag.library import photo_as_dict

    lib = get_library(request)
    photo_id = _photo_id(request)
    query = request.query_params.get("q")
    with lib.session() as session:
        photo = photo_or_404(session, photo_id)
        data = photo_as_dict(lib, session, photo)
        removed = _removed_tags(session, photo_id)
        neighbours = _neighbours(lib, session, photo_id, query, request.query_params.get("i"))
        similar = _similar(lib, session, photo_id)
    path = printable(data["path"])
    exif = [(label, shown_value(key, data[key])) for key, label in EXIF_FIELDS if data.get(key) is not None]
    back = f"?{urlencode({'q': query, 'i': neighbours['index']})}" if neighbours else ""
    return render(request, "photo.html", photo=data, name=path.rsplit("/", 1)[-1], path=path, exif=exif,
                  removed=removed, neighbours=neighbours, similar=similar, q=query or "", here=back,
                  message=take_note(request, request.query_params.get("note")))


def _removed_tags(session, photo_id: int) -> list[str]:
    from sqlalchemy import select

    from phototag.db.models import Tag, TagRemoval

    return list(session.scalars(select(Tag.name).join(TagRemoval, TagRemoval.tag_id == Tag.id)
                                .where(TagRemoval.photo_id == photo_id).order_by(Tag.name)))


async def add_tag(request: Request) -> Response:
    form = await request.form()
    require_csrf(request, form)
    names = [n.strip() for n in str(form.get("tag") or "").split(",") if n.strip()]
    if not names:
        return _back(request, form, "give a tag name to add")
    return await run_in_threadpool(_change, request, form, names, "add")


async def remove_tag(request: Request) -> Response:
    form = await request.form()
    require_csrf(request, form)
    name = str(form.get("tag") or "").strip()
    if not name:
        return _back(request, form, "give a tag name to remove")
    return await run_in_threadpool(_change, request, form, [name], "remove")


def _change(request: Request, form, names: list[str], action: str) -> Response:
    """Add or remove ``names`` as ``phototag tag add|remove`` does (the same library calls; a
    removal is remembered, so a re-tag does not give the tag back), then tell the plugins (the
    automatic export writes the sidecar) as the command does after its commit."""
    from phototag.plugins import photos_tagged

    lib = get_library(request)
    photo_id = _photo_id(request)
    with writing(request) as session:
        photo = photo_or_404(session, photo_id)
        if action == "add":
            changed = lib.add_manual_tags(session, photo, names)
        else:
            present = {t["name"] for t in lib.photo_tags(session, photo_id)}
            absent = [n for n in names if n not in present]
            if absent:
                have = ", ".join(sorted(present)) or "none"
                return _back(request, form, f"{printable(photo.path)} has no tag {', '.join(map(repr, absent))}; "
                             f"nothing removed (its tags: {have})")
            changed = lib.remove_tags(session, photo, names)
    errors = photos_tagged(lib, [photo_id]) if changed else []
    verb = "added" if action == "add" else "removed"
    message = f"{verb} {', '.join(changed)}" if changed else f"nothing {verb}"
    if errors:
        message += "; plugin: " + "; ".join(errors)
    return _back(request, form, message)


def _back(request: Request, form, message: str) -> Response:
    """Back to the photo page (Post/Redirect/Get), keeping the result set it was opened from."""
    params = {"note": leave_note(request, message)}
    for key in ("q", "i"):
        if form.get(key) is not None and str(form.get(key)) != "":
            params[key] = str(form.get(key))
    return RedirectResponse(f"/photos/{_photo_id(request)}?" + urlencode(params), status_code=303)


routes = [
    Route("/photos/{photo_id:int}", photo_page, name="photo"),
    Route("/photos/{photo_id:int}/preview", preview, name="preview"),
    Route("/thumb/{photo_id:int}", thumbnail, name="thumbnail"),
    Route("/photos/{photo_id:int}/tags/add", add_tag, methods=["POST"], name="add_tag"),
    Route("/photos/{photo_id:int}/tags/remove", remove_tag, methods=["POST"], name="remove_tag"),
]
