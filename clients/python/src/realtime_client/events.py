"""What a room says, as the client hands it on: messages, presence events, gaps and welcomes."""

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar


@dataclass(frozen=True)
class Message:
    """One stored message, as every member sees it."""

    seq: int
    text: str
    sender: str
    ts: float
    id: str | None  # the sender's message id, when it gave one
    room: str
    data: dict[str, Any] = field(repr=False)  # the whole envelope, as received (origin, ...)
    user: str | None = None  # the sender's user id (its identity token's ``sub``); None without a token
    name: str | None = None  # the sender's name (its token's, its display name, the publish API's)


@dataclass(frozen=True)
class Presence:
    """``join``, ``leave`` (``member`` set) or ``members``; ``count`` is the room's total. A room above
    the server's PRESENCE_EVENTS_MAX_MEMBERS sends no join or leave: its ``members`` events list who
    ``joined`` and ``left`` since the last one ({"member", "user", "name"} each; None when the server
    listed nobody: too many changed, or only the count moved)."""

    type: str
    count: int
    member: str | None
    room: str
    data: dict[str, Any] = field(repr=False)
    user: str | None = None  # the member's user id (join, leave), when it has a token
    name: str | None = None  # the member's name (join, leave), when it has one
    joined: tuple[dict[str, Any], ...] | None = None  # members: who joined since the last one
    left: tuple[dict[str, Any], ...] | None = None  # members: who left since the last one


@dataclass(frozen=True)
class Gap:
    """A resume could not be complete: messages after ``since`` may be missing (the history no longer
    reaches back, or it was recreated: then ``epoch`` is new and seqs start again)."""

    since: int | None
    seq: int  # the room's newest stored seq when the client came back
    epoch: str


@dataclass(frozen=True)
class Welcome:
    """What the room said at a (re)connect: this connection's member id, the total, the newest seq."""

    you: str
    count: int
    seq: int
    epoch: str
    recovered: bool | None
    data: dict[str, Any] = field(repr=False)
    user: str | None = None  # who the room took this client for (its token's ``sub``)
    name: str | None = None  # the name the room shows for this client (its token's, or ``name=``)


Event = Message | Presence | Gap
T = TypeVar("T")


def _of(kind: type[T], event: dict[str, Any], **given: Any) -> T:
    """One of the classes above from the server's JSON: each field from the key of its name (a field
    with a default may be absent), ``data`` the whole event."""
    values: dict[str, Any] = {}
    for f in fields(kind):  # type: ignore[arg-type]
        if f.name == "data":
            values["data"] = event
        elif f.name not in given:
            values[f.name] = event[f.name] if f.default is MISSING else event.get(f.name)
    return kind(**values, **given)


def message_of(event: dict[str, Any]) -> Message:
    return _of(Message, event, id=event.get("id"))


def presence_of(event: dict[str, Any]) -> Presence:
    lists = {k: tuple(event[k]) if isinstance(event.get(k), list) else None for k in ("joined", "left")}
    return _of(Presence, event, member=event.get("member"), **lists)


def welcome_of(event: dict[str, Any]) -> Welcome:
    return _of(Welcome, event, recovered=event.get("recovered"))
