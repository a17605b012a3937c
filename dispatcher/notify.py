"""Notifications (R22.1): what needs an operator, derived from snapshots, sent to hooks.

:class:`NoticeDeriver` compares each new :class:`Snapshot` with the last one it saw and says
what happened that an operator must hear about: a task failed, a run was stopped by its budget,
a merge conflict, a failed landing gate, a taskset finished. The console shows these as toasts
with a bell; :class:`Notifier` hands them to the configured hooks (a command that reads the
notice as JSON on stdin, or a webhook that gets it as a JSON POST) from its own thread, through
a bounded queue and with a timeout per call, so that no hook can stall the engine or the console.
:class:`SnapshotNotifier` ties both to a dispatcher's ``wait_for_snapshot``.
"""

from __future__ import annotations

import json
import logging
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Protocol

from .models import EventType, TaskState
from .notify_config import NotifyConfig
from .snapshot import Snapshot

log = logging.getLogger(__name__)


class NoticeKind(str, Enum):
    """What a notice is about."""

    TASK_FAILED = "task_failed"  # a task reached FAILED (no attempt left)
    BUDGET_STOP = "budget_stop"  # a run was stopped for exceeding its cost/token/turn budget
    CONFLICT = "conflict"  # dependencies' branches (or the integration branch) do not merge
    GATE_FAILED = "gate_failed"  # the landing check failed on the merged tree
    TASKSET_FINISHED = "taskset_finished"  # no task of the taskset is queued or running now


ALL_KINDS: tuple[str, ...] = tuple(k.value for k in NoticeKind)


@dataclass(frozen=True)
class Notice:
    """One thing to tell the operator; ``to_json`` is what hooks receive."""

    kind: NoticeKind
    message: str
    task: str | None = None
    taskset: str | None = None
    at: float = field(default_factory=time.time)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        """``error`` for failures and stops, ``warning`` for conflicts, ``information``."""
        if self.kind in (NoticeKind.TASK_FAILED, NoticeKind.BUDGET_STOP,
                         NoticeKind.GATE_FAILED):
            return "error"
        if self.kind is NoticeKind.CONFLICT:
            return "warning"
        return "error" if self.details.get("failed") else "information"

    def to_json(self) -> str:
        data = asdict(self)
        data["kind"] = self.kind.value
        return json.dumps(data, sort_keys=True, default=str)


_CONFLICT_EVENTS = {EventType.START_CONFLICT, EventType.LAND_CONFLICT}


def _is_budget(details: dict[str, Any]) -> bool:
    """A TaskFailed whose reason is the budget (the engine's ``details.reason``)."""
    return details.get("reason") == "budget"


