"""``python -m gateway``: the public entry point, splicing WebSocket paths to their upstreams."""

from realtime.serve import serve

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.splice import GatewayWebSocketProtocol


def main() -> None:
    settings = GatewaySettings()
    serve(lambda: create_app(settings), settings, ws=GatewayWebSocketProtocol)


if __name__ == "__main__":
    main()
