"""Benchmark: Docker runner start-to-first-heartbeat latency (DockerLauncher + the wrapper).

Run with a Docker engine reachable (DOCKER_HOST honoured):

    python tests/bench/bench_docker.py [--runs 20]

Each run launches one container through DockerLauncher with the wrapper, and measures from the
``launch()`` call to the first heartbeat the (stand-in) Dispatcher API receives; also the time
``launch()`` itself takes (create + start) and launch-to-exit for a 0.2 s agent. Uses the same
empty-rootfs image with the host's Python bind-mounted as the tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from docker_support import (  # noqa: E402
    HeartbeatReceiver,
    connect,
    docker_pool_config,
    ensure_test_image,
    remove_managed,
    wait_for,
)
from necrocode.dispatcher.launchers.base import LaunchEnvironment  # noqa: E402
from necrocode.dispatcher.launchers.docker import DockerLauncher  # noqa: E402
from necrocode.dispatcher.models import AgentPool, PoolType, Slot, Task  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    client, why = connect()
    if client is None:
        print(f"no Docker engine: {why}", file=sys.stderr)
        return 2
    created = ensure_test_image(client)
    info = client.version()
    first_hb: list[float] = []
    launch_call: list[float] = []
    to_exit: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, HeartbeatReceiver() as api:
        root = Path(tmp)
        slot_dir = root / "slot"
        slot_dir.mkdir()
        env = LaunchEnvironment(api_url=api.url, token_for=lambda rid: f"tok-{rid}",
                                runs_dir=root / "runs", heartbeat_interval=5.0,
                                heartbeat_timeout=30.0)
        launcher = DockerLauncher(env)
        pool = AgentPool(name="bench", type=PoolType.DOCKER, config=docker_pool_config())
        try:
            for i in range(args.runs):
                task = Task(id=f"b{i}", taskset="bench",
                            command=[sys.executable, "-c", "import time; time.sleep(0.2)"])
                t0 = time.time()
                runner = launcher.launch(task, Slot(f"s{i}", str(slot_dir)), pool)
                t1 = time.time()
                beats = wait_for(lambda r=runner: api.heartbeats(r.runner_id), 60,
                                 interval=0.002, what="first heartbeat")
                result = wait_for(lambda r=runner: launcher.poll(r), 60, interval=0.01,
                                  what="exit")
                t_exit = time.time()
                assert result.exit_code == 0, result
                launcher.release(runner)
                launch_call.append(t1 - t0)
                first_hb.append(beats[0] - t0)
                to_exit.append(t_exit - t0)
        finally:
            launcher.close()
            remove_managed(client)
            if created:
                client.images.remove("necrocode-test:empty", force=True)

    print(f"Docker runner latency over {args.runs} runs "
          f"(engine {info.get('Version')}, {info.get('KernelVersion')}, "
          f"{len(__import__('os').sched_getaffinity(0))} CPUs)")
    print(f"{'measure':<34}{'p50 ms':>9}{'p90 ms':>9}{'max ms':>9}{'mean ms':>9}")
    for name, values in (("launch() call (create + start)", launch_call),
                         ("launch -> first heartbeat", first_hb),
                         ("launch -> exit seen (0.2 s agent)", to_exit)):
        ms = [v * 1000 for v in values]
        print(f"{name:<34}{pct(ms, .5):>9.0f}{pct(ms, .9):>9.0f}{max(ms):>9.0f}"
              f"{statistics.mean(ms):>9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
