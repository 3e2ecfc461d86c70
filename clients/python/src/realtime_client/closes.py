"""The close-code table a client follows and the errors a final close raises (the reconnect backoff is
``realtime_client.backoff``)."""

# Trying again can help (a deploy, a crash, a drop, overload, a slow-consumer cut-off, NATS away).
RECONNECT = frozenset({1001, 1005, 1006, 1011, 1012, 1013, 4002})  # 4002: token expired (a new one)
# Trying again cannot help: the README's "final" codes. Any code in neither set (1000 from the server,
# an unknown one) is final too: the server meant to end the session.
# 4010: the app disconnected this user; 4009/4011/4029: /ws error frames (the same frame gets the same answer)
FINAL = frozenset({1008, 1009, 4001, 4003, 4004, 4009, 4010, 4011, 4029})
INVALID_TOKEN = 4001
FORBIDDEN = 4003
ABNORMAL = 1006  # no close frame: the connection dropped


class Closed(Exception):
    """The server ended the session with a final close code; the client will not come back."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"closed with {code}" + (f" {reason!r}" if reason else ""))
        self.code = code
        self.reason = reason


class Refused(Closed):
    """One send was not stored: the app's publish hook denied it (its code and reason), or could not
    decide in time (1013: send it again with the same id), or ``/ws`` refused the frame (1008 malformed,
    4011 not joined, 4029 over the rate). Only that send ends: the session goes on."""

    def __init__(self, code: int, reason: str = "") -> None:
        Exception.__init__(self, f"refused with {code}" + (f" {reason!r}" if reason else ""))
        self.code = code
        self.reason = reason


SendRefused = Refused
"""The name ``Connection``'s documentation gave ``Refused`` (docs/howto/many-rooms.md): the same class."""


class RoomClosed(Closed):
    """A room's session ended for good (1008 invalid room id or rate limit, 1009, 4004, ...)."""


class Forbidden(RoomClosed):
    """4003: wrong or missing room password (or too many recent failures). Never retried."""


class InvalidToken(RoomClosed):
    """4001: the identity token is expired, forged, malformed or for another room. Get a new token."""


def closed_error(code: int, reason: str, room: bool = True) -> Closed:
    if code == FORBIDDEN:
        return Forbidden(code, reason)
    if code == INVALID_TOKEN:
        return InvalidToken(code, reason)
    return RoomClosed(code, reason) if room else Closed(code, reason)


def should_reconnect(code: int) -> bool:
    return code in RECONNECT
