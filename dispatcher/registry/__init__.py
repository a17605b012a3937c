"""Task Registry: the protocol and its implementations."""

from __future__ import annotations

from .base import ChangeBatch, SubmitResult, TaskRegistry

__all__ = ["ChangeBatch", "SubmitResult", "TaskRegistry"]
