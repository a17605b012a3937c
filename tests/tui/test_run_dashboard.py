"""`necroui 2> file`: Textual draws on stderr, so run_dashboard says why it cannot show and
returns 2 instead of drawing a blank screen into the file."""

from __future__ import annotations

import io
import sys

import pytest
from necrocode.dispatcher.config import DispatcherConfig

from necroui import run as app_module


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_redirected_stderr_is_refused_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # `2> file`
    assert app_module.run_dashboard(DispatcherConfig(registry_path=":memory:")) == 2
    assert "necroui draws on stderr; it is redirected" in out.getvalue()
    assert "--no-tui" in out.getvalue()


def test_terminal_stderr_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", _Terminal())
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # `> file` does not matter
    assert not app_module._stderr_redirected()


async def test_a_start_notice_shows_as_a_notification() -> None:
    from necroui_fakes import FakeEngine
    from tui_helpers import make_app, settle

    app = make_app(FakeEngine(), notice="the demo already ran in ./r.db; delete that file")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert any("demo already ran" in n.message for n in app._notifications)
