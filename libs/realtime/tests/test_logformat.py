"""LOG_FORMAT=json: one JSON object per line, request fields, redaction still applied."""

import json
import logging
import sys

import pytest
from realtime.logformat import JsonFormatter, make_formatter
from realtime.logs import RedactingFilter


def formatted(record: logging.LogRecord) -> dict:
    RedactingFilter().filter(record)
    return json.loads(JsonFormatter("rooms", "rooms-1").format(record))


def record(name: str, msg: str, args: tuple) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)


def test_access_line_has_client_path_method_status_and_no_secret() -> None:
    line = formatted(
        record(
            "uvicorn.access",
            '%s - "%s %s HTTP/%s" %d',
            ("10.0.0.7:5000", "GET", "/ws/VIP?pass=hunter2", "1.1", 200),
        )
    )
    assert line["client"] == "10.0.0.7:5000"
    assert line["path"] == "/ws/VIP?pass=***"
    assert (line["method"], line["status"]) == ("GET", 200)
    assert {"time", "level", "logger", "message", "service", "instance"} <= set(line)
    assert (line["service"], line["instance"], line["level"]) == ("rooms", "rooms-1", "info")
    assert "hunter2" not in json.dumps(line)


def test_websocket_handshake_line_has_client_and_path() -> None:
    line = formatted(record("uvicorn.error", '%s - "WebSocket %s" [accepted]', ("unix:0", "/ws/a?token=abc")))
    assert (line["client"], line["path"]) == ("unix:0", "/ws/a?token=***")
    assert "abc" not in json.dumps(line)


def test_a_plain_line_has_no_request_fields_and_exceptions_are_kept() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        rec = logging.LogRecord("svc", logging.ERROR, __file__, 1, "failed %d", (3,), sys.exc_info())
    line = formatted(rec)
    assert line["message"] == "failed 3" and "client" not in line
    assert "RuntimeError: boom" in line["exception"]


def test_the_format_comes_from_the_argument_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_FORMAT", "json")
    assert isinstance(make_formatter(), JsonFormatter)
    assert not isinstance(make_formatter("text"), JsonFormatter)
    with pytest.raises(ValueError):
        make_formatter("xml")
