"""The prompt of a coding task: a template filled from the task, its slot and its dependencies.

The engine gives :class:`PromptInput` (with one :class:`DependencyResult` per dependency); the
template is the config's ``agent_prompt_template`` (``{name}`` placeholders, see
:data:`PLACEHOLDERS`), else :data:`DEFAULT_TEMPLATE`. The text given to the agent is kept with
the attempt as ``prompt.md``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..models import Task
from .base import PROMPT_FILE, AttemptContext, clip

#: Longest prompt passed on the command line; a longer one is read from ``prompt.md``.
MAX_ARGUMENT = 100_000

#: Metadata keys shown as their own sections rather than in the metadata list.
REQUIREMENT_KEYS = ("requirements",)
ACCEPTANCE_KEYS = ("acceptance", "acceptance_criteria", "acceptance_notes")

DEFAULT_TEMPLATE = """\
# Task {task_key}: {title}

{description}
{requirements}{acceptance}{metadata}{dependencies}
## Where you work
- Working directory: {slot_path} (a git worktree of the repository)
- Branch: {branch}

Make the change in this working directory, run what checks you can, and leave the work in the
working tree (committing is optional; do not push). Finish with a short summary of what you
changed.
"""

PLACEHOLDERS: Mapping[str, str] = {
    "task_key": "taskset/id of the task",
    "task_id": "the task's id",
    "taskset": "the taskset's name",
    "title": "the task's title",
    "description": "the task's description",
    "requirements": "a '## Requirements' section (metadata requirements), or nothing",
    "acceptance": "a '## Acceptance' section (metadata acceptance notes), or nothing",
    "metadata": "a '## Notes' section with the other metadata, or nothing",
    "dependencies": "a '## Work this builds on' section: each dependency's branch, head and "
    "summary, or nothing",
    "slot_path": "the working directory (git worktree)",
    "branch": "the task's branch",
    "attempt": "the attempt number (1, 2, ...)",
    "last_error": "why the previous attempt failed, or nothing",
}


@dataclass(frozen=True)
class DependencyResult:
    """What a finished dependency left: its branch, head commit and final message."""

    task_key: str
    title: str = ""
    branch: str | None = None
    head: str | None = None
    summary: str = ""  # the agent's final message (or a summary of it)


@dataclass(frozen=True)
class PromptInput:
    """Everything a prompt is made from (the engine fills it at launch)."""

    task: Task
    slot_path: str
    branch: str | None = None
    attempt: int = 1
    dependencies: tuple[DependencyResult, ...] = ()
    last_error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # more placeholders of a template


def dependency_results(task: Task, known: Mapping[str, Task]) -> tuple[DependencyResult, ...]:
    """The results of ``task``'s dependencies found in ``known`` (task key -> task)."""
    out = []
    for dep_id in task.dependencies:
        dep = known.get(f"{task.taskset}/{dep_id}")
        if dep is not None:
            out.append(DependencyResult(dep.key, dep.title, dep.branch, dep.head,
                                        dep.agent_summary or ""))
    return tuple(out)


def build_prompt(data: PromptInput, template: str | None = None) -> str:
    """The prompt text: ``template`` (or the default) with every placeholder filled.

    An unknown ``{name}`` is left as written; ``{{``/``}}`` are literal braces.
    """
    task = data.task
    meta = dict(task.metadata)
    requirements = _pop_any(meta, REQUIREMENT_KEYS)
    acceptance = _pop_any(meta, ACCEPTANCE_KEYS)
    meta.pop("kiro_line", None)
    values: dict[str, Any] = {
        "task_key": task.key,
        "task_id": task.id,
        "taskset": task.taskset,
        "title": task.title,
        "description": task.description.strip() or "(no description)",
        "requirements": _section("Requirements", requirements),
        "acceptance": _section("Acceptance", acceptance),
        "metadata": _section("Notes", meta or None),
        "dependencies": _dependencies(data.dependencies),
        "slot_path": data.slot_path,
        "branch": data.branch or "(none)",
        "attempt": data.attempt,
        "last_error": data.last_error or "",
        **data.extra,
    }
    return (template or DEFAULT_TEMPLATE).format_map(_Keep(values))


def prompt_argument(ctx: AttemptContext) -> str:
    """The prompt for the command line: the text itself, or a pointer to ``prompt.md`` when
    it is too long for one argument."""
    if len(ctx.prompt.encode()) <= MAX_ARGUMENT:
        return ctx.prompt
    return (f"Your task is written in the file {ctx.path(PROMPT_FILE)}. Read it first and "
            "do what it says.")


def _pop_any(meta: dict[str, Any], keys: tuple[str, ...]) -> Any:
    found = None
    for key in keys:
        if key in meta:
            value = meta.pop(key)
            found = value if found is None else found
    return found


def _section(title: str, value: Any) -> str:
    if value in (None, "", [], {}):
        return ""
    if isinstance(value, str):
        body = value.strip()
    elif isinstance(value, list | tuple):
        body = "\n".join(f"- {_text(v)}" for v in value)
    elif isinstance(value, dict):
        body = "\n".join(f"- {k}: {_text(v)}" for k, v in value.items())
    else:
        body = _text(value)
    return f"\n## {title}\n{body}\n"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _dependencies(deps: tuple[DependencyResult, ...]) -> str:
    if not deps:
        return ""
    lines = ["", "## Work this builds on",
             "Your branch starts from the work of these finished tasks:"]
    for dep in deps:
        where = ", ".join(x for x in (f"branch {dep.branch}" if dep.branch else "",
                                      f"head {dep.head[:12]}" if dep.head else "") if x)
        head = f"- {dep.task_key}" + (f" ({dep.title})" if dep.title else "")
        lines.append(head + (f" — {where}" if where else ""))
        if dep.summary:
            lines.append(f"  Summary: {clip(dep.summary, 600)}")
    return "\n".join(lines) + "\n"


class _Keep(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
