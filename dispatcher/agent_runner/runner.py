"""The Agent Runner wrapper: runs one agent, heartbeats, self-fences, reports its result.

``python -m necrocode.dispatcher.agent_runner [--] ARGV...`` (or ARGV as a JSON list in
``NECROCODE_AGENT_ARGV``) runs ARGV in the slot (``NECROCODE_SLOT_PATH``) as its child, in the
child's own process group. A thread sends a heartbeat to the Dispatcher every
``NECROCODE_HEARTBEAT_INTERVAL`` seconds; when the Dispatcher cannot be reached for
``NECROCODE_HEARTBEAT_TIMEOUT`` seconds, or answers ``{"action": "stop"}``, the wrapper stops its
child's whole group (TERM, grace, KILL): a runner the Dispatcher has given up on never keeps
working. SIGTERM/SIGINT/SIGHUP are forwarded the same way. At the end it writes
``exit_status.json`` in ``NECROCODE_ATTEMPT_DIR`` (atomically), reports completion (retried) and
exits with the agent's exit code (128+N when the agent died of signal N).

Stdlib only, so it runs in a minimal container with nothing but Python. It starts once per task,
so it imports as little as it can (no subprocess, logging, dataclasses or urllib).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from .http import PostError, post_json

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import FrameType

EXIT_FILE = "exit_status.json"
USAGE = "usage: python -m necrocode.dispatcher.agent_runner [--] COMMAND [ARG...]"


def _say(message: str) -> None:
    """One line on stderr (the attempt's log): the wrapper has no logging setup of its own."""
    try:
        sys.stderr.write(f"necrocode-runner: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(environ.get(name, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default


class WrapperConfig:
    """What the wrapper reads from its command line and the runner contract env."""

    def __init__(
        self,
        argv: list[str],
        runner_id: str,
        api_url: str | None = None,
        token: str | None = None,
        heartbeat_interval: float = 10.0,
        heartbeat_timeout: float = 60.0,
        slot_path: str | None = None,
        attempt_dir: str | None = None,
        log_path: str | None = None,
        stop_grace: float = 5.0,
        complete_attempts: int = 5,
        log_max_bytes: int = 0,
    ) -> None:
        self.argv = argv
        self.runner_id = runner_id
        self.api_url = api_url
        self.token = token
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.slot_path = slot_path
        self.attempt_dir = attempt_dir
        self.log_path = log_path
        self.stop_grace = stop_grace
        self.complete_attempts = complete_attempts
        self.log_max_bytes = log_max_bytes  # cap of the log file, tail kept (0: none)

    @classmethod
    def from_env(cls, args: list[str], environ: Mapping[str, str] | None = None) -> WrapperConfig:
        """Build from ``args`` (after the module name) and the environment; ValueError if none."""
        env = os.environ if environ is None else environ
        argv = list(args)
        if argv and argv[0] == "--":
            argv = argv[1:]
        if not argv and env.get("NECROCODE_AGENT_ARGV"):
            try:
                loaded = json.loads(env["NECROCODE_AGENT_ARGV"])
            except ValueError as exc:
                raise ValueError(f"NECROCODE_AGENT_ARGV is not JSON: {exc}") from exc
            if not isinstance(loaded, list) or not all(isinstance(a, str) for a in loaded):
                raise ValueError("NECROCODE_AGENT_ARGV must be a JSON list of strings")
            argv = loaded
        if not argv:
            raise ValueError("no agent command given")
        interval = _float(env, "NECROCODE_HEARTBEAT_INTERVAL", 10.0)
        timeout = _float(env, "NECROCODE_HEARTBEAT_TIMEOUT", 60.0)
        attempt_dir = env.get("NECROCODE_ATTEMPT_DIR") or None
        log_path = env.get("NECROCODE_LOG_PATH") or (
            os.path.join(attempt_dir, "output.log") if attempt_dir else None)
        return cls(
            argv=argv,
            runner_id=env.get("NECROCODE_RUNNER_ID") or env.get("RUNNER_ID") or "unknown",
            api_url=env.get("NECROCODE_API_URL") or None,
            token=env.get("NECROCODE_RUNNER_TOKEN") or None,
            heartbeat_interval=interval,
            heartbeat_timeout=max(timeout, interval),
            slot_path=env.get("NECROCODE_SLOT_PATH") or None,
            attempt_dir=attempt_dir,
            log_path=log_path,
            stop_grace=_float(env, "NECROCODE_STOP_GRACE", 5.0),
            complete_attempts=int(_float(env, "NECROCODE_COMPLETE_ATTEMPTS", 5)),
            log_max_bytes=int(_float(env, "NECROCODE_LOG_MAX_BYTES", 0)),
        )


class AgentRunner:
    """Runs one agent under supervision; :meth:`run` returns the exit code to exit with."""

    def __init__(self, config: WrapperConfig) -> None:
        self.config = config
        self.heartbeats_sent = 0
        self.fence_reason: str | None = None
        self._lock = threading.RLock()
        self._done = threading.Event()
        self._pid: int | None = None
        self._last_ok = time.monotonic()
        self.stream: Any = None  # AgentStream of a coding-agent preset (NECROCODE_AGENT)

    # --- main -------------------------------------------------------------------------------
    def run(self) -> int:
        cfg = self.config
        started_at = time.time()
        t0 = time.monotonic()
        self._install_signal_handlers()
        child_env = dict(os.environ)
        actions: list[tuple[int, ...]] = []
        pipe: tuple[int, int] | None = None
        try:
            if os.environ.get("NECROCODE_AGENT"):  # a preset: its files, its stream
                from .agent_stream import AgentStream

                self.stream = AgentStream.from_env(os.environ, self.fence)
                AgentStream.prepare(child_env)
                pipe = os.pipe()
                actions = [(os.POSIX_SPAWN_DUP2, pipe[1], 1), (os.POSIX_SPAWN_DUP2, pipe[1], 2)]
        except (ValueError, OSError) as exc:
            _say(f"cannot prepare the agent: {exc}")
            return self._finish(126, f"cannot prepare agent: {exc}", started_at, t0)
        try:
            if cfg.slot_path:
                os.chdir(cfg.slot_path)
            # the agent leads its own process group, so fencing it never hits the wrapper
            self._pid = os.posix_spawnp(
                cfg.argv[0], cfg.argv, child_env, setpgroup=0, file_actions=actions,
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT,
                           signal.SIGHUP),
            )
        except OSError as exc:
            _say(f"cannot start {cfg.argv[0]!r}: {exc}")
            code = 127 if isinstance(exc, FileNotFoundError | PermissionError) else 126
            return self._finish(code, f"cannot start agent: {exc}", started_at, t0)
        finally:
            if pipe is not None:
                os.close(pipe[1])
        if pipe is not None and self.stream is not None:
            self.stream.start(pipe[0])
        if cfg.log_path and cfg.log_max_bytes > 0:
            threading.Thread(target=self._cap_loop, name="necrocode-log-cap",
                             daemon=True).start()
        beat = None
        if cfg.api_url and cfg.token:
            beat = threading.Thread(target=self._heartbeat_loop, name="necrocode-heartbeat",
                                    daemon=True)
            beat.start()
        _, status = os.waitpid(self._pid, 0)
        with self._lock:
            self._done.set()
        rc = os.waitstatus_to_exitcode(status)
        _signal_group(self._pid, signal.SIGKILL)  # leftovers of the agent's group
        if beat is not None:
            beat.join(timeout=max(2.0, cfg.heartbeat_interval))
        code = rc if rc >= 0 else 128 - rc
        if self.fence_reason:
            reason = self.fence_reason
        elif rc < 0:
            reason = f"signal {-rc}"
        else:
            reason = "exited"
        return self._finish(code, reason, started_at, t0)

    def _finish(self, code: int, reason: str, started_at: float, t0: float) -> int:
        cfg = self.config
        duration = time.monotonic() - t0
        status = {
            "runner_id": cfg.runner_id, "exit_code": code, "reason": reason,
            "duration": duration, "started_at": started_at, "finished_at": time.time(),
            "heartbeats": self.heartbeats_sent, "source": "wrapper",
        }
        agent = self.stream.finish(code, cfg.attempt_dir) if self.stream is not None else None
        if agent is not None:
            status["agent"] = agent
        if cfg.attempt_dir:
            try:
                _write_json_atomic(os.path.join(cfg.attempt_dir, EXIT_FILE), status)
            except OSError as exc:
                _say(f"cannot write {EXIT_FILE}: {exc}")
        if cfg.api_url and cfg.token:
            self._report(code, duration, reason, agent)
        return code

    def _cap_loop(self) -> None:
        """Keep the log under its cap while the agent runs (tail kept; see logcap)."""
        from .logcap import cap_log

        cfg = self.config
        assert cfg.log_path
        while not self._done.wait(1.0):
            if cap_log(cfg.log_path, cfg.log_max_bytes):
                _say(f"output.log passed {cfg.log_max_bytes} bytes: earlier output dropped")

    # --- heartbeats and fencing -------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        cfg = self.config
        assert cfg.api_url and cfg.token
        path = f"/v1/runners/{cfg.runner_id}/heartbeat"
        self._last_ok = time.monotonic()
        while not self._done.is_set():
            quiet = time.monotonic() - self._last_ok
            try:
                beat: dict[str, Any] = {"pid": self._pid}
                if self.stream is not None:
                    beat.update(self.stream.heartbeat())
                answer = post_json(
                    cfg.api_url, path, cfg.token, beat,
                    timeout=max(0.5, min(cfg.heartbeat_interval, cfg.heartbeat_timeout - quiet)),
                )
            except PostError as exc:
                quiet = time.monotonic() - self._last_ok
                _say(f"heartbeat failed ({exc}); {quiet:.0f}s without the dispatcher")
                if quiet >= cfg.heartbeat_timeout:
                    self.fence(f"self-fenced: dispatcher unreachable for {quiet:.0f}s")
                    return
            else:
                self._last_ok = time.monotonic()
                self.heartbeats_sent += 1
                if answer.get("action") == "stop":
                    self.fence(f"stopped by the dispatcher: {answer.get('reason') or 'stop'}")
                    return
            remaining = cfg.heartbeat_timeout - (time.monotonic() - self._last_ok)
            self._done.wait(max(0.0, min(cfg.heartbeat_interval, remaining)))

    def fence(self, reason: str) -> None:
        """Stop the agent's process group: TERM now, KILL after the grace period."""
        with self._lock:
            if self.fence_reason is None:
                self.fence_reason = reason
                _say(f"{reason}; stopping the agent")
            if self._pid is None or self._done.is_set():
                return
            _signal_group(self._pid, signal.SIGTERM)
            threading.Thread(target=self._kill_after_grace, args=(self._pid,), daemon=True,
                             name="necrocode-fence").start()

    def _kill_after_grace(self, pgid: int) -> None:
        if not self._done.wait(self.config.stop_grace):
            with self._lock:
                if not self._done.is_set():
                    _signal_group(pgid, signal.SIGKILL)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def forward(signum: int, _frame: FrameType | None) -> None:
            self.fence(f"terminated by {signal.Signals(signum).name}")

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, forward)

    # --- completion -------------------------------------------------------------------------
    def _report(self, code: int, duration: float, reason: str,
                agent: dict[str, Any] | None = None) -> None:
        cfg = self.config
        assert cfg.api_url and cfg.token
        payload: dict[str, Any] = {
            "exit_code": code, "duration": duration, "reason": reason,
            "artifacts": [cfg.log_path] if cfg.log_path else [], "log_path": cfg.log_path,
        }
        if agent is not None:  # usage, judgement, budget verdict of a coding agent
            payload["agent"] = agent
        path = f"/v1/runners/{cfg.runner_id}/complete"
        delay = 0.2
        for attempt in range(1, cfg.complete_attempts + 1):
            try:
                post_json(cfg.api_url, path, cfg.token, payload, timeout=5.0)
                return
            except PostError as exc:
                if 400 <= exc.status < 500:  # refused: retrying cannot help
                    _say(f"completion refused by the dispatcher: {exc}")
                    return
                if attempt == cfg.complete_attempts:
                    _say(f"could not report completion ({exc}); the dispatcher will read "
                         f"{EXIT_FILE}")
                    return
            time.sleep(delay)
            delay = min(delay * 2.5, 3.0)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _write_json_atomic(path: str, data: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(data))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m necrocode.dispatcher.agent_runner``."""
    try:
        config = WrapperConfig.from_env(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        _say(f"{exc}\n{USAGE}")
        return 2
    return AgentRunner(config).run()
