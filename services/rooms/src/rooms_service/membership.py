"""A membership: one member of one room. This, not a socket, is what the rooms engine knows.

A connection carries one membership (``/ws/{room_id}``) or several (a multiplexed socket): each has its
own id, wire format, identity and place in its room's stream (``seq``), and all of a connection's
memberships write through that connection's ``FrameWriter``. Every frame reaches a member through its
room's hub (``send``), so the hub's slow-consumer rule and delivery counts apply to all of them: the
live stream, the catch-up, the welcome and the acks.
"""

from dataclasses import dataclass

from realtime.hub import Hub
from realtime.transport import FrameWriter


class NotJoined(RuntimeError):
    """A frame for a membership that has no room hub yet (it was never admitted)."""


@dataclass(eq=False, slots=True)
class Membership:
    id: str
    room_id: str  # validated (realtime.bus.is_safe_token) before a membership is made
    writer: FrameWriter  # its connection's: shared by every membership on that connection
    json: bool  # ?format=json: envelopes, presence events, welcome and acks; else plain text messages
    user: str | None = None  # its identity token's ``sub``
    name: str | None = None  # the token's name, or the display name it chose (``?name=``)
    seq: int = 0  # before it is live: the highest message seq it has (or does not need)
    sent: int = 0  # messages it sent, for the ids of those sent without one
    hub: Hub | None = None  # its room's hub for its wire format, from the moment it is admitted
    ref: str | int | None = None  # multiplexed (``/ws``): the join frame's ``ref``, echoed in the welcome
    multiplexed: bool = False  # on ``/ws``: its acks name the room (its other frames already do)

    def send(self, frame: bytes, *, force: bool = False) -> bool:
        """One encoded frame to this member through its room's hub; False if its connection is closing.
        ``force`` skips the slow-consumer check (a catch-up that waits for the reader itself)."""
        hub = self.hub
        if hub is None:
            raise NotJoined(f"membership {self.id} has not joined room {self.room_id}")
        return hub.send(self.writer, frame, force=force)


@dataclass(frozen=True, slots=True)
class Resume:
    """What a JSON client asked for at connect: ``since``/``epoch`` to resume, ``history`` to catch up."""

    since: int | None = None
    epoch: str | None = None
    history: int = 0
