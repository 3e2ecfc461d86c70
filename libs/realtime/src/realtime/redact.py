"""Redaction: no secret from a query string reaches a log line.

A query is redacted the way the services read it (``urllib.parse.parse_qsl``, as Starlette does): each
``key=value`` pair's key is percent- and plus-decoded and compared without case, so ``%70ass``, ``PASS``,
``pa%73s+`` and every repeat of a key are caught, and the value is replaced whole, up to the next ``&``.
"""

import logging
import re
from urllib.parse import unquote_plus

# Query parameters whose values never reach a log line (uvicorn logs the path with its query string).
SECRET_PARAMS = frozenset(
    ("pass", "passwd", "password", "pwd", "token", "secret", "key", "auth", "authorization", "signature")
)
SECRET_SUFFIXES = ("token", "secret", "password", "key")  # access_token, client_secret, api_key, ...
# A pair after "?", "&" or ";": the key (no "=", "&" or space) and the value up to "&" or a space.
_PAIR = re.compile(r"(?<=[?&;])([^=&;\s\"'?]+)=([^&\s]*)")


def is_secret(raw_key: str) -> bool:
    """Whether a query key, as sent (percent-encoded, any case), names a secret once decoded."""
    key = unquote_plus(raw_key).strip().lower()
    return key in SECRET_PARAMS or key.endswith(SECRET_SUFFIXES)


def _redact_pair(match: re.Match[str]) -> str:
    key, value = match.group(1), match.group(2)
    if not is_secret(key):
        return f"{key}={_PAIR.sub(_redact_pair, value)}"  # "x=1;pass=..." hides a secret-looking pair
    quote = value[-1] if value[-1:] in ('"', "'") else ""  # the log line's own closing quote stays
    return f"{key}=***{quote}"


def redact(text: str) -> str:
    """Replace the value of every secret query parameter in ``text`` with ``***``."""
    if "=" not in text:
        return text
    return _PAIR.sub(_redact_pair, text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with secrets redacted, before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
