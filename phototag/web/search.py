"""The search page (``/``: one box, a grid of thumbnails, paged) and the tag browser (``/tags``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from phototag.errors import PhototagError
from phototag.web.common import get_library, printable, render

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

    from phototag.db.models import Photo

    results = Results(query, page)
    try:
        with lib.session() as session:
            ids = result_ids(lib, session, query)
            results.total = len(ids)
            results.page = min(results.page, results.pages)  # a page past the end shows the last one
            part = ids[results.first:results.first + PAGE_SIZE]
            paths = dict(session.execute(select(Photo.id, Photo.path).where(Photo.id.in_(part))).all()) if part else {}
    except PhototagError as exc:
        results.error = str(exc)
        return results
    for offset, pid in enumerate(part):
        if pid in paths:
            path = printable(paths[pid])
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


@dataclass
class TagNode:
    name: str
    name_zh: str | None
    count: int  #: photos that carry this tag
    children: list[TagNode] = field(default_factory=list)

    @property
    def used(self) -> int:
        """Its own photos plus those of the tags under it (for ordering; a photo may count twice)."""
        return self.count + sum(c.used for c in self.children)


def tag_tree(session, rows: list[dict]) -> list[TagNode]:
    """The tags in use (``Library.tag_counts`` rows) as a forest: each under its parent in the
    library's hierarchy (a parent no photo carries is shown with 0), most used first."""
    from sqlalchemy import select

    from phototag.db.models import Tag

    counts = {r["name"]: r for r in rows}
    tags = {t.id: t for t in session.execute(select(Tag.id, Tag.name, Tag.name_zh, Tag.parent_id))}
    by_name = {t.name: t for t in tags.values()}
    nodes: dict[int, TagNode] = {}
    roots: list[TagNode] = []

    def node_of(tag_id: int, depth: int = 0) -> TagNode:
        if tag_id in nodes:
            return nodes[tag_id]
        tag = tags[tag_id]
        node = nodes[tag_id] = TagNode(tag.name, tag.name_zh, counts[tag.name]["count"] if tag.name in counts else 0)
        parent = tag.parent_id
        if parent is not None and parent in tags and parent != tag_id and depth < 64:
            node_of(parent, depth + 1).children.append(node)
        else:
            roots.append(node)
        return node

    for name in counts:
        if name in by_name:
            node_of(by_name[name].id)

    def ordered(level: list[TagNode]) -> list[TagNode]:
        level.sort(key=lambda n: (-n.used, n.name.casefold()))
        for n in level:
            ordered(n.children)
        return level

    return ordered(roots)


def tags_page(request: Request) -> Response:
    lib = get_library(request)
    with lib.session() as session:
        rows = lib.tag_counts(session)
        tree = tag_tree(session, rows)
    return render(request, "tags.html", tree=tree, tag_count=len(rows))


routes = [
    Route("/", search_page, name="search"),
    Route("/tags", tags_page, name="tags"),
]
