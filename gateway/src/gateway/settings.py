from typing import Annotated

from pydantic import Field, field_validator
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

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _split_ips(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value
