"""What counts as NATS being away, for every part of ZTDP that talks to it.

Only these are outages (503, pause and retry); any other NATS error, such as a payload over
the server's limit or a refused configuration, is a failure of what was sent and is not
retried for ever.
"""

from __future__ import annotations

import nats.errors
import nats.js.errors

# What an unreachable, restarting or stalled NATS raises from a request (a JetStream that is
# still starting answers 503).
UNREACHABLE: tuple[type[Exception], ...] = (
    TimeoutError,  # nats.errors.TimeoutError is one
    OSError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
)
