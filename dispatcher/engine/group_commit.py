"""GroupCommit: the compare-and-sets of concurrent launch workers, one transaction for many.

Each launch worker moves its task READY -> RUNNING before it starts the runner. Instead of one
registry transaction per worker, a worker that finds no commit in progress leads one: it takes
every request waiting at that moment, writes them with ``transition_many`` (one commit) and
hands each its answer; the requests that arrived meanwhile wait for the next transaction, led by
one of their own workers (so no worker stays behind writing for the others). Each request keeps
its own meaning: a refusal is answered to that worker alone; a lone request, and each request
of a batch the registry could not take, is written on its own through
:meth:`EventRecorder.transition` (with its fallbacks), and an error there is that worker's to
handle (it asks the registry what became of its task, as before).
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
        self._cond = threading.Condition()
        self._waiting: list[tuple[TransitionRequest, Future[TransitionResult]]] = []
        self._leading = False
        self.commits = 0  # transactions written
        self.requests = 0  # transitions written in them
        self.batch_errors = 0  # batches the registry refused as a whole (then one by one)
        self.last_batch_error = ""

    @property
    def waiting(self) -> int:
        """Requests waiting for the next transaction."""
        with self._cond:
            return len(self._waiting)

    def transition(self, request: TransitionRequest) -> Task:
        """Write ``request`` in the next shared transaction; the new task, or the refusal
        (InvalidTransitionError, TaskNotFoundError) or the error of its write raised."""
        answer: Future[TransitionResult] = Future()
        batch: list[tuple[TransitionRequest, Future[TransitionResult]]] = []
        with self._cond:
            self._waiting.append((request, answer))
            while not answer.done():
                if not self._leading:  # lead one transaction: every request waiting now
                    self._leading = True
                    batch, self._waiting = self._waiting, []
                    break
                self._cond.wait()
        if batch:
            try:
                if len(batch) == 1 or not self._write_batch(batch):
                    for req, ans in batch:  # one alone, or a batch the registry refused
                        self._one(req, ans)
            finally:
                with self._cond:  # the next waiting worker leads the next transaction
                    self._leading = False
                    self._cond.notify_all()
        result = answer.result()
        if isinstance(result, Exception):
            raise result
        return result

    def _write_batch(self, batch: list[tuple[TransitionRequest,
                                             Future[TransitionResult]]]) -> bool:
        """One transaction for the batch; False when the registry took none of it (each
        request is then written on its own, and a lasting error reaches its worker there)."""
        try:
            results = self._recorder.transition_many([req for req, _ in batch])
        except Exception as exc:
            self.batch_errors += 1
            self.last_batch_error = f"{type(exc).__name__}: {exc}"
            return False
        self.commits += 1
        self.requests += len(batch)
        for (_, answer), result in zip(batch, results, strict=True):
            answer.set_result(result)
        return True

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
