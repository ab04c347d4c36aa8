"""Where a webhook may go (SSRF). A receiver's URL must be http(s) and its host must resolve only
to public addresses: loopback, private, link-local, unspecified, multicast and other reserved
addresses are refused unless they lie in WEBHOOK_ALLOW_NETWORKS. Checked when a subscription is
made and again at every delivery; the delivery then connects to the very address it checked
(`Target.address`, with the name kept for the Host header and TLS), so a DNS answer that
changes between check and connect cannot slip a request into the garage's own network.
Redirects are not followed (httpx's default): a 3xx is a failed delivery.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from garagebook.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class UrlRefused(Exception):
    """Why a receiver's URL may not be used; the text is shown to staff and stored."""


@dataclass(frozen=True)
class Target:
    url: str  # the URL with its host replaced by the checked address
    host: str  # the name as given: the Host header, and the TLS server name
    host_header: str  # host[:port] as in the URL
    address: IPAddress

    @property
    def tls(self) -> bool:
        return self.url.startswith("https:")


def allowed_networks(settings: Settings) -> list[Network]:
    parts = (part.strip() for part in settings.webhook_allow_networks.split(","))
    return [ipaddress.ip_network(part, strict=False) for part in parts if part]


def refusal(address: IPAddress, allowed: list[Network]) -> str | None:
    """Why this address is refused, or None when it is public or allowed."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed):
        return None
    if address.is_global and not address.is_multicast:
        return None
    return f"{address} is not a public address (loopback, private, link-local or reserved)"


def parse(url: str) -> tuple[str, str, int]:
    """Scheme, host and port of a receiver's URL, or UrlRefused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("the URL must start with https:// or http://")
    if parts.username or parts.password:
        raise UrlRefused("the URL must not carry a user name or password")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UrlRefused("the URL has a bad port") from None
    if not parts.hostname:
        raise UrlRefused("the URL has no host")
    return parts.scheme, parts.hostname, port


async def resolve(url: str, settings: Settings) -> Target:
    """Resolve the URL's host and check every address it has (one bad address is enough to
    refuse: which one a connection would use is not ours to pick)."""
    _, host, port = parse(url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UrlRefused(f"the host {host!r} does not resolve") from None
    addresses: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UrlRefused(f"the host {host!r} does not resolve")
    allowed = allowed_networks(settings)
    for address in addresses:
        reason = refusal(address, allowed)
        if reason is not None:
            raise UrlRefused(f"{reason}; WEBHOOK_ALLOW_NETWORKS does not allow it")
    chosen = addresses[0]
    parts = urlsplit(url)
    literal = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    return Target(pinned, host, parts.netloc, chosen)
