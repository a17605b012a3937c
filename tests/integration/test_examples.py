"""Every example the seed lists runs on this install, exits 0 and prints what it demonstrates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: example file -> a line (fragment) its output must contain
CASES = {
    "basic_dispatcher_usage.py": "done: 3/3",
    "custom_scheduling_policy.py": "assigned typo (30s) -> pool local",
    "multi_pool_setup.py": "backend #1 -> docker; backend #2 -> k8s",
    "dispatcher_core_example.py": "counters: done=2 cancelled=1",
    "agent_pool_manager_example.py": "can docker take a 2-core task now? False",
    "runner_launcher_example.py": "exit code: 0",
    "runner_monitor_example.py": "lost (no heartbeat within 60s): runner-c",
    "metrics_collector_example.py": 'necrocode_dispatcher_assignments_total{pool="local"} 3.0',
    "retry_manager_example.py": "attempt 3: retry=False",
    "deadlock_detector_example.py": "(root svc/db)",
    "event_recorder_example.py": "registry back: replayed 1 event(s)",
    "priority_management_example.py": "with aging (60 s per level) the first pick is: old-low",
    "concurrency_control_example.py": "after one completion the next round placed",
    "graph_visualizer.py": "critical path",
}


def test_every_seed_example_is_covered() -> None:
    files = {p.name for p in EXAMPLES.glob("*.py")}
    assert set(CASES) == files


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs(name: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop("NECROCODE_REGISTRY", None)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=tmp_path,  # examples must not depend on the working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert CASES[name] in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / ".necrocode").exists(), "examples use a temporary registry"
