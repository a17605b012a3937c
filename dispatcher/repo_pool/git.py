"""The git CLI, called with argv lists (never a shell), for the Repo Pool Manager."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import subprocess
from pathlib import Path

from ..errors import RunnerLaunchError

logger = logging.getLogger(__name__)

_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:")
# Variables that would point git at another repository than the one we name.
_GIT_LOCAL_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                   "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES")


class RepoPoolError(RunnerLaunchError):
    """A workspace could not be prepared (clone, fetch, worktree); retried like a launch error."""


def redact(text: str) -> str:
    """Hide credentials embedded in URLs (``https://user:token@host``)."""
    return _URL_USERINFO.sub(r"\g<scheme>***@", text)


def is_url(repo: str) -> bool:
    """True for a remote URL (``scheme://`` or scp-like ``user@host:path``)."""
    return "://" in repo or bool(_SCP_LIKE.match(repo))


def normalize_repo(repo: str) -> str:
    """A stable name for a repository: the URL as given, or the absolute local path."""
    repo = repo.strip()
    if is_url(repo):
        return repo.rstrip("/")
    return str(Path(repo).expanduser().resolve())


def repo_slug(repo: str) -> str:
    """Folder name of a repository under workspaces/: readable name plus a short hash."""
    norm = normalize_repo(repo)
    base = re.split(r"[/:]", norm.rstrip("/"))[-1] or "repo"
    base = base.removesuffix(".git")
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", base).strip(".-")[:40] or "repo"
    return f"{safe}-{hashlib.sha1(norm.encode('utf-8')).hexdigest()[:8]}"


@functools.lru_cache(maxsize=1)
def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCAL_VARS}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_ASKPASS=env.get("GIT_ASKPASS", "true"))
    return env


def run_git(
    args: list[str], *, cwd: Path | str | None = None, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``git ARGS``; raises RepoPoolError (stderr included, credentials hidden) on failure."""
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, env=_git_env(), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RepoPoolError(redact(f"git {' '.join(args)}: {exc}")) from exc
    if check and proc.returncode != 0:
        raise RepoPoolError(redact(
            f"git {' '.join(args)} failed with exit code {proc.returncode}: "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        ))
    return proc


_BAD_REF_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@functools.lru_cache(maxsize=4096)
def branch_name(taskset: str, task_id: str) -> str:
    """``feature/task-{taskset}-{id}`` made a valid branch name (checked by git itself)."""

    def clean(part: str) -> str:
        part = _BAD_REF_CHARS.sub("-", part)
        part = re.sub(r"\.{2,}", ".", part)
        return part.strip(".-") or "x"

    name = f"feature/task-{clean(taskset)}-{clean(task_id)}"
    while name.endswith(".lock"):
        name = name.removesuffix(".lock")
    if run_git(["check-ref-format", "--branch", name], check=False).returncode == 0:
        return name
    digest = hashlib.sha1(f"{taskset}/{task_id}".encode()).hexdigest()[:12]
    logger.warning("task %s/%s: %r is not a valid branch name; using feature/task-%s",
                   taskset, task_id, name, digest)
    return f"feature/task-{digest}"
