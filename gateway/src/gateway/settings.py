from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode
from realtime.settings import ServiceSettings

from gateway.cores import auto_workers


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
    """Name in logs, in NATS connection names and in pulse samples."""
    port: int = 8000
    """Port to listen on: the one public address."""

    # WebSocket path pattern -> upstream name; ``{name}`` matches one path segment.
    routes: dict[str, str] = {"/echo": "echo", "/ws/{room_id}": "rooms", "/ws": "rooms", "/stats": "stats"}
    """JSON: WebSocket path pattern to upstream name; `{name}` matches one path segment."""
    # Upstream name -> replicas as host:port; a host name may resolve to several replicas (compose DNS).
    upstreams: dict[str, list[str]] = {
        "echo": ["127.0.0.1:8101"],
        "rooms": ["127.0.0.1:8201"],
        "stats": ["127.0.0.1:8301"],
    }
    """JSON: upstream name to replicas (`host:port` or `unix:/path/to.sock`, as a list or a comma-separated
    string); a DNS name that resolves to several addresses counts as several replicas.
    """
    # Processes sharing the gateway's port: one per core lets a large fan-out use every core. "auto" (the
    # default) counts the cores this process may use (gateway.cores: CPU affinity and a container's CPU
    # quota, not the host's core count), at most 8; read as a number once the settings are loaded.
    gateway_workers: int | Literal["auto"] = Field(
        default="auto",
        validate_default=True,
        description=(
            "Gateway worker processes sharing its port, or 'auto': one per core this process may use (CPU "
            "affinity and a cgroup CPU quota such as a Kubernetes CPU limit, not the host's core count), "
            "at most 8."
        ),
    )
    upstream_connect_timeout: float = 2.0
    """Seconds to connect to one replica before trying the next."""
    upstream_handshake_timeout: float = 5.0
    """Seconds for a replica to answer the upgrade."""
    upstream_probe_interval: float = 2.0
    """Seconds between health probes (`GET /healthz`) of every replica."""
    # FORWARDED_ALLOW_IPS (realtime.forwarded, the services' meaning): here the proxies in front of the
    # gateway (an ingress). From them X-Forwarded-For is kept and extended; from anyone else it is replaced
    # by the peer address. Empty by default: the gateway is the public door.
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default=[],
        description=(
            "Proxies in front of the gateway (an ingress) whose X-Forwarded-For names the client: IPs, CIDR "
            "networks, 'unix' or '*', comma-separated. Empty: the peer is the client and X-Forwarded-For "
            "is replaced."
        ),
    )

    # Connections this process holds at once (half-sent heads included). None: derived from the open-file
    # limit (each spliced session uses two descriptors), leaving room for health checks, NATS and logs.
    # Over it a client gets HTTP 503 with Retry-After; /healthz and /readyz still answer (health_reserve).
    max_connections: int | None = Field(default=None, ge=1)
    """Client connections one gateway process holds, half-sent heads included; over it 503 with `Retry-After`
    (health checks still answer, see `HEALTH_RESERVE`). Default (empty): (soft `RLIMIT_NOFILE` - 256 -
    `HEALTH_RESERVE`) / 2, since a spliced session uses two descriptors; the gateway raises its soft limit
    to the hard one at start.
    """
    # Connections one client address may hold (the peer, or X-Forwarded-For from a trusted proxy); over
    # it: HTTP 429 with Retry-After. Raise it when many users share one address (a NAT, a corporate proxy).
    max_connections_per_address: int = Field(default=1000, ge=1)
    """Client connections one address may hold; over it 429 with `Retry-After`, refused as the connection is
    accepted. Raise it when many users share one address (a NAT, a corporate proxy, a campus).
    """
    # Connections beyond max_connections that may still ask /healthz or /readyz (nothing else).
    health_reserve: int = Field(default=32, ge=1)
    """Connections beyond `MAX_CONNECTIONS` that may still ask `/healthz` or `/readyz` (anything else on them
    gets 503); beyond the reserve, 503 before the head is read.
    """
    # Origins a browser may open WebSockets from, besides the gateway's own (Origin host:port == Host);
    # "*" allows every origin. A request without Origin (not a browser) is always allowed.
    allowed_origins: Annotated[list[str], NoDecode] = []
    """Browser origins (comma-separated, e.g. `https://app.example.com`) that may open WebSockets besides the
    gateway's own (Origin's host:port equals `Host`); `*` allows every origin. Others get 403 before the
    upgrade; a request without `Origin` (not a browser) is allowed. compose: `.env`; Kubernetes: the
    overlay's `gateway-origins` line.
    """

    # Plain HTTP (not WebSocket) path prefix -> upstream name: a request whose path starts with the prefix
    # is forwarded to that upstream's replicas (method, path, query and body unchanged; http_forward.py).
    http_routes: dict[str, str] = {"/api/": "rooms"}
    """JSON: plain HTTP path prefix to upstream name; requests under the prefix (not WebSocket upgrades) are
    forwarded to its replicas. The default `/api/` route applies only when a `rooms` upstream is
    configured; every upstream an explicit value names must be in `UPSTREAMS` (checked at start); `{}`
    forwards nothing.
    """
    # Largest request body forwarded, in bytes; larger -> 413 (by Content-Length before the body is read,
    # chunked once this much has arrived). Keep it above the rooms' WS_MAX_SIZE plus JSON's escaping.
    http_max_body: int = Field(default=1024 * 1024, ge=1024)
    """Bytes of a forwarded request's body; over it 413 (by `Content-Length` before reading, chunked once
    that much arrived). Keep it above the rooms' `WS_MAX_SIZE` plus JSON escaping (a 64 KiB text may take
    6 times that as `\\u` escapes).
    """
    # Seconds an upstream may take to answer a forwarded request (and between two reads of its body), and
    # a client to send its body; an upstream that does not answer in time -> 504 (never retried: the
    # request may have been acted on). Longer than the rooms' ROOM_STORE_TIMEOUT (10 s), so a publish
    # while NATS is away gets the replica's own 503 "messaging unavailable", not the gateway's 504.
    http_forward_timeout: float = Field(default=15.0, gt=0)
    """Seconds a replica may take to answer a forwarded request (and between two reads of its body): 504
    after it, never retried; also the time a client has to send its body (408). Keep it above the rooms'
    `ROOM_STORE_TIMEOUT` (10 s), so a publish while NATS is away gets the replica's 503.
    """

    @field_validator("upstreams", mode="before")
    @classmethod
    def _split_replica_lists(cls, value: object) -> object:
        if isinstance(value, dict):
            return {
                name: [p.strip() for p in replicas.split(",") if p.strip()]
                if isinstance(replicas, str)
                else replicas
                for name, replicas in value.items()
            }
        return value

    @field_validator("gateway_workers")
    @classmethod
    def _resolve_workers(cls, value: int | str) -> int:
        if value == "auto":
            return auto_workers()
        if not 1 <= int(value) <= 64:
            raise ValueError("GATEWAY_WORKERS must be 'auto' or a number from 1 to 64")
        return int(value)

    @field_validator("http_routes")
    @classmethod
    def _check_prefixes(cls, value: dict[str, str]) -> dict[str, str]:
        for prefix in value:
            if not prefix.startswith("/") or prefix == "/":
                raise ValueError(f"HTTP route prefix {prefix!r} must start with / and name a path below /")
        return value

    @model_validator(mode="after")
    def _default_http_routes_need_their_upstream(self) -> "GatewaySettings":
        # The default /api/ route is the rooms API's: without a rooms upstream (a gateway for one's own
        # services) it is dropped, so a default never breaks a valid configuration. An HTTP_ROUTES that
        # was set is kept as given, and a missing upstream in it still stops the gateway (proxy.py).
        if "http_routes" not in self.model_fields_set:
            self.http_routes = {p: u for p, u in self.http_routes.items() if u in self.upstreams}
        return self

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value
