"""necroui commands for a running Dispatcher: status, metrics, priority, retry, cancel.

They go through :mod:`necroui.remote` (the running Dispatcher's HTTP API, else the registry).
"""

from __future__ import annotations

import json
from typing import Any

import click
from necrocode.dispatcher.limits import PRIORITY
from necrocode.dispatcher.models import TaskState

from . import console
from .cli_common import CliState, fail, pass_state

# --- a running dispatcher ---------------------------------------------------------------------


def _remote() -> Any:
    """necroui.remote (status, metrics and control of a running dispatcher), or None."""
    import importlib

    try:
        return importlib.import_module("necroui.remote")
    except ImportError as exc:
        if exc.name != "necroui.remote":
            raise
        return None


#: Seconds to wait for the running Dispatcher's API (status, metrics) unless --timeout says.
DEFAULT_TIMEOUT = 10.0

timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=0.1), default=DEFAULT_TIMEOUT, show_default=True,
    metavar="SECONDS", help="How long to wait for the running Dispatcher's answer.")


def _fetch(remote: Any, state: CliState, what: str, timeout: float,
           queued: int | None = None) -> Any:
    """Status dict or metrics text: from the running Dispatcher (within ``timeout``; status
    with only the first ``queued`` queued tasks, no finished list and no events), else the
    registry's view (necroui.remote)."""
    from necrocode.dispatcher.api import client

    config = state.config()
    try:
        if what == "status":
            if queued is None:
                return remote.fetch_status(config, timeout=timeout)
            return remote.fetch_status(config, timeout=timeout, queued=queued, finished=0,
                                       events=0)
        return remote.fetch_metrics(config, timeout=timeout)
    except client.ApiError as exc:
        url = exc.url.split("/v1/", 1)[0].split("/metrics", 1)[0] if exc.url else "its API"
        if exc.status == 0 and "timed out" in exc.message:
            fail(f"the dispatcher at {url} did not answer within {timeout:g} s (it may be busy)",
                 f"try again or use --timeout (e.g. `necroui {what} --timeout "
                 f"{max(30.0, timeout * 3):g}`)")
        raise


@click.command(epilog="""\b
Examples:
  necroui status
  necroui status --queued 100       show more of the queue
  necroui status --json             everything, as JSON
""")
@click.option("--json", "as_json", is_flag=True, help="Print the whole status as JSON.")
@click.option("--queued", "queued_rows", type=click.IntRange(min=0), default=20,
              show_default=True, metavar="N",
              help="Show the first N queued tasks in dispatch order (the rest are counted).")
@timeout_option
@pass_state
def status(state: CliState, as_json: bool, queued_rows: int, timeout: float) -> None:
    """Show the running Dispatcher's pools, queue and runners.

    Every running task, the first queued ones and the task counts. When no Dispatcher runs
    on this registry, it says so and prints the registry's task counts instead.
    """
    remote = _remote()
    if remote is None:
        fail("status needs necroui.remote, which this installation lacks",
             "use `necroui tasks` to see the registry")
    state.registry_path()
    data = _fetch(remote, state, "status", timeout, None if as_json else queued_rows)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    console.print_status(data, queued_rows=queued_rows)


@click.command(epilog="""\b
Example:
  necroui metrics | grep necrocode_dispatcher_queued_tasks
""")
@timeout_option
@pass_state
def metrics(state: CliState, timeout: float) -> None:
    """Print the Prometheus metrics (text exposition format).

    They come from the running Dispatcher's API; when none runs, the gauges are computed
    from the registry.
    """
    remote = _remote()
    if remote is None:
        fail("metrics needs necroui.remote, which this installation lacks")
    state.registry_path()
    click.echo(_fetch(remote, state, "metrics", timeout), nl=False)


