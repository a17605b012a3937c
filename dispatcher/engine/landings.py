"""Landings: the ``land`` verb of a running Dispatcher (R21.3), one landing at a time.

``necroui land``, the console's land key and ``POST /v1/control/land`` ask the engine, which
runs :class:`~..landing.Lander` in a worker of its own (git merges and the gate's check are
slow: never on the engine thread) and answers at once with the landing's id. One worker:
landings are serialized (the clone's land lock also keeps a ``necroui land`` run beside the
dispatcher out). When the worker is done (:class:`~.commands.LandFinished`) the report is
published in the snapshot (``Snapshot.landings``) and as a ``TasksetLanded`` event; the tasks
the landing marked (landed, gate failed, sent back to run again with the check's output) reach
the engine through the registry like any other change.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..config import WorkConfig
from ..errors import DispatcherError, DispatcherStateError
from ..landing import Lander, LandReport, LandRequest
from ..models import EventType, TaskEvent
from ..registry.base import TaskRegistry
from ..snapshot import LandingView
from .commands import Command, LandFinished
from .event_log import EventLog
from .taskbook import ViewChanges

logger = logging.getLogger(__name__)

LANDINGS_KEEP = 20  # finished landings kept in snapshots


def land_request(payload: Mapping[str, Any]) -> LandRequest:
    """The LandRequest of a ``land`` control payload; DispatcherError for bad input."""
    taskset = payload.get("taskset")
    if not isinstance(taskset, str) or not taskset.strip():
        raise DispatcherError('land needs the taskset: {"taskset": NAME, "into": BRANCH, '
                              '"check": [ARGV], "push": false}')
    into = payload.get("into")
    check = payload.get("check")
    if into is not None and not isinstance(into, str):
        raise DispatcherError(f"land: into must be a branch name, got {into!r}")
    if check is not None and not (isinstance(check, list | tuple)
                                  and all(isinstance(x, str) for x in check)):
        raise DispatcherError(f"land: check must be a list of strings (argv), got {check!r}")
    branches = payload.get("push_task_branches")
    return LandRequest(taskset=taskset.strip(), into=into or None,
                       check=tuple(check) if check is not None else None,
                       push=bool(payload.get("push", False)),
                       push_task_branches=None if branches is None else bool(branches))


class Landings:
    """Landings in flight and the recent reports (engine thread)."""

    def __init__(self, registry: TaskRegistry, state_dir: Path, work: WorkConfig,
                 events: EventLog, views: ViewChanges, post: Callable[[Command], None],
                 registry_changed: Callable[[], None] = lambda: None) -> None:
        self._registry = registry
        self._state_dir = state_dir
        self._work = work
        self._events = events
        self._views = views
        self._post = post
        self._registry_changed = registry_changed
        self._landings: OrderedDict[str, LandingView] = OrderedDict()
        self._requests: dict[str, LandRequest] = {}
        self._workers: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._workers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="necrocode-land")

    def shutdown(self) -> None:
        """A landing in flight is left to finish on its own (its gate may run for long)."""
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)
            self._workers = None

    # --- questions -------------------------------------------------------------------------
    def __len__(self) -> int:
        """Landings in flight."""
        return sum(1 for v in self._landings.values() if v.state == "landing")

    def views(self) -> tuple[LandingView, ...]:
        return tuple(self._landings.values())

    # --- the verb --------------------------------------------------------------------------
    def request(self, payload: Mapping[str, Any]) -> str:
        """Start a landing in the worker; answers at once (the report comes in the snapshot).
        Without started workers (no engine) it lands on this thread and answers the report."""
        request = land_request(payload)
        busy = [v for v in self._landings.values()
                if v.state == "landing" and v.taskset == request.taskset]
        if busy:
            raise DispatcherStateError(f"a landing of {request.taskset} is running already "
                                       f"({busy[0].land_id}); wait for its report")
        raw_id = payload.get("id")
        land_id = raw_id if isinstance(raw_id, str) and raw_id else uuid.uuid4().hex[:12]
        if land_id in self._landings:
            raise DispatcherError(f"landing id {land_id!r} was used already")
        self._landings[land_id] = LandingView(land_id=land_id, taskset=request.taskset,
                                              state="landing", started_at=time.time())
        self._requests[land_id] = request
        self._views.mark()
        if self._workers is None:
            done = self.finished(self._land(land_id, request))
            return done.summary
        self._workers.submit(lambda: self._post(self._land(land_id, request)))
        return f"landing {request.taskset} (id {land_id}); its report follows in the status"

    def _land(self, land_id: str, request: LandRequest) -> LandFinished:
        """The landing itself (in the worker; touches no engine state)."""
        try:
            report = Lander(self._registry, self._state_dir, self._work).land(request)
            return LandFinished(land_id, report=report)
        except DispatcherError as exc:  # LandError and registry refusals: said as they are
            return LandFinished(land_id, error=str(exc))
        except Exception as exc:  # never leave the landing shown as running
            logger.warning("landing %s failed: %s", request.taskset, exc, exc_info=True)
            return LandFinished(land_id, error=f"{type(exc).__name__}: {exc}")

    def finished(self, note: LandFinished) -> LandingView:
        """The worker is done: publish the report (snapshot and a TasksetLanded event)."""
        old = self._landings.pop(note.land_id, None)
        request = self._requests.pop(note.land_id, None)
        taskset = old.taskset if old else (request.taskset if request else "?")
        view = LandingView(land_id=note.land_id, taskset=taskset,
                           state="error" if note.error is not None else "done",
                           started_at=old.started_at if old else time.time(),
                           finished_at=time.time(), report=note.report, error=note.error)
        self._landings[note.land_id] = view
        while len(self._landings) > LANDINGS_KEEP:
            oldest = next(iter(self._landings))
            if self._landings[oldest].state == "landing":
                break
            self._landings.pop(oldest)
        self._views.mark()
        self._registry_changed()  # the landing marked tasks: poll them
        self._events.record(_event(view, note.report))
        (logger.info if note.report is not None and note.report.ok else logger.warning)(
            "%s", view.summary)
        return view


def _event(view: LandingView, report: LandReport | None) -> TaskEvent:
    details: dict[str, Any] = {"land_id": view.land_id, "taskset": view.taskset}
    if report is not None:
        details.update(branch=report.branch, ok=report.ok, check=list(report.check),
                       outcomes=[{"key": o.key, "kind": o.kind.value, "message": o.message,
                                  "commit": o.commit} for o in report.outcomes],
                       push_errors=list(report.push_errors))
    else:
        details["error"] = view.error
    return TaskEvent(event_type=EventType.TASKSET_LANDED, message=view.summary,
                     details=details)
