"""Pure parts of the Kubernetes launcher: pool settings, RFC 1123 names, labels, the Job body and
how a Job's and Pod's status becomes a :class:`RunnerExit`. Nothing here calls a cluster.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import RunnerLaunchError
from ..models import AgentPool, Runner, RunnerState, Slot, Task
from ..yaml_source import parse_yaml
from .base import LaunchEnvironment, RunnerExit, agent_argv, container_agent, runner_env
from .docker_spec import WRAPPER_MODULE, limits_for

LABEL_MANAGED = "necrocode.managed"
LABEL_RUNNER = "necrocode.runner-id"
LABEL_TASK = "necrocode.task"
LABEL_TASKSET = "necrocode.taskset"
LABEL_POOL = "necrocode.pool"
# Label values are limited to 63 chars of [A-Za-z0-9._-]; the exact values go in annotations.
ANN_RUNNER = "necrocode/runner-id"
ANN_TASK = "necrocode/task"
ANN_POOL = "necrocode/pool"
ANN_ATTEMPT = "necrocode/attempt"
ANN_SLOT = "necrocode/slot-id"
ANN_SLOT_PATH = "necrocode/slot-path"
ANN_ATTEMPT_DIR = "necrocode/attempt-dir"
#: The runner's API token lives in a Secret of the Job's name under this key, never in the Job.
TOKEN_ENV = "NECROCODE_RUNNER_TOKEN"
TOKEN_KEY = "token"
LOG_FILE = "output.log"  # the attempt's copy of the runner's pod log

DEFAULT_TEMPLATE: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "necrocode-runner"},
    "spec": {
        "backoffLimit": 0,
        "template": {
            "metadata": {},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "runner", "image": "necrocode/runner:latest",
                                "workingDir": "/workspace"}],
            },
        },
    },
}

_DNS_BAD = re.compile(r"[^a-z0-9-]+")
_LABEL_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def job_name(runner_id: str, prefix: str = "necrocode") -> str:
    """An RFC 1123 label for a runner's Job: lowercase ``[a-z0-9-]``, ≤ 63 chars, alnum at both
    ends, unique per runner id (a hash of the full id ends names that had to be shortened)."""
    raw = f"{prefix}-{runner_id}" if prefix else runner_id
    name = re.sub(r"-{2,}", "-", _DNS_BAD.sub("-", raw.lower())).strip("-")
    if len(name) > 63 or name != raw:
        digest = hashlib.sha1(runner_id.encode()).hexdigest()[:8]
        name = f"{name[:54].rstrip('-')}-{digest}"
    if not name[0].isalnum():
        name = "n" + name[:62]
    return name


def label_value(value: str) -> str:
    """A valid label value: ≤ 63 chars of ``[A-Za-z0-9._-]``, alphanumeric at both ends."""
    text = _LABEL_BAD.sub("-", value)
    if len(text) > 63:
        text = text[:54] + "-" + hashlib.sha1(value.encode()).hexdigest()[:8]
    return text.strip("-_.")


def cpu_quantity(cores: float) -> str:
    return f"{max(1, int(math.ceil(cores * 1000)))}m"


def memory_quantity(mb: int) -> str:
    return f"{mb}Mi"


@dataclass(frozen=True)
class KubernetesPoolSettings:
    """The ``config:`` keys of a kubernetes pool, with defaults."""

    namespace: str = "default"
    job_template: str | None = None  # path of a Job YAML; None: the built-in template
    image: str | None = None  # overrides the template's runner image
    container: str = "runner"  # which container of the template runs the agent
    use_wrapper: bool = True
    python: str = "python3"
    api_url: str | None = None  # the Dispatcher API as seen from the pods (its Service)
    slot_path: str = "/workspace"
    env: dict[str, str] = field(default_factory=dict)
    service_account: str | None = None
    propagation_policy: str = "Foreground"  # how stop() deletes a Job: Foreground | Background
    ttl_seconds_after_finished: int | None = None
    name_prefix: str = "necrocode"

    @classmethod
    def from_pool(cls, pool: AgentPool) -> KubernetesPoolSettings:
        cfg = dict(pool.config or {})
        env_raw = cfg.get("env") or {}
        if not isinstance(env_raw, dict):
            raise RunnerLaunchError(
                f"agent_pools.{pool.name}.config.env must be a mapping of names to values",
                pool=pool.name, retryable=False,
            )
        policy = str(cfg.get("propagation_policy") or "Foreground")
        if policy not in ("Foreground", "Background"):
            raise RunnerLaunchError(
                f"agent_pools.{pool.name}.config.propagation_policy: {policy!r} is not "
                "Foreground or Background", pool=pool.name, retryable=False,
            )
        ttl = cfg.get("ttl_seconds_after_finished")
        wrapper = cfg.get("use_wrapper", True)
        if isinstance(wrapper, str):
            wrapper = wrapper.strip().lower() in ("1", "true", "yes", "on")
        return cls(
            namespace=str(cfg.get("namespace") or "default"),
            job_template=str(cfg["job_template"]) if cfg.get("job_template") else None,
            image=cfg.get("image") or None,
            container=str(cfg.get("container") or "runner"),
            use_wrapper=bool(wrapper),
            python=str(cfg.get("python") or "python3"),
            api_url=cfg.get("api_url") or None,
            slot_path=str(cfg.get("slot_path") or "/workspace"),
            env={str(k): str(v) for k, v in env_raw.items()},
            service_account=cfg.get("service_account") or None,
            propagation_policy=policy,
            ttl_seconds_after_finished=int(ttl) if ttl is not None else None,
            name_prefix=str(cfg.get("name_prefix", "necrocode")),
        )


def resolve_template_path(raw: str, search: list[Path] | None = None) -> Path:
    """Find a job_template: absolute, else relative to the working dir, then to ``config/``."""
    path = Path(raw).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        bases = search or [Path.cwd(), Path.cwd() / "config"]
        candidates = [base / path for base in bases]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise RunnerLaunchError(
        f"job_template {raw!r} not found (looked at {tried}); set "
        "agent_pools.<pool>.config.job_template to the path of a Job YAML such as "
        "config/manifests/runner-job.yaml", retryable=False,
    )


def load_job_template(raw: str | None, pool_name: str = "") -> dict[str, Any]:
    """The Job template as a dict (the built-in one when ``raw`` is None)."""
    if not raw:
        return copy.deepcopy(DEFAULT_TEMPLATE)
    path = resolve_template_path(raw)
    try:
        data = parse_yaml(path.read_text(encoding="utf-8")).value  # within the alias budget
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RunnerLaunchError(f"job_template {path}: cannot read it: {exc}",
                                pool=pool_name, retryable=False) from exc
    problems = []
    if not isinstance(data, dict) or data.get("kind") != "Job":
        problems.append("it must be one YAML document of kind: Job")
    else:
        containers = (((data.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
            "containers")
        if not containers or not isinstance(containers, list):
            problems.append("spec.template.spec.containers must list at least one container")
    if problems:
        raise RunnerLaunchError(f"job_template {path}: {'; '.join(problems)}",
                                pool=pool_name, retryable=False)
    assert isinstance(data, dict)
    return data


def build_job(
    template: dict[str, Any],
    task: Task,
    slot: Slot,
    pool: AgentPool,
    runner_id: str,
    attempt: int,
    env: LaunchEnvironment,
    attempt_path: Path,
    settings: KubernetesPoolSettings,
) -> dict[str, Any]:
    """The batch/v1 Job body of one runner, built on a copy of ``template``."""
    job = copy.deepcopy(template)
    job["apiVersion"] = "batch/v1"
    job["kind"] = "Job"
    name = job_name(runner_id, settings.name_prefix)
    labels = {
        LABEL_MANAGED: "true",
        LABEL_RUNNER: label_value(runner_id),
        LABEL_TASK: label_value(task.key.replace("/", ".")),
        LABEL_TASKSET: label_value(task.taskset),
        LABEL_POOL: label_value(pool.name),
    }
    annotations = {
        ANN_RUNNER: runner_id, ANN_TASK: task.key, ANN_POOL: pool.name,
        ANN_ATTEMPT: str(attempt), ANN_SLOT: slot.slot_id, ANN_SLOT_PATH: slot.slot_path,
        ANN_ATTEMPT_DIR: str(attempt_path),
    }
    meta = job.setdefault("metadata", {}) or {}
    job["metadata"] = meta
    meta.pop("generateName", None)
    meta["name"] = name
    meta["namespace"] = settings.namespace
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}

    spec = job.setdefault("spec", {})
    spec["backoffLimit"] = 0
    if task.timeout:
        spec["activeDeadlineSeconds"] = max(1, int(math.ceil(task.timeout)))
    if settings.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = settings.ttl_seconds_after_finished
    pod = spec.setdefault("template", {})
    pod_meta = pod.setdefault("metadata", {}) or {}
    pod["metadata"] = pod_meta
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **labels}
    pod_meta["annotations"] = {**(pod_meta.get("annotations") or {}),
                               ANN_RUNNER: runner_id, ANN_TASK: task.key}
    pod_spec = pod.setdefault("spec", {})
    pod_spec["restartPolicy"] = "Never"
    # what the garbage collector and the Job controller give a pod they delete; stop() deletes the
    # pods itself with its own grace, which may be shorter but not longer than this
    pod_spec.setdefault("terminationGracePeriodSeconds", max(0, int(math.ceil(env.stop_grace))))
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    containers = pod_spec.get("containers") or []
    container = next((c for c in containers if c.get("name") == settings.container),
                     containers[0] if containers else None)
    if container is None:
        raise RunnerLaunchError(f"pool {pool.name!r}: the job template has no container",
                                pool=pool.name, retryable=False)

    plan, agent_env = container_agent(
        task, slot, pool, attempt, env, slot_path=settings.slot_path,
        agent_dir="/tmp/necrocode-attempt", use_wrapper=settings.use_wrapper,
        attempt_path=Path(attempt_path) if attempt_path else None, key_by_reference=True)
    argv = agent_argv(task, slot, pool, runner_id, attempt, plan=plan)
    if settings.use_wrapper:
        container["command"] = [settings.python, "-m", WRAPPER_MODULE, "--", *argv]
    else:
        container["command"] = argv
    container.pop("args", None)
    if settings.image:
        container["image"] = settings.image
    container.setdefault("workingDir", settings.slot_path)

    contract = runner_env(task, slot, pool, runner_id, attempt, env, slot_path=settings.slot_path)
    if settings.api_url and env.api_url:
        contract["NECROCODE_API_URL"] = settings.api_url
    wanted = {**settings.env, **contract, **agent_env, "PYTHONUNBUFFERED": "1"}
    token = wanted.pop(TOKEN_ENV, None)
    kept = [e for e in (container.get("env") or []) if e.get("name") not in wanted
            and e.get("name") != TOKEN_ENV]
    env_list: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in wanted.items()]
    if token is not None:
        env_list.append({"name": TOKEN_ENV, "valueFrom": {
            "secretKeyRef": {"name": name, "key": TOKEN_KEY}}})
    container["env"] = kept + env_list

    cpu, mem = limits_for(task, pool)
    resources = container.setdefault("resources", {}) or {}
    container["resources"] = resources
    requests = dict(resources.get("requests") or {})
    limits = dict(resources.get("limits") or {})
    if cpu:
        requests["cpu"] = limits["cpu"] = cpu_quantity(cpu)
    if mem:
        requests["memory"] = limits["memory"] = memory_quantity(mem)
    resources["requests"] = requests
    resources["limits"] = limits
    return job


def build_token_secret(job: dict[str, Any], token: str) -> dict[str, Any]:
    """The Secret holding a runner's API token, named like its Job and owned by it (the garbage
    collector deletes it with the Job). ``job`` is the Job as the server returned it (its uid)."""
    meta = job["metadata"]
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"],
            "labels": {k: v for k, v in (meta.get("labels") or {}).items()
                       if k.startswith("necrocode.")},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                 "uid": meta["uid"]}],
        },
        "stringData": {TOKEN_KEY: token},
    }


def job_uses_token_secret(job: dict[str, Any]) -> bool:
    """True when a Job body reads the runner token from its Secret."""
    for container in job["spec"]["template"]["spec"].get("containers") or []:
        for item in container.get("env") or []:
            if item.get("name") == TOKEN_ENV and "valueFrom" in item:
                return True
    return False


def _true(cond: dict[str, Any]) -> bool:
    return str(cond.get("status")) == "True"


LOST_POD_REASONS = ("Evicted", "NodeLost", "Shutdown", "Terminated", "UnexpectedAdmissionError",
                    "NodeAffinity", "OutOfcpu", "OutOfmemory")


def job_exit(
    job: dict[str, Any] | None, pods: list[dict[str, Any]], container: str = "runner"
) -> RunnerExit | None:
    """How a runner's Job ended, from the Job's conditions and its Pod's status; None if running.

    ``job`` None means the Job is gone (deleted by someone else).
    """
    pod_code, pod_reason = _terminated(pods, container)
    finished = None
    if job is None:
        return RunnerExit(pod_code, "Job deleted outside the Dispatcher")
    status = job.get("status") or {}
    conditions = [c for c in status.get("conditions") or [] if _true(c)]
    kinds = {c.get("type"): c for c in conditions}
    if "Complete" in kinds or (status.get("succeeded") or 0) > 0:
        return RunnerExit(pod_code if pod_code is not None else 0, "exited", finished)
    failed = kinds.get("Failed")
    if failed is not None or (status.get("failed") or 0) > 0:
        why = (failed or {}).get("reason") or ""
        if pod_reason == "OOMKilled":
            return RunnerExit(pod_code, "OOMKilled: the pod ran out of memory (memory limit)",
                              finished, oom_killed=True)
        if why == "DeadlineExceeded":
            msg = (failed or {}).get("message") or "active longer than activeDeadlineSeconds"
            return RunnerExit(pod_code, f"DeadlineExceeded: {msg}", finished)
        lost = _lost_reason(pods)
        if lost:
            return RunnerExit(None, f"pod lost: {lost}", finished)
        if pod_code is not None:
            reason = "exited" if pod_code <= 128 else f"signal {pod_code - 128}"
            return RunnerExit(pod_code, reason, finished)
        msg = (failed or {}).get("message") or ""
        return RunnerExit(None, f"Job failed: {why or 'unknown'}{': ' + msg if msg else ''}",
                          finished)
    # a pod being deleted while its Job has no verdict yet is not lost: the Job controller
    # deletes the pods of a Job past its activeDeadlineSeconds first and marks the Job Failed
    # (DeadlineExceeded) right after, and a pod deleted by anyone else fails the Job too
    lost = _lost_reason(pods, deleted=False)
    if lost:
        return RunnerExit(None, f"pod lost: {lost}", finished)
    return None


def _terminated(pods: list[dict[str, Any]], container: str) -> tuple[int | None, str]:
    """(exit code, reason) of the runner container of the first pod where it has terminated."""
    for pod in pods:
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        for cs in statuses:
            if cs.get("name") != container and len(statuses) > 1:
                continue
            term = (cs.get("state") or {}).get("terminated")
            if term:
                code = term.get("exitCode")
                return (int(code) if code is not None else None), str(term.get("reason") or "")
    return None, ""


def _lost_reason(pods: list[dict[str, Any]], *, deleted: bool = True) -> str:
    """Why the runner's pod is lost ("" if it is not); ``deleted``: a pod being deleted while
    it still runs counts as lost."""
    for pod in pods:
        status = pod.get("status") or {}
        reason = status.get("reason") or ""
        if status.get("phase") == "Unknown" or reason in LOST_POD_REASONS:
            message = status.get("message") or ""
            return f"{reason or 'phase Unknown'}{': ' + message if message else ''}"
        if deleted and (pod.get("metadata") or {}).get("deletionTimestamp") and status.get(
                "phase") in ("Pending", "Running"):
            return "pod deleted"
    return ""


def adopted_runner(job: dict[str, Any], pool: AgentPool,
                   settings: KubernetesPoolSettings) -> Runner | None:
    """The Runner a managed Job found after a restart stands for (None: not one of ours)."""
    meta = job.get("metadata") or {}
    labels = meta.get("labels") or {}
    ann = meta.get("annotations") or {}
    runner_id = ann.get(ANN_RUNNER) or labels.get(LABEL_RUNNER)
    if not runner_id:
        return None
    containers = job["spec"]["template"]["spec"]["containers"]
    container = next((c for c in containers if c.get("name") == settings.container),
                     containers[0])
    adir = ann.get(ANN_ATTEMPT_DIR)
    limits = (container.get("resources") or {}).get("limits") or {}
    return Runner(
        runner_id=runner_id, task_key=ann.get(ANN_TASK, ""), pool_name=pool.name,
        slot_id=ann.get(ANN_SLOT), slot_path=ann.get(ANN_SLOT_PATH), handle=meta["name"],
        state=RunnerState.RUNNING, attempt=int(ann.get(ANN_ATTEMPT) or 1),
        log_path=str(Path(adir) / LOG_FILE) if adir else None, attempt_dir=adir,
        cpu=cpu_cores(limits.get("cpu")), memory_mb=memory_mb(limits.get("memory")),
        details={"platform": "kubernetes", "job": meta["name"], "namespace": settings.namespace,
                 "container": str(container.get("name")), "adopted": True},
    )


def cpu_cores(value: Any) -> float:
    """Cores of a Kubernetes CPU quantity ("500m", "2")."""
    if not value:
        return 0.0
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory_mb(value: Any) -> int:
    """MiB of a Kubernetes memory quantity ("256Mi", "4Gi", bytes)."""
    if not value:
        return 0
    text = str(value)
    for suffix, factor in (("Gi", 1024), ("Mi", 1), ("Ki", 1 / 1024)):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(float(text) / (1024 * 1024))
