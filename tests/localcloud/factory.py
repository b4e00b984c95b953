"""Prepared hosts for a test session: prepare a host once, hand out copies of it.

Bootstrapping a host takes minutes; copying a prepared one and booting the copy
takes seconds (``bench/localcloud`` prints both). A test that does not need a
pristine host asks for a clone::

    def test_something(host_factory, local_cloud):
        host = host_factory.clone("bootstrapped-s3", prepare=lambda h: bootstrap(h, "s3"))

The first call for a key creates a host (``LocalCloud.new_host(**host_args)``),
runs ``prepare(host)`` on it and powers it off as the template; every call copies
the template into a new slot and boots the copy (``LocalCloud.clone_host``).
``clone_of(host)`` copies a host prepared elsewhere (a session's bootstrapped one). A
clone has its own address, name and machine ID and the template's host keys and
login key; what bootstrap derived from the template's address is stale until it
runs again on the clone.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.localcloud.cloud import LocalCloud
from tests.localcloud.host import FreshHost


class HostFactory:
    def __init__(self, cloud: LocalCloud, log=print) -> None:
        self.cloud = cloud
        self.log = log
        self.templates: dict[str, FreshHost] = {}
        self.clones: list[FreshHost] = []

    def template(
        self, key: str, prepare: Callable[[FreshHost], object] | None = None, **host_args
    ) -> FreshHost:
        """The powered-off template for ``key``, created and prepared on first use."""
        if key not in self.templates:
            host = self.cloud.new_host(log=self.log, **host_args)
            try:
                if prepare is not None:
                    prepare(host)
                host.shutdown()
            except BaseException:
                self.cloud.remove_host(host)
                raise
            self.templates[key] = host
        return self.templates[key]

    def clone(
        self,
        key: str,
        prepare: Callable[[FreshHost], object] | None = None,
        *,
        wait: bool = True,
        **host_args,
    ) -> FreshHost:
        """A booted copy of the template for ``key`` (removed at the end of the session)."""
        template = self.template(key, prepare, **host_args)
        host = self.cloud.clone_host(template, log=self.log, wait=wait)
        self.clones.append(host)
        return host

    def clone_of(self, source: FreshHost, *, wait: bool = True, prepare=None) -> FreshHost:
        """A booted copy of any prepared host (a running one is powered off for the copy
        and booted again), removed at the end of the session like the other clones;
        ``prepare(copy)`` runs on its root file system before it boots."""
        host = self.cloud.clone_host(source, log=self.log, wait=wait, prepare=prepare)
        self.clones.append(host)
        return host

    def discard(self, host: FreshHost) -> None:
        """Remove a clone before the end of the session."""
        self.cloud.remove_host(host)
        if host in self.clones:
            self.clones.remove(host)

    def close(self) -> None:
        for host in [*self.clones, *self.templates.values()]:
            self.cloud.remove_host(host)
        self.clones.clear()
        self.templates.clear()
