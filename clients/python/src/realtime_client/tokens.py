"""Identity tokens on the client: where the next one comes from, when it expires, and keeping a
socket's token fresh before that."""

import asyncio
import base64
import contextlib
import inspect
import json
import time
from collections.abc import Awaitable, Callable

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

TokenSource = str | Callable[[], str | Awaitable[str]]


async def token_of(source: TokenSource | None) -> str | None:
    """A token for the next connection attempt: a callable is asked every time."""
    if source is None or isinstance(source, str):
        return source
    token = source()
    if inspect.isawaitable(token):
        token = await token
    if not isinstance(token, str):
        raise TypeError(f"the token callable returned {type(token).__name__}, not str")
    return token


def expiry(token: str | None) -> float | None:
    """A JWT's ``exp``, read without checking the token (the server checks it; this only says when)."""
    try:
        payload = token.split(".")[1]  # type: ignore[union-attr]
        exp = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("exp")
    except (AttributeError, IndexError, ValueError):
        return None
    return float(exp) if isinstance(exp, int | float) else None


class Refreshing:
    """A socket's token kept fresh: shortly before its ``exp`` (a quarter of what is left, at most 30 s)
    the token callable is asked again and the new token sent as ``{"type": "refresh", "token": T}``; the
    server answers ``refreshed`` and does not close with 4002 at the old exp. ``Room`` (its own socket)
    and ``Connection`` (all its rooms on one socket) both do it."""

    token: "TokenSource | None"
    _exp: float | None = None  # the current token's exp
    _refresher: asyncio.Task[None] | None = None  # sends a fresh token before exp
    refreshes = 0

    def _start_refresh(self, conn: ClientConnection) -> None:
        if callable(self.token) and self._exp is not None and self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh(conn), name="refresh")

    def _stop_refresh(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None

    async def _refresh(self, conn: ClientConnection) -> None:
        while self._exp is not None:
            left = self._exp - time.time()
            await asyncio.sleep(max(0.0, left - min(30.0, left / 4)))
            try:
                token = await token_of(self.token)
            except Exception:  # the app's login said no: the server closes with 4002 at exp
                return
            with contextlib.suppress(ConnectionClosed):
                await conn.send(json.dumps({"type": "refresh", "token": token}))
            self.refreshes += 1
            self._exp = expiry(token)
