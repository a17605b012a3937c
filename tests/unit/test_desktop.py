"""OSC 9 / OSC 777 desktop notifications: the bytes the terminal gets (a fake stream)."""

from __future__ import annotations

import io

import pytest
import yaml
from necrocode.dispatcher.config_loader import config_from_mapping
from necrocode.dispatcher.errors import DispatcherError
from necrocode.dispatcher.notify import Notice, NoticeKind

from necroui.desktop import DesktopNotifier, osc_escape


def test_osc_9_and_777_bytes() -> None:
    assert osc_escape("9", "necroui: task failed", "a/1: exit 2") == (
        "\x1b]9;necroui: task failed: a/1: exit 2\x07")
    assert osc_escape("777", "necroui: budget; stop", "a/1: $1.2; over") == (
        "\x1b]777;notify;necroui: budget, stop;a/1: $1.2; over\x07")
    assert osc_escape("off", "t", "b") == ""


def test_control_characters_cannot_end_the_escape_early() -> None:
    seq = osc_escape("9", "t", "line one\nline\x07two\x1b]9;evil\x1b\\ \x9c end")
    body = seq[len("\x1b]9;"):-1]
    assert seq.endswith("\x07") and not any(c in body for c in "\x07\x1b\n\x9c")
    assert body == "t: line one line two ]9;evil \\ end"
    assert len(osc_escape("9", "t", "x" * 5000)) < 260  # a line, not the whole log


def test_inside_tmux_the_escape_is_wrapped_for_passthrough() -> None:
    assert osc_escape("9", "t", "b", tmux=True) == "\x1bPtmux;\x1b\x1b]9;t: b\x07\x1b\\"


def test_one_notification_per_batch_written_to_the_stream() -> None:
    stream = io.StringIO()
    notifier = DesktopNotifier("777", stream.write, env={})
    notices = [Notice(NoticeKind.BUDGET_STOP, "a/1: stopped, budget exceeded: 1.23/1.00 USD",
                      "a/1"), Notice(NoticeKind.TASK_FAILED, "a/2 failed: exit 1", "a/2")]
    notifier.tell(notices)
    notifier.tell([])
    assert stream.getvalue() == ("\x1b]777;notify;necroui: budget stop;"
                                 "a/1: stopped, budget exceeded: 1.23/1.00 USD (and 1 more)\x07")
    off = io.StringIO()
    DesktopNotifier("off", off.write).tell(notices)
    assert off.getvalue() == ""
    with pytest.raises(ValueError, match="notify_osc"):
        DesktopNotifier("99", off.write)


@pytest.mark.parametrize(("text", "mode"), [("", "off"), ("notify_osc: 9", "9"),
                                            ("notify_osc: '777'", "777"),
                                            ("notify_osc: off", "off")])
def test_config_ui_notify_osc(text: str, mode: str) -> None:
    data = yaml.safe_load(f"ui: {{{text}}}")
    assert config_from_mapping(data, "c.yaml").ui.notify_osc == mode


def test_config_ui_notify_osc_refuses_other_values() -> None:
    with pytest.raises(DispatcherError, match=r"ui.notify_osc: expected one of 9, 777, off"):
        config_from_mapping(yaml.safe_load("ui: {notify_osc: 10}"), "c.yaml")
