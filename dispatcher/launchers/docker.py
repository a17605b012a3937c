"""DockerLauncher: one container per Agent Runner, through the Docker Engine (``docker`` SDK).

The engine thread calls launch/poll/stop/reconcile/release. Two kinds of helper threads
(:mod:`.docker_watch`) run beside it: one watches the engine's ``die`` events for managed
containers and calls ``env.on_exit`` so the engine polls at once; one per container copies its
output into the attempt's ``output.log``. ``poll`` also inspects a container every few seconds,
so an exit is seen even if an event is lost.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
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
    log_cap_for,
    new_runner_id,
    short_error,
    write_json_atomic,
)
from .docker_spec import (
    LABEL_ATTEMPT,
    LABEL_ATTEMPT_DIR,
    LABEL_MANAGED,
    LABEL_POOL,
    LABEL_RUNNER,
    LABEL_SLOT,
    LABEL_SLOT_PATH,
    LABEL_TASK,
    DockerPoolSettings,
    build_container_spec,
    exit_reason,
)
from .docker_watch import (
    DeathWatch,
    TrackedContainer,
    close_quietly,
    finish_logs,
    start_log_copy,
)

log = logging.getLogger(__name__)

INSPECT_EVERY = 2.0  # seconds: poll() re-inspects a live container at most this often
LOG_FILE = "output.log"


def docker_host_description() -> str:
    """Where the SDK will look for the engine, for error messages."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def unreachable_message(exc: BaseException) -> str:
    return (
        f"cannot reach the Docker engine at {docker_host_description()}: is dockerd running? "
        f"check DOCKER_HOST (`docker ps` must work for this user) [{exc}]"
    )


