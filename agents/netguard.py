"""SSRF guard: outbound URLs built from event data must not reach internal services.

A sink URL or lookup URL is a template filled from webhook payloads; an attacker who controls
a payload could point it at ``http://169.254.169.254/`` (cloud metadata), ``localhost:5432`` or
a service on the private network. Every such URL is resolved first, and refused when any
address it resolves to is not globally routable (loopback, RFC 1918 private, link-local,
unique-local, CGNAT, multicast, unspecified, reserved), unless the config allows it
explicitly (``worker.allow_private_networks`` or the sink's/lookup's ``allow_private``).

Every address of the name is checked, not just the first, so a name with one public and one
private record is refused. The check happens before the request; a DNS answer that changes
in between (rebinding) is a known gap, narrowed by aiohttp's DNS cache, which keeps the
answer the check saw.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from streams.errors import UnsafeDestination

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public(address: IPAddress) -> bool:
    """True only for globally routable unicast addresses."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


@dataclass(frozen=True, slots=True)
class NetGuard:
    """The policy for one kind of outbound call; ``allow_private=True`` turns the check off."""

    allow_private: bool = False
    stage: str = ""

    async def check(self, url: str, *, what: str) -> None:
        """Raise :class:`UnsafeDestination` unless every address of the URL's host is public.

        ``what`` names the caller in the error ("sink crm"); the URL itself is not echoed,
        its query may hold credentials.
        """
        if self.allow_private:
            return
        parts = urlsplit(url)
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise UnsafeDestination(
                f"{what}: only http(s) URLs with a host are allowed", stage=self.stage
            )
        for address in await resolve(host, parts.port or (443 if parts.scheme == "https" else 80)):
            if not is_public(address):
                raise UnsafeDestination(
                    f"{what}: host {host!r} resolves to non-public address {address}; "
                    "set allow_private: true on it (or worker.allow_private_networks) "
                    "to allow it",
                    stage=self.stage,
                )


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []  # unresolvable: the request fails on its own with a connection error
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        addresses.append(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
    return addresses
