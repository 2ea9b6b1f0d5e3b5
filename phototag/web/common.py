"""What every page of ``phototag serve`` shares: the templates, the app's library, the CSRF token.

The modules that add pages (search, photo, api, review, status) each define ``routes`` and use
these helpers; none of them opens a library or checks a token on its own."""

from __future__ import annotations

import contextlib
import hmac
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from phototag.display import printable

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from phototag.library import Library

HERE = Path(__file__).resolve().parent

#: the pages' templates (phototag/web/templates), HTML autoescaped
templates = Jinja2Templates(directory=str(HERE / "templates"))


def tag_query(name: str) -> str:
    """The query that finds the photos tagged ``name`` (quoted when it is more than one plain word)."""
    if re.fullmatch(r"[\w.-]+", name) and not name.startswith("-"):
        return name
    return f"'{name}'" if '"' in name else f'"{name}"'


templates.env.globals["tag_query"] = tag_query
templates.env.filters["printable"] = printable
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# a safety net: a lone surrogate anywhere in a page (a name from a file system) cannot be sent as UTF-8


def _without_lone_surrogates(value: Any) -> Any:
    if not isinstance(value, str) or not _LONE_SURROGATE.search(value):
        return value  # (Markup, a macro's output, stays Markup)
    return type(value)(_LONE_SURROGATE.sub(lambda m: printable(m.group()), value))


templates.env.finalize = _without_lone_surrogates

#: the form field (and header, for scripts) that carries the CSRF token of a POST
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"

#: the navigation bar of base.html: (label, path)
NAV = [("Search", "/"), ("Tags", "/tags"), ("Review", "/review"), ("Status", "/status")]


def get_library(request: Request) -> Library:
    """The app's library (opened once, when the app was made, from the home ``serve`` runs for)."""
    return request.app.state.library


@contextlib.contextmanager
def writing(request: Request) -> Iterator[Session]:
    """One write transaction of the app's library: the app's writes run one at a time (the
    library's tag-id cache is not shared across threads) and take SQLite's write lock first."""
    lib = get_library(request)
    with request.app.state.write_lock, lib.session(immediate=True) as session:
        yield session


def csrf_token(request: Request) -> str:
    """The token every POST form of this app carries (a per-app secret: a page of another site
    cannot read it, so it cannot make the browser post a change)."""
    return request.app.state.csrf_secret


def require_csrf(request: Request, form: Any) -> None:
    """Refuse (403) a POST whose form field ``csrf`` (or header ``X-CSRF-Token``) is not the app's token."""
    given = (form.get(CSRF_FIELD) if form is not None else None) or request.headers.get(CSRF_HEADER) or ""
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), csrf_token(request).encode()):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")


def leave_note(request: Request, message: str) -> str:
    """Keep ``message`` for the page a redirect leads to; the key to put in its address. (The text
    itself never travels in an address: a link cannot make a page say what it likes.)"""
    notes = request.app.state.notes
    key = secrets.token_urlsafe(9)
    notes[key] = message
    while len(notes) > 200:  # notes nobody came back for
        notes.pop(next(iter(notes)))
    return key


def take_note(request: Request, key: str | None) -> str | None:
    """The message :func:`leave_note` kept under ``key`` (once), or None."""
    return request.app.state.notes.pop(key, None) if key else None


def render(request: Request, name: str, /, status_code: int = 200, **context: Any) -> Response:
    """The template ``name`` with ``context``, plus what base.html needs (csrf, nav, the current path)."""
    context.setdefault("csrf", csrf_token(request))
    context.setdefault("nav", NAV)
    context.setdefault("current", request.url.path)
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def photo_or_404(session: Session, photo_id: int):
    """The library's photo ``photo_id`` (a 404 when there is none)."""
    from phototag.db.models import Photo

    photo = session.get(Photo, photo_id)
    if photo is None:
        raise HTTPException(404, f"the library has no photo with id {photo_id}")
    return photo
