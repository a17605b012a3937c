"""Budgets of an attempt (tokens, cost, turns) and prices to derive a cost.

:func:`check_budget` is the pure evaluation the stream reader calls on every usage change; it
answers the reason shown when a run is stopped, e.g. ``budget exceeded: 1.23/1.00 USD``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from ..models import Task, Usage

BUDGET_KEYS = ("max_cost_usd", "max_tokens", "max_turns")


@dataclass(frozen=True)
class Budget:
    """Limits of one attempt (or of a tenant's or taskset's total); None: no limit."""

    max_cost_usd: float | None = None
    max_tokens: int | None = None  # input + output
    max_turns: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.max_cost_usd is None and self.max_tokens is None and self.max_turns is None

    def tighter(self, other: Budget) -> Budget:
        """The smaller limit of each kind (a task's budget within its taskset's)."""
        def low(a: float | None, b: float | None) -> float | None:
            return b if a is None else a if b is None else min(a, b)

        return Budget(low(self.max_cost_usd, other.max_cost_usd),  # type: ignore[arg-type]
                      low(self.max_tokens, other.max_tokens),  # type: ignore[arg-type]
                      low(self.max_turns, other.max_turns))  # type: ignore[arg-type]


@dataclass(frozen=True)
class BudgetVerdict:
    """A budget crossed: which limit, the amount used and the limit."""

    kind: str  # "cost", "tokens", "turns"
    used: float
    limit: float

    @property
    def reason(self) -> str:
        if self.kind == "cost":
            return f"budget exceeded: {self.used:.2f}/{self.limit:.2f} USD"
        return f"budget exceeded: {int(self.used)}/{int(self.limit)} {self.kind}"


def check_budget(usage: Usage, budget: Budget) -> BudgetVerdict | None:
    """The first limit ``usage`` is over (cost, then tokens, then turns), else None.

    Reaching a limit exactly is within it: only more than the limit is over.
    """
    if budget.max_cost_usd is not None and usage.cost_usd is not None \
            and usage.cost_usd > budget.max_cost_usd:
        return BudgetVerdict("cost", usage.cost_usd, budget.max_cost_usd)
    if budget.max_tokens is not None and usage.total_tokens > budget.max_tokens:
        return BudgetVerdict("tokens", usage.total_tokens, budget.max_tokens)
    if budget.max_turns is not None and usage.turns > budget.max_turns:
        return BudgetVerdict("turns", usage.turns, budget.max_turns)
    return None


def group_budget_reason(kind: str, name: str, total: Usage, budget: Budget) -> str | None:
    """The pending reason of a tenant's or taskset's tasks when its summed usage is over
    ``budget`` (e.g. ``tenant team-a over budget: 51.20/50.00 USD``), else None."""
    verdict = check_budget(total, budget)
    if verdict is None:
        return None
    return f"{kind} {name} over " + verdict.reason.removeprefix("budget exceeded: ").join(
        ("budget: ", ""))


@dataclass(frozen=True)
class Price:
    """USD per million tokens of one model."""

    input: float
    output: float
    cached: float | None = None  # cached input tokens; None: as input


def with_cost(usage: Usage, model: str | None, prices: Mapping[str, Price]) -> Usage:
    """``usage`` with a cost from the price table when the agent reported none."""
    if usage.cost_usd is not None or not model:
        return usage
    price = prices.get(model) or prices.get(model.rpartition("/")[2])
    if price is None:
        return usage
    cached = min(usage.cached_tokens, usage.input_tokens)
    cached_rate = price.input if price.cached is None else price.cached
    cost = ((usage.input_tokens - cached) * price.input + cached * cached_rate
            + usage.output_tokens * price.output) / 1_000_000
    return replace(usage, cost_usd=cost)


def usage_totals(tasks: Iterable[Task]) -> tuple[dict[str, Usage], dict[str, Usage]]:
    """Summed usage per tenant and per taskset (tasks without usage add nothing)."""
    tenants: dict[str, Usage] = {}
    tasksets: dict[str, Usage] = {}
    for task in tasks:
        if task.usage is None:
            continue
        tenants[task.tenant] = tenants.get(task.tenant, Usage()) + task.usage
        tasksets[task.taskset] = tasksets.get(task.taskset, Usage()) + task.usage
    return tenants, tasksets


def pending_budget_reason(task: Task, tenants: Mapping[str, Usage],
                          tasksets: Mapping[str, Usage], tenant_budgets: Mapping[str, Budget],
                          taskset_budgets: Mapping[str, Budget]) -> str | None:
    """Why ``task`` must wait for budget: its tenant's or taskset's usage is over its budget."""
    for kind, name, totals, budgets in (("tenant", task.tenant, tenants, tenant_budgets),
                                        ("taskset", task.taskset, tasksets, taskset_budgets)):
        budget = budgets.get(name)
        if budget is not None:
            reason = group_budget_reason(kind, name, totals.get(name, Usage()), budget)
            if reason:
                return reason
    return None
