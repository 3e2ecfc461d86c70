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

It depends only on ``websockets``; the close-code table (reconnect or final) is its own copy of the
protocol's (docs/asyncapi.yaml, ``x-close-codes``).
"""

from realtime_client.backoff import Backoff
from realtime_client.closes import FINAL, RECONNECT, Closed, Forbidden, InvalidToken, Refused, RoomClosed
from realtime_client.connection import Connection, Joined, SendRefused
from realtime_client.pulse import Pulse
from realtime_client.room import Gap, Member, Message, Presence, Room, TokenSource, Welcome

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
    "Presence",
    "Pulse",
    "Refused",
    "Room",
    "RoomClosed",
    "SendRefused",
    "TokenSource",
    "Welcome",
]
