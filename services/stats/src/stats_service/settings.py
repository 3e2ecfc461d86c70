from realtime.settings import ServiceSettings


class StatsSettings(ServiceSettings):
    service_name: str = "stats"
    port: int = 8301
