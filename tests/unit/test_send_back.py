"""A task sent back by the land gate (DONE -> READY, written by `necroui land` into the
registry) is run again by a running engine, with the gate's output on the task."""

from __future__ import annotations

from pathlib import Path

from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.launchers.fake import FakeLauncher
from necrocode.dispatcher.models import (
    AgentPool,
    EventType,
    PoolType,
    Task,
    TaskEvent,
    Taskset,
    TaskState,
)
from necrocode.dispatcher.registry import MemoryRegistry
from support import wait_until


def test_the_engine_runs_a_sent_back_task_again(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    launcher = FakeLauncher()
    pool = AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=2)
    config = DispatcherConfig(registry_path=":memory:", state_dir=str(tmp_path), poll_interval=0.1,
                              api_enabled=False, agent_pools=[pool],
                              skill_mapping={"default": ["local"]})
    core = DispatcherCore(config, registry=registry, launchers={PoolType.LOCAL_PROCESS: launcher})
    core.start()
    try:
        core.submit(Taskset(name="ts", tasks=[Task(id="a", taskset="ts", title="a")]))
        first = wait_until(lambda: launcher.launch_for("ts/a"), 10, "launch of ts/a")
        launcher.finish(first[0].runner.runner_id, 0)
        wait_until(lambda: registry.get_task("ts/a").state is TaskState.DONE, 10, "ts/a done")
        registry.transition("ts/a", TaskState.READY, expected=TaskState.DONE,
                            gate_failed="check `make test` exited 1\nFAILED test_x",
                            event=TaskEvent(EventType.TASK_RETRIED, "ts/a",
                                            message="sent back by the land gate"))
        again = wait_until(lambda: len(launcher.launch_for("ts/a")) == 2
                           and launcher.launch_for("ts/a"), 10, "second launch of ts/a")
        assert again[1].task.gate_failed == "check `make test` exited 1\nFAILED test_x"
        launcher.finish(again[1].runner.runner_id, 0)
        wait_until(lambda: registry.get_task("ts/a").state is TaskState.DONE, 10, "done again")
    finally:
        core.stop(timeout=0.5)
