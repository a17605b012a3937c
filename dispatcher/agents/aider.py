"""aider (PyPI ``aider-chat``): ``aider --message-file prompt.md`` in whole-file edit mode.

Text output only: ``Tokens: 1.2k sent, 45 received. Cost: $0.01 message, $0.02 session.`` per
exchange, ``Applied edit to FILE`` per change. It exits 0 even on an authentication error, so
success means an edit was applied and no error ended the run.
"""

from __future__ import annotations

import re

from ..models import Usage
from .base import (
    PROMPT_FILE,
    AgentEvent,
    AgentInvocation,
    AgentPreset,
    AttemptContext,
    EventKind,
    Judgement,
    StreamParser,
    StreamState,
    clip,
)

_TOKENS = re.compile(r"^Tokens:\s*([\d.,]+)([km]?)\s+sent(?:,\s*([\d.,]+)([km]?)\s+cache\w*"
                     r"(?:\s+\w+)?)?(?:,\s*([\d.,]+)([km]?)\s+cache\w*(?:\s+\w+)?)?,\s*"
                     r"([\d.,]+)([km]?)\s+received\.?(?:\s*Cost:\s*\$([\d.,]+)\s+message)?",
                     re.IGNORECASE)
_ERROR = re.compile(r"(litellm\.\w+Error|AuthenticationError|APIConnectionError|"
                    r"^Error:|Model .* not found)", re.IGNORECASE)


def _count(number: str, suffix: str) -> int:
    value = float(number.replace(",", ""))
    return int(round(value * {"k": 1_000, "m": 1_000_000}.get(suffix.lower(), 1)))


class AiderParser(StreamParser):
    """aider's ``--no-pretty`` text lines."""

    def __init__(self) -> None:
        super().__init__()
        self.edits: list[str] = []

    def on_text(self, text: str) -> list[AgentEvent]:
        m = _TOKENS.match(text)
        if m:
            cost = float(m.group(9).replace(",", "")) if m.group(9) else None
            cached = sum(_count(m.group(i), m.group(i + 1) or "") for i in (3, 5) if m.group(i))
            self._set(usage=self.state.usage + Usage(
                _count(m.group(1), m.group(2)), _count(m.group(7), m.group(8)), cached, cost, 1))
            return [AgentEvent(EventKind.USAGE), AgentEvent(EventKind.TURN)]
        if text.startswith("Applied edit to "):
            self.edits.append(text.removeprefix("Applied edit to ").strip())
            self._set(result={"edits": list(self.edits)})
            return [self._progress(text)]
        if _ERROR.search(text):
            self._set(error=clip(text))
            return [AgentEvent(EventKind.ERROR, clip(text))]
        if text.startswith("Commit "):
            return [self._progress(text)]
        return []


class AiderPreset(AgentPreset):
    """``aider --model openai/MODEL --yes-always ... --message-file prompt.md FILES``."""

    name = "aider"
    executable = "aider"
    default_key_env = "OPENAI_API_KEY"
    extra_options = {
        "edit_format": "aider's --edit-format; default whole.",
        "files": "files of the worktree to add to the chat (a list).",
        "auto_commits": "let aider commit its edits; default false (the Dispatcher commits).",
        "model_metadata_file": "a model metadata JSON for models litellm does not know.",
    }
    reports = ("tokens sent/received and cost per exchange as text, the edits applied; "
               "success when an edit was applied and no error ended the run")

    def invocation(self, ctx: AttemptContext) -> AgentInvocation:
        opts = ctx.options
        model = opts.model or "gpt-4o-mini"
        if "/" not in model:
            model = f"openai/{model}"
        prompt_file = ctx.path(PROMPT_FILE)
        argv = [self.program(opts), "--model", model, "--yes-always", "--no-check-update",
                "--no-analytics", "--no-gitignore", "--no-show-release-notes",
                "--edit-format", str(self.extra(opts, "edit_format", "whole")), "--no-stream",
                "--no-pretty", "--no-fancy-input", "--message-file", prompt_file]
        if not self.extra(opts, "auto_commits", False):
            argv.append("--no-auto-commits")
        if opts.base_url:
            argv += ["--openai-api-base", opts.base_url]
        if self.extra(opts, "model_metadata_file"):
            argv += ["--model-metadata-file", str(self.extra(opts, "model_metadata_file"))]
        argv += [*opts.extra_args, *[str(f) for f in self.extra(opts, "files", []) or []]]
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "AIDER_ANALYTICS": "false"}
        secret: set[str] = set()
        _, key = ctx.api_key(self.default_key_env)
        if key is not None:  # in the environment, never on the command line
            env["OPENAI_API_KEY"] = key
            secret.add("OPENAI_API_KEY")
        return AgentInvocation(tuple(argv), env, secret_env=frozenset(secret))

    def parser(self) -> StreamParser:
        return AiderParser()

    def judge(self, state: StreamState, exit_code: int | None) -> Judgement:
        if state.error and state.result is None:
            return Judgement.failed(f"aider failed: {state.error}")
        if state.result is None:
            return Judgement.failed(f"aider applied no edit (exit {exit_code})")
        edits = ", ".join(state.result.get("edits") or [])
        return Judgement.ok(f"edited {edits}")
