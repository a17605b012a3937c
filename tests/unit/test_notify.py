"""Notices from snapshots, and the hooks that get them: a real command, a real local webhook."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from necrocode.dispatcher.config_loader import load_config_file
from necrocode.dispatcher.errors import ConfigError
from necrocode.dispatcher.models import EventType, TaskEvent, TaskState
from necrocode.dispatcher.notify import (
    Notice,
    NoticeDeriver,
    NoticeKind,
    Notifier,
    SnapshotNotifier,
)
from necrocode.dispatcher.notify_config import NotifyConfig
from necrocode.dispatcher.snapshot import (
    FinishedTaskView,
    Pending,
    PendingReason,
    QueuedTaskView,
    Snapshot,
)
from support import wait_until

T0 = 1_700_000_000.0


def queued(key: str) -> QueuedTaskView:
    taskset, _, tid = key.partition("/")
    return QueuedTaskView(key, taskset, tid, tid, TaskState.READY, "s", "t", 0, T0, T0, 0,
                          Pending(PendingReason.QUEUED, "its turn"))


def finished(key: str, state: TaskState = TaskState.DONE, error: str | None = None
             ) -> FinishedTaskView:
    taskset, _, tid = key.partition("/")
    return FinishedTaskView(key, taskset, tid, tid, state, 1, T0, T0 + 1, error)


def snap(version: int, **kw: Any) -> Snapshot:
    return Snapshot(version=version, taken_at=T0 + version, state="running", policy="fifo",
                    max_global_concurrency=4, registry_path="r.db", api_url=None, **kw)


def event(seq: int, kind: EventType, task: str, message: str = "", **details: Any) -> TaskEvent:
    return TaskEvent(kind, task, T0 + seq, message, details=details, seq=seq)


def test_history_is_not_news_then_each_event_counts_once() -> None:
    d = NoticeDeriver()
    old = (event(1, EventType.TASK_FAILED, "a/1", "exit 1"),)
    assert d.feed(snap(1, events=old, queued=(queued("a/2"),))) == []  # history
    events = (*old, event(2, EventType.TASK_FAILED, "a/2", "exit code 2"),
              event(3, EventType.START_CONFLICT, "b/1", "conflict in x.py"),
              event(4, EventType.GATE_FAILED, "b/2", "make test failed"),
              event(5, EventType.TASK_FAILED, "b/3", "budget exceeded: 2.10/2.00 USD",
                    reason="budget"))
    notices = d.feed(snap(2, events=events, queued=(queued("b/9"),),
                          finished=(finished("a/2", TaskState.FAILED, "exit code 2"),)))
    kinds = [(n.kind, n.task) for n in notices]
    assert kinds == [(NoticeKind.TASK_FAILED, "a/2"), (NoticeKind.CONFLICT, "b/1"),
                     (NoticeKind.GATE_FAILED, "b/2"), (NoticeKind.BUDGET_STOP, "b/3"),
                     (NoticeKind.TASKSET_FINISHED, None)]
    assert notices[-1].taskset == "a" and "finished (1 failed)" in notices[-1].message
    assert d.feed(snap(3, events=events, queued=(queued("b/9"),),
                       finished=(finished("a/2", TaskState.FAILED),))) == []


def test_a_budget_stop_is_known_by_its_event_and_told_once() -> None:
    d = NoticeDeriver()
    d.feed(snap(1, queued=(queued("a/1"),)))
    stop = event(2, EventType.BUDGET_EXCEEDED, "a/1", "budget exceeded: 1.23/1.00 USD")
    running = (event(1, EventType.TASK_CREATED, "a/1"), stop)
    notices = d.feed(snap(2, events=running, queued=(queued("a/9"),)))
    assert [(n.kind, n.task) for n in notices] == [(NoticeKind.BUDGET_STOP, "a/1")]
    assert notices[0].severity == "error" and "1.23/1.00 USD" in notices[0].message
    failed = (*running, event(3, EventType.TASK_FAILED, "a/1",
                              "failed not retryable: budget exceeded: 1.23/1.00 USD",
                              reason="budget"))
    later = d.feed(snap(3, events=failed, queued=(queued("a/9"),), finished=(
        finished("a/1", TaskState.FAILED, "budget exceeded: 1.23/1.00 USD"),)))
    assert later == []  # the failure that follows the stop is the same news


def test_budget_in_a_message_is_not_a_budget_stop() -> None:
    d = NoticeDeriver()
    d.feed(snap(1, queued=(queued("a/1"),)))
    said = event(2, EventType.TASK_FAILED, "a/1", "tests of the budget module failed",
                 reason="exit_code")
    notices = d.feed(snap(2, events=(said,), queued=(queued("a/9"),)))
    assert [n.kind for n in notices] == [NoticeKind.TASK_FAILED]


def test_a_failure_past_the_event_tail_is_still_told() -> None:
    d = NoticeDeriver()
    d.feed(snap(1, queued=(queued("a/1"), queued("a/2"))))
    notices = d.feed(snap(2, queued=(queued("a/2"),),
                          finished=(finished("a/1", TaskState.FAILED, "boom"),)))
    assert [(n.kind, n.task, n.message) for n in notices] == [
        (NoticeKind.TASK_FAILED, "a/1", "a/1 failed: boom")]


# --- hooks --------------------------------------------------------------------------------------


def notice(i: int = 0) -> Notice:
    return Notice(NoticeKind.TASK_FAILED, f"t/{i} failed", f"t/{i}", "t", T0)


def test_a_command_hook_reads_the_notice_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "got.jsonl"
    script = f"import sys; open({str(out)!r}, 'a').write(sys.stdin.read() + '\\n')"
    notifier = Notifier(NotifyConfig(command=[sys.executable, "-c", script], timeout=20))
    notifier.start()
    notifier.submit(notice(1))
    notifier.submit(notice(2))
    notifier.stop(timeout=30)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["task"] for line in lines] == ["t/1", "t/2"]
    assert lines[0]["kind"] == "task_failed" and lines[0]["message"] == "t/1 failed"
    assert all(r.ok for r in notifier.results)


def test_a_hanging_command_is_killed_and_never_blocks_submit(tmp_path: Path) -> None:
    notifier = Notifier(NotifyConfig(command=[sys.executable, "-c", "import time; "
                                              "time.sleep(60)"], timeout=0.5, queue_size=2))
    notifier.start()
    for i in range(10):  # returns at once although the hook hangs: a bounded queue
        notifier.submit(notice(i))
    assert notifier.dropped >= 6
    wait_until(lambda: notifier.results, timeout=30)
    assert not notifier.results[0].ok and "timed out after 0.5s" in notifier.results[0].detail
    notifier.stop(timeout=0.1)


def test_a_failing_command_is_reported(tmp_path: Path) -> None:
    notifier = Notifier(NotifyConfig(command=[sys.executable, "-c",
                                              "import sys; sys.exit('no pager here')"]))
    notifier.start()
    notifier.submit(notice())
    notifier.stop(timeout=30)
    assert notifier.results[0].detail == "exit code 1: no pager here"


class _Hook(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(204 if self.path == "/ok" else 500)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    _Hook.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_webhook_gets_the_notice_as_json(webhook: str) -> None:
    notifier = Notifier(NotifyConfig(webhook=webhook + "/ok", events=["task_failed"]))
    notifier.start()
    notifier.submit(notice(7))
    notifier.submit(Notice(NoticeKind.TASKSET_FINISHED, "t finished", None, "t"))  # not asked
    notifier.stop(timeout=30)
    assert [b["task"] for b in _Hook.bodies] == ["t/7"]
    assert notifier.results[0].ok and notifier.results[0].detail == "HTTP 204"


def test_a_webhook_error_and_an_unreachable_one_are_reported(webhook: str) -> None:
    notifier = Notifier(NotifyConfig(webhook=webhook + "/broken", timeout=5))
    notifier.start()
    notifier.submit(notice())
    notifier.stop(timeout=30)
    assert notifier.results[0].detail == "HTTP 500"
    gone = Notifier(NotifyConfig(webhook="http://127.0.0.1:9/none", timeout=2))
    gone.start()
    gone.submit(notice())
    gone.stop(timeout=30)
    assert not gone.results[0].ok and "unreachable" in gone.results[0].detail


class _Source:
    """wait_for_snapshot over a list of snapshots (as DispatcherCore publishes them)."""

    def __init__(self, snaps: list[Snapshot]) -> None:
        self.snaps = snaps
        self.lock = threading.Lock()

    def wait_for_snapshot(self, after_version: int, timeout: float | None = None
                          ) -> Snapshot | None:
        with self.lock:
            newer = [s for s in self.snaps if s.version > after_version]
        if not newer:
            time.sleep(min(timeout or 0.05, 0.05))
            return None
        return newer[0]


def test_snapshot_notifier_sends_what_the_snapshots_say(tmp_path: Path) -> None:
    out = tmp_path / "got.jsonl"
    script = f"import sys; open({str(out)!r}, 'a').write(sys.stdin.read() + '\\n')"
    first = snap(1, queued=(queued("a/1"),))
    source = _Source([first])
    told: list[Notice] = []
    watcher = SnapshotNotifier(source, Notifier(NotifyConfig(command=[sys.executable, "-c",
                                                                      script])), [told.append])
    watcher.start()
    wait_until(lambda: watcher.deriver._active is not None, timeout=10)  # noqa: SLF001
    with source.lock:
        source.snaps.append(dataclasses.replace(
            first, version=2, queued=(), finished=(finished("a/1", TaskState.FAILED, "x"),)))
    wait_until(lambda: len(told) == 2, timeout=10)
    watcher.stop(timeout=30)
    kinds = [json.loads(line)["kind"] for line in out.read_text().splitlines()]
    assert kinds == ["task_failed", "taskset_finished"]


# --- config ---------------------------------------------------------------------------------------


def test_notify_section_loads(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("notify:\n  command: [page-me, --json]\n  webhook: https://h.example/x\n"
                    "  events: [task_failed]\n  timeout: 3\n")
    config = load_config_file(path)
    assert config.notify.command == ["page-me", "--json"]
    assert config.notify.events == ["task_failed"] and config.notify.timeout == 3


@pytest.mark.parametrize("body,line,says", [
    ("  comand: [x]\n", 2, "did you mean 'command'"),  # a typo
    ("  command: page-me --json\n", 2, "list of strings (argv)"),  # a shell line
    ("  webhook: ftp://h/x\n", 2, "http(s) URL"),
    ("  events: [task_failed, tasks_finished]\n", 2, "did you mean 'taskset_finished'"),
    ("  timeout: 0\n", 2, "seconds > 0"),
])
def test_bad_notify_keys_name_the_file_line(tmp_path: Path, body: str, line: int,
                                            says: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("notify:\n" + body)
    with pytest.raises(ConfigError) as err:
        load_config_file(path)
    text = str(err.value)
    assert f"{path}:{line}" in text and says in text
