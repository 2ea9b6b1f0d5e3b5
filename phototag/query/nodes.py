"""The query AST and its Python face.

Every node is an immutable value with two faces (as in beets' ``dbcore.query``):

* :meth:`Node.match` decides in Python whether one photo matches, given a *photo view*
  (a :class:`phototag.query.view.PhotoView`, or any object or dict with the same names);
* :func:`phototag.query.compile.compile_node` turns it into an SQLAlchemy boolean clause over
  :class:`~phototag.db.models.Photo`.

The two faces must agree on every photo (the tests check it). Leaf terms are two-valued:
a photo whose column is NULL does not match (and so matches the negated term).

How a term compares a value (its matcher or range) is :mod:`phototag.query.matchers`. Nothing here
touches the database; the module only depends on the standard library.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping, Sequence

from phototag.query.errors import QueryError
from phototag.query.matchers import Matcher, NumberRange


def view_get(view: Any, name: str, default: Any = None) -> Any:
    """Read one attribute of a photo view (an object or a mapping)."""
    if isinstance(view, Mapping):
        return view.get(name, default)
    return getattr(view, name, default)


# ---- nodes ----------------------------------------------------------------------------------


class Node:
    """A query node. Subclasses are frozen dataclasses."""

    def match(self, view: Any) -> bool:
        raise NotImplementedError

    def children(self) -> Sequence["Node"]:
        return ()

    def walk(self) -> Iterator["Node"]:
        yield self
        for child in self.children():
            yield from child.walk()


@dataclass(frozen=True, repr=False)
class All(Node):
    """Matches every photo (the empty query)."""

    def match(self, view: Any) -> bool:
        return True

    def __repr__(self) -> str:
        return "All()"


@dataclass(frozen=True, repr=False)
class And(Node):
    items: tuple[Node, ...]

    def match(self, view: Any) -> bool:
        return all(item.match(view) for item in self.items)

    def children(self) -> Sequence[Node]:
        return self.items

    def __repr__(self) -> str:
        return f"And({', '.join(map(repr, self.items))})"


@dataclass(frozen=True, repr=False)
class Or(Node):
    items: tuple[Node, ...]

    def match(self, view: Any) -> bool:
        return any(item.match(view) for item in self.items)

    def children(self) -> Sequence[Node]:
        return self.items

    def __repr__(self) -> str:
        return f"Or({', '.join(map(repr, self.items))})"


@dataclass(frozen=True, repr=False)
class Not(Node):
    item: Node

    def match(self, view: Any) -> bool:
        return not self.item.match(view)

    def children(self) -> Sequence[Node]:
        return (self.item,)

    def __repr__(self) -> str:
        return f"Not({self.item!r})"


@dataclass(frozen=True, repr=False)
class TagTerm(Node):
    """The photo has a tag whose English or Chinese name matches.

    ``tree``: the tag or any of its descendants (``tag:animal/``). ``score``: the photo's score
    for that tag is in the range; a tag without a score (manual, imported) counts as 1.0.

    ``tag_ids`` / ``rows`` / ``drive`` are filled in by
    :func:`phototag.query.tags.resolve_tag_terms` (what :func:`phototag.query.search` does
    before compiling): the ids of the tags the term names (descendants included), about how many
    photo_tags rows they have, and whether the term may drive its AND group (False: every photo
    is probed, in result order, when the first page is dense). The SQL face then needs no name
    lookup; unresolved, it looks the names up in SQL. None of them takes part in equality or the
    repr.
    """

    matcher: Matcher
    tree: bool = False
    score: NumberRange | None = None
    tag_ids: frozenset[int] | None = field(default=None, compare=False, kw_only=True)
    rows: int | None = field(default=None, compare=False, kw_only=True)
    drive: bool = field(default=True, compare=False, kw_only=True)

    def resolved(self, tag_ids: frozenset[int], rows: int | None, *, drive: bool = True) -> "TagTerm":
        return replace(self, tag_ids=frozenset(tag_ids), rows=rows, drive=drive)

    def match(self, view: Any) -> bool:
        for tag in view_get(view, "tags", ()) or ():
            name, name_zh, ancestors, score, _source = tag[:5]
            if self.score is not None and not self.score.test(1.0 if score is None else score):
                continue
            names = [(name, name_zh)]
            if self.tree:
                names.extend(ancestors or ())
            if any(self.matcher.test(n) or self.matcher.test(z) for n, z in names):
                return True
        return False

    def __repr__(self) -> str:
        extra = ", tree" if self.tree else ""
        if self.score is not None:
            extra += f", score={self.score!r}"
        return f"Tag({self.matcher!r}{extra})"


#: Photo string attributes a ColumnTerm can read, with their Python getters.
#: ``camera`` is "make model" when both are known.
STRING_ATTRS: dict[str, Callable[[Any], str | None]] = {
    "path": lambda v: view_get(v, "path"),
    "camera_make": lambda v: view_get(v, "camera_make"),
    "camera_model": lambda v: view_get(v, "camera_model"),
    "camera": lambda v: (
        f"{view_get(v, 'camera_make')} {view_get(v, 'camera_model')}"
        if view_get(v, "camera_make") is not None and view_get(v, "camera_model") is not None
        else None
    ),
    "lens": lambda v: view_get(v, "lens"),
    "format": lambda v: view_get(v, "format"),
}


@dataclass(frozen=True, repr=False)
class ColumnTerm(Node):
    """One of the photo's string attributes (see :data:`STRING_ATTRS`) matches."""

    attrs: tuple[str, ...]
    matcher: Matcher

    def match(self, view: Any) -> bool:
        return any(self.matcher.test(STRING_ATTRS[a](view)) for a in self.attrs)

    def __repr__(self) -> str:
        return f"Field({'|'.join(self.attrs)}, {self.matcher!r})"


