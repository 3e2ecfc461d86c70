"""WebSocket close codes a client can rely on (see DESIGN.md). Use names, never bare numbers."""

from enum import IntEnum


class CloseCode(IntEnum):
    NORMAL = 1000  # normal close: the session is over
    GOING_AWAY = 1001  # this instance is shutting down: reconnect
    NO_STATUS = 1005  # reported locally when a close frame carried no code
    ABNORMAL = 1006  # reported locally when the TCP connection dropped without a close frame
    POLICY_VIOLATION = 1008  # bad origin, rate limit, invalid room id
    MESSAGE_TOO_BIG = 1009  # a message larger than WS_MAX_SIZE
    INTERNAL_ERROR = 1011  # unexpected server error
    SERVICE_RESTART = 1012  # the gateway lost its upstream because that service restarted
    TRY_AGAIN_LATER = 1013  # no healthy upstream, overloaded, or a slow consumer cut off: resume
    INVALID_TOKEN = 4001  # identity token expired, forged, malformed, for another room, or not accepted here
    TOKEN_EXPIRED = 4002  # a member's token reached its exp without a refresh: come back with a new token
    FORBIDDEN = 4003  # wrong or missing room password
    NOT_FOUND = 4004  # no such path at the gateway
    DISCONNECTED = 4010  # the app cut this user off (POST /api/users/{user}/disconnect): do not come back
    # Codes of the ``error`` frames of the multiplexed ``/ws`` (one room or one frame refused; the
    # connection stays open): never sent as a close; final (the same frame again gets the same answer).
    ALREADY_JOINED = 4009  # a join for a room this connection is in (or joining)
    NOT_JOINED = 4011  # a leave or a send for a room this connection is not in
    TOO_MANY = 4029  # over MAX_ROOMS_PER_CONNECTION, or joins or messages faster than the connection's rate


# What a client does on each code: come back and resume, or stop. This is THE table: the Python client
# (realtime_client.closes), the browser client (gateway/static/realtime.js) and docs/asyncapi.yaml
# (x-close-codes) each carry a copy in their own language, and tests/test_close_codes.py holds every copy
# to this one.
RECONNECT = frozenset(
    {
        CloseCode.GOING_AWAY,
        CloseCode.NO_STATUS,
        CloseCode.ABNORMAL,
        CloseCode.INTERNAL_ERROR,
        CloseCode.SERVICE_RESTART,
        CloseCode.TRY_AGAIN_LATER,
        CloseCode.TOKEN_EXPIRED,
    }
)
# Every other code is final (1000 included: the server meant to end the session), and so is a code that
# is in neither table.
FINAL = frozenset(set(CloseCode) - RECONNECT)


def should_reconnect(code: int) -> bool:
    """What a client does after a close with ``code``: reconnect (and resume) or stop."""
    return code in RECONNECT
