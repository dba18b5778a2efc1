"""Who is calling: the client address behind trusted proxies, and per-source allowlists.

A proxy header (``gateway.client_ip_header``, e.g. ``X-Forwarded-For``) is believed only when
the TCP peer is one of ``gateway.trusted_proxies``; otherwise anyone could claim any address.
In a comma-separated chain, the client is the right-most address that is not itself a trusted
proxy (the left part of the chain is whatever the client chose to send).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


def parse_address(text: str | None) -> IPAddress | None:
    """An address from a peer name or header item; None when it is not one."""
    if not text:
        return None
    candidate = text.strip()
    if candidate.startswith("[") and "]" in candidate:  # [v6]:port
        candidate = candidate[1 : candidate.index("]")]
    elif candidate.count(":") == 1:  # v4:port
        candidate = candidate.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def in_networks(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_address(
    peer: str | None,
    headers: Mapping[str, str],
    *,
    client_ip_header: str | None,
    trusted_proxies: tuple[IPNetwork, ...],
) -> IPAddress | None:
    """The address the allowlist checks: the peer, or the forwarded client behind trusted proxies.

    None when the peer is unknown (e.g. a Unix socket) or a trusted proxy sent a garbled chain:
    the allowlist then refuses, it never guesses.
    """
    address = parse_address(peer)
    if address is None or not client_ip_header or not in_networks(address, trusted_proxies):
        return address
    chain = headers.get(client_ip_header)
    if chain is None or not chain.strip():
        return address
    hops = [parse_address(item) for item in chain.split(",")]
    for hop in reversed(hops):
        if hop is None:
            return None
        if not in_networks(hop, trusted_proxies):
            return hop
    return hops[0]  # every hop is a trusted proxy: the first one is the origin
