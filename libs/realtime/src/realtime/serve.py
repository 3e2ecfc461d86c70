"""Runs a service under uvicorn with the platform's transport choices, the same way everywhere."""

from collections.abc import Callable

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from realtime.close_codes import CloseCode
from realtime.logs import setup_logging
from realtime.settings import ServiceSettings


class GracefulWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, but shutdown says 1001 "going away" (uvicorn says 1012).

    1012 is what the gateway reports when it loses an upstream; a draining instance tells its clients
    to reconnect elsewhere, which is 1001.
    """

    def shutdown(self) -> None:
        if self.handshake_complete and not self.close_sent:
            self.stop_keepalive()
            self.queue.put_nowait({"type": "websocket.disconnect", "code": int(CloseCode.GOING_AWAY)})
            self.conn.send_close(int(CloseCode.GOING_AWAY), "server shutting down")
            self.close_sent = True
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()
            return
        super().shutdown()


def uvicorn_config(
    app_factory: Callable[[], FastAPI],
    settings: ServiceSettings,
    *,
    ws: type | str = GracefulWebSocketProtocol,
) -> uvicorn.Config:
    return uvicorn.Config(
        app_factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        ws=ws,
        ws_max_size=settings.ws_max_size,
        ws_per_message_deflate=settings.ws_per_message_deflate,
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_timeout,
        log_config=None,  # setup_logging owns the handlers (with redaction)
        log_level=settings.log_level,
        access_log=settings.access_log,
        proxy_headers=True,  # the gateway's X-Forwarded-For is the client address
        timeout_graceful_shutdown=settings.shutdown_timeout,
        lifespan="on",
    )


def serve(
    app_factory: Callable[[], FastAPI],
    settings: ServiceSettings,
    *,
    ws: type | str = GracefulWebSocketProtocol,
) -> None:
    """Blocks until SIGINT/SIGTERM: then clients get 1001, the lifespan drains the bus, and it exits."""
    setup_logging(settings.log_level)
    uvicorn.Server(uvicorn_config(app_factory, settings, ws=ws)).run()
