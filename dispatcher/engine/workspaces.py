"""Workspaces: the engine's side of the Repo Pool (slots for runners).

Slots are allocated in launch workers (the Repo Pool is thread-safe) and released on the engine's
request after a runner is known gone, in a worker of their own (git clean-up can be slow). Until
a release is done, the task cannot start again: its next launch waits for the old slot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from ..logging_setup import log_extra
from ..models import Slot
from .commands import Command, SlotReleased

logger = logging.getLogger(__name__)

RELEASE_WORKERS = 4


class SlotProvider(Protocol):
    """What the engine needs of a Repo Pool (RepoPoolManager, or a test's own)."""

    def allocate_slot(self, task: Any, start: Any = None) -> Any: ...

    def release_slot(self, slot_id: str) -> bool: ...

    def flush(self) -> None: ...

    def mark_in_use(self, slot_id: str, task_key: str) -> Any: ...

    def assignments(self) -> Mapping[str, str]: ...

    def get_slot(self, slot_id: str) -> Any: ...


class Workspaces:
    """Slot releases in flight, per task (engine thread), over the Repo Pool."""

    def __init__(self, repo_pool: Callable[[], SlotProvider],
                 post: Callable[[Command], None]) -> None:
        self._repo_pool = repo_pool  # the RepoPoolManager (built on first use)
        self._post = post
        self._releasing: dict[str, int] = {}  # task key -> releases in flight
        self._workers: ThreadPoolExecutor | None = None
        self._used = False  # the Repo Pool was asked for (it is built on first use)

    @property
    def pool(self) -> SlotProvider:
        self._used = True
        return self._repo_pool()

    def start(self) -> None:
        self._workers = ThreadPoolExecutor(max_workers=RELEASE_WORKERS,
                                           thread_name_prefix="necrocode-slots")

    def shutdown(self) -> None:
        if self._workers is not None:
            self._workers.shutdown(wait=True)
            self._workers = None
        if not self._used:
            return
        try:
            self.pool.flush()  # the releases not written yet
        except Exception as exc:
            logger.warning("slot records could not be written at shutdown: %s", exc,
                           exc_info=True)

    # --- releases --------------------------------------------------------------------------
    def release_now(self, slot_id: str, key: str | None = None) -> bool:
        """Release (clean) a slot on this thread; False when the Repo Pool failed."""
        try:
            self.pool.release_slot(slot_id)
            return True
        except Exception as exc:
            logger.warning("slot %s could not be released: %s", slot_id, exc, exc_info=True,
                           extra=log_extra(task=key))
            return False

    def release(self, key: str, slot: Slot) -> None:
        """Release the slot of a runner that is gone. A worktree is released in a worker (git
        lets go of its branch), and the task's next launch waits until it is done; a scratch
        slot's release only records it free (it is emptied when it is next allocated), so it
        is done here, without a thread hand-off and a command back per task."""
        slot_id = slot.slot_id
        workers = self._workers
        if workers is None or slot.repo is None:
            self.release_now(slot_id, key)
            return
        self._releasing[key] = self._releasing.get(key, 0) + 1

        def work() -> None:
            self.release_now(slot_id, key)
            self._post(SlotReleased(key))

        workers.submit(work)

    def released(self, key: str) -> None:
        """A release of ``key`` finished (the SlotReleased command)."""
        left = self._releasing.get(key, 1) - 1
        if left > 0:
            self._releasing[key] = left
        else:
            self._releasing.pop(key, None)

    def releasing(self, key: str) -> bool:
        """A slot of this task is still being cleaned."""
        return key in self._releasing

    def in_flight(self) -> dict[str, int]:
        return dict(self._releasing)

    # --- restart ---------------------------------------------------------------------------
    def held_slot(self, slot_id: str, key: str) -> Slot | None:
        """The slot ``slot_id`` as the Repo Pool records it, while ``key`` holds it (None:
        free, held by another task, unknown, or unreadable)."""
        try:
            if self.pool.assignments().get(slot_id) != key:
                return None
            found = self.pool.get_slot(slot_id)
        except Exception as exc:
            logger.warning("slot %s of %s could not be read: %s", slot_id, key, exc,
                           exc_info=True, extra=log_extra(task=key))
            return None
        return found if isinstance(found, Slot) else None

    def mark_in_use(self, slot_id: str, key: str) -> None:
        """A runner adopted after a restart keeps its slot."""
        try:
            self.pool.mark_in_use(slot_id, key)
        except Exception as exc:
            logger.warning("slot %s of %s could not be marked in use: %s", slot_id, key, exc,
                           exc_info=True, extra=log_extra(task=key))

    def release_leaked(self, busy: Callable[[str], bool]) -> list[str]:
        """Release slots recorded in use by tasks that no live runner of ours serves (a crash
        between slot allocation and launch, or a runner that ended while we were down)."""
        try:
            held = dict(self.pool.assignments())
        except Exception as exc:
            logger.warning("slot assignments could not be read; leaked slots stay held: %s",
                           exc, exc_info=True)
            return []
        freed = []
        for slot_id, key in held.items():
            if not busy(key):
                logger.info("releasing slot %s held by %s from an earlier run", slot_id, key,
                            extra=log_extra(task=key))
                if self.release_now(slot_id, key):
                    freed.append(slot_id)
        return freed
