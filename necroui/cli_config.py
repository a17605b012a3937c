"""``necroui config``: check, show or document the Dispatcher configuration."""

from __future__ import annotations

import click
from necrocode.dispatcher.config import load_config
from necrocode.dispatcher.config_loader import config_to_dict

from . import console
from .cli_common import CliState, NecroGroup, fail, pass_state


@click.group(cls=NecroGroup, epilog="""\b
Examples:
  necroui config check config/dispatcher.yaml
  necroui --config my.yaml config show
  necroui config keys --markdown
""")
def config() -> None:
    """Check, show or document the Dispatcher configuration."""


@config.command("check", epilog="""\b
Examples:
  necroui config check config/dispatcher.yaml
  necroui --config my.yaml config check
""")
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@pass_state
def config_check(state: CliState, file: str | None) -> None:
    """Check a config FILE: print OK and a summary, or every problem (exit 1).

    FILE defaults to the one given with --config (or $NECROCODE_CONFIG).
    """
    file = file or state.config_path
    if not file:
        fail("no config file to check", "give FILE, or --config FILE before the command")
    cfg = load_config(file)
    policy = getattr(cfg.scheduling_policy, "value", cfg.scheduling_policy)
    click.echo(f"OK: {file}")
    click.echo(f"  policy {policy}, at most {cfg.max_global_concurrency} runners at once, "
               f"poll every {cfg.poll_interval:g}s, heartbeat timeout {cfg.heartbeat_timeout:g}s")
    for pool in cfg.agent_pools:
        limits = [f"{pool.max_concurrency} at once"]
        if pool.cpu_quota is not None:
            limits.append(f"cpu {pool.cpu_quota:g}")
        if pool.memory_quota is not None:
            limits.append(f"memory {pool.memory_quota} MB")
        off = "" if pool.enabled else ", disabled"
        click.echo(f"  pool {pool.name}: {pool.type.value}, {', '.join(limits)}{off}")
    for skill, pools in cfg.skill_mapping.items():
        click.echo(f"  skill {skill} -> {', '.join(pools)}")
    if not cfg.skill_mapping:
        click.echo("  no skill_mapping: tasks go to any pool")


@config.command("show")
@pass_state
def config_show(state: CliState) -> None:
    """Print the effective config as YAML (from --config, else the defaults)."""
    import yaml

    data = config_to_dict(state.config())
    data["dispatcher"]["registry_path"] = str(state.config().resolved_registry_path())
    source = state.config_path or "built-in defaults"
    click.echo(f"# effective configuration ({source})")
    click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


@config.command("keys", epilog="""\b
Examples:
  necroui config keys
  necroui config keys --markdown > docs/config.md
""")
@click.option("--markdown", is_flag=True, help="Print a Markdown table (for documentation).")
def config_keys(markdown: bool) -> None:
    """List every config key with its type, default and meaning."""
    from necrocode.dispatcher.config_reference import config_reference, reference_markdown

    if markdown:
        click.echo(reference_markdown(), nl=False)
        return
    rows = [(d.key, d.default, d.meaning) for d in config_reference()]
    console.print_rows(["KEY", "DEFAULT", "MEANING"], rows)


__all__ = ["config"]
