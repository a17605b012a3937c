"""``necroui --no-tui``: the Dispatcher without its dashboard.

One line per event on stdout (or one JSON object per line with ``--json``), a summary table at
the end, exit status 0 only when every task is DONE. ``--until-done`` ends the run once nothing
more can happen: no task runs, and every task left is FAILED, CANCELLED, blocked behind one of
those, or can never be placed. SIGINT/SIGTERM stop gracefully (running runners get
``graceful_shutdown_timeout`` to finish, then their tasks go back to READY); a second signal
stops at once.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.errors import DispatcherError
from necrocode.dispatcher.models import Task, TaskEvent, TaskState
from necrocode.dispatcher.snapshot import PendingReason, Snapshot

logger = logging.getLogger(__name__)

#: Pending reasons of READY tasks that no waiting can fix (a disabled pool comes back only if an
#: operator enables it through the API, which a headless run cannot wait for).
NEVER_PLACEABLE = frozenset({PendingReason.NO_POOL_FOR_SKILL, PendingReason.EXCEEDS_QUOTA,
                             PendingReason.POOL_DISABLED, PendingReason.INVALID_TASK})
#: Pending reasons of BLOCKED tasks that no waiting can fix.
STUCK_FOR_GOOD = frozenset({PendingReason.BLOCKED_BY_FAILURE, PendingReason.DEADLOCK})

POLL = 0.1  # seconds between event polls of the printer

#: ``--until-done`` on an empty registry: exit 0 (nothing failed) with this hint rather than
#: "all tasks DONE", which reads as if work had run.
EMPTY_REGISTRY = ("the registry has no tasks: submit a taskset with `necroui submit FILE`, "
                  "or use --demo")


def format_event(event: TaskEvent) -> str:
    """One human line for an event."""
    clock = time.strftime("%H:%M:%S", time.localtime(event.timestamp))
    parts = [clock, f"{event.event_type.value:<18}", f"{event.task_key or '-':<22}"]
    if event.message:
        parts.append(event.message)
    extra = []
    if event.pool and (not event.message or event.pool not in event.message):
        extra.append(f"pool={event.pool}")
    if extra:
        parts.append("(" + ", ".join(extra) + ")")
    return " ".join(parts)


def is_settled(snap: Snapshot) -> bool:
    """True when nothing more can happen: no runner, no runnable task."""
    if snap.running or snap.counters.running:
        return False
    for view in snap.queued:
        if view.state is TaskState.READY and view.pending.reason not in NEVER_PLACEABLE:
            return False
        if view.state is TaskState.BLOCKED and view.pending.reason not in STUCK_FOR_GOOD:
            return False
    return len(snap.queued) == snap.counters.ready + snap.counters.blocked


class _Signals:
    """SIGINT/SIGTERM/SIGHUP: first asks for a graceful stop, second for an immediate one."""

    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # HUP: terminal closed
            self._old[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        self.event.set()


def run_headless(
    config: DispatcherConfig,
    *,
    demo: bool = False,
    agents: bool = False,
    json_lines: bool = False,
    until_done: bool = False,
    log_format: str = "text",
    out: TextIO | None = None,
    should_stop: Callable[[], bool] | None = None,
    standby: bool = False,
) -> int:
    """Run the Dispatcher headless; returns the exit status (0: every task DONE).

    ``standby``: when another dispatcher owns the registry, wait (until a signal) and take
    over when it ends. ``agents``: with ``demo``, the tasks run coding-agent presets on the
    demo's stand-in (tokens, cost, a budget stop)."""
    from necrocode.dispatcher.core import DispatcherCore
    from necrocode.dispatcher.registry import open_registry

    stream = out or sys.stdout
    _ensure_logging(log_format)
    if demo:
        from necroui.demo import demo_config

        config = demo_config(config)
    registry = open_registry(config.resolved_registry_path())
    emit = _emitter(stream, json_lines)
    signals = _Signals()
    started = time.time()
    core: DispatcherCore | None = None
    reasons: dict[str, str] = {}
    try:
        core = DispatcherCore(config, registry=registry)
        if demo:
            from necroui.demo import prepare_demo

            start = prepare_demo(core, agents=agents)
            n = start.submitted
            if n:
                emit({"type": "info", "message": f"submitted the demo taskset: {n} tasks"},
                     f"submitted the demo taskset: {n} tasks")
            if start.hint:
                emit({"type": "info", "message": start.hint}, start.hint)
        seq = registry.current_seq()
        signals.install()
        def waiting(holder: Any) -> None:
            who = holder.describe() if holder is not None else "another dispatcher"
            message = f"standby: the registry is owned by {who}; waiting to take over"
            emit({"type": "info", "message": message}, message)

        core.start(standby=standby, stop=signals.event, on_wait=waiting)
        emit({"type": "info", "message": "dispatcher started", "api_url": core.api_url,
              "registry": core.registry_label},
             f"dispatcher started (registry {core.registry_label}, api {core.api_url or 'off'})")
        expected = sum(registry.count_tasks().values())
        version = 0
        while True:
            seq = _print_events(registry, seq, emit)
            if signals.event.is_set() or (should_stop is not None and should_stop()):
                break
            if not core.is_running:
                if isinstance(core.crash, DispatcherError):  # e.g. the registry was deleted
                    raise core.crash
                emit({"type": "error", "message": "engine stopped unexpectedly"},
                     "engine stopped unexpectedly; see the log")
                break
            if until_done and not expected:  # nothing to wait for: the summary says why
                break
            if until_done:
                snap = core.snapshot()
                if snap.version != version:
                    version = snap.version
                    if snap.counters.total >= expected and snap.state in ("running", "paused") \
                            and is_settled(snap):
                        break
            signals.event.wait(POLL)
        if signals.count:
            emit({"type": "info", "message": "signal received: stopping"},
                 "signal received: stopping (again to stop at once)")
        reasons = pending_reasons(core.snapshot())
        seq = _stop(core, config, signals, registry, emit, seq)
        seq = _print_events(registry, seq, emit)
    except DispatcherError as exc:
        emit({"type": "error", "message": str(exc)}, f"error: {exc}")
        if core is not None and (core.is_running or core.crash is not None):
            core.stop(timeout=0)
        registry.close()
        return 2
    finally:
        signals.restore()
    try:
        code = _summary(registry, stream, json_lines, time.time() - started, reasons)
    finally:
        registry.close()
    return code


