"""``necroui serve``: the dashboard in a browser (textual-serve), attached to a dispatcher.

Each browser session runs ``necroui attach URL`` in its own process, drawn in the page by
textual-serve. The server binds to 127.0.0.1 by default and asks for the dispatcher's admin
token: ``http://127.0.0.1:8000/?token=…`` once (it is then kept in an HTTP-only cookie); the
page and its websocket answer 401 without it.
"""

from __future__ import annotations

import hmac
import shlex
import sys
from pathlib import Path
from typing import Any

from necrocode.dispatcher.errors import DispatcherError

COOKIE = "necroui_token"


class ServeError(DispatcherError):
    """``necroui serve`` cannot start (textual-serve missing, bad options)."""


def attach_command(url: str, token_file: str | Path, *, read_only: bool = False) -> str:
    """The shell command each browser session runs (arguments quoted: no interpolation)."""
    argv = [sys.executable, "-c", "from necroui.cli import main; main()", "attach", url,
            "--token-file", str(token_file)]
    if read_only:
        argv.append("--read-only")
    return shlex.join(argv)


def token_server(command: str, token: str, *, host: str, port: int, title: str) -> Any:
    """A textual-serve Server for ``command`` whose page and websocket need ``token``."""
    try:
        from aiohttp import web
        from textual_serve.server import Server
    except ImportError as exc:
        raise ServeError(f"necroui serve needs textual-serve ({exc}); install it with "
                         "pip install 'necrocode-dispatcher[serve]'") from None

    def allowed(request: Any) -> bool:
        given = request.query.get("token") or request.cookies.get(COOKIE) or ""
        return hmac.compare_digest(given.encode(), token.encode())

    class TokenServer(Server):  # type: ignore[misc]
        """textual-serve's Server behind the admin token."""

        async def handle_index(self, request: Any) -> Any:
            if not allowed(request):
                raise web.HTTPUnauthorized(
                    text="necroui serve: open this page with ?token=<the dispatcher's admin "
                         "token> (<state_dir>/admin.token)")
            response = await super().handle_index(request)
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
            return response

        async def handle_websocket(self, request: Any) -> Any:
            if not allowed(request):
                raise web.HTTPUnauthorized(text="admin token missing or wrong")
            return await super().handle_websocket(request)

    return TokenServer(command, host=host, port=port, title=title)


def run_serve(url: str, token_file: str | Path, token: str, *, host: str = "127.0.0.1",
              port: int = 8000, read_only: bool = False) -> int:
    """Serve the dashboard of the dispatcher at ``url`` until interrupted; exit code."""
    server = token_server(attach_command(url, token_file, read_only=read_only), token,
                          host=host, port=port, title=f"necroui {url}")
    print(f"necroui serve: http://{host}:{port}/?token=<admin token> shows the dashboard of "
          f"{url}", flush=True)
    server.serve()
    return 0
