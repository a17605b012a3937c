"""KubernetesLauncher: one batch/v1 Job per Agent Runner, through the official kubernetes client.

A watcher thread lists the managed Jobs and Pods of each namespace in use every
``poll_interval`` seconds (one list call each, skipped work when the resourceVersion did not move),
turns Job conditions and Pod status into a :class:`RunnerExit`, copies the pod's log into the
attempt's ``output.log`` and calls ``env.on_exit``. ``poll`` only reads what the watcher found.
Responses are read as plain JSON (``_preload_content=False``) so the launcher does not depend on
one generation of the client's model classes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..agent_runner.logcap import tail_of
from ..errors import RunnerLaunchError
from ..models import AgentPool, Runner, RunnerState, Slot, Task, now
from .base import (
    LaunchEnvironment,
    RunnerExit,
    RunnerLauncher,
    StopResult,
    attempt_dir,
    log_cap_for,
    new_runner_id,
    short_error,
    write_json_atomic,
)
from .kubernetes_api import JobCalls, body_json, describe_refusal, load_api_client, status_of
from .kubernetes_spec import (
    ANN_POOL,
    LABEL_MANAGED,
    LABEL_POOL,
    LOG_FILE,
    KubernetesPoolSettings,
    adopted_runner,
    build_job,
    build_token_secret,
    cpu_cores,
    job_exit,
    job_uses_token_secret,
    label_value,
    load_job_template,
    memory_mb,
)

log = logging.getLogger(__name__)


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
    # stop() owns the outcome: the watcher must not read the pods it deletes as "pod lost"
    stopping: bool = False


_status = status_of


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
        self._log_caps: dict[str, int] = {}  # pool -> output.log cap (tail kept)
        self._templates: dict[str, dict[str, Any]] = {}
        self._versions: dict[str, tuple[str, str]] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._calls = JobCalls(self.api_client)

    # --- client -----------------------------------------------------------------------------
    def api_client(self) -> Any:
        """The ApiClient: given, or from in-cluster config, or from KUBECONFIG/~/.kube/config."""
        with self._lock:
            if self._api_client is not None:
                return self._api_client
            self._api_client = load_api_client(self._configuration)
            return self._api_client

    def _batch(self) -> Any:
        return self._calls.batch()

    def _core(self) -> Any:
        return self._calls.core()

    _json = staticmethod(body_json)

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
        self._log_caps[pool.name] = log_cap_for(pool, self.env)
        runner_id = new_runner_id(task, attempt)
        adir = attempt_dir(self.env.runs_dir, task, attempt)
        adir.mkdir(parents=True, exist_ok=True)
        body = build_job(template, task, slot, pool, runner_id, attempt, self.env, adir, settings)
        name = body["metadata"]["name"]
        try:
            created = self._json(self._batch().create_namespaced_job(
                settings.namespace, body, _preload_content=False))
        except RunnerLaunchError:
            raise
        except Exception as exc:
            raise self._launch_error(exc, pool, settings, task, "create", "jobs") from exc
        if job_uses_token_secret(body):
            self._create_token_secret(created, runner_id, pool, settings, task)
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
            cpu=cpu_cores(limits.get("cpu")), memory_mb=memory_mb(limits.get("memory")),
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

    def _create_token_secret(self, job: dict[str, Any], runner_id: str, pool: AgentPool,
                             settings: KubernetesPoolSettings, task: Task) -> None:
        """The runner's API token as a Secret owned by its Job; the Job goes if this fails."""
        secret = build_token_secret(job, self.env.token_for(runner_id))
        try:
            self._core().create_namespaced_secret(settings.namespace, secret,
                                                  _preload_content=False)
        except Exception as exc:
            name = job["metadata"]["name"]
            gone = _Tracked(runner_id, name, settings.namespace, pool.name, "", None)
            problem = self._delete(gone, "Background")
            if problem:
                log.warning("Job %s/%s left behind: %s", settings.namespace, name, problem)
            raise self._launch_error(exc, pool, settings, task, "create", "secrets") from exc

    @staticmethod
    def _launch_error(exc: Exception, pool: AgentPool, settings: KubernetesPoolSettings,
                      task: Task, verb: str, resource: str) -> RunnerLaunchError:
        code = _status(exc)
        text = describe_refusal(exc, verb, resource, settings.namespace)
        hint = {404: f"; does namespace {settings.namespace!r} exist?",
                422: "; check the job_template"}.get(code or 0, "")
        return RunnerLaunchError(f"pool {pool.name!r}, task {task.key!r}: {text}{hint}",
                                 pool=pool.name, retryable=code not in (401, 403, 422))

    # --- watching ---------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="k8s-jobs", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        trouble = ""  # the last problem warned about: one warning per new problem
        while not self._stop.is_set():
            try:
                self.sync()
                if trouble:
                    log.info("watching Kubernetes Jobs works again")
                trouble = ""
            except Exception as exc:
                text = str(exc) if isinstance(exc, RunnerLaunchError) else short_error(exc)
                if text != trouble:
                    log.warning("watching Kubernetes Jobs failed: %s", text)
                trouble = text
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def sync(self) -> None:
        """One pass: list managed Jobs and Pods per namespace and settle the runners that ended."""
        with self._lock:
            pending = [t for t in self._tracked.values() if t.exit is None and not t.stopping]
        namespaces = sorted({t.namespace for t in pending})
        for ns in namespaces:
            jobs_resp = self._calls.list_managed(ns, "jobs", f"{LABEL_MANAGED}=true")
            pods_resp = self._calls.list_managed(ns, "pods", f"{LABEL_MANAGED}=true")
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
        if result is None or tracked.stopping:
            return
        self._save_logs(tracked, pods)
        result = replace(result, finished_at=result.finished_at or now())
        with self._lock:
            # stop() may have begun meanwhile: then its deletes are what the lists show
            if tracked.stopping or tracked.exit is not None:
                return
            tracked.exit = result
        self._write_status(tracked, result)
        log.info("Job %s/%s ended: %s (exit %s)", tracked.namespace, tracked.name,
                 result.reason, result.exit_code)
        self.env.on_exit(tracked.runner_id)

    @staticmethod
    def _write_status(tracked: _Tracked, result: RunnerExit) -> None:
        if tracked.attempt_dir is None:
            return
        status_file = tracked.attempt_dir / "exit_status.json"
        if not status_file.exists():
            write_json_atomic(status_file, {"exit_code": result.exit_code,
                                            "reason": result.reason,
                                            "finished_at": result.finished_at,
                                            "source": "kubernetes"})

    def _job_exists(self, tracked: _Tracked) -> bool:
        try:
            return self._job_present(tracked)
        except Exception:
            return True  # not known gone

    def _job_present(self, tracked: _Tracked) -> bool:
        return self._calls.job_present(tracked.name, tracked.namespace)

    def _pods_of(self, tracked: _Tracked) -> list[dict[str, Any]]:
        return self._calls.pods_of(tracked.name, tracked.namespace)

    def _save_logs(self, tracked: _Tracked, pods: list[dict[str, Any]]) -> None:
        """Copy the pod's log into the attempt's output.log (before the Job can be deleted)."""
        if tracked.attempt_dir is None or not pods:
            return
        pod = pods[-1]["metadata"]["name"]
        try:
            text = self._calls.pod_log(pod, tracked.namespace, tracked.container)
            cap = self._log_caps.get(tracked.pool, self.env.log_max_bytes)
            (tracked.attempt_dir / LOG_FILE).write_bytes(tail_of(text, cap))
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
        """Save the log, delete the Job and its pods with ``grace`` (TERM, then KILL at its end);
        confirmed once the server says the Job and its pods are gone. A delete the server
        refuses or cannot be asked about, or a Job or pod still there after the wait, is an
        unconfirmed stop with the reason."""
        grace = self.env.stop_grace if grace is None else grace
        with self._lock:
            tracked = self._tracked.get(runner.runner_id) or self._track_from_runner(runner)
            ended = tracked.exit
            tracked.stopping = ended is None
        if ended is not None:
            self._delete(tracked, "Background")
            return StopResult.gone(ended)
        try:
            self._save_logs(tracked, self._pods_of(tracked))
        except Exception as exc:
            log.info("no pod log before stopping %s: %s", tracked.name, short_error(exc))
        problem = self._delete(tracked, tracked.policy, grace)
        if problem:
            with self._lock:
                tracked.stopping = False  # nothing was deleted: the watcher may read it again
            return StopResult.unconfirmed(problem)
        where = f"{tracked.namespace}/{tracked.name}"
        pod_grace = max(1, int(math.ceil(grace)))  # 0 would drop pods the node still runs
        deleted: set[str] = set()
        deadline = time.monotonic() + grace + 60.0
        while True:
            try:
                exists = self._job_present(tracked)
                pods = self._pods_of(tracked)
            except Exception as exc:
                return StopResult.unconfirmed(f"could not confirm that Job {where} and its pods "
                                              f"are gone: {short_error(exc)}")
            if not exists and not pods:
                break
            for pod in pods:  # the garbage collector would use the pod's own grace period
                name = pod["metadata"]["name"]
                if name not in deleted:
                    self._delete_pod(tracked, name, pod_grace)
                    deleted.add(name)
            if time.monotonic() >= deadline:
                left = ", ".join(p["metadata"]["name"] for p in pods) or "none"
                return StopResult.unconfirmed(
                    f"Job {where} {'still exists' if exists else 'is gone'} "
                    f"{grace + 60.0:g}s after its delete (pods left: {left})")
            time.sleep(0.1)
        result = RunnerExit(None, "stopped: Job deleted", finished_at=now())
        with self._lock:
            if tracked.exit is None:
                tracked.exit = result
            final = tracked.exit
        return StopResult.gone(final)

    def _delete_pod(self, tracked: _Tracked, pod: str, grace: int) -> None:
        problem = self._calls.delete_pod(pod, tracked.namespace, grace)
        if problem:
            log.warning("pod %s/%s keeps its own grace period: %s", tracked.namespace, pod,
                        problem)

    def _delete(self, tracked: _Tracked, policy: str, grace: float | None = None) -> str:
        """Delete the Job; returns what went wrong ("" when deleted or already gone)."""
        problem = self._calls.delete_job(tracked.name, tracked.namespace, policy, grace)
        if problem:
            log.warning("%s", problem)
        return problem

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
            raise RunnerLaunchError(
                f"pool {pool.name!r}: "
                f"{describe_refusal(exc, 'list', 'jobs', settings.namespace)}",
                pool=pool.name) from exc
        out: list[Runner] = []
        for job in items:
            meta = job.get("metadata") or {}
            # filter here too: some API emulators ignore label selectors
            if ((meta.get("labels") or {}).get(LABEL_MANAGED) != "true"
                    or (meta.get("annotations") or {}).get(ANN_POOL) != pool.name):
                continue
            runner = adopted_runner(job, pool, settings)
            if runner is None:
                continue
            tracked = _Tracked(runner.runner_id, str(runner.handle), settings.namespace,
                               pool.name, str(runner.details["container"]),
                               Path(runner.attempt_dir) if runner.attempt_dir else None,
                               settings.propagation_policy)
            with self._lock:
                self._tracked[runner.runner_id] = tracked
            out.append(runner)
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
            if code in (401, 403):
                why = describe_refusal(exc, "list", "jobs", settings.namespace)
            else:
                why = f"the Kubernetes API does not answer: {f'HTTP {code}' if code else exc}"
            result = (False, f"pool {pool.name!r}: {why}")
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
            except Exception as exc:  # a client being thrown away: nothing is lost
                log.info("closing the kubernetes client failed: %s", exc)

