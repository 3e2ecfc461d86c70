from pydantic import Field
from realtime.settings import ServiceSettings


class StatsSettings(ServiceSettings):
    service_name: str = "stats"
    port: int = 8301

    # An instance stays in the pulse while it has a sample from one of the last this many ticks.
    pulse_drop_after: int = Field(default=2, ge=1, le=10)
    # A client with more than this many bytes of earlier pulses still unsent skips the tick.
    pulse_max_buffered: int = Field(default=0, ge=0)
