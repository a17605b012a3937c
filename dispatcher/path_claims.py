"""Conflict-aware scheduling (R21.5): tasks whose declared ``paths:`` overlap never run at once.

A task may declare the files it touches as globs relative to its repository: ``*`` and ``?``
within one path segment, ``[abc]`` classes, ``**`` for any number of segments; a pattern also
covers everything below what it names (``docs`` is ``docs`` and ``docs/**``; ``src/api/`` is
``src/api/**``). :class:`PathClaims` holds the paths of the running tasks, per repository,
and answers whether a task may start now, or which running task it waits for and why
("waits for flow/a: both touch src/api/**"). It is pure (no I/O, no clock) and not
thread-safe: the engine thread owns it, claims when it admits a task (so two tasks of one
round cannot both start) and releases when the task's runner is gone.

Overlap is decided conservatively: two globs overlap unless no path could match both, so a
pair that cannot be told apart waits rather than runs together.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .yaml_source import type_name

_WILD = re.compile(r"[*?\[]")


def glob_problem(pattern: object) -> str | None:
    """Why ``pattern`` cannot be a ``paths:`` glob, or None."""
    if not isinstance(pattern, str) or not pattern.strip():
        return "expected a non-empty string (a glob relative to the repository)"
    text = pattern.strip()
    if text.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", text):
        return f"{pattern!r} is absolute; paths are relative to the repository's root"
    if ".." in text.replace("\\", "/").split("/"):
        return f"{pattern!r} leaves the repository ('..')"
    if text.count("[") != text.count("]"):
        return f"{pattern!r} has an unclosed '['"
    return None


def parse_paths(raw: object) -> tuple[tuple[str, ...], list[tuple[int | None, str]]]:
    """A task's ``paths:`` value (one glob or a list) as normalised globs, and its problems:
    (index of the bad item, or None for the value as a whole; why)."""
    if raw is None:
        return (), []
    if isinstance(raw, str):
        items: list[tuple[int | None, object]] = [(None, raw)]
    elif isinstance(raw, list):
        items = list(enumerate(raw))
    else:
        return (), [(None, f"expected a list of globs, got {type_name(raw)}")]
    globs: list[str] = []
    problems: list[tuple[int | None, str]] = []
    for index, glob in items:
        why = glob_problem(glob)
        if why:
            problems.append((index, why))
        elif normalize_glob(str(glob)) not in globs:
            globs.append(normalize_glob(str(glob)))
    return tuple(globs), problems


@functools.lru_cache(maxsize=8192)
def normalize_glob(pattern: str) -> str:
    """``./src//api/`` -> ``src/api/**``; ``**/**`` folded; ``.`` is the whole repository."""
    parts = [p for p in pattern.strip().replace("\\", "/").split("/") if p not in ("", ".")]
    out: list[str] = []
    for part in parts:
        if part == "**" and out and out[-1] == "**":
            continue
        out.append(part)
    if pattern.strip().endswith("/") and (not out or out[-1] != "**"):
        out.append("**")
    return "/".join(out) or "**"


def _segments(pattern: str) -> tuple[str, ...]:
    """The glob's segments, with the implicit ``**`` (everything below) at the end."""
    segs = tuple(normalize_glob(pattern).split("/"))
    return segs if segs[-1] == "**" else (*segs, "**")


def _segment_overlap(a: str, b: str) -> bool:
    """True unless no single path segment can match both ``a`` and ``b``."""
    wild_a, wild_b = _WILD.search(a), _WILD.search(b)
    if not wild_a:
        return fnmatch.fnmatchcase(a, b)
    if not wild_b:
        return fnmatch.fnmatchcase(b, a)
    pre_a, pre_b = a[:wild_a.start()], b[:wild_b.start()]
    suf_a, suf_b = _suffix(a), _suffix(b)
    return (pre_a.startswith(pre_b) or pre_b.startswith(pre_a)) and (
        suf_a.endswith(suf_b) or suf_b.endswith(suf_a))


