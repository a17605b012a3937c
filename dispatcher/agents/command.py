"""The plain ``command`` agent: the task's argv (or the pool's ``agent_command``) as today.

Nothing is parsed and the exit code decides.
"""

from __future__ import annotations

from .base import (
    AgentInvocation,
    AgentPreset,
    AttemptContext,
    Judgement,
    StreamParser,
    StreamState,
    Verdict,
)


class CommandPreset(AgentPreset):
    """Runs ``command`` given by the launcher; reports nothing, judges nothing."""

    name = "command"
    reports = "nothing (the exit code decides)"

    def invocation(self, ctx: AttemptContext) -> AgentInvocation:
        return AgentInvocation(tuple(ctx.command) + tuple(ctx.options.extra_args))

    def parser(self) -> StreamParser:
        return StreamParser()

    def judge(self, state: StreamState, exit_code: int | None) -> Judgement:
        return Judgement(Verdict.UNKNOWN, "")
