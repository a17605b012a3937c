"""AgentStarter: how the local launcher starts an agent's process (see :mod:`.local`).

Through the launcher's spawn server (:mod:`.spawner`): one exec per task, the status recorded
by the server. Without one (it could not start, it has gone, or ``NECROCODE_SPAWNER=direct``):
as a child of the Dispatcher behind the ``sh`` trampoline, which records the status itself. It
also builds the agent's environment and checks that its command can be run, with a clear error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from ..agents.base import AgentInvocation
from ..errors import RunnerLaunchError
from ..models import AgentPool, Slot, Task
from .base import LaunchEnvironment, runner_env
from .local_files import EXIT_FILE, LOG_FILE, TRAMPOLINE
from .proctree import ProcessTrees, Tree
from .spawner import Spawner, SpawnError, spawner_enabled

__all__ = ["SPAWN_LOG", "AgentStarter"]

#: The spawn server's own messages (a traceback if it ever failed), in the runs folder.
SPAWN_LOG = "spawn-server.log"

# Inherited variables that must not leak into a runner (the Dispatcher's own contract names).
_DROP_PREFIXES = ("NECROCODE_", "RUNNER_")
_DROP_NAMES = frozenset({"TASK_CONTEXT", "POOL_NAME"})


class AgentStarter:
    """Starts agents for one local launcher; ``start`` may be called from several threads."""

    def __init__(self, env: LaunchEnvironment, trees: ProcessTrees, *, inherit_env: bool,
                 extra_env: dict[str, str] | None, on_exit: Callable[[str, int], None],
                 on_lost: Callable[[], None], cgroup_home: str | None) -> None:
        self.env = env
        self.trees = trees
        self.inherit_env = inherit_env
        self.extra_env = dict(extra_env or {})
        self._found: set[tuple[str, str]] = set()
        self._spawner = Spawner(on_exit, on_lost=on_lost, cgroup_home=cgroup_home,
                                log_path=env.runs_dir / SPAWN_LOG) if spawner_enabled() else None

    @property
    def server_alive(self) -> bool:
        """The spawn server is in use (exits come as its notices)."""
        return self._spawner is not None and self._spawner.alive

    @property
    def server_pid(self) -> int | None:
        sp = self._spawner
        return sp.pid if sp is not None and sp.alive else None

    def start(self, task: Task, pool: AgentPool, argv: list[str], cwd: Path,
              env: dict[str, str], adir: Path, runner_id: str,
              cgroup: str | None) -> tuple[int, subprocess.Popen[bytes] | None]:
        """Start the agent: its pid, and its Popen when it is our own child (no server)."""
        pid = self._spawn(task, pool, argv, cwd, env, adir, runner_id, cgroup)
        if pid is not None:
            return pid, None
        proc = self._start_direct(task, pool, argv, cwd, env, adir / LOG_FILE, runner_id, cgroup)
        return proc.pid, proc

    def close(self) -> None:
        if self._spawner is not None:
            self._spawner.close()

    def _spawn(self, task: Task, pool: AgentPool, argv: list[str], cwd: Path,
               env: dict[str, str], adir: Path, runner_id: str, cgroup: str | None) -> int | None:
        """Start the agent through the spawn server; its pid, or None without a server."""
        spawner = self._spawner
        if spawner is None or not spawner.alive:
            return None
        try:
            return spawner.spawn({
                "argv": argv, "cwd": str(cwd), "env": env, "log": str(adir / LOG_FILE),
                "exit_file": str(adir / EXIT_FILE), "runner_id": runner_id, "cgroup": cgroup,
            })
        except SpawnError as exc:
            if not spawner.alive:  # the server is gone: start this one ourselves
                return None
            self.trees.forget(Tree(runner_id, 0, cgroup))
            raise RunnerLaunchError(f"cannot start task {task.key!r} in pool {pool.name!r}: "
                                    f"{exc}", pool=pool.name) from exc

    def _start_direct(self, task: Task, pool: AgentPool, argv: list[str], cwd: Path,
                      env: dict[str, str], log_path: Path, runner_id: str,
                      cgroup: str | None) -> subprocess.Popen[bytes]:
        try:
            with open(log_path, "ab") as log:
                if log.tell() > 0:  # an earlier run of this attempt (requeued at shutdown)
                    log.write(f"\n--- necrocode: runner {runner_id} started ---\n".encode())
                    log.flush()
                return subprocess.Popen(
                    ["/bin/sh", "-c", TRAMPOLINE, "necrocode-runner", *argv],
                    cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                )
        except OSError as exc:
            self.trees.forget(Tree(runner_id, 0, cgroup))
            raise RunnerLaunchError(f"cannot start task {task.key!r} in pool {pool.name!r}: "
                                    f"{exc}", pool=pool.name) from exc

    def child_env(
        self, task: Task, slot: Slot, pool: AgentPool, runner_id: str, attempt: int,
        plan: AgentInvocation | None = None,
    ) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.inherit_env:
            env = {
                k: v for k, v in os.environ.items()
                if not k.startswith(_DROP_PREFIXES) and k not in _DROP_NAMES
            }
        else:
            env["PATH"] = os.environ.get("PATH", os.defpath)
        env.update(self.extra_env)
        env.update(runner_env(task, slot, pool, runner_id, attempt, self.env, plan=plan))
        return env

    def check_executable(
        self, argv: list[str], cwd: Path, path: str, task: Task, pool: AgentPool
    ) -> None:
        if not argv or not argv[0]:
            raise RunnerLaunchError(f"task {task.key!r}: empty command", pool=pool.name,
                                    retryable=False)
        prog = argv[0]
        if "/" in prog:
            target = cwd / prog
            ok = target.is_file() and os.access(target, os.X_OK)
        elif (prog, path) in self._found:  # positive lookups only: a new install is seen
            ok = True
        else:
            ok = shutil.which(prog, path=path) is not None
            if ok:
                self._found.add((prog, path))
        if not ok:
            raise RunnerLaunchError(
                f"task {task.key!r}: command {prog!r} not found or not executable "
                f"(cwd {cwd}); fix `command:` of the task or `agent_command:` of pool "
                f"{pool.name!r}", pool=pool.name, retryable=False,
            )

