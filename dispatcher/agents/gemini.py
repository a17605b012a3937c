"""Gemini CLI (npm ``@google/gemini-cli``): ``gemini -p`` with stream-json output.

Reports messages and tool calls as they happen and a final ``result`` with ``status`` and the
token totals (no cost). Settings live in a per-attempt ``GEMINI_CLI_HOME``.
"""

from __future__ import annotations

import json
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


class GeminiParser(StreamParser):
    """``--output-format stream-json`` lines."""

    def __init__(self) -> None:
        super().__init__()
        self._reply = ""  # the assistant message being streamed (delta chunks)

    def on_json(self, obj: dict[str, Any]) -> list[AgentEvent]:
        kind = obj.get("type")
        if kind == "init":
            return [self._progress(f"started (model {obj.get('model') or '?'})")]
        if kind == "message" and obj.get("role") == "assistant":
            text = str(obj.get("content") or "")
            self._reply = self._reply + text if obj.get("delta") else text
            self._set(final_message=self._reply)
            return [self._progress(self._reply)]
        if kind == "tool_use":
            self._reply = ""
            params = obj.get("parameters") or {}
            detail = params.get("command") or params.get("file_path") if isinstance(
                params, dict) else ""
            return [self._progress(f"{obj.get('tool_name') or 'tool'}: {detail or ''}"),
                    self._add_usage(turns=1), AgentEvent(EventKind.TURN)]
        if kind == "error":
            text = clip(str(obj.get("message") or obj.get("error") or "error"))
            self._set(error=text)
            return [AgentEvent(EventKind.ERROR, text)]
        if kind == "result":
            return self._result(obj)
        return []

    def _result(self, obj: dict[str, Any]) -> list[AgentEvent]:
        stats = obj.get("stats") or {}
        usage = self.state.usage
        self._set(result=obj, usage=type(usage)(
            input_tokens=num(stats.get("input_tokens")),
            output_tokens=num(stats.get("output_tokens")),
            cached_tokens=num(stats.get("cached")), cost_usd=usage.cost_usd,
            turns=usage.turns + (1 if self.state.final_message else 0)))
        err = obj.get("error")
        if err:
            message = err.get("message") if isinstance(err, dict) else err
            self._set(error=clip(str(message)))
        return [AgentEvent(EventKind.USAGE), AgentEvent(EventKind.RESULT)]


class GeminiPreset(AgentPreset):
    """``gemini -p PROMPT --output-format stream-json --yolo --skip-trust``."""

    name = "gemini"
    executable = "gemini"
    default_key_env = "GEMINI_API_KEY"
    extra_options = {
        "max_attempts": "model request attempts (general.maxAttempts); default 1.",
    }
    reports = ("messages and tool calls as they happen, token totals (input, output, cached) "
               "in the final result, no cost; success from result.status")

    def invocation(self, ctx: AttemptContext) -> AgentInvocation:
        opts = ctx.options
        home = ctx.path("gemini-home")
        settings = {
            "privacy": {"usageStatisticsEnabled": False},
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False,
                        "maxAttempts": int(self.extra(opts, "max_attempts", 1))},
            "telemetry": {"enabled": False},
        }
        argv = [self.program(opts), "-p", prompt_argument(ctx), "--output-format", "stream-json",
                "--yolo", "--skip-trust"]
        if opts.model:
            argv += ["-m", opts.model]
        argv += opts.extra_args
        env = {"GEMINI_CLI_HOME": home, "GEMINI_CLI_NO_RELAUNCH": "true"}
        if opts.base_url:
            env["GOOGLE_GEMINI_BASE_URL"] = opts.base_url
        secret: set[str] = set()
        _, key = ctx.api_key(self.default_key_env)
        if key is not None:
            env["GEMINI_API_KEY"] = key
            secret.add("GEMINI_API_KEY")
        files = {f"{home}/.gemini/settings.json": json.dumps(settings, indent=2) + "\n"}
        return AgentInvocation(tuple(argv), env, files, secret_env=frozenset(secret))

    def parser(self) -> StreamParser:
        return GeminiParser()

    def judge(self, state: StreamState, exit_code: int | None) -> Judgement:
        result = state.result
        if result is None:
            why = state.error or "no result in its output"
            return Judgement.failed(f"Gemini CLI ended without a result (exit {exit_code}): "
                                    f"{clip(why)}")
        status = str(result.get("status") or "")
        if status != "success":
            return Judgement.failed(f"Gemini CLI result {status or 'without status'}: "
                                    f"{state.error or 'no error message'}")
        return Judgement.ok(clip(state.final_message, 200))
