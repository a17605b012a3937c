"""LocalProcessLauncher: Agent Runners as local processes, supervised directly.

Direct supervision (DESIGN.md "Agent Runner contract"): the agent runs in its own session and
process group, with stdout+stderr appended to the attempt's ``output.log``. No interpreter or
shell is started per task: the launcher's spawn server (:mod:`.spawn_server`, one small process
that outlives the Dispatcher) execs the agent's argv as is and writes its exit status into the
attempt directory (``exit_status.json``, one write of a whole JSON document) before it reaps
it, so a Dispatcher restarted after a crash still learns how an orphaned run ended. Where the
server is not available the Dispatcher starts the agent itself behind a one-line ``sh``
trampoline that records the status (:mod:`.local_start`); the argv reaches ``sh`` as positional
parameters (``"$@"``) and is never parsed by the shell, so task fields cannot inject commands.

Every attempt directory also gets ``runner.json`` (runner id, task, pid, start time, pgid, boot id)
from which :meth:`LocalProcessLauncher.reconcile` adopts live runners after a restart, refusing a
pid whose start time differs (a recycled pid).

A runner is its whole process tree (:mod:`.proctree`): where cgroup v2 is writable the agent
starts inside a cgroup of the runner's own, else the tree is found by the runner id in the
environment. :meth:`~LocalProcessLauncher.stop` is confirmed only once the whole tree is
gone, and :meth:`~LocalProcessLauncher.release` kills what is left of a finished one, so
grandchildren that called ``setsid`` never outlive their task. ``output.log`` is capped per
attempt with its tail kept (:mod:`.logwatch`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agents.base import USAGE_FILE
from ..errors import RunnerLaunchError
from ..models import AgentPool, Runner, RunnerState, Slot, Task
from . import procfs
from .base import (
    LaunchEnvironment,
    RunnerExit,
    RunnerLauncher,
    StopResult,
    agent_argv,
    agent_plan,
    attempt_dir,
    log_cap_for,
    new_runner_id,
)
from .local_files import (
    EXIT_FILE,
    LOG_FILE,
    RUNNER_FILE,
    read_exit_status,
    write_record,
)
from .local_start import AgentStarter
from .logwatch import LogCapper
from .proctree import ProcessTrees, Tree

logger = logging.getLogger(__name__)



def runner_id_for(task: Task, attempt: int) -> str:
    """The id the engine already recorded for this attempt (``task.runner_id``), else a new one.

    Using the recorded id means the registry and ``runner.json`` name the same runner even if the
    Dispatcher dies right after the launch, so a restart can adopt it.
    """
    rid = task.runner_id
    if rid and rid.startswith("r-") and f"-a{attempt}-" in rid:
        return rid
    return new_runner_id(task, attempt)


@dataclass
class _Tracked:
    runner_id: str
    pid: int
    pgid: int
    start_ticks: int | None
    adir: Path
    proc: subprocess.Popen[bytes] | None  # None: adopted after a restart, not our child
    exit: RunnerExit | None = None
    cgroup: str | None = None
    spawned: bool = False  # a child of the spawn server: its exit comes as a notice

    @property
    def tree(self) -> Tree:
        return Tree(self.runner_id, self.pgid, self.cgroup)


class LocalProcessLauncher(RunnerLauncher):
    """Runs agents as local processes in their own process group (pool type local-process).

    ``launch`` may be called from several threads at once (the spawn releases the GIL), so an
    engine can overlap launches; ``poll``/``stop``/``release`` of one runner from one thread.
    """

    def __init__(
        self,
        env: LaunchEnvironment,
        *,
        inherit_env: bool = True,
        extra_env: dict[str, str] | None = None,
        use_pidfd: bool = True,
        process_tree: str = "auto",
    ) -> None:
        super().__init__(env)
        self.trees = ProcessTrees(process_tree)
        self._logs = LogCapper()
        self._tracked: dict[str, _Tracked] = {}
        self._records: dict[str, dict[str, Any]] = {}
        self._exit_lock = threading.Lock()  # t.exit: the watcher's thread and stop()
        self._watcher = procfs.ExitWatcher(self._exited, use_pidfd=use_pidfd)
        self._boot_id = procfs.boot_id()
        self._early: dict[str, int] = {}  # exit notices that came before their launch ended
        self._starter = AgentStarter(
            env, self.trees, inherit_env=inherit_env, extra_env=extra_env,
            on_exit=self._spawned_exit, on_lost=self._spawner_lost,
            cgroup_home=self.trees.spawn_home(self),
        )

    @property
    def spawn_server_pid(self) -> int | None:
        """The pid of the spawn server that starts this launcher's agents (None: not started,
        gone, or not used: the agents are then started directly, behind a trampoline)."""
        return self._starter.server_pid

    # --- launch ------------------------------------------------------------------------------
    def launch(self, task: Task, slot: Slot, pool: AgentPool, *, attempt: int = 1) -> Runner:
        """Start the agent of ``task`` in ``slot``; raises RunnerLaunchError."""
        runner_id = runner_id_for(task, attempt)
        cwd = Path(slot.slot_path).absolute()  # the agent and the wrapper see absolute paths
        if str(cwd) != slot.slot_path:
            slot = Slot(slot.slot_id, str(cwd), slot.repo, slot.branch)
        adir = attempt_dir(self.env.runs_dir.absolute(), task, attempt)
        plan = agent_plan(task, slot, pool, attempt, self.env, agent_dir=str(adir),
                          environ={**os.environ, **self._starter.extra_env})
        argv = agent_argv(task, slot, pool, runner_id, attempt, plan=plan)
        if not cwd.is_dir():
            raise RunnerLaunchError(
                f"slot {slot.slot_id!r} of task {task.key!r}: directory {cwd} does not exist",
                pool=pool.name,
            )
        env = self._starter.child_env(task, slot, pool, runner_id, attempt, plan)
        self._starter.check_executable(argv, cwd, env.get("PATH", os.defpath), task, pool)
        try:
            try:
                os.mkdir(adir)
            except FileNotFoundError:
                os.makedirs(adir.parent, exist_ok=True)
                os.mkdir(adir)
            except FileExistsError:  # an earlier run of this attempt: drop its results
                for stale in (EXIT_FILE, RUNNER_FILE, EXIT_FILE + ".tmp", USAGE_FILE):
                    (adir / stale).unlink(missing_ok=True)
            if plan is not None:  # prompt.md, per-attempt config homes
                plan.write_files()
        except OSError as exc:
            raise RunnerLaunchError(f"cannot prepare attempt directory {adir}: {exc}",
                                    pool=pool.name) from exc
        log_path = adir / LOG_FILE
        cgroup = self.trees.prepare(runner_id)
        if cgroup is not None:
            env["NECROCODE_CGROUP"] = cgroup
        env["NECROCODE_ATTEMPT_DIR"] = str(adir)
        env["NECROCODE_EXIT_FILE"] = str(adir / EXIT_FILE)
        env["NECROCODE_LOG_PATH"] = str(log_path)
        # a wrapped agent (agent_runner) must be down before our own KILL of its wrapper
        env["NECROCODE_STOP_GRACE"] = f"{max(0.1, self.env.stop_grace / 2):g}"
        started_at = time.time()
        pid, proc = self._starter.start(task, pool, argv, cwd, env, adir, runner_id, cgroup)
        st = procfs.read_stat(pid)
        ticks = st.start_ticks if st else None
        record = {
            "runner_id": runner_id, "task_key": task.key, "pool": pool.name,
            "pid": pid, "pgid": pid, "start_ticks": ticks, "boot_id": self._boot_id,
            "started_at": started_at, "attempt": attempt, "slot_id": slot.slot_id,
            "slot_path": slot.slot_path, "log_path": str(log_path), "attempt_dir": str(adir),
            "cpu": task.resources.cpu, "memory_mb": task.resources.memory_mb,
            "cgroup": cgroup,
        }
        write_record(adir / RUNNER_FILE, record)
        tracked = _Tracked(runner_id, pid, pid, ticks, adir, proc, cgroup=cgroup,
                           spawned=proc is None)
        with self._exit_lock:
            self._tracked[runner_id] = tracked
            early = self._early.pop(runner_id, None)
        self._records[runner_id] = record
        if proc is not None:
            self._watcher.watch(runner_id, pid, proc)
        elif early is not None:  # it ended before we got here
            self._spawned_exit(runner_id, early)
        self._logs.watch(runner_id, str(log_path), log_cap_for(pool, self.env))
        logger.debug("launched %s for %s: pid %d in %s", runner_id, task.key, pid, cwd)
        return self._runner_from(record, RunnerState.RUNNING)

    # --- watch ------------------------------------------------------------------------------
    def poll(self, runner: Runner) -> RunnerExit | None:
        """None while the runner lives; its exit once it ended (reaps our own children)."""
        t = self._track(runner)
        if t is None:
            return RunnerExit(None, "unknown runner (no pid recorded)", time.time())
        if t.exit is not None:
            return t.exit
        if t.proc is not None:
            return self._reap_child(t)
        if t.spawned and self._starter.server_alive:
            return None  # the server's notice says when it ended
        recorded = read_exit_status(t.adir, t.runner_id)
        if recorded is not None:
            t.exit = recorded
        elif _still_there(t.pid, t.start_ticks):
            return None
        else:
            t.exit = read_exit_status(t.adir, t.runner_id) or RunnerExit(
                None, "ended without a recorded exit status (killed or lost)", time.time())
        return t.exit

    def stop(self, runner: Runner, grace: float | None = None) -> StopResult:
        """Fence: TERM the whole process tree, wait ``grace``, KILL; confirmed once the whole
        tree is gone (what left the process group too)."""
        t = self._track(runner)
        if t is None:
            return StopResult.gone(RunnerExit(None, "unknown runner (no pid recorded)",
                                              time.time()))
        grace = self.env.stop_grace if grace is None else grace
        ended = self.poll(runner)
        tree = self._tree(t)
        how = self.trees.kill(tree, grace, reap=lambda: self._reap(t))
        if how == "stuck":
            return StopResult.unconfirmed(
                f"processes of runner {t.runner_id} still there after SIGKILL: "
                f"{self.trees.members(tree)}")
        self.trees.forget(tree)
        if ended is not None:
            return StopResult.gone(ended)
        exit_ = self.poll(runner)
        reason = {"killed": f"killed (SIGKILL after {grace:g}s grace)",
                  "terminated": "stopped (SIGTERM)"}.get(how, "stopped")
        code = exit_.exit_code if exit_ is not None else None
        with self._exit_lock:
            t.exit = RunnerExit(code, reason, time.time())
        logger.info("stopped runner %s (pgid %d): %s", t.runner_id, t.pgid, reason)
        return StopResult.gone(t.exit)

    def _reap_child(self, t: _Tracked) -> RunnerExit | None:
        """The exit of a child of ours once it ended (reaped, its status read), else None.

        Called by the exit watcher's thread as soon as the child ends, so the engine thread
        finds the exit made; a concurrent call from the engine may see None while the watcher
        holds the child, and is woken again once the exit is set.
        """
        assert t.proc is not None
        rc = t.proc.poll()
        if rc is None:
            return None
        if t.exit is not None:
            return t.exit
        return self._ended(t, rc)

    def _ended(self, t: _Tracked, rc: int) -> RunnerExit:
        """The runner's exit from its return code (negative: a signal) and recorded status."""
        recorded = read_exit_status(t.adir, t.runner_id)
        if rc >= 0:
            exit_ = RunnerExit(rc, recorded.reason if recorded else "exited",
                               recorded.finished_at if recorded else time.time())
        elif recorded is not None:
            exit_ = recorded
        else:
            exit_ = RunnerExit(None, f"signal {-rc}", time.time())
        self.trees.forget_if_empty(t.tree)
        with self._exit_lock:  # a stop() may have said how it ended meanwhile
            if t.exit is None:
                t.exit = exit_
            return t.exit

    def _spawned_exit(self, runner_id: str, rc: int) -> None:
        """The spawn server's notice (its reader thread): the child's status is on disk and
        the child reaped."""
        with self._exit_lock:
            t = self._tracked.get(runner_id)
            if t is None:  # its launch has not registered it yet: it picks this up
                self._early[runner_id] = rc
                return
        if t.exit is None:
            self._ended(t, rc)
        self.env.on_exit(runner_id)

    def _spawner_lost(self) -> None:
        """The spawn server is gone: its children's exits are watched as adopted ones."""
        for t in list(self._tracked.values()):
            if t.spawned and t.exit is None:
                t.spawned = False
                self._watcher.watch(t.runner_id, t.pid)

    def _exited(self, runner_id: str) -> None:
        """The exit watcher's callback (its own thread): make the exit, then wake the engine."""
        t = self._tracked.get(runner_id)
        if t is not None and t.proc is not None and t.exit is None:
            self._reap_child(t)
        self.env.on_exit(runner_id)

    def _tree(self, t: _Tracked) -> Tree:
        """The runner's tree; without its group when the group's pid was recycled."""
        return t.tree if self._group_is_ours(t) else Tree(t.runner_id, -1, t.cgroup)

    @staticmethod
    def _group_is_ours(t: _Tracked) -> bool:
        """False when the group's leader pid now belongs to another process (recycled).

        A pid is only reused once no process has it as its pgid any more, so a leader pid held
        by a process with another start time means our group is empty: nothing to kill.
        """
        if t.proc is not None or t.start_ticks is None or t.pgid != t.pid:
            return True
        st = procfs.read_stat(t.pgid)
        return st is None or st.start_ticks == t.start_ticks

    @staticmethod
    def _reap(t: _Tracked) -> None:
        if t.proc is not None:
            t.proc.poll()

    def is_alive(self, runner: Runner) -> bool:
        return self.poll(runner) is None

    def release(self, runner: Runner) -> None:
        """Kill what is left of a finished runner's process tree (grandchildren that left its
        group too) and forget it."""
        t = self._tracked.get(runner.runner_id)
        if t is None:
            return
        self._logs.forget(runner.runner_id)
        if self.poll(runner) is not None:
            tree = self._tree(t)
            left = self.trees.members(tree)
            if left:
                logger.info("runner %s ended; killing what it left running: %s",
                            t.runner_id, left)
                self.trees.kill(tree, 0.0, reap=lambda: self._reap(t))
            self.trees.forget(tree)
        self._tracked.pop(runner.runner_id, None)

    def log_activity(self, runner: Runner) -> tuple[float, int] | None:
        """(mtime, size) of the runner's log; growth is a sign of life."""
        path = runner.log_path
        if path is None:
            t = self._tracked.get(runner.runner_id)
            path = str(t.adir / LOG_FILE) if t else None
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_mtime, st.st_size

    # --- restart -----------------------------------------------------------------------------
    def reconcile(self, pool: AgentPool) -> list[Runner]:
        """Live runners of ``pool`` left by an earlier Dispatcher (same pid AND start time)."""
        out: list[Runner] = []
        for path in sorted(self.env.runs_dir.glob(f"*/*/attempt-*/{RUNNER_FILE}")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(record, dict) or record.get("pool") != pool.name:
                continue
            rid = str(record.get("runner_id") or "")
            if not rid:
                continue
            self._records[rid] = record
            if rid in self._tracked:
                if self.poll(self._runner_from(record, RunnerState.RUNNING)) is None:
                    out.append(self._runner_from(record, RunnerState.RUNNING))
                continue
            if read_exit_status(path.parent, rid) is not None:
                continue
            if record.get("boot_id") and record.get("boot_id") != self._boot_id:
                continue
            pid, ticks = int(record.get("pid") or 0), record.get("start_ticks")
            if pid <= 0 or ticks is None or not procfs.same_process(pid, int(ticks)):
                continue
            cgroup = record.get("cgroup") if isinstance(record.get("cgroup"), str) else None
            self._tracked[rid] = _Tracked(rid, pid, int(record.get("pgid") or pid), int(ticks),
                                          path.parent, None, cgroup=cgroup)
            self._watcher.watch(rid, pid)
            log_path = record.get("log_path")
            if isinstance(log_path, str):
                self._logs.watch(rid, log_path, log_cap_for(pool, self.env))
            out.append(self._runner_from(record, RunnerState.RUNNING))
            logger.info("adopted runner %s of %s (pid %d)", rid, record.get("task_key"), pid)
        return out

    def recorded_exit(self, runner_id: str) -> RunnerExit | None:
        """How a runner seen by :meth:`reconcile` (or launched here) ended, if it recorded it."""
        record = self._records.get(runner_id)
        if record is None or not record.get("attempt_dir"):
            return None
        return read_exit_status(record["attempt_dir"], runner_id)

    def close(self) -> None:
        """Stop the exit watcher; running agents are left alone (they may be adopted later)."""
        self._watcher.close()
        self._logs.close()
        self._starter.close()
        self.trees.release_spawn_home(self)

    # --- helpers -----------------------------------------------------------------------------
    def _track(self, runner: Runner) -> _Tracked | None:
        t = self._tracked.get(runner.runner_id)
        if t is not None:
            return t
        handle = runner.handle or ""
        pid = runner.details.get("pid") or (int(handle) if handle.isdigit() else None)
        if not pid:
            return None
        if runner.attempt_dir:
            adir = Path(runner.attempt_dir)
        else:
            adir = Path(runner.log_path or ".").parent
        ticks = runner.details.get("start_ticks")
        cgroup = runner.details.get("cgroup")
        t = _Tracked(runner.runner_id, int(pid), int(runner.details.get("pgid") or pid),
                     int(ticks) if ticks is not None else None, adir, None,
                     cgroup=cgroup if isinstance(cgroup, str) else None)
        self._tracked[runner.runner_id] = t
        return t

    @staticmethod
    def _runner_from(record: dict[str, Any], state: RunnerState) -> Runner:
        return Runner(
            runner_id=str(record["runner_id"]),
            task_key=str(record.get("task_key") or ""),
            pool_name=str(record.get("pool") or ""),
            slot_id=record.get("slot_id"),
            slot_path=record.get("slot_path"),
            handle=str(record.get("pid")),
            state=state,
            started_at=float(record.get("started_at") or time.time()),
            attempt=int(record.get("attempt") or 1),
            log_path=record.get("log_path"),
            attempt_dir=record.get("attempt_dir"),
            cpu=float(record.get("cpu") or 0.0),
            memory_mb=int(record.get("memory_mb") or 0),
            details={"pid": record.get("pid"), "pgid": record.get("pgid"),
                     "start_ticks": record.get("start_ticks"), "boot_id": record.get("boot_id"),
                     "cgroup": record.get("cgroup")},
        )


def _still_there(pid: int, start_ticks: int | None) -> bool:
    """The process lives, or is a zombie its parent has not reaped yet: a spawn server writes
    the status of a child that ended before it reaps it, so its end is not known yet."""
    st = procfs.read_stat(pid)
    return st is not None and (start_ticks is None or st.start_ticks == start_ticks)
