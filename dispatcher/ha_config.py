"""The ``ha:`` section of the config: leader election between Dispatcher replicas.

    ha:
      lease: necrocode-dispatcher     # a coordination.k8s.io/v1 Lease (created when missing)
      namespace: necrocode            # where the Lease lives (the Dispatcher's own namespace)
      duration: 15                    # seconds a standby waits after the last renewal it saw
      renew_deadline: 10              # a leader that could not renew this long steps down
      retry_period: 2                 # seconds between renewals / acquisition attempts
      identity: null                  # default: <hostname>-<pid>

Each problem names ``file:line`` and the key, like the rest of the config.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, fields
from typing import Any

from .errors import Problem
from .section_keys import section_values
from .yaml_source import Locate, Path_, type_name

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class HAConfig:
    """Leader election through a Kubernetes Lease: only the holder dispatches."""

    lease: str  # name of the coordination.k8s.io/v1 Lease
    namespace: str = "necrocode"  # namespace of the Lease
    duration: float = 15.0  # seconds a standby waits after the last renewal it saw
    renew_deadline: float = 10.0  # a leader unable to renew this long steps down
    retry_period: float = 2.0  # seconds between renewals and acquisition attempts
    identity: str | None = None  # this replica's name in the Lease; None: <hostname>-<pid>

    def resolved_identity(self) -> str:
        """The holder identity this replica writes into the Lease."""
        return self.identity or f"{socket.gethostname()}-{os.getpid()}"


HA_KEYS = tuple(f.name for f in fields(HAConfig))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def ha_from_yaml(section: dict[Any, Any], locate: Locate,
                 problems: list[Problem]) -> HAConfig | None:
    """The ``ha:`` mapping as an HAConfig; problems are appended (None when it is unusable)."""
    def add(key: str, message: str, hint: str = "") -> None:
        path: Path_ = ("ha", key) if key else ("ha",)
        problems.append(Problem(locate(path), f"ha.{key}" if key else "ha", message, hint))

    before = len(problems)
    values = section_values("ha", section, HA_KEYS, locate, problems)
    lease = values.get("lease")
    if lease is None:
        add("", "the Lease name is missing", "add `lease: NAME` (e.g. necrocode-dispatcher)")
    elif not isinstance(lease, str) or len(lease) > 253 or not _DNS_SUBDOMAIN.match(lease):
        add("lease", f"{lease!r} is not a valid Lease name",
            "lowercase letters, digits, '-' and '.', at most 253 characters")
    namespace = values.get("namespace", "necrocode")
    if not isinstance(namespace, str) or len(namespace) > 63 or not _DNS_LABEL.match(namespace):
        add("namespace", f"{namespace!r} is not a valid namespace name",
            "lowercase letters, digits and '-', at most 63 characters")
    timing = {"duration": 15.0, "renew_deadline": 10.0, "retry_period": 2.0}
    for key, default in timing.items():
        value = values.get(key, default)
        if not _number(value):
            add(key, f"expected a number of seconds, got {type_name(value)}")
        elif value <= 0:
            add(key, f"must be more than 0 seconds, got {value}")
        else:
            timing[key] = float(value)
    if "duration" in values and _number(values["duration"]) and 0 < values["duration"] < 1:
        add("duration", "a Lease lasts whole seconds: at least 1")
    if timing["renew_deadline"] >= timing["duration"]:
        add("renew_deadline", f"must be shorter than duration ({timing['duration']:g} s)",
            "a leader must step down before a standby may take over")
    if timing["retry_period"] >= timing["renew_deadline"]:
        add("retry_period", f"must be shorter than renew_deadline "
            f"({timing['renew_deadline']:g} s)", "a leader renews several times per deadline")
    identity = values.get("identity")
    if identity is not None and (not isinstance(identity, str) or not identity.strip()):
        add("identity", f"expected a non-empty string, got {type_name(identity)}")
    if len(problems) > before:
        return None
    return HAConfig(lease=str(lease), namespace=str(namespace), duration=timing["duration"],
                    renew_deadline=timing["renew_deadline"], retry_period=timing["retry_period"],
                    identity=identity)


def ha_to_dict(config: HAConfig) -> dict[str, Any]:
    """The section as the YAML structure :func:`ha_from_yaml` reads."""
    return {f.name: getattr(config, f.name) for f in fields(HAConfig)}
