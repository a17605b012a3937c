"""What every necroui command shares: global options, config loading, error reporting."""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click
from necrocode.dispatcher.config import DispatcherConfig, load_config
from necrocode.dispatcher.config_loader import default_config
from necrocode.dispatcher.errors import DispatcherError, ValidationError

CONFIG_ENV = "NECROCODE_CONFIG"
REGISTRY_ENV = "NECROCODE_REGISTRY"


# --- shared state and error handling -----------------------------------------------------------


@dataclass
class CliState:
    """Global options, with the config loaded on first use."""

    config_path: str | None = None
    registry: str | None = None
    api_port: int | None = None
    read_only: bool = False  # --read-only before a command (necroui --read-only attach URL)
    _config: DispatcherConfig | None = field(default=None, repr=False)

    def config(self) -> DispatcherConfig:
        """The config from --config / $NECROCODE_CONFIG, else the defaults (one local pool)."""
        if self._config is None:
            config = load_config(self.config_path) if self.config_path else default_config()
            if self.registry:
                config.registry_path = self.registry
            if self.api_port is not None:
                config.api_port = self.api_port
            self._config = config
        return self._config

    def registry_path(self) -> Path:
        """The registry the config names: an SQLite file or a NecroCode registry directory
        (a directory that is neither is refused with a clear message)."""
        from necrocode.dispatcher.errors import RegistryError
        from necrocode.dispatcher.registry import registry_kind

        raw = str(self.config().resolved_registry_path())
        try:
            registry_kind(raw)
        except RegistryError as exc:
            fail(f"{'--registry' if self.registry else 'dispatcher.registry_path'} {exc}")
        return Path(raw)

    def open_registry(self) -> Any:
        """The Task Registry the config names (SQLite file, created if missing, or a
        NecroCode registry directory)."""
        from necrocode.dispatcher.registry import open_registry

        path = self.registry_path()
        try:
            return open_registry(path)
        except OSError as exc:
            fail(f"cannot open the registry {str(path)!r}: {exc.strerror or exc}",
                 "check the path and its permissions (--registry / NECROCODE_REGISTRY)")


def fail(message: str, hint: str = "") -> NoReturn:
    """Print a user mistake on stderr and exit 1."""
    click.secho(f"error: {message}", fg="red", err=True)
    if hint:
        click.echo(f"  hint: {hint}", err=True)
    raise click.exceptions.Exit(1)


def report_error(exc: DispatcherError) -> None:
    """Print a DispatcherError: the title, then every problem on its own line."""
    if isinstance(exc, ValidationError):
        click.secho(f"error: {exc.title} ({len(exc.problems)} problem(s)):", fg="red", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
    else:
        click.secho(f"error: {exc}", fg="red", err=True)


def hoist_registry(args: list[str]) -> list[str]:
    """``--registry PATH`` given after the command (``necroui tasks --registry DIR``) moved in
    front of it, where the global option is parsed (no command has an option of that name)."""
    out: list[str] = []
    hoisted: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out += args[i:]
            break
        if arg == "--registry" and i + 1 < len(args):
            hoisted += args[i:i + 2]
            i += 2
            continue
        if arg.startswith("--registry="):
            hoisted.append(arg)
        else:
            out.append(arg)
        i += 1
    return hoisted + out


class NecroGroup(click.Group):
    """A click group that turns every DispatcherError into a message and exit status 1."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:
            args = hoist_registry(list(args))
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DispatcherError as exc:
            report_error(exc)
            raise click.exceptions.Exit(1) from None
        except BrokenPipeError:  # `necroui tasks | head`: the reader has all it wanted
            _silence_stdout()
            raise click.exceptions.Exit(141) from None  # as if killed by SIGPIPE
        except OSError as exc:  # a file that cannot be read or written: say which, no traceback
            click.secho(f"error: {exc}", fg="red", err=True)
            raise click.exceptions.Exit(1) from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null so flushing it at exit does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


pass_state = click.make_pass_decorator(CliState)
