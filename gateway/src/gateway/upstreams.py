"""Upstream replicas: name resolution, round-robin order, and a background reachability probe."""

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import socket
from collections.abc import Callable

from realtime import metrics

logger = logging.getLogger(__name__)

Address = tuple[str, int]


UNIX = "unix:"


def parse_target(target: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) -> (host, port); ``unix:/path`` -> ("unix:/path", 0)."""
    if target.startswith(UNIX):
        if len(target) == len(UNIX):
            raise ValueError(f"upstream {target!r} needs a socket path")
        return target, 0
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"upstream {target!r} must be host:port")
    return host.strip("[]"), int(port)


def shown(address: Address) -> str:
    """A replica as ``UPSTREAMS`` spells it: ``host:port``, ``[v6]:port``, or ``unix:/path`` (no port)."""
    host, port = address
    if host.startswith(UNIX):
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_literal(host: str) -> bool:
    """An IP address or a Unix socket: nothing to resolve."""
    return host.startswith(UNIX) or _is_ip(host)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class UpstreamPool:
    """The replicas behind one upstream name.

    A target that is a DNS name may stand for several replicas (compose gives one address per replica),
    so targets are resolved on every probe. Connections rotate over the replicas; one known to be down
    (failed its probe or refused a connection) goes last, and one that refuses is skipped by the caller,
    which simply tries the next. A replica not probed yet is tried like a healthy one.
    """

    def __init__(self, name: str, targets: list[str], *, metrics_on: bool = True) -> None:
        if not targets:
            raise ValueError(f"upstream {name!r} has no replicas")
        self.name = name
        self.targets = [parse_target(t) for t in targets]
        self.addresses: list[Address] = [(h, p) for h, p in self.targets if _is_literal(h)]
        self.reachable: set[Address] = set()  # answered its last health probe
        self.down: set[Address] = set()  # failed its last probe or refused the last connection
        self._unanswered: set[Address] = set()  # reachable, but its last probe got no answer in time
        self._turn = itertools.count()
        self._up = metrics.child(metrics.GATEWAY_REPLICAS_UP, metrics_on, upstream=name)
        self.splices_open = metrics.child(metrics.GATEWAY_SPLICES_OPEN, metrics_on, upstream=name)

    def candidates(self) -> list[Address]:
        """Every known replica, once, in the order to try them for the next connection."""
        addresses = self.addresses or self.targets
        start = next(self._turn) % len(addresses)
        rotated = addresses[start:] + addresses[:start]
        return [a for a in rotated if a not in self.down] + [a for a in rotated if a in self.down]

    def mark(self, address: Address, reachable: bool) -> None:
        if reachable:
            self.reachable.add(address)
            self.down.discard(address)
        else:
            self.reachable.discard(address)
            self.down.add(address)
        self._up.set(len(self.reachable))

    async def resolve(self) -> None:
        loop = asyncio.get_running_loop()
        found: list[Address] = []
        for host, port in self.targets:
            if _is_literal(host):
                found.append((host, port))
                continue
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                logger.warning("upstream %s: cannot resolve %s (%s)", self.name, host, exc)
                continue
            found.extend(dict.fromkeys((info[4][0], port) for info in infos))
        self.addresses = found
        self.reachable &= set(found)
        self.down &= set(found)
        self._up.set(len(self.reachable))

    async def probe(self, deadline: float) -> None:
        """Mark each replica reachable when its /healthz answers 200, unreachable when it answers anything
        else or refuses the connection, and when it gives no answer within ``deadline`` twice in a row: a
        reachable replica busy for one probe's deadline (a loaded machine) stays routed and ready."""
        await self.resolve()
        results = await asyncio.gather(*(_healthz_ok(a, deadline) for a in self.addresses))
        for address, answer in zip(self.addresses, results, strict=True):
            if answer is None and address in self.reachable and address not in self._unanswered:
                self._unanswered.add(address)
                continue
            self._unanswered.discard(address)
            ok = bool(answer)
            if ok and address not in self.reachable:
                logger.info("upstream %s: %s:%d is reachable", self.name, *address)
            elif not ok and address in self.reachable:
                logger.warning("upstream %s: %s:%d stopped answering", self.name, *address)
            self.mark(address, ok)

    @property
    def any_reachable(self) -> bool:
        return bool(self.reachable)


async def _healthz_ok(address: Address, deadline: float) -> bool | None:
    """Whether the replica's /healthz answered 200; None: no answer within ``deadline``."""
    host = "localhost" if address[0].startswith(UNIX) else address[0]
    writer = None
    try:
        async with asyncio.timeout(deadline):
            reader, writer = await open_stream(address)
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            status_line = await reader.readline()
            return status_line.split(b" ", 2)[1:2] == [b"200"]
    except TimeoutError:
        return None
    except (OSError, IndexError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def open_stream(address: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = address
    if host.startswith(UNIX):
        return await asyncio.open_unix_connection(host[len(UNIX) :])
    return await asyncio.open_connection(host, port)


async def open_transport(address: Address, protocol_factory: Callable[[], asyncio.Protocol]) -> None:
    """Connect ``protocol_factory()`` to one replica, over TCP or a Unix socket."""
    loop = asyncio.get_running_loop()
    host, port = address
    if host.startswith(UNIX):
        await loop.create_unix_connection(protocol_factory, host[len(UNIX) :])
    else:
        await loop.create_connection(protocol_factory, host, port)
