"""KubernetesLauncher: one batch/v1 Job per Agent Runner, through the official kubernetes client.

A watcher thread lists the managed Jobs and Pods of each namespace in use every
``poll_interval`` seconds (one list call each, skipped work when the resourceVersion did not move),
turns Job conditions and Pod status into a :class:`RunnerExit`, copies the pod's log into the
attempt's ``output.log`` and calls ``env.on_exit``. ``poll`` only reads what the watcher found.
Responses are read as plain JSON (``_preload_content=False``) so the launcher does not depend on
one generation of the client's model classes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import RunnerLaunchError
from ..models import AgentPool, Runner, RunnerState, Slot, Task, now
from .base import (
    LaunchEnvironment,
    RunnerExit,
    RunnerLauncher,
    StopResult,
    attempt_dir,
    new_runner_id,
    short_error,
    write_json_atomic,
)
from .kubernetes_spec import (
    ANN_ATTEMPT,
    ANN_ATTEMPT_DIR,
    ANN_RUNNER,
    ANN_SLOT,
    ANN_SLOT_PATH,
    ANN_TASK,
    LABEL_MANAGED,
    LABEL_POOL,
    LABEL_RUNNER,
    KubernetesPoolSettings,
    build_job,
    job_exit,
    label_value,
    load_job_template,
)

log = logging.getLogger(__name__)

LOG_FILE = "output.log"


@dataclass
class _Tracked:
    runner_id: str
    name: str  # Job name
    namespace: str
    pool: str
    container: str
    attempt_dir: Path | None
    policy: str = "Foreground"  # propagation policy for stop()
    exit: RunnerExit | None = None
    missing_since: float | None = None
    checked: bool = False  # settled at least once (unchanged lists can then be skipped)


def _status(exc: BaseException) -> int | None:
    value = getattr(exc, "status", None)
    return int(value) if isinstance(value, int) else None


class KubernetesLauncher(RunnerLauncher):
    """Starts each runner as a Job in the pool's namespace; in-cluster config or KUBECONFIG.

    Tests (or embedders) may pass ``api_client`` (a ``kubernetes.client.ApiClient``) or a
    ``configuration`` (``kubernetes.client.Configuration``).
    """

    def __init__(
        self,
        env: LaunchEnvironment,
        *,
        api_client: Any | None = None,
        configuration: Any | None = None,
        poll_interval: float = 2.0,
        lost_after: float = 30.0,
    ) -> None:
        super().__init__(env)
        self._api_client = api_client
        self._own_client = api_client is None
        self._configuration = configuration
        self.poll_interval = poll_interval
        self.lost_after = lost_after  # a Job missing from lists this long is gone for good
        self._lock = threading.RLock()
        self._tracked: dict[str, _Tracked] = {}
        self._templates: dict[str, dict[str, Any]] = {}
        self._versions: dict[str, tuple[str, str]] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    # --- client -----------------------------------------------------------------------------
    def api_client(self) -> Any:
        """The ApiClient: given, or from in-cluster config, or from KUBECONFIG/~/.kube/config."""
        with self._lock:
            if self._api_client is not None:
                return self._api_client
            try:
                from kubernetes import client, config
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise RunnerLaunchError(
                    "the kubernetes pool needs the `kubernetes` package: pip install "
                    "'kubernetes>=27.2.0' (or 'necrocode-dispatcher[kubernetes]')",
                    retryable=False,
                ) from exc
            cfg = self._configuration
            if cfg is None:
                cfg = client.Configuration()
                try:
                    config.load_incluster_config(client_configuration=cfg)
                except Exception as in_cluster_exc:
                    try:
                        # read KUBECONFIG now: the client only looks at it when imported
                        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                                client_configuration=cfg)
                    except Exception as exc:
                        raise RunnerLaunchError(
                            "cannot load a Kubernetes configuration: not running in a cluster "
                            f"({in_cluster_exc}) and no usable kubeconfig ({exc}); set KUBECONFIG "
                            "and check `kubectl cluster-info`"
                        ) from exc
            self._api_client = client.ApiClient(cfg)
            return self._api_client

    def _batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self.api_client())

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client())

    @staticmethod
    def _json(response: Any) -> Any:
        data = response.data if hasattr(response, "data") else response
        if isinstance(data, bytes | bytearray):
            data = data.decode()
        return json.loads(data) if isinstance(data, str) and data else data

    def _template(self, settings: KubernetesPoolSettings, pool: AgentPool) -> dict[str, Any]:
        key = settings.job_template or ""
        if key not in self._templates:
            self._templates[key] = load_job_template(settings.job_template, pool.name)
        return self._templates[key]

    # --- launching --------------------------------------------------------------------------
    def launch(self, task: Task, slot: Slot, pool: AgentPool, *, attempt: int = 1) -> Runner:
        """Create the runner's Job; RunnerLaunchError if the API refuses it or is unreachable."""
        settings = KubernetesPoolSettings.from_pool(pool)
        template = self._template(settings, pool)
        runner_id = new_runner_id(task, attempt)
        adir = attempt_dir(self.env.runs_dir, task, attempt)
        adir.mkdir(parents=True, exist_ok=True)
        body = build_job(template, task, slot, pool, runner_id, attempt, self.env, adir, settings)
        name = body["metadata"]["name"]
        try:
            self._batch().create_namespaced_job(settings.namespace, body, _preload_content=False)
        except RunnerLaunchError:
            raise
        except Exception as exc:
            raise self._launch_error(exc, pool, settings, task) from exc
        containers = body["spec"]["template"]["spec"]["containers"]
        container = next((c for c in containers if c.get("name") == settings.container),
                         containers[0])
        tracked = _Tracked(runner_id, name, settings.namespace, pool.name,
                           str(container.get("name")), adir, settings.propagation_policy)
        with self._lock:
            self._tracked[runner_id] = tracked
        self._ensure_thread()
        limits = container.get("resources", {}).get("limits", {})
        runner = Runner(
            runner_id=runner_id, task_key=task.key, pool_name=pool.name, slot_id=slot.slot_id,
            slot_path=slot.slot_path, handle=name, state=RunnerState.RUNNING, attempt=attempt,
            log_path=str(adir / LOG_FILE), attempt_dir=str(adir),
            cpu=_cpu(limits.get("cpu")), memory_mb=_mem(limits.get("memory")),
            details={"platform": "kubernetes", "job": name, "namespace": settings.namespace},
        )
        write_json_atomic(adir / "runner.json", {
            "runner_id": runner_id, "task": task.key, "pool": pool.name,
            "platform": "kubernetes", "job": name, "namespace": settings.namespace,
            "attempt": attempt, "started_at": runner.started_at,
        })
        log.info("created Job %s/%s for %s in pool %s", settings.namespace, name, task.key,
                 pool.name)
        return runner

    @staticmethod
    def _launch_error(
        exc: Exception, pool: AgentPool, settings: KubernetesPoolSettings, task: Task
    ) -> RunnerLaunchError:
        code = _status(exc)
        if code is None:
            return RunnerLaunchError(
                f"pool {pool.name!r}: cannot reach the Kubernetes API ({exc}); check KUBECONFIG "
                "and `kubectl cluster-info`", pool=pool.name)
        body = getattr(exc, "body", "") or ""
        try:
            message = json.loads(body).get("message") or body
        except (ValueError, AttributeError):
            message = body or str(exc)
        hint = {403: "; the Dispatcher's ServiceAccount needs create on jobs "
                     "(config/manifests/dispatcher-rbac.yaml)",
                404: f"; does namespace {settings.namespace!r} exist?",
                422: "; check the job_template"}.get(code, "")
        return RunnerLaunchError(
            f"pool {pool.name!r}: the Kubernetes API refused the Job for task {task.key!r} "
            f"(HTTP {code}: {message}){hint}", pool=pool.name, retryable=code not in (403, 422))

    # --- watching ---------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="k8s-jobs", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as exc:
                log.warning("watching Kubernetes Jobs failed: %s", exc)
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def sync(self) -> None:
        """One pass: list managed Jobs and Pods per namespace and settle the runners that ended."""
        with self._lock:
            pending = [t for t in self._tracked.values() if t.exit is None]
        namespaces = sorted({t.namespace for t in pending})
        for ns in namespaces:
            jobs_resp = self._json(self._batch().list_namespaced_job(
                ns, label_selector=f"{LABEL_MANAGED}=true", _preload_content=False))
            pods_resp = self._json(self._core().list_namespaced_pod(
                ns, label_selector=f"{LABEL_MANAGED}=true", _preload_content=False))
            versions = ((jobs_resp.get("metadata") or {}).get("resourceVersion") or "",
                        (pods_resp.get("metadata") or {}).get("resourceVersion") or "")
            jobs = {j["metadata"]["name"]: j for j in jobs_resp.get("items") or []
                    if (j["metadata"].get("labels") or {}).get(LABEL_MANAGED) == "true"}
            pods: dict[str, list[dict[str, Any]]] = {}
            for pod in pods_resp.get("items") or []:
                labels = pod["metadata"].get("labels") or {}
                owner = labels.get("job-name") or labels.get("batch.kubernetes.io/job-name")
                if owner:
                    pods.setdefault(owner, []).append(pod)
            unchanged = self._versions.get(ns) == versions
            self._versions[ns] = versions
            for tracked in [t for t in pending if t.namespace == ns]:
                if unchanged and tracked.checked and tracked.missing_since is None:
                    continue  # nothing moved in this namespace since this runner was checked
                tracked.checked = True
                self._settle(tracked, jobs.get(tracked.name), pods.get(tracked.name, []))

    def _settle(self, tracked: _Tracked, job: dict[str, Any] | None,
                pods: list[dict[str, Any]]) -> None:
        if job is None:
            # a Job just created may be missing from a stale list; wait before calling it gone
            if tracked.missing_since is None:
                tracked.missing_since = time.monotonic()
            if time.monotonic() - tracked.missing_since < min(self.lost_after, 5.0):
                return
            if self._job_exists(tracked):
                tracked.missing_since = None
                return
        else:
            tracked.missing_since = None
        result = job_exit(job, pods, tracked.container)
        if result is None:
            return
        self._save_logs(tracked, pods)
        result = replace(result, finished_at=result.finished_at or now())
        if tracked.attempt_dir is not None:
            status_file = tracked.attempt_dir / "exit_status.json"
            if not status_file.exists():
                write_json_atomic(status_file, {"exit_code": result.exit_code,
                                                "reason": result.reason,
                                                "finished_at": result.finished_at,
                                                "source": "kubernetes"})
        with self._lock:
            tracked.exit = result
        log.info("Job %s/%s ended: %s (exit %s)", tracked.namespace, tracked.name,
                 result.reason, result.exit_code)
        self.env.on_exit(tracked.runner_id)

    def _job_exists(self, tracked: _Tracked) -> bool:
        try:
            return self._job_present(tracked)
        except Exception:
            return True  # not known gone

    def _job_present(self, tracked: _Tracked) -> bool:
        """True while the server has the Job; raises when the server cannot be asked."""
        try:
            self._batch().read_namespaced_job(tracked.name, tracked.namespace,
                                              _preload_content=False)
            return True
        except Exception as exc:
            if _status(exc) == 404:
                return False
            raise

    def _save_logs(self, tracked: _Tracked, pods: list[dict[str, Any]]) -> None:
        """Copy the pod's log into the attempt's output.log (before the Job can be deleted)."""
        if tracked.attempt_dir is None or not pods:
            return
        pod = pods[-1]["metadata"]["name"]
        try:
            resp = self._core().read_namespaced_pod_log(
                pod, tracked.namespace, container=tracked.container, _preload_content=False)
            data = resp.data if hasattr(resp, "data") else resp
            text = data if isinstance(data, bytes) else str(data).encode()
            (tracked.attempt_dir / LOG_FILE).write_bytes(text)
        except Exception as exc:
            log.warning("could not read the log of pod %s/%s: %s", tracked.namespace, pod, exc)

    def poll(self, runner: Runner) -> RunnerExit | None:
        """None while the Job runs; its outcome once the watcher has seen it end."""
        with self._lock:
            tracked = self._tracked.get(runner.runner_id)
        if tracked is None:
            tracked = self._track_from_runner(runner)
            self._ensure_thread()
            self._wake.set()
        return tracked.exit

    def _track_from_runner(self, runner: Runner) -> _Tracked:
        tracked = _Tracked(
            runner.runner_id, str(runner.details.get("job") or runner.handle),
            str(runner.details.get("namespace") or "default"), runner.pool_name,
            str(runner.details.get("container") or "runner"),
            Path(runner.attempt_dir) if runner.attempt_dir else None,
        )
        with self._lock:
            return self._tracked.setdefault(runner.runner_id, tracked)

    # --- stopping ---------------------------------------------------------------------------
    def stop(self, runner: Runner, grace: float | None = None) -> StopResult:
        """Save the log, delete the Job (propagating to its pods); confirmed once the server
        says the Job is gone. A delete the server refuses or cannot be asked about, or a Job
        still there after the wait, is an unconfirmed stop."""
        grace = self.env.stop_grace if grace is None else grace
        with self._lock:
            tracked = self._tracked.get(runner.runner_id) or self._track_from_runner(runner)
        if tracked.exit is not None:
            self._delete(tracked, "Background")
            return StopResult.gone(tracked.exit)
        policy = tracked.policy
        try:
            pods = self._json(self._core().list_namespaced_pod(
                tracked.namespace, label_selector=f"job-name={tracked.name}",
                _preload_content=False)).get("items") or []
            self._save_logs(tracked, pods)
        except Exception as exc:
            log.info("no pod log before stopping %s: %s", tracked.name, exc)
        problem = self._delete(tracked, policy, grace)
        if problem:
            return StopResult.unconfirmed(problem)
        deadline = time.monotonic() + grace + 60.0
        while True:
            try:
                exists = self._job_present(tracked)
            except Exception as exc:
                return StopResult.unconfirmed(
                    f"could not confirm that Job {tracked.namespace}/{tracked.name} is gone: "
                    f"{short_error(exc)}")
            if not exists:
                break
            if time.monotonic() >= deadline:
                return StopResult.unconfirmed(
                    f"Job {tracked.namespace}/{tracked.name} still exists {grace + 60.0:g}s "
                    "after its delete")
            time.sleep(0.1)
        result = RunnerExit(None, "stopped: Job deleted", finished_at=now())
        with self._lock:
            if tracked.exit is None:
                tracked.exit = result
        return StopResult.gone(tracked.exit)

    def _delete(self, tracked: _Tracked, policy: str, grace: float | None = None) -> str:
        """Delete the Job; returns what went wrong ("" when deleted or already gone)."""
        kwargs: dict[str, Any] = {"propagation_policy": policy}
        if grace is not None:
            kwargs["grace_period_seconds"] = max(0, int(round(grace)))
        try:
            self._batch().delete_namespaced_job(tracked.name, tracked.namespace,
                                                _preload_content=False, **kwargs)
        except Exception as exc:
            if _status(exc) != 404:
                log.warning("deleting Job %s/%s failed: %s", tracked.namespace, tracked.name, exc)
                return (f"deleting Job {tracked.namespace}/{tracked.name} failed: "
                        f"{short_error(exc)}")
        return ""

    def release(self, runner: Runner) -> None:
        """Delete the finished runner's Job (its pods go with it) and forget it."""
        with self._lock:
            tracked = self._tracked.pop(runner.runner_id, None)
        if tracked is None:
            tracked = _Tracked(runner.runner_id, str(runner.details.get("job") or runner.handle),
                               str(runner.details.get("namespace") or "default"),
                               runner.pool_name, "runner", None)
        self._delete(tracked, "Background")

    # --- restart ----------------------------------------------------------------------------
    def reconcile(self, pool: AgentPool) -> list[Runner]:
        """Managed Jobs of ``pool``: running ones to adopt, finished ones with their outcome."""
        settings = KubernetesPoolSettings.from_pool(pool)
        selector = f"{LABEL_MANAGED}=true,{LABEL_POOL}={label_value(pool.name)}"
        try:
            items = self._json(self._batch().list_namespaced_job(
                settings.namespace, label_selector=selector, _preload_content=False)
            ).get("items") or []
        except RunnerLaunchError:
            raise
        except Exception as exc:
            raise RunnerLaunchError(f"pool {pool.name!r}: cannot list Jobs: {exc}",
                                    pool=pool.name) from exc
        out: list[Runner] = []
        for job in items:
            meta = job.get("metadata") or {}
            labels = meta.get("labels") or {}
            ann = meta.get("annotations") or {}
            # filter here too: some API emulators ignore label selectors
            if labels.get(LABEL_MANAGED) != "true" or ann.get("necrocode/pool") != pool.name:
                continue
            runner_id = ann.get(ANN_RUNNER) or labels.get(LABEL_RUNNER)
            if not runner_id:
                continue
            containers = job["spec"]["template"]["spec"]["containers"]
            container = next((c for c in containers if c.get("name") == settings.container),
                             containers[0])
            adir = ann.get(ANN_ATTEMPT_DIR)
            tracked = _Tracked(runner_id, meta["name"], settings.namespace, pool.name,
                               str(container.get("name")), Path(adir) if adir else None,
                               settings.propagation_policy)
            with self._lock:
                self._tracked[runner_id] = tracked
            limits = (container.get("resources") or {}).get("limits") or {}
            out.append(Runner(
                runner_id=runner_id, task_key=ann.get(ANN_TASK, ""), pool_name=pool.name,
                slot_id=ann.get(ANN_SLOT), slot_path=ann.get(ANN_SLOT_PATH), handle=meta["name"],
                state=RunnerState.RUNNING, attempt=int(ann.get(ANN_ATTEMPT) or 1),
                log_path=str(Path(adir) / LOG_FILE) if adir else None, attempt_dir=adir,
                cpu=_cpu(limits.get("cpu")), memory_mb=_mem(limits.get("memory")),
                details={"platform": "kubernetes", "job": meta["name"],
                         "namespace": settings.namespace, "adopted": True},
            ))
        if out:
            self.sync()  # finished ones get their outcome now, so poll() answers at once
            self._ensure_thread()
        log.info("pool %s: found %d managed Job(s) to adopt", pool.name, len(out))
        return out

    # --- health -----------------------------------------------------------------------------
    def _check_health(self, pool: AgentPool) -> tuple[bool, str]:
        """(True, "") when the API answers a Job list in the pool's namespace."""
        try:
            settings = KubernetesPoolSettings.from_pool(pool)
            self._batch().list_namespaced_job(settings.namespace, limit=1,
                                              _preload_content=False)
            result = (True, "")
        except RunnerLaunchError as exc:
            result = (False, str(exc))
        except Exception as exc:
            code = _status(exc)
            where = f"HTTP {code}" if code else str(exc)
            result = (False, f"the Kubernetes API does not answer for pool {pool.name!r}: {where}")
        return result

    def close(self) -> None:
        """Stop the watcher thread and close the client this launcher created."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._own_client and self._api_client is not None:
            try:
                self._api_client.close()
            except Exception:
                pass


def _cpu(value: Any) -> float:
    if not value:
        return 0.0
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _mem(value: Any) -> int:
    if not value:
        return 0
    text = str(value)
    for suffix, factor in (("Gi", 1024), ("Mi", 1), ("Ki", 1 / 1024)):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(float(text) / (1024 * 1024))

