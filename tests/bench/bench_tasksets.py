"""Benchmark: parse + validate YAML tasksets and Kiro files of growing size; build the graph.

Run: python tests/bench/bench_tasksets.py [sizes...]   (default 1000 10000 100000)
Prints a table; not collected by pytest.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from necrocode.dispatcher.config_loader import default_config
from necrocode.dispatcher.graph import build_graph, critical_path, levels
from necrocode.dispatcher.registry.kiro import load_kiro_file
from necrocode.dispatcher.tasksets import load_taskset_file


def write_yaml(path: Path, n: int) -> None:
    lines = ["taskset: bench", "tasks:"]
    for i in range(n):
        deps = f', depends_on: ["{i - 1}"]' if i % 10 else ""
        lines.append(f'  - {{id: "{i}", title: task {i}, priority: {i % 7}, '
                     f'skill: s{i % 4}, estimate: {1 + i % 30}{deps}}}')
    path.write_text("\n".join(lines) + "\n")


def write_kiro(path: Path, n: int) -> None:
    lines = []
    for i in range(n // 5):
        lines.append(f"- [{'x' if i % 3 == 0 else ' '}] {i + 1}. Step {i + 1}")
        for j in range(4):
            lines.append(f"  - [ ] {i + 1}.{j + 1} Part {j + 1}")
            lines.append(f"    - _Requirements: {i}.{j}_")
    path.write_text("\n".join(lines) + "\n")


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def main(sizes: list[int]) -> None:
    config = default_config()
    print(f"{'tasks':>8} {'yaml load+validate':>19} {'kiro parse':>11} {'graph levels':>13} "
          f"{'critical path':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            yaml_path, kiro_path = Path(tmp) / f"t{n}.yaml", Path(tmp) / f"t{n}.md"
            write_yaml(yaml_path, n)
            write_kiro(kiro_path, n)
            (taskset, _), t_yaml = timed(load_taskset_file, yaml_path, config)
            _, t_kiro = timed(load_kiro_file, kiro_path)
            g = build_graph(taskset.tasks)
            _, t_levels = timed(levels, g)
            _, t_crit = timed(critical_path, g)
            print(f"{n:>8} {t_yaml:>18.2f}s {t_kiro:>10.2f}s {t_levels:>12.3f}s {t_crit:>13.3f}s")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 10000, 100000])
