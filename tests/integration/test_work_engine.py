"""The running engine records each run's work (R21.1), with real git: leftovers committed
before DONE (visible as "committing work"), the work fields on the task, a run that changed
nothing with ``work.on_no_changes``, the slot released only after the commit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flow_support import Flow, GitGate, gated_git, writer
from git_support import git, make_origin
from necrocode.dispatcher.config import WorkConfig
from necrocode.dispatcher.errors import RegistryError
from necrocode.dispatcher.models import EventType, RunnerState, Task, TaskState
from necrocode.dispatcher.registry import MemoryRegistry
from support import wait_until


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    return make_origin(tmp_path / "origin", {"README.md": "hello\n",
                                            "shared.txt": "one\ntwo\nthree\n"})


@pytest.fixture
def flows(tmp_path: Path) -> Iterator[list[Flow]]:
    made: list[Flow] = []
    yield made
    for flow in made:
        flow.close()


def start(flows: list[Flow], tmp_path: Path, origin: Path, **kw: object) -> Flow:
    flow = Flow(tmp_path, origin, **kw)  # type: ignore[arg-type]
    flows.append(flow)
    return flow


def test_a_successful_run_is_committed_before_done_and_its_slot_released_after(
        tmp_path: Path, origin: Path, flows: list[Flow]) -> None:
    with gated_git(tmp_path / "gate") as gate:
        committed_after_the_gate(tmp_path, origin, flows, gate)


def committed_after_the_gate(tmp_path: Path, origin: Path, flows: list[Flow],
                             gate: GitGate) -> None:
    flow = start(flows, tmp_path, origin)
    flow.submit(("a", []))
    launch = flow.run("flow/a", writer({"a.txt": "a\n"}))
    wait_until(gate.entered, 15, "the dispatcher's commit")
    # between the exit and DONE: RUNNING, shown as committing, the slot still held
    view = wait_until(lambda: flow.running("flow/a"), 10, "the committing view")
    assert view.runner_state is RunnerState.COMMITTING and view.progress == "committing work"
    assert flow.task("flow/a").state is TaskState.RUNNING
    assert flow.pool.slot_for_task("flow/a") is not None
    assert flow.core.pool_manager.get_pool_status("local").running == 0  # capacity is back
    gate.open()
    done = flow.wait_state("flow/a", TaskState.DONE)
    flow.idle()
    assert done.branch == "feature/task-flow-a" and done.commits == 1
    assert done.files_changed == ("a.txt",)
    assert done.base == git("rev-parse", "HEAD", cwd=origin)
    mirror = flow.pool.mirror_of(str(origin))
    assert git("--git-dir", str(mirror), "show", f"{done.head}:a.txt", cwd=tmp_path) == "a"
    assert flow.pool.slot_for_task("flow/a") is None  # released after the commit
    kinds = [e.event_type for e in flow.registry.get_events(task_key="flow/a")]
    assert kinds.count(EventType.WORK_RECORDED) == 1
    assert kinds.index(EventType.WORK_RECORDED) < kinds.index(EventType.RUNNER_COMPLETED)
    assert launch.slot.branch == done.branch


def test_a_run_that_changed_nothing_is_done_with_a_warning_or_fails(
        tmp_path: Path, origin: Path, flows: list[Flow]) -> None:
    flow = start(flows, tmp_path, origin, work=WorkConfig(on_no_changes="fail"))
    flow.submit(("idle", []), ("busy", []))
    flow.run("flow/idle")  # exits 0 without touching its worktree
    flow.run("flow/busy", writer({"b.txt": "b\n"}))
    failed = flow.wait_state("flow/idle", TaskState.FAILED)
    assert failed.attempts == 1  # no retry: another attempt would change nothing either
    assert "changed nothing on feature/task-flow-idle" in (failed.last_error or "")
    assert failed.commits == 0 and failed.branch == "feature/task-flow-idle"
    assert flow.wait_state("flow/busy", TaskState.DONE).commits == 1
    flow.idle()
    assert flow.pool.assignments() == {}
    events = flow.registry.get_events(task_key="flow/idle")
    recorded = [e for e in events if e.event_type is EventType.WORK_RECORDED]
    assert len(recorded) == 1 and recorded[0].details["verdict"] == "failed"


def test_changed_nothing_is_done_by_default(tmp_path: Path, origin: Path,
                                            flows: list[Flow]) -> None:
    flow = start(flows, tmp_path, origin)
    flow.submit(("idle", []))
    flow.run("flow/idle")
    done = flow.wait_state("flow/idle", TaskState.DONE)
    assert done.commits == 0 and done.files_changed == () and done.head == done.base


def test_a_failed_run_is_not_committed(tmp_path: Path, origin: Path, flows: list[Flow]) -> None:
    flow = start(flows, tmp_path, origin, retry_max_attempts=1)
    flow.submit(("bad", []))
    flow.run("flow/bad", writer({"half.txt": "half\n"}), code=3)
    failed = flow.wait_state("flow/bad", TaskState.FAILED)
    assert failed.head is None and failed.commits == 0
    flow.idle()
    kinds = [e.event_type for e in flow.registry.get_events(task_key="flow/bad")]
    assert EventType.WORK_RECORDED not in kinds


class DoneFailsOnce(MemoryRegistry):
    """The first DONE write fails (a locked database): the Settler tries it again."""

    failed = 0

    def transition(self, key: str, to_state: TaskState, **kwargs: object) -> Task:
        if to_state is TaskState.DONE and not self.failed:
            self.failed += 1
            raise RegistryError("database is locked")
        return super().transition(key, to_state, **kwargs)  # type: ignore[arg-type]


def test_a_failed_done_write_after_the_commit_is_tried_again_and_commits_once(
        tmp_path: Path, origin: Path, flows: list[Flow]) -> None:
    flow = start(flows, tmp_path, origin, registry=DoneFailsOnce())
    flow.submit(("a", []))
    flow.run("flow/a", writer({"a.txt": "a\n"}))
    done = flow.wait_state("flow/a", TaskState.DONE)
    flow.idle()
    assert isinstance(flow.registry, DoneFailsOnce) and flow.registry.failed == 1
    assert done.commits == 1 and done.files_changed == ("a.txt",)
    kinds = [e.event_type for e in flow.registry.get_events(task_key="flow/a")]
    assert kinds.count(EventType.WORK_RECORDED) == 1
    assert flow.pool.assignments() == {}
