"""Prometheus counters of coding-agent usage.

``necrocode_dispatcher_agent_tokens_total{agent,tenant,kind}`` (kind: input, output, cached) and
``necrocode_dispatcher_agent_cost_usd_total{agent,tenant}``, on the collector's registry
(:class:`~..metrics.MetricsCollector` makes one as ``collector.agents``). The engine calls
:meth:`AgentMetrics.record` with an attempt's usage when the attempt ends.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from ..models import Usage

PREFIX = "necrocode_dispatcher_"
TOKEN_KINDS = ("input", "output", "cached")


class AgentMetrics:
    """The two agent counters; ``label`` bounds a label's value set (tenants may be many)."""

    def __init__(self, registry: CollectorRegistry,
                 label: object = None) -> None:
        self.tokens = Counter(PREFIX + "agent_tokens", "Tokens used by coding agents.",
                              ["agent", "tenant", "kind"], registry=registry)
        self.cost = Counter(PREFIX + "agent_cost_usd", "Cost of coding agents' model use, USD "
                            "(reported or derived from agent_prices).", ["agent", "tenant"],
                            registry=registry)
        self._label = label if callable(label) else (lambda value: value)

    def record(self, agent: str, tenant: str, usage: Usage) -> None:
        """Add one attempt's usage."""
        tenant = str(self._label(tenant))
        for kind, value in zip(TOKEN_KINDS, (usage.input_tokens, usage.output_tokens,
                                             usage.cached_tokens), strict=True):
            if value:
                self.tokens.labels(agent=agent, tenant=tenant, kind=kind).inc(value)
        if usage.cost_usd:
            self.cost.labels(agent=agent, tenant=tenant).inc(usage.cost_usd)
