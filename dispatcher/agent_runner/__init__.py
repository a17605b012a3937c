"""The Agent Runner wrapper: ``python -m necrocode.dispatcher.agent_runner [--] ARGV...``.

See :mod:`.runner`. Stdlib only.
"""

from __future__ import annotations

from .runner import AgentRunner, WrapperConfig, main

__all__ = ["AgentRunner", "WrapperConfig", "main"]
