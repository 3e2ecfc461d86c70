"""WebSocket close codes a client can rely on (see DESIGN.md). Use names, never bare numbers."""

from enum import IntEnum


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001  # this instance is shutting down: reconnect
    NO_STATUS = 1005  # reported locally when a close frame carried no code
    ABNORMAL = 1006  # reported locally when the TCP connection dropped without a close frame
    POLICY_VIOLATION = 1008  # bad origin, rate limit, invalid room id
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # the gateway lost its upstream because that service restarted
    TRY_AGAIN_LATER = 1013  # no healthy upstream, overloaded, or a slow consumer cut off: resume
    INVALID_TOKEN = 4001  # identity token expired, forged, malformed, for another room, or not accepted here
    TOKEN_EXPIRED = 4002  # a member's token reached its exp without a refresh: come back with a new token
    FORBIDDEN = 4003  # wrong or missing room password
    NOT_FOUND = 4004  # no such path at the gateway
    DISCONNECTED = 4010  # the app cut this user off (POST /api/users/{user}/disconnect): do not come back


# What a client does on each code (README, rooms section): come back and resume, or stop.
RECONNECT = frozenset(
    {
        CloseCode.GOING_AWAY,
        CloseCode.ABNORMAL,
        CloseCode.INTERNAL_ERROR,
        CloseCode.SERVICE_RESTART,
        CloseCode.TRY_AGAIN_LATER,
        CloseCode.TOKEN_EXPIRED,
    }
)
FINAL = frozenset(
    {
        CloseCode.POLICY_VIOLATION,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.INVALID_TOKEN,
        CloseCode.FORBIDDEN,
        CloseCode.NOT_FOUND,
        CloseCode.DISCONNECTED,
    }
)
