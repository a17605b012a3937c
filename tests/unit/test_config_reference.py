"""The README's configuration reference lists every key of the config model, and the model's
reference (``necroui config keys``) documents every key."""

from __future__ import annotations

from pathlib import Path

import pytest
from necrocode.dispatcher.config_reference import config_reference, reference_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.skipif(not README.exists(), reason="no README")
def test_readme_reference_lists_every_key() -> None:
    text = README.read_text(encoding="utf-8")
    missing = []
    for doc in config_reference():
        section, _, rest = doc.key.partition(".")
        name = rest.removeprefix("NAME.")
        cell = f"| `{doc.key}` |" if section == "ui" else f"| `{name}` |"
        if section == "skill_mapping":
            cell = "`skill_mapping`"
        if cell not in text:
            missing.append(doc.key)
    assert missing == [], f"README.md does not document: {missing}"


def test_markdown_has_a_row_per_key() -> None:
    rows = reference_markdown().splitlines()[2:]
    assert len(rows) == len(config_reference())
    assert all(row.startswith("| `") and row.endswith(" |") for row in rows)


@pytest.mark.skipif(not README.exists(), reason="no README")
def test_readme_defaults_match_the_model() -> None:
    import re
    from dataclasses import MISSING, fields
    from enum import Enum

    import yaml
    from necrocode.dispatcher.config import DispatcherConfig, UIConfig
    from necrocode.dispatcher.models import AgentPool

    def defaults(cls: type, prefix: str = "") -> dict[str, object]:
        out: dict[str, object] = {}
        for f in fields(cls):
            value = f.default if f.default is not MISSING else (
                f.default_factory() if f.default_factory is not MISSING else None)
            out[prefix + f.name] = value.value if isinstance(value, Enum) else value
        return out

    model = {**defaults(DispatcherConfig), **defaults(AgentPool), **defaults(UIConfig, "ui.")}
    rows = re.findall(r"^\| `([\w.]+)` \| `([^`]*)` \|", README.read_text(encoding="utf-8"),
                      re.MULTILINE)
    assert len(rows) >= 30
    wrong = {key: (text, model[key]) for key, text in rows
             if key in model and yaml.safe_load(text) != model[key]}
    assert wrong == {}, f"README default differs from the model: {wrong}"
