"""What the Docker launcher watches from threads of its own: the engine's ``die`` events and
each container's output.

:class:`DeathWatch` follows the Docker engine's event stream for the launcher's labelled
containers and says which runner died (so the engine polls at once), reconnecting when the
stream ends; the launcher still inspects live containers every few seconds, so an exit is seen
even when an event is lost. :func:`start_log_copy` streams a container's stdout+stderr into the
attempt's ``output.log`` (capped, tail kept) and :func:`finish_logs` waits for it, or fetches the
whole log once when the stream broke.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..agent_runner.logcap import cap_log, tail_of
from .base import RunnerExit
from .docker_spec import LABEL_MANAGED, LABEL_RUNNER

log = logging.getLogger(__name__)

__all__ = ["DeathWatch", "TrackedContainer", "close_quietly", "finish_logs", "start_log_copy"]


@dataclass
class TrackedContainer:
    """What the launcher knows of one of its containers."""

    runner_id: str
    container_id: str
    name: str
    pool: str
    log_path: Path | None
    mem_limit_mb: int | None = None
    keep: bool = False
    last_inspect: float = 0.0
    died: bool = False  # a die event arrived; inspect at the next poll
    exit: RunnerExit | None = None
    log_thread: threading.Thread | None = None
    log_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def close_quietly(obj: Any, what: str) -> None:
    """Close a client or stream that is being thrown away; a failure there loses nothing."""
    try:
        obj.close()
    except Exception as exc:
        log.info("closing the %s failed: %s", what, exc)


# --- output ----------------------------------------------------------------------------------
def start_log_copy(container: Any, tracked: TrackedContainer, cap: int) -> None:
    """Copy the container's output into ``tracked.log_path`` on a thread of its own."""
    if tracked.log_path is None:
        return
    thread = threading.Thread(target=_copy_logs, args=(container, tracked, cap),
                              name=f"docker-logs-{tracked.name}", daemon=True)
    tracked.log_thread = thread
    thread.start()


def _copy_logs(container: Any, tracked: TrackedContainer, cap: int) -> None:
    """Stream the container's stdout+stderr (from its start) into the attempt log, capped
    at ``cap`` bytes with the tail kept."""
    assert tracked.log_path is not None
    written = 0
    try:
        tracked.log_path.parent.mkdir(parents=True, exist_ok=True)
        tracked.log_path.write_bytes(b"")
        with open(tracked.log_path, "ab") as out:
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                out.write(chunk)
                out.flush()
                written += len(chunk)
                if cap and written > cap:  # O_APPEND: writes go on after the kept tail
                    cap_log(tracked.log_path, cap)
                    written = tracked.log_path.stat().st_size
    except Exception as exc:  # the engine went away, the container was removed
        tracked.log_error = str(exc)
        log.info("log stream of %s ended early (%s); its whole log is fetched when it "
                 "ends", tracked.name, exc)


def finish_logs(container: Any, tracked: TrackedContainer, cap: int) -> None:
    """Wait for the log copy to end; if it failed, fetch the whole log once instead."""
    thread = tracked.log_thread
    if thread is not None:
        thread.join(timeout=10.0)
    if tracked.log_path is None:
        return
    if thread is None or thread.is_alive() or tracked.log_error:
        try:
            data = container.logs(stdout=True, stderr=True)
            tracked.log_path.write_bytes(tail_of(data, cap))
        except Exception as exc:
            log.warning("could not fetch the log of container %s: %s", tracked.name, exc)


# --- deaths ----------------------------------------------------------------------------------
class DeathWatch:
    """The thread that follows the engine's ``die`` events of managed containers.

    ``new_client`` makes the client of each stream (its own connection, closed after unless it
    is ``shared()``); ``died(runner_id)`` is called on the watch's thread for each death.
    """

    def __init__(self, new_client: Callable[[], Any], died: Callable[[str], None],
                 shared: Callable[[], Any] = lambda: None) -> None:
        self._new_client = new_client
        self._died = died
        self._shared = shared
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stream: Any | None = None
        self._closing = threading.Event()

    def ensure_running(self) -> None:
        """Start the watch (again, if its thread ended)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._closing.clear()
            self._thread = threading.Thread(target=self._watch, name="docker-events",
                                            daemon=True)
            self._thread.start()

    def close(self) -> None:
        """End the watch: close its stream and wait for its thread."""
        self._closing.set()
        stream = self._stream
        if stream is not None:
            close_quietly(stream, "docker events stream")
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _watch(self) -> None:
        """Report every managed container that dies; reconnect if the stream ends."""
        since = int(time.time()) - 1
        delay = 0.5
        warned = False
        while not self._closing.is_set():
            client: Any = None
            try:
                client = self._new_client()
                stream = client.events(
                    decode=True,
                    since=since,
                    filters={"label": f"{LABEL_MANAGED}=true", "event": "die",
                             "type": "container"},
                )
                self._stream = stream
                delay = 0.5
                if warned:
                    log.info("docker events stream works again")
                    warned = False
                for event in stream:
                    since = int(event.get("time") or time.time())
                    attrs = (event.get("Actor") or {}).get("Attributes") or {}
                    runner_id = attrs.get(LABEL_RUNNER)
                    if runner_id:
                        self._died(runner_id)
                    if self._closing.is_set():
                        break
            except Exception as exc:
                if self._closing.is_set():
                    break
                if not warned:  # exits are then seen by polling only: said once per outage
                    log.warning("docker events stream failed (%s); exits are polled until it "
                                "works again (retrying in %.1fs)", exc, delay)
                    warned = True
            finally:
                self._stream = None
                if client is not None and client is not self._shared():
                    close_quietly(client, "docker client of the events stream")
            if self._closing.wait(delay):
                break
            delay = min(delay * 2, 10.0)
