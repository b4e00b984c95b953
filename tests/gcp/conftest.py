"""GCP stack tests: importing the harness here loads pulumi_gcp's modules before any
test turns DeprecationWarning into an error (see gcp_harness.GCP_MODULES)."""

import gcp_harness  # noqa: F401
