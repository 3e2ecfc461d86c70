"""``Session``: one socket that comes back by itself, the loop ``Room`` (``/ws/{room}``) and
``Connection`` (``/ws``, many rooms) share.

It runs as a background task: it asks the token source for a token before every attempt, connects
(``_target``), reads every frame (``_handle``), and after a close the table calls "reconnect" comes back
with a jittered exponential backoff; a final close, or a token source that raises, ends it (``_fail``).
While connected, a token from a callable is refreshed before its ``exp``. Every message sent on the
socket is counted by its ``Pacer``, which the resends after a welcome wait for.
"""

import asyncio
import contextlib
import json
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from realtime_client.backoff import Backoff
from realtime_client.closes import ABNORMAL, closed_error, should_reconnect
from realtime_client.pacing import Pacer
from realtime_client.tokens import Refreshing, TokenSource, expiry, token_of


class Session(Refreshing):
    """The socket's life: connect, read, reconnect. Subclasses say where to connect, what to do once
    connected, with each frame and when the socket is gone, and how a final close ends them."""

    def __init__(
        self,
        url: str,
        token: TokenSource | None,
        name: str | None,
        backoff: Backoff | None,
        timeout: float,
        pace: Pacer,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError("url must start with ws:// or wss://")
        self.url = url.rstrip("/")
        self.token = token
        self.name = name
        self.backoff = backoff or Backoff()
        self.open_timeout = timeout
        self.pacer = pace
        self.connects = 0  # connection attempts
        self.closes: list[tuple[int, str]] = []
        self._conn: ClientConnection | None = None  # set while messages may go out
        self._error: Exception | None = None
        self._task: asyncio.Task[None] | None = None

    # --- what a subclass says --------------------------------------------------------------------
    def _target(self, token: str | None) -> str:
        """The URL of the next connection attempt."""
        raise NotImplementedError

    async def _connected(self, conn: ClientConnection) -> None:
        """The socket is open (before its first frame)."""

    async def _handle(self, conn: ClientConnection, event: dict[str, Any]) -> None:
        """One JSON frame from the server."""
        raise NotImplementedError

    def _lost(self) -> None:
        """The socket is gone (a reconnect may follow)."""

    def _closed(self, code: int, reason: str) -> None:
        """The code and reason the socket ended with."""
        self.closes.append((code, reason))

    def _fail(self, error: Exception) -> None:
        """The session ended for good: a final close, or the token source raised."""
        raise NotImplementedError

    # --- the context manager ---------------------------------------------------------------------
    async def _start(self, ready: asyncio.Event, within: float | None, failure: str, name: str) -> None:
        """Start the session and wait until ``ready`` is set; raise its error, or TimeoutError."""
        self._task = asyncio.create_task(self._run(), name=name)
        waiting = asyncio.create_task(ready.wait())
        try:
            await asyncio.wait({waiting, self._task}, timeout=within, return_when="FIRST_COMPLETED")
        finally:
            waiting.cancel()
        if self._error is not None:
            raise self._error
        if not ready.is_set():
            await self.close()
            raise TimeoutError(f"{failure} within {within} s")

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def close(self) -> None:
        await self._stop()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _put(self, frame: dict[str, Any]) -> None:
        """One frame on the socket, if there is one (a frame lost here goes again after a welcome)."""
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(ConnectionClosed):
                await conn.send(json.dumps(frame, ensure_ascii=False))

    # --- the loop --------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                token = await token_of(self.token)
            except Exception as exc:  # the app's login said no, or its callable broke: not ours to retry
                self._fail(exc)
                return
            self._exp = expiry(token)
            code, reason = await self._session(token)
            self._closed(code, reason)
            if not should_reconnect(code):
                self._fail(closed_error(code, reason))
                return
            await asyncio.sleep(self.backoff.next())

    async def _session(self, token: str | None) -> tuple[int, str]:
        self.connects += 1
        try:
            conn = await connect(self._target(token), compression=None, open_timeout=self.open_timeout)
        except InvalidStatus as exc:  # refused before the upgrade: a browser would see 1006
            return ABNORMAL, f"HTTP {exc.response.status_code}"
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            return ABNORMAL, str(exc)
        self.pacer.reset()  # the server's rate starts over with each connection
        try:
            await self._connected(conn)
            async for raw in conn:
                if isinstance(raw, str):
                    await self._handle(conn, json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            self._stop_refresh()
            self._conn = None
            self._lost()
            await conn.close()
        return close_of(conn)


def close_of(conn: ClientConnection) -> tuple[int, str]:
    """The code and reason the server closed with (1006 when no close frame came)."""
    rcvd = conn.protocol.close_rcvd
    if rcvd is None:
        return ABNORMAL, ""
    return rcvd.code, rcvd.reason
