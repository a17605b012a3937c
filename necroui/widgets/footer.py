"""A Footer that redraws only when the keys it shows change.

Textual's Footer recomposes (unmounts and mounts a widget per key) on every focus change; with
four panels and 10k rows that is about half of what moving the focus costs. Moving between the
task tables shows the same keys, so nothing needs to be built again.
"""

from __future__ import annotations

from typing import Any

from textual.screen import Screen
from textual.widgets import Footer


class QuietFooter(Footer):
    """Footer whose recompose is skipped when the shown bindings did not change."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shown: tuple[Any, ...] | None = None

    def bindings_changed(self, screen: Screen[Any]) -> None:
        shown = tuple(
            (key, binding.action, binding.description, enabled)
            for key, (_, binding, enabled, _) in screen.active_bindings.items()
            if binding.show
        )
        if shown == self._shown:
            return
        self._shown = shown
        super().bindings_changed(screen)
