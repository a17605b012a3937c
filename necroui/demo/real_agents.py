"""Real coding-agent CLIs for ``necroui --demo --agents`` and the agents tests.

When Claude Code, Codex, Gemini CLI or mini-swe-agent is installed, the agents demo runs it —
the real CLI, through its preset — against the scripted model server (:mod:`.model_server`) on
127.0.0.1 instead of a model: no key, no network, and every run the same. Each demo task's agent
runs two shell steps in its slot and answers with a final message; tokens come from the server,
turns and cost from what the CLI itself reports (Claude Code prices its model; the others
report none). Without any of them the demo falls back to its stand-in for Claude Code and says
how to install one. ``NECROUI_DEMO_AGENT`` chooses: ``auto`` (default), ``stand-in``, or a preset
name.

:func:`find_cli` is also what the tests use to find the CLIs ``.ci/agents.sh`` installed.
"""

from __future__ import annotations

import atexit
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .model_server import ModelServer, Script

#: The variable the demo's runners read their (made-up) model key from.
KEY_ENV = "NECROUI_DEMO_MODEL_KEY"
KEY = "sk-necroui-demo-scripted-model"


@dataclass(frozen=True)
class AgentCli:
    """How to find one CLI and point it at the scripted server."""

    preset: str
    env: str  # NECROCODE_AGENT_<NAME>, exported by .ci/agents.sh
    program: str
    cache_glob: str  # where .ci/agents.sh installs it, under the agents cache
    url_suffix: str  # what the CLI expects after host:port
    model: str
    install: str  # how a user installs it


#: In the order the demo prefers them.
CLIS: dict[str, AgentCli] = {
    "claude-code": AgentCli("claude-code", "NECROCODE_AGENT_CLAUDE", "claude",
                            "claude-*/node_modules/.bin/claude", "", "claude-sonnet-4-5",
                            "npm install -g @anthropic-ai/claude-code"),
    "codex": AgentCli("codex", "NECROCODE_AGENT_CODEX", "codex",
                      "codex-*/node_modules/.bin/codex", "/v1", "test-model",
                      "npm install -g @openai/codex"),
    "gemini": AgentCli("gemini", "NECROCODE_AGENT_GEMINI", "gemini",
                       "gemini-*/node_modules/.bin/gemini", "", "gemini-2.5-flash",
                       "npm install -g @google/gemini-cli"),
    "mini-swe-agent": AgentCli("mini-swe-agent", "NECROCODE_AGENT_MINI", "mini",
                               "mini-swe-agent-*/venv/bin/mini", "/v1", "test-model",
                               "pip install mini-swe-agent"),
}

#: What each demo agent does in its slot (the scripted model asks for these, then finishes).
DEMO_SCRIPT = Script(
    commands=["echo 'reading the task and the code' && sleep 1",
              "printf 'done by the agents demo\\n' > DEMO.md && sleep 1"],
    final="Done: DEMO.md records the change.")


def agents_cache() -> Path:
    return Path(os.environ.get("NECROCODE_AGENTS_CACHE")
                or Path.home() / ".cache" / "necrocode" / "agents")


def find_executable(cli: AgentCli) -> str | None:
    """The CLI's executable: as exported by .ci/agents.sh, in its cache, or on PATH."""
    given = os.environ.get(cli.env)
    if given and os.access(given, os.X_OK):
        return given
    cached = sorted(agents_cache().glob(cli.cache_glob))
    if cached:
        return str(cached[-1])
    return shutil.which(cli.program)


#: ``NECROUI_DEMO_AGENT``: ``auto`` (the first CLI installed, in :data:`CLIS` order),
#: ``stand-in`` (never a real CLI), or a preset name (that CLI only).
CHOICE_ENV = "NECROUI_DEMO_AGENT"


def find_cli() -> tuple[AgentCli, str] | None:
    """The CLI the agents demo runs (see :data:`CHOICE_ENV`) and its executable, or None."""
    choice = os.environ.get(CHOICE_ENV, "auto").strip() or "auto"
    if choice == "stand-in":
        return None
    if choice != "auto":
        if choice not in CLIS:
            raise ValueError(f"{CHOICE_ENV}={choice!r}: expected auto, stand-in or one of "
                             f"{', '.join(CLIS)}")
        exe = find_executable(CLIS[choice])
        return (CLIS[choice], exe) if exe is not None else None
    for cli in CLIS.values():
        exe = find_executable(cli)
        if exe is not None:
            return cli, exe
    return None


def install_hint() -> str:
    """How to see a real CLI in the agents demo."""
    return ("no coding-agent CLI is installed, so a stand-in plays Claude Code; install one "
            "to see it for real against a scripted model (no key, no network): "
            + "; ".join(c.install for c in CLIS.values()))


class DemoModel:
    """The scripted model server for the demo's lifetime (closed at exit)."""

    _server: ModelServer | None = None

    @classmethod
    def url(cls) -> str:
        """The server's URL, started on first use."""
        if cls._server is None:
            server = ModelServer()
            server.configure(DEMO_SCRIPT)
            server.__enter__()
            atexit.register(server.__exit__, None, None, None)
            cls._server = server
        return cls._server.url


def agent_options(cli: AgentCli, exe: str) -> dict[str, Any]:
    """A task's ``agent_options`` for ``cli`` against the demo's scripted model (the key it
    reads is put in this process's environment, which runners inherit)."""
    os.environ.setdefault(KEY_ENV, KEY)
    return {"model": cli.model, "base_url": DemoModel.url() + cli.url_suffix,
            "api_key_env": KEY_ENV, "executable": exe}


__all__ = ["CHOICE_ENV", "CLIS", "DEMO_SCRIPT", "AgentCli", "DemoModel", "agent_options",
           "find_cli", "find_executable", "install_hint"]
