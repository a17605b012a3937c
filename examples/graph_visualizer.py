"""Export a taskset's dependency graph: DOT (Graphviz), Mermaid, execution levels, critical path.

Usage:
    python examples/graph_visualizer.py [TASKSET_FILE] [--format text|dot|mermaid|levels]

TASKSET_FILE is a YAML taskset or a Kiro tasks.md (default: examples/tasksets/demo.yaml).
The same views are available as `necroui graph TASKSET --format ...` for submitted tasksets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from necrocode.dispatcher import TasksetError
from necrocode.dispatcher.graph import (
    build_graph,
    critical_path,
    find_cycles,
    render_levels,
    render_text,
    to_dot,
    to_mermaid,
)
from necrocode.dispatcher.registry.kiro import load_kiro_file
from necrocode.dispatcher.tasksets import load_taskset_file

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("taskset", nargs="?", default=str(HERE / "tasksets" / "demo.yaml"))
    parser.add_argument("--format", choices=["text", "dot", "mermaid", "levels"], default="text")
    args = parser.parse_args(argv)

    path = Path(args.taskset)
    try:
        if path.suffix == ".md":
            taskset = load_kiro_file(path)
        else:
            taskset, _warnings = load_taskset_file(path)
    except TasksetError as exc:
        print(exc, file=sys.stderr)
        return 1

    graph = build_graph(taskset.tasks)
    cycles = find_cycles(graph)
    if cycles:
        print("cycles: " + "; ".join(" -> ".join([*c, c[0]]) for c in cycles))
        return 1
    if args.format == "dot":
        print(to_dot(graph, name=taskset.name))
    elif args.format == "mermaid":
        print(to_mermaid(graph))
    elif args.format == "levels":
        print(render_levels(graph))
    else:
        print(render_text(graph))
    if args.format != "text":  # the text view shows the critical path itself
        path_keys, length = critical_path(graph)
        print(f"# {len(taskset.tasks)} tasks; critical path ({length:.1f} s estimated): "
              + " -> ".join(path_keys), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
