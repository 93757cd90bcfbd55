"""Who the client is, for the failed-authentication limiter: its address, as far as trusted.

`X-Forwarded-For` is believed only from a trusted proxy (the `trusted_proxies` setting), and
then only as far as it was written by trusted proxies: walking it from the right, the client
is the first address that is not itself a trusted proxy. Anything left of that was written by
the client and could name anyone, so a client cannot pick its own identity for the limiter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address


def _address(text: str) -> Address | None:
    """An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `::1` or `[::1]:5678`."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ip_address(text)
    except ValueError:
        return None


class ClientAddresses:
    def __init__(self, trusted_proxies: Iterable[Network]) -> None:
        self._trusted = tuple(trusted_proxies)

    def _is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self._trusted)

    def client(self, peer: str | None, forwarded_for: Sequence[str] = ()) -> str:
        """The client of a request from `peer` with these `X-Forwarded-For` header values."""
        if not peer:
            return "unknown"  # not over TCP (a Unix socket): all such clients count as one
        address = _address(peer)
        if address is None or not self._trusted or not self._is_trusted(address):
            return peer if address is None else str(address)
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
        for hop in reversed([h for h in hops if h]):
            address = _address(hop)
            if address is None:
                return hop  # an obfuscated or unknown client, as a trusted proxy wrote it
            if not self._is_trusted(address):
                return str(address)
        # Only trusted proxies: the request came from one of them (or from behind them
        # without saying so); the one farthest away is the best name there is.
        return str(address)
