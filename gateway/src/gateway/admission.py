"""Who may hold a connection at the gateway, and which upgrade requests it forwards at all.

Counted from the moment a TCP connection is accepted until it closes, half-sent heads included (they
hold a file descriptor just as a spliced session holds two):
- over ``max_connections`` a new connection takes the place of the oldest one still sending its head
  (that one is closed with 408): slow senders cannot hold the cap. With none to evict (every connection
  is a session or has sent its head), it may still ask ``/healthz`` or ``/readyz`` (a reserve of
  ``health_reserve`` more); anything else gets 503 with ``Retry-After``; beyond the reserve it gets 503
  at once, before its head is read;
- over ``max_connections_per_address`` (one client address) it gets 429 with ``Retry-After`` at once.
  Behind a trusted proxy the address is the one the proxy names in X-Forwarded-For, known only when the
  head is complete, so such connections are counted and refused then.
Both refusals are HTTP statuses before the upgrade, not a 1013 after it: refusing before the head is
read is what bounds descriptors under a flood, and a 101 needs the head.

An upgrade request is checked as RFC 6455 says before any upstream is contacted (400, or 426 with
``Sec-WebSocket-Version: 13``), and a browser's Origin must be the gateway's own or listed (403).
"""

import contextlib
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11
from realtime.heads import Refusal
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake, InvalidHeader
from websockets.http11 import Request
from websockets.server import ServerProtocol

logger = logging.getLogger(__name__)

FD_HEADROOM = 256  # descriptors kept for the listening socket, NATS, logs, probes and upstream connects
RETRY_AFTER = b"5"  # seconds a refused client should wait before it tries again
HEALTH_PATHS = (b"/healthz", b"/readyz")


