from pydantic import Field
from realtime.settings import ServiceSettings


class StatsSettings(ServiceSettings):
    service_name: str = "stats"
    """Name in logs, in NATS connection names and in pulse samples."""
    port: int = 8301
    """Port to listen on."""

    # An instance stays in the pulse while it has a sample from one of the last this many ticks.
    pulse_drop_after: int = Field(default=2, ge=1, le=10)
    """Ticks an instance stays in the pulse after its last sample (1-10); also how long a new stats replica
    listens before its first own pulse. Give every stats replica the same value, or their pulses differ.
    """
    # A client with more than this many bytes of earlier pulses still unsent skips the tick.
    pulse_max_buffered: int = Field(default=0, ge=0)
    """Bytes of earlier pulses a client may still have unsent and get this tick's; above it the client skips
    the tick.
    """
