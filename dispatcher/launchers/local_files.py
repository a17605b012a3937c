"""The files of a local runner's attempt directory: the ``sh`` trampoline that records the
exit status, ``runner.json`` and ``exit_status.json`` (see :mod:`.local`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .base import EXIT_STATUS_FILE, RUNNER_RECORD_FILE, RunnerExit, read_exit_record

__all__ = ["EXIT_FILE", "LOG_FILE", "RUNNER_FILE", "TRAMPOLINE", "read_exit_status",
           "write_record"]

LOG_FILE = "output.log"
EXIT_FILE = EXIT_STATUS_FILE
RUNNER_FILE = RUNNER_RECORD_FILE

#: The trampoline: run "$@" (argv as positional parameters, never re-parsed), then record its
#: exit status unless the agent runner wrapper already wrote a richer one. Shell builtins only:
#: a `mv` for a tmp+rename would add an exec per task (~6 ms here, 3x the cost of the agent's
#: own exec). The status is one small write() of a complete JSON document instead, and readers
#: (:func:`read_exit_status`) treat an empty or partial file as "no status yet", so a reader
#: never acts on half a status; a sh killed between open and write leaves the same "no status"
#: a sh killed before it ever ran the line would.
#: First the trampoline moves itself into the runner's cgroup (when there is one), so that
#: everything the agent starts is in it; the status names the runner that wrote it.
TRAMPOLINE = (
    '[ -z "$NECROCODE_CGROUP" ] || { echo $$ > "$NECROCODE_CGROUP/cgroup.procs"; } 2>/dev/null; '
    '"$@"; rc=$?; f=$NECROCODE_EXIT_FILE; '
    'if [ -n "$f" ] && [ ! -e "$f" ]; then '
    'printf \'{"exit_code": %d, "runner_id": "%s", "source": "trampoline"}\\n\' '
    '"$rc" "$NECROCODE_RUNNER_ID" > "$f"; fi; exit "$rc"'
)

def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write ``runner.json`` with one write() of the whole document into a new file.

    No tmp file and rename: that created and deleted an extra inode per task (a large share of
    a short task's cost on ext4). Readers (:meth:`LocalProcessLauncher.reconcile`) skip a file
    that does not parse, so a Dispatcher killed between the create and the write leaves the
    same "no record" as one killed before the create: the restarted engine then finds the
    process by its ``NECROCODE_RUNNER_ID`` and stops it before requeueing the task.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, _dumps(record).encode())
    finally:
        os.close(fd)


_dumps = json.JSONEncoder(separators=(", ", ": ")).encode


def read_exit_status(adir: str | Path, runner_id: str | None = None) -> RunnerExit | None:
    """The exit status recorded in an attempt directory, or None if there is none (yet).

    With ``runner_id``, only a status that runner wrote (:func:`~.base.read_exit_record`).
    """
    path = Path(adir) / EXIT_FILE
    try:
        data = (json.loads(path.read_text()) if runner_id is None
                else read_exit_record(adir, runner_id))
        mtime = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    code = data.get("exit_code")
    return RunnerExit(
        exit_code=int(code) if isinstance(code, int) else None,
        reason=str(data.get("reason") or "exited"),
        finished_at=float(data.get("finished_at") or mtime),
    )
