"""Several Agent Pools (local, Docker, Kubernetes) routed by skill, loaded from YAML.

Shows how `skill_mapping` routes each skill to an ordered list of pools, with load balancing
(least utilised first) and the `default` entry for tasks without a skill. Nothing is launched:
this example only asks the AgentPoolManager where tasks would go.

Run:  python examples/multi_pool_setup.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from necrocode.dispatcher import AgentPoolManager, load_config
from necrocode.dispatcher.models import Task

CONFIG = """\
dispatcher:
  scheduling_policy: skill-based
  max_global_concurrency: 16

agent_pools:
  local:
    type: local-process
    max_concurrency: 2
  docker:
    type: docker
    max_concurrency: 4
    cpu_quota: 4
    memory_quota: 8192
    config:
      image: necrocode/runner:latest
      mount_repo_pool: true
  k8s:
    type: kubernetes
    max_concurrency: 10
    cpu_quota: 10
    memory_quota: 20480
    config:
      namespace: necrocode-agents
      job_template: manifests/runner-job.yaml

skill_mapping:
  backend: [docker, k8s]
  frontend: [docker, k8s]
  database: [docker]
  devops: [k8s]
  default: [local]
"""


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dispatcher.yaml"
        path.write_text(CONFIG)
        config = load_config(path)

    manager = AgentPoolManager(config)
    for pool in config.agent_pools:
        print(f"pool {pool.name:7} type={pool.type.value:14} max={pool.max_concurrency}")

    # Two backend tasks: the second goes to k8s because docker is then more utilised.
    first = Task(id="1", title="API", required_skill="backend")
    pool = manager.get_pool_for_skill("backend", first)
    assert pool is not None
    manager.acquire(pool.name, first)
    second = manager.get_pool_for_skill("backend", Task(id="2", title="API 2",
                                                        required_skill="backend"))
    print(f"backend #1 -> {pool.name}; backend #2 -> {second.name if second else None}")

    for skill in ["frontend", "database", "devops", "", "unknown-skill"]:
        chosen = manager.get_pool_for_skill(skill)
        print(f"skill {skill or '(none)':14} -> {chosen.name if chosen else 'no pool'}")

    status = manager.get_pool_status("docker")
    print(f"docker: {status.running}/{status.max_concurrency} running, "
          f"cpu {status.cpu_in_use}/{status.cpu_quota}, memory {status.memory_in_use}/"
          f"{status.memory_quota} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