def _control(state: CliState, verb: str, payload: dict[str, Any]) -> None:
    remote = _remote()
    state.registry_path()
    if remote is not None:
        from necrocode.dispatcher.api.client import ApiError

        try:
            message = remote.control(state.config(), verb, payload)
        except ApiError as exc:
            if exc.status == 0 and "timed out" in exc.message:
                from urllib.parse import urlsplit

                wait = getattr(remote, "TIMEOUT", None)
                within = f" within {wait:g} s" if isinstance(wait, int | float) else ""
                parts = urlsplit(exc.url)
                where = f"{parts.scheme}://{parts.netloc}" if parts.netloc else "its API"
                fail(f"the dispatcher at {where} did not answer{within} (it may be busy); "
                     f"the {verb} may still be applied",
                     "check with `necroui status`, then try again")
            raise
    else:
        # NOTE: until necroui.remote (ENGINE) lands, act on the registry directly.
        registry = state.open_registry()
        try:
            message = registry_control(registry, verb, payload)
        finally:
            registry.close()
    click.echo(message)


def registry_control(registry: Any, verb: str, payload: dict[str, Any]) -> str:
    """Apply priority / retry / cancel on the registry itself (no dispatcher running)."""
    from necrocode.dispatcher.errors import DispatcherStateError
    from necrocode.dispatcher.models import EventType, TaskEvent, split_key

    key = str(payload["task"])
    task = registry.get_task(key)
    if verb == "priority":
        new = int(payload["priority"])
        registry.set_priority(key, new)
        return f"priority of {key}: {task.priority} -> {new}"
    if verb == "cancel":
        if task.state.terminal:
            raise DispatcherStateError(f"task {key!r} is already {task.state.value}; "
                                       "only unfinished tasks can be cancelled")
        registry.transition(key, TaskState.CANCELLED, expected=task.state,
                            event=TaskEvent(EventType.TASK_CANCELLED, key,
                                            message="cancelled from the command line"))
        return f"cancelled {key} (was {task.state.value})"
    if verb == "retry":
        if task.state not in (TaskState.FAILED, TaskState.CANCELLED):
            raise DispatcherStateError(f"task {key!r} is {task.state.value}; only failed or "
                                       "cancelled tasks can be retried")
        taskset, _ = split_key(key)
        deps = registry.get_tasks(f"{taskset}/{d}" for d in task.dependencies)
        waiting = [d for d in task.dependencies
                   if deps.get(f"{taskset}/{d}") is None
                   or deps[f"{taskset}/{d}"].state is not TaskState.DONE]
        target = TaskState.BLOCKED if waiting else TaskState.READY
        registry.transition(key, target, expected=task.state, attempts=0,
                            next_attempt_at=None, last_error=None,
                            event=TaskEvent(EventType.TASK_RETRIED, key,
                                            message="retried from the command line"))
        return f"retrying {key}: {target.value}" + (
            f" (waits for {', '.join(waiting)})" if waiting else "")
    raise click.UsageError(f"unknown control verb {verb!r}")


@click.command(epilog="""\b
Examples:
  necroui priority chat-app/1.2 10
  necroui priority chat-app/1.2 -- -5    a negative priority needs the --
""")
@click.argument("key")
@click.argument("priority", type=click.IntRange(PRIORITY.low, PRIORITY.high))
@pass_state
def priority(state: CliState, key: str, priority: int) -> None:
    """Set the PRIORITY of task KEY (taskset/id); higher runs first."""
    _control(state, "priority", {"task": key, "priority": priority})


@click.command(epilog="""\b
Examples:
  necroui retry chat-app/1.2
  necroui retry chat-app/3 --from-base    its dependencies' work conflicts: start without it
""")
@click.argument("key")
@click.option("--from-base", is_flag=True,
              help="Start it from the base branch, without its dependencies' work (for a "
                   "task whose dependencies' work does not merge).")
@pass_state
def retry(state: CliState, key: str, from_base: bool) -> None:
    """Run a failed or cancelled task KEY (taskset/id) again.

    Its attempts start from zero; it waits for its dependencies if they are not done. A
    task waiting on a start conflict is offered again (after a fix, e.g. a resolution landed
    in its integration branch), or with --from-base started without its dependencies' work.
    """
    _control(state, "retry", {"task": key, **({"from_base": True} if from_base else {})})


@click.command(epilog="""\b
Example:
  necroui cancel chat-app/1.2
""")
@click.argument("key")
@pass_state
def cancel(state: CliState, key: str) -> None:
    """Cancel task KEY (taskset/id) so it does not run.

    A running agent is stopped by the Dispatcher; a cancelled task can be retried later
    (`necroui retry KEY`).
    """
    _control(state, "cancel", {"task": key})


COMMANDS = [status, metrics, priority, retry, cancel]
