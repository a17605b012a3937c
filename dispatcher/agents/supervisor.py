"""What the engine calls for coding-agent runs: one facade over the stream reader.

The engine thread calls :meth:`AgentRuns.started` after a launch, :meth:`AgentRuns.updates` each
iteration (progress, usage, budget verdicts), :meth:`AgentRuns.ended` when the runner exited (the
judgement and the attempt's usage), :meth:`AgentRuns.reported` with a wrapped runner's completion
payload, and :meth:`AgentRuns.forget` for a fenced or lost runner. Reading happens on the
reader's own thread; every call here is quick and thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models import AgentPool, Runner, Task, Usage
from .base import Verdict
from .budget import Budget, BudgetVerdict, Price, check_budget
from .launch import resolve_agent, task_budget, watch_spec
from .stream import RunUpdate, StreamReader


@dataclass(frozen=True)
class AgentProgress:
    """A running attempt's latest: progress text, usage so far, a budget crossed."""

    runner_id: str
    progress: str
    usage: Usage
    budget_reason: str | None  # set once: stop the run, fail without retry
    idle_since: float  # time.monotonic() of the last output growth


@dataclass(frozen=True)
class AttemptOutcome:
    """How a finished attempt went by what its agent reported.

    ``succeeded`` None: the preset cannot tell (a plain command): the exit code decides.
    ``budget_reason`` set: the attempt crossed its budget (fail it without retry).
    """

    agent: str
    succeeded: bool | None
    reason: str
    usage: Usage
    final_message: str = ""
    budget_reason: str | None = None


class AgentRuns:
    """The engine's hook into coding-agent runs (see the module docstring)."""

    def __init__(self, *, prices: Mapping[str, Price] | None = None, interval: float = 0.25,
                 reader: StreamReader | None = None) -> None:
        self.reader = reader or StreamReader(interval=interval, prices=prices)
        self._agents: dict[str, str] = {}

    def started(self, task: Task, pool: AgentPool, runner: Runner,
                budget: Budget | None = None) -> bool:
        """Watch a launched runner if it runs a preset (True); ``budget``: the task's within
        its taskset's and tenant's remaining budgets (default: the task's own)."""
        if runner.attempt_dir is None or runner.log_path is None:
            return False
        spec = watch_spec(task, pool, runner.attempt_dir, runner.log_path,
                          budget=budget or task_budget(task))
        if spec is None:
            return False
        self._agents[runner.runner_id] = spec.preset.name
        self.reader.watch(runner.runner_id, spec.log_path, spec.preset,
                          offset=run_start(spec.log_path, runner.runner_id), **spec.kwargs())
        return True

    def updates(self) -> list[AgentProgress]:
        """Runs whose stream changed since the last call."""
        return [_progress(u) for u in self.reader.updates()]

    def idle_for(self, runner_id: str) -> float | None:
        """Seconds since the runner's output last grew (None: not an agent run)."""
        return self.reader.idle_for(runner_id)

    def ended(self, runner_id: str, exit_code: int | None) -> AttemptOutcome | None:
        """The runner exited: read the rest and judge (None: not an agent run)."""
        agent = self._agents.pop(runner_id, None)
        result = self.reader.finish(runner_id, exit_code)
        if agent is None or result is None:
            return None
        verdict = result.judgement.verdict
        return AttemptOutcome(
            agent, None if verdict is Verdict.UNKNOWN else verdict is Verdict.SUCCEEDED,
            result.judgement.reason, result.state.usage, result.state.final_message,
            result.budget.reason if result.budget else None)

    def forget(self, runner_id: str) -> None:
        """Stop reading a fenced or lost runner."""
        self._agents.pop(runner_id, None)
        self.reader.forget(runner_id)

    def close(self) -> None:
        """Stop the reader thread."""
        self.reader.close()

    @staticmethod
    def reported(task: Task, pool: AgentPool, payload: Mapping[str, Any]) -> AttemptOutcome | None:
        """The outcome in a wrapped runner's completion payload (``payload["agent"]``)."""
        agent = payload.get("agent")
        if not isinstance(agent, dict) or resolve_agent(task, pool) is None:
            return None
        judgement = agent.get("judgement") or {}
        verdict = judgement.get("verdict")
        usage = Usage.from_dict(agent.get("usage"))
        budget = agent.get("budget")
        if budget is None:  # the wrapper had no budget: check the task's here
            crossed = check_budget(usage, task_budget(task))
            budget = crossed.reason if crossed else None
        return AttemptOutcome(
            str(agent.get("agent") or ""),
            None if verdict not in ("succeeded", "failed") else verdict == "succeeded",
            str(judgement.get("reason") or ""), usage, str(agent.get("final_message") or ""),
            budget)

    @staticmethod
    def heartbeat_usage(payload: Mapping[str, Any]) -> tuple[str | None, Usage | None]:
        """(progress, usage so far) of a wrapped runner's heartbeat payload."""
        usage = payload.get("usage")
        progress = payload.get("progress")
        return (str(progress) if progress else None,
                Usage.from_dict(usage) if isinstance(usage, dict) else None)


def run_start(log_path: Path, runner_id: str) -> int:
    """Where this runner's output begins in its attempt's log: after the local launcher's
    ``--- necrocode: runner ID started ---`` line when an earlier run of the same attempt
    (requeued at a shutdown) wrote before it, else 0."""
    marker = f"--- necrocode: runner {runner_id} started ---\n".encode()
    try:
        with open(log_path, "rb") as f:
            head = f.read(_MARKER_SCAN)
    except OSError:
        return 0
    at = head.rfind(marker)
    return at + len(marker) if at >= 0 else 0


_MARKER_SCAN = 64 << 20  # the marker is written before the run starts: near the start's end


def _progress(update: RunUpdate) -> AgentProgress:
    verdict: BudgetVerdict | None = update.budget
    return AgentProgress(update.runner_id, update.state.last_action, update.state.usage,
                         verdict.reason if verdict else None, update.last_growth)
