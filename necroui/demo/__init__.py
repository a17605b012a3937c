"""The demo of necroui: a 30-task taskset run by a bundled fake agent.

``necroui --demo`` (dashboard) and ``necroui --no-tui --demo`` call :func:`demo_config` to give
the default configuration three local pools (one per demo skill) and short retry backoffs, and
:func:`submit_demo` to submit ``demo.yaml`` when the registry holds no tasks yet. With
``--agents`` the same tasks run coding-agent presets: a real CLI when one is installed
(:mod:`.real_agents`: Claude Code, Codex, Gemini CLI or mini-swe-agent against a scripted model
server on 127.0.0.1), else the ``claude-code`` preset on a stand-in for Claude Code
(:mod:`.fake_claude`) — so tokens, turns, cost and a budget stop show without a model.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # kept light: `python -m necroui.demo.fake_agent` imports this package
    from necrocode.dispatcher.config import DispatcherConfig

logger = logging.getLogger(__name__)

DEMO_FILE = "demo.yaml"
DEMO_TASKSET = "demo"


def demo_taskset_path() -> Path:
    """Path of the bundled demo taskset."""
    return Path(str(resources.files(__name__).joinpath(DEMO_FILE)))


def _is_default_setup(config: DispatcherConfig) -> bool:
    from necrocode.dispatcher.models import PoolType

    pools = config.agent_pools
    if not pools:
        return True
    return (len(pools) == 1 and pools[0].name == "local"
            and pools[0].type is PoolType.LOCAL_PROCESS
            and config.skill_mapping in ({}, {"default": ["local"]}))


def demo_config(config: DispatcherConfig) -> DispatcherConfig:
    """The config for a demo run.

    With the default pools, three local pools take the demo's skills (database 1, backend 3,
    frontend 2 runners); with the default retry settings, backoffs are shortened to about a
    second. A config of your own keeps its pools. The fake agent is started as ``python3 -m
    necroui.demo.fake_agent``: the folder of this Python is put first on PATH so ``python3`` is
    the interpreter necroui is installed in.
    """
    from necrocode.dispatcher.config import DispatcherConfig
    from necrocode.dispatcher.models import AgentPool, PoolType

    changes: dict[str, Any] = {}
    if _is_default_setup(config):
        changes["agent_pools"] = [
            AgentPool(name="database", type=PoolType.LOCAL_PROCESS, max_concurrency=1),
            AgentPool(name="backend", type=PoolType.LOCAL_PROCESS, max_concurrency=3),
            AgentPool(name="frontend", type=PoolType.LOCAL_PROCESS, max_concurrency=2),
        ]
        changes["skill_mapping"] = {"database": ["database"], "backend": ["backend"],
                                    "frontend": ["frontend"],
                                    "default": ["backend", "frontend", "database"]}
        changes["max_global_concurrency"] = max(6, min(config.max_global_concurrency, 6))
    defaults = DispatcherConfig()
    if config.retry_backoff_base == defaults.retry_backoff_base:
        changes["retry_backoff_base"] = 1.2
    if config.retry_backoff_max == defaults.retry_backoff_max:
        changes["retry_backoff_max"] = 5.0
    _python_first_on_path()
    return replace(config, **changes) if changes else config


def _python_first_on_path() -> None:
    folder = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    parts = path.split(os.pathsep) if path else []
    if folder and (not parts or parts[0] != folder):
        os.environ["PATH"] = os.pathsep.join([folder, *[p for p in parts if p != folder]])


@dataclass(frozen=True)
class DemoStart:
    """What :func:`prepare_demo` did: tasks submitted, and a hint to show (or None)."""

    submitted: int
    hint: str | None = None


def _registry_shown(core: Any) -> str:
    label = str(getattr(core, "registry_label", "") or "")
    try:
        rel = os.path.relpath(label)
    except ValueError:
        return label
    return os.path.abspath(label) if rel.startswith("..") else f"./{rel}"


def _with_this_python(taskset: Any) -> Any:
    """Demo commands start with ``python3`` in demo.yaml (readable); the registry gets the
    absolute interpreter necroui runs in, so a restart without --demo, from a shell without
    the venv activated, still finds necroui."""
    for task in taskset.tasks:
        if task.command and task.command[0] in ("python3", "python"):
            task.command = [sys.executable, *task.command[1:]]
    return taskset


#: The agents demo's task stopped by its budget: its tokens cross max_tokens at the 5th turn.
BUDGET_TASK, BUDGET_TOKENS = "be.7", 50_000
_FAKE = ("necroui.demo.fake_agent",)


def fake_claude_path() -> Path:
    """The demo's stand-in for ``claude`` (written at each agents demo start, for this Python)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = cache / "necrocode" / "demo" / "claude"
    script = (f"#!{sys.executable}\n# necroui --demo --agents: a stand-in for Claude Code\n"
              "import sys\nfrom necroui.demo.fake_claude import main\nsys.exit(main())\n")
    if not path.is_file() or path.read_text(encoding="utf-8") != script:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".claude.{os.getpid()}")
        tmp.write_text(script, encoding="utf-8")
        tmp.chmod(0o755)
        tmp.replace(path)  # atomic: a run starting now sees the old or the new one
    return path


