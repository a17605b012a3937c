"""Repo Pool Manager: workspace slots (git worktrees, scratch directories) for tasks."""

from __future__ import annotations

from .git import RepoPoolError, branch_name
from .manager import RepoPoolManager

__all__ = ["RepoPoolError", "RepoPoolManager", "branch_name"]
