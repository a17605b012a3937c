"""Work flows between tasks through the running engine (R21.2), with real git: a chain where
each task needs the previous one's file; siblings editing the same line make their dependent
wait with the conflict as its pending reason (snapshot and ``necroui status``); resolving it
and retrying; starting it from the base (``necroui retry --from-base``, kept over a restart)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from flow_support import Flow, needs, writer
from git_support import ENV, git, make_origin
from necrocode.dispatcher.models import EventType, Task, TaskState
from necrocode.dispatcher.snapshot import PendingReason
from support import wait_until

from necroui.cli import main

CONFLICT = "dependencies flow/x and flow/y conflict in shared.txt"


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


def test_a_chain_where_each_task_needs_the_previous_ones_file(
        tmp_path: Path, origin: Path, flows: list[Flow]) -> None:
    flow = Flow(tmp_path, origin)
    flows.append(flow)
    flow.submit(("a", []), ("b", ["a"]), ("c", ["b"]))
    flow.run("flow/a", writer({"a.txt": "a\n"}))
    flow.run("flow/b", needs("a.txt", "b.txt"))  # raises here if a's work did not flow
    flow.run("flow/c", needs("b.txt", "c.txt"))
    a, b, c = (flow.wait_state(f"flow/{k}", TaskState.DONE) for k in "abc")
    assert (b.base, c.base) == (a.head, b.head)  # a chain stays linear
    assert (a.files_changed, b.files_changed, c.files_changed) == (
        ("a.txt",), ("b.txt",), ("c.txt",))
    mirror = flow.pool.mirror_of(str(origin))
    assert git("--git-dir", str(mirror), "show", f"{c.head}:c.txt", cwd=tmp_path) \
        == "a\nb.txt\nc.txt"
    done = {f.key: f for f in flow.snapshot().finished}
    assert (done["flow/c"].branch, done["flow/c"].head, done["flow/c"].commits) == (
        "feature/task-flow-c", c.head, 1)


def cli(flow: Flow, tmp_path: Path, *args: str) -> str:
    cfg = tmp_path / "cli.yaml"
    cfg.write_text(f"dispatcher:\n  registry_path: {flow.config.registry_path}\n"
                   f"  state_dir: {flow.core.state_dir}\n")
    result = CliRunner().invoke(main, ["--config", str(cfg), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def conflicting(tmp_path: Path, origin: Path, flows: list[Flow], *deps: str) -> Flow:
    """x and y edit the same line of shared.txt; each of ``deps`` needs both."""
    flow = Flow(tmp_path, origin, api_enabled=True, api_port=0,
                registry_path=str(tmp_path / "registry.db"))
    flows.append(flow)
    flow.submit(("x", []), ("y", []), *[(d, ["x", "y"]) for d in deps])
    flow.run("flow/x", writer({"shared.txt": "one\nTWO by x\nthree\n", "x.txt": "x\n"}))
    flow.run("flow/y", writer({"shared.txt": "one\nTWO by y\nthree\n", "y.txt": "y\n"}))
    for d in deps:
        wait_until(lambda d=d: (q := flow.queued(f"flow/{d}")) is not None
                   and q.pending.reason is PendingReason.START_CONFLICT and q, 15,
                   f"the start conflict of flow/{d}")
    return flow


def test_siblings_editing_the_same_line_make_their_dependent_wait_then_a_fix_and_a_retry(
        tmp_path: Path, origin: Path, flows: list[Flow]) -> None:
    flow = conflicting(tmp_path, origin, flows, "z")
    view = flow.queued("flow/z")
    assert view is not None and view.pending.message == CONFLICT and not view.in_queue
    assert flow.launcher.launch_for("flow/z") == []  # never started, no attempt spent
    z = flow.task("flow/z")
    assert z.state is TaskState.READY and z.attempts == 0
    flow.idle()
    assert flow.pool.in_use_count() == 0  # no slot taken
    assert CONFLICT in cli(flow, tmp_path, "status")
    # a slot that frees does not offer it again: one event, however often slots free
    flow.submit(("w", []))
    flow.run("flow/w", writer({"w.txt": "w\n"}))
    flow.wait_state("flow/w", TaskState.DONE)
    flow.idle()
    events = [e for e in flow.registry.get_events(task_key="flow/z")
              if e.event_type is EventType.START_CONFLICT]
    assert len(events) == 1 and events[0].details["conflicts"][0]["files"] == ["shared.txt"]
    assert flow.launcher.launch_for("flow/z") == []

    # the fix: x and y merged with the line resolved, landed on necrocode/flow of the
    # repository; the retry starts from there
    mirror = flow.pool.mirror_of(str(origin))
    heads = {k: flow.task(f"flow/{k}").head for k in "xy"}
    git("fetch", "-q", str(mirror), f"{heads['x']}:refs/heads/necrocode/flow",
        f"{heads['y']}:refs/heads/tmp-y", cwd=origin)
    git("checkout", "-q", "necrocode/flow", cwd=origin)
    subprocess.run(["git", "merge", "-q", "tmp-y", "-m", "merge"], cwd=origin,
                   env={**ENV, "HOME": str(origin)}, capture_output=True, check=False)
    (origin / "shared.txt").write_text("one\nTWO by x and y\nthree\n")
    git("commit", "-qam", "resolve x and y", cwd=origin)
    git("checkout", "-q", "trunk", cwd=origin)
    assert "flow/z: start it from its dependencies' work again" in cli(
        flow, tmp_path, "retry", "flow/z")
    seen: dict[str, str] = {}

    def look(worktree: Path) -> None:
        seen["shared"] = (worktree / "shared.txt").read_text()
        seen["files"] = " ".join(sorted(p.name for p in worktree.glob("?.txt")))
        (worktree / "z.txt").write_text("z\n")

    flow.run("flow/z", look)
    done = flow.wait_state("flow/z", TaskState.DONE)
    assert seen == {"shared": "one\nTWO by x and y\nthree\n", "files": "x.txt y.txt"}
    assert done.files_changed == ("z.txt",) and done.attempts == 0


def test_start_from_the_base_is_kept_over_a_restart(
        tmp_path: Path, origin: Path, flows: list[Flow]) -> None:
    flow = conflicting(tmp_path, origin, flows, "z")
    flow.core.pause()  # it must not start before the restart
    assert "(from the base)" not in cli(flow, tmp_path, "retry", "flow/z", "--from-base")
    z = flow.task("flow/z")
    assert z.from_base is True and z.state is TaskState.READY
    flow.close()
    again = Flow(tmp_path, origin, registry_path=str(tmp_path / "registry.db"))
    flows.append(again)
    seen: dict[str, str] = {}

    def look(worktree: Path) -> None:
        seen["shared"] = (worktree / "shared.txt").read_text()
        seen["files"] = " ".join(sorted(p.name for p in worktree.glob("?.txt")))
        (worktree / "z.txt").write_text("z\n")

    again.run("flow/z", look)
    done = again.wait_state("flow/z", TaskState.DONE)
    assert seen == {"shared": "one\ntwo\nthree\n", "files": ""}  # the base, nothing merged
    assert done.base == git("rev-parse", "trunk", cwd=origin)
    assert done.from_base is False  # the choice is spent once the task is DONE


def test_cancel_a_task_held_by_a_start_conflict(tmp_path: Path, origin: Path,
                                               flows: list[Flow]) -> None:
    flow = conflicting(tmp_path, origin, flows, "z")
    assert "cancelled flow/z" in cli(flow, tmp_path, "cancel", "flow/z")
    flow.wait_state("flow/z", TaskState.CANCELLED)
    wait_until(lambda: flow.queued("flow/z") is None, 10, "z to leave the queue")


def test_paths_keep_two_tasks_apart_while_a_third_runs(
        tmp_path: Path, origin: Path, flows: list[Flow]) -> None:
    flow = Flow(tmp_path, origin)
    flows.append(flow)
    flow.core.pause()  # one round sees all three
    flow.submit(Task(id="a", title="api", paths=("src/api/",), priority=3),
                Task(id="b", title="handlers", paths=("src/api/handlers.py",), priority=2),
                Task(id="c", title="docs", paths=("docs/**",), priority=1))
    flow.core.resume()
    launch_a, launch_c = flow.launch("flow/a"), flow.launch("flow/c")
    view = wait_until(lambda: (q := flow.queued("flow/b")) is not None
                      and q.pending.reason is PendingReason.PATHS and q, 10, "b to wait")
    assert view.pending.message == "waits for flow/a: both touch src/api/handlers.py"
    assert flow.launcher.launch_for("flow/b") == []
    assert flow.core.diagnose(lambda d: d.claimed_paths) == {
        "flow/a": ("src/api/",), "flow/c": ("docs/**",)}
    flow.launcher.finish(launch_c.runner.runner_id, 0)  # c ends: b still waits for a
    flow.wait_state("flow/c", TaskState.DONE)
    assert flow.launcher.launch_for("flow/b") == []
    writer({"src/api/a.py": "a\n"})(Path(launch_a.slot.slot_path))
    flow.launcher.finish(launch_a.runner.runner_id, 0)
    flow.run("flow/b", writer({"src/api/handlers.py": "b\n", "README.md": "b was here\n"}))
    flow.wait_state("flow/b", TaskState.DONE)
    a_ended = flow.launcher.poll(launch_a.runner)
    assert a_ended is not None  # b's runner started after a's had ended: never at once
    assert flow.launch("flow/b").launched_at >= (a_ended.finished_at or 0)
    flow.idle()
    assert flow.core.diagnose(lambda d: d.claimed_paths) == {}


def test_land_through_the_dispatcher_with_a_passing_then_a_failing_gate_sent_back(
        tmp_path: Path, origin: Path, flows: list[Flow]) -> None:
    from necrocode.dispatcher.config import WorkConfig

    flow = Flow(tmp_path, origin, api_enabled=True, api_port=0,
                registry_path=str(tmp_path / "registry.db"),
                work=WorkConfig(on_gate_failure="retry"))
    flows.append(flow)
    flow.submit(("a", []), ("b", ["a"]))
    flow.run("flow/a", writer({"a.txt": "a\n"}))
    flow.run("flow/b", needs("a.txt", "b.txt"))
    flow.wait_state("flow/b", TaskState.DONE)
    out = cli(flow, tmp_path, "land", "flow", "--check", "test -f a.txt")
    assert "landed      flow/a" in out and "landed      flow/b" in out
    assert "2 landed" in out
    snap = flow.snapshot()
    (landing,) = snap.landings
    assert landing.state == "done" and landing.report is not None and landing.report.ok
    assert flow.task("flow/b").landed == "necrocode/flow"
    landed = [e for e in flow.registry.get_events() if e.event_type is EventType.TASKSET_LANDED]
    assert len(landed) == 1 and landed[0].message.endswith("2 landed")

    # c's work fails the gate: sent back with the check's output, it runs again from its work
    flow.submit(("c", ["b"]))
    flow.run("flow/c", writer({"c.txt": "wrong\n"}))
    first = flow.wait_state("flow/c", TaskState.DONE)
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "cli.yaml"), "land", "flow",
                                       "--check", "grep -q right c.txt"])
    assert result.exit_code == 1, result.output
    assert "sent back" in result.output
    again = flow.launch("flow/c", 2)
    assert "check `grep -q right c.txt` exited 1" in (again.task.gate_failed or "")
    assert again.slot.base == first.base  # resumes from its own work, measured as before
    assert (Path(again.slot.slot_path) / "c.txt").read_text() == "wrong\n"
    writer({"c.txt": "right\n"})(Path(again.slot.slot_path))
    flow.launcher.finish(again.runner.runner_id, 0)
    fixed = flow.wait_state("flow/c", TaskState.DONE)
    assert fixed.commits == 2 and fixed.files_changed == ("c.txt",)
    out = cli(flow, tmp_path, "land", "flow", "--check", "grep -q right c.txt")
    assert "landed      flow/c" in out and flow.task("flow/c").gate_failed is None


def test_a_cancel_while_its_work_is_committed_is_refused_with_the_reason(
        tmp_path: Path, origin: Path, flows: list[Flow],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from necrocode.dispatcher.engine import work_step
    from necrocode.dispatcher.errors import InvalidTransitionError

    gate, entered = threading.Event(), threading.Event()
    real = work_step.finish_work

    def held(*args: object, **kwargs: object) -> object:
        entered.set()
        gate.wait(15)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(work_step, "finish_work", held)
    flow = Flow(tmp_path, origin)
    flows.append(flow)
    flow.submit(("a", []))
    flow.run("flow/a", writer({"a.txt": "a\n"}))
    assert entered.wait(15)  # exited 0; its work is being committed
    with pytest.raises(InvalidTransitionError, match="being committed"):
        flow.core.cancel("flow/a")
    gate.set()
    done = flow.wait_state("flow/a", TaskState.DONE)
    assert done.files_changed == ("a.txt",)
    flow.idle()
    assert flow.pool.in_use_count() == 0  # its slot let go once
