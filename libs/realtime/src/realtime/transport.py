"""The transport under every WebSocket: the platform's uvicorn protocol and the frame writer.

This is the one module that reaches into uvicorn's WebSocket protocol (``WebSocketsSansIOProtocol``): its
transport, its sans-I/O ``websockets`` connection and its state flags. ``libs/realtime/pyproject.toml`` bounds
uvicorn to the releases ``tests/test_uvicorn_internals.py`` passed on. ``realtime.serve`` runs processes
with this protocol; the hub (``realtime.hub``) writes through ``FrameWriter``.
"""

from typing import Any

from fastapi import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from realtime.close_codes import CloseCode
from realtime.heads import Refusal

FRAME_WRITER = "realtime.frame_writer"  # the ASGI scope extension that carries a FrameWriter


class FrameWriter:
    """Writes pre-encoded frames straight to one client's transport: the broadcast hot path.

    ``write`` is synchronous and costs one ``transport.write``; a fan-out loop calls it for every local
    member with the same bytes (see realtime.frames). ``buffered`` is what the client has not read yet,
    so a caller can cut off a slow consumer instead of letting its backlog grow.
    """

    __slots__ = ("_protocol",)

    def __init__(self, protocol: "GracefulWebSocketProtocol") -> None:
        self._protocol = protocol

    @property
    def open(self) -> bool:
        p = self._protocol
        return p.handshake_complete and not p.close_sent and not p.transport.is_closing()

    @property
    def buffered(self) -> int:
        return self._protocol.transport.get_write_buffer_size()

    def write(self, frame: bytes) -> bool:
        """Queue one encoded frame; False when the connection is closing or closed."""
        if not self.open:
            return False
        self._protocol.transport.write(frame)
        return True

    def close(self, code: int, reason: str = "", *, abort_after: float = 60.0) -> None:
        """Queue a close frame behind what is already queued; drop the connection if the client has not
        finished closing ``abort_after`` seconds later (a client that stopped reading for good never
        will). Until then a client that reads again gets its backlog, then the close code: nothing more
        is written after the close, so that backlog is bounded."""
        p = self._protocol
        if not self.open:
            return
        p.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        p.conn.send_close(code, reason)
        p.transport.write(b"".join(p.conn.data_to_send()))
        p.close_sent = True
        p.close_timer = p.loop.call_later(abort_after, p.transport.abort)


def frame_writer(websocket: WebSocket) -> FrameWriter | None:
    """The connection's FrameWriter, when it runs under this platform's protocol (None in TestClient)."""
    return websocket.scope.get("extensions", {}).get(FRAME_WRITER)


class GracefulWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, with three changes:

    - shutdown says 1001 "going away" (uvicorn says 1012): 1012 is what the gateway reports when it loses
      an upstream, while a draining instance tells its clients to reconnect elsewhere;
    - each connection's scope carries a ``FrameWriter`` (extension ``realtime.frame_writer``);
    - a handshake websockets cannot parse is answered 400 (uvicorn left such a client hanging).
    """

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if getattr(self, "scope", None) is not None:
            self.scope["extensions"][FRAME_WRITER] = FrameWriter(self)  # type: ignore[index]
            if self.scope.get("client") is None and isinstance(
                self.transport.get_extra_info("sockname"), str
            ):
                # A Unix-socket peer has no address; "unix" lets FORWARDED_ALLOW_IPS trust the gateway there.
                self.scope["client"] = ("unix", 0)

    def handle_parser_exception(self) -> None:
        if self.conn.close_sent is None:
            # A request websockets cannot parse: uvicorn's handler expects a close frame and raises,
            # which left the client waiting for an answer that never came. Answer 400 and hang up.
            self.handshake_complete = self.close_sent = True
            self.transport.write(Refusal(400, "invalid WebSocket handshake").encode())
            self.transport.close()
            return
        super().handle_parser_exception()

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
