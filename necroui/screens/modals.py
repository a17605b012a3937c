"""Small modal screens: confirmation (default No), priority input, quit choice, filter."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label


class ConfirmModal(ModalScreen[bool]):
    """Asks yes/no; ``No`` has the focus, so enter or esc answer No."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "answer(False)", "No", id="confirm_no"),
        Binding("y", "answer(True)", "Yes", id="confirm_yes"),
        Binding("n", "answer(False)", "No", show=False),
        Binding("left", "app.focus_previous", "Previous", show=False),
        Binding("right", "app.focus_next", "Next", show=False),
    ]

    def __init__(self, question: str, *, yes_label: str = "Yes") -> None:
        super().__init__(classes="modal")
        self.question = question
        self.yes_label = yes_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="question")
            with Horizontal(classes="buttons"):
                yield Button("No (n)", id="no", variant="primary")
                yield Button(f"{self.yes_label} (y)", id="yes", variant="error")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class PriorityModal(ModalScreen[int | None]):
    """Asks for a new integer priority; esc cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, current: int | None) -> None:
        super().__init__(classes="modal")
        self.title_text = title
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="question")
            yield Input(
                value="" if self.current is None else str(self.current),
                placeholder="priority (integer, higher runs first)",
                type="integer",
                id="priority-input",
            )
            yield Label("enter to apply, esc to cancel", classes="hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value.strip()
        try:
            self.dismiss(int(value))
        except ValueError:
            self.notify(f"{value!r} is not an integer priority", severity="error")

    def action_cancel(self) -> None:
        self.dismiss(None)


class QuitChoice(StrEnum):
    """What to do with runners still running when the dashboard quits."""

    WAIT = "wait"  # stop dispatching, wait for the running runners to finish
    LEAVE = "leave"  # stop the dispatcher; leave runners to be adopted by the next start
    STOP = "stop"  # stop the runners now; their tasks go back to READY
    BACK = "back"  # do not quit


class QuitModal(ModalScreen[QuitChoice]):
    """Asked when quitting while runners still run."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "choose('back')", "Back"),
        Binding("w", "choose('wait')", "Wait", show=False),
        Binding("l", "choose('leave')", "Leave", show=False),
        Binding("s", "choose('stop')", "Stop", show=False),
        Binding("left", "app.focus_previous", "Previous", show=False),
        Binding("right", "app.focus_next", "Next", show=False),
    ]

    def __init__(self, running: int) -> None:
        super().__init__(classes="modal")
        self.running = running

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(self._question(), classes="question", id="quit-question")
            yield Label(
                "w: wait for them to finish · l: leave them for the next start · "
                "s: stop them (tasks go back to ready) · ctrl+c again: stop now",
                classes="hint", markup=False,
            )
            with Horizontal(classes="buttons"):
                yield Button("Back (esc)", id="back", variant="primary")
                yield Button("Wait (w)", id="wait")
                yield Button("Leave (l)", id="leave")
                yield Button("Stop (s)", id="stop", variant="error")

    def _question(self) -> str:
        if not self.running:
            return "No runner is running any more. Quit how?"
        return f"{self.running} runner(s) still running. Quit how?"

    def set_running(self, running: int) -> None:
        """Follow the snapshot the header shows (runners end while the dialog is open); when
        the last one has ended there is nothing to ask: the dialog closes and the quit goes on."""
        if running == 0 and self.is_current:
            self.dismiss(QuitChoice.WAIT)
            return
        if running != self.running:
            self.running = running
            self.query_one("#quit-question", Label).update(self._question())

    def on_mount(self) -> None:
        self.query_one("#back", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(QuitChoice(event.button.id or "back"))

    def action_choose(self, choice: str) -> None:
        self.dismiss(QuitChoice(choice))


class FilterInput(Input):
    """The `/` filter line: typing filters live, enter keeps it, esc clears it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear_filter", "Clear filter", id="filter_clear"),
    ]

    def action_clear_filter(self) -> None:
        self.value = ""
        self.post_message(self.Submitted(self, ""))
