"""Codex CLI (npm ``@openai/codex``): ``codex exec --json`` with a generated ``CODEX_HOME``.

Its JSONL reports items (commands, messages) as they happen and the usage at the end of the
turn (``turn.completed``); no cost (a price table in the config can derive one). A failed turn
is ``turn.failed``.
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

OPENAI_URL = "https://api.openai.com/v1"
_ACTIONS = ("agent_message", "command_execution", "file_change", "mcp_tool_call", "web_search")


class CodexParser(StreamParser):
    """``codex exec --json`` lines."""

    def on_json(self, obj: dict[str, Any]) -> list[AgentEvent]:
        kind = obj.get("type")
        if kind == "thread.started":
            return [self._progress("started")]
        if kind in ("item.started", "item.completed"):
            return self._item(obj.get("item") or {}, kind == "item.completed")
        if kind == "turn.completed":
            u = obj.get("usage") or {}
            self._set(result=obj)
            return [self._add_usage(input_tokens=num(u.get("input_tokens")),
                                    output_tokens=num(u.get("output_tokens")),
                                    cached_tokens=num(u.get("cached_input_tokens"))),
                    AgentEvent(EventKind.RESULT)]
        if kind == "turn.failed":
            text = str((obj.get("error") or {}).get("message") or "turn failed")
            self._set(result=obj, error=clip(text))
            return [AgentEvent(EventKind.ERROR, clip(text)), AgentEvent(EventKind.RESULT)]
        if kind == "error":
            text = clip(str(obj.get("message") or "error"))
            self._set(error=text)
            return [AgentEvent(EventKind.ERROR, text)]
        return []

    def _item(self, item: dict[str, Any], completed: bool) -> list[AgentEvent]:
        itype = item.get("type")
        events: list[AgentEvent] = []
        if itype == "command_execution":
            text = f"$ {item.get('command') or ''}"
            if completed and item.get("exit_code") is not None:
                text += f" (exit {item['exit_code']})"
            events.append(self._progress(text))
        elif itype == "agent_message" and completed:
            text = str(item.get("text") or "")
            self._set(final_message=text)
            events += [self._progress(text), AgentEvent(EventKind.FINAL, clip(text))]
        elif itype == "error":
            text = clip(str(item.get("message") or "error"))
            self._set(error=text)
            events.append(AgentEvent(EventKind.ERROR, text))
        elif itype in ("file_change", "reasoning", "mcp_tool_call", "web_search"):
            events.append(self._progress(str(item.get("text") or itype)))
        if completed and itype in _ACTIONS:
            events += [self._add_usage(turns=1), AgentEvent(EventKind.TURN)]
        return events


def _toml(value: Any) -> str:
    """A TOML value (strings and numbers JSON-quote the same way)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


class CodexPreset(AgentPreset):
    """``codex exec --json --skip-git-repo-check PROMPT`` with ``CODEX_HOME/config.toml``."""

    name = "codex"
    executable = "codex"
    default_key_env = "OPENAI_API_KEY"
    extra_options = {
        "sandbox": "sandbox_mode of config.toml: danger-full-access (default), "
        "workspace-write or read-only.",
        "max_retries": "request and stream retries of the model provider; default 0.",
        "reasoning_effort": "model_reasoning_effort of config.toml (low, medium, high).",
    }
    reports = ("commands and messages as items, tokens (input, cached input, output) at the "
               "end of the turn, no cost; success unless turn.failed")

    def invocation(self, ctx: AttemptContext) -> AgentInvocation:
        opts = ctx.options
        home = ctx.path("codex-home")
        key_name, key = ctx.api_key(self.default_key_env)
        retries = int(self.extra(opts, "max_retries", 0))
        lines = [
            f"model = {_toml(opts.model or 'gpt-5-codex')}",
            'model_provider = "necrocode"',
            'approval_policy = "never"',
            f"sandbox_mode = {_toml(self.extra(opts, 'sandbox', 'danger-full-access'))}",
        ]
        if self.extra(opts, "reasoning_effort"):
            lines.append(f"model_reasoning_effort = {_toml(self.extra(opts, 'reasoning_effort'))}")
        lines += [
            "", "[analytics]", "enabled = false",
            "", "[features]", "plugins = false",
            "", "[model_providers.necrocode]", 'name = "necrocode"',
            f"base_url = {_toml(opts.base_url or OPENAI_URL)}",
            f"env_key = {_toml(key_name)}",
            'wire_api = "responses"',
            f"request_max_retries = {retries}",
            f"stream_max_retries = {retries}",
        ]
        argv = [self.program(opts), "exec", "--json", "--skip-git-repo-check", *opts.extra_args,
                prompt_argument(ctx)]
        env = {"CODEX_HOME": home}
        secret: set[str] = set()
        if key is not None:
            env[key_name] = key
            secret.add(key_name)
        return AgentInvocation(tuple(argv), env, {f"{home}/config.toml": "\n".join(lines) + "\n"},
                               secret_env=frozenset(secret))

    def parser(self) -> StreamParser:
        return CodexParser()

    def judge(self, state: StreamState, exit_code: int | None) -> Judgement:
        result = state.result
        if result is not None and result.get("type") == "turn.failed":
            return Judgement.failed(f"Codex turn failed: {state.error}")
        if result is None:
            why = state.error or "no turn.completed in its output"
            return Judgement.failed(f"Codex ended without finishing its turn (exit {exit_code}): "
                                    f"{clip(why)}")
        return Judgement.ok(clip(state.final_message, 200))
