"""Stack tests for both clouds: importing the harness loads the provider SDKs first."""

import stack_harness  # noqa: F401
