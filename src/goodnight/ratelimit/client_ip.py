"""Whose address a request counts against.

The socket peer, unless the peer is a proxy listed in ``GOODNIGHT_TRUSTED_PROXIES``. Then it is the right-most
address of ``X-Forwarded-For`` that no trusted proxy wrote: each proxy appends the address it was connected
from, so everything to the right of that entry was written by proxies we trust, and everything to its left
came from the client and proves nothing. From an untrusted peer the header is ignored altogether: anyone can
send it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from starlette.types import Scope

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
# The key of a request whose server gave no peer address (a Unix socket): all such requests share it.
UNKNOWN_PEER = "unknown"


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """IP addresses and CIDR networks; ``ValueError`` naming the first entry that is neither."""
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``, ``[2001:db8::1]:443``),
    or None. IPv4 addresses that arrive IPv6-mapped are the same client, so they come back as IPv4."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forwarded_for(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """Every ``X-Forwarded-For`` entry in order; repeated headers are one list, as RFC 9110 says."""
    entries: list[str] = []
    for name, value in headers:
        if name == b"x-forwarded-for":
            entries.extend(value.decode("latin-1").split(","))
    return entries


class ClientAddress:
    def __init__(self, trusted_proxies: Sequence[Network]) -> None:
        self._trusted = tuple(trusted_proxies)
        # Peers are few (the proxies themselves): parse each one once.
        self._is_trusted_peer = lru_cache(maxsize=1024)(self._parse_and_check)

    def of(self, scope: Scope) -> str:
        client = scope.get("client")
        peer: str = client[0] if client else UNKNOWN_PEER
        if not self._trusted or not self._is_trusted_peer(peer):
            return peer
        nearest = peer  # the closest hop known to be honest so far
        for entry in reversed(_forwarded_for(scope["headers"])):
            address = parse_address(entry)
            if address is None:
                # A trusted hop wrote something that is not an address: nothing further left can be
                # believed, so the request counts against that hop (never a bypass).
                return nearest
            if not self._is_trusted(address):
                return str(address)
            nearest = str(address)
        # Every hop is one of our own proxies: the request started there.
        return nearest

    def _is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self._trusted)

    def _parse_and_check(self, peer: str) -> bool:
        address = parse_address(peer)
        return address is not None and self._is_trusted(address)
