"""One close-code table in code (``realtime.close_codes``): the Python client, the browser client
(``/static/realtime.js``) and the protocol document (``docs/asyncapi.yaml``) each carry their own copy in
their own language. Each copy is parsed here and compared with the table, code by code: the same codes,
the same names where a copy names them, and the same reconnect/final class."""

import re
from pathlib import Path

import yaml
from realtime.close_codes import FINAL, RECONNECT, CloseCode, should_reconnect
from realtime_client import closes

ROOT = Path(__file__).parent.parent
JS = (ROOT / "gateway/src/gateway/static/realtime.js").read_text()
ASYNCAPI = yaml.safe_load((ROOT / "docs/asyncapi.yaml").read_text())
# Codes no table lists, to check that "neither reconnect nor listed" means final everywhere.
UNKNOWN = [1002, 1003, 1007, 1010, 3000, 4000, 4999]


def test_the_table_classifies_every_code_once() -> None:
    assert set(CloseCode) == RECONNECT | FINAL and not RECONNECT & FINAL
    assert CloseCode.NORMAL in FINAL and CloseCode.FORBIDDEN in FINAL
    assert CloseCode.TRY_AGAIN_LATER in RECONNECT and CloseCode.ABNORMAL in RECONNECT
    assert not any(should_reconnect(code) for code in UNKNOWN)


def test_the_python_client_follows_the_table() -> None:
    for code in [*CloseCode, *UNKNOWN]:
        assert closes.should_reconnect(code) == should_reconnect(code), code
    assert set(closes.RECONNECT) == {int(c) for c in RECONNECT}
    # The client's FINAL holds the codes that raise an error; 1000 ends a session without one.
    assert set(closes.FINAL) == {int(c) for c in FINAL - {CloseCode.NORMAL}}
    assert closes.FORBIDDEN == CloseCode.FORBIDDEN and closes.INVALID_TOKEN == CloseCode.INVALID_TOKEN
    assert closes.ABNORMAL == CloseCode.ABNORMAL


def js_reconnect_codes() -> set[int]:
    block = re.search(r"export const RECONNECT_CODES = new Set\(\[(.*?)\]\);", JS, re.S)
    assert block is not None, "RECONNECT_CODES not found in realtime.js"
    return {int(c) for c in re.findall(r"^\s*(\d{4}),", block.group(1), re.M)}


def js_close_texts() -> set[int]:
    block = re.search(r"export const CLOSE_TEXT = \{(.*?)\};", JS, re.S)
    assert block is not None, "CLOSE_TEXT not found in realtime.js"
    return {int(c) for c in re.findall(r"^\s*(\d{4}):", block.group(1), re.M)}


def test_realtime_js_follows_the_table() -> None:
    # The browser reconnects exactly on the table's reconnect codes; every other code is final there.
    assert js_reconnect_codes() == {int(c) for c in RECONNECT}
    assert "RECONNECT_CODES.has(event.code)" in JS
    # Every code the page names in words is a code of the table.
    assert js_close_texts() <= {int(c) for c in CloseCode}
    assert {int(c) for c in FINAL} - {1000} <= js_close_texts()


def test_the_asyncapi_document_follows_the_table() -> None:
    table = {entry["code"]: entry for entry in ASYNCAPI["x-close-codes"]}
    assert set(table) == {int(c) for c in CloseCode}
    for code, entry in table.items():
        assert entry["name"] == CloseCode(code).name, code
        expected = "reconnect" if code in RECONNECT else "final"
        assert entry["client"] == expected, (code, entry["client"])


def test_a_copy_that_drifts_is_caught() -> None:
    """The parsers above read what they claim to: a code moved from one class to the other shows up."""
    drifted = JS.replace("  1012, // the gateway lost its upstream", "  // 1012 moved away")
    block = re.search(r"export const RECONNECT_CODES = new Set\(\[(.*?)\]\);", drifted, re.S)
    assert block is not None
    assert {int(c) for c in re.findall(r"^\s*(\d{4}),", block.group(1), re.M)} != {int(c) for c in RECONNECT}


def test_realtime_js_backs_off_as_the_one_backoff() -> None:
    """The browser client cannot import the Python Backoff; its copy of the numbers is held to it."""
    from realtime.backoff import Backoff

    one = Backoff()
    first = re.search(r"export const BACKOFF_MIN_MS = ([\d_]+);", JS)
    limit = re.search(r"export const BACKOFF_MAX_MS = ([\d_]+);", JS)
    assert first is not None and limit is not None
    assert int(first.group(1).replace("_", "")) == one.first * 1000
    assert int(limit.group(1).replace("_", "")) == one.limit * 1000
    assert "2 ** attempt" in JS and f"({1 - one.jitter} + Math.random() / 2)" in JS  # doubling, +-25 %
