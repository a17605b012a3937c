"""Landing: DONE work merged into the integration branch, in dependency order (R21.3).

``necroui land TASKSET`` (and, through the engine, a console key and an API verb) walks the
taskset's DONE tasks in dependency order and merges each one's recorded head into the
integration branch (``work.integration_branch``, default ``necrocode/<taskset>``) of the
Dispatcher's clone of its repository, one merge commit per task. It is a merge queue: with a
check (``--check`` or ``work.land_check``) the merged tree is checked out in the landing
worktree and the check must pass before the branch moves; a failed gate leaves the branch as
it was and marks the task ``gate_failed`` with the check's output (``work.on_gate_failure:
retry`` sends it back to run again, resuming from its work, with that output). A task that
conflicts with the branch, or whose gate failed, holds back its dependents ("waits for …").
Landed tasks are marked (``landed``). ``push`` pushes the branch (and, as configured, the task
branches) to the repository's origin: for a local repository path, into that repository.

Everything works on the registry and the clone directly: no running Dispatcher is needed.
"""

from __future__ import annotations

import enum
import logging
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import WorkConfig
from .graph import natural_key
from .land_gate import Gate, LandError, LandingWorktree, LocalGate, land_lock
from .models import EventType, Task, TaskEvent, TaskState
from .repo_pool.git import (
    identity_env,
    is_ancestor,
    merge_tree,
    mirror_path,
    normalize_repo,
    redact,
    rev_parse,
    run_git,
    workspaces_dir,
)
from .work_config import integration_branch, valid_branch_name

logger = logging.getLogger(__name__)

_ZERO = "0" * 40


class LandKind(str, enum.Enum):
    """What landing did with one task."""

    LANDED = "landed"
    ALREADY = "already in"  # its work was in the branch already (marked landed)
    CONFLICT = "conflict"
    GATE_FAILED = "gate failed"
    SENT_BACK = "sent back"  # gate failed; it runs again with the check's output
    WAITING = "waits"  # a dependency did not land
    NO_WORK = "no work"  # nothing recorded to land


FAILED = frozenset({LandKind.CONFLICT, LandKind.GATE_FAILED, LandKind.SENT_BACK})
HOLDS_BACK = FAILED | {LandKind.WAITING}


@dataclass(frozen=True)
class LandOutcome:
    """One task's line of the landing report."""

    key: str
    kind: LandKind
    message: str
    commit: str | None = None  # the branch head after it landed
    files: tuple[str, ...] = ()  # conflicting files
    output: str = ""  # the check's output


@dataclass(frozen=True)
class RepoLanding:
    """The integration branch of one repository after the landing."""

    repo: str
    branch: str
    head: str | None
    pushed: tuple[str, ...] = ()  # refs pushed to the origin


@dataclass(frozen=True)
class LandRequest:
    """What to land: ``check`` None takes ``work.land_check``; an empty tuple: no check."""

    taskset: str
    into: str | None = None
    check: tuple[str, ...] | None = None
    push: bool = False
    push_task_branches: bool | None = None  # None: work.push_task_branches


