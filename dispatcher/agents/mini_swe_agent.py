"""mini-swe-agent (PyPI ``mini-swe-agent``): ``mini --yolo --exit-immediately -o traj.json``.

Its stdout is text for people; the trajectory file it rewrites after every step is the stream:
per assistant message the provider's usage, and ``info.exit_status`` (``Submitted`` on success)
with ``info.model_stats.instance_cost``. It exits 0 even when it gave up.
"""

from __future__ import annotations

import json
from typing import Any

from ..models import Usage
from .base import (
    AgentEvent,
    AgentInvocation,
    AgentPreset,
    AttemptContext,
    EventKind,
    Judgement,
    StreamParser,
    StreamState,
    clip,
    num,
)
from .prompt import prompt_argument

TRAJECTORY = "traj.json"


class MiniParser(StreamParser):
    """The trajectory document, read whole each time it changes."""

    def load_document(self, text: str) -> list[AgentEvent]:
        try:
            doc = json.loads(text)
        except ValueError:  # being rewritten: the next change brings it whole
            return []
        if not isinstance(doc, dict):
            return []
        messages = [m for m in doc.get("messages") or [] if isinstance(m, dict)]
        info = doc.get("info") or {}
        stats = info.get("model_stats") or {}
        inp = out = cached = turns = 0
        last_action = ""
        for m in messages:
            if m.get("role") != "assistant":
                continue
            turns += 1
            u = ((m.get("extra") or {}).get("response") or {}).get("usage") or {}
            inp += num(u.get("prompt_tokens"))
            out += num(u.get("completion_tokens"))
            cached += num((u.get("prompt_tokens_details") or {}).get("cached_tokens"))
            last_action = _action(m) or last_action
        cost = stats.get("instance_cost")
        usage = Usage(inp, out, cached, float(cost) if isinstance(cost, int | float) and cost > 0
                      else None, turns)
        before = self.state
        status = str(info.get("exit_status") or "")
        final = str(info.get("submission") or "")
        error = ""
        exit_msg = next((m for m in reversed(messages) if m.get("role") == "exit"), None)
        if status and status != "Submitted":
            error = clip(str((exit_msg or {}).get("content") or status))
        self._set(usage=usage, last_action=last_action or before.last_action,
                  final_message=final or before.final_message, error=error or before.error,
                  result=info if status else None, events=before.events + 1)
        events: list[AgentEvent] = []
        if usage != before.usage:
            events.append(AgentEvent(EventKind.USAGE))
        if turns > before.usage.turns:
            events.append(AgentEvent(EventKind.TURN))
        if last_action and last_action != before.last_action:
            events.append(AgentEvent(EventKind.PROGRESS, last_action))
        if status and before.result is None:
            events.append(AgentEvent(EventKind.RESULT))
        return events


def _action(message: dict[str, Any]) -> str:
    actions = (message.get("extra") or {}).get("actions") or []
    for action in actions:
        if isinstance(action, dict) and action.get("command"):
            return clip(f"$ {action['command']}", 200)
    return clip(str(message.get("content") or ""), 200)


class MiniSweAgentPreset(AgentPreset):
    """``mini -m openai/MODEL -t PROMPT --yolo --exit-immediately --cost-limit 0 -o traj.json``."""

    name = "mini-swe-agent"
    executable = "mini"
    default_key_env = "OPENAI_API_KEY"
    extra_options = {
        "model_prefix": "litellm provider prefix added to a model without one; default openai.",
        "cost_limit": "mini's own cost limit in USD; default 0 (off: budgets are the "
        "Dispatcher's).",
    }
    reports = ("tokens per step (prompt, completion, cached) in the trajectory, cost "
               "(instance_cost) when litellm knows the model, turns; success from "
               "info.exit_status == Submitted")

    def invocation(self, ctx: AttemptContext) -> AgentInvocation:
        opts = ctx.options
        model = opts.model or "gpt-4o-mini"
        if "/" not in model:
            model = f"{self.extra(opts, 'model_prefix', 'openai')}/{model}"
        traj = ctx.path(TRAJECTORY)
        argv = [self.program(opts), "-m", model, "-t", prompt_argument(ctx), "--yolo",
                "--exit-immediately", "--cost-limit", str(self.extra(opts, "cost_limit", 0)),
                "-o", traj, *opts.extra_args]
        env = {
            "MSWEA_CONFIGURED": "true",
            "MSWEA_COST_TRACKING": "ignore_errors",
            "MSWEA_SILENT_STARTUP": "1",
            "MSWEA_GLOBAL_CONFIG_DIR": ctx.path("mini-config"),
            "MSWEA_MODEL_RETRY_STOP_AFTER_ATTEMPT": "1",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        if opts.base_url:
            env["OPENAI_API_BASE"] = opts.base_url
        secret: set[str] = set()
        _, key = ctx.api_key(self.default_key_env)
        if key is not None:
            env["OPENAI_API_KEY"] = key
            secret.add("OPENAI_API_KEY")
        return AgentInvocation(tuple(argv), env, result_file=traj, secret_env=frozenset(secret))

    def parser(self) -> StreamParser:
        return MiniParser()

    def judge(self, state: StreamState, exit_code: int | None) -> Judgement:
        result = state.result
        if result is None:
            return Judgement.failed(f"mini-swe-agent left no finished trajectory (exit "
                                    f"{exit_code})")
        status = str(result.get("exit_status") or "")
        if status != "Submitted":
            return Judgement.failed(f"mini-swe-agent ended with {status}: {state.error}")
        return Judgement.ok(clip(state.final_message, 200))