def _stop(core: Any, config: DispatcherConfig, signals: _Signals, registry: Any,
          emit: Callable[[dict[str, Any], str], None], seq: int) -> int:
    """Graceful stop in a thread, so that a second signal can cut the wait short; returns the
    last event sequence printed."""
    done = threading.Event()

    def work() -> None:
        try:
            core.stop(timeout=config.graceful_shutdown_timeout)
        finally:
            done.set()

    seen = signals.count
    thread = threading.Thread(target=work, name="necroui-stop", daemon=True)
    thread.start()
    while not done.wait(POLL):
        seq = _print_events(registry, seq, emit)
        if signals.count > seen:
            seen = signals.count
            emit({"type": "info", "message": "second signal: stopping runners now"},
                 "second signal: stopping runners now")
            core.request_stop(0.0)
    thread.join()
    return seq


def _print_events(registry: Any, seq: int,
                  emit: Callable[[dict[str, Any], str], None]) -> int:
    try:
        events = registry.get_events(after_seq=seq, limit=2000)
    except Exception:
        logger.debug("event poll failed", exc_info=True)
        return seq
    for event in events:
        if event.seq is not None:
            seq = max(seq, event.seq)
        data = event.to_dict()
        data["type"] = "event"
        emit(data, format_event(event))
    return seq


