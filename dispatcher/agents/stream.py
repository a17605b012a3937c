"""The live stream reader: tails agents' output off the engine thread.

One :class:`StreamReader` thread polls every watched attempt: new bytes of its output log (and
the preset's rewritten result file, if any) go to the preset's parser; the latest state, the
time the output last grew (liveness) and a budget verdict are kept per runner. The engine (or a
wrapper) reads them with :meth:`StreamReader.updates` / :meth:`StreamReader.latest`, or gets
them pushed to ``on_update`` (called on the reader thread: it must not block). At the end
:meth:`StreamReader.finish` reads the rest and judges the attempt. ``usage.json`` is written in
the attempt's directory whenever the usage changes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .base import USAGE_FILE, AgentPreset, Judgement, StreamParser, StreamState
from .budget import Budget, BudgetVerdict, Price, check_budget, with_cost

log = logging.getLogger(__name__)

#: Bytes read from one log per poll at most (a flood is read over several polls).
CHUNK = 1 << 20


@dataclass(frozen=True)
class RunUpdate:
    """The latest of one watched run: its stream state (with a derived cost), when its output
    last grew (``time.monotonic``), and the budget it crossed, if any."""

    runner_id: str
    state: StreamState
    last_growth: float
    budget: BudgetVerdict | None = None
    finished: bool = False


@dataclass(frozen=True)
class AttemptResult:
    """A finished attempt: the preset's judgement and what its stream said."""

    judgement: Judgement
    state: StreamState
    budget: BudgetVerdict | None = None


class _Watched:
    """Reader-thread state of one run (guarded by the reader's lock)."""

    def __init__(self, runner_id: str, log_path: Path, preset: AgentPreset, budget: Budget,
                 result_file: Path | None, usage_path: Path | None, model: str | None,
                 offset: int, now: float) -> None:
        self.runner_id = runner_id
        self.log_path = log_path
        self.preset = preset
        self.parser: StreamParser = preset.parser()
        self.budget = budget
        self.result_file = result_file
        self.usage_path = usage_path
        self.model = model
        self.offset = offset
        self.result_sig: tuple[int, int] | None = None
        self.last_growth = now
        self.verdict: BudgetVerdict | None = None
        self.written_usage: object = None
        self.update: RunUpdate | None = None


