"""The settings every service reads from its environment (pydantic-settings)."""

import os
import socket
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from realtime.forwarded import parse_trusted


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

    # The pulse: every instance samples itself once per tick of this many seconds (aligned to the clock).
    pulse_interval: float = Field(default=5.0, ge=0.05)
    # The host named in pulse samples; in Kubernetes set it to the node name (host CPU is the node's).
    pulse_host: str = Field(default_factory=socket.gethostname)

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _trusted_proxies(cls, value: object) -> list[str]:
        return parse_trusted(value)

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_level(cls, value: str) -> str:
        return value.lower()
