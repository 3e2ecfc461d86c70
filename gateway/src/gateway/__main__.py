"""``python -m gateway``: the public entry point, splicing WebSocket paths to their upstreams."""

import os

from fastapi import FastAPI
from realtime.logs import setup_logging
from realtime.serve import log_names, serve, serve_workers

from gateway.admission import raise_open_file_limit
from gateway.app import create_app
from gateway.front import GatewayHttpProtocol
from gateway.settings import GatewaySettings
from gateway.splice import GatewayWebSocketProtocol


def main() -> None:
    raise_open_file_limit()  # before the settings: the default MAX_CONNECTIONS follows the limit
    settings = GatewaySettings()
    workers = settings.gateway_workers
    protocols = {"ws": GatewayWebSocketProtocol, "http": GatewayHttpProtocol}
    if workers > 1:
        serve_workers("gateway.__main__:worker_app", settings, workers, **protocols)
    else:
        serve(lambda: create_app(settings), settings, **protocols)


def worker_app() -> FastAPI:
    """The app of one of several gateway worker processes; uvicorn calls this in each worker."""
    raise_open_file_limit()
    settings = GatewaySettings()
    # Each worker is an instance of its own in the pulse: the gateway's id and the worker's pid.
    settings.instance_id = f"{settings.instance_id}-p{os.getpid()}"
    setup_logging(settings.log_level, settings.log_format, **log_names(settings))
    return create_app(settings)


if __name__ == "__main__":
    main()