def raise_open_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def default_max_connections(open_files: int, health_reserve: int) -> int:
    """Sessions that fit in ``open_files`` descriptors: two each, after the headroom and the reserve."""
    return max(1, (open_files - FD_HEADROOM - health_reserve) // 2)


@dataclass(eq=False)
class Ticket:
    """One accepted connection's place in the counts; ``release`` when it closes (idempotent)."""

    admission: "Admission"
    address: str | None  # the address it is counted under (None: not yet known, behind a proxy)
    in_reserve: bool = False  # admitted over max_connections: health checks only
    released: bool = False
    evict: Callable[[], None] | None = None  # closes the connection (set by its protocol)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.admission._leave(self)

    def head_done(self) -> None:
        """Its request head is complete: it can no longer be evicted as a slow sender."""
        self.admission.waiting.pop(self, None)


@dataclass
class Admission:
    max_connections: int
    max_per_address: int
    health_reserve: int
    total: int = 0
    by_address: dict[str, int] = field(default_factory=dict)
    # Connections still sending their head, oldest first: at the cap, a newcomer takes the place of the
    # oldest (slowloris holds places exactly so; a real client's head arrives within one round trip).
    waiting: dict[Ticket, None] = field(default_factory=dict)

    def admit(self, address: str | None) -> tuple[Ticket, Refusal | None]:
        """Count a new connection; the refusal (if any) to send it at once."""
        ticket = Ticket(self, None)
        self.total += 1
        if address is not None and (refusal := self.assign(ticket, address)) is not None:
            return ticket, refusal
        if self.total > self.max_connections:
            self._evict_oldest_waiting()
        if self.total > self.max_connections:
            ticket.in_reserve = True
            if self.total > self.max_connections + self.health_reserve:
                return ticket, busy("the gateway has too many connections")
        self.waiting[ticket] = None
        return ticket, None

    def _evict_oldest_waiting(self) -> None:
        for oldest in self.waiting:
            del self.waiting[oldest]
            evict = oldest.evict
            oldest.release()
            if evict is not None:
                evict()
            return

    def assign(self, ticket: Ticket, address: str) -> Refusal | None:
        """Count ``ticket`` under a client address; a 429 when that address holds too many."""
        if ticket.address is not None or ticket.released:
            return None
        ticket.address = address
        held = self.by_address.get(address, 0) + 1
        self.by_address[address] = held
        if held > self.max_per_address:
            return Refusal(429, "too many connections from one address", ((b"retry-after", RETRY_AFTER),))
        return None

    def _leave(self, ticket: Ticket) -> None:
        self.total -= 1
        self.waiting.pop(ticket, None)
        if ticket.address is not None:
            held = self.by_address[ticket.address] - 1
            if held:
                self.by_address[ticket.address] = held
            else:
                del self.by_address[ticket.address]


def busy(text: str) -> Refusal:
    return Refusal(503, text, ((b"retry-after", RETRY_AFTER),))


def reserve_refusal(event: h11.Request) -> Refusal | None:
    """A connection admitted into the health reserve may only ask for health."""
    path = event.target.split(b"?", 1)[0]
    if event.method == b"GET" and path in HEALTH_PATHS:
        return None
    return busy("the gateway has too many connections")


def header(event: h11.Request, name: bytes) -> bytes | None:
    for key, value in event.headers:  # h11 lower-cases names
        if key == name:
            return value
    return None


def is_websocket_attempt(event: h11.Request) -> bool:
    """Whether the request means to open a WebSocket (then it must be a valid RFC 6455 handshake)."""
    for key, value in event.headers:
        if key in (b"sec-websocket-key", b"sec-websocket-version"):
            return True
        if key == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


def upgrade_refusal(event: h11.Request) -> Refusal | None:
    """RFC 6455 section 4.2.1 for the opening handshake: 400, or 426 for a version other than 13."""
    if event.method != b"GET":
        return Refusal(400, "a WebSocket handshake must be a GET")
    if event.http_version != b"1.1":
        return Refusal(400, "a WebSocket handshake must be HTTP/1.1")
    headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers])
    request = Request(event.target.decode("latin-1"), headers)
    try:
        ServerProtocol().process_request(request)  # websockets' own checks of the upgrade fields
    except InvalidHeader as exc:
        if exc.name == "Sec-WebSocket-Version":
            return Refusal(
                426, "only WebSocket version 13 is supported", ((b"sec-websocket-version", b"13"),)
            )
        return Refusal(400, f"invalid WebSocket handshake: {exc}")
    except InvalidHandshake as exc:
        return Refusal(400, f"invalid WebSocket handshake: {exc}")
    return None


def _host_port(netloc: str, default_ports: tuple[int, ...]) -> tuple[str, tuple[int, ...]] | None:
    try:
        parts = urlsplit("//" + netloc)
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    return host, (port,) if port is not None else default_ports


class Origins:
    """Which browser origins may open a WebSocket here: the gateway's own, the listed ones, or all."""

    def __init__(self, allowed: list[str]) -> None:
        self.any = "*" in allowed
        self.listed = {a.strip().rstrip("/").lower() for a in allowed if a != "*"}

    def refusal(self, event: h11.Request) -> Refusal | None:
        origin = header(event, b"origin")
        if origin is None or self.any:
            return None  # not a browser (browsers always send Origin on a WebSocket), or allowed all
        text = origin.decode("latin-1").strip().lower()
        if text in self.listed or self._is_own(text, header(event, b"host")):
            return None
        return Refusal(403, "this origin may not open a WebSocket here")

    @staticmethod
    def _is_own(origin: str, host: bytes | None) -> bool:
        """Origin's host:port equals the Host the browser connected to (default ports by scheme)."""
        if host is None:
            return False
        scheme, sep, netloc = origin.partition("://")
        if not sep or scheme not in ("http", "https"):
            return False
        theirs = _host_port(netloc, (443,) if scheme == "https" else (80,))
        ours = _host_port(host.decode("latin-1"), (80, 443))
        return (
            theirs is not None
            and ours is not None
            and theirs[0] == ours[0]
            and bool(set(theirs[1]) & set(ours[1]))
        )
