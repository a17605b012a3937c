"""DispatcherCore end to end on a kubernetes pool of the real control plane, through its public
API only (start, submit, snapshot, get_status, stop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from k8s_support import Exits, delete_managed_jobs, k8s_pool, launch_env, make_launcher
from kubelet import FakeKubelet, Plan
from kubernetes import client
from necrocode.dispatcher.config import DispatcherConfig
from necrocode.dispatcher.core import DispatcherCore
from necrocode.dispatcher.models import PoolType, Task, Taskset, TaskState
from support import wait_until

pytestmark = pytest.mark.kubernetes
NS = "necrocode-agents"


def test_dispatcher_runs_retries_and_stops_runners_on_the_real_cluster(
    dispatcher_api: Any, cluster: Any, kubelet: FakeKubelet, tmp_path: Path
) -> None:
    """a, then b (depends on a), flaky (its first attempt exits 1, the retry passes), hold (runs
    until the Dispatcher stops: stop() deletes its Job and puts it back to READY)."""
    kubelet.plan("k8s-e2e/a", Plan(run_for=0.2, log="a done\n"))
    kubelet.plan("k8s-e2e/b", Plan(run_for=0.2))
    kubelet.plan("k8s-e2e/flaky", Plan(run_for=0.2))
    kubelet.when(lambda pod: (pod["metadata"].get("annotations") or {}).get(
        "necrocode/task") == "k8s-e2e/flaky" and "-a1-" in pod["metadata"]["annotations"].get(
        "necrocode/runner-id", ""), Plan(run_for=0.2, exit_code=1, log="flaky\n"))
    kubelet.plan("k8s-e2e/hold", Plan())
    config = DispatcherConfig(
        registry_path=str(tmp_path / "registry.db"), state_dir=str(tmp_path / "state"),
        poll_interval=0.2, heartbeat_timeout=120, retry_max_attempts=2, retry_backoff_base=1.0,
        retry_backoff_max=0.2, retry_jitter=0.0, runner_stop_grace=1.0, api_enabled=False,
        agent_pools=[k8s_pool()], skill_mapping={"default": ["k8s"]},
    )
    launcher = make_launcher(dispatcher_api, launch_env(tmp_path, Exits(), stop_grace=1.0))
    core = DispatcherCore(config, launchers={PoolType.KUBERNETES: launcher})
    core.start()
    try:
        core.submit(Taskset(name="k8s-e2e", tasks=[
            Task(id="a", taskset="k8s-e2e", command=["agent"]),
            Task(id="b", taskset="k8s-e2e", command=["agent"], dependencies=["a"]),
            Task(id="flaky", taskset="k8s-e2e", command=["agent"]),
            Task(id="hold", taskset="k8s-e2e", command=["agent"]),
        ]))

        def finished() -> dict[str, Any]:
            return {f.key: f for f in core.snapshot().finished}

        done = wait_until(lambda: (lambda f: f if {"k8s-e2e/a", "k8s-e2e/b", "k8s-e2e/flaky"}
                                   <= set(f) else None)(finished()), 60,
                          "a, b and flaky finished", 0.1)
        assert {done[k].state for k in done} == {TaskState.DONE}
        assert done["k8s-e2e/flaky"].attempts == 1  # one failed attempt, then the retry
        running = wait_until(lambda: [r for r in core.snapshot().running
                                      if r.key == "k8s-e2e/hold"], 30, "hold running", 0.1)
        hold_job = running[0].handle
        status = core.get_status()
        assert [r["key"] for r in status["running"]] == ["k8s-e2e/hold"]
        assert hold_job and client.BatchV1Api(cluster).read_namespaced_job(hold_job, NS)
    finally:
        core.stop(timeout=0.5)
        launcher.close()
    # stop() fenced the runner that was still running: its Job is gone (and finished Jobs
    # were released as they ended)
    left = client.BatchV1Api(cluster).list_namespaced_job(
        NS, label_selector="necrocode.taskset=k8s-e2e").items
    assert [j.metadata.name for j in left if not j.metadata.deletion_timestamp] == []
    delete_managed_jobs(cluster)
