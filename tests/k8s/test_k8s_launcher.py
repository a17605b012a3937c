"""KubernetesLauncher against a real kube-apiserver and kube-controller-manager (the Job
controller and the garbage collector), with the Dispatcher's ServiceAccount token bound only by
config/manifests/dispatcher-rbac.yaml, and the kubelet stand-in running the pods."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from controlplane import free_port
from k8s_support import (
    SLOT,
    Exits,
    delete_managed_jobs,
    k8s_pool,
    launch_env,
    make_launcher,
    pods_of,
    read_job,
    read_secret,
    wait_exit,
    wait_running,
)
from kubelet import FakeKubelet, Plan
from kubernetes import client
from necrocode.dispatcher.launchers.kubernetes import KubernetesLauncher
from necrocode.dispatcher.models import Resources, Runner, RunnerState, Task
from support import wait_until

pytestmark = pytest.mark.kubernetes
NS = "necrocode-agents"


@pytest.fixture
def exits() -> Exits:
    return Exits()


@pytest.fixture
def launcher(dispatcher_api: Any, kubelet: FakeKubelet, cluster: Any, tmp_path: Path,
             exits: Exits) -> Iterator[KubernetesLauncher]:
    """A launcher with the Dispatcher's own ServiceAccount (only what the RBAC manifest grants)."""
    launcher = make_launcher(dispatcher_api, launch_env(tmp_path, exits))
    yield launcher
    launcher.close()
    delete_managed_jobs(cluster)


def test_job_as_the_server_stores_it_field_by_field(
    launcher: KubernetesLauncher, cluster: Any, task_factory: Callable[..., Task]
) -> None:
    task = task_factory(id="1.2", taskset="Chat App", command=["kiro", "run", "1.2"],
                        timeout=90.5, resources=Resources(cpu=0.5, memory_mb=256))
    runner = launcher.launch(task, SLOT, k8s_pool(), attempt=2)
    job = read_job(cluster, runner.handle or "")
    assert job is not None
    meta, spec = job["metadata"], job["spec"]
    assert meta["name"] == runner.handle and meta["namespace"] == NS
    assert meta["labels"] == {
        "app.kubernetes.io/name": "necrocode-runner", "app.kubernetes.io/part-of": "necrocode",
        "necrocode.managed": "true", "necrocode.runner-id": runner.runner_id,
        "necrocode.task": "Chat-App.1.2", "necrocode.taskset": "Chat-App", "necrocode.pool": "k8s",
    }
    ann = meta["annotations"]
    assert (ann["necrocode/task"], ann["necrocode/runner-id"], ann["necrocode/attempt"]) == \
        ("Chat App/1.2", runner.runner_id, "2")
    assert ann["necrocode/pool"] == "k8s" and ann["necrocode/slot-id"] == "repo-0"
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 91
    assert spec["ttlSecondsAfterFinished"] == 3600  # kept: the TTLAfterFinished gate is on
    assert spec["completions"] == 1 and spec["parallelism"] == 1  # server defaults
    # the server's selector and the labels it adds to the pod template
    assert spec["selector"] == {"matchLabels": {"controller-uid": meta["uid"]}}
    pod = spec["template"]
    assert pod["metadata"]["labels"]["controller-uid"] == meta["uid"]
    assert pod["metadata"]["labels"]["job-name"] == meta["name"]
    assert pod["metadata"]["labels"]["necrocode.runner-id"] == runner.runner_id
    pspec = pod["spec"]
    assert pspec["restartPolicy"] == "Never"
    assert pspec["terminationGracePeriodSeconds"] == 3  # the stop grace, not the default 30
    assert pspec["automountServiceAccountToken"] is False
    assert pspec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001,
                                        "fsGroup": 10001}
    assert pspec["volumes"] == [{"name": "workspace", "emptyDir": {}}]
    (container,) = pspec["containers"]
    assert container["command"] == ["python3", "-m", "necrocode.dispatcher.agent_runner", "--",
                                    "kiro", "run", "1.2"]
    assert container["workingDir"] == "/workspace"
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "256Mi"},
                                      "limits": {"cpu": "500m", "memory": "256Mi"}}
    env = {e["name"]: e for e in container["env"]}
    assert env["NECROCODE_API_URL"]["value"] == "http://necrocode-dispatcher.necrocode.svc:8080"
    assert env["NECROCODE_RUNNER_ID"]["value"] == runner.runner_id
    ctx = json.loads(env["NECROCODE_TASK_CONTEXT"]["value"])
    assert ctx["task"] == "Chat App/1.2" and ctx["attempt"] == 2 and ctx["branch"] == "nc/1.2"
    # the runner token: a Secret the Job owns, referenced from the env, nowhere in the Job
    assert env["NECROCODE_RUNNER_TOKEN"] == {"name": "NECROCODE_RUNNER_TOKEN", "valueFrom": {
        "secretKeyRef": {"name": meta["name"], "key": "token"}}}
    assert f"tok-{runner.runner_id}" not in json.dumps(job)
    secret = read_secret(cluster, meta["name"])
    assert secret is not None
    assert base64.b64decode(secret["data"]["token"]).decode() == f"tok-{runner.runner_id}"
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", meta["name"], meta["uid"])
    assert launcher.poll(runner) is None


