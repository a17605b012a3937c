"""Plain values from composed YAML nodes, without the line table (the fast path of a load).

:func:`~.yaml_source.parse_yaml` records the line of every key and list item so that an error
can name it. A taskset of 100,000 tasks has 600,000 of them, and a valid file never needs one:
``parse_yaml(text, lines=False)`` builds the values only, through :func:`plain_value`, and
the caller parses again with lines when there is a problem to locate.

:func:`plain_value` gives up (returns None) on whatever the full walk treats specially, so
that walk handles it the one way it already does: a key given twice, a key that is not a
string, a merge key, a tag of its own on a mapping or list, nesting deeper than the limit.
Documents with anchors never come here (their aliases are counted against a budget).
"""

from __future__ import annotations

from typing import Any

import yaml

Path_ = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"


class _GiveUp(Exception):
    """The document needs the full walk (see the module docstring)."""


def plain_value(node: yaml.Node, loader: Any,
                max_depth: int) -> tuple[Any, dict[Path_, str]] | None:
    """The value of the document ``node`` and the text of each number whose value prints
    differently (``1.10`` read as 1.1: ids are kept as written), by path; None when the full
    walk must build it instead. ``loader`` constructs the scalars that are not plain strings
    or plain decimal integers (PyYAML's rules for floats, booleans, dates)."""
    raw: dict[Path_, str] = {}
    try:
        return _value(node, (), loader, raw, max_depth), raw
    except _GiveUp:
        return None


def _scalar(node: yaml.Node, loader: Any, raw: dict[Path_, str], path: Path_) -> Any:
    text = node.value
    tag = node.tag
    if tag == _STR:
        return text
    if tag == _INT and text.isdigit() and (text[0] != "0" or text == "0"):
        return int(text)
    value = loader.construct_object(node, deep=True)
    if isinstance(value, int | float) and not isinstance(value, bool) and str(value) != text:
        raw[path] = str(text)
    return value


def _value(node: yaml.Node, path: Path_, loader: Any, raw: dict[Path_, str], depth: int) -> Any:
    kind = type(node)
    if kind is yaml.ScalarNode:
        return _scalar(node, loader, raw, path)
    if depth <= 0:
        raise _GiveUp
    if kind is yaml.MappingNode:
        if node.tag != _MAP:
            raise _GiveUp
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag != _STR or type(key_node) is not yaml.ScalarNode:
                raise _GiveUp  # a merge key, a number or null as a key
            key = key_node.value
            if key in out:
                raise _GiveUp  # the full walk reports it with both lines
            if type(value_node) is yaml.ScalarNode:
                if value_node.tag == _STR:
                    out[key] = value_node.value  # the common case, without a call
                else:
                    out[key] = _scalar(value_node, loader, raw, (*path, key))
            else:
                out[key] = _value(value_node, (*path, key), loader, raw, depth - 1)
        return out
    if kind is yaml.SequenceNode:
        if node.tag != _SEQ:
            raise _GiveUp
        items: list[Any] = []
        append = items.append
        for i, item in enumerate(node.value):
            if type(item) is yaml.ScalarNode and item.tag == _STR:
                append(item.value)
            else:
                append(_value(item, (*path, i), loader, raw, depth - 1))
        return items
    raise _GiveUp
