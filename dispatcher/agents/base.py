"""The coding-agent preset interface: invocation, stream parsing and judgement of one attempt.

A preset (:class:`AgentPreset`) knows one agent CLI: the headless argv and environment of an
attempt (:meth:`AgentPreset.invocation`), a parser of its machine-readable output
(:meth:`AgentPreset.parser`) and how to judge the attempt from that output rather than from the
exit code (:meth:`AgentPreset.judge`). Stdlib only: the runner wrapper inside a container
imports the parsers too.
"""

from __future__ import annotations

import json
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from ..models import Usage

#: The file, in the attempt's agent directory, holding the prompt given to the agent.
PROMPT_FILE = "prompt.md"
#: The per-attempt usage record written by the stream reader.
USAGE_FILE = "usage.json"
#: Shown in place of a secret value wherever an environment is displayed.
MASK = "***"


class AgentOptionError(ValueError):
    """An option value a preset cannot use (caught by config validation with its location)."""


@dataclass(frozen=True)
class AgentOptions:
    """The options of a pool's (or task's) ``agent_options``, checked and typed.

    ``extras`` holds the preset's own keys (:attr:`AgentPreset.extra_options`).
    """

    model: str | None = None
    base_url: str | None = None  # model endpoint (gateway, proxy, local model)
    api_key_env: str | None = None  # the variable holding the key; its value is never stored
    extra_args: tuple[str, ...] = ()
    executable: str | None = None  # default: the preset's CLI found on PATH
    extras: Mapping[str, Any] = field(default_factory=dict)

    def merged(self, override: AgentOptions) -> AgentOptions:
        """These options with every key ``override`` sets taken from it (a task over its pool)."""
        return replace(
            self,
            model=override.model or self.model,
            base_url=override.base_url or self.base_url,
            api_key_env=override.api_key_env or self.api_key_env,
            extra_args=override.extra_args or self.extra_args,
            executable=override.executable or self.executable,
            extras={**self.extras, **override.extras},
        )


COMMON_OPTIONS = ("model", "base_url", "api_key_env", "extra_args", "executable")


@dataclass(frozen=True)
class AttemptContext:
    """What a preset needs to build one attempt's invocation.

    ``agent_dir`` is the attempt's own directory as the agent sees it (per-attempt config
    homes, the prompt file, result files); ``environ`` is where the key variable is looked up.
    """

    prompt: str
    slot_path: str
    agent_dir: str
    options: AgentOptions
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    command: tuple[str, ...] = ()  # the plain argv (the ``command`` preset runs it)

    def path(self, *parts: str) -> str:
        """A path inside the agent directory."""
        return os.path.join(self.agent_dir, *parts)

    def api_key(self, default_env: str) -> tuple[str, str | None]:
        """(variable name, value) of the model key: ``api_key_env`` or the CLI's default."""
        name = self.options.api_key_env or default_env
        return name, self.environ.get(name)


@dataclass(frozen=True)
class AgentInvocation:
    """How to start one attempt: argv, extra environment, files to write first.

    ``files`` maps absolute paths to contents (config homes, ``prompt.md``); ``result_file``
    is a document the agent rewrites as it goes (mini-swe-agent's trajectory) and the stream
    reader re-reads whole, else the output log is the stream. ``secret_env`` names the
    variables of ``env`` that carry a secret: never logged, stored or shown.
    """

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    result_file: str | None = None
    secret_env: frozenset[str] = frozenset()

    def shown_env(self) -> dict[str, str]:
        """The environment with secrets masked, for logs and the task detail."""
        return {k: (MASK if k in self.secret_env else v) for k, v in self.env.items()}

    def write_files(self) -> None:
        """Create ``files`` (parents too), private to the user: they may name key variables."""
        for path, text in self.files.items():
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)


class Verdict(str, Enum):
    """How an attempt ended, judged from what the agent reported."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the preset cannot tell (plain commands): the exit code decides


@dataclass(frozen=True)
class Judgement:
    """A preset's verdict on a finished attempt, with the reason shown as the last error."""

    verdict: Verdict
    reason: str = ""

    @property
    def succeeded(self) -> bool:
        return self.verdict is Verdict.SUCCEEDED

    @classmethod
    def ok(cls, reason: str = "") -> Judgement:
        return cls(Verdict.SUCCEEDED, reason)

    @classmethod
    def failed(cls, reason: str) -> Judgement:
        return cls(Verdict.FAILED, reason)


class EventKind(str, Enum):
    """Kinds of :class:`AgentEvent`."""

    PROGRESS = "progress"  # the last action or message: the progress column, a sign of life
    TURN = "turn"  # one more model turn
    USAGE = "usage"  # tokens or cost changed
    FINAL = "final"  # the agent's final message
    ERROR = "error"  # an error the agent reported (it may still go on)
    RESULT = "result"  # the agent's own end-of-run record arrived


