"""Conflict-aware scheduling: declared ``paths:`` globs, which tasks may run together, and the
after-run check of what concurrently running tasks actually changed (R21.5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from necrocode.dispatcher.models import EventType, Task
from necrocode.dispatcher.path_claims import (
    PathClaims,
    globs_overlap,
    normalize_glob,
    parse_paths,
    path_matches,
)
from necrocode.dispatcher.work_overlap import OverlapWatch

from necroui.cli import main


@pytest.mark.parametrize("a,b,overlap", [
    ("src/api/**", "src/api/users.py", True),
    ("src/api/**", "src/**", True),
    ("src/api", "src/api/v1/x.py", True),  # a folder covers what is below it
    ("src/*.py", "src/api/**", False),  # * stays within one folder
    ("src/*.py", "src/main.py", True),
    ("src/*.py", "src/*.txt", False),
    ("src/a*", "src/b*", False),
    ("src/a*", "src/*b", True),  # "ab" matches both
    ("**/test_*.py", "tests/unit/test_x.py", True),
    ("tests/**/test_*.py", "src/app.py", False),
    ("**/*.py", "src/app.py", True),
    ("docs/", "docs/index.md", True),
    ("docs/", "doc/index.md", False),
    ("src/[ab].py", "src/c.py", False),
    ("src/[ab].py", "src/a.py", True),
    (".", "anything/at/all", True),
    ("README.md", "README.md", True),
    ("README.md", "LICENSE", False),
])
def test_glob_overlap(a: str, b: str, overlap: bool) -> None:
    assert globs_overlap(a, b) is overlap
    assert globs_overlap(b, a) is overlap


@pytest.mark.parametrize("pattern,path,match", [
    ("src/api/**", "src/api/v1/users.py", True),
    ("src/api/**", "src/apix/users.py", False),
    ("src/api", "src/api/users.py", True),
    ("*.md", "README.md", True),
    ("*.md", "docs/README.md", False),
    ("**/*.md", "docs/README.md", True),
    ("**/*.md", "README.md", True),
])
def test_path_matches(pattern: str, path: str, match: bool) -> None:
    assert path_matches(pattern, path) is match


def test_normalize_and_parse() -> None:
    assert normalize_glob("./src//api/") == "src/api/**"
    assert normalize_glob("a/**/**/b") == "a/**/b"
    assert parse_paths(["src/", "src/**", "/etc/x", "../up", "", 3, "a[b"]) == (
        ("src/**",),
        [(2, "'/etc/x' is absolute; paths are relative to the repository's root"),
         (3, "'../up' leaves the repository ('..')"),
         (4, "expected a non-empty string (a glob relative to the repository)"),
         (5, "expected a non-empty string (a glob relative to the repository)"),
         (6, "'a[b' has an unclosed '['")])
    assert parse_paths("docs") == (("docs",), [])
    assert parse_paths({"a": 1}) == ((), [(None, "expected a list of globs, got a mapping")])


SEG = st.sampled_from(["a", "b", "ab", "x.py", "y.md"])
GLOB_SEG = st.sampled_from(["a", "b", "ab", "x.py", "*", "a*", "*b", "*.py", "?", "**", "[ab]"])


@settings(max_examples=400, deadline=None)
@given(st.lists(GLOB_SEG, min_size=1, max_size=4), st.lists(GLOB_SEG, min_size=1, max_size=4),
       st.lists(SEG, min_size=1, max_size=5))
def test_overlap_never_misses_a_path_matching_both(a: list[str], b: list[str],
                                                   path: list[str]) -> None:
    ga, gb, p = "/".join(a), "/".join(b), "/".join(path)
    if path_matches(ga, p) and path_matches(gb, p):
        assert globs_overlap(ga, gb), (ga, gb, p)


def test_claims_keep_overlapping_tasks_apart() -> None:
    claims = PathClaims()
    repo = "/r"
    assert claims.may_start("flow/a", repo, ["src/api/**"])
    claims.claim("flow/a", repo, ["src/api/**"])
    conflict = claims.conflict("flow/b", repo, ["docs/**", "src/api/**"])
    assert conflict is not None and conflict.other == "flow/a"
    assert conflict.reason == "waits for flow/a: both touch src/api/**"
    narrower = claims.conflict("flow/c", repo, ["src/api/users.py"])
    assert narrower is not None and narrower.reason == (
        "waits for flow/a: both touch src/api/users.py")
    assert claims.may_start("flow/d", repo, ["src/db/**"])  # disjoint
    assert claims.may_start("flow/e", "/other", ["src/api/**"])  # another repository
    assert claims.may_start("flow/f", repo, [])  # declares nothing: never waits
    assert claims.may_start("flow/a", repo, ["src/api/**"])  # not against itself
    claims.claim("flow/f", repo, [])
    assert claims.claimed() == {"flow/a": ("src/api/**",)}
    claims.release("flow/a")
    claims.release("flow/a")
    assert claims.may_start("flow/b", repo, ["src/api/**"])


def task(key: str, start: float, end: float, files: tuple[str, ...],
         paths: tuple[str, ...] = (), repo: str = "/r") -> Task:
    taskset, _, tid = key.partition("/")
    return Task(id=tid, taskset=taskset, repo=repo, started_at=start, finished_at=end,
                files_changed=files, paths=paths)


def test_after_run_overlap_of_concurrent_tasks() -> None:
    watch = OverlapWatch()
    assert watch.record(task("f/a", 0, 10, ("shared.txt", "a.txt"))).overlaps == ()
    assert watch.record(task("f/b", 20, 30, ("shared.txt",))).overlaps == ()  # later: fine
    report = watch.record(task("f/c", 5, 25, ("shared.txt", "c.txt"), paths=("c.txt",)))
    assert [(o.other, o.files) for o in report.overlaps] == [
        ("f/a", ("shared.txt",)), ("f/b", ("shared.txt",))]
    assert report.overlaps[0].message == (
        "f/c and f/a ran at the same time and both changed shared.txt")
    event = report.overlaps[0].event()
    assert event.event_type is EventType.PATHS_OVERLAP and event.details["other"] == "f/a"
    assert report.undeclared == ("shared.txt",)  # outside its declared paths
    assert watch.record(task("f/d", 5, 25, ("shared.txt",), repo="/x")).overlaps == ()
    assert watch.record(Task(id="s", files_changed=("x",))).overlaps == ()  # no repository


BAD_PATHS = """\
taskset: p
tasks:
  - id: a
    title: A
    paths: ["src/api/**", "/abs"]
  - id: b
    title: B
    paths: 5
"""


def test_taskset_paths_are_validated_with_file_and_line(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NECROCODE_CONFIG", raising=False)
    path = tmp_path / "t.yaml"
    path.write_text(BAD_PATHS)
    out = CliRunner().invoke(main, ["--registry", str(tmp_path / "r.db"), "submit", str(path)])
    assert out.exit_code == 1
    assert f"{path}:5: tasks[a].paths: '/abs' is absolute" in out.output
    assert f"{path}:8: tasks[b].paths: expected a list of globs, got the integer 5" in out.output
    path.write_text(BAD_PATHS.replace(', "/abs"', ', "docs/"').replace("paths: 5", "paths: x"))
    good = CliRunner().invoke(main, ["--registry", str(tmp_path / "r.db"), "submit", str(path)])
    assert good.exit_code == 0, good.output
    listed = CliRunner().invoke(main, ["--registry", str(tmp_path / "r.db"), "tasks", "--json"])
    assert '"src/api/**",\n      "docs/**"' in listed.output
