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
        """The registry file the config names; a directory is refused with a clear message."""
        path = Path(self.config().resolved_registry_path())
        if str(path) != ":memory:" and path.is_dir():
            where = (f"--registry {self.registry}" if self.registry
                     else f"the registry path {path} (dispatcher.registry_path)")
            fail(f"{where} is a directory; give a file path such as {path / 'registry.db'}")
        return path

    def open_registry(self) -> Any:
        """The Task Registry the config names (SQLite file, created if missing)."""
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


class NecroGroup(click.Group):
    """A click group that turns every DispatcherError into a message and exit status 1."""

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
