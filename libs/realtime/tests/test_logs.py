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
        ("/ws/a?%70ass=hunter2", "/ws/a?%70ass=***"),
        ("/ws/a?Pa%73S=hunter2&x=1", "/ws/a?Pa%73S=***&x=1"),
        ("/ws/a?pass+=hunter2", "/ws/a?pass+=***"),
        ("/ws/a?pass=one&pass=two&pass=three", "/ws/a?pass=***&pass=***&pass=***"),
        ("/ws/a?pass=hun;ter2&x=1", "/ws/a?pass=***&x=1"),
        ("/ws/a?x=1;pass=hunter2", "/ws/a?x=1;pass=***"),
        ("/ws/a?pass=hun%74er2", "/ws/a?pass=***"),
        (
            "/ws/a?api_key=k&access_token=t&client_secret=s",
            "/ws/a?api_key=***&access_token=***&client_secret=***",
        ),
        ("'/ws/a?pass=hunter2' x", "'/ws/a?pass=***' x"),
    ],
)
def test_secret_query_values_are_redacted(line: str, expected: str) -> None:
    assert redact(line) == expected


@pytest.mark.parametrize(
    "query",
    ["pass=a", "%70ass=a", "PASS=a", "pa%73s=a", "x=1&pass=a&pass=b", "Password=a", "to%6Ben=a", "pass+=a"],
)
def test_every_key_the_service_reads_as_a_secret_is_redacted(query: str) -> None:
    from urllib.parse import parse_qsl

    secrets = [
        v
        for k, v in parse_qsl(query, keep_blank_values=True)
        if k.strip().lower() in ("pass", "password", "token")
    ]
    assert secrets, "the case must carry a secret as the service parses it"
    redacted = redact(f"/ws/a?{query}")
    assert [v for k, v in parse_qsl(redacted.split("?", 1)[1]) if v != "1"] == ["***"] * len(secrets)


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


def test_the_logging_modules_import_in_one_direction() -> None:
    """redact <- logformat <- logs: neither of the first two imports a module that imports it."""
    import ast
    from pathlib import Path

    import realtime

    package = Path(realtime.__file__).parent

    def imports(module: str) -> set[str]:
        tree = ast.parse((package / f"{module}.py").read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("realtime."):
                found.add(node.module.removeprefix("realtime."))
        return found

    assert imports("redact") == set()
    assert imports("logformat") == {"redact"}
    assert "logs" not in imports("logformat") | imports("redact")
