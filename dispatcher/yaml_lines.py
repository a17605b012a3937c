"""Plain values straight from the text of a simple YAML document, without libyaml's nodes.

A taskset of 100,000 tasks is 1.4 million YAML nodes: libyaml builds each as a Python object
with two position marks and asks the Python resolver about it (over a second of a 100,000-task
submit), and :mod:`.yaml_plain` then walks them. Most tasksets use a small part of YAML: block
mappings and lists by indentation, one-line flow lists and mappings (``- {id: a, title: A}``),
quoted strings without escapes, plain scalars and comments. :func:`simple_value` reads that
part line by line with regular expressions, and returns None for anything else, so that
libyaml reads the document the one way it already does: tabs, carriage returns, control
characters, document markers and directives, anchors, aliases and tags, block scalars
(``|``, ``>``), escapes in double quotes, scalars or flow collections over several lines,
keys that are not plain names, a key given twice, indentation it does not expect, and any
plain scalar with a character that could mean something (``: ``, `` #``, an indicator first;
in flow collections also ``:``, ``#`` and ``?``). A document it reads is read exactly as the
libyaml path reads it (the tests compare both on generated documents), and the scalars are
typed by PyYAML's own resolver and constructor.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

Path_ = tuple[str | int, ...]

#: Characters outside these make the document libyaml's (control characters, the line
#: breaks NEL, LS and PS, a byte order mark, tabs and carriage returns among them).
_UNUSUAL = re.compile("[^\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd"
                      "\U00010000-\U0010ffff]")
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*):(?: +|$)")
_DQ = r'"[^"\\\n]*"'
_SQ = r"'(?:[^'\n]|'')*'"
# A plain scalar in a flow collection: no indicator first ('-' only before a letter or
# digit), none of ,[]{}#:? inside, no space last.
_FIRST = r"(?:[^\s\-?:,\[\]{}#&*!|>'\"%@`]|-[A-Za-z0-9.])"
_FPLAIN = _FIRST + r"(?:[^,\[\]{}#:?\n]*[^,\[\]{}#:?\s])?"
_ITEM = f"(?:{_DQ}|{_SQ}|{_FPLAIN})"
_FSEQ = rf"\[ *(?:{_ITEM}(?: *, *{_ITEM})*)? *\]"
_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_PAIR = rf"{_NAME}: +(?:{_DQ}|{_SQ}|{_FSEQ}|{_FPLAIN})"
_TAIL = r"(?: +#.*)? *"
_FMAP_LINE = re.compile(rf"\{{ *((?:{_PAIR}(?: *, *{_PAIR})*)?) *\}}{_TAIL}")
_FSEQ_LINE = re.compile(rf"\[ *((?:{_ITEM}(?: *, *{_ITEM})*)?) *\]{_TAIL}")
_PAIRS = re.compile(rf"({_NAME}): +(?:({_DQ})|({_SQ})|({_FSEQ})|({_FPLAIN}))")
_ITEMS = re.compile(f"({_DQ})|({_SQ})|({_FPLAIN})")
_DQ_LINE = re.compile(rf'"([^"\\\n]*)"{_TAIL}')
_SQ_LINE = re.compile(rf"'((?:[^'\n]|'')*)'{_TAIL}")
# A plain scalar in a block: no indicator first, then anything up to a comment.
_BLOCK_FIRST = re.compile(r"[^\s\-?:,\[\]{}#&*!|>'\"%@`]|-[A-Za-z0-9.]")
_MAX_DEPTH = 50
_CACHE_MAX = 4096
_STR_TAG = "tag:yaml.org,2002:str"
_TYPED = frozenset(f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float", "null",
                                                       "timestamp"))


class _GiveUp(Exception):
    """The document is libyaml's to read (see the module docstring)."""


