"""Simple YAML read by lines (:mod:`.yaml_lines`) gives libyaml's values, or leaves the document
to libyaml: generated documents of tricky scalars and layouts, compared with the full walk."""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from necrocode.dispatcher.errors import TasksetError
from necrocode.dispatcher.tasksets import load_taskset_file
from necrocode.dispatcher.yaml_lines import simple_value
from necrocode.dispatcher.yaml_source import parse_yaml

SCALARS = [
    "1.10", "1.0", "0x1F", "0o17", "017", "1_000", "+3", "-4", "1e3", ".nan", "-.inf", "1:20",
    "true", "no", "On", "~", "null", "", "2001-12-14", "2001-12-14 21:59:43.10 -5", "'1.10'",
    '"x"', '"a # b"', "'it''s'", "''", '""', '"a\\"b"', "!!str 5", "&a x", "*a", "abc",
    "a b", "a  b", "a: b", "a:b", "a #b", "a#b", "C#", "x, y", "[x]", "{y}", "a [b] {c}",
    "- x", "-x", "-1", "it's", "@x", "`x", "%x", "? x", "a ?", "https://x/y", "é ü", "a:",
    "<<", "=", "|", ">", "a\tb", "x #", "#x", "0", "-", ":x", ",x", "a,b", "'a' b",
]
ODD_KEYS = ["true", "1", "null", "a b", "'q'", '"r"', "<<", "a", "a"]
KEY = st.one_of(st.sampled_from(["a", "b", "id", "title", "k-1", "_k", "c", "d", "e", "f"]),
                st.sampled_from(["a", "b", "id", "title", "k-1", "_k", "c", "d", "e", "f"]),
                st.sampled_from(ODD_KEYS))
PLAIN = ["x", "task 1", "1", "0", "12", "s3", "1.5", "a-b", "src/api/**", "true", "'q'", '"d"']
# Mostly ordinary values, so that many documents are read; a tricky one now and then.
LEAF = st.one_of(st.sampled_from(PLAIN), st.sampled_from(PLAIN), st.sampled_from(SCALARS))
SPACE = st.sampled_from(["", " ", "  "])


def flow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    seq = st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]")
    pairs = st.lists(st.tuples(KEY, inner), max_size=4)
    return st.one_of(seq, pairs.map(lambda ps: "{" + ", ".join(f"{k}: {v}" for k, v in ps)
                                    + "}"))


FLOW = st.one_of(LEAF, flow(LEAF), flow(st.one_of(LEAF, flow(LEAF))))


@st.composite
def block(draw: Any, indent: int = 0, depth: int = 0) -> str:
    """A block mapping or list at ``indent``, values inline or nested one level deeper."""
    pad = " " * indent
    lines: list[str] = []
    as_list = depth > 0 and draw(st.booleans())
    for _ in range(draw(st.integers(1, 3))):
        comment = draw(st.sampled_from(["", "", " # note", "  #x"]))
        nested = depth < 2 and draw(st.integers(0, 3)) == 0
        head = "-" if as_list else draw(KEY) + ":"
        if nested:
            step = draw(st.sampled_from([2, 4, 1]))
            lines.append(f"{pad}{head}{comment}")
            lines.append(draw(block(indent + step, depth + 1)))
        elif as_list and draw(st.booleans()):  # a mapping on the item's line
            key, value = draw(KEY), draw(FLOW)
            more = draw(st.lists(st.tuples(KEY, FLOW), max_size=2))
            lines.append(f"{pad}- {key}: {value}{comment}")
            lines += [f"{pad}  {k}: {v}" for k, v in more]
        else:
            lines.append(f"{pad}{head} {draw(FLOW)}{comment}")
        if draw(st.integers(0, 5)) == 0:
            lines.append(draw(st.sampled_from(["", "# c", "   ", "  # c"])))
    return "\n".join(lines)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def check(text: str) -> None:
    got = simple_value(text)
    try:
        full = parse_yaml(text)
    except yaml.YAMLError:
        assert got is None, f"libyaml refuses {text!r}, the line reader read {got!r}"
        return
    if got is None:
        return
    assert not full.duplicates, text
    value, raw = got
    assert same(value, full.value), (text, value, full.value)
    for path, written in full.raw.items():
        leaf = full.value
        for part in path:
            leaf = leaf[part]
        if isinstance(leaf, int | float) and not isinstance(leaf, bool) and str(leaf) != written:
            assert raw.get(path) == written, (text, path)
        else:
            assert path not in raw, (text, path)


