"""Actor mailboxes: the seam and the in-memory implementation."""

from ztdp.runtime.mailbox.base import Delivery, Envelope, Mailbox
from ztdp.runtime.mailbox.memory import MemoryMailbox

__all__ = ["Delivery", "Envelope", "Mailbox", "MemoryMailbox"]
