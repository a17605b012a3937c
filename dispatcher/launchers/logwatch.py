"""LogCapper: keeps each running local attempt's ``output.log`` under its cap (tail kept).

One daemon thread for the whole launcher looks at the logs of the runners it watches every
:attr:`LogCapper.interval` seconds (one ``stat`` each) and caps those past their limit with
:func:`~..agent_runner.logcap.cap_log`. It starts with the first watched log.
"""

from __future__ import annotations

import logging
import os
import threading

from ..agent_runner.logcap import cap_log

logger = logging.getLogger(__name__)

__all__ = ["LogCapper"]


class LogCapper:
    """Caps the logs of watched runners; thread-safe."""

    interval = 0.5

    def __init__(self) -> None:
        self._logs: dict[str, tuple[str, int]] = {}  # runner id -> (path, max bytes)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()

    def watch(self, runner_id: str, path: str, max_bytes: int) -> None:
        """Cap ``path`` at ``max_bytes`` while the runner runs (0: no cap)."""
        if max_bytes <= 0:
            return
        with self._lock:
            self._logs[runner_id] = (path, max_bytes)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, name="necrocode-log-cap",
                                                daemon=True)
                self._thread.start()

    def forget(self, runner_id: str) -> None:
        """Stop watching a runner's log (it is capped once more first)."""
        with self._lock:
            entry = self._logs.pop(runner_id, None)
        if entry is not None:
            self._cap(runner_id, *entry)

    def close(self) -> None:
        """Stop the thread."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    def check_now(self) -> None:
        """Cap every watched log now (the thread does this every ``interval`` seconds)."""
        with self._lock:
            entries = list(self._logs.items())
        for runner_id, (path, max_bytes) in entries:
            self._cap(runner_id, path, max_bytes)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.check_now()

    def _cap(self, runner_id: str, path: str, max_bytes: int) -> None:
        try:
            size = os.stat(path).st_size
        except OSError:
            return
        if size <= max_bytes:
            return
        dropped = cap_log(path, max_bytes)
        if dropped and runner_id not in self._warned:
            self._warned.add(runner_id)
            logger.warning("runner %s: output.log passed its cap of %d bytes; earlier output "
                           "is dropped, the last part kept (%s)", runner_id, max_bytes, path)
