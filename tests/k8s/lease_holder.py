"""A replica stand-in for the leader-election tests: runs a LeaderElector on the real Lease and
prints what happens as JSON lines ({"event", "t", "id"}), "dispatch" every 0.1 s while it may
dispatch (is_leader). Started by tests/k8s/test_k8s_leader.py as its own process.

    python lease_holder.py SERVER CA NAMESPACE LEASE IDENTITY DURATION RENEW_DEADLINE RETRY
    (the bearer token in $NECROCODE_TEST_TOKEN)
"""

from __future__ import annotations

import json
import os
import sys
import time

from kubernetes import client
from necrocode.dispatcher.leader import KubernetesLeaseStore, LeaderElector


def say(event: str, identity: str, t: float | None = None, **extra: object) -> None:
    stamp = time.time() if t is None else t
    sys.stdout.write(json.dumps({"event": event, "t": stamp, "id": identity, **extra}) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    server, ca, namespace, lease, identity = argv[:5]
    duration, renew, retry = (float(v) for v in argv[5:8])
    cfg = client.Configuration()
    cfg.host = server
    cfg.ssl_ca_cert = ca
    cfg.api_key = {"authorization": os.environ["NECROCODE_TEST_TOKEN"]}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    api = client.ApiClient(cfg)
    store = KubernetesLeaseStore(api, lease, namespace, request_timeout=retry)
    elector = LeaderElector(store, identity, duration=duration, renew_deadline=renew,
                            retry_period=retry,
                            on_started_leading=lambda: say("leading", identity),
                            on_lost=lambda why: say("lost", identity, why=why))
    say("started", identity)
    elector.start()
    try:
        while True:
            decided = time.time()  # taken before the check: a pause after it cannot hide
            if elector.is_leader:
                say("dispatch", identity, t=decided)
            time.sleep(0.1)
    except KeyboardInterrupt:
        elector.stop(release=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
