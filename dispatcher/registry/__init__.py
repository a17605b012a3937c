"""Task Registry: the protocol and its implementations.

``open_registry(path)`` opens the registry a path names: ``":memory:"`` gives a
:class:`MemoryRegistry`, anything else a :class:`SQLiteRegistry` (its folder is created).
"""

from __future__ import annotations

from pathlib import Path

from ._common import TransitionRequest, TransitionResult
from .base import UPDATABLE_FIELDS, ChangeBatch, SubmitResult, TaskRegistry
from .memory import MemoryRegistry
from .sqlite import SQLiteRegistry

MEMORY = ":memory:"


def open_registry(path: str | Path | None = None) -> TaskRegistry:
    """Open the registry at ``path`` (None: the configured default, see DispatcherConfig)."""
    if path is None:
        from ..config import DispatcherConfig

        path = DispatcherConfig().resolved_registry_path()
    if str(path) == MEMORY:
        return MemoryRegistry()
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    return SQLiteRegistry(target)


__all__ = [
    "UPDATABLE_FIELDS",
    "ChangeBatch",
    "MemoryRegistry",
    "SQLiteRegistry",
    "SubmitResult",
    "TaskRegistry",
    "TransitionRequest",
    "TransitionResult",
    "open_registry",
]
