"""TaskMonitor: follows the Task Registry's change feed and hands READY tasks to the engine.

Polling is incremental: the monitor remembers the registry's change sequence and asks only for
tasks changed after it (:meth:`TaskRegistry.changes_since`), so a poll costs O(changes), not
O(tasks). The first poll returns every task once.
"""

from __future__ import annotations

import logging
import threading

from .config import DispatcherConfig
from .models import Task, TaskState
from .registry.base import KnownVersion, TaskRegistry

logger = logging.getLogger(__name__)


class TaskMonitor:
    """Watches the registry for changed and READY tasks.

    ``TaskMonitor(config)`` opens the registry the config names; pass ``registry`` to share one.
    """

    def __init__(
        self,
        config: DispatcherConfig | None = None,
        registry: TaskRegistry | None = None,
        *,
        batch_size: int = 5000,
    ) -> None:
        self.config = config or DispatcherConfig()
        if registry is None:
            from .registry import open_registry

            registry = open_registry(self.config.resolved_registry_path())
        self.registry: TaskRegistry = registry
        self.batch_size = batch_size
        self.seq = 0  # last change sequence seen
        self._lock = threading.Lock()

    def poll_changes(self, known: KnownVersion | None = None) -> list[Task]:
        """Every task changed since the last poll (newest state of each), in sequence order;
        with ``known``, the versions it says the caller holds may be left out."""
        with self._lock:
            out: list[Task] = []
            while True:
                batch = self.registry.changes_since(self.seq, limit=self.batch_size,
                                                    known=known) if known is not None \
                    else self.registry.changes_since(self.seq, limit=self.batch_size)
                out.extend(batch.tasks)
                advanced = batch.seq > self.seq
                self.seq = max(self.seq, batch.seq)
                if not advanced or len(batch.tasks) < self.batch_size:
                    return out

    def poll_ready_tasks(self) -> list[Task]:
        """Tasks that became (or changed while) READY since the last poll (the seed's API)."""
        return [t for t in self.poll_changes() if t.state is TaskState.READY]

    def has_changes(self) -> bool:
        """True when the registry moved past the last sequence seen (cheap check)."""
        return self.registry.current_seq() > self.seq
