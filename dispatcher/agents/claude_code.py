"""Claude Code (npm ``@anthropic-ai/claude-code``): ``claude -p`` with stream-json output.

Reports per-message usage as it goes and, last, a ``result`` line with the totals, the cost
(``total_cost_usd``), ``num_turns`` and ``is_error``; success is judged from that line.
"""

from __future__ import annotations

from typing import Any

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


class ClaudeParser(StreamParser):
    """``--output-format stream-json --verbose`` lines."""

    def __init__(self) -> None:
        super().__init__()
        self._messages: set[str] = set()

    def on_json(self, obj: dict[str, Any]) -> list[AgentEvent]:
        kind = obj.get("type")
        if kind == "system" and obj.get("subtype") == "init":
            return [self._progress(f"started (model {obj.get('model') or '?'})")]
        if kind == "system" and obj.get("subtype") == "api_retry":
            text = f"API retry {obj.get('attempt')}: status {obj.get('error_status')}"
            self._set(error=text)
            return [AgentEvent(EventKind.ERROR, text)]
        if kind == "assistant":
            return self._assistant(obj.get("message") or {})
        if kind == "result":
            return self._result(obj)
        return []

    def _assistant(self, message: dict[str, Any]) -> list[AgentEvent]:
        events: list[AgentEvent] = []
        mid = str(message.get("id") or "")
        if mid and mid not in self._messages:  # one event per content block, same usage
            self._messages.add(mid)
            u = message.get("usage") or {}
            events.append(self._add_usage(
                input_tokens=_input_tokens(u), output_tokens=num(u.get("output_tokens")),
                cached_tokens=num(u.get("cache_read_input_tokens")), turns=1))
            events.append(AgentEvent(EventKind.TURN))
        for block in message.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and block.get("text"):
                events.append(self._progress(str(block["text"])))
            elif block.get("type") == "tool_use":
                events.append(self._progress(_tool_text(block)))
        return events

    def _result(self, obj: dict[str, Any]) -> list[AgentEvent]:
        u = obj.get("usage") or {}
        usage = type(self.state.usage)(
            input_tokens=_input_tokens(u) or self.state.usage.input_tokens,
            output_tokens=num(u.get("output_tokens")) or self.state.usage.output_tokens,
            cached_tokens=num(u.get("cache_read_input_tokens")) or self.state.usage.cached_tokens,
            cost_usd=(float(obj["total_cost_usd"])
                      if isinstance(obj.get("total_cost_usd"), int | float) else None),
            turns=num(obj.get("num_turns")) or self.state.usage.turns,
        )
        text = str(obj.get("result") or "")
        self._set(result=obj, usage=usage, final_message=text or self.state.final_message)
        events = [AgentEvent(EventKind.USAGE), AgentEvent(EventKind.RESULT)]
        if text:
            events.append(AgentEvent(EventKind.FINAL, clip(text)))
        return events


def _input_tokens(u: dict[str, Any]) -> int:
    return (num(u.get("input_tokens")) + num(u.get("cache_read_input_tokens"))
            + num(u.get("cache_creation_input_tokens")))


def _tool_text(block: dict[str, Any]) -> str:
    args = block.get("input") or {}
    detail = ""
    if isinstance(args, dict):
        detail = str(args.get("command") or args.get("file_path") or args.get("pattern") or "")
    return f"{block.get('name') or 'tool'}: {detail}".rstrip(": ")


class ClaudeCodePreset(AgentPreset):
    """``claude -p PROMPT --output-format stream-json --verbose``, permissions skipped."""

    name = "claude-code"
    executable = "claude"
    default_key_env = "ANTHROPIC_API_KEY"
    extra_options = {
        "permission_mode": "null (default): --dangerously-skip-permissions; else the value of "
        "--permission-mode (acceptEdits, ...).",
        "max_retries": "API retries of the CLI (CLAUDE_CODE_MAX_RETRIES); default 0.",
    }
    reports = ("tokens (input, output, cache reads) per message and in the final result, cost "
               "(total_cost_usd), turns; success from result.is_error and permission_denials")

    def invocation(self, ctx: AttemptContext) -> AgentInvocation:
        opts = ctx.options
        argv = [self.program(opts), "-p", prompt_argument(ctx), "--output-format",
                "stream-json", "--verbose"]
        mode = self.extra(opts, "permission_mode")
        argv += ["--permission-mode", str(mode)] if mode else ["--dangerously-skip-permissions"]
        if opts.model:
            argv += ["--model", opts.model]
        argv += opts.extra_args
        env = {
            "CLAUDE_CONFIG_DIR": ctx.path("claude-config"),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "IS_SANDBOX": "1",  # as root, --dangerously-skip-permissions refuses otherwise
            "CLAUDE_CODE_MAX_RETRIES": str(self.extra(opts, "max_retries", 0)),
        }
        if opts.base_url:
            env["ANTHROPIC_BASE_URL"] = opts.base_url
        secret: set[str] = set()
        _, key = ctx.api_key(self.default_key_env)
        if key is not None:
            env["ANTHROPIC_API_KEY"] = key
            secret.add("ANTHROPIC_API_KEY")
        return AgentInvocation(tuple(argv), env, secret_env=frozenset(secret))

    def parser(self) -> StreamParser:
        return ClaudeParser()

    def judge(self, state: StreamState, exit_code: int | None) -> Judgement:
        result = state.result
        if result is None:
            why = state.error or "no result line in its output"
            return Judgement.failed(f"Claude Code ended without a result (exit {exit_code}): "
                                    f"{clip(why)}")
        if result.get("is_error"):
            status = result.get("api_error_status")
            subtype = str(result.get("subtype") or "")
            parts = [subtype] if subtype and subtype != "success" else []
            if status:
                parts.append(f"API status {status}")
            if result.get("result"):
                parts.append(clip(str(result["result"]), 200))
            return Judgement.failed("Claude Code failed: " + ("; ".join(parts) or "is_error"))
        denied = result.get("permission_denials") or []
        if denied:
            names = sorted({str(d.get("tool_name") or "?") for d in denied if isinstance(d, dict)})
            return Judgement.failed(f"Claude Code was denied tools: {', '.join(names)}")
        return Judgement.ok(clip(state.final_message, 200))
