"""Task detail (enter): fields, dependency chain, every event, the attempt's log tail (following).

Registry reads happen in a thread worker (SQLite may wait on a lock), one at a time. The log
panel shows exactly the tail of the file its title names: it follows the file by offset (only
bytes added since the last read), starts over when the attempt's log path changes, and re-reads
from the start when the file was truncated or replaced (rotation).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from necrocode.dispatcher.models import Task, TaskEvent, Usage
from necrocode.dispatcher.snapshot import Snapshot
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, RichLog, Static

from ..widgets.eventtail import event_line
from ..widgets.format import (
    budget_text,
    fmt_datetime,
    fmt_duration,
    heartbeat_style,
    runs_of,
    state_text,
    state_value,
    usage_text,
)
from .task_verbs import TaskVerbScreen

if TYPE_CHECKING:
    from ..app import NecroApp

log = logging.getLogger(__name__)
_LOG_NAMES = ("output.log", "agent.log", "stdout.log")
_MAX_LOG_READ = 64 * 1024
_HEAD = 64


@dataclass
class DetailData:
    """What the detail screen shows, loaded off the UI thread."""

    task: Task | None = None
    error: str | None = None
    deps: list[tuple[int, Task]] = field(default_factory=list)  # (depth, task), upstream
    dependents: list[Task] = field(default_factory=list)
    events: list[TaskEvent] = field(default_factory=list)
    log_path: Path | None = None


@dataclass(frozen=True)
class LogChunk:
    """Complete lines read from a log file, from byte ``start`` up to ``end``.

    ``reset``: the panel must be cleared before writing (first read of this file, truncated or
    replaced); ``skipped``: bytes between the previous offset and ``start`` left unread (the
    file grew by more than one read takes).
    """

    path: Path
    inode: int
    start: int
    end: int
    text: str
    reset: bool = False
    skipped: int = 0
    head: bytes = b""  # the file's first bytes: a rewrite of the same size is noticed too


def read_log_chunk(path: Path, inode: int | None, offset: int, head: bytes = b"",
                   max_read: int = _MAX_LOG_READ) -> LogChunk:
    """Read the complete lines added to ``path`` since ``offset`` (the tail on a first read).

    ``inode`` and ``head`` are those of the file read before (None: never read): another
    inode means the file was replaced, a size below ``offset`` or other first bytes that it was
    truncated or rewritten; all start over. A last line without its newline yet is left for the
    next read.
    """
    st = path.stat()
    with path.open("rb") as fh:
        now_head = fh.read(_HEAD)
    reset = (inode is None or st.st_ino != inode or st.st_size < offset
             or not now_head.startswith(head[:len(now_head)]) or len(now_head) < len(head))
    if reset:
        offset = 0
    start = offset
    skipped = 0
    if st.st_size - start > max_read:
        start = st.st_size - max_read
        skipped = start - offset
    with path.open("rb") as fh:
        fh.seek(start)
        raw = fh.read(st.st_size - start)
    if skipped:  # started mid-file: drop the partial first line
        cut = raw.find(b"\n")
        raw, start = (raw[cut + 1:], start + cut + 1) if cut >= 0 else (b"", st.st_size)
    last = raw.rfind(b"\n")
    if last < 0 and len(raw) < max_read:
        raw = b""  # an unfinished line: wait for its newline
    elif last >= 0:
        raw = raw[:last + 1]
    return LogChunk(path=path, inode=st.st_ino, start=start, end=start + len(raw),
                    text=raw.decode("utf-8", errors="replace"), reset=reset, skipped=skipped,
                    head=now_head)


def _find_log(app: NecroApp, task: Task) -> Path | None:
    snap = app.snapshot
    if snap is not None:
        for view in snap.running:
            if view.key == task.key and view.log_path:
                return Path(view.log_path)
    try:
        runs = Path(app.engine.config.resolved_state_dir()) / "runs"
        from necrocode.dispatcher.launchers.base import attempt_dir

        base = attempt_dir(runs, task, 1).parent
    except Exception:  # noqa: BLE001 - no state dir: no log
        return None
    if not base.is_dir():
        return None
    attempts = sorted(
        (p for p in base.glob("attempt-*") if p.is_dir()),
        key=lambda p: int(re.sub(r"\D", "", p.name) or 0),
    )
    for directory in reversed(attempts):
        for name in _LOG_NAMES:
            if (directory / name).is_file():
                return directory / name
    return None


def load_detail(app: NecroApp, key: str) -> DetailData:
    """Read the task, its dependency chain, dependents and events from the registry."""
    registry = app.engine.registry
    data = DetailData()
    if registry is None:  # attached over the HTTP API: the snapshot's fields only
        data.error = ("attached over the HTTP API: the dependencies, events and log of a task "
                      "are read from the registry on the dispatcher's machine "
                      f"(there: necroui show {key})")
        return data
    try:
        task = registry.get_task(key)
    except Exception as exc:  # noqa: BLE001 - shown on screen
        data.error = str(exc)
        return data
    data.task = task
    seen: set[str] = set()
    frontier: list[tuple[int, Task]] = [(0, task)]
    while frontier and len(data.deps) < 200:
        depth, current = frontier.pop(0)
        keys = [f"{current.taskset}/{d}" for d in current.dependencies]
        found = registry.get_tasks([k for k in keys if k not in seen])
        for dep_key in keys:
            if dep_key in seen or dep_key not in found:
                continue
            seen.add(dep_key)
            data.deps.append((depth + 1, found[dep_key]))
            frontier.append((depth + 1, found[dep_key]))
    siblings = registry.list_tasks(taskset=task.taskset)
    data.dependents = [t for t in siblings if task.id in t.dependencies]
    data.events = list(registry.get_events(task_key=key))
    data.log_path = _find_log(app, task)
    return data


def fields_table(task: Task, now: float, snap: Snapshot | None = None,
                 max_attempts: int | None = None) -> Table:
    """Key/value table of a task's fields, with what the newest snapshot says about it: the
    pending reason and queue position of a queued task, the runner of a running one."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold grey70", no_wrap=True)
    table.add_column()
    state = state_value(task.state)
    runs = runs_of(task.state, task.attempts)
    limit = max_attempts or task.max_attempts
    attempt = f"{runs} of {limit}" if limit else str(runs)
    if state in ("ready", "blocked") and runs == 0:
        attempt += " (not run yet)"
    elif state in ("ready", "blocked"):
        attempt += f" run so far ({task.attempts} failed)"
    rows: list[tuple[str, Any]] = [
        ("key", Text(task.key, style="bold")),
        ("title", task.title or "-"),
        ("state", state_text(task.state)),
    ]
    queued = next((v for v in snap.queued if v.key == task.key), None) if snap else None
    running = next((v for v in snap.running if v.key == task.key), None) if snap else None
    if queued is not None:
        rows.append(("pending", Text(queued.pending.message, style="bold")))
        position = snap.position_of(task.key) if snap else None
        rows.append(("queue position", str(position) if position is not None
                     else "- (not placeable yet)"))
    if running is not None:
        hb_age = now - running.last_sign_of_life
        timeout = snap.heartbeat_timeout if snap else 60.0
        rows += [
            ("runner", f"{running.runner_id} ({state_value(running.runner_state)})"),
            ("pool", running.pool),
            ("slot", running.slot_id or "-"),
            ("heartbeat", Text(f"{fmt_duration(hb_age)} ago",
                               style=heartbeat_style(hb_age, timeout))),
            ("running for", fmt_duration(now - running.started_at)),
        ]
        if running.progress:
            rows.append(("progress", running.progress))
    rows += [
        ("attempt", attempt),
        ("skill", task.required_skill or "-"),
        ("priority", str(task.priority)),
        ("tenant", task.tenant),
        ("resources", f"cpu {task.resources.cpu:g}, memory {task.resources.memory_mb} MB"),
        ("timeout", fmt_duration(task.timeout) if task.timeout else "-"),
        ("repo", task.repo or "-"),
        ("command", " ".join(task.command) if task.command
         else f"(built by the {task.agent} preset)" if task.agent else "(pool's agent_command)"),
        ("created", fmt_datetime(task.created_at)),
        ("ready since", fmt_datetime(task.ready_at)),
        ("started", fmt_datetime(task.started_at)),
        ("finished", fmt_datetime(task.finished_at)),
    ]
    if running is None:
        rows += [("runner", task.runner_id or "-"), ("slot", task.assigned_slot or "-")]
        if state == "running" and task.started_at:
            rows.append(("running for", fmt_duration(now - (task.started_at or now))))
    rows += agent_rows(task, running.usage if running is not None else None)
    if task.next_attempt_at:
        rows.append(("next attempt", fmt_datetime(task.next_attempt_at)))
    if task.last_error:
        rows.append(("last error", Text(task.last_error, style="red")))
    if task.description:
        rows.append(("description", task.description))
    for name, value in rows:
        table.add_row(name, value)
    return table