@dataclass(frozen=True, repr=False)
class NumberTerm(Node):
    """A numeric photo column (iso, width, height, size) is in an inclusive range."""

    attr: str
    range: NumberRange

    def match(self, view: Any) -> bool:
        return self.range.test(view_get(view, self.attr))

    def __repr__(self) -> str:
        return f"Number({self.attr}, {self.range!r})"


@dataclass(frozen=True, repr=False)
class DateTerm(Node):
    """A datetime photo column is in ``[start, end)``; ``None`` is an open end.

    The bounds are naive datetimes in the column's own convention (``taken_at``: the photo's
    local wall time; ``added_at``: UTC), already converted by the parser.
    """

    attr: str
    start: dt.datetime | None
    end: dt.datetime | None

    def match(self, view: Any) -> bool:
        value = view_get(view, self.attr)
        if value is None:
            return False
        if self.start is not None and value < self.start:
            return False
        if self.end is not None and value >= self.end:
            return False
        return True

    def __repr__(self) -> str:
        s = self.start.isoformat() if self.start else ""
        e = self.end.isoformat() if self.end else ""
        return f"Date({self.attr}, {s}..{e})"


@dataclass(frozen=True, repr=False)
class SourceTerm(Node):
    """The photo has at least one tag from this source (model, manual, imported, plugin)."""

    source: str

    def match(self, view: Any) -> bool:
        return any(tag[4] == self.source for tag in view_get(view, "tags", ()) or ())

    def __repr__(self) -> str:
        return f"Source({self.source!r})"


@dataclass(frozen=True, repr=False)
class ModelTerm(Node):
    """The photo has a tag given by a model run whose model name or model id matches."""

    matcher: Matcher

    def match(self, view: Any) -> bool:
        return any(
            self.matcher.test(name) or self.matcher.test(model_id)
            for name, model_id in view_get(view, "models", ()) or ()
        )

    def __repr__(self) -> str:
        return f"Model({self.matcher!r})"


@dataclass(frozen=True, repr=False)
class CaptionTerm(Node):
    """One of the photo's captions matches."""

    matcher: Matcher

    def match(self, view: Any) -> bool:
        return any(self.matcher.test(text) for text in view_get(view, "captions", ()) or ())

    def __repr__(self) -> str:
        return f"Caption({self.matcher!r})"


@dataclass(frozen=True, repr=False)
class UntaggedTerm(Node):
    """``untagged=True``: the photo has no tag at all; ``False``: it has at least one."""

    untagged: bool

    def match(self, view: Any) -> bool:
        has_tags = bool(view_get(view, "tags", ()) or ())
        return has_tags != self.untagged

    def __repr__(self) -> str:
        return f"Untagged({self.untagged})"


@dataclass(frozen=True, repr=False)
class StatusTerm(Node):
    """The photo's status is this one (``any``: every status).

    ``implicit`` marks the ``status:ok`` the parser adds to every OR group that names no status.
    """

    status: str
    implicit: bool = False

    def match(self, view: Any) -> bool:
        return self.status == "any" or view_get(view, "status") == self.status

    def __repr__(self) -> str:
        return f"Status({self.status!r}{', implicit' if self.implicit else ''})"


@dataclass(frozen=True, repr=False)
class RankedTerm(Node):
    """A term answered by a pluggable resolver (FAISS, text embeddings) as a ranked id list.

    Before it can be compiled or matched it must be *resolved*: :meth:`Query.resolve` calls the
    resolver and returns a query whose ranked terms carry ``hits`` (photo id → score, in rank
    order). A photo matches when it is among the hits.
    """

    kind = ""  # resolver name: "similar" | "text"
    hits: Mapping[int, float] | None = field(default=None, compare=False, kw_only=True)

    @property
    def argument(self) -> str:
        raise NotImplementedError

    def require_hits(self) -> Mapping[int, float]:
        if self.hits is None:
            raise QueryError(
                f"the term {self.describe()} needs the {self.kind!r} resolver, which is not "
                f"available here (is the search index built?)"
            )
        return self.hits

    def describe(self) -> str:
        raise NotImplementedError

    def match(self, view: Any) -> bool:
        return view_get(view, "id") in self.require_hits()

    def with_hits(self, hits: Sequence[tuple[int, float]]) -> "RankedTerm":
        ranked: dict[int, float] = {}
        for photo_id, score in hits:
            ranked.setdefault(int(photo_id), float(score))
        return replace(self, hits=ranked)


@dataclass(frozen=True, repr=False)
class SimilarTerm(RankedTerm):
    """``similar:PATH``: photos that look like the photo at PATH."""

    kind = "similar"
    path: str = ""

    @property
    def argument(self) -> str:
        return self.path

    def describe(self) -> str:
        return f"similar:{self.path}"

    def __repr__(self) -> str:
        return f"Similar({self.path!r})"


@dataclass(frozen=True, repr=False)
class TextTerm(RankedTerm):
    """``~"plain language"``: photos whose embedding is close to the text's."""

    kind = "text"
    text: str = ""

    @property
    def argument(self) -> str:
        return self.text

    def describe(self) -> str:
        return f'~"{self.text}"'

    def __repr__(self) -> str:
        return f"Text({self.text!r})"


def transform(node: Node, fn: Callable[[Node], Node | None]) -> Node:
    """Rebuild ``node`` bottom-up, replacing each node for which ``fn`` returns a new one."""
    if isinstance(node, (And, Or)):
        node = replace(node, items=tuple(transform(i, fn) for i in node.items))
    elif isinstance(node, Not):
        node = replace(node, item=transform(node.item, fn))
    new = fn(node)
    return node if new is None else new
