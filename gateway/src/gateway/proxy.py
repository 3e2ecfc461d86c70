"""The gateway's routing state: routes, upstream pools, live connection count, the probe loop."""

import asyncio
import logging
import resource
from typing import Any

from realtime import metrics
from realtime.forwarded import TrustedProxies

from gateway.admission import Admission, Origins, default_max_connections
from gateway.routes import RouteTable
from gateway.settings import GatewaySettings
from gateway.upstreams import UpstreamPool

logger = logging.getLogger(__name__)

FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-real-ip")


def forwarded_headers(
    headers: list[tuple[bytes, bytes]], peer: str, trusted: bool
) -> list[tuple[bytes, bytes]]:
    """A request's header fields (lower-case names) as an upstream gets them, with X-Forwarded-For and
    -Proto set: an untrusted peer's own X-Forwarded-*/X-Real-IP are replaced by its address and ``http``
    (it could claim any address), a trusted proxy's chain is extended by the proxy's address."""
    previous = None
    if trusted:
        previous = next((v for k, v in headers if k == b"x-forwarded-for"), None)
    kept = [(k, v) for k, v in headers if k != b"x-forwarded-for" and (trusted or k not in FORWARDED)]
    chain = (previous + b", " if previous else b"") + peer.encode("latin-1")
    kept.append((b"x-forwarded-for", chain))
    if not trusted:
        kept.append((b"x-forwarded-proto", b"http"))
    return kept


class Proxy:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.routes = RouteTable(settings.routes)
        self.pools = {
            name: UpstreamPool(name, targets, metrics_on=settings.metrics)
            for name, targets in settings.upstreams.items()
        }
        missing = {r.upstream for r in self.routes.routes} - set(self.pools)
        if missing:
            raise ValueError(f"routes name upstreams with no replicas configured: {sorted(missing)}")
        missing = set(settings.http_routes.values()) - set(self.pools)
        if missing:
            raise ValueError(f"HTTP_ROUTES name upstreams with no replicas configured: {sorted(missing)}")
        # Plain HTTP path prefix -> pool, the longest prefix first (it wins over a shorter one).
        self.http_routes = {
            prefix: self.pools[name]
            for prefix, name in sorted(settings.http_routes.items(), key=lambda item: -len(item[0]))
        }
        self._http_answers: dict[tuple[str, str], Any] = {}  # (upstream, status class) -> counter child
        self.connections = 0  # client WebSocket sessions being spliced right now
        self.trusted = TrustedProxies(settings.forwarded_allow_ips)
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.admission = Admission(
            max_connections=settings.max_connections
            or default_max_connections(open_files, settings.health_reserve),
            max_per_address=settings.max_connections_per_address,
            health_reserve=settings.health_reserve,
        )
        self.origins = Origins(settings.allowed_origins)
        # Refusals by reason (metrics.REFUSAL_REASONS), resolved once.
        self.refusals: dict[str, Any] = {
            reason: metrics.refusal(reason) if settings.metrics else metrics.NOOP
            for reason in metrics.REFUSAL_REASONS
        }
        self.no_upstream = self.refusals["no_upstream"]

    def pool_for(self, path: str) -> UpstreamPool | None:
        name = self.routes.upstream_for(path)
        return None if name is None else self.pools[name]

    def http_pool_for(self, path: str) -> UpstreamPool | None:
        """The upstream that plain HTTP requests to ``path`` (decoded, no query) are forwarded to."""
        for prefix, pool in self.http_routes.items():
            if path.startswith(prefix):
                return pool
        return None

    def http_answered(self, pool: UpstreamPool, status: int) -> None:
        """Count one forwarded request's answer (realtime_gateway_http_requests)."""
        if not self.settings.metrics:
            return
        key = (pool.name, metrics.status_class(status))
        counter = self._http_answers.get(key)
        if counter is None:
            counter = self._http_answers[key] = metrics.GATEWAY_HTTP_REQUESTS.labels(*key)
        counter.inc()

    def trusts(self, peer: str) -> bool:
        """Whether this peer's own X-Forwarded-* headers are believed (an ingress in front of us)."""
        return peer in self.trusted

    def client_address(self, peer: str, headers: list[tuple[bytes, bytes]]) -> str:
        """The client a trusted proxy connected for (realtime.forwarded: the right-most X-Forwarded-For
        entry that is not itself a trusted proxy)."""
        chain: list[str] = []
        for name, value in headers:
            if name == b"x-forwarded-for":
                chain += [p.strip() for p in value.decode("latin-1").split(",") if p.strip()]
        return self.trusted.client(peer, chain)

    @property
    def ready(self) -> bool:
        """Every routed upstream (WebSocket or HTTP) has at least one replica answering its health check."""
        routed = {r.upstream for r in self.routes.routes} | {p.name for p in self.http_routes.values()}
        return all(self.pools[name].any_reachable for name in routed)

    async def probe(self) -> None:
        """Probe every replica of every upstream once (each within the interval, at most 2 s)."""
        deadline = min(self.settings.upstream_probe_interval, 2.0)
        await asyncio.gather(*(pool.probe(deadline=deadline) for pool in self.pools.values()))

    async def probe_forever(self) -> None:
        """Probe again every UPSTREAM_PROBE_INTERVAL (the first round is the lifespan's)."""
        while True:
            await asyncio.sleep(self.settings.upstream_probe_interval)
            await self.probe()
