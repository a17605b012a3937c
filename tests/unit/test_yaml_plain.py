"""The fast path of a YAML load (values without the line table) builds what the full walk
builds, gives the full walk what it treats specially, and a taskset loaded through it still
names the line of each problem."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from necrocode.dispatcher.errors import TasksetError
from necrocode.dispatcher.tasksets import load_taskset_file
from necrocode.dispatcher.yaml_source import parse_yaml

RAW = ["1.10", "1.0", "0x1F", "0o17", "017", "1_000", "+3", "-4", "1e3", ".nan", "-.inf",
       "true", "no", "~", "2001-12-14", "'1.10'", '"x"', "!!str 5", "!!int '7'", "abc", "0"]
LEAF = st.one_of(st.sampled_from(RAW), st.integers(-10**6, 10**6).map(str))
NODE = st.recursive(LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
    st.dictionaries(st.sampled_from(["a", "b", "'c'", "id", "1", "~"]), inner, max_size=4)
    .map(lambda d: "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}")),
    max_leaves=10)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(NODE)
def test_the_fast_path_builds_the_values_and_texts_of_the_full_walk(text: str) -> None:
    full = parse_yaml(text)
    fast = parse_yaml(text, lines=False)
    assert same(fast.value, full.value)
    if not fast.located:  # built without lines: the numbers that print differently kept
        assert fast.lines == {} and fast.duplicates == []
        for path, raw in full.raw.items():
            value = full.value
            for part in path:
                value = value[part]
            if isinstance(value, int | float) and not isinstance(value, bool) \
                    and str(value) != raw:
                assert fast.raw[path] == raw
    else:
        assert fast.lines == full.lines and fast.duplicates == full.duplicates


@pytest.mark.parametrize("text", [
    "{a: 1, a: 2}",  # a key given twice: the full walk reports both lines
    "{1: x}",  # a key that is not a string
    "base: &b {x: 1}\nuse: *b",  # anchors: the alias budget
    "a: {<<: {x: 1}}",  # a merge key
    "!!set {a, b}",  # a tag of its own
])
def test_what_the_full_walk_treats_specially_comes_back_located(text: str) -> None:
    doc = parse_yaml(text, lines=False)
    assert doc.located and doc.value == parse_yaml(text).value


def test_a_number_written_otherwise_keeps_its_text() -> None:
    doc = parse_yaml("tasks: [{id: 1.10, depends_on: [1.0, 2.50, 3]}]", lines=False)
    assert not doc.located
    assert doc.raw == {("tasks", 0, "id"): "1.10", ("tasks", 0, "depends_on", 1): "2.50"}


def test_a_bad_task_is_still_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("taskset: s\ntasks:\n  - {id: a, title: A}\n  - id: 1.10\n    title: B\n"
                    "    priority: high\n    depends_on: [a, nope]\n")
    with pytest.raises(TasksetError) as info:
        load_taskset_file(path)
    found = {(p.location, p.key) for p in info.value.problems}
    assert (f"{path}:6", "tasks[1.10].priority") in found
    assert (f"{path}:7", "tasks[1.10].depends_on") in found


def test_a_deep_document_is_refused_the_same_way() -> None:
    text = "[" * 150 + "]" * 150
    with pytest.raises(yaml.YAMLError) as fast:
        parse_yaml(text, lines=False)
    with pytest.raises(yaml.YAMLError) as full:
        parse_yaml(text)
    assert str(fast.value) == str(full.value)
