"""The queue, running and finished tables of the dashboard (diff-updated from snapshots)."""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from typing import ClassVar

from necrocode.dispatcher.snapshot import (
    FinishedTaskView,
    PendingReason,
    QueuedTaskView,
    RunningTaskView,
)

from .difftable import CellValue, Column, DiffTable, SortSpec
from .format import (
    fitted,
    fmt_clock,
    fmt_cost,
    fmt_duration,
    fmt_tokens,
    heartbeat_text,
    runs_of,
    state_text,
    state_value,
    truncate,
    usage_of,
)

_INF = float("inf")


_DIGITS = re.compile(r"(\d+)")


def _natural(key: str) -> str:
    """A string that sorts as :func:`natural_key` does (``fe.9`` before ``fe.10``, a taskset's
    tasks before the next taskset's), compared at C speed: per part (taskset, id), digit runs
    as ``\x01`` + their length + their digits, texts as ``\x02`` + the text, ``\x00`` at the
    part's end (a shorter part first). Kept per row by the model (``by_key``)."""
    out: list[str] = []
    for part in key.split("/", 1):
        for i, piece in enumerate(_DIGITS.split(part)):
            if i % 2:
                digits = str(int(piece))
                out.append(f"\x01{chr(len(digits) + 32)}{digits}")
            else:
                out.append("\x02" + piece)
        out.append("\x00")
    return "".join(out)

#: Colours of pending reasons: red when the task can never run as things stand.
_PENDING_STYLES: dict[PendingReason, str] = {
    PendingReason.QUEUED: "cyan",
    PendingReason.WAITING_DEPENDENCIES: "grey62",
    PendingReason.BLOCKED_BY_FAILURE: "bold red",
    PendingReason.EXCEEDS_QUOTA: "bold red",
    PendingReason.NO_POOL_FOR_SKILL: "bold red",
    PendingReason.DEADLOCK: "bold red",
    PendingReason.INVALID_TASK: "bold red",
    PendingReason.POOL_DISABLED: "yellow",
    PendingReason.POOL_UNHEALTHY: "yellow",
    PendingReason.PAUSED: "yellow",
}


_TOKENS = frozenset({"tokens"})
_TOKENS_COST = frozenset({"tokens", "cost"})
_NONE: frozenset[str] = frozenset()


def usage_flags(view: object) -> frozenset[str]:
    """``tokens`` when the row has a coding agent's usage, ``cost`` too when it has a cost."""
    spent = usage_of(view)
    if spent is None:
        return _NONE
    return _TOKENS if spent[1] is None else _TOKENS_COST


def usage_cells(view: object) -> tuple[str, str]:
    """The TOKENS and COST cells of a view (``-`` when its task reported none)."""
    spent = usage_of(view)
    if spent is None:
        return "-", "-"
    return fmt_tokens(spent[0]), fmt_cost(spent[1])


class QueueTable(DiffTable[QueuedTaskView]):
    """READY and BLOCKED tasks: position, skill, tenant, priority, wait, pending reason (B1)."""

    COLUMNS: ClassVar[tuple[Column, ...]] = (
        Column("pos", "#", width=4, lazy=True),
        Column("state", "state", width=7, drop=2),
        Column("skill", "skill", width=9, drop=1),
        Column("tenant", "tenant", width=8, drop=3),
        Column("prio", "prio", width=4),
        Column("wait", "wait", width=6, lazy=True),
        Column("pending", "pending reason", width=36, flex=True),
    )
    SORTS: ClassVar[dict[str, SortSpec]] = {
        "task": SortSpec("task", lambda v, now: _natural(v.key), by_key=True),
        "skill": SortSpec("skill", lambda v, now: (v.skill, -v.priority)),
        "priority": SortSpec("priority", lambda v, now: -v.priority),
        "wait": SortSpec("wait", lambda v, now: v.ready_at if v.ready_at else v.created_at),
        "tenant": SortSpec("tenant", lambda v, now: v.tenant),
    }

    def __init__(self, *, clock: object, id: str | None = None) -> None:
        super().__init__(clock=clock, id=id)  # type: ignore[arg-type]
        # the shown snapshot's positions (set before each apply): views carry none, so a
        # dispatch that moves every task up changes no row, only the visible "#" cells
        self.position_of: Callable[[str], int | None] = lambda key: None

    def signature(self, view: QueuedTaskView) -> Hashable:
        return (
            view.state,
            view.skill,
            view.tenant,
            view.priority,
            view.pending.message,
            view.title,
            view.next_attempt_at,
        )

    def static_cells(self, view: QueuedTaskView) -> tuple[CellValue, ...]:
        style = _PENDING_STYLES.get(view.pending.reason, "")
        return (
            state_text(view.state),
            truncate(view.skill, 9),
            truncate(view.tenant, 8),
            str(view.priority),
            fitted(view.pending.message, style),
        )

    def lazy_cells(self, view: QueuedTaskView, now: float) -> tuple[CellValue, ...]:
        position = self.position_of(view.key)
        pos = "-" if position is None else str(position)
        since = view.ready_at if view.ready_at else view.created_at
        return (pos, fmt_duration(now - since))

    def search_text(self, view: QueuedTaskView) -> str:
        return " ".join(
            (view.key, view.title, view.skill, view.tenant, state_value(view.state),
             view.pending.message, view.pending.reason.value)
        ).lower()


