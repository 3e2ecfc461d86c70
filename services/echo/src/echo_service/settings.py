from realtime.settings import ServiceSettings


class EchoSettings(ServiceSettings):
    service_name: str = "echo"
    port: int = 8101
