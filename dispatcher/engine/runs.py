"""Run numbers: which attempt directory a run uses, and which run a RUNNING task is on."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..launchers.base import attempt_dir
from ..models import Task

_RUN_IN_ID = re.compile(r"-a(\d+)-[0-9a-f]+$")


def next_run_number(runs_dir: Path, task: Task) -> int:
    """The number of the task's next run: one more than any run it already had, so a task
    retried by an operator (attempts reset to 0) never reuses, and overwrites, the attempt
    directory (log, exit status) of an earlier run. Equal to ``attempts + 1`` for a task that
    was never reset: the runner contract's NECROCODE_ATTEMPT counts the task's runs."""
    number = task.attempts + 1
    try:
        names = os.listdir(attempt_dir(runs_dir, task, 1).parent)
    except OSError:
        return number
    for name in names:
        if name.startswith("attempt-") and name[8:].isdigit():
            number = max(number, int(name[8:]) + 1)
    return number


def run_number_of(task: Task) -> int:
    """The run number of a RUNNING task's current runner (from its runner id), else
    ``attempts + 1``."""
    match = _RUN_IN_ID.search(task.runner_id or "")
    return int(match.group(1)) if match else task.attempts + 1
