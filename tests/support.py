"""Helpers shared by the test folders (on sys.path through pytest's `pythonpath = tests`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
               interval: float = 0.01) -> Any:
    """Poll ``cond`` until it returns something truthy and return that; fail after ``timeout``.

    Tests wait for conditions this way instead of sleeping blindly; the timeout only bounds how
    long a broken test takes to fail.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