def agent_rows(task: Task, this_run: Usage | None) -> list[tuple[str, Any]]:
    """The coding agent's rows: preset, usage (this run's when running, all runs'), budget."""
    rows: list[tuple[str, Any]] = []
    if task.agent:
        rows.append(("agent", task.agent))
    if this_run is not None:
        rows.append(("usage (this run)", Text(usage_text(this_run), style="magenta")))
    if task.usage is not None:
        rows.append(("usage (all runs)" if this_run is not None else "usage",
                     Text(usage_text(task.usage), style="magenta")))
    budget = budget_text(task.max_cost_usd, task.max_tokens, task.max_turns, this_run)
    if budget:
        rows.append(("budget (per run)", budget))
    return rows


def deps_text(data: DetailData) -> Text:
    """The upstream chain (indented by depth) and the direct dependents."""
    text = Text()
    if not data.deps:
        text.append("no dependencies\n", style="grey62")
    for depth, dep in data.deps:
        text.append("  " * (depth - 1) + "↑ ")
        text.append(dep.key, style="bold")
        text.append(" ")
        text.append_text(state_text(dep.state))
        text.append(f"  {dep.title}\n", style="grey62")
    if data.dependents:
        text.append("dependents:\n", style="bold")
        for dep in data.dependents:
            text.append("↓ ")
            text.append(dep.key, style="bold")
            text.append(" ")
            text.append_text(state_text(dep.state))
            text.append(f"  {dep.title}\n", style="grey62")
    return text


