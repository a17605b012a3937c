"""Where a task's branch starts: the base merged with its DONE dependencies' work (R21.2).

:func:`resolve_start` computes the start commit in the bare clone, without a worktree
(``git merge-tree --write-tree``, then ``commit-tree``): from the default branch, or from the
integration branch where dependencies have landed, each dependency's head is skipped when
already contained, fast-forwarded to when it contains the start, else merged. A conflict is an
answer, :class:`StartConflict` (which dependencies, which files), never an exception, and no
worktree is touched before the start is known.

:func:`dependency_work` reads the DONE dependencies of a task from the registry in dependency
order (a dependency of another dependency first, then as listed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import WorkConfig
from ..models import EventType, Task, TaskEvent, TaskState
from ..work_config import integration_branch
from .git import (
    RepoPoolError,
    changed_files,
    identity_env,
    is_ancestor,
    merge_tree,
    rev_parse,
    run_git,
)

logger = logging.getLogger(__name__)

DEFAULT_START = "refs/remotes/origin/HEAD"


@dataclass(frozen=True)
class DependencyWork:
    """The recorded work of one DONE dependency."""

    key: str
    head: str | None  # the recorded head (preferred: it cannot move)
    branch: str | None = None  # used when no head was recorded
    files_changed: tuple[str, ...] = ()

    @classmethod
    def of(cls, task: Task) -> DependencyWork:
        return cls(key=task.key, head=task.head, branch=task.branch or task.reserved_branch,
                   files_changed=task.files_changed)


@dataclass(frozen=True)
class StartPlan:
    """What a new branch should contain.

    ``dependencies`` in dependency order; ``integration_branch`` is used as the start when it
    already contains some of them; ``resume`` starts from a commit of the task's own (its
    previous work, sent back by a failed gate) measured against ``resume_base``;
    ``from_base`` is the operator's choice to ignore the dependencies' work.
    """

    dependencies: tuple[DependencyWork, ...] = ()
    integration_branch: str | None = None
    resume: str | None = None
    resume_base: str | None = None
    from_base: bool = False
    author: str = "NecroCode Dispatcher <dispatcher@necrocode.invalid>"


@dataclass(frozen=True)
class StartPoint:
    """Where the branch starts (``commit``) and what its work is measured against (``base``)."""

    commit: str
    base: str
    start_ref: str  # the ref the merges started from
    merged: tuple[str, ...] = ()  # dependency keys whose work the start contains


@dataclass(frozen=True)
class MergeConflict:
    """Dependencies (or a dependency and the start ref) whose work conflicts in ``files``."""

    dependencies: tuple[str, ...]
    files: tuple[str, ...]
    against: str | None = None  # the start ref, when no other dependency touched the files

    def text(self) -> str:
        files = _join(self.files[:5]) + (f" and {len(self.files) - 5} more"
                                         if len(self.files) > 5 else "")
        if self.against is not None:
            return f"dependency {self.dependencies[-1]} conflicts with {self.against} in {files}"
        return f"dependencies {_join(self.dependencies)} conflict in {files}"


@dataclass(frozen=True)
class StartConflict:
    """The task cannot start from its dependencies' work: it waits for the operator."""

    task_key: str
    conflicts: tuple[MergeConflict, ...]
    start_ref: str

    @property
    def reason(self) -> str:
        """The pending reason: ``dependencies flow/x and flow/y conflict in shared.txt``."""
        return "; ".join(c.text() for c in self.conflicts)

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f for c in self.conflicts for f in c.files))

    def event(self) -> TaskEvent:
        """The StartConflict event (the operator may retry after a fix, start from the base,
        or cancel)."""
        return TaskEvent(
            event_type=EventType.START_CONFLICT, task_key=self.task_key,
            message=f"{self.reason}; retry after a fix, start it from the base, or cancel it",
            details={"conflicts": [{"dependencies": list(c.dependencies), "files": list(c.files),
                                    "against": c.against} for c in self.conflicts],
                     "start": self.start_ref},
        )


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def dependency_work(task: Task, tasks: dict[str, Task]) -> tuple[DependencyWork, ...]:
    """The DONE dependencies of ``task`` (from ``tasks``, by key) in dependency order."""
    keys = [d if "/" in d else f"{task.taskset}/{d}" for d in task.dependencies]
    done = {k: tasks[k] for k in keys if k in tasks and tasks[k].state is TaskState.DONE}
    ordered: list[str] = []
    seen: set[str] = set()

    def visit(key: str, trail: frozenset[str]) -> None:
        if key in seen or key in trail:
            return
        dep = done[key]
        for sub in dep.dependencies:
            sub_key = sub if "/" in sub else f"{dep.taskset}/{sub}"
            if sub_key in done:
                visit(sub_key, trail | {key})
        seen.add(key)
        ordered.append(key)

    for key in keys:
        if key in done:
            visit(key, frozenset())
    return tuple(DependencyWork.of(done[k]) for k in ordered)


