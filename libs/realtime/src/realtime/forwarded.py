"""FORWARDED_ALLOW_IPS, one type and one meaning for the gateway and every service: the peers (proxies)
whose ``X-Forwarded-For`` names the client. From a trusted peer the right-most address in that header that
is not itself a trusted proxy is the client; from any other peer the peer itself is the client and its
``X-Forwarded-For`` is not believed. The same rule uvicorn applies in the services (its proxy headers
middleware gets this list), and the gateway applies with ``TrustedProxies`` below.

Entries: an IP address, a CIDR network, ``unix`` (a peer on a Unix socket, which has no address), or ``*``
(every peer: only where nobody but the trusted proxy can reach the process)."""

from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

UNIX = "unix"
ANY = "*"


def parse_trusted(value: object) -> list[str]:
    """A comma-separated string or a list -> the entries, each checked (a typo raises, never trusts)."""
    entries = [p.strip() for p in value.split(",")] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    result = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(f"FORWARDED_ALLOW_IPS entry {entry!r} is not a string")
        if not entry:
            continue
        if entry not in (ANY, UNIX):
            try:
                ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"FORWARDED_ALLOW_IPS entry {entry!r}: use an IP address, a CIDR network, 'unix' or '*'"
                ) from None
        result.append(entry)
    return result


class TrustedProxies:
    """Whether a peer's ``X-Forwarded-For`` is believed, and the client it names."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = list(entries)
        self.any = ANY in entries
        self.unix = UNIX in entries
        self.networks: list[IPv4Network | IPv6Network] = [
            ip_network(e, strict=False) for e in entries if e not in (ANY, UNIX)
        ]

    def __contains__(self, peer: str | None) -> bool:
        if self.any:
            return True
        if peer is None or peer == UNIX:
            return self.unix
        try:
            address = ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self.networks)

    def client(self, peer: str, forwarded_for: list[str]) -> str:
        """The client a trusted peer connected for: the right-most ``X-Forwarded-For`` entry that is not
        itself a trusted proxy (the first entry when all are); the peer when it is not trusted."""
        if peer not in self:
            return peer
        for hop in reversed(forwarded_for):
            if hop not in self:
                return hop
        return forwarded_for[0] if forwarded_for else peer
