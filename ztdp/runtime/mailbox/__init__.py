"""Actor mailboxes: the interface and the in-memory implementation."""

from ztdp.runtime.mailbox.base import Mailbox
from ztdp.runtime.mailbox.memory import MemoryMailbox

__all__ = ["Mailbox", "MemoryMailbox"]
