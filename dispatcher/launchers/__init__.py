"""Runner launchers: one per pool type (local-process, docker, kubernetes)."""

from __future__ import annotations

from .base import LaunchEnvironment, RunnerExit, RunnerLauncher

__all__ = ["LaunchEnvironment", "RunnerExit", "RunnerLauncher"]
