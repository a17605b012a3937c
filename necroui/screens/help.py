"""The `?` help screen: every key binding of the dashboard, after the config's keymap."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ..widgets import DiffTable
from .main import MUTATING_ACTIONS, MainScreen

if TYPE_CHECKING:
    from ..app import NecroApp

_EXTRA: tuple[tuple[str, str], ...] = (
    ("L (agent view)", "/ search, n/N next/previous match, w wrap, f follow, [ ] earlier/later "
     "attempt, P prompt, D diff, s save; r c + - p act on the task"),
    ("enter (graph)", "detail of the task under the graph cursor"),
    ("up/down/left/right (graph)", "move to a dependency / dependent / neighbour"),
)


def _key_display(key: str) -> str:
    names = {"question_mark": "?", "plus": "+", "minus": "-", "equals_sign": "=", "slash": "/",
             "space": "space", "escape": "esc", "shift+tab": "shift+tab"}
    return ", ".join(names.get(k.strip(), k.strip()) for k in key.split(","))


def bindings_table(app: NecroApp) -> Table:
    """A rich table of the bindings (mutating ones left out in read-only mode)."""
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    table.add_column("key", style="bold cyan", no_wrap=True)
    table.add_column("does")
    table.add_column("id", style="grey50")
    # one row per action: q, ctrl+q and ctrl+c quit alike
    rows: dict[str, tuple[list[str], str, list[str]]] = {}
    pause_key = next((app.binding_key(b) for b in MainScreen.BINDINGS
                      if isinstance(b, Binding) and b.id == "pause"), "p")
    table_keys = [b for b in DiffTable.BINDINGS if isinstance(b, Binding) and b.id != "select_row"]
    for binding in [*MainScreen.BINDINGS, *table_keys, *type(app).BINDINGS]:
        if not isinstance(binding, Binding):
            continue
        action = binding.action.split("(")[0]
        if app.read_only and action in MUTATING_ACTIONS:
            continue
        if binding.id == "resume" and app.binding_key(binding) == pause_key:
            continue  # one row: p pauses and resumes
        row = "quit_app" if binding.action == "interrupt" else binding.action  # ctrl+c: quit
        keys, _, ids = rows.setdefault(row,
                                       ([], binding.tooltip or binding.description, []))
        keys.append(_key_display(app.binding_key(binding)))
        ids.append(binding.id or "")
    for keys, what, ids in rows.values():
        table.add_row(", ".join(keys), what, ", ".join(i for i in ids if i))
    for key, what in _EXTRA:
        table.add_row(key, what, "")
    return table


class HelpScreen(ModalScreen[None]):
    """Lists every binding; any of esc, q or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="help_close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        app: NecroApp = self.app  # type: ignore[assignment]
        title = Text("necroui keys", style="bold")
        if app.read_only:
            title.append("  (read-only: verbs hidden)", style="yellow")
        hint_text = ("\nRebind keys in the config: ui: keymap: {<id>: <key>}. "
                     "Sort keys act on the focused table; again to reverse.")
        if not app.read_only:  # no verbs to take marked rows in read-only mode
            hint_text += " Marked rows (space) take bulk retry/cancel/priority."
        hint = Text(hint_text, style="grey62")
        with VerticalScroll(id="help-box"):
            yield Static(title)
            yield Static(bindings_table(app))
            yield Static(hint)

    def action_close(self) -> None:
        self.dismiss(None)
