"""SSRF guard: outbound URLs built from event data must not reach internal services.

A sink URL or lookup URL is a template filled from webhook payloads; an attacker who controls
a payload could point it at ``http://169.254.169.254/`` (cloud metadata), ``localhost:5432`` or
a service on the private network. Every such URL is resolved first, and refused when any
address it resolves to is not globally routable (loopback, RFC 1918 private, link-local,
unique-local, CGNAT, multicast, unspecified, reserved), unless the config allows it
explicitly (``worker.allow_private_networks`` or the sink's/lookup's ``allow_private``).

Every address of the name is checked, not just the first, so a name with one public and one
private record is refused. The check runs twice: :meth:`NetGuard.check` before the request
(an IP literal, and the error that names the setting to change), and
:class:`PublicOnlyResolver` when the connection resolves the name again — guarded calls go
through a session built on it (``new_session(public_only=True)``), so a DNS server that
answers a public address to the first lookup and a private one to the second (rebinding)
gets no connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from schemas.config import WorkerSettings
from schemas.errors import UnsafeDestination

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries and reaches (mapped, NAT64, 6to4, Teredo,
    IPv4-compatible): judged as that IPv4 address, or ``64:ff9b::a9fe:a9fe`` on a network
    with NAT64 would reach the cloud metadata service."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """True only for globally routable unicast addresses."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not address.is_multicast


@dataclass(frozen=True, slots=True)
class NetGuard:
    """The policy for one kind of outbound call; ``allow_private=True`` turns the check off."""

    allow_private: bool = False
    stage: str = ""

    @classmethod
    def for_target(cls, worker: WorkerSettings, target_allows: bool, *, stage: str) -> NetGuard:
        """The guard of one configured target (a lookup, a sink): private addresses are
        allowed when the worker allows them everywhere or the target itself says so."""
        return cls(allow_private=worker.allow_private_networks or target_allows, stage=stage)

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


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver for guarded calls: an answer with any non-public address is refused.

    aiohttp resolves a name when it opens a connection (an IP literal is not resolved: the
    check before the request covers it); this makes the addresses it connects to the ones
    checked, whatever the DNS answered the check before. Its connector's DNS cache only ever
    holds answers that passed.
    """

    def __init__(self, inner: AbstractResolver | None = None, *, stage: str = "") -> None:
        self._inner = inner if inner is not None else DefaultResolver()
        self._stage = stage

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            address = ipaddress.ip_address(result["host"].split("%", 1)[0])
            if not is_public(address):
                raise UnsafeDestination(
                    f"host {host!r} resolved to non-public address {address} when connecting "
                    "(the DNS answer changed since the check before the request)",
                    stage=self._stage,
                )
        return results

    async def close(self) -> None:
        await self._inner.close()
