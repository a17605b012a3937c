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
from ..names import branch_component

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


def git_env() -> dict[str, str]:
    """The environment git runs with here (no variables pointing at other repositories)."""
    return dict(_git_env())


def run_git(
    args: list[str], *, cwd: Path | str | None = None, check: bool = True, timeout: float = 600,
    input: str | None = None, env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``git ARGS``; raises RepoPoolError (stderr included, credentials hidden) on failure.

    ``input`` is written to its stdin; ``env`` adds variables (an identity, for commits).
    """
    full = {**_git_env(), **env} if env else _git_env()
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout,
            **({"input": input} if input is not None else {"stdin": subprocess.DEVNULL}),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RepoPoolError(redact(f"git {' '.join(args)}: {exc}")) from exc
    if check and proc.returncode != 0:
        raise RepoPoolError(redact(
            f"git {' '.join(args)} failed with exit code {proc.returncode}: "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        ))
    return proc


def workspaces_dir(state_dir: str | os.PathLike[str]) -> Path:
    """Where the Repo Pool keeps clones and slots: ``<state_dir>/workspaces``."""
    return Path(state_dir).absolute() / "workspaces"


def mirror_path(state_dir: str | os.PathLike[str], repo: str) -> Path:
    """The dispatcher's bare clone of ``repo`` (it exists once a task of it has run)."""
    return workspaces_dir(state_dir) / repo_slug(repo) / "repo.git"


def identity_env(author: str) -> dict[str, str]:
    """GIT_AUTHOR_* and GIT_COMMITTER_* for ``"Name <email>"``."""
    name, _, rest = author.partition("<")
    name, email = name.strip() or "NecroCode Dispatcher", rest.rstrip(">").strip()
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}


def rev_parse(git_dir: Path | str, ref: str) -> str | None:
    """The commit ``ref`` names in ``git_dir``, or None."""
    proc = run_git(["--git-dir", str(git_dir), "rev-parse", "-q", "--verify", f"{ref}^{{commit}}"],
                   check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def is_ancestor(git_dir: Path | str, ancestor: str, descendant: str) -> bool:
    """True when ``ancestor`` is ``descendant`` or one of its ancestors."""
    proc = run_git(["--git-dir", str(git_dir), "merge-base", "--is-ancestor", ancestor,
                    descendant], check=False)
    if proc.returncode not in (0, 1):
        raise RepoPoolError(redact(f"git merge-base --is-ancestor {ancestor} {descendant}: "
                                   f"{proc.stderr.strip()}"))
    return proc.returncode == 0


def changed_files(git_dir: Path | str, base: str, head: str) -> tuple[str, ...]:
    """Paths that differ between ``base`` and ``head`` (a rename counts as both names)."""
    out = run_git(["--git-dir", str(git_dir), "diff", "--name-only", "--no-renames", "-z",
                   base, head]).stdout
    return tuple(p for p in out.split("\0") if p)


def merge_tree(git_dir: Path | str, ours: str, theirs: str) -> tuple[str | None, tuple[str, ...]]:
    """Merge two commits without a worktree: (tree, ()) when clean, (None, files) on conflict."""
    proc = run_git(["--git-dir", str(git_dir), "merge-tree", "--write-tree", "--name-only",
                    "--no-messages", "-z", ours, theirs], check=False)
    parts = proc.stdout.split("\0")
    if not parts[0]:
        raise RepoPoolError(redact(f"git merge-tree {ours} {theirs} failed: "
                                   f"{proc.stderr.strip() or f'exit code {proc.returncode}'}"))
    if proc.returncode == 0:
        return parts[0], ()
    files: list[str] = []
    for name in parts[1:]:
        if not name:
            break
        if name not in files:
            files.append(name)
    return None, tuple(files)



@functools.lru_cache(maxsize=4096)
def branch_name(taskset: str, task_id: str) -> str:
    """``feature/task-{taskset}-{id}`` made a valid branch name (checked by git itself).

    Different tasks never share a branch: what git refuses, or what could make two names look
    alike (``a b``/``a-b``, ``x..y``/``x.y``), is percent-encoded (:func:`~..names.
    branch_component`), and so is a ``-`` in the id, so the last ``-`` always separates the
    taskset from the id. Plain names (``chat-app``, ``1.1``) stay as they are.
    """
    ident = branch_component(task_id).replace("-", "%2D")
    name = f"feature/task-{branch_component(taskset)}-{ident}"
    if run_git(["check-ref-format", "--branch", name], check=False).returncode == 0:
        return name
    digest = hashlib.sha1(f"{taskset}/{task_id}".encode()).hexdigest()[:12]
    logger.warning("task %s/%s: %r is not a valid branch name; using feature/task-%s",
                   taskset, task_id, name, digest)
    return f"feature/task-{digest}"
