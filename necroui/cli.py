"""The ``necroui`` command: the dashboard, headless mode, and commands for tasks and config.

User mistakes (a bad config or taskset, an unknown task) print every problem on stderr and exit
1; a wrong flag exits 2 (click's usage error); nothing prints a traceback for them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from necrocode.dispatcher.models import TaskState

from . import console
from .cli_attach import COMMANDS as ATTACH_COMMANDS
from .cli_common import (
    CONFIG_ENV,
    REGISTRY_ENV,
    CliState,
    NecroGroup,
    fail,
    pass_state,
)
from .cli_config import config as config_group
from .cli_control import COMMANDS as CONTROL_COMMANDS
from .cli_control import registry_control
from .cli_necrocode import import_necrocode
from .cli_work import COMMANDS as WORK_COMMANDS

STATES = [s.value for s in TaskState]
LOG_LEVELS = ["debug", "info", "warning", "error", "critical"]


MAIN_EPILOG = """\b
Examples:
  necroui --demo                         dashboard with a demo taskset
  necroui --demo --agents                the demo as coding agents: tokens, cost, budget
  necroui --no-tui --demo --until-done   run the demo headless, exit when done
  necroui submit tasks.yaml              add or update a taskset
  necroui tasks --state ready            list tasks that may run now
  necroui plan tasks.yaml                predict how long it will take
  necroui config check my.yaml           check a config file

\b
Without --config (or $NECROCODE_CONFIG) the defaults are used: one local-process pool
named 'local' running 4 agents, and every skill mapped to it. The registry defaults to
./.necrocode/registry.db (--registry or $NECROCODE_REGISTRY to change it).
"""


@click.group(cls=NecroGroup, invoke_without_command=True, epilog=MAIN_EPILOG,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", metavar="FILE", envvar=CONFIG_ENV,
              type=click.Path(dir_okay=False),
              help="Dispatcher config (YAML). Default: built-in defaults with one local pool. "
                   f"Env: {CONFIG_ENV}.")
@click.option("--registry", metavar="PATH", envvar=REGISTRY_ENV,
              help="Task Registry: a database file, or an original NecroCode registry "
                   "directory. Default: ./.necrocode/registry.db. "
                   f"Env: {REGISTRY_ENV}.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
              default="warning", show_default=True, help="Least severe log level shown.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Log lines as text or as JSON objects.")
@click.option("--demo", is_flag=True, help="Submit the demo taskset first (fake agents).")
@click.option("--agents", is_flag=True,
              help="With --demo: the tasks run the claude-code preset on a stand-in for Claude "
                   "Code (no model, no key): tokens, cost and a budget stop show.")
@click.option("--read-only", is_flag=True, help="Dashboard without any key that changes state.")
@click.option("--no-tui", is_flag=True,
              help="Run headless: progress lines on stdout, a summary, exit 0 if all tasks DONE.")
@click.option("--json", "json_lines", is_flag=True,
              help="With --no-tui: print JSON lines instead of text.")
@click.option("--until-done", is_flag=True,
              help="With --no-tui: stop when no task can make progress any more.")
@click.option("--standby", is_flag=True,
              help="When another dispatcher owns the registry, wait and take over when it "
                   "ends (instead of refusing to start).")
@click.option("--api-port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Port of the HTTP API on 127.0.0.1 (0: any free port).")
@click.version_option(package_name="necrocode-dispatcher", prog_name="necroui")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, registry: str | None, log_level: str,
         log_format: str, demo: bool, agents: bool, read_only: bool, no_tui: bool, json_lines: bool,
         until_done: bool, standby: bool, api_port: int | None) -> None:
    """necroui: operations console of NecroCode Dispatcher.

    Without a command, start the Dispatcher with its live dashboard (or headless with
    --no-tui). The commands below work on the Task Registry and the config.
    """
    state = CliState(config_path=config_path, registry=registry, api_port=api_port,
                     read_only=read_only)
    ctx.obj = state
    if ctx.invoked_subcommand is not None:
        _setup_logging(log_level, log_format)
        return
    if not no_tui:
        headless_only = [flag for flag, on in (("--json", json_lines),
                                               ("--until-done", until_done)) if on]
        if headless_only:
            verb = "applies" if len(headless_only) == 1 else "apply"
            raise click.UsageError(f"{' and '.join(headless_only)} {verb} to headless runs: "
                                   "add --no-tui")
    elif read_only:
        raise click.UsageError("--read-only applies to the dashboard: drop --no-tui")
    if agents and not demo:
        raise click.UsageError("--agents is a variant of the demo: add --demo")
    config = state.config()
    state.registry_path()  # a directory is a clear message, not "unable to open database file"
    if no_tui:
        _setup_logging(log_level, log_format)
        run_headless = _import_runner("necroui.headless", "run_headless", "headless mode")
        code = run_headless(config, demo=demo, agents=agents, json_lines=json_lines,
                            until_done=until_done, log_format=log_format, standby=standby)
    else:
        if standby:
            raise click.UsageError("--standby applies to headless runs: add --no-tui")
        run_dashboard = _import_runner("necroui.app", "run_dashboard", "dashboard")
        code = run_dashboard(config, demo=demo, read_only=read_only, agents=agents)
    ctx.exit(int(code or 0))


def _setup_logging(level: str, fmt: str) -> None:
    from necrocode.dispatcher.logging_setup import setup_logging

    setup_logging(level.upper(), fmt)


def _import_runner(module: str, name: str, what: str) -> Any:
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        fail(f"the {what} is not available in this installation ({exc})",
             "reinstall necrocode-dispatcher, or use the subcommands (necroui --help)")


# --- tasks in ----------------------------------------------------------------------------------


def _print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)


def _print_submit(result: Any) -> None:
    click.echo(f"{result.taskset}: {len(result.created)} created, {len(result.updated)} updated, "
               f"{len(result.unchanged)} unchanged; {len(result.ready)} ready to run")


def _print_kept(taskset: Any, registry: Any, *, dry_run: bool) -> None:
    """Say which tasks of the registry the file no longer lists (a submit never deletes)."""
    from necrocode.dispatcher.graph import natural_key
    from necrocode.dispatcher.tasksets import tasks_not_in

    kept = sorted(tasks_not_in(taskset, registry, submitted=not dry_run),
                  key=lambda t: natural_key(t.key))
    if not kept:
        return
    shown = ", ".join(f"{t.key} ({t.state.value})" for t in kept[:10])
    more = f" and {len(kept) - 10} more" if len(kept) > 10 else ""
    noun = "task" if len(kept) == 1 else "tasks"
    verb = "would keep" if dry_run else "kept"
    line = f"{verb} {len(kept)} {noun} not in the file: {shown}{more}"
    open_ = [t for t in kept if not t.state.terminal]
    if len(open_) == 1:
        line += f"; cancel it with `necroui cancel {open_[0].key}`"
    elif open_:
        line += f"; cancel the unfinished ones with `necroui cancel KEY` ({len(open_)})"
    click.echo(line)


@main.command(epilog="""\b
Examples:
  necroui submit tasks.yaml
  necroui submit --dry-run tasks.yaml   check only, write nothing
