"""Query text → :class:`Query` (an AST plus sort keys). Pure: no database, no I/O.

Grammar (one term per shell word, as in beets)::

    query  := group ("," group)*          a lone "," (or a word ending in ",") separates OR groups
    group  := (term | sort)+              terms in a group are ANDed; an empty group is an error
    term   := ["^"] (field ":" value | "~" text | word)
    value  := ":" regex | "=~" text | "=" text | text
    sort   := sortkey ("+" | "-")         taken-  path+  (apply to the whole query)

A bare word is a tag (``dog`` = ``tag:dog``). Every OR group that names no ``status:`` gets
an implicit ``status:ok``.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
from dataclasses import dataclass, field, replace
from typing import Sequence

from phototag.query.errors import QueryError
from phototag.query.fields import FieldValue, get_field, is_sort_name
from phototag.query.nodes import (
    And,
    Node,
    Not,
    Or,
    RankedTerm,
    StatusTerm,
    TextTerm,
    transform,
)

_FIELD_RE = re.compile(r"^(?P<field>[A-Za-z][A-Za-z0-9_]*):(?P<rest>.*)$", re.S)
_SORT_RE = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_]*)(?P<dir>[+-])$")


@dataclass(frozen=True)
class SortKey:
    name: str
    descending: bool

    def __repr__(self) -> str:
        return f"{self.name}{'-' if self.descending else '+'}"


@dataclass(frozen=True, repr=False)
class Query:
    """A parsed query: ``expr`` (the filter, default status included) and ``sort``.

    * :meth:`match` — Python face; :meth:`where` / :meth:`order_by` — SQL face.
    * ``similar:`` and ``~text`` terms must be :meth:`resolve`\\ d before either face is used.
    """

    expr: Node
    sort: tuple[SortKey, ...] = ()
    text: str = field(default="", compare=False)

    def match(self, view: object) -> bool:
        return self.expr.match(view)

    def where(self):
        """SQLAlchemy boolean clause over ``Photo`` (bind parameters only)."""
        from phototag.query.compile import compile_node

        return compile_node(self.expr)

    def order_by(self) -> list:
        """SQLAlchemy ORDER BY expressions (the sort tokens, else path); ends with Photo.id."""
        from phototag.query.compile import order_clauses

        return order_clauses(self.sort)

    def statement(self):
        """``select(Photo.id)`` filtered and ordered."""
        from sqlalchemy import select

        from phototag.db.models import Photo

        return select(Photo.id).where(self.where()).order_by(*self.order_by())

    @property
    def ranked_terms(self) -> list[RankedTerm]:
        return [n for n in self.expr.walk() if isinstance(n, RankedTerm)]

    def resolve(self, session: object, resolvers: dict | None) -> "Query":
        """Answer every ``similar:``/``~text`` term with its resolver.

        A resolver is ``fn(session, argument) -> iterable of (photo_id, score)``, best first;
        ``argument`` is the path (``similar:PATH``) or the text (``~"text"``)."""
        resolvers = resolvers or {}
        answers: dict[tuple[str, str], list] = {}  # the same term twice asks once

        def answer(node: Node) -> Node | None:
            if isinstance(node, RankedTerm) and node.hits is None:
                fn = resolvers.get(node.kind)
                if fn is None:
                    node.require_hits()  # raises the QueryError
                key = (node.kind, node.argument)
                if key not in answers:
                    answers[key] = list(fn(session, node.argument))
                return node.with_hits(answers[key])
            return None

        return replace(self, expr=transform(self.expr, answer))

    def resolve_tags(self, session: object, *, first: int | None = None) -> "Query":
        """Look the tag terms' names up (ids, descendants, row estimates) so that the SQL face
        needs no name lookup and the rarest tag of an AND group drives. ``first``: only that
        many results will be read, in the default (path) order. Optional: an unresolved query
        compiles too, only slower. See phototag.query.tags."""
        from phototag.query.tags import resolve_tag_terms

        return replace(self, expr=resolve_tag_terms(self.expr, session, first=first))

    def __repr__(self) -> str:
        sort = f", sort=[{' '.join(map(repr, self.sort))}]" if self.sort else ""
        return f"Query({self.expr!r}{sort})"


def tokenize(source: str | Sequence[str]) -> list[str]:
    """A query string is split like a shell would (quotes group words; backslashes are kept
    for regular expressions); a list (the CLI's argv) is taken word by word."""
    if isinstance(source, str):
        lexer = shlex.shlex(source, posix=True)
        lexer.whitespace_split = True
        lexer.escape = ""  # keep "\" for regexes like path::\.heic$ and escapes like a\:b
        lexer.commenters = ""
        try:
            words = list(lexer)
        except ValueError as exc:
            raise QueryError(f"cannot split the query {source!r}: {exc} (unbalanced quote?)") from None
    else:
        words = list(source)
    for w in words:
        if not isinstance(w, str):
            raise TypeError(f"query words must be strings, got {w!r}")
        if "\x00" in w:
            # no file name, tag or caption holds it, and PostgreSQL text cannot: one answer on both databases
            raise QueryError(f"{w!r}: a query cannot contain the NUL character")
    return words


def parse(source: str | Sequence[str], *, now: dt.datetime | None = None) -> Query:
    """Parse a query string (or a list of words) into a :class:`Query`.

    ``now`` fixes the clock for relative dates (aware, or naive local time); default: now.
    """
    local_now = _local_now(now)
    words = tokenize(source)
    groups: list[list[Node]] = [[]]
    commas: list[int] = []  # the word (0-based) that ended each group but the last
    used: list[bool] = [False]  # the group has a word (a term or a sort word)
    sort: list[SortKey] = []
    for i, word in enumerate(words):
        ends_group = False
        if word == ",":
            groups.append([])
            commas.append(i)
            used.append(False)
            continue
        if len(word) > 1 and word.endswith(",") and not word.endswith("\\,"):
            word, ends_group = word[:-1], True
        m = _SORT_RE.match(word)
        if m and is_sort_name(m["name"]):
            sort.append(SortKey(m["name"].lower(), m["dir"] == "-"))
        else:
            groups[-1].append(parse_term(word, local_now))
        used[-1] = True
        if ends_group:
            groups.append([])
            commas.append(i)
            used.append(False)
    _check_groups(words, commas, used)

    ands: list[Node] = []
    for group in groups:
        if not group:
            continue
        if not any(isinstance(n, StatusTerm) for term in group for n in term.walk()):
            group = group + [StatusTerm("ok", implicit=True)]
        ands.append(group[0] if len(group) == 1 else And(tuple(group)))
    if not ands:
        expr: Node = StatusTerm("ok", implicit=True)
    elif len(ands) == 1:
        expr = ands[0]
    else:
        expr = Or(tuple(ands))
    text = source if isinstance(source, str) else shlex.join(source)
    return Query(expr, tuple(sort), text)


def _check_groups(words: list[str], commas: list[int], used: list[bool]) -> None:
    """Every OR group has a term: ``dog , cat`` is fine, a lone ``,`` (which would match every
    photo), ``, dog``, ``dog ,`` and ``dog , , cat`` are mistakes."""
    for g, has_words in enumerate(used):
        if has_words or not commas:
            continue
        if g == 0:
            at, what = commas[0], "nothing before it"
        elif g == len(commas):
            at, what = commas[-1], "nothing after it"
        else:
            at, what = commas[g], f"nothing between it and the ',' of word {commas[g - 1] + 1}"
        raise QueryError(
            f"empty OR group: the ',' of word {at + 1} ({words[at]!r}) has {what}; "
            "a ',' separates two groups of terms, e.g. dog , cat"
        )


def parse_term(word: str, now: dt.datetime) -> Node:
    """One word: ``[^](field:value | ~text | tag)``."""
    negate = False
    whole = word
    if word.startswith("^"):
        negate, word = True, word[1:]
        if not word:
            raise QueryError("'^' must be followed by a term, e.g. ^dog")
    node = _positive_term(word, now, whole, len(whole) - len(word))
    if negate:
        if any(isinstance(n, RankedTerm) for n in node.walk()):
            raise QueryError(f"{word!r} ranks photos and cannot be negated with '^'")
        return Not(node)
    return node


def _positive_term(word: str, now: dt.datetime, whole: str | None = None, offset: int = 0) -> Node:
    """``whole``: the word as written (with its ``^``), ``offset``: where ``word`` starts in it
    (for the position in error messages)."""
    whole = word if whole is None else whole
    if word.startswith("~"):
        rest = word[1:]
        text = _unquote(rest.strip(), whole, offset + 1 + len(rest) - len(rest.lstrip())).strip()
        if not text:
            raise QueryError('"~" must be followed by a description, e.g. ~"a dog on a beach"')
        return TextTerm(text=text)
    m = _FIELD_RE.match(word)
    if m:
        spec = get_field(m["field"])
        at = offset + m.start("rest")
        rest = _unquote(m["rest"], whole, at)
        if rest != m["rest"]:
            at += 1
        value, mode = _split_mode(rest)
        value = _unquote(value, whole, at + len(rest) - len(value))
        return spec.factory(FieldValue(spec.name, value, mode, now))
    # a bare word is a tag; "\:" "\^" "\~" "\," escape the characters the grammar uses
    text = re.sub(r"\\([:^~,])", r"\1", _unquote(word, whole, offset))
    value, mode = _split_mode(text) if text.startswith(("=", ":")) else (text, "default")
    return get_field("tag").factory(FieldValue("tag", value, mode, now))


def _unquote(text: str, word: str | None = None, at: int = 0) -> str:
    """Drop one pair of surrounding double quotes: a shell that was given '~"a dog"' or
    'tag:"tabby cat"' hands them over. A value that opens a quote must close it: ``word`` and
    ``at`` (where ``text`` starts in it) name the place in the error."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    if text.startswith('"') and '"' not in text[1:]:
        shown = word if word is not None else text
        raise QueryError(
            f"unbalanced quote: the \" at character {at + 1} of {shown!r} is never closed "
            f"(close it: {shown + chr(34)!r})"
        )
    return text


def _split_mode(rest: str) -> tuple[str, str]:
    if rest.startswith(":"):
        return rest[1:], "regex"
    if rest.startswith("=~"):
        return rest[2:], "fold"
    if rest.startswith("="):
        return rest[1:], "exact"
    return rest, "default"


def _local_now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now()
    if now.tzinfo is not None:
        return now.astimezone().replace(tzinfo=None)
    return now


__all__ = ["Query", "SortKey", "parse", "parse_term", "tokenize"]
