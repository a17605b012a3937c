"""Real git repositories for tests: an origin with a first commit, files committed in it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin:/usr/local/bin",
       "GIT_CONFIG_NOSYSTEM": "1"}


def git(*args: str, cwd: Path | str) -> str:
    """``git ARGS`` in ``cwd``; its stdout, stripped. Fails the test on a non-zero exit."""
    out = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                         env={**ENV, "HOME": str(cwd)})
    return out.stdout.strip()


def make_origin(path: Path, files: dict[str, str] | None = None, branch: str = "trunk") -> Path:
    """A repository at ``path`` with one commit of ``files`` on ``branch``."""
    path.mkdir(parents=True)
    git("init", "-q", "-b", branch, cwd=path)
    for name, text in (files or {"README.md": "hello\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "first", cwd=path)
    return path


def commit_files(worktree: Path | str, files: dict[str, str], message: str = "work") -> str:
    """Write ``files`` in ``worktree`` and commit them; the new head."""
    for name, text in files.items():
        target = Path(worktree) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git("add", "-A", cwd=worktree)
    git("commit", "-q", "-m", message, cwd=worktree)
    return git("rev-parse", "HEAD", cwd=worktree)


def run_task(pool: Any, registry: Any, key: str, edit: Callable[[Path], None],
             summary: str = "", work: Any = None, *, from_base: bool = False) -> Any:
    """One task's life as the engine drives it: a slot from its dependencies' work, the agent
    (``edit`` of the worktree), the work recorded, DONE, the slot released. Answers the
    WorkResult, or the StartConflict that kept it from starting."""
    from necrocode.dispatcher.config import WorkConfig
    from necrocode.dispatcher.models import TaskState
    from necrocode.dispatcher.repo_pool import StartConflict, finish_work, plan_start

    work = work or WorkConfig()
    task = registry.get_task(key)
    slot = pool.allocate_slot(task, plan_start(task, registry.get_tasks, work,
                                               from_base=from_base))
    if isinstance(slot, StartConflict) or slot is None:
        return slot
    running = registry.transition(key, TaskState.RUNNING, expected=TaskState.READY)
    try:
        edit(Path(slot.slot_path))
        result = finish_work(slot, running, summary, work)
        registry.transition(key, TaskState.DONE, expected=TaskState.RUNNING,
                            event=result.event(), **result.task_updates())
    finally:
        pool.release_slot(slot.slot_id)
    return result


def writer(files: dict[str, str]) -> Callable[[Path], None]:
    """An agent that writes ``files`` (and commits nothing: the Dispatcher does)."""

    def edit(worktree: Path) -> None:
        for name, text in files.items():
            (worktree / name).parent.mkdir(parents=True, exist_ok=True)
            (worktree / name).write_text(text)

    return edit
