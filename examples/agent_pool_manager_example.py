"""AgentPoolManager: choosing a pool by skill, checking capacity and quotas, exact accounting.

Run:  python examples/agent_pool_manager_example.py
"""

from __future__ import annotations

import sys

from necrocode.dispatcher import AgentPoolManager, DispatcherConfig
from necrocode.dispatcher.models import AgentPool, PoolType, Resources, Task


def main() -> int:
    config = DispatcherConfig(max_global_concurrency=10)
    config.agent_pools += [
        AgentPool(name="local", type=PoolType.LOCAL_PROCESS, max_concurrency=2),
        AgentPool(name="docker", type=PoolType.DOCKER, max_concurrency=4, cpu_quota=4,
                  memory_quota=8192, config={"image": "necrocode/runner:latest"}),
    ]
    config.skill_mapping = {"backend": ["docker"], "default": ["local"]}
    manager = AgentPoolManager(config)

    pool = manager.get_pool_for_skill("backend")
    assert pool is not None
    print(f"backend tasks go to: {pool.name}")

    big = Task(id="big", title="build", required_skill="backend",
               resources=Resources(cpu=3, memory_mb=2048))
    manager.acquire(pool.name, big)  # the engine does this when it assigns a task
    other = Task(id="other", title="lint", required_skill="backend",
                 resources=Resources(cpu=2, memory_mb=1024))
    print(f"can docker take a 2-core task now? {manager.can_accept_task(pool, other)}")

    status = manager.get_pool_status("docker")
    print(f"docker: running {status.running}/{status.max_concurrency}, "
          f"utilization {status.utilization:.0%}, cpu {status.cpu_in_use}/{status.cpu_quota}, "
          f"memory {status.memory_in_use}/{status.memory_quota} MB")

    manager.release(pool.name, big)  # when its runner has stopped: exactly once
    print(f"after release: can docker take it? {manager.can_accept_task(pool, other)}")

    manager.set_pool_enabled("docker", False)  # drain: no new tasks
    print(f"docker disabled -> backend pool: {manager.get_pool_for_skill('backend')}")
    manager.set_pool_enabled("docker", True)

    for st in manager.get_all_pool_status():
        print(f"{st.pool_name}: enabled={st.enabled} healthy={st.healthy} running={st.running}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
