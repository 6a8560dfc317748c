"""Which webhook URLs the service may call.

A webhook makes the service send requests wherever an admin points it, so by default it refuses
addresses inside the machine or its networks (loopback, private, link-local, carrier-grade NAT,
multicast, reserved: anything not globally routable), which would let a webhook probe or call
internal services. The check runs at registration and again at every delivery, on the addresses
the name resolves to then, and the delivery connects to exactly the address it checked: a name
that later resolves elsewhere (DNS rebinding) cannot slip past. LEDGER_WEBHOOK_ALLOW_PRIVATE=true
lifts the rule (a receiver on the same machine or network, as in tests).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

from agent_ledger.errors import InvalidInput, WebhookUrlNotAllowed

__all__ = ["Target", "check_url", "resolve"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


class Target:
    """A checked URL and the address a delivery connects to."""

    def __init__(self, url: SplitResult, address: str) -> None:
        self.url = url
        self.address = address

    @property
    def host(self) -> str:
        return self.url.hostname or ""

    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address (bracketed for IPv6)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        port = f":{self.url.port}" if self.url.port else ""
        return self.url._replace(netloc=f"{host}{port}").geturl()

    def host_header(self) -> str:
        return self.url.netloc.rpartition("@")[2]


def parse(url: str) -> SplitResult:
    """A URL a webhook may name: http or https, a host, no credentials, no fragment."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise InvalidInput(f"url is not a valid URL: {exc}.", field="url") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise InvalidInput("url must be an http or https URL with a host.", field="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(
            "url must not carry credentials; the signature authenticates.", field="url"
        )
    if parts.fragment:
        raise InvalidInput("url must not have a fragment.", field="url")
    return parts


def _allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def resolve(parts: SplitResult) -> list[str]:
    """Every address the URL's host resolves to (a literal address: itself)."""
    host = parts.hostname or ""
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookUrlNotAllowed(
            f"The webhook's host {host!r} does not resolve ({exc}).", host=host
        ) from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def check_url(url: str, *, allow_private: bool) -> Target:
    """The URL checked and the address to connect to; WebhookUrlNotAllowed when any address
    the host resolves to is not public (unless ``allow_private``)."""
    parts = parse(url)
    addresses = await resolve(parts)
    if not allow_private:
        refused = [a for a in addresses if not _allowed(a)]
        if refused:
            raise WebhookUrlNotAllowed(
                f"The webhook's host {parts.hostname!r} resolves to {refused[0]}, a loopback, "
                "private or otherwise non-public address; webhooks may only call public "
                "addresses unless the operator sets LEDGER_WEBHOOK_ALLOW_PRIVATE=true.",
                host=parts.hostname,
            )
    return Target(parts, addresses[0])