class StreamReader:
    """Tails the output of watched runs on its own thread; every method is thread-safe."""

    def __init__(self, *, interval: float = 0.25,
                 on_update: Callable[[RunUpdate], None] | None = None,
                 prices: Mapping[str, Price] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.on_update = on_update
        self.prices = dict(prices or {})
        self._clock = clock
        self._lock = threading.Lock()
        self._runs: dict[str, _Watched] = {}
        self._pending: dict[str, RunUpdate] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # --- registration ------------------------------------------------------------------------
    def watch(self, runner_id: str, log_path: str | os.PathLike[str], preset: AgentPreset, *,
              budget: Budget | None = None, result_file: str | os.PathLike[str] | None = None,
              usage_path: str | os.PathLike[str] | None = None, model: str | None = None,
              offset: int = 0) -> None:
        """Start reading ``log_path`` (from byte ``offset``) with ``preset``'s parser."""
        run = _Watched(runner_id, Path(log_path), preset, budget or Budget(),
                       Path(result_file) if result_file else None,
                       Path(usage_path) if usage_path else None, model, offset, self._clock())
        with self._lock:
            self._runs[runner_id] = run
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="necrocode-streams",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def finish(self, runner_id: str, exit_code: int | None) -> AttemptResult | None:
        """The run ended: read the rest, judge it and stop watching (None: not watched)."""
        with self._lock:
            run = self._runs.pop(runner_id, None)
            self._pending.pop(runner_id, None)
            if run is None:
                return None
            self._read(run, final=True)
            state = self._state(run)
            # usage some CLIs report only at the end (Codex's tokens) is checked here too
            verdict = run.verdict or check_budget(state.usage, run.budget)
            result = AttemptResult(run.preset.judge(run.parser.state, exit_code), state,
                                   verdict)
            self._write_usage(run, state)
        return result

    def forget(self, runner_id: str) -> None:
        """Stop watching without judging (a fenced or lost run)."""
        with self._lock:
            self._runs.pop(runner_id, None)
            self._pending.pop(runner_id, None)

    # --- reading the latest ------------------------------------------------------------------
    def updates(self) -> list[RunUpdate]:
        """Runs that changed since the last call (the latest update of each)."""
        with self._lock:
            out = list(self._pending.values())
            self._pending.clear()
        return out

    def latest(self, runner_id: str) -> RunUpdate | None:
        """The latest update of a watched run."""
        with self._lock:
            run = self._runs.get(runner_id)
            return run.update if run is not None else None

    def idle_for(self, runner_id: str) -> float | None:
        """Seconds since the run's output last grew (None: not watched)."""
        with self._lock:
            run = self._runs.get(runner_id)
            return None if run is None else self._clock() - run.last_growth

    def poll_now(self) -> None:
        """Read every watched run once, on the caller's thread (tests, shutdown)."""
        self._poll()

    def close(self) -> None:
        """Stop the reader thread (watched runs are forgotten)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        with self._lock:
            self._runs.clear()

    # --- the thread --------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._poll()
            self._wake.wait(self.interval)
            self._wake.clear()

    def _poll(self) -> None:
        changed: list[RunUpdate] = []
        with self._lock:
            for run in list(self._runs.values()):
                if self._read(run, final=False):
                    changed.append(self._publish(run))
        callback = self.on_update
        if callback is not None:
            for update in changed:
                callback(update)

    def _read(self, run: _Watched, final: bool) -> bool:
        """Feed what is new; True when the parser saw something."""
        events = 0
        grew = False
        while True:
            try:
                with open(run.log_path, "rb") as f:
                    f.seek(run.offset)
                    data = f.read(CHUNK)
            except FileNotFoundError:
                data = b""
            except OSError as exc:
                log.warning("cannot read %s: %s", run.log_path, exc)
                data = b""
            if data:
                grew = True
                run.offset += len(data)
                events += len(run.parser.feed(data))
            if len(data) < CHUNK or not final:
                break
        if final:
            events += len(run.parser.finish())
        if run.result_file is not None:
            events += self._read_result(run, final)
        if grew:
            run.last_growth = self._clock()
        return events > 0 or (grew and run.update is None)

    def _read_result(self, run: _Watched, final: bool) -> int:
        assert run.result_file is not None
        try:
            st = run.result_file.stat()
        except OSError:
            return 0
        sig = (st.st_mtime_ns, st.st_size)
        if sig == run.result_sig and not final:
            return 0
        try:
            text = run.result_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return 0
        run.result_sig = sig
        run.last_growth = self._clock()
        return len(run.parser.load_document(text)) or 1

    def _state(self, run: _Watched) -> StreamState:
        state = run.parser.state
        usage = with_cost(state.usage, run.model, self.prices)
        return state if usage is state.usage else replace(state, usage=usage)

    def _publish(self, run: _Watched) -> RunUpdate:
        state = self._state(run)
        if run.verdict is None:
            run.verdict = check_budget(state.usage, run.budget)
        update = RunUpdate(run.runner_id, state, run.last_growth, run.verdict)
        run.update = update
        self._pending[run.runner_id] = update
        self._write_usage(run, state)
        return update

    def _write_usage(self, run: _Watched, state: StreamState) -> None:
        if run.usage_path is None or state.usage == run.written_usage:
            return
        run.written_usage = state.usage
        data = {**state.usage.to_dict(), "agent": run.preset.name, "model": run.model,
                "last_action": state.last_action, "final_message": state.final_message[:2000],
                "error": state.error}
        tmp = run.usage_path.with_name(f".{run.usage_path.name}.tmp")
        try:
            run.usage_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data))
            os.replace(tmp, run.usage_path)
        except OSError as exc:
            log.warning("cannot write %s: %s", run.usage_path, exc)


def read_usage(attempt_dir: str | os.PathLike[str]) -> dict[str, object] | None:
    """The ``usage.json`` of an attempt directory (None: none, or unreadable)."""
    try:
        data = json.loads((Path(attempt_dir) / USAGE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
