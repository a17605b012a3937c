"""Commands on the work of tasks: ``necroui land`` (merge DONE work into the integration branch)
and ``necroui diff`` (a task's work against its base). Both work on the registry and the
Dispatcher's clones directly: no running Dispatcher is needed. With one running, ``land`` asks
it (the engine runs one landing at a time) and prints the report it publishes."""

from __future__ import annotations

import shlex
from typing import Any

import click
from necrocode.dispatcher.landing import LandKind, LandReport

from . import console
from .cli_common import CliState, fail, pass_state

_MARKS = {
    LandKind.LANDED: ("landed", "green"),
    LandKind.ALREADY: ("already in", "green"),
    LandKind.CONFLICT: ("conflict", "red"),
    LandKind.GATE_FAILED: ("gate failed", "red"),
    LandKind.SENT_BACK: ("sent back", "yellow"),
    LandKind.WAITING: ("waits", "yellow"),
    LandKind.NO_WORK: ("no work", None),
}


@click.command(epilog="""\b
Examples:
  necroui land chat-app                         merge DONE work into necrocode/chat-app
  necroui land chat-app --check "make test"     each merge must pass the check first
  necroui land chat-app --into release/1 --push and push that branch to the origin

\b
Tasks land in dependency order, one merge commit each, into the branch of the Dispatcher's
clone. A task that conflicts, or whose check fails, leaves the branch as it was and holds
back its dependents. The check runs in the landing worktree without a shell. --push pushes
the branch to the repository's origin (for a local path: into that repository).
Exit status 1 when a task conflicted, a gate failed or a push was refused.
""")
@click.argument("taskset")
@click.option("--into", "into", metavar="BRANCH",
              help="Integration branch. Default: work.integration_branch (necrocode/TASKSET).")
@click.option("--check", "check", metavar="CMD",
              help="Command run on each merged tree before it lands (split like a shell line, "
                   "run without one). Default: work.land_check. --check '' runs none.")
@click.option("--push", is_flag=True, help="Push the integration branch to the origin.")
@click.option("--push-task-branches/--no-push-task-branches", default=None,
              help="With --push, also push the task branches. Default: "
                   "work.push_task_branches.")
@pass_state
def land(state: CliState, taskset: str, into: str | None, check: str | None, push: bool,
         push_task_branches: bool | None) -> None:
    """Merge the DONE work of TASKSET into its integration branch, in dependency order."""
    from necrocode.dispatcher.landing import Lander, LandRequest

    argv: tuple[str, ...] | None = None
    if check is not None:
        try:
            argv = tuple(shlex.split(check))
        except ValueError as exc:
            fail(f"--check {check!r}: {exc}", "quote it as one shell-like line")
    if push_task_branches and not push:
        fail("--push-task-branches applies to --push", "add --push")
    config = state.config()
    from . import remote

    if remote.find_dispatcher(config) is not None:  # the engine serializes landings
        report = _land_through_dispatcher(config, {
            "taskset": taskset, "into": into, "push": push,
            "push_task_branches": push_task_branches,
            **({"check": list(argv)} if argv is not None else {})})
    else:
        registry = state.open_registry()
        try:
            report = Lander(registry, config.resolved_state_dir(), config.work).land(
                LandRequest(taskset=taskset, into=into, check=argv, push=push,
                            push_task_branches=push_task_branches))
        finally:
            registry.close()
    _print_report(report)
    if not report.ok:
        raise click.exceptions.Exit(1)


POLL = 0.2  # seconds between looks at the running Dispatcher's landing


def _land_through_dispatcher(config: Any, payload: dict[str, Any]) -> LandReport:
    """Ask the running Dispatcher to land, then wait for its report in the status."""
    import time
    import uuid

    from necrocode.dispatcher.api.client import ApiError

    from . import remote

    land_id = uuid.uuid4().hex[:12]
    remote.control(config, "land", {**payload, "id": land_id})
    while True:
        try:
            status = remote.fetch_status(config, queued=0, finished=0, events=0)
        except ApiError as exc:
            fail(f"the dispatcher stopped answering during the landing ({exc.message})",
                 "`necroui tasks --json` shows what landed (the landed field)")
        if status.get("state") == "not running":
            fail("the dispatcher stopped before the landing ended",
                 "`necroui tasks --json` shows what landed; run `necroui land` again")
        view = next((v for v in status.get("landings") or () if v.get("land_id") == land_id),
                    None)
        if view is not None and view.get("state") == "error":
            fail(str(view.get("error")))
        if view is not None and view.get("state") == "done" and view.get("report"):
            return LandReport.from_dict(view["report"])
        time.sleep(POLL)


def _print_report(report: LandReport) -> None:
    gate = f", gate `{' '.join(report.check)}`" if report.check else ""
    click.echo(f"landing {report.taskset} into {report.branch}{gate}")
    for outcome in report.outcomes:
        word, colour = _MARKS[outcome.kind]
        commit = f" {outcome.commit[:10]}" if outcome.commit else ""
        click.echo(f"  {click.style(f'{word:<11}', fg=colour)} {outcome.key}{commit}: "
                   f"{outcome.message}")
        if outcome.output and outcome.kind in (LandKind.GATE_FAILED, LandKind.SENT_BACK):
            for line in outcome.output.splitlines()[-8:]:
                click.echo(f"      | {line}")
    counts = [f"{report.count(k)} {_MARKS[k][0]}" for k in LandKind if report.count(k)]
    for repo in report.repos:
        where = repo.head[:10] if repo.head else "not created"
        click.echo(f"{repo.branch} of {repo.repo}: {where}")
        for ref in repo.pushed:
            click.echo(f"  pushed {ref}")
    click.echo(", ".join(counts))
    for error in report.push_errors:
        click.secho(f"error: {error}", fg="red", err=True)


@click.command(epilog="""\b
Examples:
  necroui diff chat-app/1.2            stat and patch of its work against its base
  necroui diff chat-app/1.2 --stat     files and line counts only
""")
@click.argument("key")
@click.option("--stat", "stat_only", is_flag=True, help="Only the changed files and counts.")
@pass_state
def diff(state: CliState, key: str, stat_only: bool) -> None:
    """Show the work of task KEY (taskset/id): branch, commits, stat and patch."""
    from necrocode.dispatcher.work_diff import task_diff

    registry = state.open_registry()
    try:
        task = registry.get_task(key)
    finally:
        registry.close()
    result = task_diff(task, state.config().resolved_state_dir(), patch=not stat_only)
    click.echo(f"{task.key} on {result.branch}: {result.base[:10]}..{result.head[:10]}, "
               f"{len(result.commits)} commit(s)")
    for commit in result.commits:
        click.echo(f"  {commit.sha[:10]} {commit.subject}")
    rows = [(f.path, "bin" if f.binary else f"+{f.added}", "" if f.binary else f"-{f.deleted}")
            for f in result.files]
    if rows:
        console.print_rows(["FILE", "ADDED", "DELETED"], rows, right=("ADDED", "DELETED"))
    if result.patch:
        click.echo(result.patch, nl=not result.patch.endswith("\n"))
    if result.truncated:
        click.echo(f"(patch cut at {len(result.patch)} characters)")


COMMANDS = [land, diff]

__all__ = ["COMMANDS", "fail"]
