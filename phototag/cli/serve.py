"""phototag serve: the local web app to look at the library and correct its tags (docs/serve.md)."""

from __future__ import annotations

import contextlib
import socket

import typer

from phototag.cli.common import console, fail, out


def register(app: typer.Typer) -> None:
    app.command()(serve)


def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="Address to listen on (default: serve.host, 127.0.0.1). "
                                    "Any other than localhost needs the token.", show_default=False),
    port: int | None = typer.Option(None, "--port", "-p", min=0, max=65535,
                                    help="Port (default: serve.port, 8765; 0 = any free port).", show_default=False),
    open_browser: bool = typer.Option(False, "--open", help="Open the app in a web browser."),
) -> None:
    """Browse, search and correct the library's tags in a web browser.

    Listens on 127.0.0.1 unless --host says otherwise. Beyond localhost every request must carry a
    token: serve.token, or a new one printed at start (open the printed address once; the browser
    keeps it in a cookie; scripts send 'Authorization: Bearer TOKEN'). Stop with Ctrl-C.
    """
    import secrets

    import uvicorn

    from phototag.config import get_settings
    from phototag.web.app import create_app, is_local_host

    settings = get_settings()
    host = host or settings.get("serve.host") or "127.0.0.1"
    port = settings.get("serve.port") if port is None else port
    token = None
    if not is_local_host(host):
        token = settings.get("serve.token") or secrets.token_urlsafe(24)
    sock = _listen(host, port)
    try:
        app = create_app(settings, token=token)
    except BaseException:
        sock.close()
        raise
    shown_host = host if host not in ("0.0.0.0", "::") else socket.gethostname()
    shown_host = f"[{shown_host}]" if ":" in shown_host else shown_host
    url = f"http://{shown_host}:{sock.getsockname()[1]}/"
    out.print(f"phototag serve: {url}" + (f"?token={token}" if token else ""), soft_wrap=True, highlight=False)
    if token and not settings.get("serve.token"):
        console.print("a new token each start: set serve.token (phototag config set serve.token …) to keep one",
                      soft_wrap=True, highlight=False)
    if open_browser:
        import webbrowser

        webbrowser.open(url + (f"?token={token}" if token else ""))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    _server_class()(config).run(sockets=[sock])


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, except that Ctrl-C or SIGTERM (a service manager's stop) ends ``serve``
        with exit 0 once the open requests are answered, as ``phototag watch`` does (uvicorn would
        raise the signal again after its shutdown, and SIGTERM would end the process with 143)."""

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                self._captured_signals.clear()

    return Server


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; a port that is taken or an address that is not this
    machine's is the user's one-line error (exit 2)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        fail(f"--host {host}: not an address of this machine ({exc.strerror})")
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    sock.set_inheritable(True)
    return sock
