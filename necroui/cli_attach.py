"""``necroui attach URL``: the dashboard of a dispatcher that runs elsewhere (B3)."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_common import CliState, fail, pass_state


@click.command(epilog="""\b
Examples:
  necroui attach http://127.0.0.1:8765                      this machine's dispatcher
  necroui attach http://10.0.0.5:8765 --token-file ~/ops/admin.token
  necroui --read-only attach http://127.0.0.1:8765          a viewer: no verbs
""")
@click.argument("url")
@click.option("--token-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="File holding the dispatcher's admin token. Default: the admin.token of "
                   "the configured state dir when URL is its dispatcher.")
@click.option("--read-only", is_flag=True, help="No key that changes state.")
@pass_state
def attach(state: CliState, url: str, token_file: str | None, read_only: bool) -> None:
    """The live dashboard of a dispatcher that runs elsewhere, over its HTTP API.

    Only what changed since the last refresh travels; a lost connection shows in the header
    and is retried. The dispatcher goes on when the dashboard quits.
    """
    from necrocode.dispatcher.errors import DispatcherError
    from necrocode.dispatcher.state_files import ADMIN_TOKEN_FILE

    from .attach import read_token, run_attached

    if not url.startswith(("http://", "https://")):
        fail(f"{url!r} is not an http(s) URL", "e.g. necroui attach http://127.0.0.1:8765")
    try:
        if token_file is None:
            token_file = str(Path(state.config().resolved_state_dir()) / ADMIN_TOKEN_FILE)
        token = read_token(token_file)
        code = run_attached(url, token, read_only=read_only or state.read_only)
    except DispatcherError as exc:
        fail(str(exc), "give the token file with --token-file")
    raise SystemExit(code)


@click.command(epilog="""\b
Examples:
  necroui serve                                  the dispatcher of this state dir, on :8000
  necroui serve http://127.0.0.1:8765 --port 9000
  then open http://127.0.0.1:8000/?token=$(cat .necrocode/admin.token)
""")
@click.argument("url", required=False)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on (anything but loopback shows the dashboard to others "
                   "who have the token).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--token-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="The dispatcher's admin token (the browser must give it too). Default: "
                   "the admin.token of the configured state dir.")
@click.option("--read-only", is_flag=True, help="Browser sessions without verbs.")
@pass_state
def serve(state: CliState, url: str | None, host: str, port: int, token_file: str | None,
          read_only: bool) -> None:
    """The dashboard in a browser (textual-serve), attached to a running dispatcher.

    Every browser session is its own attached console. The page needs the admin token once
    (?token=…); it binds to 127.0.0.1 unless --host says otherwise.
    """
    from necrocode.dispatcher.errors import DispatcherError
    from necrocode.dispatcher.state_files import ADMIN_TOKEN_FILE

    from .attach import read_token
    from .serve import run_serve

    try:
        if url is None:
            from .remote import find_dispatcher

            found = find_dispatcher(state.config())
            if found is None:
                fail("no dispatcher runs on this state dir to serve",
                     "start one (necroui --no-tui), or give its URL: necroui serve URL")
            url = found[0]
        if token_file is None:
            token_file = str(Path(state.config().resolved_state_dir()) / ADMIN_TOKEN_FILE)
        token = read_token(token_file)
        code = run_serve(url, Path(token_file).resolve(), token, host=host, port=port,
                         read_only=read_only or state.read_only)
    except DispatcherError as exc:
        fail(str(exc))
    raise SystemExit(code)


COMMANDS = [attach, serve]
