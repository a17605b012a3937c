"""NecroCodeRegistry on real directories in the original's format (the fixture, and ones the
tests write as the original does): format kept, extras surviving the original's rewrites, bad
input refused with the file and the fix, locks shared with filelock, other writers picked up."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from necrocode.dispatcher.errors import RegistryError
from necrocode.dispatcher.models import EventType, Resources, Task, TaskEvent, Taskset, TaskState
from necrocode.dispatcher.registry import (
    NecroCodeRegistry,
    SQLiteRegistry,
    TransitionRequest,
    open_registry,
    registry_kind,
)
from necrocode.dispatcher.registry.necrocode_format import NecroCodeFormatError
from necrocode.dispatcher.registry.necrocode_lock import RegistryLockedError
from necrocode_original import OriginalWriter, new_task, read_events, read_registry

from necroui.cli import main

S = TaskState
# written by the original NecroCode code (a copy of shared/fixtures/necrocode-registry)
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "necrocode-registry"


@pytest.fixture
def fixture_dir(tmp_path: Path) -> Path:
    """A writable copy of the registry the original NecroCode code wrote."""
    target = tmp_path / "registry"
    shutil.copytree(FIXTURE, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its content (to prove nothing changed)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- reading the original's files -------------------------------------------------------------
def test_fixture_reads_with_its_fields_and_writes_nothing(fixture_dir: Path) -> None:
    before = tree(fixture_dir)
    reg = open_registry(fixture_dir)
    assert isinstance(reg, NecroCodeRegistry)
    got = {t.id: t for t in reg.list_tasks()}
    assert list(got) == ["1", "1.1", "1.2", "2.1", "2.2"]
    assert {k: (t.state, t.required_skill, t.priority) for k, t in got.items()} == {
        "1": (S.READY, "", 0), "1.1": (S.DONE, "", 0), "1.2": (S.BLOCKED, "backend", 3),
        "2.1": (S.READY, "frontend", 0), "2.2": (S.BLOCKED, "frontend", 0)}
    assert got["2.2"].dependencies == ["2.1", "1.2"] and got["2.2"].optional
    assert got["1"].taskset == got["1"].tenant == "chat-app" and got["1"].description == "parent"
    assert got["1"].ready_at == got["1"].updated_at  # ready since its last change
    events = reg.get_events()
    assert [(e.event_type, e.task_key) for e in events] == [
        (EventType.TASK_CREATED, f"chat-app/{i}") for i in got]
    assert events[2].details == {"title": "auth", "state": "blocked"}
    assert [t.name for t in reg.list_tasksets()] == ["chat-app"]
    assert reg.count_tasks(taskset="chat-app")[S.READY] == 2
    assert tree(fixture_dir) == before  # reads never write


def test_feed_settles_a_task_the_original_left_blocked(fixture_dir: Path) -> None:
    # 1.2 waits on 1.1, which the original wrote DONE from the start: it never unblocks it
    reg = NecroCodeRegistry(fixture_dir)
    feed = reg.changes_since(0)
    assert reg.get_task("chat-app/1.2").state is S.READY
    assert feed.tasks[-1].key == "chat-app/1.2" and feed.tasks[-1].state is S.READY
    (ready,) = reg.get_events(event_types=[EventType.TASK_READY])
    assert ready.task_key == "chat-app/1.2" and ready.message == "dependencies done"
    assert reg.changes_since(feed.seq).tasks == []
    assert read_registry(fixture_dir)["chat-app"]["tasks"][2]["state"] == "ready"


def test_writes_keep_the_original_format(fixture_dir: Path) -> None:
    reg = NecroCodeRegistry(fixture_dir)
    reg.submit_taskset(Taskset("api", repo="/r", tasks=[
        Task("a", title="full", required_skill="python", priority=4, timeout=60.0,
             resources=Resources(2.0, 1024), command=["make", "a"], max_attempts=2,
             metadata={"k": [1]}, optional=True, estimated_duration=9.0, tenant="team"),
        Task("b", dependencies=["a"]), Task("c", dependencies=["chat-app/1"])]))
    reg.transition("api/a", S.RUNNING, runner_id="r-1", assigned_slot="slot-1",
                   reserved_branch="feature/task-api-a", attempts=1, started_at=5.0,
                   event=TaskEvent(EventType.TASK_ASSIGNED, runner_id="r-1", pool="local"))
    reg.transition("api/a", S.DONE, artifacts=["out/changes.diff", "out/run.log"],
                   event=TaskEvent(EventType.RUNNER_COMPLETED, details={"exit_code": 0}))
    reg.transition("chat-app/2.1", S.CANCELLED,
                   event=TaskEvent(EventType.TASK_CANCELLED, message="not needed"))
    reg.set_priority("chat-app/1", 7)
    reg.record_event(TaskEvent(EventType.DISPATCHER_STARTED))
    files = read_registry(fixture_dir)  # every file loads as the original loads it
    api = {t["id"]: t for t in files["api"]["tasks"]}
    assert (api["a"]["state"], api["a"]["runner_id"], api["a"]["assigned_slot"],
            api["a"]["reserved_branch"]) == ("done", "r-1", "slot-1", "feature/task-api-a")
    assert [(x["type"], x["uri"]) for x in api["a"]["artifacts"]] == [
        ("diff", "out/changes.diff"), ("log", "out/run.log")]
    assert api["a"]["required_skill"] == "python" and api["b"]["state"] == "ready"
    assert api["c"]["dependencies"] == ["chat-app/1"] and api["c"]["state"] == "blocked"
    assert api["a"]["metadata"]["k"] == [1]
    extra = api["a"]["metadata"]["necrocode_dispatcher"]
    assert extra["resources"] == {"cpu": 2.0, "memory_mb": 1024} and extra["attempts"] == 1
    assert files["api"]["version"] == 3  # submit, running, done
    chat = {t["id"]: t for t in files["chat-app"]["tasks"]}
    assert chat["2.1"]["state"] == "failed"  # CANCELLED, as the original can hold it
    assert chat["2.1"]["metadata"]["necrocode_dispatcher"]["state"] == "cancelled"
    assert chat["1"]["priority"] == 7 and files["chat-app"]["version"] == 3
    kinds = [(e["event_type"], e["task_id"]) for e in files["api"]["_events"]]
    assert kinds[3:] == [("TaskAssigned", "a"), ("RunnerFinished", "a"), ("TaskCompleted", "a"),
                         ("TaskReady", "b")]
    assert files["api"]["_events"][4]["details"]["exit_code"] == 0
    text = (fixture_dir / "tasksets" / "api" / "taskset.json").read_text()
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False)  # its layout
    # a fresh reader sees exactly what the writer holds
    again = NecroCodeRegistry(fixture_dir)
    assert [t.to_dict() for t in again.list_tasks()] == [t.to_dict() for t in reg.list_tasks()]
    strip = [(e.event_type, e.task_key, e.timestamp, e.message, e.details, e.runner_id)
             for e in reg.get_events()]
    assert [(e.event_type, e.task_key, e.timestamp, e.message, e.details, e.runner_id)
            for e in again.get_events()] == strip
    assert again.get_task("chat-app/2.1").state is S.CANCELLED
    assert again.get_taskset("api") is not None and again.get_taskset("api").repo == "/r"


def test_extras_survive_the_originals_rewrites(fixture_dir: Path) -> None:
    reg = NecroCodeRegistry(fixture_dir)
    reg.transition("chat-app/2.1", S.RUNNING, attempts=2, last_error="exit 1", timeout=30.0)
    reg.transition("chat-app/1", S.CANCELLED)
    other = OriginalWriter(fixture_dir)
    other.add_artifact("chat-app", "2.1", "log", "file:///logs/2.1.log")
    other.update_task_state("chat-app", "1.1", "done")  # any rewrite of the whole file
    other.update_task_state("chat-app", "1", "ready")  # the original retries the cancelled one
    got = reg.get_task("chat-app/2.1")
    assert (got.attempts, got.last_error, got.timeout, got.state) == (2, "exit 1", 30.0,
                                                                      S.RUNNING)
    assert got.artifacts == ["file:///logs/2.1.log"]
    assert reg.get_task("chat-app/1").state is S.READY  # its cancel mark no longer holds
    reg.transition("chat-app/2.1", S.DONE, artifacts=[*got.artifacts, "out/x.diff"])
    arts = {t["id"]: t for t in read_registry(fixture_dir)["chat-app"]["tasks"]}["2.1"]
    assert [a["uri"] for a in arts["artifacts"]] == ["file:///logs/2.1.log", "out/x.diff"]
    assert arts["artifacts"][0]["type"] == "log"


def test_original_events_are_read_in_our_terms(fixture_dir: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    other = OriginalWriter(fixture_dir)
    other.event("chat-app", "1", "RunnerFinished", exit_code=3)
    other.event("chat-app", "1", "PROpened", url="https://example.invalid/pr/1")
    path = fixture_dir / "events" / "chat-app" / "events.jsonl"
    with open(path, "a") as fh:
        fh.write("{not json\n")
    with caplog.at_level(logging.WARNING):
        reg = NecroCodeRegistry(fixture_dir)
        events = reg.get_events()
    assert [(e.event_type, e.message) for e in events[-2:]] == [
        (EventType.RUNNER_FAILED, "RunnerFinished"), (EventType.TASK_UPDATED, "PROpened")]
    assert "unreadable event line" in caplog.text and str(path) in caplog.text


def test_events_followed_across_the_originals_rotation(fixture_dir: Path) -> None:
    reg = NecroCodeRegistry(fixture_dir)
    reg.record_event(TaskEvent(EventType.RUNNER_STARTED, "chat-app/1", message="one"))
    path = fixture_dir / "events" / "chat-app" / "events.jsonl"
    OriginalWriter(fixture_dir).event("chat-app", "1", "TaskUpdated", note="before rotation")
    path.rename(path.with_name("events.jsonl.1"))  # EventStore.rotate_logs
    path.touch()
    reg.record_event(TaskEvent(EventType.RUNNER_STARTED, "chat-app/1", message="two"))
    tail = [e.message or e.details.get("note") for e in reg.get_events()[5:]]
    assert tail == ["one", "before rotation", "two"]
    seqs = [e.seq for e in reg.get_events()]
    assert seqs == sorted(set(seqs))  # type: ignore[type-var]


def test_transition_many_writes_each_file_once(fixture_dir: Path) -> None:
    reg = NecroCodeRegistry(fixture_dir)
    reg.submit_taskset(Taskset("b", tasks=[Task(str(i)) for i in range(5)]))
    results = reg.transition_many(
        [TransitionRequest(f"b/{i}", S.RUNNING, expected=S.READY) for i in range(5)]
        + [TransitionRequest("chat-app/1", S.RUNNING), TransitionRequest("chat-app/1", S.DONE)])
    assert all(isinstance(r, Task) for r in results)
    files = read_registry(fixture_dir)
    assert files["b"]["version"] == 2 and files["chat-app"]["version"] == 2


# --- other writers ------------------------------------------------------------------------------
def test_tasksets_of_another_writer_are_picked_up(fixture_dir: Path) -> None:
    reg = NecroCodeRegistry(fixture_dir)
    seq = reg.changes_since(0).seq
    other = OriginalWriter(fixture_dir)
    other.create_taskset("later", [new_task("1", skill="python", priority=2),
                                   new_task("2", deps=["1"])])
    other.update_task_state("chat-app", "2.1", "running", {"runner_id": "theirs"})
    changed = {t.key: t for t in reg.changes_since(seq).tasks}
    assert set(changed) == {"later/1", "later/2", "chat-app/2.1"}
    assert changed["later/1"].required_skill == "python" and changed["later/1"].priority == 2
    assert changed["chat-app/2.1"].runner_id == "theirs"
    with pytest.raises(RegistryError, match="expected it to be ready"):
        reg.transition("chat-app/2.1", S.RUNNING, expected=S.READY)  # theirs now: CAS holds
    # READY before its dependency is DONE (the original's Kiro sync writes that): blocked
    data = other.load("later")
    data["tasks"][1]["state"] = "ready"
    other.save(data)
    reg.changes_since(0)
    assert reg.get_task("later/2").state is S.BLOCKED


def test_lock_held_by_the_original_is_waited_for_then_reported(
        fixture_dir: Path, tmp_path: Path) -> None:
    before = tree(fixture_dir / "tasksets")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import filelock, sys, time\n"
         "lock = filelock.FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True)\n"
         "sys.stdin.read()", str(fixture_dir / "locks" / "chat-app.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        reg = NecroCodeRegistry(fixture_dir, lock_timeout=0.3)
        with pytest.raises(RegistryLockedError) as info:
            reg.transition("chat-app/1", S.RUNNING)
        message = str(info.value)
        assert f"{fixture_dir / 'locks' / 'chat-app.lock'} is held by pid {holder.pid}" in message
        assert f"kill {holder.pid}" in message and "Do not delete the lock file" in message
        assert tree(fixture_dir / "tasksets") == before
    finally:
        holder.communicate("", timeout=30)
    assert reg.transition("chat-app/1", S.RUNNING).state is S.RUNNING  # released: it goes on


def test_a_lock_file_nobody_holds_is_no_obstacle(fixture_dir: Path) -> None:
    lock = fixture_dir / "locks" / "chat-app.lock"
    lock.parent.mkdir()
    lock.write_text("left by a writer that crashed")
    reg = NecroCodeRegistry(fixture_dir, lock_timeout=0.3)
    assert reg.transition("chat-app/1", S.RUNNING).state is S.RUNNING
    assert lock.exists()  # left in place, as filelock leaves it


# --- bad input ----------------------------------------------------------------------------------
def _break(data: dict[str, Any], how: str) -> str:
    if how == "json":
        return json.dumps(data, indent=2)[:-40]
    if how == "state":
        data["tasks"][1]["state"] = "cancelled"
    elif how == "dependency":
        data["tasks"][2]["dependencies"] = ["1.1", "9.9"]
    elif how == "spec_name":
        data["spec_name"] = "chat"
    elif how == "types":
        data["tasks"][0]["priority"] = "high"
        del data["tasks"][3]["updated_at"]
    return json.dumps(data, indent=2)


BAD = {
    "json": ["line 95, column 21: not valid JSON (Unterminated string"],
    "state": ["tasks[1] (id '1.1'): state 'cancelled' is not a NecroCode state; use one of "
              "ready, running, blocked, done, failed"],
    "dependency": ["tasks[2] (id '1.2'): depends on '9.9', which is not a task of this "
                   "taskset; add task '9.9' or remove it from dependencies"],
    "spec_name": ["spec_name: is 'chat' but the file is in the folder 'chat-app'"],
    "types": ["tasks[0] (id '1'): priority must be an integer (it is 'high')",
              "tasks[3] (id '2.1'): updated_at is missing"],
}


@pytest.mark.parametrize("how", list(BAD))
def test_bad_taskset_is_refused_naming_the_file_and_the_fix(
        fixture_dir: Path, how: str, tmp_path: Path) -> None:
    path = fixture_dir / "tasksets" / "chat-app" / "taskset.json"
    path.write_text(_break(json.loads(path.read_text()), how))
    before = tree(fixture_dir)
    with pytest.raises(NecroCodeFormatError) as info:
        NecroCodeRegistry(fixture_dir)
    message = str(info.value)
    assert message.startswith(f"NecroCode taskset {path} cannot be read")
    assert "fix the file (or restore it from a backup)" in message
    for part in BAD[how]:
        assert part in message
    result = CliRunner().invoke(main, ["--registry", str(fixture_dir), "tasks"],
                                env={"NECROCODE_CONFIG": "", "NECROCODE_REGISTRY": ""})
    assert result.exit_code == 1 and str(path) in result.stderr
    assert "Traceback" not in result.output
    assert tree(fixture_dir) == before  # nothing else touched


def test_a_file_broken_while_running_is_reported_once_and_kept(
        fixture_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    reg = NecroCodeRegistry(fixture_dir)
    path = fixture_dir / "tasksets" / "chat-app" / "taskset.json"
    good = path.read_text()
    path.write_text(good.replace('"state": "done"', '"state": "finished"'))
    with caplog.at_level(logging.WARNING):
        assert len(reg.list_tasks()) == 5 and reg.changes_since(0).tasks  # last known state
        reg.list_tasks()
    assert caplog.text.count("cannot be read") == 1 and "'finished'" in caplog.text
    with pytest.raises(NecroCodeFormatError):
        reg.transition("chat-app/1", S.RUNNING)  # never written over a file it cannot read
    assert "finished" in path.read_text()
    path.write_text(good.replace('"priority": 3', '"priority": 8'))
    assert reg.get_task("chat-app/1.2").priority == 8


# --- open_registry and the CLI ------------------------------------------------------------------
def test_which_paths_are_necrocode_registries(tmp_path: Path, fixture_dir: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert registry_kind(empty) == registry_kind(fixture_dir) == "necrocode"
    assert registry_kind(f"{tmp_path}/new/") == "necrocode"
    assert registry_kind(tmp_path / "new.db") == "sqlite"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(RegistryError, match="not a NecroCode registry"):
        registry_kind(tmp_path / "other")
    reg = open_registry(empty)
    assert isinstance(reg, NecroCodeRegistry) and list(empty.iterdir()) == []
    reg.submit_taskset(Taskset("t", tasks=[Task("1")]))
    assert sorted(p.name for p in empty.iterdir()) == ["events", "locks", "tasksets"]
    fresh = open_registry(f"{tmp_path}/fresh/")
    assert isinstance(fresh, NecroCodeRegistry) and not (tmp_path / "fresh").exists()
    assert not isinstance(open_registry(tmp_path / "r.db"), NecroCodeRegistry)
    assert isinstance(SQLiteRegistry(tmp_path / "s.db"), SQLiteRegistry)


def test_cli_lists_tasks_with_skills_and_priorities(fixture_dir: Path) -> None:
    result = CliRunner().invoke(main, ["tasks", "--json", "--registry", str(fixture_dir)],
                                env={"NECROCODE_CONFIG": "", "NECROCODE_REGISTRY": ""})
    assert result.exit_code == 0, result.output
    rows = [(t["key"], t["state"], t["required_skill"], t["priority"])
            for t in json.loads(result.stdout)]
    assert rows == [("chat-app/1", "ready", "", 0), ("chat-app/1.1", "done", "", 0),
                    ("chat-app/1.2", "blocked", "backend", 3),
                    ("chat-app/2.1", "ready", "frontend", 0),
                    ("chat-app/2.2", "blocked", "frontend", 0)]
    assert read_events(fixture_dir / "events" / "chat-app" / "events.jsonl")


def test_files_in_another_layout_are_rewritten_in_the_originals(fixture_dir: Path) -> None:
    # a compact file (another tool), and text that looks like the layout inside strings
    path = fixture_dir / "tasksets" / "chat-app" / "taskset.json"
    data = json.loads(path.read_text())
    data["tasks"][0]["title"] = 'a,\n    {\n      "id": "x"'
    data["tasks"][1]["artifacts"] = [{"type": "log", "uri": "u", "size_bytes": 1,
                                      "created_at": data["created_at"], "metadata": {"k": [1]}}]
    path.write_text(json.dumps(data))
    reg = NecroCodeRegistry(fixture_dir)
    assert reg.get_task("chat-app/1").title == data["tasks"][0]["title"]
    reg.transition("chat-app/2.1", S.RUNNING)
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    written = read_registry(fixture_dir)["chat-app"]["tasks"]
    assert written[0]["title"] == data["tasks"][0]["title"]
    assert written[1]["artifacts"] == data["tasks"][1]["artifacts"]
    reg.transition("chat-app/1", S.RUNNING)  # now cut from the file it wrote itself
    again = read_registry(fixture_dir)["chat-app"]["tasks"]
    assert [t["state"] for t in again] == ["running", "done", "blocked", "running", "blocked"]
    assert NecroCodeRegistry(fixture_dir).get_task("chat-app/1").title == written[0]["title"]
