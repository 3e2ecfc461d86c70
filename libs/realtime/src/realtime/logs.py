"""Logging set-up with redaction: no secret from a query string reaches a log line."""

import logging
import re

# Query parameters whose values never reach a log line (uvicorn logs the path with its query string).
SECRET_PARAMS = ("pass", "password", "token", "secret", "key")
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:" + "|".join(SECRET_PARAMS) + r")=)[^&\s\"';]*")


def redact(text: str) -> str:
    """Replace the value of every secret query parameter in ``text`` with ``***``."""
    return _SECRET_QUERY.sub(r"\1***", text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with secrets redacted, before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def setup_logging(level: str = "info", log_format: str | None = None, **names: str) -> None:
    """One root handler with the redaction filter; uvicorn's loggers propagate to it."""
    handler = logging.StreamHandler()
    from realtime.logformat import make_formatter  # text or LOG_FORMAT=json (it imports redact from here)

    handler.setFormatter(make_formatter(log_format, **names))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
