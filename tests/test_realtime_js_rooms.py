"""realtime.js's RoomConnection (one /ws socket, many rooms) run by Node against the real stack: Node's
WebSocket is the browser's API, so the module runs as the page runs it (the browser test drives the page)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import make_stack

SCRIPT = Path(__file__).parent / "support" / "realtime_js_rooms.mjs"


def test_room_connection_joins_sends_and_is_refused_per_room() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    with make_stack("rooms=2", ROOM_PASSWORDS='{"VIP": "secret123"}') as stack:
        host = stack.gateway_url.removeprefix("ws://")
        ran = subprocess.run(
            [node, "--experimental-websocket", "--no-warnings", str(SCRIPT), host],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert result["states"][:2] == ["connecting", "live"]
    assert result["welcomes"] == {
        "js-a": {"ref": True, "name": "Node", "room": "js-a"},
        "js-b": {"ref": True, "name": "Node", "room": "js-b"},
    }
    assert result["errors"] == [{"room": "VIP", "code": 4003}]  # that join only
    assert result["messages"] == {
        "js-a": [["hello js-a", "js-a", True]],
        "js-b": [["hello js-b", "js-b", True], ["from the single socket", "js-b", False]],
    }
    assert all(isinstance(seq, int) for seq in result["acks"].values())
    assert result["rooms"] == ["js-b"]  # js-a left, VIP never joined
    assert result["single"] == ["hello js-b", "from the single socket"]  # the Room in js-b (/ws/js-b)
    assert result["singleSeq"] > result["acks"]["js-b"]
    # 100 sends made before the welcome, each stored (a seq of its own), paced: no 1008 at the default burst
    assert result["backlog"] == {"room": 100, "connection": 100}
