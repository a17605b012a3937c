"""necroui: the Textual operations dashboard of NecroCode Dispatcher.

:class:`NecroApp` reads the engine's newest :class:`Snapshot` on a timer and diff-updates its
widgets; it never touches engine internals. Verbs go through the engine's control methods
(``pause``, ``set_priority``, …) from thread workers, and their answers show as notifications.
:func:`run_dashboard` is what the bare ``necroui`` command calls.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, ClassVar, Protocol

from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.errors import DispatcherError
from necrocode.dispatcher.notify import Notice, NoticeDeriver
from necrocode.dispatcher.snapshot import Snapshot
from textual import events
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import ModalScreen, Screen

from .bumps import PriorityBumper
from .collector import CollectorPacer
from .desktop import DesktopNotifier
from .run import run_dashboard as run_dashboard  # the bare ``necroui`` command's entry
from .screens.main import MUTATING_ACTIONS, MainScreen
from .screens.modals import QuitChoice, QuitModal
from .stepper import SteppedApply
from .widgets import DashboardHeader

log = logging.getLogger(__name__)

#: While keys come, a new snapshot waits until none came for this long (seconds)…
KEYS_QUIET = 0.3
#: …or until the one shown is this old.
KEYS_FIRST = 2.0


class EngineLike(Protocol):
    """What the dashboard needs from :class:`DispatcherCore` (a fake implements it in tests)."""

    registry: Any
    config: DispatcherConfig

    def snapshot(self) -> Snapshot | None: ...
    def pause(self) -> str: ...
    def resume(self) -> str: ...
    def set_priority(self, task_key: str, priority: int) -> str: ...
    def retry(self, task_key: str, *, from_base: bool = False) -> str: ...
    def land(self, taskset: str) -> str: ...
    def cancel(self, task_key: str) -> str: ...
    def set_pool_enabled(self, pool_name: str, enabled: bool) -> str: ...


_ONE_PLURAL = re.compile(r"\b1 ((?:[\w-]+ )?)(\w+)\((\w+)\)")
_PLURAL = re.compile(r"\b(\w+)\((\w+)\)")


def fix_plurals(text: str) -> str:
    """``1 failed dependenc(ies)`` -> ``1 failed dependency``; ``2 task(s)`` -> ``2 tasks``.

    Engine answers write "(ies)"/"(s)" plurals; the console shows them as words.
    """

    def one(m: re.Match[str]) -> str:
        stem, suffix = m.group(2), m.group(3)
        word = stem + "y" if suffix == "ies" else stem
        return f"1 {m.group(1)}{word}"

    def many(m: re.Match[str]) -> str:
        stem, suffix = m.group(1), m.group(2)
        return stem + suffix if suffix in ("s", "es", "ies") else m.group(0)

    return _PLURAL.sub(many, _ONE_PLURAL.sub(one, text))


class NecroApp(App[QuitChoice]):
    """The dashboard. ``clock`` feeds every age on screen (frozen in snapshot tests)."""

    CSS_PATH = "necroui.tcss"
    TITLE = "necroui"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help", id="help"),
        Binding("q", "quit_app", "Quit", id="quit"),
        # ctrl+c / ctrl+q: the same quit flow as q (Textual's own would skip the dialog or only
        # say "press ctrl+q to quit").
        Binding("ctrl+q", "quit_app", "Quit", id="quit_ctrl_q", show=False, priority=True),
        # a second ctrl+c while the quit dialog asks stops the runners now (as docker compose)
        Binding("ctrl+c", "interrupt", "Quit", id="quit_ctrl_c", show=False, priority=True),
        Binding("ctrl+p", "command_palette", "Palette", id="command_palette", show=False),
    ]

    def __init__(
        self,
        engine: EngineLike,
        *,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
        refresh_interval: float | None = None,
        keymap: dict[str, str] | None = None,
        notice: str | None = None,
        owns_engine: bool = True,
        notify_osc: str | None = None,
        osc_write: Callable[[str], None] | None = None,
        pace_collector: bool = False,
    ) -> None:
        super().__init__()
        # False when attached: quitting leaves the remote dispatcher and its runners alone
        self.owns_engine = owns_engine
        self.notice = notice  # shown once at start (e.g. "the demo already ran in …")
        self.engine = engine
        self.read_only = read_only
        self.clock = clock
        ui = getattr(getattr(engine, "config", None), "ui", None)
        self.refresh_interval = refresh_interval or getattr(ui, "refresh_interval", 0.5) or 0.5
        self.keymap: dict[str, str] = dict(keymap if keymap is not None
                                           else getattr(ui, "keymap", {}) or {})
        self.snapshot: Snapshot | None = None
        self.main = MainScreen()
        self.bumper = PriorityBumper(engine, self._report_from_thread)
        self.notices = NoticeDeriver()
        # desktop notifications (ui.notify_osc): the escape goes where Textual draws
        self.desktop = DesktopNotifier(notify_osc or getattr(ui, "notify_osc", "off") or "off",
                                       osc_write or self._write_to_terminal)
        self.unacknowledged: list[Notice] = []  # failures the operator has not looked at
        # the process's full garbage collections, paced (the necroui command; not in tests,
        # where many apps come and go in one process)
        self.collector = CollectorPacer() if pace_collector else None
        self._key_at = 0.0  # time.monotonic() of the last key pressed
        self._applied_at = 0.0  # of the last snapshot applied to the dashboard
        # the timer's snapshots are applied in steps, the loop free for keys between them
        self._taken = self._fed = 0  # new snapshots taken; the last one notices came from
        self.stepper = SteppedApply(self, covered=self._dashboard_covered,
                                    last_key=lambda: self._key_at)

    # --- lifecycle -------------------------------------------------------------------------------
    def on_mount(self) -> None:
        if self.keymap:
            self.set_keymap(self.keymap)
        self.push_screen(self.main)
        if self.notice:
            self.notify(self.notice, severity="warning", timeout=12)
        self.call_after_refresh(self.refresh_snapshot)
        self.set_interval(self.refresh_interval, self._refresh_tick, name="snapshot")

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key):
            self._key_at = time.monotonic()
        await super().on_event(event)

    def _refresh_tick(self) -> None:
        """The timer's refresh. While keys come (one in the last :data:`KEYS_QUIET` s), a new
        snapshot waits, up to :data:`KEYS_FIRST` s: applying one to 10k rows and drawing it
        takes the interpreter for a while, and the keys' own frames come first."""
        now = time.monotonic()
        if now - self._key_at < KEYS_QUIET and now - self._applied_at < KEYS_FIRST:
            return
        if self.stepper.busy and not self._dashboard_covered():
            return  # the last one is still being applied (covered: it waits for the dialog)
        self.refresh_snapshot(stepped=True)

    def refresh_snapshot(self, *, stepped: bool = False) -> None:
        """Take the engine's newest snapshot; apply it if new, else let the clock tick.

        ``stepped``: apply it panel by panel with the loop free in between (the timer's
        refresh: a key pressed meanwhile waits for one panel, not all); else at once, after
        what is left of a stepped apply."""
        if not stepped:
            self.stepper.finish()
        try:
            snap = self.engine.snapshot()
        except Exception:  # noqa: BLE001 - keep the UI alive; the log says why
            log.exception("engine snapshot failed")
            return
        if not self.main.is_mounted:
            return
        connection = getattr(self.engine, "connection", None)  # attached: the link's state
        if connection is not None:
            header = self.main.query_one(DashboardHeader)
            header.set_connection(None if connection.ok else connection.message)
        new = snap is not None and (self.snapshot is None or snap.version != self.snapshot.version)
        if new:
            self.snapshot = snap
        try:
            with self.batch_update():
                if not self._dashboard_covered():
                    if self.snapshot is not None and self.main.shown is not self.snapshot:
                        if stepped:
                            self.stepper.start(self.main.apply_steps(self.snapshot),
                                               self._applied)
                        else:
                            self.main.apply(self.snapshot)
                            self._applied()
                    elif not new:
                        self.main.tick()
                if new and snap is not None:
                    self._taken += 1
                    if stepped:  # after the first step, as a step of its own
                        self.call_later(self._feed, snap, self._taken)
                    else:
                        self._feed(snap, self._taken)
                    if isinstance(self.screen, QuitModal):
                        self.screen.set_running(len(snap.running))  # 0: closes, quits
        except NoMatches:  # the screen is being torn down (quitting)
            return

    def _applied(self) -> None:
        """A snapshot is on the dashboard, every panel of it."""
        self._applied_at = time.monotonic()
        if self.collector is not None:
            self.collector.settled()

    def _feed(self, snap: Snapshot, taken: int) -> None:
        """What the ``taken``-th new snapshot has to tell: toasts, the bell, hooks (each once,
        in order: a stepped refresh feeds it a moment later, a whole one at once)."""
        if taken <= self._fed or not self.main.is_mounted:
            return
        self._fed = taken
        self._tell(self.notices.feed(snap))

    def _dashboard_covered(self) -> bool:
        """A dialog (help, a question) is open over the dashboard. Textual draws the whole
        dashboard again behind a dialog for every change in it (hundreds of ms at 10k tasks),
        so the dashboard stands still until the dialog closes, then catches up at once."""
        stack = self.screen_stack
        return (len(stack) >= 2 and stack[-2] is self.main
                and isinstance(stack[-1], ModalScreen))

    # --- engine control (threads: the engine answers within a few seconds) ------------------
    def control(self, label: str, calls: list[Callable[[], str]]) -> None:
        """Run control calls in a thread worker; notify their answers or errors."""

        def work() -> None:
            answers: list[str] = []
            errors: list[str] = []
            for call in calls:
                try:
                    answers.append(str(call()))
                except DispatcherError as exc:
                    errors.append(str(exc))
                except Exception as exc:  # noqa: BLE001 - shown to the operator, logged
                    log.exception("%s failed", label)
                    errors.append(f"{label} failed: {type(exc).__name__}: {exc}")
            self.call_from_thread(self._report, answers, errors)

        self.run_worker(work, thread=True, group="control", exit_on_error=False,
                        name=label)

    def _tell(self, notices: list[Notice]) -> None:
        """Toast and bell for what needs the operator; failures wait for F (acknowledge)."""
        if not notices:
            return
        for notice in notices[:5]:
            self.notify(notice.message, title=notice.kind.value.replace("_", " "),
                        severity=notice.severity,  # type: ignore[arg-type]
                        timeout=10 if notice.severity == "error" else 6)
        if len(notices) > 5:
            self.notify(f"… and {len(notices) - 5} more", severity="warning")
        self.bell()
        self.desktop.tell(notices)
        failures = [n for n in notices if n.severity == "error"]
        if failures:
            self.unacknowledged.extend(failures)
            self.main.query_one(DashboardHeader).set_unacknowledged(len(self.unacknowledged))

    def _write_to_terminal(self, data: str) -> None:
        """Raw bytes to the terminal, in order with the frames (none headless or in a browser)."""
        if self.is_headless or self.is_web:
            return
        # Textual has no public handle on its driver; its write queues behind the frames
        driver = getattr(self, "_driver", None)
        if driver is not None:
            driver.write(data)
        elif sys.__stderr__ is not None:  # not started yet: where the driver will draw
            sys.__stderr__.write(data)
            sys.__stderr__.flush()

    def acknowledge_failures(self) -> None:
        """The operator has seen the failures (F): the header stops counting them."""
        self.unacknowledged.clear()
        self.main.query_one(DashboardHeader).set_unacknowledged(0)

    def _report_from_thread(self, answers: list[str], errors: list[str]) -> None:
        try:
            self.call_from_thread(self._report, answers, errors)
        except RuntimeError:  # the app has exited meanwhile
            log.info("answers after exit: %s %s", answers, errors)

    def _report(self, answers: list[str], errors: list[str]) -> None:
        answers = [fix_plurals(a) for a in answers]
        errors = [fix_plurals(e) for e in errors]
        if answers:
            shown = answers if len(answers) <= 3 else [*answers[:3], f"… and {len(answers) - 3}"]
            self.notify("\n".join(shown), timeout=4)
        for error in errors[:5]:
            self.notify(error, severity="error", timeout=8)
        self.refresh_snapshot()

    def toggle_pause(self) -> None:
        """Pause dispatching, or resume it when paused."""
        if self.read_only:
            return
        paused = self.snapshot is not None and self.snapshot.state == "paused"
        if paused:
            self.control("resume", [self.engine.resume])
        else:
            self.control("pause", [self.engine.pause])

    def bump_priorities(self, keys: list[str], delta: int) -> None:
        """Raise (or lower) priorities by ``delta``; quick presses all count."""
        if self.read_only or not keys:
            return
        self.bumper.bump(keys, delta)

    def set_priorities(self, changes: list[tuple[str, int]]) -> None:
        if self.read_only:
            return
        self.control("priority", [partial(self.engine.set_priority, k, p) for k, p in changes])

    def retry_tasks(self, keys: Iterable[str], *, from_base: bool = False) -> None:
        if self.read_only:
            return
        if from_base:
            self.control("start from base", [partial(self.engine.retry, k, from_base=True)
                                             for k in keys])
        else:
            self.control("retry", [partial(self.engine.retry, k) for k in keys])

    def land_tasksets(self, tasksets: Iterable[str]) -> None:
        """Land each taskset through the engine; its report follows as an event."""
        if self.read_only:
            return
        self.control("land", [partial(self.engine.land, name) for name in tasksets])

    def cancel_tasks(self, keys: Iterable[str]) -> None:
        if self.read_only:
            return
        self.control("cancel", [partial(self.engine.cancel, k) for k in keys])

    def set_pool_enabled(self, name: str, enabled: bool) -> None:
        if self.read_only:
            return
        self.control("pool", [partial(self.engine.set_pool_enabled, name, enabled)])

    # --- screens ---------------------------------------------------------------------------------
    def open_detail(self, key: str) -> None:
        from .screens.detail import TaskDetailScreen

        self.push_screen(TaskDetailScreen(key))

    def open_agent_log(self, key: str, attempt: int | None = None) -> None:
        """The agent view of a task: its attempt's log full screen, prompt, diff, verbs."""
        from .screens.agentlog import AgentLogScreen

        self.push_screen(AgentLogScreen(key, attempt))

    def open_graph(self, key: str | None) -> None:
        from .screens.graph import GraphScreen

        self.push_screen(GraphScreen(key))

    def open_deadlocks(self) -> None:
        """The modal listing dependency cycles and tasks blocked by failures."""
        from .screens.deadlocks import DeadlocksModal

        if not isinstance(self.screen, DeadlocksModal):
            deadlocks = self.snapshot.deadlocks if self.snapshot else ()
            self.push_screen(DeadlocksModal(deadlocks))

    def action_help(self) -> None:
        from .screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            return
        if not self.is_screen_installed("help"):
            # built once and kept: composing its table of keys takes a few hundred ms
            self.install_screen(HelpScreen(), "help")
        self.push_screen("help")

    def action_interrupt(self) -> None:
        """ctrl+c: ask as q does; a second ctrl+c while asking stops the runners now."""
        if isinstance(self.screen, QuitModal):
            self.screen.dismiss(QuitChoice.STOP)
            return
        self.action_quit_app()

    def action_quit_app(self) -> None:
        if isinstance(self.screen, QuitModal):
            return  # already asking
        # the snapshot the header shows (self.snapshot), not a newer one it has not drawn yet
        running = len(self.snapshot.running) if self.snapshot else 0
        if running and self.owns_engine:

            def done(choice: QuitChoice | None) -> None:
                if choice and choice is not QuitChoice.BACK:
                    self.exit(choice)

            self.push_screen(QuitModal(running), done)
        else:
            self.exit(QuitChoice.WAIT)

    def binding_key(self, binding: Binding) -> str:
        """The key(s) a binding answers to, after the config's keymap."""
        if binding.id and binding.id in self.keymap:
            return self.keymap[binding.id]
        return binding.key

    # --- command palette ---------------------------------------------------------------------
    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        for command in super().get_system_commands(screen):
            if command.callback == self.action_quit:
                # the same flow as q: asks Wait/Leave/Stop while runners run
                yield SystemCommand(command.title, "Quit (asks first while runners run)",
                                    self.action_quit_app)
            else:
                yield command
        main = self.main
        verbs: list[tuple[str, str, str, Callable[[], Any]]] = [
            ("pause_toggle", "Pause / resume dispatching", "running runners go on (p)",
             main.action_pause_toggle),
            ("priority_up", "Raise priority", "+1 on the selected/marked tasks (+)",
             main.action_priority_up),
            ("priority_down", "Lower priority", "-1 on the selected/marked tasks (-)",
             main.action_priority_down),
            ("priority_set", "Set priority…", "type a priority (=)", main.action_priority_set),
            ("retry", "Retry task", "retry the selected/marked failed or blocked tasks (r)",
             main.action_retry),
            ("cancel", "Cancel task…", "cancel the selected/marked tasks, asks first (c)",
             main.action_cancel),
            ("pool_toggle", "Enable / disable pool", "the pool selected in the pools panel (e)",
             main.action_pool_toggle),
            ("filter", "Filter tasks", "show only tasks matching words in key, title, skill, "
             "state, reason (/)", main.action_filter),
            ("detail", "Task detail", "fields, dependencies, events, log (enter)",
             main.action_detail),
            ("graph", "Dependency graph", "around the selected task (g)", main.action_graph),
            ("agent_log", "Agent view: log, prompt, diff",
             "the selected task's attempt full screen: follow, search, wrap (L)",
             main.action_agent_log),
            ("deadlocks", "Stuck tasks: cycles and blocked by failures",
             "each with its suggestion; r there retries the root (d)", main.action_deadlocks),
            ("help", "Help: keys", "every key binding (?)", self.action_help),
        ]
        for action, title, help_text, callback in verbs:
            if self.read_only and action in MUTATING_ACTIONS:
                continue
            yield SystemCommand(title, help_text, callback)
        for sort_id in ("task", "skill", "priority", "wait", "tenant"):
            yield SystemCommand(f"Sort by {sort_id}", "the focused table",
                                lambda s=sort_id: main.action_sort(s))
