"""Taking one server of a group out of its load balancer and back, through /health.

The clouds' balancers send requests only to servers whose ``/health`` answers 200.
While the drain flag exists nginx answers ``/health`` with 503 to everyone but
loopback (templates/nginx-mlflow.conf.j2), and keeps serving the API and UI, so
requests already on their way finish; after ``drain_seconds`` the balancer has marked
the server down and drained its connections. Un-draining removes the flag; the
balancer takes the server back once it has seen ``/health`` answer 200 for
``healthy_seconds``. The flag is a file, so a drained server stays drained across a
reboot and a failed rolling bootstrap leaves its host out of the balancer.
"""

from __future__ import annotations

import time

from provisioning import facts, waiting
from provisioning.layout import PATHS
from provisioning.play import Outcome, changed, unchanged
from provisioning.transport import Host

REJOIN_TIMEOUT_S = 180


def drain(host: Host, drain_seconds: int) -> Outcome[None]:
    """The flag on, then ``drain_seconds`` for the balancer to stop sending and drain.

    A flag already there (a stopped roll left the host drained, or a drain was
    interrupted) keeps its time: only what is left of ``drain_seconds`` since it was set
    is waited."""
    serving = host.read(facts.BALANCER_HEALTH_CODE)
    age = host.read(facts.age_seconds(PATHS["drain_flag"]))
    if age is None:
        host.run(f"touch {PATHS['drain_flag']}")
    elif serving == "503":
        left = drain_seconds - max(age, 0)
        if left <= 0:
            return unchanged(f"drained {age}s ago: the balancer has let go of it")
        host.note(f"drained {age}s ago (interrupted): waiting the remaining {left}s")
        time.sleep(left)
        return changed(f"drained {age}s ago; waited the remaining {left}s")
    if serving != "200":
        return changed(f"flag set; /health answered {serving or 'nothing'}, not serving: no wait")
    seen = host.read(facts.BALANCER_HEALTH_CODE)
    if seen != "503":
        # A site rendered by an older kit: the bootstrap installs the one that honours it.
        return changed(
            f"flag set, but /health still answers {seen} (nginx site from before the drain "
            "flag): the balancer keeps sending; nginx and the servers restart gracefully"
        )
    host.note(f"/health answers 503 to the balancer; waiting {drain_seconds}s for it to drain")
    time.sleep(drain_seconds)
    return changed(f"/health 503 to the balancer for {drain_seconds}s")


def undrain(host: Host) -> Outcome[None]:
    """The flag off: /health answers the servers' own state to the balancer again."""
    if not host.read(facts.exists(PATHS["drain_flag"])):
        return unchanged("not drained")
    host.run(f"rm -f {PATHS['drain_flag']}")
    return changed("flag removed")


def rejoin(host: Host, healthy_seconds: int) -> Outcome[None]:
    """Until /health answers 200 as the balancer asks it, then ``healthy_seconds`` for the
    balancer to count enough successes and send requests here again."""
    waiting.until(
        host,
        lambda: host.read(facts.BALANCER_HEALTH_CODE),
        lambda code: code == "200",
        timeout=REJOIN_TIMEOUT_S,
        poll=1,
        late=lambda code: host.error(
            facts.BALANCER_HEALTH_CODE.command,
            1,
            f"/health answered {code or 'nothing'} to the balancer {REJOIN_TIMEOUT_S}s after "
            "the drain flag was removed",
        ),
    )
    time.sleep(healthy_seconds)
    return unchanged(f"/health 200 to the balancer, then {healthy_seconds}s for it to count")


def drained(host: Host) -> bool:
    return host.read(facts.exists(PATHS["drain_flag"]))
