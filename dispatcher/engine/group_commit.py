"""GroupCommit: the compare-and-sets of concurrent launch workers, one transaction for many.

Each launch worker moves its task READY -> RUNNING before it starts the runner. Instead of one
registry transaction per worker, a worker that finds no commit in progress becomes the leader: it
takes every request waiting at that moment, writes them with ``transition_many`` (one commit),
hands each its answer, and goes on while requests keep arriving; the others wait for their
answer. Each request keeps its own meaning: a refusal is answered to that worker alone; a lone
request, and each request of a batch the registry could not take, is written on its own
through :meth:`EventRecorder.transition` (with its fallbacks), and an error there is that
worker's to handle (it asks the registry what became of its task, as before).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

from ..events import EventRecorder
from ..models import Task
from ..registry._common import TransitionRequest, TransitionResult


class GroupCommit:
    """Batches concurrent transitions into shared transactions (thread-safe)."""

    def __init__(self, recorder: EventRecorder) -> None:
        self._recorder = recorder
        self._lock = threading.Lock()
        self._waiting: list[tuple[TransitionRequest, Future[TransitionResult]]] = []
        self._leading = False
        self.commits = 0  # transactions written
        self.requests = 0  # transitions written in them

    def transition(self, request: TransitionRequest) -> Task:
        """Write ``request`` in the next shared transaction; the new task, or the refusal
        (InvalidTransitionError, TaskNotFoundError) or the batch's error raised."""
        answer: Future[TransitionResult] = Future()
        with self._lock:
            self._waiting.append((request, answer))
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead()
        result = answer.result()
        if isinstance(result, Exception):
            raise result
        return result

    def _lead(self) -> None:
        while True:
            with self._lock:
                batch, self._waiting = self._waiting, []
                if not batch:
                    self._leading = False
                    return
            if len(batch) > 1:
                try:
                    results = self._recorder.transition_many([req for req, _ in batch])
                except Exception:  # nothing was written: each request on its own, below
                    pass
                else:
                    self.commits += 1
                    self.requests += len(batch)
                    for (_, answer), result in zip(batch, results, strict=True):
                        answer.set_result(result)
                    continue
            for request, answer in batch:  # one alone, or a batch the registry refused
                self._one(request, answer)

    def _one(self, request: TransitionRequest, answer: Future[TransitionResult]) -> None:
        """One request through the recorder's ``transition`` (its fallbacks included: the
        event kept aside when only the event cannot be written)."""
        try:
            task = self._recorder.transition(request.key, request.to_state,
                                             expected=request.expected,
                                             event=request.event, **request.updates)
        except Exception as exc:  # handed to the worker that asked, which decides
            answer.set_exception(exc)
            return
        self.commits += 1
        self.requests += 1
        answer.set_result(task)
