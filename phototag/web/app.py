"""The ``phototag serve`` application: its routes, its token check and its security headers.

:func:`create_app` makes one app over one library home. The pages live in their own modules
(``search``, ``photo``, ``api``, and ``review``/``status``), each with a ``routes`` list."""

from __future__ import annotations

import contextlib
import hmac
import html
import importlib
import secrets
import threading
from collections.abc import Iterable
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from phototag.config import Settings
from phototag.web.common import HERE, render

#: the cookie a browser keeps the token in, once it came with ``?token=``
TOKEN_COOKIE = "phototag_token"

#: the names a browser uses for this machine: a page of another site that a DNS trick sends to
#: 127.0.0.1 has its own name in the Host header, and is refused (DNS rebinding)
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})

#: every response says: no sniffing, no framing, only this app's own scripts, styles and images
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy",
     (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
      b"form-action 'self'; base-uri 'none'; frame-ancestors 'none'")),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

#: the page modules whose ``routes`` are mounted; those of the second list may not be there yet
_PAGES = ["phototag.web.search", "phototag.web.photo", "phototag.web.api"]
_OPTIONAL_PAGES = ["phototag.web.review", "phototag.web.status"]


def is_local_host(host: str) -> bool:
    """Whether ``host`` (an address to bind, or a Host header without its port) is this machine only."""
    return host.lower() in LOCAL_HOSTS or host.startswith("127.")


def host_name(header: str) -> str:
    """The name of a Host header, without its port: ``[::1]:8765`` → ``[::1]``, ``a:80`` → ``a``."""
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0]


class Guard:
    """The ASGI middleware in front of every route: the token (when the app has one), the Host
    check (when it has none: it listens on localhost only) and the security headers."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._check(request)
        if refusal is not None:
            await self._secured(refusal, scope, receive, send)
            return

        async def send_secured(message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_secured)

    async def _secured(self, response: Response, scope: Scope, receive: Receive, send: Send) -> None:
        response.raw_headers.extend(SECURITY_HEADERS)
        await response(scope, receive, send)

    def _check(self, request: Request) -> Response | None:
        """None to let the request through; else the response that refuses it (or, for a
        ``?token=`` link, the redirect that stores the token in a cookie)."""
        if self.token is None:
            host = host_name(request.headers.get("host") or "")
            if not is_local_host(host):
                return PlainTextResponse(f"refused: this phototag serve answers only to localhost, not {host!r}",
                                         status_code=403)
            return None
        if self._matches(self._bearer(request)) or self._matches(request.cookies.get(TOKEN_COOKIE)):
            return None
        given = request.query_params.get("token")
        if self._matches(given):
            if request.method not in ("GET", "HEAD"):
                return None
            # the token leaves the address bar (and the history) and lives in a cookie from now on. A
            # page that moves on by itself, not a redirect: a redirect that a link on another site
            # started is cross-site, and the browser would not send the SameSite=Strict cookie with it
            rest = urlencode([(k, v) for k, v in parse_qsl(request.url.query, keep_blank_values=True) if k != "token"])
            target = html.escape(request.url.path + (f"?{rest}" if rest else ""))
            response = HTMLResponse(
                f'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={target}">'
                f'<title>phototag</title><p><a href="{target}">Continue to phototag</a></p>',
                headers={"cache-control": "no-store"},
            )
            cookie = SimpleCookie()
            cookie[TOKEN_COOKIE] = given
            morsel = cookie[TOKEN_COOKIE]
            morsel["httponly"] = True
            morsel["samesite"] = "Strict"
            morsel["path"] = "/"
            response.headers.append("set-cookie", morsel.OutputString())
            return response
        return PlainTextResponse(
            "refused: this phototag serve listens beyond localhost and needs its token "
            "(open the address it printed, with ?token=…, or send 'Authorization: Bearer TOKEN')",
            status_code=403,
        )

    @staticmethod
    def _bearer(request: Request) -> str | None:
        header = request.headers.get("authorization") or ""
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None

    def _matches(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())  # type: ignore[union-attr]


def _page_routes(optional: Iterable[str] = _OPTIONAL_PAGES) -> list:
    routes: list = []
    for name in _PAGES:
        routes.extend(importlib.import_module(name).routes)
    for name in optional:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if exc.name != name:  # the module is there but something it imports is not: a bug
                raise
            continue
        routes.extend(module.routes)
    return routes


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    return render(request, "error.html", status_code=exc.status_code, status=exc.status_code, message=exc.detail)


def create_app(settings: Settings, *, token: str | None = None, library=None) -> Starlette:
    """The web app over the library of ``settings``. ``token``: what every request must carry
    (None: none, and only requests addressed to localhost are answered). ``library``: an open
    :class:`~phototag.library.Library` to use instead of opening the home's (closed by its owner)."""
    from phototag.library import Library

    routes = [*_page_routes(), Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")]
    owned = library is None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        if owned:
            app.state.library.close()

    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error}, lifespan=lifespan)
    app.state.settings = settings
    app.state.library = Library(settings) if owned else library
    app.state.csrf_secret = secrets.token_urlsafe(32)
    app.state.write_lock = threading.Lock()
    app.state.notes = {}  # the messages a redirect leads to (common.leave_note)
    app.state.token = token
    app.add_middleware(Guard, token=token)
    return app
