"""Running the dashboard with its own engine: start it, show the console, stop the engine as
the operator chose (wait for the runners, leave them running, or stop them now)."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from necrocode.dispatcher.config import DispatcherConfig

from .screens.modals import QuitChoice


def run_dashboard(config: DispatcherConfig, *, demo: bool = False, read_only: bool = False,
                  agents: bool = False) -> int:
    """Start the engine, run the dashboard, stop the engine as the operator chose. Exit code.

    Textual draws on stderr: when stderr is redirected but a terminal is there (stdout or
    /dev/tty), the dashboard could not show, so say so on stdout and return 2 at once.
    """
    if _stderr_redirected():
        print("necroui draws on stderr; it is redirected, so the dashboard cannot show. "
              "Use --no-tui for headless output", flush=True)
        return 2
    from necrocode.dispatcher.core import DispatcherCore

    if demo:
        from .demo import demo_config

        config = demo_config(config)
    engine = DispatcherCore(config)
    notice: str | None = None
    if demo:
        from .demo import prepare_demo

        notice = prepare_demo(engine, agents=agents).hint
    engine.start()  # its notify: hooks run off the engine and UI threads
    choice: QuitChoice | None = None
    try:
        from .app import NecroApp

        app = NecroApp(engine, read_only=read_only, notice=notice, pace_collector=True)
        choice = app.run()
    finally:
        _stop_engine(engine, config, choice)
    return 0


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _stderr_redirected() -> bool:
    """stderr is not a terminal while stdout or the controlling terminal (/dev/tty) is."""
    if _isatty(sys.stderr) or os.environ.get("TEXTUAL_DRIVER"):
        return False  # a terminal, or a driver of its own (textual-serve's web driver)
    if _isatty(sys.stdout):
        return True
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def _stop_engine(engine: Any, config: DispatcherConfig, choice: QuitChoice | None) -> None:
    """Stop the engine per the quit choice, saying on the terminal what happens.

    Waiting prints a status line each time the number of runners changes and a closing line;
    ctrl+c while waiting stops the runners now.
    """
    timeout = config.graceful_shutdown_timeout
    running = _running_count(engine)
    try:
        if choice is QuitChoice.LEAVE:
            engine.stop(timeout=0, leave_running=True)
            _say(f"left {running} runner(s) running; the next start adopts them" if running
                 else "stopped")
        elif choice is QuitChoice.STOP:
            engine.stop(timeout=0)
            _say(f"stopped {running} runner(s); their tasks go back to ready" if running
                 else "stopped")
        elif not running:
            engine.stop(timeout=timeout)
            _say("stopped")
        else:
            done = threading.Event()
            _say(f"waiting for {running} runner(s) to finish (up to {timeout:g}s)… "
                 "ctrl+c to stop them now")
            watcher = threading.Thread(target=_watch_runners, args=(engine, running, done),
                                       name="necroui-wait", daemon=True)
            watcher.start()
            try:
                engine.stop(timeout=timeout)
            finally:
                done.set()
                watcher.join(2)
            left = _running_count(engine)
            _say("every runner finished; stopped" if not left
                 else f"stopped; {left} runner(s) were stopped at the timeout")
    except KeyboardInterrupt:
        _say("stopping the runners now…")
        engine.stop(timeout=0)
        _say("stopped")


def _say(message: str) -> None:
    print(f"necroui: {message}", file=sys.stderr, flush=True)


def _running_count(engine: Any) -> int:
    try:
        snap = engine.snapshot()
    except Exception:  # noqa: BLE001 - stopping: a count is only informative
        return 0
    return len(snap.running) if snap is not None else 0


def _watch_runners(engine: Any, running: int, done: threading.Event) -> None:
    """While the engine drains, print the number of runners left when it changes."""
    last = running
    while not done.wait(0.5):
        now = _running_count(engine)
        if now != last and now:
            _say(f"waiting for {now} runner(s)… ctrl+c to stop them now")
        last = now
