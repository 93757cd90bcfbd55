"""A kit for provider plugin authors: a fake provider, and the provider seam's contract suite.

`FakeProvider` is an in-memory provider (with switches to make calls fail) for tests that need
one; `ProviderContract` is a pytest base class that holds any provider to the seam's contract
(see docs/providers.md). Importing this package needs pytest (ZTDP's `test` extra).
"""

from ztdp.testing.contract import ProviderContract
from ztdp.testing.fake import Failure, FakeProvider, FakeSettings

__all__ = ["Failure", "FakeProvider", "FakeSettings", "ProviderContract"]