class _Scalars:
    """Plain scalars typed the way PyYAML types them (its resolver, then its constructor),
    the answers for the first few thousand distinct texts kept (all immutable values)."""

    def __init__(self) -> None:
        self._loader = yaml.SafeLoader("")
        self._resolvers = yaml.SafeLoader.yaml_implicit_resolvers
        # Matches whatever any of them matches: most texts are strings, told by one match
        # instead of a loop over the resolvers.
        patterns = {(r.pattern, r.flags & re.X) for rs in self._resolvers.values()
                    for _, r in rs}
        self._any = re.compile("|".join(f"(?x:{p})" if verbose else f"(?:{p})"
                                        for p, verbose in sorted(patterns)))
        self.cache: dict[str, tuple[Any, bool]] = {}

    def value(self, text: str) -> tuple[Any, bool]:
        """The value of plain ``text`` and whether it is a number that prints otherwise."""
        hit = self.cache.get(text)
        if hit is not None:
            return hit
        tag = _STR_TAG
        if self._any.match(text) is not None:
            for candidate, regexp in self._resolvers.get(text[:1], ()):
                if regexp.match(text):
                    tag = candidate
                    break
        if tag == _STR_TAG:
            out: tuple[Any, bool] = (text, False)
        elif tag not in _TYPED:
            raise _GiveUp  # '<<' or '=' as a value: PyYAML's own way
        else:
            # The tag's constructor itself: construct_object would keep every node it built
            # (and is not for several threads at once).
            construct = self._loader.yaml_constructors[tag]
            value = construct(self._loader, yaml.ScalarNode(tag, text))
            number = isinstance(value, int | float) and not isinstance(value, bool)
            out = (value, number and str(value) != text)
        if len(self.cache) < _CACHE_MAX:
            self.cache[text] = out
        return out


_SCALARS: _Scalars | None = None


def simple_value(text: str) -> tuple[Any, dict[Path_, str]] | None:
    """The value of the document ``text`` and the text of each number whose value prints
    differently (by path), or None when libyaml must read it (see the module docstring)."""
    global _SCALARS
    if _UNUSUAL.search(text) is not None:
        return None
    if _SCALARS is None:
        _SCALARS = _Scalars()
    try:
        return _Reader(text, _SCALARS).read()
    except (_GiveUp, ValueError, RecursionError, yaml.YAMLError):  # a number too long, a bad date
        return None


