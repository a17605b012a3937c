"""The verbs on one task that the task detail and the agent view share (r, c, +/-, p)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.screen import Screen

from .modals import ConfirmModal

if TYPE_CHECKING:
    from ..app import NecroApp


class TaskVerbScreen(Screen[None]):
    """A screen about one task (``key``): retry, cancel (asked first), priority and pause act
    on it through the app, as from the main tables."""

    key: str

    @property
    def necro(self) -> NecroApp:
        return self.app  # type: ignore[return-value]

    def action_retry(self) -> None:
        self.necro.retry_tasks([self.key])

    def action_cancel(self) -> None:
        def done(yes: bool | None) -> None:
            if yes:
                self.necro.cancel_tasks([self.key])

        self.app.push_screen(ConfirmModal(f"Cancel {self.key}?", yes_label="Cancel task"), done)

    def action_bump(self, delta: int) -> None:
        self.necro.bump_priorities([self.key], delta)

    def action_pause(self) -> None:
        self.necro.toggle_pause()
