"""The stop contract: only a confirmed stop lets a task run again."""

from __future__ import annotations

import time
from pathlib import Path

from necrocode.dispatcher.models import Task, TaskState
from support import wait_until
from test_core import Harness


def test_unconfirmed_stop_keeps_slot_and_capacity_until_confirmed(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.core.start()
    try:
        h.launcher.fail_next_stops(3, "docker engine could not confirm the stop")
        h.submit(Task(id="slow", title="S", timeout=0.3))
        first = h.runner_of("ts/slow")
        # timed out: the fence is answered "not confirmed" three times (the runner may still run)
        wait_until(lambda: len(h.launcher.unconfirmed) >= 2, 10, "two unconfirmed stops")
        assert len(h.launcher.launch_for("ts/slow")) == 1  # never relaunched meanwhile
        assert h.core.pool_manager.get_pool_status("local").running == 1  # capacity held
        assert h.state("ts/slow") is TaskState.RUNNING
        assert first in h.launcher.running()
        view = wait_until(lambda: next((v for v in h.core.snapshot().running
                                        if v.runner_id == first and v.progress), None), 5,
                          "the unconfirmed stop in the snapshot")
        assert view.progress == "stopping: not confirmed: docker engine could not confirm " \
                                "the stop"
        # the fourth stop is confirmed: only now is the attempt settled and the task retried
        wait_until(lambda: len(h.launcher.launch_for("ts/slow")) == 2, 15, "relaunch")
        assert h.launcher.unconfirmed == [first] * 3
        assert first not in h.launcher.running()
        time.sleep(0.1)
        assert h.registry.get_task("ts/slow").attempts == 1
    finally:
        h.core.stop(timeout=0.5)