class NoticeDeriver:
    """Turns a stream of snapshots into notices (pure: no threads, no I/O).

    Events are taken once each (by their registry ``seq``); a taskset is finished when it had
    tasks queued or running in the previous snapshot and has none now. A budget stop is known
    by the engine's ``BudgetExceeded`` event (the run is stopped) or a ``TaskFailed`` whose
    ``details.reason`` is ``budget``, never by message text; the task's failure that follows
    its stop is not told twice.
    """

    def __init__(self) -> None:
        self._seq = -1
        self._active: set[str] | None = None
        self._failed_seen: set[str] = set()
        self._budget_told: set[str] = set()  # tasks whose budget stop was told

    def feed(self, snap: Snapshot) -> list[Notice]:
        """The notices since the last snapshot fed (none for the first one: that is history)."""
        first = self._active is None
        notices: list[Notice] = []
        newest = self._seq
        for event in snap.events:
            seq = event.seq if event.seq is not None else -1
            if seq <= self._seq:
                continue
            newest = max(newest, seq)
            if first:
                continue
            notice = self._from_event(event.event_type, event.task_key, event.message,
                                      event.details, event.timestamp)
            if notice is not None:
                notices.append(notice)
        self._seq = newest
        failed_now = {v.key for v in snap.finished if v.state == TaskState.FAILED}
        if not first:
            for view in snap.finished:
                if (view.state == TaskState.FAILED and view.key not in self._failed_seen
                        and view.key not in self._budget_told
                        and not any(n.task == view.key for n in notices)):
                    message = view.last_error or "failed"
                    notices.append(Notice(NoticeKind.TASK_FAILED, f"{view.key} failed: {message}",
                                          view.key, view.taskset,
                                          view.finished_at or snap.taken_at))
        self._failed_seen = failed_now | {n.task for n in notices if n.task}
        if self._budget_told:  # a stopped task retried (queued again) may fail anew
            queued_now = {v.key for v in snap.queued}
            self._budget_told = {k for k in self._budget_told if k not in queued_now}
        active = {v.taskset for v in snap.queued} | {v.taskset for v in snap.running}
        if not first and self._active is not None:
            for taskset in sorted(self._active - active):
                failed = sum(1 for v in snap.finished
                             if v.taskset == taskset and v.state == TaskState.FAILED)
                text = f"taskset {taskset} finished"
                text += f" ({failed} failed)" if failed else ""
                notices.append(Notice(NoticeKind.TASKSET_FINISHED, text, None, taskset,
                                      snap.taken_at, {"failed": failed}))
        self._active = active
        return notices

    def _from_event(self, kind: EventType, task: str | None, message: str,
                    details: dict[str, Any], at: float) -> Notice | None:
        taskset = task.rpartition("/")[0] if task else None
        text = f"{task}: {message}" if task and message else (message or str(task))
        if kind is EventType.BUDGET_EXCEEDED:
            if task:
                self._budget_told.add(task)
            return Notice(NoticeKind.BUDGET_STOP, f"{task}: stopped, {message}" if task
                          else message, task, taskset, at, {**details, "reason": "budget"})
        if kind is EventType.TASK_FAILED:
            if _is_budget(details):
                if task in self._budget_told:
                    return None  # its stop was told (BudgetExceeded): the failure follows
                if task:
                    self._budget_told.add(task)
                return Notice(NoticeKind.BUDGET_STOP, text, task, taskset, at, dict(details))
            return Notice(NoticeKind.TASK_FAILED, text, task, taskset, at, dict(details))
        if kind in _CONFLICT_EVENTS:
            return Notice(NoticeKind.CONFLICT, text, task, taskset, at, dict(details))
        if kind is EventType.GATE_FAILED:
            return Notice(NoticeKind.GATE_FAILED, text, task, taskset, at, dict(details))
        return None


# --- hooks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HookResult:
    """What one hook call did (kept for status and tests)."""

    hook: str
    kind: NoticeKind
    ok: bool
    detail: str = ""


