"""The settings every service reads from its environment (pydantic-settings)."""

import os
import socket
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ServiceSettings(BaseSettings):
    """Base for each service's settings; subclasses add their own fields and a service name."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    service_name: str = "service"
    instance_id: str = Field(default_factory=_default_instance_id)
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    # "text" (one readable line) or "json" (one JSON object per line, for log collectors).
    log_format: Literal["text", "json"] = "text"
    access_log: bool = True
    # Prometheus metrics at GET /metrics; off: no endpoint and nothing counted (to measure their cost).
    metrics: bool = True
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
    nats_connect_timeout: float = 2.0
    nats_reconnect_wait: float = 0.5

    # WebSocket transport: compression off by default, it halves broadcast throughput.
    ws_max_size: int = 64 * 1024
    ws_per_message_deflate: bool = False
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    shutdown_timeout: float = 10.0
    # Request heads (realtime.heads): larger heads -> 431, more fields -> 431, a longer target -> 414;
    # a connection that has not sent a complete head within the timeout is closed (slowloris).
    max_head_size: int = Field(default=16 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=8)
    max_target_length: int = Field(default=4 * 1024, ge=256)
    handshake_timeout: float = Field(default=10.0, gt=0)
    # Proxies whose X-Forwarded-For names the client (the gateway): its address must be listed, or every
    # client looks like the gateway. "*" where only the gateway can reach a service (compose, Kubernetes).
    # "unix" stands for a peer on the UDS socket below (uvicorn sees no address there).
    forwarded_allow_ips: str = "127.0.0.1,unix"
    # Also listen on this Unix socket: on one machine the gateway reaches the service without TCP's cost.
    uds: str | None = None

    # The pulse: every instance samples itself once per tick of this many seconds (aligned to the clock).
    pulse_interval: float = Field(default=5.0, ge=0.05)
    # The host named in pulse samples; in Kubernetes set it to the node name (host CPU is the node's).
    pulse_host: str = Field(default_factory=socket.gethostname)

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
