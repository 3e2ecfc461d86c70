from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode
from realtime.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
    port: int = 8000

    # WebSocket path pattern -> upstream name; ``{name}`` matches one path segment.
    routes: dict[str, str] = {"/echo": "echo", "/ws/{room_id}": "rooms", "/stats": "stats"}
    # Upstream name -> replicas as host:port; a host name may resolve to several replicas (compose DNS).
    upstreams: dict[str, list[str]] = {
        "echo": ["127.0.0.1:8101"],
        "rooms": ["127.0.0.1:8201"],
        "stats": ["127.0.0.1:8301"],
    }
    # Processes sharing the gateway's port. One per container (scale with replicas there); on one
    # machine, one per core lets a large fan-out use every core (each relayed frame costs two TCP sends).
    gateway_workers: int = Field(default=1, ge=1, le=64)
    upstream_connect_timeout: float = 2.0
    upstream_handshake_timeout: float = 5.0
    upstream_probe_interval: float = 2.0
    # Peers whose X-Forwarded-For is kept and extended (an ingress); "*" trusts all. Others are replaced.
    forwarded_allow_ips: Annotated[list[str], NoDecode] = []

    # Connections this process holds at once (half-sent heads included). None: derived from the open-file
    # limit (each spliced session uses two descriptors), leaving room for health checks, NATS and logs.
    # Over it a client gets HTTP 503 with Retry-After; /healthz and /readyz still answer (health_reserve).
    max_connections: int | None = Field(default=None, ge=1)
    # Connections one client address may hold (the peer, or X-Forwarded-For from a trusted proxy); over
    # it: HTTP 429 with Retry-After. Raise it when many users share one address (a NAT, a corporate proxy).
    max_connections_per_address: int = Field(default=1000, ge=1)
    # Connections beyond max_connections that may still ask /healthz or /readyz (nothing else).
    health_reserve: int = Field(default=32, ge=1)
    # Origins a browser may open WebSockets from, besides the gateway's own (Origin host:port == Host);
    # "*" allows every origin. A request without Origin (not a browser) is always allowed.
    allowed_origins: Annotated[list[str], NoDecode] = []

    # Plain HTTP (not WebSocket) path prefix -> upstream name: a request whose path starts with the prefix
    # is forwarded to that upstream's replicas (method, path, query and body unchanged; http_forward.py).
    http_routes: dict[str, str] = {"/api/": "rooms"}
    # Largest request body forwarded, in bytes; larger -> 413 (by Content-Length before the body is read,
    # chunked once this much has arrived). Keep it above the rooms' WS_MAX_SIZE plus JSON's escaping.
    http_max_body: int = Field(default=1024 * 1024, ge=1024)
    # Seconds an upstream may take to answer a forwarded request (and between two reads of its body), and
    # a client to send its body; an upstream that does not answer in time -> 504 (never retried: the
    # request may have been acted on). Longer than the rooms' ROOM_STORE_TIMEOUT (10 s), so a publish
    # while NATS is away gets the replica's own 503 "messaging unavailable", not the gateway's 504.
    http_forward_timeout: float = Field(default=15.0, gt=0)

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

    @field_validator("forwarded_allow_ips", "allowed_origins", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value
