"""The field registry: ``name:`` → how its value is read and which node it becomes.

A field is a factory ``factory(value: FieldValue) -> Node``. Plugins add fields with
:func:`register_field`; their nodes must have a Python face (``match``) and an SQL face (either a
``clause()`` method returning an SQLAlchemy boolean over ``Photo``, or a function registered
with ``phototag.query.compile.compile_node.register``).

Sort keys (``taken-``, ``path+``) live here too: :func:`register_sort`.

Importing this module does not touch the database.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

from phototag.query.errors import QueryError
from phototag.query.matchers import Contains, Exact, Fold, Matcher, Prefix, Regex
from phototag.query.nodes import (
    CaptionTerm,
    ColumnTerm,
    DateTerm,
    ModelTerm,
    Node,
    NumberTerm,
    SimilarTerm,
    SourceTerm,
    StatusTerm,
    TagTerm,
    UntaggedTerm,
)
from phototag.query.values import (
    looks_like_range,
    parse_bool,
    parse_date_range,
    parse_number_range,
)

#: How the value was written: ``field:v`` (default), ``field:=v`` (exact), ``field:=~v``
#: (exact, any case), ``field::v`` (regular expression).
MODES = ("default", "exact", "fold", "regex")


@dataclass(frozen=True)
class FieldValue:
    field: str  #: the field name as registered (lower case)
    value: str  #: the text after the prefix
    mode: str  #: one of MODES
    now: dt.datetime  #: the current time, naive local (for relative dates)

    def matcher(self, default: Callable[[str], Matcher] = Contains) -> Matcher:
        """The string matcher the mode asks for; ``default`` for a plain ``field:value``."""
        if self.mode == "regex":
            return Regex(self.value)
        if not self.value:
            raise QueryError(f"{self.field}: needs a value")
        if self.mode == "exact":
            return Exact(self.value)
        if self.mode == "fold":
            return Fold(self.value)
        return default(self.value)

    def plain(self) -> str:
        """The value of a field that takes no ``=``/``:`` modes."""
        if self.mode == "regex":
            raise QueryError(f"{self.field}: does not take a regular expression")
        return self.value


FieldFactory = Callable[[FieldValue], Node]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    factory: FieldFactory
    help: str = ""


_FIELDS: dict[str, FieldSpec] = {}


def register_field(
    name: "str | FieldSpec", factory: FieldFactory | None = None, *, help: str = "", replace: bool = False
) -> None:
    """Make ``name:value`` available in queries (plugins call this, or return FieldSpecs from
    the ``register_query_fields`` hook).

    ``factory`` receives a :class:`FieldValue` and returns a node (or raises QueryError).
    Instead of ``name, factory`` a :class:`FieldSpec` (or any object with ``name``, ``factory``
    and optionally ``help``) may be passed. A name that is already taken is a ValueError unless
    ``replace``.
    """
    if not isinstance(name, str):
        spec = name
        name, factory, help = spec.name, spec.factory, getattr(spec, "help", "") or help
    if factory is None or not callable(factory):
        raise ValueError(f"query field {name!r} needs a factory (FieldValue -> Node)")
    key = name.lower()
    if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
        raise ValueError(f"a query field name is letters, digits and _: {name!r}")
    if key in _FIELDS and not replace:
        raise ValueError(f"query field {name!r} is already registered")
    _FIELDS[key] = FieldSpec(key, factory, help)


def unregister_field(name: str) -> None:
    _FIELDS.pop(name.lower(), None)


def get_field(name: str) -> FieldSpec:
    key = name.lower()
    try:
        return _FIELDS[key]
    except KeyError:
        pass
    close = difflib.get_close_matches(key, list(_FIELDS) + list(_SORTS), n=1, cutoff=0.6)
    if close and close[0] in _FIELDS:
        raise QueryError(f"unknown field {name!r} — did you mean {close[0]!r}?")
    raise QueryError(
        f"unknown field {name!r} (known fields: {', '.join(sorted(_FIELDS))}; "
        f"to search for a tag containing ':', write it as {name}\\:…)"
    )


def field_specs() -> list[FieldSpec]:
    return sorted(_FIELDS.values(), key=lambda s: s.name)


# ---- sort keys ------------------------------------------------------------------------------

#: sort name → function returning the SQLAlchemy column expressions to order by
_SORTS: dict[str, Callable[[], list[Any]]] = {}


def register_sort(name: str, columns: Callable[[], list[Any]], *, replace: bool = False) -> None:
    """Make ``name+`` / ``name-`` sort tokens; ``columns()`` returns SQL expressions on Photo."""
    key = name.lower()
    if key in _SORTS and not replace:
        raise ValueError(f"sort key {name!r} is already registered")
    _SORTS[key] = columns


def sort_columns(name: str) -> list[Any]:
    return _SORTS[name]()


def sort_names() -> list[str]:
    return sorted(_SORTS)


def is_sort_name(name: str) -> bool:
    return name.lower() in _SORTS


# ---- built-in fields ------------------------------------------------------------------------

_SCORE_SUFFIX = re.compile(r"^(?P<name>.*)@(?P<score>[^@]*)$", re.S)
#: what after an '@' was meant as a score but is not one (0,8  0.8-0.9  .8...): an error, not a tag name
_NUMBERISH = re.compile(r"[\d.,\s+-]*\d[\d.,\s+-]*")


def tag_field(v: FieldValue) -> Node:
    """``tag:dog``, ``tag:animal/`` (with descendants), ``tag:dog@0.8..`` (score range)."""
    text = v.value
    score = None
    m = _SCORE_SUFFIX.match(text)
    if m and looks_like_range(m["score"]):
        text = m["name"]
        score = parse_number_range(m["score"], field=f"{v.field} score", integer=False)
        if score.low is not None and score.low == score.high:
            score = type(score)(score.low, None)  # dog@0.8 = at least 0.8
        if any(end is not None and end > 1 for end in (score.low, score.high)):
            raise QueryError(f"{v.field} score: scores run from 0 to 1, got {m['score']!r} in {v.value!r} "
                             f"(e.g. {m['name']}@0.8..)")
    elif m and _NUMBERISH.fullmatch(m["score"]):
        hint = " (a score uses a decimal point: 0.8, not 0,8)" if "," in m["score"] else ""
        raise QueryError(f"{v.field} score: expects a number or a range like 0.8.. or 0.5..0.9 after '@', "
                         f"got {m['score']!r} in {v.value!r}{hint}")
    tree = False
    if text.endswith("/") and len(text) > 1:
        text, tree = text[:-1], True
    if len(text) >= 2 and text[0] == text[-1] == '"':  # tag:"tabby cat"/ and "tabby cat"@0.8 as argv words
        text = text[1:-1]
    value = FieldValue(v.field, text, v.mode, v.now)
    return TagTerm(value.matcher(default=Fold), tree=tree, score=score)


def _string_field(attrs: tuple[str, ...]) -> FieldFactory:
    def factory(v: FieldValue) -> Node:
        return ColumnTerm(attrs, v.matcher())

    return factory


_GLOB_CHARS = re.compile(r"[*?\[]")


def _glob_to_regex(glob: str) -> str:
    """``*`` = any characters but ``/``, ``**`` = anything, ``?`` = one character, ``[..]``."""
    out, i = [], 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = glob.find("]", i + 2)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = glob[i + 1 : j]
                negated = body.startswith(("!", "^"))
                body = body[1:] if negated else body
                body = body.replace("\\", "\\\\")
                out.append(f"[^/{body}]" if negated else f"[{body}]")  # never matches "/"
                i = j + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def path_field(v: FieldValue) -> Node:
    """``path:trip`` (substring, any case), ``path:/photos/2021`` or ``path:~/Pictures``
    (that folder/file and everything below), ``path:*.heic`` / ``path:/photos/20*``
    (glob on whole path components), ``path:=…`` exact, ``path::…`` regex."""
    if v.mode != "default" or not v.value:
        return ColumnTerm(("path",), v.matcher())
    text = v.value
    absolute = text.startswith("/") or text == "~" or text.startswith("~/")
    if absolute:
        text = os.path.expanduser(text)
    if _GLOB_CHARS.search(text):
        body = _glob_to_regex(text.rstrip("/") or "/")
        start = "^" if absolute else "(?:^|/)"
        return ColumnTerm(("path",), Regex(f"{start}{body}(?:/.*)?$"))
    if absolute:
        stripped = text.rstrip("/") or "/"
        return ColumnTerm(("path",), Prefix(stripped))
    return ColumnTerm(("path",), Contains(text))


def _number_field(attr: str) -> FieldFactory:
    def factory(v: FieldValue) -> Node:
        if v.mode not in ("default", "exact"):
            raise QueryError(f"{v.field}: expects a number or a range like 100..800")
        return NumberTerm(attr, parse_number_range(v.value, field=v.field))

    return factory


def _date_field(attr: str, *, stored_utc: bool) -> FieldFactory:
    def factory(v: FieldValue) -> Node:
        if v.mode not in ("default", "exact"):
            raise QueryError(f"{v.field}: expects a date or a range like 2019..2021")
        start, end = parse_date_range(v.value, v.now, field=v.field)
        if stored_utc:
            start, end = _local_to_utc(start), _local_to_utc(end)
        return DateTerm(attr, start, end)

    return factory


def _local_to_utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    except (OverflowError, ValueError, OSError):
        return value  # year 1 / 9999 edges: an hour either way does not matter


_SOURCES = ("model", "manual", "imported", "plugin")
_STATUSES = ("ok", "missing", "error", "any")


def _choice(v: FieldValue, choices: tuple[str, ...]) -> str:
    value = v.plain().lower()
    if value in choices:
        return value
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f" — did you mean {close[0]!r}?" if close else ""
    raise QueryError(f"{v.field}: expects one of {', '.join(choices)}, got {v.value!r}{hint}")


def source_field(v: FieldValue) -> Node:
    return SourceTerm(_choice(v, _SOURCES))


def status_field(v: FieldValue) -> Node:
    return StatusTerm(_choice(v, _STATUSES))


def model_field(v: FieldValue) -> Node:
    return ModelTerm(v.matcher(default=Fold))


def caption_field(v: FieldValue) -> Node:
    return CaptionTerm(v.matcher())


def untagged_field(v: FieldValue) -> Node:
    return UntaggedTerm(parse_bool(v.plain(), field=v.field))


def similar_field(v: FieldValue) -> Node:
    path = v.plain()
    if not path:
        raise QueryError("similar: needs the path of a photo, e.g. similar:~/Pictures/cat.jpg")
    return SimilarTerm(path=os.path.expanduser(path))


def _register_builtins() -> None:
    builtins: list[tuple[str, FieldFactory, str]] = [
        ("tag", tag_field, "tag by English or Chinese name; tag:animal/ with descendants; tag:dog@0.8.."),
        ("taken", _date_field("taken_at", stored_utc=False), "date taken: 2021, 2021-06, 2019..2021, -1m.."),
        ("added", _date_field("added_at", stored_utc=True), "date added to the library: -1w.., 2024-05"),
        ("camera", _string_field(("camera_make", "camera_model", "camera")), "camera make or model"),
        ("lens", _string_field(("lens",)), "lens"),
        ("format", _string_field(("format",)), "file format: jpeg, heif, png…"),
        ("path", path_field, "file path: substring, folder prefix (/…, ~/…) or glob"),
        ("iso", _number_field("iso"), "ISO speed: 800, 100..400"),
        ("width", _number_field("width"), "width in pixels: 4000.., ..1024"),
        ("height", _number_field("height"), "height in pixels"),
        ("size", _number_field("size"), "file size in bytes"),
        ("src", source_field, "has a tag from this source: model, manual, imported, plugin"),
        ("model", model_field, "tagged by this model (registry name or model id)"),
        ("caption", caption_field, "caption text contains"),
        ("untagged", untagged_field, "untagged:true = no tags at all"),
        ("status", status_field, "ok (default), missing, error, any"),
        ("similar", similar_field, "looks like the photo at this path (needs the search index)"),
    ]
    for name, factory, help_text in builtins:
        register_field(name, factory, help=help_text, replace=True)

    from phototag.db.models import Photo  # SQL expressions only; no connection

    sorts: dict[str, Callable[[], list[Any]]] = {
        "taken": lambda: [Photo.taken_at],
        "added": lambda: [Photo.added_at],
        "path": lambda: [Photo.path],
        "iso": lambda: [Photo.iso],
        "width": lambda: [Photo.width],
        "height": lambda: [Photo.height],
        "size": lambda: [Photo.size],
        "camera": lambda: [Photo.camera_make, Photo.camera_model],
        "lens": lambda: [Photo.lens],
        "format": lambda: [Photo.format],
        "tagged": lambda: [Photo.tagged_at],
        "id": lambda: [Photo.id],
    }
    for name, columns in sorts.items():
        register_sort(name, columns, replace=True)


_register_builtins()
