"""YAML with line numbers, for error messages that name ``file:line`` and the dotted key.

Used by the config loader and the taskset loader. :func:`parse_yaml` keeps, for every key and
list item, the line it was written on, and the text of every scalar as written (so ``1.10``
can stay ``"1.10"``).

Aliases are expanded within a budget: through aliases a document may repeat at most
:data:`ALIAS_RATIO` times the values it writes out, plus :data:`ALIAS_BUDGET`, and nest at most
:data:`MAX_DEPTH` levels, so a 1 KB "billion laughs" file is refused at once
(:class:`YamlLimitError`) instead of growing to gigabytes. An anchor used inside itself (a
recursive alias) is refused too: such a value cannot be stored.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import Problem
from .yaml_lines import simple_value
from .yaml_plain import plain_value

Path_ = tuple[str | int, ...]
Locate = Callable[[Path_], str]


@dataclass
class YamlDocument:
    """Parsed YAML with where each part came from.

    ``lines`` maps a path (keys and list indexes) to the 1-based line of its key (or item);
    ``raw`` maps the path of each scalar to its text as written (``1.10`` stays ``"1.10"``);
    ``duplicates`` lists paths of mapping keys given twice, with their line. ``located`` is
    False for a document parsed without lines (``lines`` then empty, ``raw`` holding only the
    numbers that print differently from their text): parse again with lines to locate.
    """

    value: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    raw: dict[Path_, str] = field(default_factory=dict)
    duplicates: list[tuple[Path_, int]] = field(default_factory=list)
    located: bool = True


#: Values that aliases may add beyond ALIAS_RATIO times the values the document writes out.
ALIAS_BUDGET = 10_000
#: How many times its own size a document may grow through aliases (plus ALIAS_BUDGET).
ALIAS_RATIO = 10
#: Deepest nesting of mappings and lists accepted.
MAX_DEPTH = 100


class YamlLimitError(yaml.YAMLError):
    """The document is refused before it is built: too many alias expansions, too deep, a
    recursive alias, or a number too long to read. ``line`` is 1-based (0: unknown)."""

    def __init__(self, message: str, line: int = 0, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.hint = hint


def _too_many(node: yaml.Node) -> YamlLimitError:
    return YamlLimitError(
        f"aliases expand to more than {ALIAS_RATIO} times the values written out, plus "
        f"{ALIAS_BUDGET:,} (an alias bomb?)",
        node.start_mark.line + 1,
        "write the repeated parts out, or use fewer nested aliases")


def _too_deep(node: yaml.Node) -> YamlLimitError:
    return YamlLimitError(f"nested more than {MAX_DEPTH} levels deep", node.start_mark.line + 1,
                          "flatten the structure")


def _recursive(node: yaml.Node) -> YamlLimitError:
    return YamlLimitError("an anchor is used inside itself (a recursive alias)",
                          node.start_mark.line + 1, "an alias may only repeat a finished value")


def _budget(root: yaml.Node) -> list[int]:
    """Node visits allowed for a document: what it writes out, ALIAS_RATIO times more for
    alias repeats, plus ALIAS_BUDGET (a mutable counter, spent as the walk goes)."""
    return [(1 + ALIAS_RATIO) * _count_nodes(root) + ALIAS_BUDGET]


def _count_nodes(root: yaml.Node) -> int:
    """How many distinct nodes the document writes out (each alias target counted once)."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                todo.append(k)
                todo.append(v)
        elif isinstance(node, yaml.SequenceNode):
            todo.extend(node.value)
    return len(seen)


_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PLAIN_CACHE_MAX = 4096


