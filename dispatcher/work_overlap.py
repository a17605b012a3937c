"""After each run: did tasks that ran at the same time change the same files? (R21.5)

Declared ``paths:`` keep tasks apart before they run; this checks what they actually did.
:class:`OverlapWatch` keeps the recent runs of each repository (their time span and changed
files) and, when a run's work is recorded, answers the earlier runs it overlapped in time and
in files (each pair is found once: by the one that finished later), plus the files it changed
outside its declared paths. Pure and owned by one thread (the engine's).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .models import EventType, Task, TaskEvent
from .path_claims import path_matches

WINDOW = 500  # recent runs kept per repository


@dataclass(frozen=True)
class RunSpan:
    """One recorded run: when it ran and what it changed."""

    key: str
    repo: str
    started_at: float
    finished_at: float
    files: frozenset[str]

    @classmethod
    def of(cls, task: Task) -> RunSpan | None:
        """The span of a task with recorded work (None without a repository or times)."""
        if not task.repo or task.started_at is None or task.finished_at is None:
            return None
        return cls(task.key, task.repo, task.started_at, task.finished_at,
                   frozenset(task.files_changed))


@dataclass(frozen=True)
class FileOverlap:
    """Two runs that overlapped in time changed the same files."""

    key: str
    other: str
    files: tuple[str, ...]

    @property
    def message(self) -> str:
        shown = ", ".join(self.files[:5]) + (f" and {len(self.files) - 5} more"
                                             if len(self.files) > 5 else "")
        return f"{self.key} and {self.other} ran at the same time and both changed {shown}"

    def event(self) -> TaskEvent:
        return TaskEvent(EventType.PATHS_OVERLAP, self.key, message=self.message,
                         details={"other": self.other, "files": list(self.files[:200])})


@dataclass(frozen=True)
class OverlapReport:
    """What the check of one run found."""

    overlaps: tuple[FileOverlap, ...]
    undeclared: tuple[str, ...]  # files changed outside the task's declared paths


class OverlapWatch:
    """Recent runs per repository, compared as each new one is recorded."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self._runs: dict[str, deque[RunSpan]] = {}

    def record(self, task: Task) -> OverlapReport:
        """Add ``task``'s finished run and report what it overlapped."""
        span = RunSpan.of(task)
        undeclared = tuple(f for f in task.files_changed
                           if task.paths and not any(path_matches(p, f) for p in task.paths))
        if span is None:
            return OverlapReport((), undeclared)
        runs = self._runs.setdefault(span.repo, deque(maxlen=self.window))
        overlaps = []
        for other in runs:
            if other.key == span.key:
                continue
            if other.started_at < span.finished_at and span.started_at < other.finished_at:
                common = span.files & other.files
                if common:
                    overlaps.append(FileOverlap(span.key, other.key, tuple(sorted(common))))
        runs.append(span)
        return OverlapReport(tuple(overlaps), undeclared)
