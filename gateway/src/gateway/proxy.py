"""The gateway's routing state: routes, upstream pools, live connection count, the probe loop."""

import asyncio
import logging
from ipaddress import ip_address, ip_network

from gateway.routes import RouteTable
from gateway.settings import GatewaySettings
from gateway.upstreams import UpstreamPool

logger = logging.getLogger(__name__)


class Proxy:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.routes = RouteTable(settings.routes)
        self.pools = {name: UpstreamPool(name, targets) for name, targets in settings.upstreams.items()}
        missing = {r.upstream for r in self.routes.routes} - set(self.pools)
        if missing:
            raise ValueError(f"routes name upstreams with no replicas configured: {sorted(missing)}")
        self.connections = 0  # client WebSocket sessions being spliced right now
        self._trust_all = "*" in settings.forwarded_allow_ips
        self._trusted = [ip_network(n, strict=False) for n in settings.forwarded_allow_ips if n != "*"]

    def pool_for(self, path: str) -> UpstreamPool | None:
        name = self.routes.upstream_for(path)
        return None if name is None else self.pools[name]

    def trusts(self, peer: str) -> bool:
        """Whether this peer's own X-Forwarded-* headers are believed (an ingress in front of us)."""
        if self._trust_all:
            return True
        try:
            address = ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self._trusted)

    @property
    def ready(self) -> bool:
        """Every routed upstream has at least one replica answering its health check."""
        return all(self.pools[r.upstream].any_reachable for r in self.routes.routes)

    async def probe_forever(self) -> None:
        interval = self.settings.upstream_probe_interval
        while True:
            await asyncio.gather(*(pool.probe(deadline=min(interval, 2.0)) for pool in self.pools.values()))
            await asyncio.sleep(interval)