""")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Validate and report, but write nothing.")
@pass_state
def submit(state: CliState, file: str, dry_run: bool) -> None:
    """Add or update a taskset from a YAML FILE.

    Everything is checked first (ids, dependencies, cycles, types); on any problem every one
    is printed and nothing is written. Re-submitting a taskset updates its tasks and keeps
    their state; tasks no longer in the file are kept too, and listed (cancel them if they
    should not run). A running Dispatcher on the same registry picks the tasks up by itself.
    """
    from necrocode.dispatcher.tasksets import load_taskset_file

    if Path(file).suffix.lower() in (".md", ".markdown"):
        fail(f"{file} is Markdown, not a YAML taskset",
             f"for a Kiro tasks.md use `necroui import-kiro {file}`")
    config = state.config()
    registry = state.open_registry()
    try:
        taskset, warnings = load_taskset_file(file, config, existing=registry)
        _print_warnings(warnings)
        if dry_run:
            click.echo(f"{taskset.name}: {len(taskset.tasks)} task(s) valid; nothing written "
                       "(--dry-run)")
        else:
            _print_submit(registry.submit_taskset(taskset))
        _print_kept(taskset, registry, dry_run=dry_run)
    finally:
        registry.close()


@main.command("import-kiro", epilog="""\b
Mapping: '- [x] 1. Title' is DONE, '- [ ]' is READY (or BLOCKED behind its dependencies),
the numbering gives the ids, '- [ ]* 2.3' is optional, detail lines become the description.
A parent task depends on its sub-tasks; each item follows the one before it (--parallel
drops that ordering). Kiro tasks have no command: the agent_command of the pool they go
to runs them (a warning says when a pool lacks one).

