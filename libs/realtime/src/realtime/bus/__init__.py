"""The broadcast bus, chosen by URL: ``memory://`` for one process, ``nats://h:p[,h:p]`` for many."""

from realtime.bus.base import (
    Bus,
    BusUnavailable,
    Handler,
    Message,
    StoreAck,
    Stored,
    StreamSpec,
    Subscription,
    is_safe_token,
    safe_token,
    subject_matches,
)

__all__ = [
    "Bus",
    "BusUnavailable",
    "Handler",
    "Message",
    "StoreAck",
    "Stored",
    "StreamSpec",
    "Subscription",
    "create_bus",
    "is_safe_token",
    "safe_token",
    "subject_matches",
]


def create_bus(url: str, **options: object) -> Bus:
    """Build the backend named by the URL's scheme; a backend's module is imported only when chosen."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from realtime.bus.memory import MemoryBus

        return MemoryBus()
    if scheme in ("nats", "tls"):
        from realtime.bus.nats import NatsBus

        return NatsBus(url, **options)  # type: ignore[arg-type]
    raise ValueError(f"unsupported bus URL scheme {scheme!r} (use memory:// or nats://)")
