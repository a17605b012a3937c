"""The keys of one config section (``work:``, ``notify:``, ``ha:``): the known ones kept, each
unknown one a problem at its line with a did-you-mean."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from .errors import Problem
from .yaml_source import Locate


def section_values(section: str, raw: dict[Any, Any], valid: Iterable[str], locate: Locate,
                   problems: list[Problem]) -> dict[str, Any]:
    """The values of ``raw`` whose keys are in ``valid``; the others are appended to
    ``problems`` ("unknown key in section SECTION", with the closest key or the valid ones)."""
    names = list(valid)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key)
        if name in names:
            values[name] = value
            continue
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(names)}"
        problems.append(Problem(locate((section, name)), f"{section}.{name}",
                                f"unknown key in section {section}", hint))
    return values
