"""The README's configuration reference lists every key of the config model, and the model's
reference (``necroui config keys``) documents every key."""

from __future__ import annotations

from pathlib import Path

from necrocode.dispatcher.config_reference import config_reference, reference_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_reference_lists_every_key() -> None:
    text = README.read_text(encoding="utf-8")
    missing = []
    for doc in config_reference():
        section, _, rest = doc.key.partition(".")
        name = rest.removeprefix("NAME.")
        cell = f"| `{doc.key}` |" if section in ("ui", "work", "ha", "notify") else f"| `{name}` |"
        if section == "skill_mapping":
            cell = "`skill_mapping`"
        if cell not in text:
            missing.append(doc.key)
    assert missing == [], f"README.md does not document: {missing}"


def test_markdown_has_a_row_per_key() -> None:
    rows = reference_markdown().splitlines()[2:]
    assert len(rows) == len(config_reference())
    assert all(row.startswith("| `") and row.endswith(" |") for row in rows)


# The README's defaults are checked against the model in test_readme.py.
