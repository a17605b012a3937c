"""necroui import-necrocode DIR: an original NecroCode registry copied into the SQLite one."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from click.testing import CliRunner
from necrocode.dispatcher.models import EventType, Resources, Task, Taskset, TaskState
from necrocode.dispatcher.registry import NecroCodeRegistry, SQLiteRegistry
from necrocode_original import OriginalWriter

from necroui.cli import main

S = TaskState
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "necrocode-registry"
ENV = {"NECROCODE_CONFIG": "", "NECROCODE_REGISTRY": ""}


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_import_copies_tasks_states_and_events(tmp_path: Path) -> None:
    source = tmp_path / "necrocode"
    shutil.copytree(FIXTURE, source)
    other = OriginalWriter(source)
    other.update_task_state("chat-app", "2.1", "running", {"runner_id": "theirs"})
    other.update_task_state("chat-app", "1", "running")
    other.update_task_state("chat-app", "1", "failed")
    NecroCodeRegistry(source).submit_taskset(Taskset("extra", tasks=[
        Task("x", required_skill="python", priority=4, resources=Resources(2.0, 256),
             timeout=30.0)]))
    before = tree(source)
    db = tmp_path / "registry.db"
    result = CliRunner().invoke(main, ["--registry", str(db), "import-necrocode", str(source)],
                                env=ENV)
    assert result.exit_code == 0, result.output
    assert "chat-app: 5 task(s) (5 created, 0 updated; " in result.stdout
    assert "ready to run again here: chat-app/2.1" in result.stdout
    assert "imported 2 taskset(s)" in result.stdout
    assert tree(source) == before  # only read
    reg = SQLiteRegistry(db)
    got = {t.key: t for t in reg.list_tasks()}
    assert {k: t.state for k, t in got.items()} == {
        "chat-app/1": S.FAILED, "chat-app/1.1": S.DONE, "chat-app/1.2": S.READY,
        "chat-app/2.1": S.READY, "chat-app/2.2": S.BLOCKED, "extra/x": S.READY}
    assert (got["chat-app/1.2"].required_skill, got["chat-app/1.2"].priority) == ("backend", 3)
    assert got["chat-app/2.2"].optional and got["chat-app/2.2"].dependencies == ["2.1", "1.2"]
    assert got["chat-app/2.1"].runner_id == "theirs"
    assert (got["extra/x"].resources, got["extra/x"].timeout) == (Resources(2.0, 256), 30.0)
    history = reg.get_events(task_key="chat-app/1")
    assert [e.event_type for e in history][:4] == [
        EventType.TASK_CREATED, EventType.TASK_ASSIGNED, EventType.TASK_FAILED,
        EventType.TASK_CREATED]  # the original's history first, with its own times
    assert history[0].timestamp < history[3].timestamp
    # again: definitions updated in place, states kept, history not copied twice
    n_events = len(reg.get_events())
    again = CliRunner().invoke(main, ["--registry", str(db), "import-necrocode", str(source)],
                               env=ENV)
    assert again.exit_code == 0 and "0 created" in again.stdout
    assert len(reg.get_events()) == n_events
    reg.close()


def test_import_refuses_what_is_not_a_registry_to_copy(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("x")
    result = CliRunner().invoke(main, ["--registry", str(tmp_path / "r.db"), "import-necrocode",
                                       str(junk)], env=ENV)
    assert result.exit_code == 1
    assert f"error: {junk} is not a NecroCode registry: it has no tasksets/ folder" in (
        result.stderr)
    source = tmp_path / "necrocode"
    shutil.copytree(FIXTURE, source)
    same = CliRunner().invoke(main, ["--registry", str(source), "import-necrocode",
                                     str(source)], env=ENV)
    assert same.exit_code == 1 and "is already the registry" in same.stderr
    assert not (tmp_path / "r.db").exists()
