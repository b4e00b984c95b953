"""Stack tests for both clouds: importing the harness loads the provider SDKs first."""

import stack_harness  # noqa: F401
from teststacks.conftest import no_real_clouds, pulumi_standin  # noqa: E402, F401