#: With a real CLI on the scripted model: each request counts 100+ input tokens, so this budget
#: is crossed at the second request.
REAL_BUDGET_TOKENS = 200


def _as_agents(taskset: Any, real: tuple[Any, str] | None = None) -> Any:
    """The demo's tasks as coding-agent runs, one task with a token budget it crosses: the
    real CLI ``real`` (:func:`.real_agents.find_cli`) on the scripted model server, else the
    ``claude-code`` preset on the stand-in with the fake agent's options passed on."""
    executable = str(fake_claude_path()) if real is None else real[1]
    for task in taskset.tasks:
        if not task.command or tuple(task.command[1:3]) != ("-m", *_FAKE):
            continue
        task.command, extra = None, list(task.command[3:])
        if real is not None:
            from .real_agents import agent_options

            task.agent = real[0].preset
            task.agent_options = agent_options(real[0], executable)
            if task.id == BUDGET_TASK:
                task.max_tokens = REAL_BUDGET_TOKENS
            continue
        if task.id == BUDGET_TASK:
            extra = ["--seconds", "6", "--turns", "8"]
            task.max_tokens = BUDGET_TOKENS
        task.agent = "claude-code"
        task.agent_options = {"executable": executable, "extra_args": extra}
    return taskset


def _agents_start(taskset: Any) -> tuple[Any, str]:
    """The agents demo's taskset and what to tell about it (which CLI runs, or how to get
    one)."""
    from .real_agents import CHOICE_ENV, CLIS, find_cli, install_hint

    try:
        real = find_cli()
    except ValueError as exc:  # a bad NECROUI_DEMO_AGENT: said, and the stand-in plays
        return _as_agents(taskset), f"{exc}; a stand-in plays Claude Code"
    if real is None:
        chosen = CLIS.get(os.environ.get(CHOICE_ENV, ""))
        if chosen is not None:
            return _as_agents(taskset), (f"{CHOICE_ENV}={chosen.preset}: {chosen.program} is "
                                         f"not installed ({chosen.install}); a stand-in "
                                         "plays Claude Code")
        return _as_agents(taskset), install_hint()
    taskset = _as_agents(taskset, real)
    url = taskset.tasks[0].agent_options.get("base_url", "") if taskset.tasks else ""
    return taskset, (f"agents demo: the real {real[0].program} ({real[1]}) runs each task "
                     f"against a scripted model at {url} (no key, no network)")


def prepare_demo(core: Any, *, agents: bool = False) -> DemoStart:
    """Submit the demo taskset through ``core`` (a DispatcherCore) when the registry is empty;
    when it already holds a demo that has nothing left to run, the hint says how to start
    afresh (the console shows it as a notification, headless prints it). ``agents``: the
    tasks run the ``claude-code`` preset on the demo's stand-in (tokens, cost, a budget)."""
    from necrocode.dispatcher.models import TaskState
    from necrocode.dispatcher.tasksets import load_taskset_file

    counts = core.registry.count_tasks()
    if sum(counts.values()) > 0:
        logger.info("registry already holds tasks: demo taskset not submitted")
        active = sum(counts.get(s, 0) for s in (TaskState.READY, TaskState.BLOCKED,
                                                   TaskState.RUNNING))
        if active:
            return DemoStart(0)
        where = _registry_shown(core)
        return DemoStart(0, f"the demo already ran in {where}; delete that file or pass "
                            "--registry to start afresh")
    taskset, _warnings = load_taskset_file(demo_taskset_path(), core.config, core.registry)
    hint = None
    if agents:
        taskset, hint = _agents_start(taskset)
    else:
        taskset = _with_this_python(taskset)
    result = core.submit(taskset)
    return DemoStart(len(result.created), hint)


def submit_demo(core: Any) -> int:
    """Submit the demo taskset through ``core`` (a DispatcherCore) when the registry is empty.

    Returns the number of tasks submitted (0 when the registry already held tasks).
    """
    return prepare_demo(core).submitted


__all__ = ["DEMO_TASKSET", "DemoStart", "demo_config", "demo_taskset_path", "fake_claude_path",
           "prepare_demo", "submit_demo"]
