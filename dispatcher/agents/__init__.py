"""Coding agents as presets: real agent CLIs run headless, their streams read, their results
judged (R20).

``get_preset("codex")`` answers the :class:`~.base.AgentPreset` of a name; :data:`PRESETS`
lists them. Stdlib only (the runner wrapper imports the parsers inside containers).
"""

from __future__ import annotations

from .aider import AiderPreset
from .base import AgentPreset
from .claude_code import ClaudeCodePreset
from .codex import CodexPreset
from .command import CommandPreset
from .gemini import GeminiPreset
from .mini_swe_agent import MiniSweAgentPreset

PRESETS: dict[str, AgentPreset] = {
    p.name: p
    for p in (ClaudeCodePreset(), CodexPreset(), GeminiPreset(), MiniSweAgentPreset(),
              AiderPreset(), CommandPreset())
}
PRESET_NAMES = tuple(PRESETS)


def get_preset(name: str) -> AgentPreset:
    """The preset called ``name``; KeyError for an unknown one (config validation says so)."""
    return PRESETS[name]


__all__ = ["PRESETS", "PRESET_NAMES", "AgentPreset", "get_preset"]