class RunningTable(DiffTable[RunningTaskView]):
    """Tasks with a live runner; heartbeat age coloured against the heartbeat timeout."""

    COLUMNS: ClassVar[tuple[Column, ...]] = (
        Column("pool", "pool", width=9),
        Column("runtime", "runtime", width=7, lazy=True),
        Column("hb", "heartbeat", width=9, lazy=True),
        Column("att", "run", width=3, drop=3),
        Column("tokens", "tokens", width=6, drop=2, auto=True),
        Column("cost", "cost", width=7, drop=1, auto=True),
        Column("runner", "runner", width=16, drop=5),
        Column("slot", "slot", width=10, drop=4),
        Column("progress", "progress", width=16, flex=True),
    )
    SORTS: ClassVar[dict[str, SortSpec]] = {
        "task": SortSpec("task", lambda v, now: _natural(v.key), by_key=True),
        "skill": SortSpec("skill", lambda v, now: (v.skill, -v.priority)),
        "priority": SortSpec("priority", lambda v, now: -v.priority),
        "wait": SortSpec("wait", lambda v, now: v.started_at),
        "tenant": SortSpec("tenant", lambda v, now: v.tenant),
    }

    def __init__(self, *, clock: object, id: str | None = None) -> None:
        super().__init__(clock=clock, id=id)  # type: ignore[arg-type]
        self.heartbeat_timeout = 60.0

    def signature(self, view: RunningTaskView) -> Hashable:
        return (view.pool, view.runner_id, view.slot_id, view.attempt, view.progress,
                usage_of(view))

    def row_flags(self, view: RunningTaskView) -> frozenset[str]:
        return usage_flags(view)

    def static_cells(self, view: RunningTaskView) -> tuple[CellValue, ...]:
        return (
            truncate(view.pool, 9),
            str(view.attempt),
            *usage_cells(view),
            truncate(view.runner_id, 16),
            truncate(view.slot_id or "-", 10),
            fitted(view.progress),
        )

    def lazy_cells(self, view: RunningTaskView, now: float) -> tuple[CellValue, ...]:
        return (
            fmt_duration(now - view.started_at),
            heartbeat_text(now - view.last_sign_of_life, self.heartbeat_timeout),
        )

    def search_text(self, view: RunningTaskView) -> str:
        return " ".join(
            (view.key, view.title, view.skill, view.tenant, view.pool, view.runner_id, "running")
        ).lower()

    def visible_range(self) -> range:
        # Few rows: keep every runtime and heartbeat ticking, even scrolled away.
        return range(len(self.model.order))


class FinishedTable(DiffTable[FinishedTaskView]):
    """DONE, FAILED and CANCELLED tasks, newest first: outcome, runs, duration, last error."""

    COLUMNS: ClassVar[tuple[Column, ...]] = (
        Column("outcome", "outcome", width=9),
        Column("att", "runs", width=4, drop=4),
        Column("duration", "duration", width=8, drop=5),
        Column("at", "finished", width=8, drop=3),
        Column("tokens", "tokens", width=6, drop=2, auto=True),
        Column("cost", "cost", width=7, drop=1, auto=True),
        Column("pool", "pool", width=10, drop=6),
        Column("error", "last error", width=20, flex=True, least=12),
    )
    FOLLOW_HEAD: ClassVar[bool] = True  # the newest on top stay in view
    SORTS: ClassVar[dict[str, SortSpec]] = {
        "task": SortSpec("task", lambda v, now: _natural(v.key), by_key=True),
        "wait": SortSpec("wait", lambda v, now: -(v.duration or 0.0)),
        "skill": SortSpec("skill", lambda v, now: state_value(v.state)),
        "priority": SortSpec("priority", lambda v, now: -(v.finished_at or 0.0)),
        "tenant": SortSpec("tenant", lambda v, now: v.taskset),
    }

    def signature(self, view: FinishedTaskView) -> Hashable:
        return (view.state, view.attempts, view.started_at, view.finished_at, view.last_error,
                view.pool, usage_of(view))

    def row_flags(self, view: FinishedTaskView) -> frozenset[str]:
        return usage_flags(view)

    def static_cells(self, view: FinishedTaskView) -> tuple[CellValue, ...]:
        return (
            state_text(view.state),
            str(runs_of(view.state, view.attempts)),
            fmt_duration(view.duration),
            fmt_clock(view.finished_at),
            *usage_cells(view),
            truncate(view.pool or "-", 10),
            fitted(view.last_error, "red"),
        )

    def search_text(self, view: FinishedTaskView) -> str:
        return " ".join(
            (view.key, view.title, state_value(view.state), view.pool or "",
             view.last_error or "")
        ).lower()
