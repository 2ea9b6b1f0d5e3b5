"""The JSON API: ``/api/search?q=`` (what ``phototag search QUERY --format json`` prints),
``/api/photos/ID`` (what ``phototag show #ID --format json`` prints) and ``/api/tags?prefix=``
(the tag suggestions of the search box)."""

from __future__ import annotations

import json
import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from phototag.errors import PhototagError
from phototag.web.common import get_library, photo_or_404

#: a lone surrogate (a file name byte that is not UTF-8) is written as its \\u escape, as the CLI does
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

#: most suggestions /api/tags gives
SUGGESTIONS = 20


class CliJSONResponse(JSONResponse):
    """JSON the way the CLI's ``--format json`` prints it: non-ASCII text as it is, a file name's
    undecodable bytes as ``\\udcXX``, dates as their ``str``."""

    def render(self, content) -> bytes:
        text = json.dumps(content, ensure_ascii=False, indent=2, default=str)
        text = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
        return (text + "\n").encode("utf-8")


def api_search(request: Request) -> Response:
    from phototag.library import search_result_as_dict
    from phototag.plugins import install_query_fields
    from phototag.query.service import parse_query, search
    from phototag.search import default_resolvers

    lib = get_library(request)
    query = request.query_params.get("q", "")
    limit = request.query_params.get("limit") or None
    if limit is not None and not limit.isdigit():
        return JSONResponse({"error": f"limit must be a whole number >= 0, not {limit!r}"}, status_code=400)
    try:
        install_query_fields(lib.settings)
        with lib.session() as session:
            photos = search(session, parse_query(query), limit=None if limit is None else int(limit),
                            resolvers=default_resolvers(lib))
            return CliJSONResponse(search_result_as_dict(lib, session, photos))
    except PhototagError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)


def api_photo(request: Request) -> Response:
    from phototag.library import photo_as_dict

    lib = get_library(request)
    with lib.session() as session:
        photo = photo_or_404(session, request.path_params["photo_id"])
        return CliJSONResponse(photo_as_dict(lib, session, photo))


def api_tags(request: Request) -> Response:
    """Tags whose English or Chinese name starts with ``prefix`` (case-insensitive), most used first."""
    lib = get_library(request)
    prefix = request.query_params.get("prefix", "").strip().casefold()
    with lib.session() as session:
        rows = lib.tag_counts(session)
    found = [r for r in rows if r["name"].casefold().startswith(prefix) or (r["name_zh"] or "").startswith(prefix)]
    return JSONResponse([{"name": r["name"], "name_zh": r["name_zh"], "count": r["count"]} for r in found[:SUGGESTIONS]])


routes = [
    Route("/api/search", api_search, name="api_search"),
    Route("/api/photos/{photo_id:int}", api_photo, name="api_photo"),
    Route("/api/tags", api_tags, name="api_tags"),
]
