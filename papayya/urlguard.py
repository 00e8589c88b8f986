"""Where run callbacks may go: never to the control plane's own networks (SSRF).

A callback URL is chosen by whoever holds an API key, and the server POSTs to it from inside
its network. So an address that is not globally routable (private, loopback, link-local such
as the cloud metadata service at 169.254.169.254, carrier-grade NAT, unspecified, reserved,
multicast), or a host name that resolves to one, is refused unless the operator allows it
(``PAPAYYA_CALLBACK_ALLOW_PRIVATE=1``). An IPv6 address that carries an IPv4 one (mapped,
IPv4-compatible, translated, NAT64, 6to4, Teredo) is judged by the IPv4 address too, since a
gateway on the path delivers it there. A URL with a backslash is refused outright: parsers
disagree on where its host ends (WHATWG reads ``http://a\\@127.0.0.1/`` as host ``a``).
A URL is checked when its run is created and again at every delivery, where the resolver of
the delivering session refuses such addresses too, so a name re-pointed between the check
and the connect (DNS rebinding) is still refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from papayya.errors import InvalidInput

RESOLVE_SECONDS: Final = 2.0
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# IPv6 ranges whose last 32 bits are an IPv4 address that the traffic ends up at.
EMBEDDING_LAST_32: Final = (
    ipaddress.IPv6Network("::/96"),  # IPv4-compatible (deprecated): ::a.b.c.d
    ipaddress.IPv6Network("::ffff:0:0:0/96"),  # IPv4-translated (RFC 2765)
    ipaddress.IPv6Network("64:ff9b::/96"),  # NAT64, well-known prefix (RFC 6052)
)
# Never global, though this Python's ipaddress may not know it: local-use NAT64 (RFC 8215,
# the IPv4 address sits where the operator chose), site-local (deprecated, still routed on
# some private networks), documentation (RFC 9637) and SRv6 SIDs (RFC 9602).
NOT_GLOBAL: Final = tuple(
    ipaddress.IPv6Network(n) for n in ("64:ff9b:1::/48", "fec0::/10", "3fff::/20", "5f00::/16")
)


class UnsafeCallbackUrl(InvalidInput):
    """The callback URL points at a private, loopback or link-local address."""

    code = "unsafe_callback_url"


class RefusedAddress(OSError):
    """Raised by ``GuardedResolver``: aiohttp wraps resolver ``OSError``s in a
    ``ClientConnectorError`` whose ``os_error`` this is."""


def is_refused(ip: IpAddress) -> bool:
    """Whether a callback may not be sent to ``ip``, or to an IPv4 address it embeds."""
    if isinstance(ip, ipaddress.IPv6Address) and any(ip in n for n in NOT_GLOBAL):
        return True
    return any(not each.is_global or each.is_multicast for each in (ip, *embedded_ipv4(ip)))


def embedded_ipv4(ip: IpAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses that ``ip`` carries: ``::ffff:127.0.0.1`` is 127.0.0.1, and so are
    ``::7f00:1``, ``64:ff9b::7f00:1`` and ``2002:7f00:1::``."""
    if isinstance(ip, ipaddress.IPv4Address):
        return []
    found = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if any(ip in network for network in EMBEDDING_LAST_32):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [each for each in found if each is not None]


def host_of(url: str) -> str:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    if not host:
        raise InvalidInput(f"callback URL {url!r} has no host")
    return host


async def check_url(url: str, *, allow_private: bool, timeout: float = RESOLVE_SECONDS) -> None:
    """Raise ``UnsafeCallbackUrl`` if ``url``'s host is, or resolves to, a refused address.
    A name that does not resolve (now) passes: its delivery fails and is recorded then."""
    if "\\" in url:  # refused whatever the configuration: its host is ambiguous
        raise UnsafeCallbackUrl(
            f"callback URL {url!r} contains a backslash; parsers disagree on its host"
        )
    if allow_private:
        return
    host = host_of(url).rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):  # loopback by definition (RFC 6761)
        raise UnsafeCallbackUrl(_refusal(host))
    for ip in await _addresses(host, timeout):
        if is_refused(ip):
            raise UnsafeCallbackUrl(_refusal(host if host == str(ip) else f"{host} ({ip})"))


def _refusal(shown: str) -> str:
    return (
        f"callback URL host {shown} is a private, loopback or link-local address; "
        "the server allows those only with PAPAYYA_CALLBACK_ALLOW_PRIVATE=1"
    )


async def _addresses(host: str, timeout: float) -> list[IpAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM), timeout
        )
    except (OSError, TimeoutError, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


class GuardedResolver(AbstractResolver):
    """The default resolver, refusing any name with a refused address among its answers."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            ip = ipaddress.ip_address(answer["host"].split("%", 1)[0])
            if is_refused(ip):
                raise RefusedAddress(f"callback host {host} resolved to refused address {ip}")
        return answers

    async def close(self) -> None:
        await self._inner.close()


def session(timeout: aiohttp.ClientTimeout, *, allow_private: bool) -> aiohttp.ClientSession:
    """A client session for callbacks; unless ``allow_private``, its every connect goes to a
    public address (no DNS cache, so each connect resolves through the guard)."""
    options: dict[str, Any] = {}
    if not allow_private:
        options = {"resolver": GuardedResolver(), "use_dns_cache": False}
    return aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(**options))
