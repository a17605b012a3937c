"""Widgets of the necroui dashboard."""

from __future__ import annotations

from .difftable import Column, DiffTable, SortSpec
from .eventtail import EventTail
from .header import DashboardHeader
from .pools import PoolsTable
from .tasktables import FinishedTable, QueueTable, RunningTable

__all__ = [
    "Column",
    "DashboardHeader",
    "DiffTable",
    "EventTail",
    "FinishedTable",
    "PoolsTable",
    "QueueTable",
    "RunningTable",
    "SortSpec",
]