class Notifier:
    """Sends notices to the configured hooks from one worker thread.

    :meth:`submit` never blocks: the queue is bounded (``queue_size``) and a full queue drops
    the oldest notice (counted in :attr:`dropped`, warned once). Each hook call has
    ``timeout`` seconds; a command that runs longer is killed.
    """

    def __init__(self, config: NotifyConfig, *,
                 on_result: Callable[[HookResult], None] | None = None) -> None:
        self.config = config
        self.on_result = on_result
        self.dropped = 0
        self.results: list[HookResult] = []  # the last 100
        self._queue: queue.Queue[Notice | None] = queue.Queue(maxsize=max(1, config.queue_size))
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()
        self._kinds = set(config.events or ALL_KINDS)

    @property
    def enabled(self) -> bool:
        return bool(self.config.command or self.config.webhook)

    def start(self) -> None:
        if self._thread is None and self.enabled:
            self._thread = threading.Thread(target=self._run, name="necrocode-notify",
                                            daemon=True)
            self._thread.start()

    def submit(self, notice: Notice) -> None:
        """Queue a notice for the hooks (dropped when its kind is not configured)."""
        if not self.enabled or notice.kind.value not in self._kinds:
            return
        while True:
            try:
                self._queue.put_nowait(notice)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    continue
                self.dropped += 1
                self._warn_once("full", "notification queue full (%d): hooks are slower than "
                                "notices; the oldest are dropped", self.config.queue_size)

    def stop(self, timeout: float = 5.0) -> None:
        """Let queued notices go out for up to ``timeout`` seconds, then stop the worker."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("notification hooks still busy at stop; %d notice(s) not sent",
                        self._queue.qsize())
            return
        thread.join(timeout)

    def _run(self) -> None:
        while True:
            notice = self._queue.get()
            if notice is None:
                return
            body = notice.to_json()
            if self.config.command:
                self._record(self._run_command(body, notice))
            if self.config.webhook:
                self._record(self._post(body, notice))

    def _record(self, result: HookResult) -> None:
        self.results = [*self.results[-99:], result]
        if not result.ok:
            self._warn_once(f"{result.hook}:{result.detail[:40]}",
                            "notification hook %s failed: %s", result.hook, result.detail)
        if self.on_result is not None:
            self.on_result(result)

    def _run_command(self, body: str, notice: Notice) -> HookResult:
        argv = list(self.config.command or [])
        name = f"command {argv[0]}"
        try:
            done = subprocess.run(argv, input=body, text=True, capture_output=True,
                                  timeout=self.config.timeout, check=False)
        except subprocess.TimeoutExpired:
            return HookResult(name, notice.kind, False,
                              f"timed out after {self.config.timeout:g}s (killed)")
        except OSError as exc:
            return HookResult(name, notice.kind, False, f"cannot run: {exc}")
        if done.returncode != 0:
            err = (done.stderr or "").strip().splitlines()
            return HookResult(name, notice.kind, False,
                              f"exit code {done.returncode}" + (f": {err[-1]}" if err else ""))
        return HookResult(name, notice.kind, True)

    def _post(self, body: str, notice: Notice) -> HookResult:
        url = str(self.config.webhook)
        name = f"webhook {url}"
        request = urllib.request.Request(url, data=body.encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            return HookResult(name, notice.kind, False, f"HTTP {exc.code}")
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            return HookResult(name, notice.kind, False, f"unreachable: {reason}")
        return HookResult(name, notice.kind, 200 <= status < 300, f"HTTP {status}")

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)


class SnapshotSource(Protocol):
    """The part of DispatcherCore a :class:`SnapshotNotifier` reads."""

    def wait_for_snapshot(self, after_version: int, timeout: float | None = None
                          ) -> Snapshot | None: ...


class SnapshotNotifier:
    """Follows a dispatcher's snapshots on its own thread and sends each notice to the hooks.

    Reads only ``wait_for_snapshot``: the engine thread never waits for it.
    """

    def __init__(self, source: SnapshotSource, notifier: Notifier,
                 listeners: Iterable[Callable[[Notice], None]] = ()) -> None:
        self.source = source
        self.notifier = notifier
        self.listeners = list(listeners)
        self.deriver = NoticeDeriver()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.notifier.start()
        self._thread = threading.Thread(target=self._run, name="necrocode-notices", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.notifier.stop(timeout)

    def _run(self) -> None:
        version = -1
        while not self._stop.is_set():
            snap = self.source.wait_for_snapshot(version, timeout=0.5)
            if snap is None or snap.version <= version:
                continue
            version = snap.version
            for notice in self.deriver.feed(snap):
                self.notifier.submit(notice)
                for listener in self.listeners:
                    listener(notice)


def start_hooks(source: SnapshotSource, config: NotifyConfig) -> SnapshotNotifier | None:
    """Follow ``source``'s snapshots and run the configured hooks; None when none is set."""
    notifier = Notifier(config)
    if not notifier.enabled:
        return None
    watcher = SnapshotNotifier(source, notifier)
    watcher.start()
    return watcher
