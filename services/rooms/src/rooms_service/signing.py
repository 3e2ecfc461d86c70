"""Signatures on the requests rooms sends to the app (hooks, webhooks): the Standard Webhooks scheme.

Every request carries ``webhook-id`` (unique per message: a retry of the same message keeps it, so the
app can drop a repeat), ``webhook-timestamp`` (Unix seconds) and, with ``HOOK_SECRET`` set,
``webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, computed by the
``standardwebhooks`` package itself, so an app verifies with the same library in any language
(``Webhook(secret).verify(body, headers)``; https://www.standardwebhooks.com).

The secret's format is the spec's: ``whsec_`` followed by the base64 of 24 to 64 random bytes (for
example ``"whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()``). A malformed or short one
stops the service at start, with a message that never contains it. Without a secret the requests are
sent unsigned (an app on a private network may accept that; anywhere else set one).
"""

import base64
import binascii
import secrets
import time
from datetime import UTC, datetime

from standardwebhooks import Webhook

PREFIX = "whsec_"
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64


def new_secret() -> str:
    """A fresh secret in the setting's format (32 random bytes)."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def new_message_id() -> str:
    """A unique ``webhook-id`` for one message (a retry reuses the one it got)."""
    return "msg_" + secrets.token_urlsafe(18)


def _key(secret: str, setting: str) -> bytes:
    if not secret.startswith(PREFIX):
        raise ValueError(f"{setting} must start with whsec_ (then base64 of 24 to 64 bytes)")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{setting} must be whsec_ followed by base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"{setting} must hold 24 to 64 bytes (base64 after whsec_)")
    return key


class Signer:
    """Headers for one request body; ``secret`` None: unsigned (id and timestamp only). A malformed
    secret raises ``ValueError`` naming ``setting``, the variable it came from."""

    def __init__(self, secret: str | None, setting: str = "HOOK_SECRET") -> None:
        self._webhook = Webhook(_key(secret, setting)) if secret else None

    @property
    def signs(self) -> bool:
        return self._webhook is not None

    def headers(
        self, body: bytes, message_id: str | None = None, timestamp: float | None = None
    ) -> dict[str, str]:
        message_id = message_id or new_message_id()
        seconds = int(time.time() if timestamp is None else timestamp)
        headers = {"webhook-id": message_id, "webhook-timestamp": str(seconds)}
        if self._webhook is not None:
            when = datetime.fromtimestamp(seconds, tz=UTC)
            headers["webhook-signature"] = self._webhook.sign(message_id, when, body.decode("utf-8"))
        return headers

    def __repr__(self) -> str:  # never the key
        return f"Signer(signs={self.signs})"
