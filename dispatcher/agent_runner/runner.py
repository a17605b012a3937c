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

Stdlib only, so it runs in a minimal container with nothing but Python.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

logger = logging.getLogger("necrocode.agent_runner")

EXIT_FILE = "exit_status.json"
USAGE = "usage: python -m necrocode.dispatcher.agent_runner [--] COMMAND [ARG...]"


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(environ.get(name, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default


@dataclass
class WrapperConfig:
    """What the wrapper reads from its command line and the runner contract env."""

    argv: list[str]
    runner_id: str
    api_url: str | None = None
    token: str | None = None
    heartbeat_interval: float = 10.0
    heartbeat_timeout: float = 60.0
    slot_path: str | None = None
    attempt_dir: str | None = None
    log_path: str | None = None
    stop_grace: float = 5.0
    complete_attempts: int = 5

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
            str(Path(attempt_dir) / "output.log") if attempt_dir else None)
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
        )


def _parent_death_signal() -> Any:
    """A pre-exec hook that makes the child die with SIGKILL if the wrapper is killed (Linux).

    The wrapper's own SIGKILL cannot be forwarded; this covers the agent itself, and the group
    kill covers the normal paths. None where prctl is unavailable.
    """
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except Exception:
        return None

    def hook() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG

    return hook


class AgentRunner:
    """Runs one agent under supervision; :meth:`run` returns the exit code to exit with."""

    def __init__(self, config: WrapperConfig) -> None:
        self.config = config
        self.heartbeats_sent = 0
        self.fence_reason: str | None = None
        self._lock = threading.RLock()
        self._done = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        self._last_ok = time.monotonic()

    # --- main -------------------------------------------------------------------------------
    def run(self) -> int:
        cfg = self.config
        started_at = time.time()
        t0 = time.monotonic()
        self._install_signal_handlers()
        try:
            self._child = subprocess.Popen(
                cfg.argv, cwd=cfg.slot_path or None, process_group=0,
                preexec_fn=_parent_death_signal(),
            )
        except OSError as exc:
            print(f"necrocode-runner: cannot start {cfg.argv[0]!r}: {exc}", file=sys.stderr,
                  flush=True)
            code = 127 if isinstance(exc, FileNotFoundError | PermissionError) else 126
            return self._finish(code, f"cannot start agent: {exc}", started_at, t0)
        beat = None
        if cfg.api_url and cfg.token:
            beat = threading.Thread(target=self._heartbeat_loop, name="necrocode-heartbeat",
                                    daemon=True)
            beat.start()
        rc = self._child.wait()
        self._done.set()
        self._kill_leftovers()
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
        if cfg.attempt_dir:
            try:
                _write_json_atomic(Path(cfg.attempt_dir) / EXIT_FILE, status)
            except OSError as exc:
                logger.warning("cannot write %s: %s", EXIT_FILE, exc)
        if cfg.api_url and cfg.token:
            self._report(code, duration, reason)
        return code

    # --- heartbeats and fencing -------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        from ..api.client import ApiError, heartbeat

        cfg = self.config
        assert cfg.api_url and cfg.token
        self._last_ok = time.monotonic()
        while not self._done.is_set():
            quiet = time.monotonic() - self._last_ok
            try:
                answer = heartbeat(
                    cfg.api_url, cfg.runner_id, cfg.token,
                    extra={"pid": self._child.pid if self._child else None},
                    timeout=max(0.5, min(cfg.heartbeat_interval, cfg.heartbeat_timeout - quiet)),
                )
            except ApiError as exc:
                quiet = time.monotonic() - self._last_ok
                logger.warning("heartbeat failed (%s); %.0fs without the dispatcher", exc, quiet)
                if quiet >= cfg.heartbeat_timeout:
                    self.fence(f"self-fenced: dispatcher unreachable for {quiet:.0f}s")
                    return
            else:
                self._last_ok = time.monotonic()
                self.heartbeats_sent += 1
                if answer.get("action") == "stop":
                    self.fence(f"stopped by the dispatcher: {answer.get('reason') or 'stop'}")
                    return
            wait = cfg.heartbeat_interval
            remaining = cfg.heartbeat_timeout - (time.monotonic() - self._last_ok)
            self._done.wait(max(0.0, min(wait, remaining)))

    def fence(self, reason: str) -> None:
        """Stop the agent's process group: TERM now, KILL after the grace period."""
        with self._lock:
            if self.fence_reason is None:
                self.fence_reason = reason
                print(f"necrocode-runner: {reason}; stopping the agent", file=sys.stderr,
                      flush=True)
            child = self._child
            if child is None or child.returncode is not None:
                return
            _signal_group(child.pid, signal.SIGTERM)
            threading.Thread(target=self._kill_after_grace, args=(child,), daemon=True,
                             name="necrocode-fence").start()

    def _kill_after_grace(self, child: subprocess.Popen[bytes]) -> None:
        if not self._done.wait(self.config.stop_grace):
            _signal_group(child.pid, signal.SIGKILL)

    def _kill_leftovers(self) -> None:
        if self._child is not None:
            _signal_group(self._child.pid, signal.SIGKILL)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def forward(signum: int, _frame: FrameType | None) -> None:
            self.fence(f"terminated by {signal.Signals(signum).name}")

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, forward)

    # --- completion -------------------------------------------------------------------------
    def _report(self, code: int, duration: float, reason: str) -> None:
        from ..api.client import ApiError, complete

        cfg = self.config
        assert cfg.api_url and cfg.token
        artifacts = [cfg.log_path] if cfg.log_path else []
        delay = 0.2
        for attempt in range(1, cfg.complete_attempts + 1):
            try:
                complete(cfg.api_url, cfg.runner_id, cfg.token, exit_code=code,
                         duration=duration, reason=reason, artifacts=artifacts,
                         extra={"log_path": cfg.log_path}, timeout=5.0)
                return
            except ApiError as exc:
                if 400 <= exc.status < 500:  # refused: retrying cannot help
                    logger.warning("completion refused by the dispatcher: %s", exc)
                    return
                if attempt == cfg.complete_attempts:
                    logger.warning("could not report completion (%s); the dispatcher will "
                                   "read %s", exc, EXIT_FILE)
                    return
            time.sleep(delay)
            delay = min(delay * 2.5, 3.0)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m necrocode.dispatcher.agent_runner``."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="necrocode-runner: %(message)s")
    try:
        config = WrapperConfig.from_env(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(f"necrocode-runner: {exc}\n{USAGE}", file=sys.stderr)
        return 2
    return AgentRunner(config).run()