def test_success_copies_the_log_through_the_apiserver_and_release_removes_everything(
    launcher: KubernetesLauncher, kubelet: FakeKubelet, cluster: Any, exits: Exits,
    task_factory: Callable[..., Task],
) -> None:
    task = task_factory(command=["agent"])
    kubelet.plan(task.key, Plan(run_for=0.3, log="cloned\nall tests pass\n"))
    runner = launcher.launch(task, SLOT, k8s_pool())
    result = wait_exit(launcher, runner)
    assert (result.exit_code, result.reason, result.succeeded) == (0, "exited", True)
    assert runner.runner_id in exits.ids
    assert Path(runner.log_path or "").read_text() == "cloned\nall tests pass\n"
    status = json.loads((Path(runner.attempt_dir or "") / "exit_status.json").read_text())
    assert status["exit_code"] == 0 and status["source"] == "kubernetes"
    name = runner.handle or ""
    launcher.release(runner)
    wait_until(lambda: read_job(cluster, name) is None and not pods_of(cluster, name)
               and read_secret(cluster, name) is None, 30,
               "the Job, its pod and its token Secret gone (garbage collector)", 0.1)


ANY = object()


@pytest.mark.parametrize(
    ("plan", "timeout", "code", "reason_start", "oom"),
    [
        # the container exits 3: the Job controller marks the Job Failed (backoffLimit 0)
        (Plan(run_for=0.3, exit_code=3, log="boom"), None, 3, "exited", False),
        # the kernel's OOM killer: exit 137, reason OOMKilled in the container status
        (Plan(run_for=0.3, exit_code=137, reason="OOMKilled"), None, 137, "OOMKilled", True),
        # the real Job controller enforces activeDeadlineSeconds and deletes the pod
        (Plan(), 1, ANY, "DeadlineExceeded", False),
        # the node evicts the pod (phase Failed, reason Evicted)
        (Plan(run_for=0.3, evict=True), None, None, "pod lost: Evicted", False),
    ],
    ids=["non-zero exit", "OOMKilled", "deadline", "evicted"],
)
def test_failures_carry_their_reason(
    launcher: KubernetesLauncher, kubelet: FakeKubelet, task_factory: Callable[..., Task],
    plan: Plan, timeout: float | None, code: Any, reason_start: str, oom: bool,
) -> None:
    task = task_factory(command=["agent"], timeout=timeout)
    kubelet.plan(task.key, plan)
    runner = launcher.launch(task, SLOT, k8s_pool())
    result = wait_exit(launcher, runner)
    if code is not ANY:
        assert result.exit_code == code
    assert result.reason.startswith(reason_start), result.reason
    assert result.oom_killed is oom and not result.succeeded


def test_cancel_deletes_in_the_foreground_and_returns_once_job_and_pods_are_gone(
    launcher: KubernetesLauncher, kubelet: FakeKubelet, cluster: Any, exits: Exits,
    task_factory: Callable[..., Task],
) -> None:
    task = task_factory(command=["agent"])
    kubelet.plan(task.key, Plan(log="working...\n"))
    runner = launcher.launch(task, SLOT, k8s_pool())
    wait_running(cluster, runner.handle or "")
    stopped = launcher.stop(runner, grace=3)
    assert stopped.confirmed, stopped.reason
    assert stopped.exit is not None and stopped.exit.reason == "stopped: Job deleted"
    assert read_job(cluster, runner.handle or "") is None  # gone when stop returned
    assert pods_of(cluster, runner.handle or "") == []
    assert Path(runner.log_path or "").read_text() == "working...\n"
    assert launcher.poll(runner) == stopped.exit
    assert runner.runner_id not in exits.ids  # the watcher did not settle it on its own


def test_stop_is_not_raced_by_the_garbage_collector(
    dispatcher_api: Any, kubelet: FakeKubelet, cluster: Any, tmp_path: Path,
    task_factory: Callable[..., Task],
) -> None:
    """Regression: the GC marks the pod deleted while it still runs (it takes a second to honour
    TERM); a watcher polling fast read that as "pod lost: pod deleted" before stop() recorded
    "stopped". Several runners, a 20 ms watcher."""
    exits = Exits()
    launcher = make_launcher(dispatcher_api, launch_env(tmp_path, exits), poll=0.02)
    try:
        runners = []
        for _ in range(3):
            task = task_factory(command=["agent"])
            kubelet.plan(task.key, Plan(term_delay=1.0))
            runners.append(launcher.launch(task, SLOT, k8s_pool()))
        for runner in runners:
            wait_running(cluster, runner.handle or "")
        for runner in runners:
            stopped = launcher.stop(runner, grace=5)
            assert stopped.confirmed, stopped.reason
            assert stopped.exit is not None and stopped.exit.reason == "stopped: Job deleted"
            outcome = launcher.poll(runner)
            assert outcome is not None and outcome.reason == "stopped: Job deleted"
        assert exits.ids == []  # no runner was settled as lost meanwhile
    finally:
        launcher.close()
        delete_managed_jobs(cluster)


