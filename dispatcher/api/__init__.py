"""The Dispatcher's HTTP API: server (runner + control routes), tokens and a small client.

Names are imported lazily so that the runner wrapper, which only needs the client, does not pay
for ``http.server``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ApiServer": "server",
    "ApiHandler": "server",
    "ApiError": "client",
    "runner_token": "tokens",
    "verify_runner_token": "tokens",
    "new_secret": "tokens",
    "new_admin_token": "tokens",
    "write_admin_token": "tokens",
    "read_admin_token": "tokens",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
