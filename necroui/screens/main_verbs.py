"""The dashboard's task verbs: pause, priority, retry, start from base, land, cancel.

Each acts on the focused table's marked tasks, else its selected one, through the app's
control methods (the engine answers in a thread worker); a part of :class:`MainScreen`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from textual.notifications import SeverityLevel

from .modals import ConfirmModal, PriorityModal

if TYPE_CHECKING:
    from ..app import NecroApp


class _Dashboard(Protocol):
    """What the verbs use of the dashboard screen."""

    @property
    def necro(self) -> NecroApp: ...
    def target_tasks(self) -> list[str]: ...
    def task_priority(self, key: str) -> int | None: ...
    def clear_all_marks(self) -> None: ...
    def _no_task(self) -> None: ...
    def _bump(self, delta: int) -> None: ...
    def notify(self, message: str, *, severity: SeverityLevel = "information") -> None: ...


class DashboardVerbs:
    """The task verbs' actions (bound in :attr:`MainScreen.BINDINGS`)."""

    def action_pause_toggle(self: _Dashboard) -> None:
        self.necro.toggle_pause()

    def action_pause(self: _Dashboard) -> None:
        self.necro.toggle_pause()

    def action_resume(self: _Dashboard) -> None:
        self.necro.toggle_pause()

    def _bump(self: _Dashboard, delta: int) -> None:
        keys = self.target_tasks()
        if not keys:
            self._no_task()
            return
        self.necro.bump_priorities(keys, delta)
        self.clear_all_marks()

    def action_priority_up(self: _Dashboard) -> None:
        self._bump(+1)

    def action_priority_down(self: _Dashboard) -> None:
        self._bump(-1)

    def action_priority_set(self: _Dashboard) -> None:
        keys = self.target_tasks()
        if not keys:
            self._no_task()
            return
        current = self.task_priority(keys[0]) if len(keys) == 1 else None
        what = keys[0] if len(keys) == 1 else f"{len(keys)} marked tasks"

        def done(value: int | None) -> None:
            if value is not None:
                self.necro.set_priorities([(k, value) for k in keys])
                self.clear_all_marks()

        self.necro.push_screen(PriorityModal(f"Priority of {what}", current), done)

    def action_retry(self: _Dashboard) -> None:
        keys = self.target_tasks()
        if not keys:
            self._no_task()
            return
        self.necro.retry_tasks(keys)
        self.clear_all_marks()

    def action_retry_from_base(self: _Dashboard) -> None:
        keys = self.target_tasks()
        if not keys:
            self.notify("no task selected", severity="warning")
            return
        self.necro.retry_tasks(keys, from_base=True)
        self.clear_all_marks()

    def action_land(self: _Dashboard) -> None:
        keys = self.target_tasks()
        if not keys:
            self.notify("no task selected", severity="warning")
            return
        self.necro.land_tasksets(sorted({key.rpartition("/")[0] for key in keys}))
        self.clear_all_marks()

    def action_cancel(self: _Dashboard) -> None:
        keys = self.target_tasks()
        if not keys:
            self._no_task()
            return
        what = keys[0] if len(keys) == 1 else f"{len(keys)} marked tasks"

        def done(yes: bool | None) -> None:
            if yes:
                self.necro.cancel_tasks(keys)
                self.clear_all_marks()

        self.necro.push_screen(ConfirmModal(f"Cancel {what}?", yes_label="Cancel task"), done)
