"""Desktop notifications as terminal escapes: OSC 9 and OSC 777 (config ``ui: notify_osc``).

Terminals that know them (OSC 9: iTerm2, WezTerm, kitty, Windows Terminal, ConEmu; OSC 777:
foot, rxvt-unicode, VTE terminals such as GNOME Terminal) turn them into a desktop
notification; the others ignore them. Inside tmux the escape is wrapped for tmux's passthrough
(it needs ``set -g allow-passthrough on``). The escape goes to the terminal the console draws on,
through ``write``: the app passes its driver's write (Textual draws on stderr).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence

from necrocode.dispatcher.notify import Notice

MODES = ("9", "777", "off")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")  # ESC, BEL, ST, newlines: they end an OSC early
_MAX = 240  # characters of a message: a notification is a line, the rest is in the console


def _clean(text: str, limit: int = _MAX) -> str:
    line = " ".join(_CONTROL.sub(" ", text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def osc_escape(mode: str, title: str, body: str, *, tmux: bool = False) -> str:
    """The escape that asks the terminal for a desktop notification ("" when ``mode`` is off).

    OSC 9 has one text (``title: body``); OSC 777 has ``notify;title;body`` (no ``;`` in the
    title). Control characters in either are blanked: they would end the escape early.
    """
    if mode == "9":
        seq = f"\x1b]9;{_clean(f'{title}: {body}')}\x07"
    elif mode == "777":
        seq = f"\x1b]777;notify;{_clean(title, 60).replace(';', ',')};{_clean(body)}\x07"
    else:
        return ""
    if tmux:  # tmux passes a DCS "tmux;" sequence on, its ESCs doubled
        seq = "\x1bPtmux;" + seq.replace("\x1b", "\x1b\x1b") + "\x1b\\"
    return seq


class DesktopNotifier:
    """Sends the console's notices as OSC desktop notifications (one escape per batch)."""

    def __init__(self, mode: str, write: Callable[[str], None], *,
                 env: Mapping[str, str] | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"ui.notify_osc: expected one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.write = write
        self.tmux = bool((os.environ if env is None else env).get("TMUX"))

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def tell(self, notices: Sequence[Notice]) -> str:
        """One notification for these notices (the first, and how many more); what was sent."""
        if not self.enabled or not notices:
            return ""
        first = notices[0]
        title = f"necroui: {first.kind.value.replace('_', ' ')}"
        body = first.message
        if len(notices) > 1:
            body += f" (and {len(notices) - 1} more)"
        seq = osc_escape(self.mode, title, body, tmux=self.tmux)
        self.write(seq)
        return seq
