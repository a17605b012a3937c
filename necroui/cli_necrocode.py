"""``necroui import-necrocode DIR``: copy an original NecroCode registry into this one."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_common import CliState, fail, pass_state


@click.command("import-necrocode", epilog="""\b
DIR is an original NecroCode registry (tasksets/<spec>/taskset.json, events/, locks/); it is
only read. The target is the registry of --registry (default ./.necrocode/registry.db).
DONE and CANCELLED tasks stay so, FAILED ones too where free to run, RUNNING ones run again,
the rest is READY or BLOCKED by its dependencies. To dispatch DIR in place instead, point
--registry at it.

\b
Examples:
  necroui import-necrocode ~/.necrocode/registry
  necroui --registry team.db import-necrocode /srv/necrocode/registry
""")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@pass_state
def import_necrocode(state: CliState, directory: str) -> None:
    """Copy the tasksets and events of a NecroCode registry DIRECTORY into the registry."""
    from necrocode.dispatcher.registry import NecroCodeRegistry
    from necrocode.dispatcher.registry.necrocode_files import LAYOUT
    from necrocode.dispatcher.registry.necrocode_import import import_tasksets

    if not (Path(directory) / "tasksets").is_dir():
        fail(f"{directory} is not a NecroCode registry: it has no tasksets/ folder",
             f"a NecroCode registry holds {', '.join(f + '/' for f in LAYOUT)}")
    if Path(directory).resolve() == state.registry_path().expanduser().resolve():
        fail(f"{directory} is already the registry (--registry); nothing to import",
             "give the embedded registry's file with --registry, e.g. --registry registry.db")
    source = NecroCodeRegistry(directory)
    if not source.list_tasksets():
        fail(f"{directory} has no tasksets (tasksets/<spec>/taskset.json)")
    target = state.open_registry()
    try:
        reports = import_tasksets(source, target)
    finally:
        target.close()
    for r in reports:
        states = ", ".join(f"{n} {s}" for s, n in r.states.items())
        click.echo(f"{r.name}: {r.tasks} task(s) ({r.created} created, {r.updated} updated; "
                   f"{states}), {r.events} event(s) copied")
        if r.requeued:
            click.echo(f"  running in {directory}, ready to run again here: "
                       f"{', '.join(r.requeued)}")
        if r.not_failed:
            click.echo(f"  failed there, blocked here behind their dependencies: "
                       f"{', '.join(r.not_failed)}")
    click.echo(f"imported {len(reports)} taskset(s) into "
               f"{state.config().resolved_registry_path()}")
