"""The agent view (L): a task's attempt log full screen, its prompt, its work, and the verbs.

Every file is read in a thread worker: the log follows its file by offset (the detail screen's
``read_log_chunk``), the prompt is the attempt's ``prompt.md``, the diff comes from
``task_diff`` (the branch against its base). ``[``/``]`` pick earlier or later attempts, ``/``
searches, ``n``/``N`` jump between matches, ``w`` wraps, ``f`` follows, ``s`` saves what is shown.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Input, Static

from ..widgets.logview import LogView
from .detail import _LOG_NAMES, LogChunk, read_log_chunk
from .task_verbs import TaskVerbScreen

log = logging.getLogger(__name__)

MODES = ("log", "prompt", "diff")


def attempt_dirs(state_dir: str | Path, task: Any) -> list[Path]:
    """The attempt folders of a task, oldest first."""
    from necrocode.dispatcher.launchers.base import attempt_dir

    base = attempt_dir(Path(state_dir) / "runs", task, 1).parent
    if not base.is_dir():
        return []
    found = [p for p in base.glob("attempt-*") if p.is_dir()]
    return sorted(found, key=lambda p: int(re.sub(r"\D", "", p.name) or 0))


def log_file(directory: Path) -> Path | None:
    for name in _LOG_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


class AgentLogScreen(TaskVerbScreen):
    """One task's attempt, full screen: log (following), prompt, diff; verbs work here too."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="log_back"),
        Binding("slash", "search", "Search", id="log_search"),
        Binding("n", "jump(1)", "Next", id="log_next"),
        Binding("N", "jump(-1)", "Prev", show=False, id="log_prev"),
        Binding("w", "wrap", "Wrap", id="log_wrap"),
        Binding("f", "follow", "Follow", id="log_follow"),
        Binding("left_square_bracket", "attempt(-1)", "Earlier", id="log_earlier"),
        Binding("right_square_bracket", "attempt(1)", "Later", show=False, id="log_later"),
        Binding("P", "mode('prompt')", "Prompt", id="log_prompt"),
        Binding("D", "mode('diff')", "Diff", id="log_diff"),
        Binding("l", "mode('log')", "Log", show=False, id="log_log"),
        Binding("s", "save", "Save", id="log_save"),
        Binding("r", "retry", "Retry", show=False, id="log_retry"),
        Binding("c", "cancel", "Cancel", show=False, id="log_cancel"),
        Binding("plus", "bump(1)", "Prio+", show=False, id="log_priority_up"),
        Binding("minus", "bump(-1)", "Prio-", show=False, id="log_priority_down"),
        Binding("p", "pause", "Pause", show=False, id="log_pause"),
    ]
    MUTATING = frozenset({"retry", "cancel", "bump", "pause"})

    def __init__(self, key: str, attempt: int | None = None) -> None:
        super().__init__(classes="agent-log")
        self.key = key
        self.attempt = attempt  # None: the newest
        self.mode = "log"
        self.attempts: list[Path] = []
        self.path: Path | None = None
        self._inode: int | None = None
        self._offset = 0
        self._head = b""
        self._busy = False
        self._record: Any = None
        self._saved: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="log-title")
        yield LogView(id="log-view")
        yield Input(placeholder="search: enter jumps to the next match, esc closes",
                    id="log-search")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#log-search", Input).display = False
        self.query_one(LogView).focus()
        self._poll()
        self.set_interval(0.5, self._poll, name="agent-log")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.necro.read_only and action in self.MUTATING:
            return False
        return True

    # --- reading (thread workers) ----------------------------------------------------------------
    def _poll(self) -> None:
        if self._busy or (self.mode != "log" and self._record is not None):
            return
        self._busy = True
        state = (self.attempt, self.path, self._inode, self._offset, self._head, self.mode)
        self.run_worker(lambda: self._read(*state), thread=True, group="agent-log",
                        exit_on_error=False)

    def _read(self, attempt: int | None, path: Path | None, inode: int | None, offset: int,
              head: bytes, mode: str) -> None:
        result: dict[str, Any] = {}
        try:
            engine = self.necro.engine
            if engine.registry is None:
                raise LookupError("attached over the HTTP API: logs are read on the "
                                  "dispatcher's machine")
            task = engine.registry.get_task(self.key)
            state_dir = engine.config.resolved_state_dir()
            dirs = attempt_dirs(state_dir, task)
            result.update(task=task, attempts=dirs)
            chosen = dirs[-1] if attempt is None and dirs else None
            if attempt is not None:
                chosen = next((d for d in dirs if d.name == f"attempt-{attempt}"), None)
            if mode == "log":
                file = log_file(chosen) if chosen is not None else None
                result["path"] = file
                if file is not None:
                    if file != path:
                        inode, offset, head = None, 0, b""
                    result["chunk"] = read_log_chunk(file, inode, offset, head)
            elif mode == "prompt":
                prompt = chosen / "prompt.md" if chosen is not None else None
                result["path"] = prompt
                result["lines"] = (prompt.read_text(encoding="utf-8", errors="replace")
                                   .splitlines() if prompt is not None and prompt.is_file()
                                   else ["(no prompt.md in this attempt: the agent preset "
                                         "writes it when it builds the prompt)"])
            else:
                result["lines"] = self._diff_lines(task, state_dir)
        except Exception as exc:  # noqa: BLE001 - shown on screen
            result["error"] = f"{type(exc).__name__}: {exc}" if not isinstance(
                exc, LookupError) else str(exc)
        try:
            self.app.call_from_thread(self._show, mode, result)
        except RuntimeError:  # the app is closing
            self._busy = False

    @staticmethod
    def _diff_lines(task: Any, state_dir: Any) -> list[str]:
        if not getattr(task, "branch", None):
            return ["(no branch recorded yet: the work is recorded when a run succeeds)"]
        from necrocode.dispatcher.work_diff import task_diff

        result = task_diff(task, state_dir, patch=True)
        lines = [f"{task.key} on {result.branch}: {result.base[:10]}..{result.head[:10]}, "
                 f"{len(result.commits)} commit(s)"]
        lines += [f"  {c.sha[:10]} {c.subject}" for c in result.commits]
        lines += [f"  {f.path}  " + ("bin" if f.binary else f"+{f.added} -{f.deleted}")
                  for f in result.files]
        lines += ["", *result.patch.splitlines()]
        if result.truncated:
            lines.append(f"(patch cut at {len(result.patch)} characters)")
        return lines

    def _show(self, mode: str, result: dict[str, Any]) -> None:
        self._busy = False
        if not self.is_mounted or mode != self.mode:
            return
        view = self.query_one(LogView)
        self._record = result.get("task")
        self.attempts = result.get("attempts", [])
        if "error" in result:
            view.set_lines([result["error"]])
        elif mode == "log":
            path = result.get("path")
            if path != self.path:
                view.set_lines([] if path else ["(no log yet for this attempt)"])
                self.path, self._inode, self._offset, self._head = path, None, 0, b""
            chunk: LogChunk | None = result.get("chunk")
            if chunk is not None:
                if chunk.reset and self._inode is not None:
                    view.set_lines([])
                if chunk.skipped:
                    view.append([f"… {chunk.skipped} bytes not shown"])
                view.append(chunk.text.splitlines())
                self._inode, self._offset, self._head = chunk.inode, chunk.end, chunk.head
        else:
            self.path = result.get("path")
            view.set_lines(result.get("lines", []), diff=mode == "diff")
        self._title()

    def _title(self) -> None:
        view = self.query_one(LogView)
        text = Text(f" {self.key} ", style="bold")
        names = [p.name.removeprefix("attempt-") for p in self.attempts]
        shown = str(self.attempt) if self.attempt is not None else (names[-1] if names else "-")
        text.append(f" {self.mode} of attempt {shown} of {len(names) or '-'} ", style="bold cyan")
        usage = self._usage()
        if usage:
            text.append(f" {usage} ", style="magenta")
        text.append(f" follow {'on' if view.follow else 'off'} · wrap "
                    f"{'on' if view.wrap else 'off'} ", style="grey62")
        if view.term:
            text.append(f" /{view.term} ", style="bold yellow")
        if self.path is not None:
            text.append(f" {self.path}", style="grey50")
        if self._saved:
            text.append(f"  saved {self._saved}", style="green")
        self.query_one("#log-title", Static).update(text)

    def _usage(self) -> str:
        """Tokens and cost when the snapshot's view carries them (``usage``)."""
        snap = self.necro.snapshot
        if snap is None:
            return ""
        for view in (*snap.running, *snap.finished, *snap.queued):
            if view.key == self.key:
                usage = getattr(view, "usage", None)
                if not usage:
                    return ""
                get = usage.get if isinstance(usage, dict) else (
                    lambda k, d=None, u=usage: getattr(u, k, d))
                parts = []
                tokens = (get("input_tokens") or 0) + (get("output_tokens") or 0)
                if tokens:
                    parts.append(f"{tokens:,} tokens")
                cost = get("cost_usd")
                if cost is not None:
                    parts.append(f"${float(cost):.2f}")
                return " · ".join(parts)
        return ""

    # --- keys ------------------------------------------------------------------------------------
    def action_back(self) -> None:
        box = self.query_one("#log-search", Input)
        if box.display:
            box.display = False
            self.query_one(LogView).focus()
            return
        self.app.pop_screen()

    def action_search(self) -> None:
        box = self.query_one("#log-search", Input)
        box.display = True
        self.set_focus(box)

    @on(Input.Submitted, "#log-search")
    def _searched(self, event: Input.Submitted) -> None:
        view = self.query_one(LogView)
        view.set_term(event.value.strip())
        view.current = None
        if view.term and not view.jump(1):
            self.notify(f"'{view.term}' not found", severity="warning")
        event.input.display = False
        view.focus()
        self._title()

    def action_jump(self, step: int) -> None:
        view = self.query_one(LogView)
        if not view.term:
            self.notify("search first with /", severity="warning")
        elif not view.jump(step):
            self.notify(f"'{view.term}' not found", severity="warning")
        self._title()

    def action_wrap(self) -> None:
        view = self.query_one(LogView)
        view.set_wrap(not view.wrap)
        self._title()

    def action_follow(self) -> None:
        view = self.query_one(LogView)
        if view.follow:
            view.follow = False
        else:
            view.action_bottom()
        self._title()

    def action_attempt(self, step: int) -> None:
        names = [int(p.name.removeprefix("attempt-")) for p in self.attempts]
        if not names:
            self.notify("no attempt recorded yet", severity="warning")
            return
        current = self.attempt if self.attempt is not None else names[-1]
        index = names.index(current) + step if current in names else len(names) - 1
        if not 0 <= index < len(names):
            self.notify("no earlier attempt" if step < 0 else "no later attempt",
                        severity="warning")
            return
        self.attempt = names[index]
        self.path = None
        self._record = None
        self._poll()

    def action_mode(self, mode: str) -> None:
        self.mode = mode if mode != self.mode else "log"
        self.path = None
        self._record = None
        self._poll()

    def action_save(self) -> None:
        lines = list(self.query_one(LogView).text.lines)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.key)
        name = f"necroui-{safe}-{self.mode}-attempt-{self.attempt or 'latest'}.txt"
        target = Path.cwd() / name

        def work() -> None:
            try:
                target.write_text("\n".join(lines) + "\n", encoding="utf-8")
                message, severity = f"saved {len(lines)} lines to {target}", "information"
            except OSError as exc:
                message, severity = f"cannot save {target}: {exc.strerror or exc}", "error"
            self.app.call_from_thread(self._after_save, message, severity, str(target))

        self.run_worker(work, thread=True, group="agent-log-save", exit_on_error=False)

    def _after_save(self, message: str, severity: str, target: str) -> None:
        self.notify(message, severity=severity)  # type: ignore[arg-type]
        if severity == "information":
            self._saved = target
            self._title()

