"""The wrapper's side of a coding-agent preset: files, key references, the live stream.

Used only when the runner contract names a preset (``NECROCODE_AGENT``), so a plain command
imports none of this. Before the agent starts, the files of ``NECROCODE_AGENT_FILES`` are
written (config homes, ``prompt.md``) and ``NECROCODE_AGENT_SECRET_REFS`` copies the model key
from the variable the pod has into the one the CLI reads. While it runs, its output (a pipe)
is copied to the wrapper's own stdout (the container log) and fed to the preset's parser; the
rewritten result file, if any, is re-read on each heartbeat. Heartbeats carry the progress and
usage, the completion the judgement; a budget crossed (``NECROCODE_AGENT_BUDGET``) fences.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from ..agents import get_preset
from ..agents.base import USAGE_FILE
from ..agents.budget import Budget, check_budget
from ..agents.launch import AGENT_ENV, BUDGET_ENV, FILES_ENV, RESULT_FILE_ENV, SECRET_REFS_ENV


class AgentStream:
    """Parses one agent's output inside the wrapper; thread-safe."""

    def __init__(self, preset_name: str, result_file: str | None, budget: Budget,
                 on_budget: Callable[[str], None]) -> None:
        self.preset = get_preset(preset_name)
        self.parser = self.preset.parser()
        self.result_file = result_file
        self.budget = budget
        self.on_budget = on_budget
        self.budget_reason: str | None = None
        self._lock = threading.Lock()
        self._result_sig: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str],
                 on_budget: Callable[[str], None]) -> AgentStream | None:
        """The stream of the preset the environment names (None: a plain command).

        Raises ValueError for an unknown preset or a malformed variable."""
        name = environ.get(AGENT_ENV)
        if not name:
            return None
        try:
            raw = json.loads(environ.get(BUDGET_ENV) or "{}")
            budget = Budget(raw.get("max_cost_usd"), raw.get("max_tokens"), raw.get("max_turns"))
            return cls(name, environ.get(RESULT_FILE_ENV) or None, budget, on_budget)
        except KeyError as exc:
            raise ValueError(f"{AGENT_ENV}={name!r} is not a known agent") from exc
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"{BUDGET_ENV} is not a JSON object: {exc}") from exc

    @staticmethod
    def prepare(env: MutableMapping[str, str]) -> None:
        """Write the preset's files and resolve key references in ``env`` (the agent's)."""
        files = json.loads(env.pop(FILES_ENV, "") or "{}")
        for path, text in files.items():
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        refs = json.loads(env.pop(SECRET_REFS_ENV, "") or "{}")
        for target, source in refs.items():
            if source in env:
                env[target] = env[source]

    # --- reading ---------------------------------------------------------------------------
    def start(self, read_fd: int, out_fd: int = 1) -> None:
        """Pump the agent's output pipe: copy to ``out_fd``, feed the parser, until EOF."""
        self._thread = threading.Thread(target=self._pump, args=(read_fd, out_fd), daemon=True,
                                        name="necrocode-agent-stream")
        self._thread.start()

    def _pump(self, read_fd: int, out_fd: int) -> None:
        try:
            while True:
                data = os.read(read_fd, 65536)
                if not data:
                    return
                try:
                    os.write(out_fd, data)
                except OSError:
                    pass
                with self._lock:
                    self.parser.feed(data)
                self._check_budget()
        finally:
            os.close(read_fd)

    def _read_result(self) -> None:
        if not self.result_file:
            return
        try:
            st = os.stat(self.result_file)
            if (st.st_mtime_ns, st.st_size) == self._result_sig:
                return
            with open(self.result_file, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return
        with self._lock:
            self._result_sig = (st.st_mtime_ns, st.st_size)
            self.parser.load_document(text)

    def _check_budget(self) -> None:
        if self.budget_reason is not None:
            return
        with self._lock:
            verdict = check_budget(self.parser.state.usage, self.budget)
            if verdict is None or self.budget_reason is not None:
                return
            self.budget_reason = verdict.reason
        self.on_budget(verdict.reason)

    # --- reporting ---------------------------------------------------------------------------
    def heartbeat(self) -> dict[str, Any]:
        """Progress and usage for a heartbeat (re-reads the result file)."""
        self._read_result()
        self._check_budget()
        with self._lock:
            state = self.parser.state
        return {"progress": state.last_action, "usage": state.usage.to_dict()}

    def finish(self, exit_code: int | None, attempt_dir: str | None) -> dict[str, Any]:
        """The end: the rest of the output, the judgement; ``usage.json`` in the attempt dir."""
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._read_result()
        with self._lock:
            self.parser.finish()
            state = self.parser.state
            judgement = self.preset.judge(state, exit_code)
        out: dict[str, Any] = {
            "agent": self.preset.name, "usage": state.usage.to_dict(),
            "judgement": {"verdict": judgement.verdict.value, "reason": judgement.reason},
            "final_message": state.final_message[:2000], "budget": self.budget_reason,
        }
        if attempt_dir:
            try:
                with open(os.path.join(attempt_dir, USAGE_FILE), "w", encoding="utf-8") as f:
                    json.dump({**state.usage.to_dict(), "agent": self.preset.name,
                               "last_action": state.last_action,
                               "final_message": state.final_message[:2000],
                               "error": state.error}, f)
            except OSError:
                pass
        return out