class _Loader(_SafeLoader):  # type: ignore[misc]
    """libyaml's parser when PyYAML was built with it (many times faster on big tasksets),
    with a quicker tag resolution: the composer asks the Python resolver about every node
    (a 100,000-task file: 1.4 million calls, trying regular expressions by first character).
    A quoted scalar is a string, a mapping or list without a tag of its own the default;
    a plain scalar's tag depends on its text only, so the answers for the first few thousand
    distinct texts (the keys, repeated values) are kept.

    This loader never has path resolvers (``yaml_path_resolvers`` stays empty), so telling
    the resolver of each node entered and left does nothing: those two calls per node are C
    built-ins that return at once instead of Python methods that check and return (about
    0.2 s of a 100,000-task file)."""

    _plain_tags: dict[str, str] = {}
    descend_resolver = staticmethod(slice)  # (node, index): builds a slice, dropped
    ascend_resolver = staticmethod(tuple)  # (): the empty tuple

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is not yaml.ScalarNode:
            if kind is yaml.MappingNode:
                return self.DEFAULT_MAPPING_TAG
            if kind is yaml.SequenceNode:
                return self.DEFAULT_SEQUENCE_TAG
            return super().resolve(kind, value, implicit)
        if not implicit[0]:
            return self.DEFAULT_SCALAR_TAG
        tag = self._plain_tags.get(value)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(self._plain_tags) < _PLAIN_CACHE_MAX:
                self._plain_tags[value] = tag
        return tag


assert not _Loader.yaml_path_resolvers, "the no-op descend/ascend_resolver need none"


def parse_yaml(text: str, *, lines: bool = True) -> YamlDocument:
    """Parse one YAML document keeping line numbers.

    With ``lines=False`` the values are built without the line table when the document
    allows it (``located`` False then): read from its lines when it is simple YAML
    (:mod:`.yaml_lines`, several times faster), else from libyaml's nodes (:mod:`.yaml_plain`,
    about twice as fast as the full walk); a document both leave to the full walk comes back
    located. Raises yaml.YAMLError on
    bad syntax, :class:`YamlLimitError` (a subclass) beyond the expansion budget, the nesting
    depth, or on a recursive alias.
    """
    if not lines:
        simple = simple_value(text)
        if simple is not None:
            return YamlDocument(simple[0], raw=simple[1], located=False)
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError as exc:
            raise YamlLimitError(f"nested more than {MAX_DEPTH} levels deep",
                                 hint="flatten the structure") from exc
        doc = YamlDocument(None)
        if node is not None:
            try:
                plain = None if lines or "&" in text else plain_value(node, loader, MAX_DEPTH)
                if plain is not None:
                    doc = YamlDocument(plain[0], raw=plain[1], located=False)
                else:
                    doc = _walk(node, loader, "&" in text)
            except ValueError as exc:  # an integer of thousands of digits, and the like
                raise YamlLimitError(f"a value cannot be read: {exc}",
                                     hint="write a shorter number") from exc
    finally:
        loader.dispose()
    return doc


def _walk(node: yaml.Node, loader: Any, anchors: bool) -> YamlDocument:
    # Without an anchor there is no alias: the budget costs nothing then.
    budget = _budget(node) if anchors else None
    doc = YamlDocument(None)
    try:
        # One walk builds the value and the line table together: a third of the cost of
        # indexing and then running PyYAML's generic constructor.
        doc.lines[()] = node.start_mark.line + 1
        doc.value = _build(node, (), doc, loader, set(), budget)
    except _Fallback:
        budget = _budget(node) if anchors else None
        doc = YamlDocument(None)
        _index(node, (), doc, frozenset(), budget)
        doc.value = loader.construct_document(node)
    return doc


class _Fallback(Exception):
    """The document uses a feature the fast walk leaves to PyYAML (merge keys)."""


_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"