@dataclass(frozen=True)
class LandReport:
    """What a landing did, per task (dependency order) and per repository."""

    taskset: str
    branch: str
    check: tuple[str, ...]
    outcomes: tuple[LandOutcome, ...]
    repos: tuple[RepoLanding, ...]
    push_errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Nothing conflicted, no gate failed, every push went through."""
        return not self.push_errors and not any(o.kind in FAILED for o in self.outcomes)

    def count(self, kind: LandKind) -> int:
        return sum(1 for o in self.outcomes if o.kind is kind)

    @property
    def summary(self) -> str:
        """``2 landed, 1 gate failed, 1 waits`` (and the refused pushes)."""
        counts = [f"{self.count(k)} {k.value}" for k in LandKind if self.count(k)]
        if self.push_errors:
            counts.append(f"{len(self.push_errors)} push(es) refused")
        return ", ".join(counts) or "nothing to land"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LandReport:
        """The report as the API answers it (``Snapshot.landings``)."""
        return cls(
            taskset=str(data["taskset"]), branch=str(data["branch"]),
            check=tuple(data.get("check") or ()),
            outcomes=tuple(LandOutcome(key=o["key"], kind=LandKind(o["kind"]),
                                       message=o.get("message", ""), commit=o.get("commit"),
                                       files=tuple(o.get("files") or ()),
                                       output=o.get("output") or "")
                           for o in data.get("outcomes") or ()),
            repos=tuple(RepoLanding(repo=r["repo"], branch=r["branch"], head=r.get("head"),
                                    pushed=tuple(r.get("pushed") or ()))
                        for r in data.get("repos") or ()),
            push_errors=tuple(data.get("push_errors") or ()))


@dataclass
class _Repo:
    mirror: Path
    old: str | None  # the local branch head before the landing (None: no branch yet)
    tip: str
    tasks: list[Task] = field(default_factory=list)


class Lander:
    """Lands tasksets: the registry (thread-safe) and the Repo Pool's clones under
    ``state_dir``; the check runs through ``gate``."""

    def __init__(self, registry: Any, state_dir: str | Path, work: WorkConfig | None = None,
                 gate: Gate | None = None) -> None:
        self.registry = registry
        self.state_dir = Path(state_dir)
        self.work = work or WorkConfig()
        self.gate = gate or LocalGate()

    def land(self, request: LandRequest) -> LandReport:
        """Land ``request.taskset``; LandError (nothing changed) for what cannot run at all."""
        name = request.taskset
        tasks = self.registry.list_tasks(taskset=name)
        if not tasks:
            raise LandError(f"taskset {name!r} has no tasks in the registry; "
                            "`necroui tasks` lists the tasksets' tasks")
        into = request.into or integration_branch(self.work, name)
        if not valid_branch_name(into):
            raise LandError(f"{into!r} is not a valid branch name; give --into e.g. "
                            f"necrocode/{name}")
        check = tuple(request.check if request.check is not None
                      else self.work.land_check or ())
        if check and not (shutil.which(check[0]) or Path(check[0]).is_file()):
            raise LandError(f"check command {check[0]!r} not found; give its path, or a "
                            "command on PATH (it runs without a shell)")
        done = _dependency_order([t for t in tasks if t.state is TaskState.DONE])
        if not done:
            raise LandError(f"nothing to land: no task of {name!r} is DONE")
        repos = self._repos(done)
        outcomes: dict[str, LandOutcome] = {}
        with ExitStack() as stack:
            for repo in repos.values():
                stack.enter_context(land_lock(repo.mirror))
            for task in done:
                outcomes[task.key] = self._land_one(task, repos, into, check, outcomes, tasks)
            landings, errors = self._finish(repos, into, request)
        return LandReport(taskset=name, branch=into, check=check,
                          outcomes=tuple(outcomes[t.key] for t in done), repos=landings,
                          push_errors=errors)

    # --- per repository ------------------------------------------------------------------------
    def _repos(self, done: list[Task]) -> dict[str, _Repo]:
        out: dict[str, _Repo] = {}
        for task in done:
            if not task.repo or not task.head:
                continue
            norm = normalize_repo(task.repo)
            if norm not in out:
                mirror = mirror_path(self.state_dir, norm)
                if not (mirror / "HEAD").is_file():
                    continue  # reported per task: no clone
                _fetch(mirror)
                out[norm] = _Repo(mirror, None, "")
            out[norm].tasks.append(task)
        return out

    def _start_tip(self, repo: _Repo, into: str) -> None:
        git_dir = repo.mirror
        local = rev_parse(git_dir, f"refs/heads/{into}")
        remote = rev_parse(git_dir, f"refs/remotes/origin/{into}")
        repo.old = local
        if local and remote and local != remote and is_ancestor(git_dir, local, remote):
            local = remote  # the origin's branch moved on (a resolution landed there)
        tip = local or remote or rev_parse(git_dir, "refs/remotes/origin/HEAD")
        if tip is None:
            raise LandError(f"the clone {git_dir} has no default branch; fetch the repository")
        repo.tip = tip

    # --- per task -----------------------------------------------------------------------------
    def _land_one(self, task: Task, repos: dict[str, _Repo], into: str, check: tuple[str, ...],
                  outcomes: dict[str, LandOutcome], every: list[Task]) -> LandOutcome:
        key = task.key
        held = [d for d in _dep_keys(task) if d in outcomes and outcomes[d].kind in HOLDS_BACK]
        if held:
            return LandOutcome(key, LandKind.WAITING, f"waits for {', '.join(held)} to land")
        if not task.repo or not task.head:
            return LandOutcome(key, LandKind.NO_WORK, "no recorded work (it ran without a "
                               "repository, or before its work was recorded)")
        repo = repos.get(normalize_repo(task.repo))
        if repo is None:
            where = workspaces_dir(self.state_dir)
            return LandOutcome(key, LandKind.NO_WORK,
                               f"no clone of {redact(task.repo)} under {where}; did it run with "
                               "this state_dir?")
        if not repo.tip:
            self._start_tip(repo, into)
        git_dir = repo.mirror
        if rev_parse(git_dir, task.head) is None:
            return LandOutcome(key, LandKind.NO_WORK,
                               f"its head {task.head[:12]} is not in the clone {git_dir}")
        if is_ancestor(git_dir, task.head, repo.tip):
            self._mark_landed(task, into, repo.tip, already=True)
            return LandOutcome(key, LandKind.ALREADY, f"already in {into}", commit=repo.tip)
        tree, files = merge_tree(git_dir, repo.tip, task.head)
        if tree is None:
            shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5
                                            else "")
            message = f"conflicts with {into} in {shown}"
            self.registry.record_event(TaskEvent(
                EventType.LAND_CONFLICT, key, message=message,
                details={"branch": into, "files": list(files[:200]), "head": task.head}))
            return LandOutcome(key, LandKind.CONFLICT, message, files=files)
        merge = self._merge_commit(git_dir, tree, repo.tip, task, into)
        if check:
            worktree = LandingWorktree(git_dir).checkout(merge)
            result = self.gate.run(worktree, check, {"NECROCODE_LAND_TASK": key,
                                                     "NECROCODE_LAND_BRANCH": into},
                                   float(self.work.gate_timeout))
            if not result.ok:
                return self._gate_failed(task, every, check, result.describe(check),
                                         result.output, into)
        old = repo.old if repo.old is not None else _ZERO
        run_git(["--git-dir", str(git_dir), "update-ref", f"refs/heads/{into}", merge, old])
        repo.old = repo.tip = merge
        self._mark_landed(task, into, merge, already=False)
        commits = f"{task.commits} commit{'s' if task.commits != 1 else ''}"
        return LandOutcome(key, LandKind.LANDED, f"{commits} from {task.branch or task.head[:12]}",
                           commit=merge)

    def _merge_commit(self, git_dir: Path, tree: str, tip: str, task: Task, into: str) -> str:
        message = f"Land {task.key}: {task.title or task.key}\n\nFrom {task.branch or '?'} " \
                  f"({task.head}) into {into}.\n"
        return run_git(["--git-dir", str(git_dir), "commit-tree", tree, "-p", tip, "-p",
                        str(task.head), "-F", "-"], input=message,
                       env=identity_env(self.work.commit_author)).stdout.strip()

    def _mark_landed(self, task: Task, into: str, commit: str, *, already: bool) -> None:
        if task.landed == into and not task.gate_failed:
            return
        how = "was already in" if already else "landed in"
        self.registry.update_task(task.key, landed=into, gate_failed=None, event=TaskEvent(
            EventType.TASK_LANDED, task.key, message=f"{how} {into} ({commit[:12]})",
            details={"branch": into, "commit": commit, "head": task.head}))

    def _gate_failed(self, task: Task, every: list[Task], check: tuple[str, ...], what: str,
                     output: str, into: str) -> LandOutcome:
        key = task.key
        text = f"{what}\n{output}".strip()
        self.registry.update_task(key, gate_failed=text, event=TaskEvent(
            EventType.GATE_FAILED, key, message=f"{what}; {into} left unchanged",
            details={"branch": into, "check": list(check), "output": output}))
        if self.work.on_gate_failure != "retry":
            return LandOutcome(key, LandKind.GATE_FAILED, what, output=output)
        dependents = [t for t in every if key in _dep_keys(t)]
        built = [t.key for t in dependents if t.state in (TaskState.RUNNING, TaskState.DONE)]
        if built:
            return LandOutcome(key, LandKind.GATE_FAILED,
                               f"{what}; not sent back: {', '.join(built)} already built on "
                               "its work", output=output)
        for dep in dependents:
            if dep.state is TaskState.READY:
                self.registry.transition(dep.key, TaskState.BLOCKED, expected=TaskState.READY,
                                         event=TaskEvent(EventType.TASK_BLOCKED, dep.key,
                                                         message=f"waits for {key}: sent back "
                                                                 "by the land gate"))
        self.registry.transition(key, TaskState.READY, expected=TaskState.DONE,
                                 gate_failed=text, last_error=f"gate failed: {what}",
                                 event=TaskEvent(EventType.TASK_RETRIED, key,
                                                 message=f"sent back by the land gate: {what}"))
        return LandOutcome(key, LandKind.SENT_BACK, f"{what}; sent back to run again",
                           output=output)

    # --- push ---------------------------------------------------------------------------------
    def _finish(self, repos: dict[str, _Repo], into: str,
                request: LandRequest) -> tuple[tuple[RepoLanding, ...], tuple[str, ...]]:
        branches = (request.push_task_branches if request.push_task_branches is not None
                    else self.work.push_task_branches)
        landings: list[RepoLanding] = []
        errors: list[str] = []
        for norm, repo in repos.items():
            head = rev_parse(repo.mirror, f"refs/heads/{into}")
            refs: list[str] = []
            if request.push and head is not None:
                refs.append(f"refs/heads/{into}:refs/heads/{into}")
            if request.push and branches:
                refs += [f"+refs/heads/{t.branch}:refs/heads/{t.branch}" for t in repo.tasks
                         if t.branch and rev_parse(repo.mirror, f"refs/heads/{t.branch}")]
            pushed: tuple[str, ...] = ()
            if refs:
                proc = run_git(["--git-dir", str(repo.mirror), "push", "-q", "--porcelain",
                                "origin", *refs], check=False)
                if proc.returncode != 0:
                    errors.append(_push_error(norm, proc.stdout, proc.stderr))
                else:
                    pushed = tuple(r.lstrip("+").split(":", 1)[1] for r in refs)
                    _fetch(repo.mirror)
            landings.append(RepoLanding(norm, into, head, pushed))
        return tuple(landings), tuple(errors)


def _push_error(repo: str, stdout: str, stderr: str) -> str:
    """``push to REPO failed: refs/heads/x rejected (fetch first)`` and what to do."""
    refused = [line.split("\t") for line in stdout.splitlines() if line.startswith("!")]
    if refused:
        what = "; ".join(f"{parts[1].split(':')[-1]} {parts[2].strip()}" for parts in refused
                         if len(parts) >= 3)
        return redact(f"push to {repo} failed: {what}; the origin has commits the Dispatcher's "
                      "branch lacks: merge them there, or land with --into another branch")
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("hint:")]
    return redact(f"push to {repo} failed: {' '.join(lines) or stdout.strip()}")


def _fetch(mirror: Path) -> None:
    proc = run_git(["--git-dir", str(mirror), "fetch", "-q", "--prune", "origin"], check=False)
    if proc.returncode != 0:
        logger.warning("fetch into %s failed, landing on the last fetched state: %s", mirror,
                       redact(proc.stderr.strip()))


def _dep_keys(task: Task) -> list[str]:
    return [d if "/" in d else f"{task.taskset}/{d}" for d in task.dependencies]


def _dependency_order(tasks: Sequence[Task]) -> list[Task]:
    """Dependencies before dependents; otherwise in natural key order (``2`` before ``10``)."""
    by_key = {t.key: t for t in tasks}
    ordered: list[Task] = []
    seen: set[str] = set()

    def visit(task: Task, trail: frozenset[str]) -> None:
        if task.key in seen or task.key in trail:
            return
        for dep in sorted(_dep_keys(task), key=natural_key):
            if dep in by_key:
                visit(by_key[dep], trail | {task.key})
        seen.add(task.key)
        ordered.append(task)

    for task in sorted(tasks, key=lambda t: natural_key(t.key)):
        visit(task, frozenset())
    return ordered