def _suffix(seg: str) -> str:
    """The literal end of a segment after its last wildcard (``*.py`` -> ``.py``)."""
    last = max(seg.rfind("*"), seg.rfind("?"), seg.rfind("]"))
    return seg[last + 1:]


@functools.lru_cache(maxsize=65536)
def globs_overlap(a: str, b: str) -> bool:
    """True when some path may match both globs (conservative: see the module's doc)."""
    sa, sb = _segments(a), _segments(b)

    @functools.cache
    def walk(i: int, j: int) -> bool:
        if i == len(sa) or j == len(sb):
            rest = sa[i:] if j == len(sb) else sb[j:]
            return all(s == "**" for s in rest)
        if sa[i] == "**":
            return walk(i + 1, j) or walk(i, j + 1)
        if sb[j] == "**":
            return walk(i, j + 1) or walk(i + 1, j)
        return _segment_overlap(sa[i], sb[j]) and walk(i + 1, j + 1)

    return walk(0, 0)


def path_matches(pattern: str, path: str) -> bool:
    """True when the file ``path`` is covered by ``pattern`` (or lies below what it names)."""
    segs = _segments(pattern)
    parts = tuple(p for p in path.split("/") if p)

    @functools.cache
    def walk(i: int, j: int) -> bool:
        if i == len(segs):
            return j == len(parts)
        if segs[i] == "**":
            return walk(i + 1, j) or (j < len(parts) and walk(i, j + 1))
        return j < len(parts) and fnmatch.fnmatchcase(parts[j], segs[i]) and walk(i + 1, j + 1)

    return walk(0, 0)


def _named(mine: str, theirs: str) -> str:
    """The pattern a reason names: the common one, else the narrower-looking one."""
    a, b = normalize_glob(mine), normalize_glob(theirs)
    if a == b or not _WILD.search(a):
        return a
    if not _WILD.search(b):
        return b
    return a if len(a) >= len(b) else b


@dataclass(frozen=True)
class PathConflict:
    """Why a task waits: a running task of the same repository claims overlapping paths."""

    task_key: str
    other: str
    pattern: str  # the overlapping glob named in the reason
    mine: str
    theirs: str

    @property
    def reason(self) -> str:
        """The pending reason: ``waits for flow/a: both touch src/api/**``."""
        return f"waits for {self.other}: both touch {self.pattern}"


class PathClaims:
    """The declared paths of running tasks, per repository."""

    def __init__(self) -> None:
        self._claims: dict[str, tuple[str | None, tuple[str, ...]]] = {}

    def conflict(self, key: str, repo: str | None,
                 paths: Iterable[str]) -> PathConflict | None:
        """The first running task ``key`` may not run beside, or None (it may start).

        A task without paths, or without a repository, never waits for paths.
        """
        mine = tuple(paths)
        if not mine or not repo:
            return None
        for other, (other_repo, theirs) in self._claims.items():
            if other == key or other_repo != repo:
                continue
            for a in mine:
                for b in theirs:
                    if globs_overlap(a, b):
                        return PathConflict(key, other, _named(a, b), a, b)
        return None

    def may_start(self, key: str, repo: str | None, paths: Iterable[str]) -> bool:
        return self.conflict(key, repo, paths) is None

    def claim(self, key: str, repo: str | None, paths: Iterable[str]) -> None:
        """Record that ``key`` runs now with ``paths`` (nothing is kept for no paths)."""
        mine = tuple(paths)
        if mine and repo:
            self._claims[key] = (repo, mine)

    def release(self, key: str) -> None:
        """``key``'s runner is gone (a second release is a no-op)."""
        self._claims.pop(key, None)

    def claimed(self) -> dict[str, tuple[str, ...]]:
        """Running task -> its paths (a copy)."""
        return {k: paths for k, (_, paths) in self._claims.items()}
