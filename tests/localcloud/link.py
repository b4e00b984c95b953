"""A host's link to the machine: a /30 over a veth pair, NATed outwards, egress switchable.

The machine is ``.1`` and the guest ``.2``; the guest's default route is the machine,
which forwards and masquerades its traffic to the rest of the world (package
registries, the Debian mirror, DNS) with an nftables table of the link's own, named
after its network namespace. ``block_egress`` makes the guest a VM in a private
network without NAT: nothing it sends is forwarded, while everything listening on
the machine's own addresses (the local cloud's services, on the services' link) is
still reached, since that traffic is delivered to the machine, not forwarded.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from tests.localcloud.procs import run

NETNS_PREFIX = "mlk-"
SUBNET_PREFIX = "10.213"
MAX_SLOTS = 250
#: The filter chain ``Link.block_egress`` adds to the link's table.
EGRESS_CHAIN = "egress"


def claim_slot() -> int:
    """Claim a free slot by creating its network namespace (atomic: fails if taken)."""
    for slot in range(1, MAX_SLOTS + 1):
        result = subprocess.run(
            ["ip", "netns", "add", f"{NETNS_PREFIX}{slot}"], capture_output=True, check=False
        )
        if result.returncode == 0:
            return slot
    raise RuntimeError(
        f"no free local host slot (all {MAX_SLOTS} network namespaces {NETNS_PREFIX}N exist)"
    )


@dataclass
class Link:
    """A /30 between the machine (``.1``) and a network namespace (``.2``), NATed outwards."""

    slot: int

    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}{self.slot}"

    @property
    def host_address(self) -> str:
        return f"{SUBNET_PREFIX}.{self.slot}.1"

    @property
    def guest_address(self) -> str:
        return f"{SUBNET_PREFIX}.{self.slot}.2"

    @property
    def cidr(self) -> str:
        return f"{SUBNET_PREFIX}.{self.slot}.0/30"

    def create(self) -> None:
        host_if, guest_if = f"mlk{self.slot}h", f"mlk{self.slot}g"
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", guest_if])
        run(["ip", "link", "set", guest_if, "netns", self.netns])
        run(["ip", "addr", "add", f"{self.host_address}/30", "dev", host_if])
        run(["ip", "link", "set", host_if, "up"])
        ns = ["ip", "netns", "exec", self.netns]
        run([*ns, "ip", "link", "set", guest_if, "name", "eth0"])
        run([*ns, "ip", "addr", "add", f"{self.guest_address}/30", "dev", "eth0"])
        run([*ns, "ip", "link", "set", "eth0", "up"])
        run([*ns, "ip", "link", "set", "lo", "up"])
        run([*ns, "ip", "route", "add", "default", "via", self.host_address])
        # The guest reaches the package registries through the machine, like a VM behind NAT.
        run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        table = self.netns
        run(["nft", "add", "table", "ip", table])
        run(
            [
                "nft",
                "add",
                "chain",
                "ip",
                table,
                "post",
                "{ type nat hook postrouting priority 100 ; }",
            ]
        )
        run(
            [
                "nft",
                "add",
                "rule",
                "ip",
                table,
                "post",
                "ip",
                "saddr",
                # Only the guest's traffic: the machine's own address on the link must
                # keep its source when it talks to itself (PostgreSQL's pg_hba sees it).
                self.guest_address,
                "oifname",
                "!=",
                host_if,
                "masquerade",
            ]
        )

    def delete(self) -> None:
        subprocess.run(
            ["nft", "delete", "table", "ip", self.netns], capture_output=True, check=False
        )
        subprocess.run(
            ["ip", "link", "delete", f"mlk{self.slot}h"], capture_output=True, check=False
        )
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True, check=False)

    # -- egress ---------------------------------------------------------------------------

    def block_egress(self) -> None:
        """Refuse to forward anything the guest sends: it then reaches the machine's own
        addresses only, as a VM in a private network without NAT reaches its VPC's services.

        Refused, not dropped, where a real VPC lets a connection time out, so that tools
        fail fast: a TCP connection is reset at once ("Connection refused"); anything
        else, DNS to the guest's nameserver included (it is not on the machine), gets an
        ICMP "administratively prohibited". The kernel sends those to one guest in a
        burst of 6, then one a second (``net.ipv4.icmp_ratelimit``), so a name lookup
        fails in well under a second at first and in about 5 s (glibc's timeout) once
        the burst is spent. Unlike a real private VM, names do not resolve at all.
        Idempotent; the chain goes with the table (``delete``) or with ``allow_egress``.
        """
        table, chain, guest = self.netns, EGRESS_CHAIN, self.guest_address
        _nft(
            f"add chain ip {table} {chain} {{ type filter hook forward priority 0 ; }}\n"
            f"flush chain ip {table} {chain}\n"
            f"add rule ip {table} {chain} ip saddr {guest} meta l4proto tcp"
            " reject with tcp reset\n"
            f"add rule ip {table} {chain} ip saddr {guest} reject with icmp type admin-prohibited\n"
        )

    def allow_egress(self) -> None:
        """Forward the guest's traffic again (undoes ``block_egress``); idempotent."""
        table, chain = self.netns, EGRESS_CHAIN
        # One transaction: create it if missing, so that the delete always has a chain.
        _nft(
            f"add chain ip {table} {chain} {{ type filter hook forward priority 0 ; }}\n"
            f"flush chain ip {table} {chain}\n"
            f"delete chain ip {table} {chain}\n"
        )

    def egress_blocked(self) -> bool:
        """Whether ``block_egress`` is in force (read from nftables, not remembered)."""
        listed = subprocess.run(
            ["nft", "list", "chain", "ip", self.netns, EGRESS_CHAIN],
            capture_output=True,
            check=False,
        )
        return listed.returncode == 0


def _nft(script: str) -> None:
    """Apply an nft script as one transaction: all of it or, on an error, nothing."""
    run(["nft", "-f", "-"], input=script)
