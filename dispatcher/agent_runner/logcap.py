"""The per-attempt cap of ``output.log``: past the cap, the file keeps only its tail.

Agents write straight into the log (opened with ``O_APPEND``), with no process in between; a
watcher (the local launcher's thread, or the wrapper's heartbeat loop) calls :func:`cap_log`
now and then. Past ``max_bytes`` the file is rewritten in place as one marker line and its last
``max_bytes // 2`` bytes (from a line start), so the newest output is always there; the agent's
next writes append after it, as ``O_APPEND`` writes always go to the current end. A file may
exceed the cap by what the agent writes between two checks.

Stdlib only (``os``): the wrapper imports it in a minimal container.
"""

from __future__ import annotations

import os

__all__ = ["DEFAULT_MAX_BYTES", "cap_log", "tail_of"]

#: Default cap of one attempt's output.log (64 MiB); 0 turns the cap off.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MARKER = "[necrocode: {dropped} bytes of earlier output dropped: output.log keeps its last " \
         "part past {cap} bytes (output_log_max_bytes)]\n"


def tail_of(data: bytes, max_bytes: int) -> bytes:
    """``data`` itself when within ``max_bytes`` (0: no cap), else the marker and its tail."""
    if max_bytes <= 0 or len(data) <= max_bytes:
        return data
    tail = data[-max(1, max_bytes // 2):]
    cut = tail.find(b"\n")
    if 0 <= cut < len(tail) - 1:
        tail = tail[cut + 1:]
    return MARKER.format(dropped=len(data) - len(tail), cap=max_bytes).encode() + tail


def cap_log(path: str | os.PathLike[str], max_bytes: int) -> int:
    """Keep only the tail of the log at ``path`` when it is over ``max_bytes``; returns the
    bytes dropped. Never raises for a missing file or an I/O error (0 is returned): a log that
    cannot be capped is still a log.

    The file is opened anew (never through the writers' ``O_APPEND`` descriptor, with which
    Linux would append a positioned write instead of placing it).
    """
    if max_bytes <= 0:
        return 0
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        size = os.fstat(fd).st_size
        if size <= max_bytes:
            return 0
        keep = max(1, max_bytes // 2)
        tail = os.pread(fd, keep, size - keep)
        cut = tail.find(b"\n")
        if 0 <= cut < len(tail) - 1:
            tail = tail[cut + 1:]  # start at a line
        end = size
        grown = os.fstat(fd).st_size
        if grown > end:  # written meanwhile: keep that too
            tail += os.pread(fd, grown - end, end)
            end = grown
        dropped = end - len(tail)
        head = MARKER.format(dropped=dropped, cap=max_bytes).encode()
        os.pwrite(fd, head + tail, 0)
        os.ftruncate(fd, len(head) + len(tail))
        return dropped
    except OSError:
        return 0
    finally:
        os.close(fd)
