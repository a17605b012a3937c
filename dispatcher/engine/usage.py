"""UsageLedger: what coding agents spent, summed per tenant and per taskset, and their budgets.

Fed by every change the TaskBook records (a task's ``usage`` is the sum of its attempts), so a
total costs O(1) per change, never a walk over every task. It answers two questions: the budget
left for a run about to start (its task's own, tightened by what its tenant and taskset still
have), and why a task must wait because its tenant or taskset is over budget (R20.4).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..agents.budget import Budget, pending_budget_reason
from ..agents.launch import task_budget
from ..models import Task, Usage
from .taskbook import TaskChange


def _minus(a: Usage, b: Usage) -> Usage:
    cost = None if a.cost_usd is None and b.cost_usd is None \
        else (a.cost_usd or 0.0) - (b.cost_usd or 0.0)
    return Usage(a.input_tokens - b.input_tokens, a.output_tokens - b.output_tokens,
                 a.cached_tokens - b.cached_tokens, cost, a.turns - b.turns)


def _left(budget: Budget | None, used: Usage) -> Budget:
    """What is left of ``budget`` after ``used`` (no budget: no limit)."""
    if budget is None:
        return Budget()
    return Budget(
        None if budget.max_cost_usd is None else budget.max_cost_usd - (used.cost_usd or 0.0),
        None if budget.max_tokens is None else budget.max_tokens - used.total_tokens,
        None if budget.max_turns is None else budget.max_turns - used.turns)


class UsageLedger:
    """Usage totals per tenant and taskset (engine thread)."""

    def __init__(self, tenant_budgets: Mapping[str, Budget],
                 taskset_budgets: Mapping[str, Budget]) -> None:
        self._tenant_budgets = dict(tenant_budgets)
        self._taskset_budgets = dict(taskset_budgets)
        self._tenants: dict[str, Usage] = {}
        self._tasksets: dict[str, Usage] = {}
        self.total = Usage()

    def note(self, change: TaskChange) -> None:
        """Move a task's usage from its old version to its new one."""
        old, new = change.old, change.new
        before = old.usage if old is not None else None
        if before == new.usage and (old is None or (old.tenant, old.taskset)
                                    == (new.tenant, new.taskset)):
            return
        if old is not None and before is not None:
            self._add(old, before, sign=-1)
        if new.usage is not None:
            self._add(new, new.usage, sign=1)

    def _add(self, task: Task, usage: Usage, *, sign: int) -> None:
        def move(totals: dict[str, Usage], name: str) -> None:
            current = totals.get(name, Usage())
            totals[name] = current + usage if sign > 0 else _minus(current, usage)

        move(self._tenants, task.tenant)
        move(self._tasksets, task.taskset)
        self.total = self.total + usage if sign > 0 else _minus(self.total, usage)

    def tenant(self, name: str) -> Usage:
        return self._tenants.get(name, Usage())

    def taskset(self, name: str) -> Usage:
        return self._tasksets.get(name, Usage())

    @property
    def has_group_budgets(self) -> bool:
        return bool(self._tenant_budgets or self._taskset_budgets)

    def hold_reason(self, task: Task) -> str | None:
        """Why ``task`` waits for budget ("tenant team-a over budget: 51.20/50.00 USD")."""
        if not self.has_group_budgets:
            return None
        return pending_budget_reason(task, self._tenants, self._tasksets,
                                     self._tenant_budgets, self._taskset_budgets)

    def budget_for(self, task: Task) -> Budget:
        """The budget of a run of ``task``: its own, within what its tenant and taskset have
        left."""
        budget = task_budget(task)
        if self.has_group_budgets:
            budget = budget.tighter(_left(self._tenant_budgets.get(task.tenant),
                                          self.tenant(task.tenant)))
            budget = budget.tighter(_left(self._taskset_budgets.get(task.taskset),
                                          self.taskset(task.taskset)))
        return budget