def _build(node: yaml.Node, path: Path_, doc: YamlDocument, loader: Any,
           stack: set[int], budget: list[int] | None) -> Any:
    """The Python value of ``node``, recording lines and raw scalars as it goes.

    The line of ``path`` itself is recorded by the caller (the root's by :func:`_walk`): a
    mapping records its keys', a sequence its items'. A string scalar's raw text is the value
    itself, so only other scalars' texts go into ``doc.raw``.
    """
    if budget is not None:
        budget[0] -= 1
        if budget[0] < 0:
            raise _too_many(node)
    if isinstance(node, yaml.ScalarNode):
        text = node.value
        tag = node.tag
        if tag == _STR:
            return text
        doc.raw[path] = str(text)
        if tag == _INT and text.isdigit() and (text[0] != "0" or text == "0"):
            return int(text)  # plain decimal; octal, hex, signs go through PyYAML
        return loader.construct_object(node, deep=True)
    if id(node) in stack:
        raise _recursive(node)
    if len(path) >= MAX_DEPTH:
        raise _too_deep(node)
    lines = doc.lines
    if isinstance(node, yaml.MappingNode):
        if node.tag != _MAP:
            raise _Fallback
        out: dict[Any, Any] = {}
        stack.add(id(node))
        try:
            for key_node, value_node in node.value:
                key_tag = key_node.tag
                if key_tag == "tag:yaml.org,2002:merge":
                    raise _Fallback
                key = key_node.value if key_tag == _STR else loader.construct_object(
                    key_node, deep=True)
                sub = (*path, str(key_node.value))
                line = key_node.start_mark.line + 1
                if sub in lines:
                    doc.duplicates.append((sub, line))
                lines[sub] = line
                if isinstance(value_node, yaml.ScalarNode) and value_node.tag == _STR:
                    out[key] = value_node.value  # the common case, without a call
                    if budget is not None:
                        budget[0] -= 1
                        if budget[0] < 0:
                            raise _too_many(value_node)
                else:
                    out[key] = _build(value_node, sub, doc, loader, stack, budget)
        finally:
            stack.discard(id(node))
        return out
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ:
            raise _Fallback
        stack.add(id(node))
        try:
            items = []
            for i, item in enumerate(node.value):
                sub = (*path, i)
                lines.setdefault(sub, item.start_mark.line + 1)
                items.append(_build(item, sub, doc, loader, stack, budget))
            return items
        finally:
            stack.discard(id(node))
    raise _Fallback


def yaml_error_problem(exc: yaml.YAMLError, source: str) -> Problem:
    """A YAML syntax error as a Problem naming the line and column."""
    if isinstance(exc, YamlLimitError):
        loc = f"{source}:{exc.line}" if exc.line else source
        return Problem(loc, "", f"YAML refused: {exc.message}", exc.hint)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        loc = f"{source}:{mark.line + 1}" if mark else source
        col = f" (column {mark.column + 1})" if mark else ""
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        return Problem(loc, "", f"YAML syntax error{col}: {what}",
                       "fix the indentation or quoting on that line")
    return Problem(source, "", f"YAML error: {exc}")


def _index(node: yaml.Node, path: Path_, doc: YamlDocument,
           stack: frozenset[int], budget: list[int] | None) -> None:
    if budget is not None:
        budget[0] -= 1
        if budget[0] < 0:
            raise _too_many(node)
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if id(node) in stack:
        raise _recursive(node)
    if len(path) >= MAX_DEPTH:
        raise _too_deep(node)
    if isinstance(node, yaml.MappingNode):
        inner = stack | {id(node)}
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            sub = (*path, key)
            line = key_node.start_mark.line + 1
            if key in seen:
                doc.duplicates.append((sub, line))
            seen.add(key)
            doc.lines[sub] = line
            _index(value_node, sub, doc, inner, budget)
    elif isinstance(node, yaml.SequenceNode):
        inner = stack | {id(node)}
        for i, item in enumerate(node.value):
            _index(item, (*path, i), doc, inner, budget)
    elif isinstance(node, yaml.ScalarNode):
        doc.raw[path] = str(node.value)


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def locator(source: str, lines: dict[Path_, int]) -> Locate:
    def locate(path: Path_) -> str:
        for n in range(len(path), -1, -1):
            line = lines.get(path[:n])
            if line is not None and (n > 0 or path == ()):
                return f"{source}:{line}"
        return source

    return locate


def type_name(value: Any) -> str:
    """How a YAML user would call the type of ``value``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        if abs(value) >= 10**15:  # never thousands of digits in a message
            return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects.

    Parsing a 100,000-task file allocates millions of objects that all stay alive; the
    collector's repeated full passes over them would more than double the time. Reference
    counting still frees garbage meanwhile; the previous state is restored afterwards.

    On the way out the objects made meanwhile join the oldest generation at once
    (``gc.freeze()`` then ``gc.unfreeze()``, which moves lists, not objects): left young,
    the first collections after the pause would walk every one of them (0.2 s per 100,000
    tasks, about 0.8 s after a 100,000-task submit). Full collections still see them.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.unfreeze()
            gc.enable()
