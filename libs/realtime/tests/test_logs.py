import logging

import pytest
from realtime.logs import RedactingFilter, redact


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('"WebSocket /ws/VIP?pass=secret123" [accepted]', '"WebSocket /ws/VIP?pass=***" [accepted]'),
        ("/ws/a?format=json&pass=s3cr3t&x=1", "/ws/a?format=json&pass=***&x=1"),
        ("/x?PASSWORD=abc", "/x?PASSWORD=***"),
        ("/x?token=abc def", "/x?token=*** def"),
        ("/x?passage=ok&bypass=ok", "/x?passage=ok&bypass=ok"),
    ],
)
def test_secret_query_values_are_redacted(line: str, expected: str) -> None:
    assert redact(line) == expected


def test_filter_redacts_formatted_arguments() -> None:
    # uvicorn logs the path as an argument, not in the format string
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5", "/ws/VIP?pass=hunter2"),
        None,
    )
    assert RedactingFilter().filter(record)
    assert "hunter2" not in record.getMessage()
    assert "pass=***" in record.getMessage()
