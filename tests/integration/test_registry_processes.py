"""Several processes hammer one SQLite registry: no corruption, no lost update, CAS holds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from necrocode.dispatcher.models import EventType, Task, Taskset, TaskState
from necrocode.dispatcher.registry import SQLiteRegistry

WORKERS = 3
TOKEN_ROUNDS = 25  # token passes per worker; each adds 1 to a counter and to a priority
RACE_TASKS = 200  # READY tasks every worker tries to claim
EVENTS = 60  # events each worker records

# Runs in a fresh interpreter: argv = registry path, worker id, go-file.
WORKER = r"""
import json, os, sys, time
from necrocode.dispatcher.errors import InvalidTransitionError
from necrocode.dispatcher.models import EventType, TaskEvent, TaskState as S
from necrocode.dispatcher.registry import SQLiteRegistry

path, me, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rounds, race, n_events = (int(x) for x in sys.argv[4:7])
reg = SQLiteRegistry(path)
open(f"{go}.{me}.ready", "w").close()
deadline = time.time() + 60
while not os.path.exists(go):  # start together
    time.sleep(0.0005)
    assert time.time() < deadline, "no go signal"

wins, event_seqs, feed_seqs = [], [], []
passes = 0
i = 0
while passes < rounds or i < max(race, n_events):
    if i < race:  # claim a READY task: exactly one process may win each
        try:
            reg.transition(f"race/{i}", S.RUNNING, expected=S.READY, runner_id=f"w{me}",
                           event=TaskEvent(EventType.TASK_ASSIGNED, runner_id=f"w{me}"))
            wins.append(f"race/{i}")
        except InvalidTransitionError:
            pass
    if i < n_events:
        e = reg.record_event(TaskEvent(EventType.RUNNER_STARTED, details={"w": me, "i": i}))
        event_seqs.append(e.seq)
    if passes < rounds:  # take the token (CAS), bump counter and priority, hand it back
        try:
            reg.transition("shared/token", S.RUNNING, expected=S.READY, runner_id=f"w{me}")
        except InvalidTransitionError:
            pass
        else:
            task = reg.get_task("shared/token")
            count = task.metadata.get("count", 0) + 1
            reg.set_priority("shared/token", task.priority + 1)
            reg.transition("shared/token", S.READY, expected=S.RUNNING,
                           metadata={**task.metadata, "count": count,
                                     f"w{me}": task.metadata.get(f"w{me}", 0) + 1})
            passes += 1
    feed_seqs.append(reg.changes_since(0, limit=1).seq)
    i += 1
reg.close()
print(json.dumps({"wins": wins, "event_seqs": event_seqs, "feed_seqs": feed_seqs}))
"""


def test_processes_do_not_lose_updates(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    reg = SQLiteRegistry(path)
    reg.submit_taskset(Taskset("race", tasks=[Task(str(i)) for i in range(RACE_TASKS)]))
    reg.submit_taskset(Taskset("shared", tasks=[Task("token")]))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(path), str(w), str(go),
             str(TOKEN_ROUNDS), str(RACE_TASKS), str(EVENTS)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for w in range(WORKERS)
    ]
    try:
        deadline = time.monotonic() + 60  # start them together, once all have imported
        while not all(Path(f"{go}.{w}.ready").exists() for w in range(WORKERS)):
            assert time.monotonic() < deadline, "workers did not start"
            assert all(p.poll() is None for p in procs), "a worker died at start"
            time.sleep(0.01)
        go.touch()
        outputs = []
        for p in procs:
            out, err = p.communicate(timeout=180)
            assert p.returncode == 0, err
            outputs.append(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    assert reg.integrity_check() == "ok"

    # CAS: each raced task went READY -> RUNNING exactly once, by the process that says it won
    winners = {key: w for w, o in enumerate(outputs) for key in o["wins"]}
    assert sum(len(o["wins"]) for o in outputs) == RACE_TASKS == len(winners)
    for key, w in winners.items():
        task = reg.get_task(key)
        assert task.state is TaskState.RUNNING and task.runner_id == f"w{w}"
        assigned = reg.get_events(task_key=key, event_types=[EventType.TASK_ASSIGNED])
        assert [e.runner_id for e in assigned] == [f"w{w}"]

    # no lost update: every pass of the token counted, in metadata and in the priority
    token = reg.get_task("shared/token")
    total = WORKERS * TOKEN_ROUNDS
    assert token.metadata["count"] == total
    assert all(token.metadata[f"w{w}"] == TOKEN_ROUNDS for w in range(WORKERS))
    assert token.priority == total
    changes = reg.get_events(task_key="shared/token", event_types=[EventType.PRIORITY_CHANGED])
    assert [(e.details["old"], e.details["new"]) for e in changes] == [
        (n, n + 1) for n in range(total)
    ]

    # sequence numbers: unique, increasing in each process, and events in seq order
    for o in outputs:
        assert o["event_seqs"] == sorted(o["event_seqs"])
        assert o["feed_seqs"] == sorted(o["feed_seqs"])
    all_seqs = [s for o in outputs for s in o["event_seqs"]]
    assert len(set(all_seqs)) == len(all_seqs) == WORKERS * EVENTS
    events = reg.get_events()
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert max(seqs) <= reg.current_seq()  # type: ignore[type-var]
    started = reg.get_events(event_types=[EventType.RUNNER_STARTED])
    assert {(e.details["w"], e.details["i"]) for e in started} == {
        (w, i) for w in range(WORKERS) for i in range(EVENTS)
    }
    feed = reg.changes_since(0)
    assert {t.key for t in feed.tasks} == {t.key for t in reg.list_tasks()}
    assert feed.seq == reg.current_seq()
    reg.close()
