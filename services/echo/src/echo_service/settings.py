from realtime.settings import ServiceSettings


class EchoSettings(ServiceSettings):
    service_name: str = "echo"
    """Name in logs, in NATS connection names and in pulse samples."""
    port: int = 8101
    """Port to listen on."""
