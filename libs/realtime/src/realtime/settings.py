"""The settings every service reads from its environment (pydantic-settings)."""

import os
import socket
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from realtime.forwarded import parse_trusted


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ServiceSettings(BaseSettings):
    """Base for each service's settings; subclasses add their own fields and a service name.

    Every field has a description, shown in the docs' settings reference (generated from these classes;
    a field without one fails ``make docs``): a docstring under the field, or ``Field(description=...)``.
    """

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", use_attribute_docstrings=True)

    service_name: str = "service"
    """Name in logs, in NATS connection names and in pulse samples (each service sets its own)."""
    instance_id: str = Field(default_factory=_default_instance_id)
    """This replica's id (default `<hostname>-<pid>`)."""
    host: str = "127.0.0.1"
    """Interface to listen on (`0.0.0.0` in containers)."""
    port: int = 8000
    """Port to listen on."""
    log_level: str = "info"
    """`debug`, `info`, `warning` or `error`."""
    # "text" (one readable line) or "json" (one JSON object per line, for log collectors).
    log_format: Literal["text", "json"] = "text"
    """`text` (one readable line) or `json`: one JSON object per line with `time`, `level`, `logger`,
    `message`, `service`, `instance`, `pid`, and a request's `client`, `path` (redacted), `method`,
    `status`.
    """
    access_log: bool = True
    """Log each HTTP request and WebSocket handshake (secret query values redacted)."""
    # Prometheus metrics at GET /metrics; off: no endpoint and nothing counted (to measure their cost).
    metrics: bool = True
    """Prometheus metrics at `GET /metrics`; `false` removes the endpoint and stops all counting (to measure
    their cost).
    """
    # The internal (operator) listener, as Centrifugo's internal port: realtime.operator.
    internal_host: str | None = Field(
        default=None,
        description="Address of the internal (operator) port, which serves /metrics, the gateway's "
        "/upstreams and the rooms' /rooms (never the public PORT: it answers 404 for them) besides /healthz "
        "and /readyz. Unset: the same address as HOST. Let only monitoring reach it.",
    )
    internal_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="The internal (operator) port: the only port that serves /metrics, the gateway's "
        "/upstreams and the rooms' /rooms; /healthz and /readyz answer here too. Unset: PORT + 1000.",
    )

    # memory:// for one process; nats://host:port[,host:port...] for replicas and clusters.
    bus_url: str = "nats://127.0.0.1:4222"
    """`memory://` (one process) or `nats://host:port[,host:port...]` (several servers of a cluster)."""
    nats_connect_timeout: float = 2.0
    """Seconds per NATS connection attempt."""
    nats_reconnect_wait: float = 0.5
    """Seconds between NATS reconnect attempts (the first connection retries with backoff up to 5 s)."""
    # A NATS server that hangs (stopped, partitioned without a reset) is noticed by pings, not by TCP.
    nats_ping_interval: float = Field(
        default=2.0,
        gt=0,
        description="Seconds between the pings a service sends its NATS server. With "
        "NATS_MAX_OUTSTANDING_PINGS "
        "a server that stops answering is left for another node within (max + 1) intervals (6 s by default).",
    )
    nats_max_outstanding_pings: int = Field(
        default=2,
        ge=1,
        description="Pings the NATS server may leave unanswered; one more and the connection is stale: the "
        "service reconnects, to another node of a cluster.",
    )
    nats_request_timeout: float = Field(
        default=2.0,
        gt=0,
        description="Seconds a JetStream request (storing a message, reading history) waits for its answer. "
        "A store that times out is retried with the same message id (stored once) until ROOM_STORE_TIMEOUT.",
    )
    nats_randomize: bool = Field(
        default=True,
        description="Try the servers of BUS_URL in random order (spreads replicas that share one BUS_URL); "
        "false: in the order given (the launcher gives each replica another cluster node first).",
    )

    # WebSocket transport: compression off by default, it halves broadcast throughput.
    ws_max_size: int = 64 * 1024
    """Largest message a client may send, in bytes; larger closes with 1009."""
    ws_per_message_deflate: bool = False
    """permessage-deflate; off because it costs 2-4x memory and half the broadcast throughput."""
    ws_ping_interval: float = 20.0
    """Seconds between keepalive pings."""
    ws_ping_timeout: float = 20.0
    """Seconds a keepalive ping may wait for its pong before the connection is closed."""
    shutdown_timeout: float = 10.0
    """Seconds a stopping instance waits for its connections to finish."""
    # Request heads (realtime.heads): larger heads -> 431, more fields -> 431, a longer target -> 414;
    # a connection that has not sent a complete head within the timeout is closed (slowloris).
    max_head_size: int = Field(default=16 * 1024, ge=1024)
    """Largest request head (request line and headers) in bytes; larger gets 431 before more is buffered."""
    max_headers: int = Field(default=100, ge=8)
    """Most header fields in a request; more gets 431 (a single field line over 8 KiB, websockets' limit,
    also gets 431).
    """
    max_target_length: int = Field(default=4 * 1024, ge=256)
    """Longest request target (path and query) in bytes; longer gets 414."""
    handshake_timeout: float = Field(default=10.0, gt=0)
    """Seconds a connection has to send a complete request head (also the next one on a kept-alive
    connection); then 408 and closed (slowloris).
    """
    # Proxies whose X-Forwarded-For names the client (realtime.forwarded; the gateway's setting of the same
    # name means the same): for a service, the gateway, whose address must be listed or every client looks
    # like the gateway. "*" where only the gateway can reach a service (compose, Kubernetes). "unix" stands
    # for a peer on the UDS socket below (uvicorn sees no address there).
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default=["127.0.0.1", "unix"],
        description=(
            "Proxies whose X-Forwarded-For names the client (for a service: the gateway): IPs, CIDR "
            "networks, 'unix' (a peer on the UDS socket) or '*', comma-separated. From any other peer the "
            "peer itself is the client."
        ),
    )
    # Also listen on this Unix socket: on one machine the gateway reaches the service without TCP's cost.
    uds: str | None = None
    """Also listen on this Unix socket path (mode 0660). On one machine the gateway can reach the service
    there (`UPSTREAMS` entry `unix:/path`): a send costs about 3.7 us instead of 8.7 us over loopback TCP.
    """

    # The pulse: every instance samples itself once per tick of this many seconds (aligned to the clock).
    pulse_interval: float = Field(default=5.0, ge=0.05)
    """Seconds per tick (at least 0.05); every instance samples once per tick, stats sends one pulse per
    tick. Use the same value everywhere: samples of another interval are ignored.
    """
    # The host named in pulse samples; in Kubernetes set it to the node name (host CPU is the node's).
    pulse_host: str = Field(default_factory=socket.gethostname)
    """Host name in pulse samples (default: the hostname); host CPU is the node's, so in Kubernetes set it to
    the node name (downward API `spec.nodeName`).
    """

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _trusted_proxies(cls, value: object) -> list[str]:
        return parse_trusted(value)

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_level(cls, value: str) -> str:
        return value.lower()

    @model_validator(mode="after")
    def _internal_listener(self) -> "ServiceSettings":
        """INTERNAL_HOST defaults to HOST, INTERNAL_PORT to PORT + 1000; never the public port itself."""
        if self.internal_host is None:
            self.internal_host = self.host
        if self.internal_port is None:
            if not 1 <= self.port + 1000 <= 65535:
                raise ValueError(f"PORT {self.port} + 1000 is not a port: set INTERNAL_PORT")
            self.internal_port = self.port + 1000
        if self.internal_port == self.port:
            raise ValueError(f"INTERNAL_PORT {self.internal_port} must differ from PORT")
        return self
