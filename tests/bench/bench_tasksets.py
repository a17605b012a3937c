"""Benchmark: parse + validate YAML tasksets and Kiro files of growing size; build the graph;
``necroui submit`` of such a file end to end.

Run: python tests/bench/bench_tasksets.py [sizes...] [--submit] [--repeat 3] [--dir /var/tmp]
(default sizes 1000 10000 100000). In-process: load + validate of a YAML taskset, a Kiro file,
graph levels and the critical path. With ``--submit``: ``necroui --registry NEW.db submit
FILE.yaml`` as a subprocess per size (a new registry each time), wall time and peak RSS, beside
its floor, Python importing ``necroui.cli``, and libyaml's parse of the same file into nodes
(``yaml.compose`` with ``CSafeLoader``, gc off: what a file that is not simple YAML costs
first; a simple one is read by lines without it, ``dispatcher/yaml_lines.py``), both
subprocesses, interpreter start included; medians of
``--repeat`` alternating runs with their range. 90% of the tasks have a dependency. Prints
tables; not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import LoadWatch, Spread, filesystem, machine, measured, table
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


def in_process(sizes: list[int]) -> None:
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


def end_to_end(sizes: list[int], repeat: int, folder: str) -> None:
    py = sys.executable
    rows = []
    with tempfile.TemporaryDirectory(prefix="necrocode-submit-", dir=folder) as tmp:
        print(f"\nnecroui submit end to end; files and registries on {filesystem(tmp)} "
              f"({folder}); {repeat} alternating run(s), medians (min–max)\n")
        for n in sizes:
            path = Path(tmp) / f"t{n}.yaml"
            write_yaml(path, n)
            runs: dict[str, list[tuple[float, float]]] = {"submit": [], "import": [], "yaml": []}
            for r in range(repeat):
                db = Path(tmp) / f"r{n}-{r}.db"
                runs["submit"].append(measured(
                    [py, "-m", "necroui", "--registry", str(db), "submit", str(path)]))
                runs["import"].append(measured([py, "-c", "import necroui.cli"]))
                runs["yaml"].append(measured([py, "-c", (
                    "import gc, yaml; gc.disable(); yaml.compose(open(" + json.dumps(str(path))
                    + ", 'rb'), Loader=yaml.CSafeLoader)")]))
                for suffix in ("", "-wal", "-shm"):
                    Path(str(db) + suffix).unlink(missing_ok=True)
                print(f"  {n}: run {r + 1}: " + ", ".join(
                    f"{k} {v[-1][0]:.2f} s" for k, v in runs.items()), file=sys.stderr)

            def cell(key: str, i: int, spec: str, unit: str,
                     runs: dict[str, list[tuple[float, float]]] = runs) -> str:
                return Spread.of([x[i] for x in runs[key]]).fmt(spec, unit)

            mb = path.stat().st_size / 1e6
            rows.append([f"{n:,} ({mb:.1f} MB)", cell("submit", 0, ".2f", " s"),
                         cell("submit", 1, ".0f", " MB"), cell("import", 0, ".2f", " s"),
                         cell("yaml", 0, ".2f", " s"), cell("yaml", 1, ".0f", " MB")])
    print(table(["tasks (YAML size)", "`necroui submit`", "its peak RSS",
                 "floor: Python + `import necroui.cli`",
                 "libyaml's parse to nodes (`yaml.compose`, CSafeLoader)",
                 "its peak RSS"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[1000, 10000, 100000])
    parser.add_argument("--submit", action="store_true",
                        help="also necroui submit of each file end to end, beside its floors")
    parser.add_argument("--only-submit", action="store_true", help="skip the in-process table")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default="/var/tmp")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    watch = LoadWatch()
    if not args.only_submit:
        in_process(args.sizes)
    if args.submit or args.only_submit:
        end_to_end(args.sizes, args.repeat, args.dir)
    print()
    print(watch.stop().line())


if __name__ == "__main__":
    main()
