"""Logging set-up: one root handler, the line format (``realtime.logformat``: text or JSON) and the
redacting filter (``realtime.redact``), so no secret from a query string reaches a log line.

The three modules import in one direction (redact <- logformat <- logs): no circle.
"""

import logging

from realtime.logformat import make_formatter
from realtime.redact import SECRET_PARAMS, RedactingFilter, is_secret, redact

__all__ = ["SECRET_PARAMS", "RedactingFilter", "is_secret", "redact", "setup_logging"]


def setup_logging(level: str = "info", log_format: str | None = None, **names: str) -> None:
    """One root handler with the redaction filter; uvicorn's loggers propagate to it."""
    handler = logging.StreamHandler()
    handler.setFormatter(make_formatter(log_format, **names))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