def test_the_stop_grace_reaches_the_pods(
    launcher: KubernetesLauncher, kubelet: FakeKubelet, cluster: Any,
    task_factory: Callable[..., Task],
) -> None:
    """Regression: the grace of the Job delete applies to the Job; the GC deleted the pods with
    their own terminationGracePeriodSeconds (default 30 s), so a container ignoring TERM made
    stop(grace=3) take 31 s. Now the pods are deleted with the stop's grace."""
    task = task_factory(command=["agent"])
    kubelet.plan(task.key, Plan(ignore_term=True))
    pool = k8s_pool(job_template=None)  # the built-in template: no grace period of its own
    runner = launcher.launch(task, SLOT, pool)
    pod = wait_running(cluster, runner.handle or "")
    stopped = launcher.stop(runner, grace=2)
    assert stopped.confirmed, stopped.reason
    timeline = kubelet.timelines[(NS, pod["metadata"]["name"])]
    assert timeline.grace == 2  # what the pod was killed with: not 30, nor the template's 3
    assert timeline.removed is not None and pods_of(cluster, runner.handle or "") == []


def test_restart_adopts_jobs_by_label_and_reports_those_that_ended_meanwhile(
    dispatcher_api: Any, kubelet: FakeKubelet, cluster: Any, tmp_path: Path,
    task_factory: Callable[..., Task],
) -> None:
    env = launch_env(tmp_path, Exits())
    first = make_launcher(dispatcher_api, env)
    pool = k8s_pool()
    keep, ended = task_factory(command=["agent"]), task_factory(command=["agent"])
    other_task = task_factory(command=["agent"])
    kubelet.plan(ended.key, Plan(run_for=0.2, exit_code=4, log="failed while away"))
    running = first.launch(keep, SLOT, pool)
    finished = first.launch(ended, SLOT, pool, attempt=3)
    other = first.launch(other_task, SLOT, k8s_pool("k8s-big"))
    first.close()  # the Dispatcher goes away; the Jobs live on

    def failed() -> bool:
        job = read_job(cluster, finished.handle or "") or {}
        return any(c["type"] == "Failed" for c in (job.get("status") or {}).get("conditions")
                   or [])

    wait_until(failed, 30, "the Job controller to fail the Job while nobody watched", 0.1)
    second = make_launcher(dispatcher_api, env)
    try:
        adopted = {r.runner_id: r for r in second.reconcile(pool)}
        assert set(adopted) == {running.runner_id, finished.runner_id}  # not the other pool's
        back = adopted[finished.runner_id]
        assert (back.task_key, back.attempt, back.state) == (ended.key, 3, RunnerState.RUNNING)
        assert back.handle == finished.handle and back.slot_id == "repo-0"
        done = second.poll(back)
        assert done is not None and done.exit_code == 4
        assert Path(finished.log_path or "").read_text() == "failed while away"
        assert second.poll(adopted[running.runner_id]) is None
        kubelet.end(keep.key, 0)
        assert wait_exit(second, adopted[running.runner_id]).exit_code == 0
        assert [r.runner_id for r in second.reconcile(k8s_pool("k8s-big"))] == [other.runner_id]
    finally:
        second.close()
        delete_managed_jobs(cluster)


def test_a_job_deleted_by_someone_else_is_reported(
    launcher: KubernetesLauncher, cluster: Any, task_factory: Callable[..., Task]
) -> None:
    launcher.lost_after = 0.5
    runner = launcher.launch(task_factory(command=["agent"]), SLOT, k8s_pool())
    wait_running(cluster, runner.handle or "")
    client.BatchV1Api(cluster).delete_namespaced_job(runner.handle, NS,
                                                     propagation_policy="Background")
    result = wait_exit(launcher, runner)
    # the watcher lists Jobs, then pods: between the two the Job may go and the garbage
    # collector mark its pod deleted; either way the runner was removed by someone else
    assert "deleted outside" in result.reason or result.reason == "pod lost: pod deleted", \
        result.reason
    assert result.exit_code in (None, 143)  # 143: its pod had been sent TERM


def test_stop_against_a_stopped_server_is_unconfirmed_with_the_reason(
    launcher: KubernetesLauncher, tmp_path: Path, cluster: Any,
    task_factory: Callable[..., Task],
) -> None:
    runner = launcher.launch(task_factory(command=["agent"]), SLOT, k8s_pool())
    cfg = client.Configuration(host=f"https://127.0.0.1:{free_port()}")  # nothing listens
    cfg.retries = False
    away = KubernetesLauncher(launcher.env, configuration=cfg)
    try:
        copy = Runner(runner_id=runner.runner_id, task_key=runner.task_key,
                      pool_name=runner.pool_name, handle=runner.handle, details=runner.details)
        stopped = away.stop(copy, grace=1)
        assert not stopped.confirmed
        assert "cannot reach the Kubernetes API to delete jobs" in stopped.reason
        ok, why = away.health(k8s_pool())
        assert not ok and "does not answer" in why
    finally:
        away.close()
    assert read_job(cluster, runner.handle or "") is not None  # nothing was deleted
