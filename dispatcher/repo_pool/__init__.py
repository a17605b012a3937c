"""Repo Pool Manager: workspace slots (git worktrees, scratch directories) for tasks, and the
work that flows through them: dependents start from their dependencies' work (:mod:`.start`),
a run's work is committed and recorded on its branch (:mod:`.work`)."""

from __future__ import annotations

from .git import RepoPoolError, branch_name, mirror_path
from .manager import RepoPoolManager
from .start import (
    DependencyWork,
    MergeConflict,
    StartConflict,
    StartPlan,
    StartPoint,
    dependency_work,
    plan_start,
)
from .work import WorkResult, WorkVerdict, finish_work

__all__ = ["DependencyWork", "MergeConflict", "RepoPoolError", "RepoPoolManager",
           "StartConflict", "StartPlan", "StartPoint", "WorkResult", "WorkVerdict", "branch_name",
           "dependency_work", "finish_work", "mirror_path", "plan_start"]