@dataclass(frozen=True)
class AgentEvent:
    """One thing read from an agent's stream."""

    kind: EventKind
    text: str = ""


@dataclass(frozen=True)
class StreamState:
    """What the stream told so far: usage, the last action, the final message, errors.

    ``result`` is the agent's own end-of-run record (Claude's ``result`` line, Gemini's
    ``result``, Codex's last ``turn.completed``/``turn.failed``, mini-swe-agent's ``info``);
    presets judge from it.
    """

    usage: Usage = Usage()
    last_action: str = ""
    final_message: str = ""
    error: str = ""
    result: Mapping[str, Any] | None = None
    events: int = 0


class StreamParser:
    """Incremental parser of one agent's output. Not thread-safe: one reader feeds it.

    :meth:`feed` takes appended bytes of the output log (split into lines; JSON lines go to
    :meth:`on_json`, others to :meth:`on_text`); :meth:`load_document` takes the whole text of a
    rewritten result file. Subclasses update :attr:`state` through :meth:`_set` and return the
    events they saw.
    """

    def __init__(self) -> None:
        self.state = StreamState()
        self._buffer = b""

    def feed(self, data: bytes) -> list[AgentEvent]:
        """Parse appended output; a partial last line waits for the next call."""
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        events: list[AgentEvent] = []
        for raw in lines:
            events += self._line(raw)
        return events

    def finish(self) -> list[AgentEvent]:
        """The output ended: parse a last line without its newline."""
        raw, self._buffer = self._buffer, b""
        return self._line(raw) if raw.strip() else []

    def load_document(self, text: str) -> list[AgentEvent]:
        """Parse the whole result file (presets with :attr:`AgentInvocation.result_file`)."""
        return []

    def _line(self, raw: bytes) -> list[AgentEvent]:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            return []
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                events = self.on_json(obj)
                if events:
                    self._set(events=self.state.events + len(events))
                return events
        return self.on_text(text)

    def on_json(self, obj: dict[str, Any]) -> list[AgentEvent]:
        """One JSON object line of the stream."""
        return []

    def on_text(self, text: str) -> list[AgentEvent]:
        """One line that is not a JSON object (stderr noise, plain-text agents)."""
        return []

    def _set(self, **changes: Any) -> None:
        self.state = replace(self.state, **changes)

    def _progress(self, text: str) -> AgentEvent:
        text = " ".join(text.split())[:200]
        self._set(last_action=text)
        return AgentEvent(EventKind.PROGRESS, text)

    def _add_usage(self, **delta: Any) -> AgentEvent:
        u = self.state.usage
        cost = delta.pop("cost_usd", None)
        new = u + Usage(**delta, cost_usd=cost)
        self._set(usage=new)
        return AgentEvent(EventKind.USAGE)


def num(value: Any) -> int:
    """A token count from JSON (missing, null or malformed: 0)."""
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


class AgentPreset(ABC):
    """One agent CLI: how to run it headless, read its output and judge its result."""

    #: The preset's name in config (``agent: codex``).
    name: str = ""
    #: The CLI's executable name, looked up on PATH unless ``executable`` is given.
    executable: str = ""
    #: The preset's own option keys (beyond :data:`COMMON_OPTIONS`), with their meaning.
    extra_options: Mapping[str, str] = {}
    #: The variable the CLI reads its key from when ``api_key_env`` is not given.
    default_key_env: str = ""
    #: What the CLI reports (README "Run real agents").
    reports: str = ""

    @abstractmethod
    def invocation(self, ctx: AttemptContext) -> AgentInvocation:
        """The argv, environment and files of one attempt."""

    @abstractmethod
    def parser(self) -> StreamParser:
        """A fresh parser of the CLI's output for one attempt."""

    @abstractmethod
    def judge(self, state: StreamState, exit_code: int | None) -> Judgement:
        """Success or failure of a finished attempt from what it reported, with the reason."""

    def check_options(self, options: AgentOptions) -> list[tuple[str, str]]:
        """Problems of ``options`` as (key, message); empty when usable."""
        return []

    def program(self, options: AgentOptions) -> str:
        """The executable to run: ``executable`` if given, else the CLI on PATH (or its name)."""
        return options.executable or shutil.which(self.executable) or self.executable

    @staticmethod
    def extra(options: AgentOptions, key: str, default: Any = None) -> Any:
        """One of the preset's own options."""
        return options.extras.get(key, default)


def clip(text: str, limit: int = 300) -> str:
    """One line of at most ``limit`` characters (a reason, a summary)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