class TaskDetailScreen(TaskVerbScreen):
    """Everything known about one task; follows its log while it runs."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="detail_back"),
        Binding("g", "graph", "Graph", id="detail_graph"),
        Binding("L,l", "agent_log", "Log", id="detail_log"),
        Binding("r", "retry", "Retry", id="detail_retry"),
        Binding("c", "cancel", "Cancel", id="detail_cancel"),
        Binding("plus", "bump(1)", "Prio+", show=False, id="detail_priority_up"),
        Binding("minus", "bump(-1)", "Prio-", show=False, id="detail_priority_down"),
        Binding("p", "pause", "Pause/resume", show=False, id="detail_pause"),
    ]
    MUTATING = frozenset({"retry", "cancel", "bump", "pause"})

    def __init__(self, key: str) -> None:
        super().__init__(classes="detail")
        self.key = key
        self.data: DetailData | None = None
        self._log_path: Path | None = None  # the file the panel shows (UI thread only)
        self._log_inode: int | None = None
        self._log_offset = 0
        self._log_head = b""
        self._loading = False

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail-scroll"):
            yield Static(Text(f"Task {self.key}", style="bold"), id="detail-title")
            yield Static("loading…", id="detail-fields", classes="section")
            yield Static("", id="detail-deps", classes="section")
            yield Static("", id="detail-events", classes="section")
            yield RichLog(id="detail-log", max_lines=400, wrap=False, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#detail-fields").border_title = "fields"
        self.query_one("#detail-deps").border_title = "dependencies"
        self.query_one("#detail-events").border_title = "events"
        self.query_one("#detail-log").border_title = "log"
        self.reload()
        self.set_interval(1.0, self.reload, name="detail-refresh")

    def reload(self) -> None:
        """Re-read the registry and the log in a thread (one read at a time)."""
        if self._loading:
            return
        self._loading = True
        state = (self._log_path, self._log_inode, self._log_offset, self._log_head)
        self.run_worker(lambda: self._load(*state), thread=True, group="detail",
                        exit_on_error=False)

    def _load(self, path: Path | None, inode: int | None, offset: int, head: bytes) -> None:
        data = DetailData()
        chunk: LogChunk | str | None = None
        try:
            data = load_detail(self.necro, self.key)
            if data.log_path is not None:
                if data.log_path != path:
                    inode, offset, head = None, 0, b""
                try:
                    chunk = read_log_chunk(data.log_path, inode, offset, head)
                except OSError as exc:
                    chunk = f"(cannot read {data.log_path}: {exc})"
        except Exception as exc:  # noqa: BLE001 - shown on screen
            log.exception("task detail of %s failed", self.key)
            data.error = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                self.app.call_from_thread(self._show, data, chunk)
            except Exception:  # noqa: BLE001 - the app is closing
                self._loading = False

    def _show(self, data: DetailData, chunk: LogChunk | str | None) -> None:
        self._loading = False
        if not self.is_mounted:
            return
        self.data = data
        self._show_log(data.log_path, chunk)
        if data.task is None:
            self.query_one("#detail-fields", Static).update(
                Text(data.error or "task not found", style="bold red"))
            return
        now = self.necro.clock()
        self.query_one("#detail-fields", Static).update(
            fields_table(data.task, now, self.necro.snapshot, self._max_attempts(data.task)))
        self.query_one("#detail-deps", Static).update(deps_text(data))
        events = Group(*(event_line(e) for e in data.events)) if data.events else Text(
            "no events", style="grey62")
        self.query_one("#detail-events", Static).update(events)

    def _show_log(self, path: Path | None, chunk: LogChunk | str | None) -> None:
        """Write the new lines; start over when the file (attempt) changed or was reset."""
        widget = self.query_one("#detail-log", RichLog)
        if path != self._log_path:
            widget.clear()
            self._log_path, self._log_inode, self._log_offset = path, None, 0
            self._log_head = b""
        title = f"log {path}" if path else "log (none yet)"
        if widget.border_title != title:
            widget.border_title = title
        if isinstance(chunk, str):
            widget.clear()
            widget.write(Text(chunk, style="red"))
            self._log_inode, self._log_offset, self._log_head = None, 0, b""
            return
        if chunk is None or chunk.path != self._log_path:
            return
        if chunk.reset:
            widget.clear()
        if chunk.skipped and not chunk.reset:
            widget.write(Text(f"… {chunk.skipped} bytes not shown", style="grey50"))
        for line in chunk.text.splitlines():
            widget.write(Text(line))
        self._log_inode, self._log_offset, self._log_head = chunk.inode, chunk.end, chunk.head

    def _max_attempts(self, task: Task) -> int | None:
        if task.max_attempts:
            return int(task.max_attempts)
        config = getattr(self.necro.engine, "config", None)
        value = getattr(config, "retry_max_attempts", None)
        return max(1, int(value)) if value else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.necro.read_only and action in self.MUTATING:
            return False
        return True

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_graph(self) -> None:
        self.necro.open_graph(self.key)

    def action_agent_log(self) -> None:
        self.necro.open_agent_log(self.key)

