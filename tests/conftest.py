"""Fixtures shared by every test folder."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from necrocode.dispatcher.models import Task

_ids = itertools.count(1)


@pytest.fixture
def task_factory() -> Callable[..., Task]:
    """Build tasks with sensible defaults: ``task_factory(priority=5, required_skill="db")``."""

    def make(**overrides: Any) -> Task:
        overrides.setdefault("id", f"t{next(_ids)}")
        overrides.setdefault("title", f"task {overrides['id']}")
        overrides.setdefault("taskset", "ts")
        return Task(**overrides)

    return make
