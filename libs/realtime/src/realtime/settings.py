"""The settings every service reads from its environment (pydantic-settings)."""

import os
import socket
from typing import Literal

from pydantic import Field, field_validator
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

    # memory:// for one process; nats://host:port[,host:port...] for replicas and clusters.
    bus_url: str = "nats://127.0.0.1:4222"
    nats_connect_timeout: float = 2.0
    nats_reconnect_wait: float = 0.5
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