def plan_start(task: Task, get_tasks: Callable[[Iterable[str]], dict[str, Task]],
               work: WorkConfig, *, from_base: bool = False) -> StartPlan | None:
    """The StartPlan of ``task`` (``get_tasks``: the registry's, thread-safe), or None when
    it starts from the default branch (no dependencies, ``work.merge_dependencies`` off).

    A task sent back by a failed gate resumes from its own previous work.
    """
    resume = task.head if task.gate_failed and task.head else None
    if from_base:
        return StartPlan(from_base=True)
    if not resume and (not task.dependencies or not work.merge_dependencies):
        return None
    keys = [d if "/" in d else f"{task.taskset}/{d}" for d in task.dependencies]
    deps = dependency_work(task, get_tasks(keys)) if work.merge_dependencies else ()
    return StartPlan(dependencies=deps, integration_branch=integration_branch(work, task.taskset),
                     resume=resume, resume_base=task.base if resume else None,
                     author=work.commit_author)


def resolve_start(mirror: Path, task_key: str, plan: StartPlan | None,
                  default: str = DEFAULT_START) -> StartPoint | StartConflict:
    """The commit ``task_key``'s branch starts from, or why its dependencies do not merge."""
    git_dir = str(mirror)
    base = rev_parse(git_dir, default)
    if base is None:
        raise RepoPoolError(f"the clone {mirror} has no {default}; fetch the repository")
    if plan is None or plan.from_base:
        return StartPoint(commit=base, base=base, start_ref=default)
    deps = [(d, c) for d in plan.dependencies if (c := _commit_of(git_dir, d)) is not None]
    start_ref, current = default, base
    if plan.resume and rev_parse(git_dir, plan.resume):
        start_ref, current = "its previous work", plan.resume
    elif plan.integration_branch and deps:
        start_ref, current = _integration_start(git_dir, plan.integration_branch, deps,
                                                default, base)
    merged: list[str] = []
    merged_files: list[tuple[str, tuple[str, ...]]] = []
    conflicts: list[MergeConflict] = []
    env = identity_env(plan.author)
    for dep, commit in deps:
        if is_ancestor(git_dir, commit, current):
            merged.append(dep.key)
        elif is_ancestor(git_dir, current, commit):
            current = commit  # fast-forward: a chain stays linear
            merged.append(dep.key)
        else:
            tree, files = merge_tree(git_dir, current, commit)
            if tree is None:
                conflicts.append(_conflict(dep, files, merged_files, start_ref))
                continue
            message = f"Start {task_key} from the work of {dep.key}\n"
            current = run_git(["--git-dir", git_dir, "commit-tree", tree, "-p", current,
                               "-p", commit, "-F", "-"], input=message, env=env).stdout.strip()
            merged.append(dep.key)
        merged_files.append((dep.key, dep.files_changed or _files_of(git_dir, commit, base)))
    if conflicts:
        return StartConflict(task_key=task_key, conflicts=tuple(conflicts), start_ref=start_ref)
    work_base = plan.resume_base if plan.resume and start_ref == "its previous work" \
        and plan.resume_base else current
    return StartPoint(commit=current, base=work_base, start_ref=start_ref, merged=tuple(merged))


def _commit_of(git_dir: str, dep: DependencyWork) -> str | None:
    for ref in (dep.head, f"refs/heads/{dep.branch}" if dep.branch else None):
        if ref:
            commit = rev_parse(git_dir, ref)
            if commit is not None:
                return commit
    logger.warning("dependency %s has no recorded work in %s; its dependents start without it",
                   dep.key, git_dir)
    return None


def _integration_start(git_dir: str, branch: str, deps: Iterable[tuple[DependencyWork, str]],
                       default: str, base: str) -> tuple[str, str]:
    """The integration branch holding the most of the dependencies' work (local before the
    origin's), else the default start."""
    best: tuple[int, str, str] | None = None
    commits = [c for _, c in deps]
    for ref in (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"):
        tip = rev_parse(git_dir, ref)
        if tip is None:
            continue
        held = sum(1 for c in commits if is_ancestor(git_dir, c, tip))
        if held and (best is None or held > best[0]):
            best = (held, ref, tip)
    if best is None:
        return default, base
    return best[1].removeprefix("refs/heads/"), best[2]


def _files_of(git_dir: str, commit: str, base: str) -> tuple[str, ...]:
    fork = run_git(["--git-dir", git_dir, "merge-base", base, commit], check=False).stdout.strip()
    return changed_files(git_dir, fork or base, commit)


def _conflict(dep: DependencyWork, files: tuple[str, ...],
              merged: list[tuple[str, tuple[str, ...]]], start_ref: str) -> MergeConflict:
    touched = set(files)
    others = tuple(key for key, changed in merged if touched & set(changed))
    if others:
        return MergeConflict(dependencies=(*others, dep.key), files=files)
    against = "the default branch" if start_ref == DEFAULT_START else start_ref
    return MergeConflict(dependencies=(dep.key,), files=files, against=against)
