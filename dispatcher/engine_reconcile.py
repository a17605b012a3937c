"""Restart: RUNNING tasks of the registry are matched to live runners or settled.

On start (before the engine thread runs) every RUNNING task is matched by runner id to the runners
its pool's launcher still finds alive on the platform (local: pid plus start time; containers and
Jobs: labels). A match is adopted: slot marked in use, pool capacity acquired, RunnerAdopted
event. A task whose runner is gone is judged from the attempt's ``exit_status.json`` (exit 0 ->
DONE; otherwise a failed attempt) or, without one, put back to READY without spending an attempt.
Live runners that no RUNNING task claims are stopped, and slots held by nobody are released, so
a task never runs twice at the same time and no slot leaks across restarts.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from .engine.runner_table import RunnerRecord
from .engine_runners import RunnerMixin, run_number_of
from .launchers.base import RunnerLauncher, attempt_dir
from .launchers.procfs import kill_group
from .logging_setup import log_extra
from .models import AgentPool, EventType, Runner, RunnerState, Slot, Task, TaskEvent, TaskState

logger = logging.getLogger(__name__)

EXIT_STATUS_FILE = "exit_status.json"


class ReconcileMixin(RunnerMixin):
    """Adoption after a restart (mixed into DispatcherCore)."""

    def _reconcile(self) -> None:
        """Match RUNNING tasks to live runners (adopt) or settle them from their exit status."""
        running = self.registry.list_tasks(state=TaskState.RUNNING)
        alive: dict[str, tuple[Runner, RunnerLauncher, AgentPool]] = {}
        pools = {p.name: p for p in self.pool_manager.pools.values()}
        for pool in pools.values():
            launcher = self._launcher_for(pool)
            if launcher is None:
                continue
            try:
                found = launcher.reconcile(pool)
            except Exception as exc:  # an unreachable platform: one line, pool unhealthy
                self._platform_failed(pool, exc)
                continue
            for runner in found:
                owner = pools.get(runner.pool_name, pool)
                alive.setdefault(runner.runner_id, (runner, launcher, owner))
        unmatched = []
        for task in running:
            match = alive.pop(task.runner_id, None) if task.runner_id else None
            if match is not None:
                self._adopt(task, *match)
            else:
                unmatched.append(task)
        stopped: set[str] = set()
        if unmatched:
            stopped = self._fence_untracked({t.runner_id for t in unmatched
                                             if t.runner_id and self._read_exit_status(t) is None})
        for task in unmatched:
            self._settle_orphaned_task(task, stopped=task.runner_id in stopped)
        for runner, launcher, _pool in alive.values():
            logger.warning("runner %s (%s) has no RUNNING task; stopping it", runner.runner_id,
                           runner.task_key, extra=log_extra(task=runner.task_key,
                                                            runner=runner.runner_id,
                                                            pool=runner.pool_name))
            try:
                answer = launcher.stop(runner, self.config.runner_stop_grace)
                if answer.confirmed:
                    launcher.release(runner)
                else:
                    logger.warning("stop of orphan runner %s not confirmed: %s",
                                   runner.runner_id, answer.reason,
                                   extra=log_extra(task=runner.task_key,
                                                   runner=runner.runner_id))
            except Exception:
                logger.exception("could not stop orphan runner %s", runner.runner_id,
                                 extra=log_extra(task=runner.task_key,
                                                 runner=runner.runner_id))
        self._release_leaked_slots()

    def _release_leaked_slots(self) -> None:
        """Slots recorded in use by tasks that no live runner of ours serves (a crash between
        slot allocation and launch, or a runner that ended while we were down)."""
        try:
            held = dict(self.repo_pool.assignments())
        except Exception:
            logger.debug("slot assignments unavailable", exc_info=True)
            return
        for slot_id, key in held.items():
            if not self._has_runner(key):
                logger.info("releasing slot %s held by %s from an earlier run", slot_id, key,
                            extra=log_extra(task=key))
                self.repo_pool.release_slot(slot_id)

    def _adopt(self, task: Task, runner: Runner, launcher: RunnerLauncher,
               pool: AgentPool) -> None:
        now = time.time()
        slot_id = task.assigned_slot or runner.slot_id
        slot = Slot(slot_id=slot_id or "", slot_path=runner.slot_path or "",
                    branch=task.reserved_branch) if slot_id else None
        if slot_id:
            try:
                self.repo_pool.mark_in_use(slot_id, task.key)
            except Exception:
                logger.exception("slot %s of %s could not be marked in use", slot_id, task.key,
                                 extra=log_extra(task=task.key, runner=runner.runner_id,
                                                 pool=pool))
        self._admission.take(pool.name, task)
        runner.state = RunnerState.RUNNING
        rec = RunnerRecord(runner=runner, task=task, pool=pool, launcher=launcher, slot=slot,
                           started_at=runner.started_at or now, last_sign=now,
                           attempt=run_number_of(task), adopted=True)
        self._runners.add(rec, last_seen=now)
        self._note_task(task)
        self._event_log.record(TaskEvent(
            event_type=EventType.RUNNER_ADOPTED, task_key=task.key,
            message=f"runner {runner.runner_id} ({runner.handle}) adopted after restart",
            runner_id=runner.runner_id, slot_id=slot_id, pool=pool.name,
        ))

    def _fence_untracked(self, runner_ids: set[str]) -> set[str]:
        """Stop local processes of runners that cannot be adopted (the dispatcher died after
        starting them but before their runner record was written): found by their
        ``NECROCODE_RUNNER_ID``, their process group is stopped before the task is requeued."""
        if not runner_ids:
            return set()
        groups: dict[int, str] = {}
        for pid, rid in _processes_of(runner_ids).items():
            try:
                groups.setdefault(os.getpgid(pid), rid)
            except OSError:
                continue
        for pgid, rid in groups.items():
            if pgid in (os.getpgrp(), 0, 1):
                continue
            logger.warning("runner %s (process group %d) runs without a runner record; "
                           "stopping it before its task is requeued", rid, pgid,
                           extra=log_extra(runner=rid))
            kill_group(pgid, self.config.runner_stop_grace)
        return set(groups.values())

    def _settle_orphaned_task(self, task: Task, *, stopped: bool = False) -> None:
        """A RUNNING task whose runner is gone: its exit status decides, else requeue
        (``stopped``: we just stopped its unrecorded runner, so the status is ours, not its)."""
        now = time.time()
        status = None if stopped else self._read_exit_status(task)
        if task.assigned_slot:
            try:
                self.repo_pool.release_slot(task.assigned_slot)
            except Exception:
                logger.debug("slot %s release at reconcile", task.assigned_slot, exc_info=True,
                             extra=log_extra(task=task.key))
        code = status.get("exit_code") if status else None
        common: dict[str, Any] = {"task_key": task.key, "runner_id": task.runner_id,
                                  "slot_id": task.assigned_slot}
        if status is not None and code == 0:
            event = TaskEvent(event_type=EventType.RUNNER_COMPLETED,
                              message="runner finished while the dispatcher was down (exit 0)",
                              details={"exit_code": 0, "recovered": True}, **common)
            self._settler.settle(task.key, TaskState.DONE, event, finished_at=now,
                                 next_attempt_at=None)
            return
        if status is not None:
            code_i = int(code) if isinstance(code, int | float) else None
            self._event_log.record(TaskEvent(
                event_type=EventType.RUNNER_FAILED,
                message=f"runner ended while the dispatcher was down (exit {code_i})",
                details={"exit_code": code_i, "recovered": True}, **common))
            self._settler.attempt_failed(task, TaskState.RUNNING, code_i,
                                 "exit_code" if code_i else "killed", f"exit code {code_i}")
            return
        event = TaskEvent(event_type=EventType.TASK_REQUEUED,
                          message="runner gone after a dispatcher restart, no exit status: "
                                  "back to READY (no attempt spent)", **common)
        self._settler.settle(task.key, TaskState.READY, event, runner_id=None, next_attempt_at=None)

    def _read_exit_status(self, task: Task) -> dict[str, Any] | None:
        path = attempt_dir(self.runs_dir, task, run_number_of(task)) / EXIT_STATUS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        if "exit_code" not in data and "returncode" in data:
            data["exit_code"] = data["returncode"]
        if data.get("runner_id") and task.runner_id and data["runner_id"] != task.runner_id:
            return None  # a different run of the same attempt number
        return data


def _processes_of(runner_ids: set[str]) -> dict[int, str]:
    """Local processes whose environment names one of ``runner_ids`` (pid -> runner id)."""
    wanted = {f"NECROCODE_RUNNER_ID={rid}".encode(): rid for rid in runner_ids}
    found: dict[int, str] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        for item in env.split(b"\0"):
            if item.startswith(b"NECROCODE_RUNNER_ID="):
                rid = wanted.get(item)
                if rid is not None:
                    found[int(entry)] = rid
                break
    return found
