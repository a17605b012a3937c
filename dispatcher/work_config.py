"""The ``work:`` section of the config: how work flows between tasks (R21).

::

    work:
      commit_author: "NecroCode Dispatcher <dispatcher@necrocode.invalid>"
      commit_message: "{title} ({key})"  # {key} {id} {taskset} {title} {description} {summary}
      on_no_changes: done          # done (with a warning) | fail
      merge_dependencies: true     # dependents start from their dependencies' work
      integration_branch: "necrocode/{taskset}"
      land_check: ["make", "test"] # argv run on the merged tree before each landing
      gate_timeout: 1800
      on_gate_failure: stop        # stop | retry (the task runs again with the check's output)
      push_task_branches: false

Parsing and validation live here so that :mod:`.config_loader` only routes the section.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any

from .config import WorkConfig
from .errors import Problem
from .section_keys import section_values
from .yaml_source import Locate, Path_, type_name

WORK_KEYS = tuple(f.name for f in fields(WorkConfig))
#: Placeholders a commit message may use.
MESSAGE_FIELDS = ("key", "id", "taskset", "title", "description", "summary")
ON_NO_CHANGES = ("done", "fail")
ON_GATE_FAILURE = ("stop", "retry")
_AUTHOR = re.compile(r"^[^<>\n]+<[^<>\s]+>$")
_BAD_REF = re.compile(r"(^[-/.])|(\.\.)|(//)|([\s~^:?*\[\\\x00-\x1f\x7f])|(@\{)|([/.]$)|(\.lock$)"
                      r"|(/\.)|(\.lock/)")


def work_from_section(raw: dict[Any, Any], locate: Locate, problems: list[Problem]) -> WorkConfig:
    """The WorkConfig of a parsed ``work:`` mapping (unknown keys are problems)."""
    return WorkConfig(**section_values("work", raw, WORK_KEYS, locate, problems))


def valid_branch_name(name: str) -> bool:
    """True when ``name`` is a branch name git accepts (``git check-ref-format --branch``)."""
    return bool(name) and _BAD_REF.search(name) is None


def integration_branch(work: WorkConfig, taskset: str) -> str:
    """The integration branch of ``taskset`` (``work.integration_branch`` filled in)."""
    return work.integration_branch.replace("{taskset}", _ref_part(taskset))


def _ref_part(text: str) -> str:
    part = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    return re.sub(r"\.{2,}", ".", part).strip(".-") or "x"


def message_problem(template: str) -> str | None:
    """Why ``template`` is not a usable commit message template, or None."""
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return f"cannot be formatted: {exc} (write a literal brace as {{{{ or }}}})"
    unknown = sorted({n for n in names if n not in MESSAGE_FIELDS})
    if unknown:
        return (f"unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
                f"known: {', '.join('{' + n + '}' for n in MESSAGE_FIELDS)}")
    return None


def validate_work(work: Any, add: Callable[..., None]) -> None:
    """Add every problem of a ``work:`` section (types, allowed values, templates)."""
    if not isinstance(work, WorkConfig):
        add(("work",), f"expected a mapping, got {type_name(work)}")
        return

    def path(name: str) -> Path_:
        return ("work", name)

    for name in ("commit_author", "commit_message", "on_no_changes", "integration_branch",
                 "on_gate_failure"):
        value = getattr(work, name)
        if not isinstance(value, str):
            add(path(name), f"expected a string, got {type_name(value)}")
    for name in ("merge_dependencies", "push_task_branches"):
        value = getattr(work, name)
        if not isinstance(value, bool):
            add(path(name), f"expected true or false, got {type_name(value)}")
    if isinstance(work.commit_author, str) and not _AUTHOR.match(work.commit_author.strip()):
        add(path("commit_author"), f"expected 'Name <email>', got {work.commit_author!r}",
            'e.g. "NecroCode Dispatcher <dispatcher@example.com>"')
    if isinstance(work.commit_message, str):
        why = message_problem(work.commit_message)
        if why:
            add(path("commit_message"), why)
    for name, allowed in (("on_no_changes", ON_NO_CHANGES), ("on_gate_failure", ON_GATE_FAILURE)):
        value = getattr(work, name)
        if isinstance(value, str) and value not in allowed:
            add(path(name), f"expected {' or '.join(allowed)}, got {value!r}")
    if isinstance(work.integration_branch, str) and not valid_branch_name(
            integration_branch(work, "taskset")):
        add(path("integration_branch"), f"not a valid branch name: {work.integration_branch!r}",
            "e.g. necrocode/{taskset} or integration/{taskset}")
    check = work.land_check
    if check is not None and not (isinstance(check, list) and check
                                  and all(isinstance(x, str) for x in check)):
        add(path("land_check"), f"expected a non-empty list of strings (argv), got "
            f"{type_name(check)}", 'e.g. ["make", "test"]; it never runs in a shell')
    timeout = work.gate_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        add(path("gate_timeout"), f"expected a number of seconds, got {type_name(timeout)}")
    elif timeout <= 0:
        add(path("gate_timeout"), f"must be > 0, got {timeout:g}")


def work_to_dict(work: WorkConfig) -> dict[str, Any]:
    """The section as plain data (``config show``)."""
    data = asdict(work)
    if isinstance(data.get("gate_timeout"), int):
        data["gate_timeout"] = float(data["gate_timeout"])
    return data
