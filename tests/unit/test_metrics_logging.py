"""setup_logging: JSON lines carry task, runner and pool; text lines show them too."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from necrocode.dispatcher.logging_setup import log_extra, setup_logging
from necrocode.dispatcher.models import AgentPool, Runner, Task


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line]


def test_json_lines_always_carry_task_runner_and_pool() -> None:
    out = io.StringIO()
    setup_logging("debug", fmt="json", stream=out)
    log = logging.getLogger("necrocode.dispatcher.core")
    log.info("runner %s started", "r-1",
             extra={"task": "chat/1.1", "runner": "r-1", "pool": "local", "attempt": 2})
    log.debug("round done")  # no context: the keys are there, null
    first, second = (json.loads(line) for line in lines(out))
    assert first["message"] == "runner r-1 started"
    assert (first["task"], first["runner"], first["pool"]) == ("chat/1.1", "r-1", "local")
    assert first["attempt"] == 2  # other extra fields ride along
    assert first["level"] == "INFO" and first["logger"] == "necrocode.dispatcher.core"
    assert first["ts"].endswith("+00:00")
    assert second["task"] is None and second["runner"] is None and second["pool"] is None


def test_json_exceptions_and_odd_values_stay_one_line() -> None:
    out = io.StringIO()
    setup_logging(logging.INFO, fmt="json", stream=out)
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        logging.getLogger("x").exception("launch failed", extra={"pool": "docker",
                                                                 "obj": object()})
    (line,) = lines(out)
    data = json.loads(line)
    assert "RuntimeError: boom" in data["exc_info"]
    assert data["pool"] == "docker" and data["obj"].startswith("<object")


def test_text_lines_append_the_context() -> None:
    out = io.StringIO()
    setup_logging("INFO", fmt="text", stream=out)
    logging.getLogger("necrocode.dispatcher.core").warning(
        "heartbeat missed", extra={"task": "chat/2", "pool": "k8s"})
    logging.getLogger("other").info("plain")
    first, second = lines(out)
    assert first.endswith("heartbeat missed [task=chat/2 pool=k8s]")
    assert "WARNING" in first and "necrocode.dispatcher.core" in first
    assert second.endswith("other: plain")


def test_calling_again_replaces_its_own_handler_only() -> None:
    keep = logging.NullHandler()
    logging.getLogger().addHandler(keep)
    first, second = io.StringIO(), io.StringIO()
    setup_logging("INFO", stream=first)
    setup_logging("WARNING", fmt="json", stream=second)
    logging.getLogger("x").warning("once")
    logging.getLogger("x").info("filtered")
    assert first.getvalue() == ""
    assert len(lines(second)) == 1
    assert keep in logging.getLogger().handlers
    logging.getLogger().removeHandler(keep)


@pytest.mark.parametrize(
    ("level", "fmt", "needle"),
    [
        ("LOUD", "text", "log level 'LOUD'"),  # unknown level names the fix
        ("INFO", "xml", "log format 'xml'"),  # unknown format
    ],
)
def test_bad_level_or_format_is_refused_with_the_choices(level: str, fmt: str,
                                                        needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        setup_logging(level, fmt=fmt, stream=io.StringIO())


def test_log_extra_builds_the_convention_from_objects() -> None:
    task = Task(id="1.2", taskset="chat")
    runner = Runner(runner_id="r-9", task_key=task.key, pool_name="docker")
    assert log_extra(task=task, runner=runner, pool=AgentPool("docker")) == {
        "task": "chat/1.2", "runner": "r-9", "pool": "docker"}
    assert log_extra(task="a/1") == {"task": "a/1"}


def test_an_event_extra_fills_the_context() -> None:
    from necrocode.dispatcher.models import EventType, TaskEvent

    out = io.StringIO()
    setup_logging("INFO", fmt="json", stream=out)
    ev = TaskEvent(EventType.RUNNER_STARTED, task_key="chat/1", runner_id="r-1", pool="local")
    logging.getLogger("necrocode.dispatcher.events").info("runner started", extra={"event": ev})
    data = json.loads(lines(out)[0])
    assert (data["task"], data["runner"], data["pool"]) == ("chat/1", "r-1", "local")
    assert data["event_type"] == "RunnerStarted" and "event" not in data
    text = io.StringIO()
    setup_logging("INFO", fmt="text", stream=text)
    logging.getLogger("x").info("runner started", extra={"event": ev})
    assert lines(text)[0].endswith("[task=chat/1 runner=r-1 pool=local]")
