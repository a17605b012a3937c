"""Fixtures of the console tests: a frozen clock, UTC wall-clock texts, a FakeEngine app."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from necroui_fakes import FakeEngine  # noqa: E402


@pytest.fixture(autouse=True)
def utc_times() -> Iterator[None]:
    """Event times and dates print in UTC, so screenshots match on every machine."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()
