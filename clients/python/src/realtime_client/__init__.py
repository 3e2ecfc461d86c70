"""realtime_client: a small Python client for the platform (rooms and the stats pulse).

    async with Room("ws://127.0.0.1:8000", "lobby", password="...") as room:
        seq = await room.send("hello")        # the stored seq, once acknowledged
        async for message in room:            # every message once, in seq order, across reconnects
            print(message.seq, message.name or message.sender, message.text)

    async with Room(url, "lobby", token=get_token) as room:  # a JWT, or a callable asked at every connect
        ...

    async with Connection("ws://127.0.0.1:8000", token=get_token) as conn:  # one socket, many rooms
        lobby = await conn.join("lobby")      # a room with the same API as Room
        vip = await conn.join("VIP", password="...")

    async for pulse in Pulse("ws://127.0.0.1:8000"):
        print(pulse["tick"], pulse["cpu"])

After a reconnect, unacknowledged sends go again paced (``resend_rate``/``resend_burst``, below the
server's MESSAGE_RATE/MESSAGE_BURST defaults). It depends only on ``websockets``; the close-code table
(reconnect or final) is its own copy of the protocol's (docs/asyncapi.yaml, ``x-close-codes``).
"""

from realtime_client.backoff import Backoff
from realtime_client.closes import (
    FINAL,
    RECONNECT,
    Closed,
    Forbidden,
    InvalidToken,
    Refused,
    RoomClosed,
    SendRefused,
)
from realtime_client.connection import Connection, Joined
from realtime_client.events import Gap, Message, Presence, Welcome
from realtime_client.member import Member
from realtime_client.pacing import Pacer
from realtime_client.pulse import Pulse
from realtime_client.room import Room
from realtime_client.tokens import TokenSource

__all__ = [
    "FINAL",
    "RECONNECT",
    "Backoff",
    "Closed",
    "Connection",
    "Forbidden",
    "Gap",
    "InvalidToken",
    "Joined",
    "Member",
    "Message",
    "Pacer",
    "Presence",
    "Pulse",
    "Refused",
    "Room",
    "RoomClosed",
    "SendRefused",
    "TokenSource",
    "Welcome",
]