def _emitter(stream: TextIO, json_lines: bool) -> Callable[[dict[str, Any], str], None]:
    def emit(data: dict[str, Any], text: str) -> None:
        try:
            stream.write((json.dumps(data, default=str) if json_lines else text) + "\n")
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass

    return emit


def _ensure_logging(log_format: str) -> None:
    if logging.getLogger().handlers:
        return
    try:
        from necrocode.dispatcher.logging_setup import setup_logging

        setup_logging("WARNING", log_format)
    except (ImportError, ValueError):
        logging.basicConfig(level=logging.WARNING)


def pending_reasons(snap: Snapshot | None) -> dict[str, str]:
    """Why each waiting task of ``snap`` waits (task key -> the pending sentence)."""
    if snap is None:
        return {}
    return {view.key: str(view.pending.message) for view in snap.queued
            if getattr(view, "pending", None) is not None and view.pending.message}


def _why(task: Task, reasons: dict[str, str]) -> str:
    """The summary's LAST ERROR / WHY cell: the pending reason of a waiting task, else the
    task's last error."""
    if task.state in (TaskState.READY, TaskState.BLOCKED) and task.key in reasons:
        why = reasons[task.key]
        return f"{why} (last error: {task.last_error})" if task.last_error else why
    if task.state is TaskState.CANCELLED and not task.last_error:
        return "cancelled"
    return task.last_error or ""


def _summary(registry: Any, stream: TextIO, json_lines: bool, elapsed: float,
             reasons: dict[str, str] | None = None) -> int:
    reasons = reasons or {}
    tasks: list[Task] = registry.list_tasks()
    if not tasks:
        # an empty registry: nothing failed, exit 0 — but no "all tasks DONE" either
        if json_lines:
            stream.write(json.dumps({"type": "summary", "total": 0, "elapsed":
                                     round(elapsed, 3), "counts": {}, "exit_code": 0,
                                     "not_done": [], "message": EMPTY_REGISTRY}) + "\n")
        else:
            stream.write(f"\nSummary: 0 tasks in {elapsed:.1f}s\n{EMPTY_REGISTRY}\n")
        stream.flush()
        return 0
    counts = {s: 0 for s in TaskState}
    for t in tasks:
        counts[t.state] += 1
    all_done = counts[TaskState.DONE] == len(tasks)
    code = 0 if all_done else 1
    unfinished = [t for t in tasks if t.state is not TaskState.DONE]
    if json_lines:
        stream.write(json.dumps({
            "type": "summary", "total": len(tasks), "elapsed": round(elapsed, 3),
            "counts": {s.value: n for s, n in counts.items()}, "exit_code": code,
            "not_done": [{"key": t.key, "state": t.state.value, "attempts": t.attempts,
                          "last_error": t.last_error, "pending": reasons.get(t.key)}
                         for t in unfinished],
        }) + "\n")
        stream.flush()
        return code
    lines = ["", f"Summary: {len(tasks)} task(s) in {elapsed:.1f}s"]
    width = max(len(s.value) for s in TaskState)
    for state in TaskState:
        lines.append(f"  {state.value.upper():<{width}}  {counts[state]:>6}")
    if unfinished:
        lines.append("")
        lines.append(f"  {'TASK':<30} {'STATE':<10} {'FAILS':>5}  LAST ERROR / WHY")
        for t in unfinished[:50]:
            lines.append(f"  {t.key:<30} {t.state.value:<10} {t.attempts:>5}  "
                         f"{_why(t, reasons)[:90]}")
        if len(unfinished) > 50:
            lines.append(f"  ... and {len(unfinished) - 50} more")
    lines.append("")
    lines.append("all tasks DONE" if all_done else
                 f"{len(unfinished)} task(s) not DONE: exit status 1")
    stream.write("\n".join(lines) + "\n")
    stream.flush()
    return code


__all__ = ["format_event", "is_settled", "run_headless"]
