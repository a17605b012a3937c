"""The real engine over real git for work-flow tests: DispatcherCore, a MemoryRegistry, a
RepoPoolManager and a FakeLauncher whose agents the test plays (edit the slot, then exit)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from necrocode.dispatcher.config import DispatcherConfig, WorkConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.launchers.fake import FakeLaunch, FakeLauncher
from necrocode.dispatcher.models import AgentPool, PoolType, Task, Taskset, TaskState
from necrocode.dispatcher.registry import MemoryRegistry, open_registry
from necrocode.dispatcher.registry.base import TaskRegistry
from necrocode.dispatcher.repo_pool import RepoPoolManager
from necrocode.dispatcher.snapshot import QueuedTaskView, RunningTaskView, Snapshot
from support import wait_until


def flow_config(tmp_path: Path, work: WorkConfig | None = None, **overrides: Any
                ) -> DispatcherConfig:
    pools = [AgentPool(name="local", type=PoolType.LOCAL_PROCESS,
                       max_concurrency=int(overrides.pop("concurrency", 4)),
                       config={"liveness": "log"})]
    base: dict[str, Any] = dict(
        registry_path=":memory:", state_dir=str(tmp_path / "state"), poll_interval=0.2,
        heartbeat_timeout=30.0, retry_max_attempts=2, retry_backoff_base=0.02,
        retry_jitter=0.0, api_enabled=False, runner_stop_grace=0.2, snapshot_max_rate=1000.0,
        agent_pools=pools, skill_mapping={"default": ["local"]}, work=work or WorkConfig())
    base.update(overrides)
    return DispatcherConfig(**base)


class Flow:
    """One started engine; ``run`` plays the agent of the next launch of a task."""

    def __init__(self, tmp_path: Path, origin: Path, *, work: WorkConfig | None = None,
                 slots_per_repo: int = 4, registry: TaskRegistry | None = None,
                 **overrides: Any) -> None:
        self.origin = origin
        self.launcher = FakeLauncher()
        self.config = flow_config(tmp_path, work, slots_per_repo=slots_per_repo, **overrides)
        path = self.config.registry_path
        self.registry: TaskRegistry = registry if registry is not None else (
            MemoryRegistry() if path in (None, ":memory:") else open_registry(path))
        self.core = DispatcherCore(self.config, registry=self.registry,
                                   launchers={PoolType.LOCAL_PROCESS: self.launcher})
        self.pool = RepoPoolManager(self.core.state_dir, slots_per_repo, fetch_interval=0)
        self.core.repo_pool = self.pool
        self.core.start()

    def submit(self, *tasks: tuple[str, list[str]] | Task, name: str = "flow") -> None:
        built = [t if isinstance(t, Task) else Task(id=t[0], title=f"task {t[0]}",
                                                    dependencies=list(t[1]))
                 for t in tasks]
        for t in built:
            t.taskset, t.repo = name, str(self.origin)
        self.core.submit(Taskset(name=name, repo=str(self.origin), tasks=built))

    def task(self, key: str) -> Task:
        return self.registry.get_task(key)

    def launch(self, key: str, count: int = 1, timeout: float = 15.0) -> FakeLaunch:
        """The ``count``-th launch of ``key`` (waited for)."""
        found = wait_until(lambda: len(self.launcher.launch_for(key)) >= count
                           and self.launcher.launch_for(key), timeout, f"launch {count} of {key}")
        return found[count - 1]

    def run(self, key: str, edit: Callable[[Path], None] | None = None, code: int = 0,
            count: int = 1) -> FakeLaunch:
        """Wait for the ``count``-th launch of ``key``, apply ``edit`` to its worktree (the
        agent's work) and end its runner with ``code``."""
        launch = self.launch(key, count)
        if edit is not None:
            edit(Path(launch.slot.slot_path))
        self.launcher.finish(launch.runner.runner_id, code)
        return launch

    def wait_state(self, key: str, *states: TaskState, timeout: float = 15.0) -> Task:
        return wait_until(lambda: (t := self.task(key)).state in states and t, timeout,
                          f"{key} in {[s.value for s in states]} (is {self.task(key).state})")

    def snapshot(self) -> Snapshot:
        return self.core.refresh_snapshot()

    def queued(self, key: str) -> QueuedTaskView | None:
        return next((q for q in self.snapshot().queued if q.key == key), None)

    def running(self, key: str) -> RunningTaskView | None:
        return next((r for r in self.snapshot().running if r.key == key), None)

    def idle(self) -> None:
        """Wait until nothing is launching, running, committing or releasing."""
        wait_until(lambda: not self.core.diagnose(lambda d: d.busy or d.runner_ids), 15,
                   "an idle engine")

    def close(self) -> None:
        if self.core.is_running:
            self.core.stop(timeout=1)
            self.registry.close()


def writer(files: dict[str, str]) -> Callable[[Path], None]:
    """An agent that writes ``files`` and commits nothing (the Dispatcher does)."""

    def edit(worktree: Path) -> None:
        for name, text in files.items():
            (worktree / name).parent.mkdir(parents=True, exist_ok=True)
            (worktree / name).write_text(text)

    return edit


def needs(previous: str, mine: str) -> Callable[[Path], None]:
    """An agent that fails (raises in the test) unless the previous task's file is there."""

    def edit(worktree: Path) -> None:
        text = (worktree / previous).read_text()
        (worktree / mine).write_text(text + mine + "\n")

    return edit


@dataclass
class GitGate:
    """A ``git`` on PATH that holds every ``git commit`` until :meth:`open` (or always, with
    ``hold_after``: after the commit). Real git does the work."""

    folder: Path

    @classmethod
    def install(cls, folder: Path, *, after: bool = False) -> GitGate:
        folder.mkdir(parents=True, exist_ok=True)
        shim = folder / "git"
        real = shutil.which("git") or "/usr/bin/git"  # looked up before the gate is on PATH
        hold = (f'touch "{folder}/entered"; echo $$ > "{folder}/pid"; '
                f'while [ ! -e "{folder}/open" ]; do sleep 0.02; done')
        body = (f'"{real}" "$@"; rc=$?; case " $* " in *" commit -q --no-verify "*) {hold};; '
                'esac; exit $rc') if after else (
            f'case " $* " in *" commit -q --no-verify "*) {hold};; esac; exec "{real}" "$@"')
        shim.write_text("#!/bin/sh\n" + body + "\n")
        shim.chmod(0o755)
        return cls(folder)

    @property
    def path_entry(self) -> str:
        return str(self.folder)

    def env_path(self) -> str:
        return self.path_entry + os.pathsep + os.environ.get("PATH", "")

    def entered(self) -> bool:
        return (self.folder / "entered").exists()

    def open(self) -> None:
        (self.folder / "open").touch()


@contextmanager
def gated_git(folder: Path, *, after: bool = False) -> Iterator[GitGate]:
    """A :class:`GitGate` on this process's PATH while the block runs (the Repo Pool reads
    its git environment once: it is read again on entry and on exit)."""
    from necrocode.dispatcher.repo_pool import git as repo_git

    gate = GitGate.install(folder, after=after)
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = gate.env_path()
    repo_git._git_env.cache_clear()
    try:
        yield gate
    finally:
        gate.open()
        os.environ["PATH"] = old
        repo_git._git_env.cache_clear()