\b
Examples:
  necroui import-kiro .kiro/specs/chat-app/tasks.md
  necroui import-kiro tasks.md --taskset chat-app --parallel
""")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--taskset", "taskset_name", metavar="NAME",
              help="Taskset name. Default: the spec folder (for tasks.md) or the file name.")
@click.option("--parallel", is_flag=True,
              help="Do not chain items in file order: only parents wait for their "
                   "sub-tasks, the rest may run at once.")
@click.option("--dry-run", is_flag=True, help="Parse and report, but write nothing.")
@pass_state
def import_kiro(state: CliState, file: str, taskset_name: str | None, parallel: bool,
                dry_run: bool) -> None:
    """Import a Kiro spec's tasks.md FILE as a taskset."""
    from necrocode.dispatcher.registry.kiro import load_kiro_file
    from necrocode.dispatcher.tasksets import validate_taskset

    taskset = load_kiro_file(file, taskset_name, sequential=not parallel)
    config = state.config()
    registry = state.open_registry()
    try:
        _print_warnings(validate_taskset(taskset, registry, config))
        if dry_run:
            click.echo(f"{taskset.name}: {len(taskset.tasks)} task(s) valid; nothing written "
                       "(--dry-run)")
        else:
            _print_submit(registry.submit_taskset(taskset))
        _print_kept(taskset, registry, dry_run=dry_run)
    finally:
        registry.close()


# --- looking at tasks --------------------------------------------------------------------------


@main.command(epilog="""\b
Examples:
  necroui tasks --state ready --state running
  necroui tasks --taskset chat-app --sort priority
  necroui tasks --json | jq '.[] | select(.state == "failed") | .key'
""")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES),
              help="Only tasks in this state (repeat for several).")
@click.option("--skill", metavar="NAME", help="Only tasks needing this skill.")
@click.option("--taskset", metavar="NAME", help="Only tasks of this taskset.")
@click.option("--tenant", metavar="NAME", help="Only tasks of this tenant.")
@click.option("--sort", type=click.Choice(["key", "priority", "updated"]), default="key",
              show_default=True,
              help="Order: by key (taskset, then id), by priority (highest first), or by "
                   "last change (newest first).")
@click.option("--limit", type=click.IntRange(min=1), metavar="N",
              help="Show at most N tasks.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON array of tasks (fields id, taskset, title, state, "
                   "dependencies, required_skill, priority, ...).")
@pass_state
def tasks(state: CliState, states: tuple[str, ...], skill: str | None, taskset: str | None,
          tenant: str | None, sort: str, limit: int | None, as_json: bool) -> None:
    """List tasks in the registry, filtered and sorted."""
    registry = state.open_registry()
    try:
        found = registry.list_tasks(
            state=[TaskState(s) for s in states] or None, skill=skill, taskset=taskset,
            tenant=tenant, order_by=sort, limit=None if sort == "key" else limit)
    finally:
        registry.close()
    if sort == "key":
        from necrocode.dispatcher.graph import natural_key

        found = sorted(found, key=lambda t: natural_key(t.key))[:limit]  # 2 after 10
    if as_json:
        click.echo(json.dumps([t.to_dict() for t in found], indent=2))
        return
    if not found:
        click.echo("no tasks match" if (states or skill or taskset or tenant)
                   else "no tasks yet; add some with `necroui submit FILE`")
        return
    rows = [
        (t.key, console.state_text(t.state.value), t.priority, t.required_skill or "-",
         t.tenant, t.attempts, t.title)
        for t in found
    ]
    console.print_rows(["KEY", "STATE", "PRI", "SKILL", "TENANT", "FAILS", "TITLE"], rows,
                       right=("PRI", "FAILS"))


@main.command(epilog="""\b
TASKSET is a taskset name in the registry, or a taskset file (.yaml, or a Kiro .md)
to look at before submitting it.

\b
Examples:
  necroui graph chat-app
  necroui graph chat-app --format mermaid > graph.mmd
  necroui graph tasks.yaml --format dot | dot -Tsvg > graph.svg
""")
@click.argument("taskset")
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "mermaid", "levels"]),
              default="text", show_default=True,
              help="text: levels with the critical path; dot: Graphviz; mermaid: Mermaid "
                   "flowchart; levels: execution order, one level per line.")
