"""The search page (``/``: one box, a grid of thumbnails, paged) and the tag browser (``/tags``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from phototag.errors import PhototagError
from phototag.web.common import get_library, render

#: photos on one result page
PAGE_SIZE = 100


@dataclass
class Results:
    """One page of a query's results: the photos (id, file name), how many matched, or the error."""

    query: str
    page: int
    total: int = 0
    photos: list[dict] = field(default_factory=list)
    error: str | None = None

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))

    @property
    def first(self) -> int:
        """The index (in the whole result) of the page's first photo."""
        return (self.page - 1) * PAGE_SIZE


def result_ids(lib, session, query: str) -> list[int]:
    """Every photo id ``query`` finds, in the order ``phototag search QUERY`` lists them (the same
    service, the same fields and resolvers). Raises the query's :class:`PhototagError`."""
    from phototag.plugins import install_query_fields
    from phototag.query.service import parse_query, search_ids
    from phototag.search import default_resolvers

    install_query_fields(lib.settings)
    return search_ids(session, parse_query(query), resolvers=default_resolvers(lib))


def run_query(lib, query: str, page: int) -> Results:
    """The page ``page`` (from 1) of ``query``'s results; the query's error message instead when it has one."""
    from sqlalchemy import select

    from phototag.db.models import Photo, decode_path

    results = Results(query, page)
    try:
        with lib.session() as session:
            ids = result_ids(lib, session, query)
            results.total = len(ids)
            part = ids[results.first:results.first + PAGE_SIZE]
            paths = dict(session.execute(select(Photo.id, Photo.path).where(Photo.id.in_(part))).all()) if part else {}
    except PhototagError as exc:
        results.error = str(exc)
        return results
    for offset, pid in enumerate(part):
        if pid in paths:
            path = decode_path(paths[pid])
            results.photos.append({"id": pid, "name": path.rsplit("/", 1)[-1], "path": path,
                                   "index": results.first + offset})
    return results


def _page_number(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        return 1


def search_page(request: Request) -> Response:
    query = request.query_params.get("q", "").strip()
    results = run_query(get_library(request), query, _page_number(request))

    def page_link(n: int) -> str:
        return "/?" + urlencode({"q": query, "page": n})

    def photo_link(photo: dict) -> str:
        return f"/photos/{photo['id']}?" + urlencode({"q": query, "i": photo["index"]})

    return render(request, "search.html", q=query, results=results, page_link=page_link, photo_link=photo_link,
                  status_code=400 if results.error else 200)


def tag_query(name: str) -> str:
    """The query that finds the photos tagged ``name`` (quoted when it is more than one plain word)."""
    if re.fullmatch(r"[\w.-]+", name) and not name.startswith("-"):
        return name
    return f"'{name}'" if '"' in name else f'"{name}"'


@dataclass
class TagNode:
    name: str
    name_zh: str | None
    count: int
    children: list["TagNode"] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Its own photos plus those of the tags under it (a photo may be counted twice)."""
        return self.count + sum(c.total for c in self.children)


def tag_tree(rows: list[dict]) -> list[TagNode]:
    """``Library.tag_counts`` rows as a forest: each tag under its parent, most used first."""
    nodes = {r["name"]: TagNode(r["name"], r["name_zh"], r["count"]) for r in rows}
    roots: list[TagNode] = []
    for r in rows:
        parent = r["parent"]
        if parent and parent != r["name"]:
            if parent not in nodes:  # a parent no photo carries itself
                nodes[parent] = TagNode(parent, None, 0)
                roots.append(nodes[parent])
            nodes[parent].children.append(nodes[r["name"]])
        else:
            roots.append(nodes[r["name"]])
    roots.sort(key=lambda n: (-n.total, n.name))
    return roots


def tags_page(request: Request) -> Response:
    lib = get_library(request)
    with lib.session() as session:
        rows = lib.tag_counts(session)
    return render(request, "tags.html", tree=tag_tree(rows), tag_count=len(rows), tag_query=tag_query)


routes = [
    Route("/", search_page, name="search"),
    Route("/tags", tags_page, name="tags"),
]