class DockerLauncher(RunnerLauncher):
    """Starts each runner as a labelled container; honours DOCKER_HOST and the usual docker env.

    ``client`` (a ``docker.DockerClient``) or ``client_factory`` may be given for tests; by
    default ``docker.from_env()`` is used, created on first need.
    """

    def __init__(
        self,
        env: LaunchEnvironment,
        *,
        client: Any | None = None,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__(env)
        self._client = client
        self._client_factory = client_factory
        self._lock = threading.RLock()
        self._tracked: dict[str, TrackedContainer] = {}
        self._log_caps: dict[str, int] = {}  # pool -> output.log cap (tail kept)
        self._deaths = DeathWatch(self._new_client, self._died, shared=lambda: self._client)

    # --- client ---------------------------------------------------------------------------
    def _new_client(self) -> Any:
        if self._client_factory is not None:
            return self._client_factory()
        try:
            import docker
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RunnerLaunchError(
                "the docker pool needs the `docker` package: pip install 'docker>=6.1.0' "
                "(or pip install 'necrocode-dispatcher[docker]')",
                retryable=False,
            ) from exc
        return docker.from_env()

    def client(self) -> Any:
        """The Docker client, connecting on first use; RunnerLaunchError if the engine is down."""
        with self._lock:
            if self._client is None:
                try:
                    self._client = self._new_client()
                except RunnerLaunchError:
                    raise
                except Exception as exc:
                    raise RunnerLaunchError(unreachable_message(exc)) from exc
            return self._client

    # --- launching --------------------------------------------------------------------------
    def launch(self, task: Task, slot: Slot, pool: AgentPool, *, attempt: int = 1) -> Runner:
        """Create and start the runner's container; RunnerLaunchError when it cannot start."""
        settings = DockerPoolSettings.from_pool(pool)
        runner_id = new_runner_id(task, attempt)
        adir = attempt_dir(self.env.runs_dir, task, attempt)
        adir.mkdir(parents=True, exist_ok=True)
        spec = build_container_spec(task, slot, pool, runner_id, attempt, self.env, adir, settings)
        client = self.client()
        self._deaths.ensure_running()
        container = self._create(client, spec.create_kwargs(), settings, pool)
        try:
            container.start()
        except Exception as exc:
            self._remove_quietly(container)
            raise RunnerLaunchError(
                f"pool {pool.name!r}: container for task {task.key!r} did not start: {exc}",
                pool=pool.name,
            ) from exc
        log_path = adir / LOG_FILE
        log_path.touch()
        self._log_caps[pool.name] = log_cap_for(pool, self.env)
        mem_mb = spec.mem_limit // (1024 * 1024) if spec.mem_limit else None
        tracked = TrackedContainer(
            runner_id=runner_id,
            container_id=container.id,
            name=spec.name,
            pool=pool.name,
            log_path=log_path,
            mem_limit_mb=mem_mb,
            keep=settings.keep_containers,
            last_inspect=time.monotonic(),
        )
        with self._lock:
            self._tracked[runner_id] = tracked
        start_log_copy(container, tracked, self._log_cap(tracked))
        runner = Runner(
            runner_id=runner_id,
            task_key=task.key,
            pool_name=pool.name,
            slot_id=slot.slot_id,
            slot_path=slot.slot_path,
            handle=container.id[:12],
            state=RunnerState.RUNNING,
            attempt=attempt,
            log_path=str(log_path),
            attempt_dir=str(adir),
            cpu=(spec.nano_cpus or 0) / 1e9,
            memory_mb=mem_mb or 0,
            details={"container_id": container.id, "container_name": spec.name,
                     "image": spec.image, "platform": "docker"},
        )
        write_json_atomic(adir / "runner.json", {
            "runner_id": runner_id, "task": task.key, "pool": pool.name, "platform": "docker",
            "container_id": container.id, "container_name": spec.name, "image": spec.image,
            "attempt": attempt, "started_at": runner.started_at,
        })
        log.info("started container %s (%s) for %s in pool %s", spec.name, container.id[:12],
                 task.key, pool.name)
        return runner

    def _create(
        self, client: Any, kwargs: dict[str, Any], settings: DockerPoolSettings, pool: AgentPool
    ) -> Any:
        import docker.errors as derr

        try:
            return client.containers.create(**kwargs)
        except derr.ImageNotFound as exc:
            problem: Exception = exc
            if settings.pull:
                try:
                    log.info("pulling image %s for pool %s", settings.image, pool.name)
                    client.images.pull(settings.image)
                    return client.containers.create(**kwargs)
                except Exception as pull_exc:
                    problem = pull_exc
            raise RunnerLaunchError(
                f"pool {pool.name!r}: image {settings.image!r} is not available ({problem}); "
                "build it with `docker build -f config/docker/Dockerfile -t "
                "necrocode/runner:latest .` or set agent_pools.<pool>.config.image",
                pool=pool.name,
            ) from exc
        except derr.APIError as exc:
            raise RunnerLaunchError(
                f"pool {pool.name!r}: the Docker engine refused the container: {exc}",
                pool=pool.name,
            ) from exc
        except Exception as exc:  # connection refused, socket gone, timeouts
            raise RunnerLaunchError(unreachable_message(exc), pool=pool.name) from exc

    # --- logs -------------------------------------------------------------------------------
    # --- watching ---------------------------------------------------------------------------
    def _died(self, runner_id: str) -> None:
        """A managed container died (the watch's thread): poll it now, if it is ours."""
        with self._lock:
            tracked = self._tracked.get(runner_id)
            if tracked is not None:
                tracked.died = True
        if tracked is not None:
            self.env.on_exit(runner_id)

    def _log_cap(self, tracked: TrackedContainer) -> int:
        return self._log_caps.get(tracked.pool, self.env.log_max_bytes)

    def _container(self, tracked: TrackedContainer) -> Any | None:
        import docker.errors as derr

        try:
            return self.client().containers.get(tracked.container_id)
        except derr.NotFound:
            return None

    def poll(self, runner: Runner) -> RunnerExit | None:
        """None while the container runs; its exit (code, OOMKilled) once it has stopped."""
        with self._lock:
            tracked = self._tracked.get(runner.runner_id)
        if tracked is None:
            tracked = self._track_from_runner(runner)
        if tracked.exit is not None:
            return tracked.exit
        if not tracked.died and time.monotonic() - tracked.last_inspect < INSPECT_EVERY:
            return None
        tracked.last_inspect = time.monotonic()
        try:
            container = self._container(tracked)
        except RunnerLaunchError:
            return None  # engine unreachable: unknown, not dead; heartbeats decide
        except Exception as exc:
            log.warning("inspecting container %s failed: %s", tracked.name, exc)
            return None
        if container is None:
            tracked.exit = RunnerExit(None, "container disappeared", finished_at=now())
            return tracked.exit
        state = container.attrs.get("State") or {}
        if state.get("Running") or state.get("Status") in ("created", "restarting"):
            tracked.died = False
            return None
        return self._collect(container, tracked, state)

    def _collect(
        self, container: Any, tracked: TrackedContainer, state: dict[str, Any], prefix: str = ""
    ) -> RunnerExit:
        """Read the exit of a stopped container, finish its log, then remove it."""
        code, reason = exit_reason(state, tracked.mem_limit_mb)
        tracked.exit = RunnerExit(
            exit_code=code,
            reason=f"{prefix}{reason}",
            finished_at=_parse_time(state.get("FinishedAt")) or now(),
            oom_killed=bool(state.get("OOMKilled")),
        )
        finish_logs(container, tracked, self._log_cap(tracked))
        if not tracked.keep:
            self._remove_quietly(container)
        return tracked.exit

    def _track_from_runner(self, runner: Runner) -> TrackedContainer:
        cid = str(runner.details.get("container_id") or runner.handle or "")
        tracked = TrackedContainer(
            runner_id=runner.runner_id, container_id=cid,
            name=str(runner.details.get("container_name") or cid), pool=runner.pool_name,
            log_path=Path(runner.log_path) if runner.log_path else None,
        )
        with self._lock:
            self._tracked.setdefault(runner.runner_id, tracked)
            return self._tracked[runner.runner_id]

    # --- stopping ---------------------------------------------------------------------------
    def stop(self, runner: Runner, grace: float | None = None) -> StopResult:
        """SIGTERM, ``grace`` seconds, SIGKILL; confirmed once the engine says the container
        no longer runs (or no longer exists). An engine that cannot be asked, or a container
        still running after the kill, is an unconfirmed stop."""
        import docker.errors as derr

        grace = self.env.stop_grace if grace is None else grace
        with self._lock:
            tracked = self._tracked.get(runner.runner_id)
        if tracked is None:
            tracked = self._track_from_runner(runner)
        if tracked.exit is not None:
            return StopResult.gone(tracked.exit)
        try:
            container = self._container(tracked)
        except Exception as exc:
            return StopResult.unconfirmed(f"docker engine could not be asked about container "
                                          f"{tracked.name}: {short_error(exc)}")
        if container is None:
            tracked.exit = RunnerExit(None, "container disappeared", finished_at=now())
            return StopResult.gone(tracked.exit)
        try:
            container.stop(timeout=max(0, int(round(grace))))
        except derr.NotFound:
            tracked.exit = RunnerExit(None, "container disappeared", finished_at=now())
            return StopResult.gone(tracked.exit)
        except Exception as exc:
            log.warning("stopping container %s failed (%s); killing it", tracked.name, exc)
            try:
                container.kill()
            except derr.NotFound:
                tracked.exit = RunnerExit(None, "container disappeared", finished_at=now())
                return StopResult.gone(tracked.exit)
            except Exception as kill_exc:
                log.warning("killing container %s failed: %s", tracked.name, kill_exc)
        deadline = time.monotonic() + grace + 30.0
        state: dict[str, Any] = {}
        while True:
            try:
                container.reload()
            except derr.NotFound:
                tracked.exit = RunnerExit(None, "stopped: container removed", finished_at=now())
                return StopResult.gone(tracked.exit)
            except Exception as exc:
                return StopResult.unconfirmed(f"docker engine could not confirm that container "
                                              f"{tracked.name} stopped: {short_error(exc)}")
            state = container.attrs.get("State") or {}
            if not state.get("Running"):
                break
            if time.monotonic() >= deadline:
                return StopResult.unconfirmed(f"container {tracked.name} still runs "
                                              f"{grace + 30.0:g}s after stop and kill")
            time.sleep(0.1)
        return StopResult.gone(self._collect(container, tracked, state, prefix="stopped: "))

    def release(self, runner: Runner) -> None:
        """Remove the runner's container if it is still there and forget it."""
        with self._lock:
            tracked = self._tracked.pop(runner.runner_id, None)
        cid = tracked.container_id if tracked else runner.details.get("container_id")
        if not cid or (tracked is not None and tracked.keep):
            return
        try:
            container = self.client().containers.get(cid)
        except Exception:
            return
        self._remove_quietly(container)

    @staticmethod
    def _remove_quietly(container: Any) -> None:
        try:
            container.remove(force=True, v=True)
        except Exception as exc:
            if "No such container" not in str(exc) and "already in progress" not in str(exc):
                log.warning("removing container %s failed: %s", getattr(container, "id", "?"), exc)

    # --- restart ----------------------------------------------------------------------------
    def reconcile(self, pool: AgentPool) -> list[Runner]:
        """Managed containers of ``pool``: running ones to adopt, exited ones with their exit.

        Exited containers are returned too (their ``poll`` gives the exit at once), so a task whose
        runner finished while the Dispatcher was down is completed, not run again.
        """
        client = self.client()
        try:
            containers = client.containers.list(
                all=True, filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_POOL}={pool.name}"]}
            )
        except Exception as exc:
            raise RunnerLaunchError(unreachable_message(exc), pool=pool.name) from exc
        self._deaths.ensure_running()
        settings = DockerPoolSettings.from_pool(pool)
        out: list[Runner] = []
        for container in containers:
            labels = container.labels or {}
            if labels.get(LABEL_POOL) != pool.name or labels.get(LABEL_MANAGED) != "true":
                continue  # never adopt what is not ours, whatever the engine's filter did
            runner_id = labels.get(LABEL_RUNNER)
            if not runner_id:
                continue
            state = container.attrs.get("State") or {}
            adir = labels.get(LABEL_ATTEMPT_DIR)
            log_path = Path(adir) / LOG_FILE if adir else None
            self._log_caps[pool.name] = log_cap_for(pool, self.env)
            host_cfg = container.attrs.get("HostConfig") or {}
            mem = int(host_cfg.get("Memory") or 0) // (1024 * 1024) or None
            tracked = TrackedContainer(
                runner_id=runner_id, container_id=container.id, name=container.name,
                pool=pool.name, log_path=log_path, mem_limit_mb=mem,
                keep=settings.keep_containers, last_inspect=time.monotonic(),
            )
            with self._lock:
                self._tracked[runner_id] = tracked
            running = bool(state.get("Running"))
            if running:
                # rewrites output.log from the start
                start_log_copy(container, tracked, self._log_cap(tracked))
            else:
                self._collect(container, tracked, state)
            out.append(Runner(
                runner_id=runner_id,
                task_key=labels.get(LABEL_TASK, ""),
                pool_name=pool.name,
                slot_id=labels.get(LABEL_SLOT),
                slot_path=labels.get(LABEL_SLOT_PATH),
                handle=container.id[:12],
                state=RunnerState.RUNNING,
                started_at=_parse_time(state.get("StartedAt")) or now(),
                attempt=int(labels.get(LABEL_ATTEMPT) or 1),
                log_path=str(log_path) if log_path else None,
                attempt_dir=adir,
                cpu=int(host_cfg.get("NanoCpus") or 0) / 1e9,
                memory_mb=mem or 0,
                details={"container_id": container.id, "container_name": container.name,
                         "platform": "docker", "adopted": True, "exited": not running},
            ))
        log.info("pool %s: found %d managed container(s) to adopt", pool.name, len(out))
        return out

    # --- health -----------------------------------------------------------------------------
    def _check_health(self, pool: AgentPool) -> tuple[bool, str]:
        try:
            client = self.client()
            client.ping()
        except RunnerLaunchError as exc:
            with self._lock:
                self._client = None  # reconnect next time
            return False, str(exc)
        except Exception as exc:
            with self._lock:
                self._client = None
            return False, unreachable_message(exc)
        settings = DockerPoolSettings.from_pool(pool)
        if not settings.pull:
            try:
                client.images.get(settings.image)
            except Exception:
                return False, (f"image {settings.image!r} is missing and pull is off; build it "
                               "with `docker build -f config/docker/Dockerfile`")
        return True, ""

    def close(self) -> None:
        """Stop the events thread and the log threads (containers keep running)."""
        self._deaths.close()
        with self._lock:
            tracked = list(self._tracked.values())
        for item in tracked:
            if item.log_thread is not None and item.log_thread.is_alive():
                item.log_thread.join(timeout=0.5)
        client = self._client
        if client is not None:
            close_quietly(client, "docker client")


def _parse_time(value: Any) -> float | None:
    """Docker's RFC 3339 times (nanoseconds, 'Z') to epoch seconds; None for the zero time."""
    if not value or not isinstance(value, str) or value.startswith("0001-"):
        return None
    text = value.rstrip("Z")
    base, _, frac = text.partition(".")
    try:
        stamp = datetime.fromisoformat(base + "+00:00").timestamp()
    except ValueError:
        return None
    if frac:
        digits = "".join(c for c in frac if c.isdigit())[:6]
        stamp += float("0." + digits) if digits else 0.0
    return stamp