@pass_state
def graph(state: CliState, taskset: str, fmt: str) -> None:
    """Show the dependency graph of a TASKSET."""
    from necrocode.dispatcher import graph as G

    found = _graph_tasks(state, taskset)
    g = G.build_graph(found)
    if fmt == "dot":
        click.echo(G.to_dot(g, name=taskset), nl=False)
    elif fmt == "mermaid":
        click.echo(G.to_mermaid(g), nl=False)
    elif fmt == "levels":
        click.echo(G.render_levels(g), nl=False)
    else:
        click.echo(G.render_text(g), nl=False)


def _graph_tasks(state: CliState, name: str) -> list[Any]:
    """The tasks of a taskset file (read only) or of a taskset in the registry."""
    from necrocode.dispatcher.errors import TasksetError

    path = Path(name)
    if path.suffix.lower() in (".yaml", ".yml", ".md") and path.is_file():
        try:
            if path.suffix.lower() == ".md":
                from necrocode.dispatcher.registry.kiro import load_kiro_file

                return load_kiro_file(path).tasks
            from necrocode.dispatcher.tasksets import load_taskset_file

            return load_taskset_file(path)[0].tasks
        except TasksetError as exc:  # this command writes nothing anyway: do not say so
            raise TasksetError(exc.problems,
                               title=exc.title.removesuffix("; nothing written")) from None
    registry = state.open_registry()
    try:
        found = registry.list_tasks(taskset=name)
        if not found:
            known = sorted(t.name for t in registry.list_tasksets())
            fail(f"no taskset named {name!r} in {state.config().resolved_registry_path()}",
                 f"known tasksets: {', '.join(known)}" if known
                 else "submit one first with `necroui submit FILE`")
        return list(found)
    finally:
        registry.close()


@main.command(epilog="""\b
Durations come from each task's 'estimate' (seconds, or '90s', '10m', '2h'); tasks
without one count 1 s. Nothing is launched and nothing is written.

\b
Examples:
  necroui plan tasks.yaml
  necroui --config config/dispatcher.yaml plan tasks.yaml --timeline
  necroui plan chat-app          a taskset already in the registry
""")
@click.argument("taskset")
@click.option("--timeline", is_flag=True, help="Also list when and where each task would run.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@pass_state
def plan(state: CliState, taskset: str, timeline: bool, as_json: bool) -> None:
    """Predict how a TASKSET would run (dry run, nothing written).

    Runs the real scheduler on a virtual clock and prints the predicted makespan, each
    pool's utilisation, the critical path and the tasks that could never run (with why).
    TASKSET is a file (.yaml or Kiro .md) or a taskset name in the registry.
    """
    from dataclasses import asdict

    from necrocode.dispatcher.planner import plan_tasks

    found = _graph_tasks(state, taskset)
    config = state.config()
    result = plan_tasks(found, config)
    if as_json:
        click.echo(json.dumps(asdict(result), indent=2))
        return
    policy = getattr(config.scheduling_policy, "value", config.scheduling_policy)
    done = f" ({result.already_done} already done)" if result.already_done else ""
    click.echo(f"{taskset}: {len(found)} task(s){done}, policy {policy}, "
               f"at most {config.max_global_concurrency} at once")
    click.echo(f"predicted makespan: {console.format_age(result.makespan)} "
               f"({result.makespan:g}s), at most {result.peak_running} running at once")
    if result.critical_path:
        click.echo(f"critical path: {console.format_age(result.critical_length)} "
                   f"({' -> '.join(result.critical_path)})")
    runners = {p.name: p.max_concurrency for p in config.agent_pools}
    rows = [(name, runners.get(name, "-"), console.format_age(result.pool_busy.get(name, 0.0)),
             f"{share:.0%}") for name, share in result.pool_utilisation.items()]
    console.print_rows(["POOL", "RUNNERS", "BUSY", "UTILISATION"], rows,
                       right=("RUNNERS", "BUSY", "UTILISATION"))
    if timeline:
        run_rows = [(r.key, r.pool, f"{r.start:g}", f"{r.end:g}") for r in result.runs]
        console.print_rows(["TASK", "POOL", "START", "END"], run_rows, right=("START", "END"))
    if result.never_run:
        click.secho(f"{len(result.never_run)} task(s) would never run:", fg="yellow")
        for key, why in sorted(result.never_run.items()):
            click.echo(f"  {key}: {why}")


# --- config ------------------------------------------------------------------------------------


for _command in [*CONTROL_COMMANDS, *WORK_COMMANDS, *ATTACH_COMMANDS, import_necrocode,
                 config_group]:
    main.add_command(_command)

__all__ = ["main", "registry_control"]
