"""The uvicorn internals the platform builds on, named one by one, so an upgrade that moves one fails here
with its name instead of as a hang or a 1006 somewhere else.

``realtime/transport.py`` subclasses ``WebSocketsSansIOProtocol`` (uvicorn 0.35.0 added it) and reaches into
its state; ``gateway/splice.py`` is a WebSocket protocol class of its own that uvicorn's HTTP protocols
hand the upgrade to. ``libs/realtime/pyproject.toml`` bounds uvicorn to the releases this was checked
against: when raising the ceiling, run this file against the new release first.
"""

import asyncio
import inspect

import pytest
import uvicorn
from realtime.serve import GracefulWebSocketProtocol
from uvicorn.config import Config
from uvicorn.protocols.http import h11_impl, httptools_impl
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import Server, ServerState
from uvicorn.supervisors import Multiprocess

# Methods of the sans-I/O protocol that GracefulWebSocketProtocol overrides or calls.
PROTOCOL_METHODS = ("handle_connect", "shutdown", "stop_keepalive", "connection_made", "data_received")
# Instance state that transport.py's FrameWriter and shutdown read and write.
PROTOCOL_STATE = ("transport", "conn", "queue", "loop", "handshake_complete", "close_sent", "close_timer")


async def app(scope, receive, send) -> None:  # a minimal ASGI app for Config.load()
    raise NotImplementedError


def test_the_sansio_protocol_is_the_one_serve_subclasses() -> None:
    assert issubclass(GracefulWebSocketProtocol, WebSocketsSansIOProtocol)
    for name in PROTOCOL_METHODS:
        assert callable(getattr(WebSocketsSansIOProtocol, name, None)), f"uvicorn: {name}() is gone"


def test_protocols_are_built_with_the_keywords_the_gateway_protocol_takes() -> None:
    # uvicorn builds a WebSocket protocol as cls(config=..., server_state=..., app_state=...) and the
    # gateway's GatewayWebSocketProtocol has exactly that signature (plus _loop).
    params = list(inspect.signature(WebSocketsSansIOProtocol.__init__).parameters)
    assert params[:4] == ["self", "config", "server_state", "app_state"], params


@pytest.mark.parametrize("module", [h11_impl, httptools_impl], ids=["h11", "httptools"])
def test_http_protocols_hand_the_upgrade_over_as_the_gateway_expects(module: object) -> None:
    """The gateway reads the upgrade request from the first data_received() of a fresh protocol."""
    source = inspect.getsource(module)
    for needle in (
        "self.ws_protocol_class(",
        "config=self.config,",
        "server_state=self.server_state,",
        "app_state=self.app_state,",
        "protocol.connection_made(self.transport)",
        'protocol.data_received(b"".join(output))',
    ):
        assert needle in source, f"uvicorn {module.__name__} no longer has {needle!r}"  # type: ignore[attr-defined]


def test_the_server_tracks_connections_and_asks_each_to_shut_down() -> None:
    assert isinstance(ServerState().connections, set)
    source = inspect.getsource(Server)
    assert "for connection in list(self.server_state.connections):" in source
    assert "connection.shutdown()" in source


def test_the_protocol_state_serve_uses_exists_after_construction() -> None:
    config = Config(app=app, ws=GracefulWebSocketProtocol, lifespan="off")
    config.load()
    assert config.ws_protocol_class is GracefulWebSocketProtocol
    loop = asyncio.new_event_loop()
    try:
        state = ServerState()
        protocol = GracefulWebSocketProtocol(config=config, server_state=state, app_state={}, _loop=loop)
    finally:
        loop.close()
    for name in PROTOCOL_STATE:
        if name != "transport":  # set by connection_made
            assert hasattr(protocol, name), f"uvicorn's sans-I/O protocol has no {name!r} any more"
    assert protocol.handshake_complete is False and protocol.close_sent is False
    assert protocol.close_timer is None


def test_serving_entry_points_keep_their_signatures() -> None:
    assert "sockets" in inspect.signature(Server.run).parameters
    assert callable(Config.bind_socket)
    assert list(inspect.signature(Multiprocess.__init__).parameters)[1:] == ["config", "sockets"]


def test_the_installed_uvicorn_is_within_the_declared_bounds() -> None:
    from importlib.metadata import requires

    from packaging.requirements import Requirement
    from packaging.version import Version

    declared = next(Requirement(r) for r in requires("realtime") or [] if r.startswith("uvicorn"))
    assert declared.specifier, "realtime must bound uvicorn"
    assert Version(uvicorn.__version__) in declared.specifier, (uvicorn.__version__, str(declared.specifier))
    assert any(s.operator == "<" for s in declared.specifier), "realtime must cap uvicorn (internals used)"
