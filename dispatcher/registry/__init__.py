"""Task Registry: the protocol and its implementations.

``open_registry(path)`` opens the registry a path names (:func:`registry_kind`):
``":memory:"`` gives a :class:`MemoryRegistry`; a directory laid out as an original NecroCode
registry (``tasksets/``, ``events/``, ``locks/``), an empty directory, or a path ending in
``/`` that does not exist yet gives a :class:`NecroCodeRegistry` over it; any other path a
:class:`SQLiteRegistry` file (its folder is created).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import RegistryError
from ._common import TransitionRequest, TransitionResult
from .base import UPDATABLE_FIELDS, ChangeBatch, SubmitResult, TaskRegistry
from .memory import MemoryRegistry
from .necrocode_files import LAYOUT, NecroCodeRegistry
from .sqlite import SQLiteRegistry

MEMORY = ":memory:"


def registry_kind(path: str | Path) -> str:
    """"memory", "necrocode" or "sqlite": what ``open_registry(path)`` opens.

    Raises RegistryError for a directory that is neither empty nor a NecroCode registry.
    """
    text = str(path)
    if text == MEMORY:
        return "memory"
    target = Path(text).expanduser()
    if target.is_dir():
        if any((target / folder).is_dir() for folder in LAYOUT) or not any(target.iterdir()):
            return "necrocode"
        raise RegistryError(
            f"{target} is a directory but not a NecroCode registry (it has no tasksets/, "
            f"events/ or locks/ folder); give a file path such as {target / 'registry.db'} "
            "for the embedded registry, or an empty directory to start a NecroCode one")
    if text.endswith(("/", os.sep)):
        return "necrocode"
    return "sqlite"


def open_registry(path: str | Path | None = None) -> TaskRegistry:
    """Open the registry at ``path`` (None: the configured default, see DispatcherConfig)."""
    if path is None:
        from ..config import DispatcherConfig

        path = DispatcherConfig().resolved_registry_path()
    kind = registry_kind(path)
    if kind == "memory":
        return MemoryRegistry()
    target = Path(path).expanduser()
    if kind == "necrocode":
        return NecroCodeRegistry(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return SQLiteRegistry(target)


__all__ = [
    "UPDATABLE_FIELDS",
    "ChangeBatch",
    "MemoryRegistry",
    "NecroCodeRegistry",
    "SQLiteRegistry",
    "SubmitResult",
    "TaskRegistry",
    "TransitionRequest",
    "TransitionResult",
    "open_registry",
    "registry_kind",
]
