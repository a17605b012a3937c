"""KubernetesLauncher through the official client against a loopback Kubernetes API emulator.

Fast checks of request shapes: k8s_fake_api.FakeKubernetesAPI speaks the batch/v1 Job, core/v1 Pod
and Secret paths the launcher uses, and the tests drive what a cluster would do (pod succeeds,
fails, is OOM-killed, evicted, passes its deadline, the Job is deleted by someone else). The same
behaviour against a real kube-apiserver and kube-controller-manager: tests/k8s.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from docker_support import project_root, wait_for
from k8s_fake_api import FakeKubernetesAPI
from necrocode.dispatcher.errors import RunnerLaunchError
from necrocode.dispatcher.launchers.base import LaunchEnvironment, RunnerExit
from necrocode.dispatcher.launchers.kubernetes import KubernetesLauncher
from necrocode.dispatcher.models import AgentPool, PoolType, Resources, Runner, Slot, Task

kubernetes = pytest.importorskip("kubernetes")

NS = "necrocode-agents"
RFC1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
TEMPLATE = str(project_root() / "config" / "manifests" / "runner-job.yaml")


class Exits:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, runner_id: str) -> None:
        with self.lock:
            self.ids.append(runner_id)


@pytest.fixture
def api() -> Iterator[FakeKubernetesAPI]:
    with FakeKubernetesAPI() as server:
        yield server


@pytest.fixture
def exits() -> Exits:
    return Exits()


@pytest.fixture
def launch_env(tmp_path: Path, exits: Exits) -> LaunchEnvironment:
    return LaunchEnvironment(api_url="http://127.0.0.1:8080", token_for=lambda r: f"tok-{r}",
                             runs_dir=tmp_path / "runs", stop_grace=3.0, on_exit=exits)


def make_launcher(api: FakeKubernetesAPI, env: LaunchEnvironment) -> KubernetesLauncher:
    cfg = kubernetes.client.Configuration(host=api.url)
    return KubernetesLauncher(env, configuration=cfg, poll_interval=0.05)


@pytest.fixture
def launcher(api: FakeKubernetesAPI, launch_env: LaunchEnvironment) -> Iterator[KubernetesLauncher]:
    launcher = make_launcher(api, launch_env)
    yield launcher
    launcher.close()


def k8s_pool(name: str = "k8s", **config: Any) -> AgentPool:
    cfg: dict[str, Any] = {"namespace": NS, "job_template": TEMPLATE,
                           "api_url": "http://necrocode-dispatcher.necrocode.svc:8080"}
    cfg.update(config)
    return AgentPool(name=name, type=PoolType.KUBERNETES, max_concurrency=10, cpu_quota=10,
                     memory_quota=20480, config=cfg)


SLOT = Slot(slot_id="repo-0", slot_path="/srv/necrocode/workspaces/repo-0", branch="nc/1.2")


def wait_exit(launcher: KubernetesLauncher, runner: Runner) -> RunnerExit:
    result: RunnerExit = wait_for(lambda: launcher.poll(runner), 30, what="Job outcome")
    return result


def test_job_is_created_field_by_field(
    api: FakeKubernetesAPI, launcher: KubernetesLauncher, task_factory: Callable[..., Task]
) -> None:
    task = task_factory(id="1.2", taskset="Chat App", command=["kiro", "run", "1.2"],
                        timeout=90.5, resources=Resources(cpu=0.5, memory_mb=256))
    runner = launcher.launch(task, SLOT, k8s_pool(), attempt=2)
    job = api.job(runner.handle or "", NS)
    assert job is not None
    meta = job["metadata"]
    assert RFC1123.match(meta["name"]) and len(meta["name"]) <= 63
    assert meta["name"] == runner.handle and meta["namespace"] == NS
    assert meta["labels"] == {
        "app.kubernetes.io/name": "necrocode-runner", "app.kubernetes.io/part-of": "necrocode",
        "necrocode.managed": "true", "necrocode.runner-id": runner.runner_id,
        "necrocode.task": "Chat-App.1.2", "necrocode.taskset": "Chat-App", "necrocode.pool": "k8s",
    }
    assert meta["annotations"]["necrocode/task"] == "Chat App/1.2"
    assert meta["annotations"]["necrocode/runner-id"] == runner.runner_id
    assert meta["annotations"]["necrocode/attempt"] == "2"
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 91
    assert spec["ttlSecondsAfterFinished"] == 3600  # from the template
    pod = spec["template"]
    assert pod["metadata"]["labels"]["necrocode.runner-id"] == runner.runner_id
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["volumes"] == [{"name": "workspace", "emptyDir": {}}]
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "runner" and container["image"] == "necrocode/runner:latest"
    assert container["command"] == ["python3", "-m", "necrocode.dispatcher.agent_runner", "--",
                                    "kiro", "run", "1.2"]
    assert "args" not in container
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "256Mi"},
                                      "limits": {"cpu": "500m", "memory": "256Mi"}}
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["NECROCODE_RUNNER_ID"] == env["RUNNER_ID"] == runner.runner_id
    assert env["NECROCODE_API_URL"] == "http://necrocode-dispatcher.necrocode.svc:8080"
    # the token is not in the Job: its env names the runner's Secret, owned by the Job
    assert env["NECROCODE_RUNNER_TOKEN"] == {"secretKeyRef": {"name": meta["name"],
                                                              "key": "token"}}
    assert f"tok-{runner.runner_id}" not in json.dumps(job)
    secret = api.cluster.secrets[(NS, meta["name"])]
    assert secret["stringData"] == {"token": f"tok-{runner.runner_id}"}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == meta["uid"]
    assert env["POOL_NAME"] == "k8s" and env["RUNNER_NAMESPACE"] == NS
    ctx = json.loads(env["NECROCODE_TASK_CONTEXT"])
    assert ctx["task"] == "Chat App/1.2" and ctx["slot_path"] == "/workspace"
    assert ctx["attempt"] == 2 and ctx["branch"] == "nc/1.2"
    assert runner.cpu == 0.5 and runner.memory_mb == 256
    posts = [r for r in api.cluster.requests if r.method == "POST"]
    assert [r.path for r in posts] == [f"/apis/batch/v1/namespaces/{NS}/jobs",
                                       f"/api/v1/namespaces/{NS}/secrets"]
    assert launcher.poll(runner) is None


def test_quotas_cap_the_task_and_job_name_is_sanitised(
    api: FakeKubernetesAPI, launcher: KubernetesLauncher, task_factory: Callable[..., Task]
) -> None:
    task = task_factory(id="Very_Long.Task.Name" * 4, taskset="UPPER set",
                        command=["true"], resources=Resources(cpu=64, memory_mb=10**6))
    runner = launcher.launch(task, SLOT, k8s_pool(use_wrapper=False))
    name = runner.handle or ""
    assert RFC1123.match(name) and len(name) <= 63
    job = api.job(name, NS)
    assert job is not None
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["true"]
    assert container["resources"]["limits"] == {"cpu": "10000m", "memory": "20480Mi"}
    for value in job["metadata"]["labels"].values():
        assert len(value) <= 63 and re.match(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$", value)


def test_success_saves_the_log_and_release_deletes_the_job(
    api: FakeKubernetesAPI, launcher: KubernetesLauncher, exits: Exits,
    task_factory: Callable[..., Task],
) -> None:
    runner = launcher.launch(task_factory(command=["agent"]), SLOT, k8s_pool())
    api.finish(runner.handle or "", 0, log="cloned\nall tests pass\n", ns=NS)
    result = wait_exit(launcher, runner)
    assert result.exit_code == 0 and result.reason == "exited" and result.succeeded
    assert runner.runner_id in exits.ids
    assert Path(runner.log_path or "").read_text() == "cloned\nall tests pass\n"
    status = json.loads((Path(runner.attempt_dir or "") / "exit_status.json").read_text())
    assert status["exit_code"] == 0
    launcher.release(runner)
    assert api.cluster.deletes[-1]["propagationPolicy"] == "Background"
    assert api.job(runner.handle or "", NS) is None and api.jobs(NS) == []


@pytest.mark.parametrize(
    ("drive", "expected_code", "reason_start", "oom"),
    [
        (lambda api, name: api.finish(name, 3, log="boom", ns=NS), 3, "exited", False),
        (lambda api, name: api.finish(name, 137, reason="OOMKilled", ns=NS), 137, "OOMKilled",
         True),
        (lambda api, name: api.exceed_deadline(name, ns=NS), None, "DeadlineExceeded", False),
        (lambda api, name: api.evict(name, ns=NS), None, "pod lost: Evicted", False),
    ],
    ids=["non-zero exit", "OOMKilled", "deadline", "pod evicted"],
)
def test_failures_carry_their_reason(
    api: FakeKubernetesAPI, launcher: KubernetesLauncher, task_factory: Callable[..., Task],
    drive: Callable[[FakeKubernetesAPI, str], None], expected_code: int | None,
    reason_start: str, oom: bool,
) -> None:
    runner = launcher.launch(task_factory(command=["agent"], timeout=5), SLOT, k8s_pool())
    drive(api, runner.handle or "")
    result = wait_exit(launcher, runner)
    assert result.exit_code == expected_code
    assert result.reason.startswith(reason_start), result.reason
    assert result.oom_killed is oom and not result.succeeded


def test_job_deleted_by_someone_else_is_reported(
    api: FakeKubernetesAPI, launch_env: LaunchEnvironment, task_factory: Callable[..., Task]
) -> None:
    launcher = make_launcher(api, launch_env)
    launcher.lost_after = 0.2
    try:
        runner = launcher.launch(task_factory(command=["agent"]), SLOT, k8s_pool())
        api.route("DELETE", f"/apis/batch/v1/namespaces/{NS}/jobs/{runner.handle}", {}, None)
        result = wait_exit(launcher, runner)
        assert result.exit_code is None and "deleted outside" in result.reason
    finally:
        launcher.close()


def test_cancel_deletes_with_propagation_and_waits_until_gone(
    api: FakeKubernetesAPI, launcher: KubernetesLauncher, task_factory: Callable[..., Task]
) -> None:
    runner = launcher.launch(task_factory(command=["agent"]), SLOT, k8s_pool())
    name, _ = api.pod_of(runner.handle or "", NS)
    api.cluster.logs[(NS, name)] = "working...\n"
    stopped = launcher.stop(runner, grace=3)
    assert stopped.confirmed, stopped.reason
    result = stopped.exit
    assert result is not None and result.reason == "stopped: Job deleted"
    assert api.cluster.deletes == [{"namespace": NS, "name": runner.handle,
                                    "propagationPolicy": "Foreground",
                                    "gracePeriodSeconds": "3"}]
    assert api.job(runner.handle or "", NS) is None  # stop returned after the Job was gone
    assert Path(runner.log_path or "").read_text() == "working...\n"
    assert launcher.poll(runner) == result


def test_restart_adopts_running_jobs_and_reports_finished_ones(
    api: FakeKubernetesAPI, launch_env: LaunchEnvironment, task_factory: Callable[..., Task]
) -> None:
    first = make_launcher(api, launch_env)
    pool = k8s_pool()
    running = first.launch(task_factory(id="a", command=["agent"]), SLOT, pool)
    finished = first.launch(task_factory(id="b", command=["agent"]), SLOT, pool, attempt=3)
    other = first.launch(task_factory(id="c", command=["agent"]), SLOT, k8s_pool("k8s-big"))
    first.close()  # the Dispatcher goes away; the Jobs live on
    api.finish(finished.handle or "", 4, log="failed while away", ns=NS)

    second = make_launcher(api, launch_env)
    try:
        adopted = {r.runner_id: r for r in second.reconcile(pool)}
        assert set(adopted) == {running.runner_id, finished.runner_id}  # not the other pool's
        assert adopted[finished.runner_id].task_key == "ts/b"
        assert adopted[finished.runner_id].attempt == 3
        assert adopted[running.runner_id].handle == running.handle
        done = second.poll(adopted[finished.runner_id])
        assert done is not None and done.exit_code == 4
        assert Path(finished.log_path or "").read_text() == "failed while away"
        assert second.poll(adopted[running.runner_id]) is None
        api.finish(running.handle or "", 0, ns=NS)
        assert wait_exit(second, adopted[running.runner_id]).exit_code == 0
        selectors = [r.query.get("labelSelector") for r in api.cluster.requests
                     if r.method == "GET" and r.path.endswith("/jobs")]
        assert "necrocode.managed=true,necrocode.pool=k8s" in selectors
        assert [r.runner_id for r in second.reconcile(k8s_pool("k8s-big"))] == [other.runner_id]
    finally:
        second.close()


def test_unreachable_api_and_bad_template_are_clear_launch_errors(
    launch_env: LaunchEnvironment, task_factory: Callable[..., Task], tmp_path: Path
) -> None:
    cfg = kubernetes.client.Configuration(host="http://127.0.0.1:9")
    cfg.retries = False
    launcher = KubernetesLauncher(launch_env, configuration=cfg)
    try:
        ok, why = launcher.health(k8s_pool())
        assert not ok and "does not answer" in why
        with pytest.raises(RunnerLaunchError, match="cannot reach the Kubernetes API"):
            launcher.launch(task_factory(command=["a"]), SLOT, k8s_pool())
        with pytest.raises(RunnerLaunchError, match="job_template 'nope.yaml' not found") as err:
            launcher.launch(task_factory(command=["a"]), SLOT, k8s_pool(job_template="nope.yaml"))
        assert not err.value.retryable
        bad = tmp_path / "bad.yaml"
        bad.write_text("kind: Pod\n")
        with pytest.raises(RunnerLaunchError, match="kind: Job"):
            launcher.launch(task_factory(command=["a"]), SLOT, k8s_pool(job_template=str(bad)))
    finally:
        launcher.close()


def test_api_refusal_names_the_fix(
    api: FakeKubernetesAPI, launcher: KubernetesLauncher, task_factory: Callable[..., Task],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = api.route

    def forbid(method: str, path: str, query: dict[str, str], body: Any) -> Any:
        if method == "POST":
            return 403, {"kind": "Status", "code": 403, "message": 'jobs.batch is forbidden: '
                         'User "system:serviceaccount:necrocode:dispatcher" cannot create'}, \
                "application/json"
        return original(method, path, query, body)

    monkeypatch.setattr(api, "route", forbid)
    with pytest.raises(RunnerLaunchError,
                       match=r"HTTP 403.*needs the verb 'create' on 'jobs'") as err:
        launcher.launch(task_factory(command=["a"]), SLOT, k8s_pool())
    assert not err.value.retryable


# --- through DispatcherCore -------------------------------------------------------------------

def test_dispatcher_core_runs_retries_and_cancels_on_a_kubernetes_pool(
    api: FakeKubernetesAPI, launch_env: LaunchEnvironment, tmp_path: Path
) -> None:
    """The engine drives Jobs end to end: run, retry a failed attempt, cancel (Job deleted)."""
    from necrocode.dispatcher.config import DispatcherConfig
    from necrocode.dispatcher.core import DispatcherCore
    from necrocode.dispatcher.models import EventType, Taskset, TaskState

    pool = k8s_pool()
    config = DispatcherConfig(
        registry_path=":memory:", state_dir=str(tmp_path / "state"), poll_interval=0.2,
        heartbeat_timeout=120, retry_max_attempts=2, retry_backoff_base=1.0,
        retry_backoff_max=0.2, retry_jitter=0.0, runner_stop_grace=1.0, api_enabled=False,
        agent_pools=[pool], skill_mapping={"default": ["k8s"]},
    )
    launcher = make_launcher(api, launch_env)
    core = DispatcherCore(config, launchers={PoolType.KUBERNETES: launcher})
    seen: set[str] = set()
    stop = threading.Event()

    def cluster() -> None:  # what the nodes would do: run each new Job's pod to its end
        while not stop.wait(0.05):
            for job in api.jobs(NS):
                name = job["metadata"]["name"]
                task = job["metadata"]["annotations"]["necrocode/task"]
                attempt = job["metadata"]["annotations"]["necrocode/attempt"]
                if name in seen or task == "k/hold":
                    continue
                seen.add(name)
                code = 1 if (task == "k/flaky" and attempt == "1") else 0
                api.finish(name, code, log=f"{task} attempt {attempt}\n", ns=NS)

    driver = threading.Thread(target=cluster, daemon=True)
    driver.start()
    core.start()
    try:
        core.submit(Taskset(name="k", tasks=[
            Task(id="a", taskset="k", command=["agent"]),
            Task(id="b", taskset="k", command=["agent"], dependencies=["a"]),
            Task(id="flaky", taskset="k", command=["agent"]),
            Task(id="hold", taskset="k", command=["agent"]),
        ]))
        for key in ("k/a", "k/b", "k/flaky"):
            wait_for(lambda k=key: core.registry.get_task(k).state is TaskState.DONE, 30,
                     what=f"{key} done")
        flaky = core.registry.get_task("k/flaky")
        assert flaky.attempts == 1
        kinds = [e.event_type for e in core.registry.get_events(task_key="k/flaky")]
        assert kinds.count(EventType.RUNNER_STARTED) == 2 and EventType.TASK_RETRIED in kinds
        wait_for(lambda: core.registry.get_task("k/hold").state is TaskState.RUNNING, 30,
                 what="hold running")
        handle = wait_for(lambda: [j["metadata"]["name"] for j in api.jobs(NS)
                                   if j["metadata"]["annotations"]["necrocode/task"] == "k/hold"],
                          30, what="hold's Job")[0]
        core.cancel("k/hold")
        wait_for(lambda: core.registry.get_task("k/hold").state is TaskState.CANCELLED, 30,
                 what="hold cancelled")
        deleted = [d for d in api.cluster.deletes if d["name"] == handle]
        assert deleted and deleted[0]["propagationPolicy"] == "Foreground"
        wait_for(lambda: api.jobs(NS) == [], 10, what="every finished Job deleted")
    finally:
        stop.set()
        core.stop(timeout=5)
        driver.join(timeout=5)


def test_kubeconfig_from_the_environment_is_used(
    api: FakeKubernetesAPI, launch_env: LaunchEnvironment, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, task_factory: Callable[..., Task],
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
        "users": [{"name": "me", "user": {"token": "secret-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    launcher = KubernetesLauncher(launch_env, poll_interval=0.05)  # no client given
    try:
        runner = launcher.launch(task_factory(command=["agent"]), SLOT, k8s_pool())
        assert api.job(runner.handle or "", NS) is not None
    finally:
        launcher.close()
