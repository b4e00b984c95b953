"""The Pulumi program: validate every setting, then declare the cloud's components."""

from __future__ import annotations

import pulumi

from stacks.config import ConfigReader, read_common


def main() -> dict[str, pulumi.Output]:
    """Declare the stack's resources and return its outputs, keyed by contract names."""
    common = read_common(ConfigReader(), pulumi.get_stack())
    if common.world_open:
        pulumi.log.warn(
            "open to the whole internet by explicit setting: " + ", ".join(common.world_open)
        )
    if common.tls_mode == "letsencrypt":
        pulumi.log.warn(
            "port 80 open to the whole internet (0.0.0.0/0) for Let's Encrypt's HTTP-01 "
            "challenge: tlsMode is letsencrypt; nginx serves there only the challenge and a "
            "redirect to HTTPS"
        )
    if common.cloud == "gcp":
        from stacks.gcp.deploy import deploy
    else:
        from stacks.aws.deploy import deploy
    return deploy(common)
