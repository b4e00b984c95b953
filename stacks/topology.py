"""``topology: group``: the group's own settings, read and checked before any resource.

With ``topology: single`` (the default) a group-only key is refused, not ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from stacks import keys, rules
from stacks.config import ConfigReader, SettingError, ruled


@dataclass(frozen=True, kw_only=True)
class GroupSettings:
    """``topology: group``: how many instances, and the load balancer's own certificate."""

    size: int
    #: A provided certificate chain (PEM, leaf first) and its key (a secret); None: the
    #: cloud manages a certificate for ``domain`` (Google-managed, or ACM with DNS
    #: validation).
    certificate_pem: str | None = None
    certificate_key: pulumi.Output[str] | None = field(default=None, repr=False)

    @property
    def provided_certificate(self) -> bool:
        return self.certificate_pem is not None


def read_group(
    reader: ConfigReader,
    topology: str,
    *,
    domain: str | None,
    tls_mode: str,
    ssh_cidrs: list[str],
) -> GroupSettings | None:
    """The group's settings with ``topology: group``; with ``single`` a group-only key is
    refused rather than ignored."""
    if topology != "group":
        for key in keys.GROUP_ONLY:
            value = reader.get(key)
            if value is not None:
                shown = "[secret]" if key in keys.SECRET else value
                raise SettingError(
                    reader.qualified(key),
                    shown,
                    f"no {key} with topology single: it is read only with "
                    f"{reader.qualified('topology')} group",
                )
        return None
    low, high = rules.GROUP_SIZE_RANGE
    size = reader.get_int("groupSize", low, low, high)
    if tls_mode not in rules.GROUP_TLS_MODES:
        raise SettingError(
            reader.qualified("tlsMode"),
            tls_mode,
            "self-signed or provided with topology group: the load balancer holds the public "
            "certificate, and a Let's Encrypt challenge would reach whichever instance it picks",
        )
    if ssh_cidrs:
        raise SettingError(
            reader.qualified("sshAllowedCidrs"),
            ssh_cidrs,
            "an empty list with topology group: the instances have no public address; SSH "
            "goes through GCP IAP or AWS Session Manager",
        )
    pem = reader.get("groupCertificatePem")
    key = reader.get("groupCertificateKeyPem")
    if (pem is None) != (key is None):
        missing = "groupCertificateKeyPem" if key is None else "groupCertificatePem"
        raise SettingError(
            reader.qualified(missing),
            None,
            "set together with "
            + ("groupCertificatePem" if key is None else "groupCertificateKeyPem")
            + ": a provided certificate needs both its chain and its private key",
        )
    if pem is None and domain is None:
        raise SettingError(
            reader.qualified("domain"),
            None,
            "a DNS name with topology group (the cloud manages the load balancer's "
            "certificate for it), or groupCertificatePem and groupCertificateKeyPem (a "
            "certificate of your own)",
        )
    if pem is None:
        return GroupSettings(size=size)
    ruled(reader, "groupCertificatePem", rules.certificate_pem, pem)
    ruled(reader, "groupCertificateKeyPem", rules.private_key_pem, key)
    return GroupSettings(size=size, certificate_pem=pem, certificate_key=pulumi.Output.secret(key))
