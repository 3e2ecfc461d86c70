"""Log line formats: ``text`` (readable, the default) and ``json`` (``LOG_FORMAT=json``), one JSON object
per line for log collectors (Loki, Elasticsearch, Cloud Logging).

A JSON line has ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``message``,
``service``, ``instance`` and ``pid``; a request's log line (uvicorn's access log, a WebSocket handshake)
also ``client`` and ``path``, and an HTTP request ``method`` and ``status``; a failure ``exception``.
Redaction still applies: the handler's redacting filter rewrites the message before this formatter runs,
and the path taken from the record's arguments is redacted here again.
"""

import json
import logging
import os
import re
from datetime import UTC, datetime

from realtime.redact import redact

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# uvicorn's request lines: its access log ('%s - "%s %s HTTP/%s" %d') and WebSocket handshakes
# ('%s - "WebSocket %s" [accepted]' / 403 / a status), by their final (already redacted) text.
_HTTP_LINE = re.compile(r'^(?P<client>\S+) - "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[^"]*" (?P<status>\d{3})')
_WS_LINE = re.compile(r'^(?P<client>\S+) - "WebSocket (?P<path>\S+)"')


def request_fields(record: logging.LogRecord, message: str) -> dict[str, object]:
    """``client``, ``path`` (redacted) and for HTTP ``method``, ``status`` of a uvicorn request line."""
    args = record.args
    if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
        client, method, path, _version, status = args
        return {"client": str(client), "path": redact(str(path)), "method": str(method), "status": status}
    if isinstance(args, tuple) and len(args) >= 2 and str(record.msg).startswith('%s - "WebSocket %s"'):
        return {"client": str(args[0]), "path": redact(str(args[1]))}
    if record.name.startswith("uvicorn"):
        match = _HTTP_LINE.match(message)
        if match:
            fields: dict[str, object] = match.groupdict()
            fields["status"] = int(match["status"])
            fields["path"] = redact(match["path"])
            return fields
        match = _WS_LINE.match(message)
        if match:
            return {"client": match["client"], "path": redact(match["path"])}
    return {}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        self.service = service
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        message = redact(record.getMessage())
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
            "service": self.service,
            "instance": self.instance,
            "pid": record.process,
        }
        line.update(request_fields(record, message))
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        return json.dumps(line, ensure_ascii=False, default=str)


def make_formatter(
    log_format: str | None = None, *, service: str | None = None, instance: str | None = None
) -> logging.Formatter:
    """The formatter ``LOG_FORMAT`` names. Arguments left out come from the environment (``LOG_FORMAT``,
    ``SERVICE_NAME``, ``INSTANCE_ID``), so a process that sets up logging without its settings (a
    gateway worker) still logs in the configured format."""
    chosen = (log_format or os.environ.get("LOG_FORMAT") or "text").lower()
    if chosen == "text":
        return logging.Formatter(TEXT_FORMAT)
    if chosen != "json":
        raise ValueError(f"LOG_FORMAT must be text or json, not {chosen!r}")
    return JsonFormatter(
        service=service or os.environ.get("SERVICE_NAME") or "service",
        instance=instance or os.environ.get("INSTANCE_ID") or f"pid-{os.getpid()}",
    )
