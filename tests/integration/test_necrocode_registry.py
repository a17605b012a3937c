"""A NecroCode registry directory written at once by several Dispatcher processes and by the
original's tools (re-implemented in tests/necrocode_original.py), and run through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from necrocode.dispatcher.models import EventType, Task, Taskset, TaskState
from necrocode.dispatcher.registry import NecroCodeRegistry
from necrocode_original import OriginalWriter, new_task, read_registry, read_taskset
from support import wait_until

TESTS = Path(__file__).resolve().parents[1]
WORKERS = 3
ROUNDS = 12  # token passes per Dispatcher process
RACE = 60  # READY tasks every process (and the original writer) tries to claim
EVENTS = 30
TALLY = 40  # increments of the original writer

# A Dispatcher process: argv = directory, worker id, go-file.
WORKER = r"""
import json, os, sys, time
from necrocode.dispatcher.errors import InvalidTransitionError
from necrocode.dispatcher.models import EventType, TaskEvent, TaskState as S
from necrocode.dispatcher.registry import NecroCodeRegistry

path, me, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rounds, race, n_events = (int(x) for x in sys.argv[4:7])
reg = NecroCodeRegistry(path)
open(f"{go}.{me}.ready", "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
wins, seqs = [], []
passes = i = 0
while passes < rounds or i < max(race, n_events):
    if i < race:
        try:
            reg.transition(f"race/{i}", S.RUNNING, expected=S.READY, runner_id=f"w{me}",
                           event=TaskEvent(EventType.TASK_ASSIGNED, runner_id=f"w{me}"))
            wins.append(f"race/{i}")
        except InvalidTransitionError:
            pass
    if i < n_events:
        seqs.append(reg.record_event(TaskEvent(EventType.RUNNER_STARTED, "shared/token",
                                               details={"w": me, "i": i})).seq)
    if passes < rounds:
        try:
            reg.transition("shared/token", S.RUNNING, expected=S.READY, runner_id=f"w{me}")
        except InvalidTransitionError:
            pass
        else:
            task = reg.get_task("shared/token")
            reg.set_priority("shared/token", task.priority + 1)
            reg.transition("shared/token", S.READY, expected=S.RUNNING,
                           metadata={**task.metadata, "count": task.metadata.get("count", 0) + 1})
            passes += 1
    i += 1
print(json.dumps({"wins": wins, "seqs": seqs}))
"""

# The original's tools in another process: claims race tasks its own way and bumps a tally,
# holding the lock for a long second at the start, while the others wait for it.
ORIGINAL = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[4])
from necrocode_original import OriginalWriter

root, go, race, tally = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[5])
writer = OriginalWriter(root)
open(f"{go}.orig.ready", "w").close()
while not os.path.exists(go):
    time.sleep(0.001)

def claim(i):
    def change(data):
        task = next(t for t in data["tasks"] if t["id"] == str(i))
        if task["state"] != "ready":
            return False
        task["state"], task["runner_id"] = "running", "orig"
        return True
    return change

def bump(data):
    task = next(t for t in data["tasks"] if t["id"] == "tally")
    task["priority"] += 1

wins = []
for i in range(max(race, tally)):
    if i < race and writer.modify("race", claim(i)):
        wins.append(f"race/{i}")
    if i < tally:
        writer.modify("shared", bump, hold=1.0 if i == 0 else 0.0)  # the others wait
print(json.dumps({"wins": wins}))
"""


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_dispatchers_and_the_original_lose_no_update(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    reg = NecroCodeRegistry(root)
    reg.submit_taskset(Taskset("race", tasks=[Task(str(i)) for i in range(RACE)]))
    reg.submit_taskset(Taskset("shared", tasks=[Task("token"), Task("tally")]))
    go = tmp_path / "go"
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "original.py").write_text(ORIGINAL)
    procs = [_start([str(tmp_path / "worker.py"), str(root), str(w), str(go), str(ROUNDS),
                     str(RACE), str(EVENTS)]) for w in range(WORKERS)]
    procs.append(_start([str(tmp_path / "original.py"), str(root), str(go), str(RACE),
                         str(TESTS), str(TALLY)]))
    try:
        ready = [Path(f"{go}.{w}.ready") for w in range(WORKERS)] + [Path(f"{go}.orig.ready")]
        wait_until(lambda: all(p.exists() for p in ready) or any(
            p.poll() is not None for p in procs), 60, "the writers to start")
        go.touch()
        outputs = []
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err
            outputs.append(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    files = read_registry(root)  # the original can still load every file
    names = [f"w{w}" for w in range(WORKERS)] + ["orig"]
    winners = {key: names[n] for n, o in enumerate(outputs) for key in o["wins"]}
    assert sum(len(o["wins"]) for o in outputs) == RACE == len(winners)  # each claimed once
    race = {t["id"]: t for t in files["race"]["tasks"]}
    for key, who in winners.items():
        assert (race[key.split("/")[1]]["state"], race[key.split("/")[1]]["runner_id"]) == (
            "running", who)
    shared = {t["id"]: t for t in files["shared"]["tasks"]}
    total = WORKERS * ROUNDS
    assert shared["token"]["metadata"]["count"] == total  # no pass lost
    assert shared["token"]["priority"] == total
    assert shared["tally"]["priority"] == TALLY  # nor one of the original's increments
    reg = NecroCodeRegistry(root)
    changes = reg.get_events(task_key="shared/token", event_types=[EventType.PRIORITY_CHANGED])
    assert sorted(e.details["new"] for e in changes) == list(range(1, total + 1))
    started = reg.get_events(event_types=[EventType.RUNNER_STARTED])
    assert {(e.details["w"], e.details["i"]) for e in started} == {
        (w, i) for w in range(WORKERS) for i in range(EVENTS)}
    for o in outputs[:WORKERS]:
        assert o["seqs"] == sorted(set(o["seqs"]))


def _config(tmp_path: Path) -> Path:
    gate = tmp_path / "gate-open"
    script = f'if [ "$1" = gate ]; then while [ ! -f {gate} ]; do sleep 0.05; done; fi'
    cfg = tmp_path / "dispatcher.yaml"
    cfg.write_text(
        "dispatcher:\n  poll_interval: 0.3\n  state_dir: ./state\n  api_port: 0\n"
        "agent_pools:\n  local:\n    type: local-process\n    max_concurrency: 4\n"
        f"    agent_command: [sh, -c, {json.dumps(script)}, sh, '{{task_id}}']\n"
        "skill_mapping:\n  default: [local]\n")
    return cfg


def _bulk(root: Path, n: int, left: int) -> None:
    """A taskset of ``n`` tasks in the original's format, all but ``left`` of them DONE."""
    tasks = [new_task(str(i), state="done" if i >= left else "ready",
                      skill=["backend", "frontend", None][i % 3], priority=i % 5)
             for i in range(n)]
    path = root / "tasksets" / "bulk" / "taskset.json"
    path.parent.mkdir(parents=True)
    stamp = tasks[0]["created_at"]
    path.write_text(json.dumps({"spec_name": "bulk", "version": 1, "created_at": stamp,
                                "updated_at": stamp, "tasks": tasks, "metadata": {}},
                               indent=2))


def test_cli_runs_a_necrocode_registry_to_done_and_picks_up_a_second_writer(
        tmp_path: Path) -> None:
    root = tmp_path / "registry"
    other = OriginalWriter(root)
    other.create_taskset("alpha", [new_task("gate", skill="backend", priority=5),
                                   new_task("after", deps=["gate"], skill="frontend"),
                                   new_task("free")])
    _bulk(root, 10_000, left=12)
    env = {**os.environ, "NECROCODE_CONFIG": "", "NECROCODE_REGISTRY": ""}
    listed = subprocess.run(["necroui", "tasks", "--json", "--registry", str(root)],
                            capture_output=True, text=True, env=env, timeout=120, check=True)
    tasks = {t["key"]: t for t in json.loads(listed.stdout)}
    assert len(tasks) == 10_003
    assert (tasks["alpha/gate"]["required_skill"], tasks["alpha/gate"]["priority"]) == (
        "backend", 5)
    assert (tasks["bulk/4"]["required_skill"], tasks["bulk/4"]["priority"]) == ("frontend", 4)
    run = subprocess.Popen(
        ["necroui", "--config", str(_config(tmp_path)), "--no-tui", "--until-done",
         "--registry", str(root)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        def gate_state() -> Any:
            tasks = read_taskset(root / "tasksets" / "alpha" / "taskset.json")["tasks"]
            return next(t for t in tasks if t["id"] == "gate")["state"] == "running"

        wait_until(gate_state, 120, "the gate task to run")
        other.create_taskset("beta", [new_task("1"), new_task("2", deps=["1"])])  # mid-run
        (tmp_path / "gate-open").touch()
        out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, out + err
    assert "all tasks DONE" in out
    files = read_registry(root)  # and every file still loads as the original loads it
    assert {name: {t["state"] for t in data["tasks"]} for name, data in files.items()} == {
        "alpha": {"done"}, "beta": {"done"}, "bulk": {"done"}}
    beta = [(e["event_type"], e["task_id"]) for e in files["beta"]["_events"]]
    assert ("TaskCompleted", "1") in beta and ("TaskCompleted", "2") in beta
    assert beta.index(("TaskReady", "2")) > beta.index(("TaskCompleted", "1"))
    gate = next(t for t in files["alpha"]["tasks"] if t["id"] == "gate")
    assert gate["runner_id"] and gate["assigned_slot"]
    assert files["bulk"]["version"] > 1 and all(
        t["runner_id"] for t in files["bulk"]["tasks"][:12])
    assert NecroCodeRegistry(root).count_tasks()[TaskState.DONE] == 10_005