class _Reader:
    """One document read by lines: ``indents`` and ``bodies`` hold its lines that are not
    blank or comments, each as its indentation and the rest."""

    def __init__(self, text: str, scalars: _Scalars) -> None:
        self.indents: list[int] = []
        self.bodies: list[str] = []
        for line in text.split("\n"):
            body = line.lstrip(" ")
            if not body or body[0] == "#":
                continue
            if line[0] in "-.%" and (line[:3] in ("---", "...") or line[0] == "%"):
                raise _GiveUp  # a document marker or a directive
            self.indents.append(len(line) - len(body))
            self.bodies.append(body)
        self.raw: dict[Path_, str] = {}
        self.scalar = scalars.value
        self.cache = scalars.cache
        self.str_keys: set[str] = set()

    def read(self) -> tuple[Any, dict[Path_, str]]:
        if not self.bodies or self.indents[0] != 0 or _KEY.match(self.bodies[0]) is None:
            raise _GiveUp  # empty, or not a mapping at the top
        value, end = self._mapping(0, 0, (), 0)
        if end != len(self.bodies):
            raise _GiveUp
        return value, self.raw

    # --- block collections ------------------------------------------------------------------

    def _node(self, i: int, parent: int, path: Path_, depth: int) -> tuple[Any, int]:
        """The block collection starting at line ``i``, indented deeper than ``parent``."""
        if depth > _MAX_DEPTH:
            raise _GiveUp
        indent, body = self.indents[i], self.bodies[i]
        if indent <= parent:
            raise _GiveUp
        if body[0] == "-" and (len(body) == 1 or body[1] == " "):
            return self._sequence(i, indent, path, depth)
        if _KEY.match(body) is not None:
            return self._mapping(i, indent, path, depth)
        raise _GiveUp  # a scalar on its own line

    def _mapping(self, i: int, indent: int, path: Path_, depth: int) -> tuple[Any, int]:
        indents, bodies = self.indents, self.bodies
        n = len(bodies)
        out: dict[str, Any] = {}
        while i < n and indents[i] == indent:
            body = bodies[i]
            m = _KEY.match(body)
            if m is None:
                raise _GiveUp
            key = m.group(1)
            if key in out or type(self.scalar(key)[0]) is not str:
                raise _GiveUp  # a key given twice, or one that is not a string (true, null)
            rest = body[m.end():]
            i += 1
            if not rest or rest[0] == "#":
                if i < n and indents[i] > indent:
                    out[key], i = self._node(i, indent, (*path, key), depth + 1)
                elif i < n and indents[i] == indent and bodies[i][0] == "-" and (
                        len(bodies[i]) == 1 or bodies[i][1] == " "):
                    out[key], i = self._sequence(i, indent, (*path, key), depth + 1)
                else:
                    out[key] = None
            else:
                out[key] = self._inline(rest, path, key)
                if i < n and indents[i] > indent:
                    raise _GiveUp  # the value goes on over more lines
        if i < n and indents[i] > indent:
            raise _GiveUp
        return out, i

    def _sequence(self, i: int, indent: int, path: Path_, depth: int) -> tuple[Any, int]:
        indents, bodies = self.indents, self.bodies
        n = len(bodies)
        items: list[Any] = []
        while i < n and indents[i] == indent:
            body = bodies[i]
            if body[0] != "-" or (len(body) > 1 and body[1] != " "):
                break
            rest = body[1:].lstrip(" ")
            index = len(items)
            if not rest or rest[0] == "#":
                i += 1
                if i < n and indents[i] > indent:
                    value, i = self._node(i, indent, (*path, index), depth + 1)
                    items.append(value)
                else:
                    items.append(None)
            elif rest[0] == "{":
                items.append(self._flow_map(rest, (*path, index)))
                i += 1
                if i < n and indents[i] > indent:
                    raise _GiveUp
            elif _KEY.match(rest) is not None:  # a mapping begins on the item's line
                column = indent + len(body) - len(rest)
                indents[i], bodies[i] = column, rest
                value, i = self._mapping(i, column, (*path, index), depth + 1)
                items.append(value)
            elif rest[0] == "-" and (len(rest) == 1 or rest[1] == " "):
                raise _GiveUp  # a list begins on the item's line
            else:
                items.append(self._inline(rest, path, index))
                i += 1
                if i < n and indents[i] > indent:
                    raise _GiveUp
        if i < n and indents[i] > indent:
            raise _GiveUp
        return items, i

    # --- values on one line -----------------------------------------------------------------

    def _inline(self, text: str, path: Path_, key: str | int) -> Any:
        """A value written after ``key:`` or ``-`` (``text``, comment included)."""
        first = text[0]
        if first == '"':
            m = _DQ_LINE.fullmatch(text)
            if m is None:
                raise _GiveUp
            return m.group(1)
        if first == "'":
            m = _SQ_LINE.fullmatch(text)
            if m is None:
                raise _GiveUp
            return m.group(1).replace("''", "'")
        if first == "[":
            m = _FSEQ_LINE.fullmatch(text)
            if m is None:
                raise _GiveUp
            return self._items(m.group(1), (*path, key))
        if first == "{":
            return self._flow_map(text, (*path, key))
        if _BLOCK_FIRST.match(text) is None:
            raise _GiveUp
        cut = text.find(" #")
        if cut >= 0:
            text = text[:cut]
        text = text.rstrip(" ")
        if ": " in text or text.endswith(":"):
            raise _GiveUp
        value, raw = self.scalar(text)
        if raw:
            self.raw[(*path, key)] = text
        return value

    def _flow_map(self, text: str, path: Path_) -> dict[str, Any]:
        m = _FMAP_LINE.fullmatch(text)
        if m is None:
            raise _GiveUp
        out: dict[str, Any] = {}
        known, cache = self.str_keys, self.cache
        pairs = _PAIRS.findall(m.group(1))
        for key, dq, sq, seq, plain in pairs:
            if key not in known:
                if type(self.scalar(key)[0]) is not str:
                    raise _GiveUp  # a key that is not a string (true, null)
                known.add(key)
            if dq:
                value: Any = dq[1:-1]
            elif plain:
                hit = cache.get(plain) or self.scalar(plain)
                if hit[1]:
                    self.raw[(*path, key)] = plain
                value = hit[0]
            elif sq:
                value = sq[1:-1].replace("''", "'")
            else:
                value = self._items(seq[1:-1].strip(" "), (*path, key))
            out[key] = value
        if len(out) != len(pairs):
            raise _GiveUp  # a key given twice
        return out

    def _items(self, body: str, path: Path_) -> list[Any]:
        """The items of a one-line flow list (``body``: between the brackets)."""
        items: list[Any] = []
        if not body:
            return items
        scalar = self.scalar
        for j, (dq, sq, plain) in enumerate(_ITEMS.findall(body)):
            if dq:
                items.append(dq[1:-1])
            elif sq:
                items.append(sq[1:-1].replace("''", "'"))
            else:
                value, raw = scalar(plain)
                if raw:
                    self.raw[(*path, j)] = plain
                items.append(value)
        return items