@settings(max_examples=1500, deadline=None)
@given(block())
def test_a_block_document_reads_as_libyaml_reads_it(text: str) -> None:
    check(text)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(KEY, FLOW), min_size=1, max_size=3))
def test_a_list_of_flow_mappings_reads_as_libyaml_reads_it(pairs: list[tuple[str, str]]) -> None:
    item = "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    check(f"taskset: s\ntasks:\n  - {item}\n  - {item.replace('a', 'c')}\n")


@pytest.mark.parametrize("scalar", SCALARS + PLAIN)
@pytest.mark.parametrize("layout", ["a: {}\n", "a:\n- {}\n", "a: [{}]\n", "a: {{b: {}}}\n",
                                    "a:\n  - b: {}\n    c: 1\n", "- {}\n"])
def test_each_scalar_in_each_place(scalar: str, layout: str) -> None:
    check(layout.format(scalar))


@pytest.mark.parametrize("text", [
    "taskset: s\ntasks:\n- id: a\n  title: A\n- {id: b, title: B, depends_on: [a]}\n",
    "a: 1\nb:\n  c: [x, 'y', \"z\"]\n  d:\n    - 1\n    -\n    - e: f\n      g: h\n",
    "a: x # comment\n# only a comment\n\nb: 'it''s'\n",
    "a: 2001-12-14\nb: 1.10\nc: [1.0, 0x10]\nd: {e: 017}\n",
    "a: é ü\nb: C#\nc: x, y\nd: a [b] {c}\n",
])
def test_documents_it_reads(text: str) -> None:
    assert simple_value(text) is not None
    check(text)


@pytest.mark.parametrize("text", [
    "a: 1\na: 2\n",  # a key given twice
    "{a: 1}", "- a\n- b\n", "x\n",  # not a mapping at the top
    "a: &x 1\nb: *x\n", "a: !!str 1\n", "a: |\n  text\n", "a: >\n  text\n",
    'a: "x\\ty"\n', "a: 'two\n  lines'\n", "a: plain\n  more\n", "a: [1,\n  2]\n",
    "a:\tb\n", "a: b\r\n", "---\na: 1\n", "%YAML 1.1\n---\na: 1\n", "a: \x07\n",
    "true: x\n", "1: x\n", "'a': x\n", "a: {true: x}\n", "a: <<\n", "a: x: y\n",
    "a:\n  b: 1\n c: 2\n", "a: {b: 1, b: 2}\n", "a: [x, {b: 1}]\n", "a: {b: https://x}\n",
    "", "# only\n",
])
def test_documents_it_leaves_to_libyaml(text: str) -> None:
    assert simple_value(text) is None


def test_scalars_are_typed_by_pyyaml() -> None:
    value, raw = simple_value("a: [true, no, ~, 1.5, 0x1F, 2001-12-14, .inf, 1_0, '1']\n") \
        or (None, None)
    assert value == {"a": [True, False, None, 1.5, 31, datetime.date(2001, 12, 14),
                           math.inf, 10, "1"]}
    assert raw == {("a", 4): "0x1F", ("a", 6): ".inf", ("a", 7): "1_0"}


def test_a_bad_task_of_a_simple_file_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("taskset: s\ntasks:\n  - {id: a, title: A}\n  - {id: b, title: B, "
                    "depends_on: [nope]}\n  - id: c\n    title: C\n    priority: high\n")
    with pytest.raises(TasksetError) as info:
        load_taskset_file(path)
    found = {(p.location, p.key) for p in info.value.problems}
    assert (f"{path}:4", "tasks[b].depends_on") in found
    assert (f"{path}:7", "tasks[c].priority") in found
