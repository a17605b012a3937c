"""The Task Registry protocol.

A registry stores tasksets, tasks and events. It is the source of truth for task state: every
state change is a compare-and-set validated against :data:`models.ALLOWED_TRANSITIONS`, written
together with its event in one transaction. Each write bumps a change sequence so that readers
can poll only what changed (:meth:`TaskRegistry.changes_since`).

Implementations: :class:`SQLiteRegistry` (embedded, WAL) and :class:`MemoryRegistry` (same
behaviour, for unit tests). One behaviour test suite runs against both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..models import Task, TaskEvent, Taskset, TaskState

if TYPE_CHECKING:
    from ._common import TransitionRequest, TransitionResult

#: Fields that :meth:`TaskRegistry.update_task` and ``transition(..., **updates)`` may change.
UPDATABLE_FIELDS = frozenset(
    {
        "title",
        "description",
        "priority",
        "required_skill",
        "tenant",
        "resources",
        "command",
        "timeout",
        "max_attempts",
        "metadata",
        "repo",
        "optional",
        "estimated_duration",
        "ready_at",
        "started_at",
        "finished_at",
        "attempts",
        "next_attempt_at",
        "last_error",
        "runner_id",
        "assigned_slot",
        "reserved_branch",
        "artifacts",
        "dependencies",
        "paths",
        "branch",
        "base",
        "head",
        "commits",
        "files_changed",
        "landed",
        "gate_failed",
        "agent",
        "agent_options",
        "max_cost_usd",
        "max_tokens",
        "max_turns",
        "usage",  # summed agent usage of the attempts (models.Usage)
        "agent_summary",
        "from_base",
    }
)


@dataclass
class SubmitResult:
    """What :meth:`TaskRegistry.submit_taskset` did."""

    taskset: str
    created: list[str] = field(default_factory=list)  # task keys
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    ready: list[str] = field(default_factory=list)  # keys READY after the submit


#: ``known(key, state value, updated_at)``: whether the caller already holds that version.
KnownVersion = Callable[[str, str, float | None], bool]


@dataclass
class ChangeBatch:
    """Tasks changed after a sequence number, and the sequence to poll from next."""

    tasks: list[Task]
    seq: int


@runtime_checkable
class TaskRegistry(Protocol):
    """Storage of tasksets, tasks and events."""

    # --- tasksets ---------------------------------------------------------------------------
    def submit_taskset(self, taskset: Taskset) -> SubmitResult:
        """Create or update a taskset and its tasks, atomically.

        New tasks start READY when every dependency is DONE, else BLOCKED. Existing tasks keep
        their state, attempts and history; their definition fields (title, description, skill,
        priority, dependencies, resources, command, …) are updated. A TaskCreated event is
        written per new task, TaskUpdated per changed one. The caller validates first (ids,
        dependencies, cycles); the registry only refuses what would corrupt it.
        """
        ...

    def list_tasksets(self) -> list[Taskset]:
        """Every taskset (``tasks`` left empty; use list_tasks)."""
        ...

    def get_taskset(self, name: str) -> Taskset | None:
        """One taskset with its tasks, or None."""
        ...

    # --- tasks ------------------------------------------------------------------------------
    def get_task(self, key: str) -> Task:
        """The task with key ``taskset/id``; raises TaskNotFoundError."""
        ...

    def get_tasks(self, keys: Iterable[str]) -> dict[str, Task]:
        """Several tasks by key; missing keys are left out."""
        ...

    def list_tasks(
        self,
        *,
        state: TaskState | Sequence[TaskState] | None = None,
        skill: str | None = None,
        taskset: str | None = None,
        tenant: str | None = None,
        order_by: str = "key",  # "key" | "priority" (priority desc, ready_at asc) | "updated"
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Task]:
        """Tasks matching every given filter, sorted, one page."""
        ...

    def count_tasks(self, *, taskset: str | None = None) -> dict[TaskState, int]:
        """Number of tasks per state (every state present, zero included)."""
        ...

    def transition(
        self,
        key: str,
        to_state: TaskState,
        *,
        expected: TaskState | Sequence[TaskState] | None = None,
        event: TaskEvent | None = None,
        **updates: Any,
    ) -> Task:
        """Compare-and-set state change plus field updates plus event, in one transaction.

        Raises InvalidTransitionError when the current state is not in ``expected`` (when
        given) or the state machine forbids the change; TaskNotFoundError for an unknown key.
        Sets ``updated_at``; sets ``ready_at`` when entering READY (unless given in updates).
        Entering DONE unblocks dependents whose dependencies are all DONE (BLOCKED -> READY,
        with a TaskReady event each) in the same transaction. Returns the updated task.
        """
        ...

    def transition_many(self, requests: Sequence[TransitionRequest]) -> list[TransitionResult]:
        """Several :meth:`transition` calls in ONE transaction, in order; a refused request is
        answered with its InvalidTransitionError / TaskNotFoundError in its place, any other
        failure writes nothing and raises."""
        ...

    def update_task(self, key: str, *, event: TaskEvent | None = None, **updates: Any) -> Task:
        """Change fields of :data:`UPDATABLE_FIELDS` (not the state) plus an event, atomically."""
        ...

    def set_priority(self, key: str, priority: int) -> Task:
        """Persist a new priority and write a PriorityChanged event."""
        ...

    # --- change feed ------------------------------------------------------------------------
    def current_seq(self) -> int:
        """The latest change sequence number."""
        ...

    def changes_since(self, seq: int, limit: int | None = None, *,
                      known: KnownVersion | None = None) -> ChangeBatch:
        """Tasks whose latest change is after ``seq``, in sequence order.

        Costs O(changes), not O(tasks): implementations index the sequence. ``known(key,
        state, updated_at)`` True: the caller holds that version already (its own write's
        echo); an implementation may leave such a task out of ``tasks`` (the sequence still
        moves past it) instead of decoding it again.
        """
        ...

    # --- events -----------------------------------------------------------------------------
    def record_event(self, event: TaskEvent) -> TaskEvent:
        """Store an event; returns it with its ``seq`` set."""
        ...

    def record_events(self, events: Iterable[TaskEvent]) -> None:
        """Store several events in one transaction."""
        ...

    def get_events(
        self,
        *,
        task_key: str | None = None,
        since: float | None = None,
        until: float | None = None,
        event_types: Sequence[Any] | None = None,
        limit: int | None = None,
        after_seq: int | None = None,
        newest_first: bool = False,
    ) -> list[TaskEvent]:
        """Events filtered by task, time range [since, until), type; oldest first by default."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...
