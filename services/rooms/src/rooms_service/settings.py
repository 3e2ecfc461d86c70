from realtime.settings import ServiceSettings


class RoomsSettings(ServiceSettings):
    service_name: str = "rooms"
    port: int = 8201
