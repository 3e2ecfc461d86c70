"""What the publish API refuses, checked the same way straight to a replica and through the gateway."""

import httpx
from devstack.stack import Stack

from tests.conftest import DEADLINE

WS_MAX_SIZE = 64 * 1024  # the services' default


def gateway_client(stack: Stack) -> httpx.AsyncClient:
    """An HTTP client for the gateway's plain HTTP side (no proxy or netrc from the environment)."""
    return httpx.AsyncClient(base_url=stack.http_url, timeout=DEADLINE, trust_env=False)


async def assert_refusals(http: httpx.AsyncClient, key: str, wrong_key: str) -> None:
    """Every refusal with its status (401 also with ``WWW-Authenticate: Bearer``), broken JSON included."""
    auth = {"Authorization": f"Bearer {key}"}
    cases = [
        ("/api/rooms/codes/messages", {"text": "x"}, {}, 401),
        ("/api/rooms/codes/messages", {"text": "x"}, {"Authorization": f"Bearer {wrong_key}"}, 401),
        ("/api/rooms/bad.room/messages", {"text": "x"}, auth, 400),
        ("/api/rooms/codes/messages", {"text": "x" * (WS_MAX_SIZE + 1)}, auth, 413),
        ("/api/rooms/codes/messages", {"text": 5}, auth, 422),
        ("/api/rooms/codes/messages", {"text": "x", "unknown": 1}, auth, 422),
    ]
    for path, body, headers, status in cases:
        answer = await http.post(path, json=body, headers=headers)
        assert answer.status_code == status, (path, body, answer.status_code, answer.text)
        if status == 401:
            assert answer.headers["www-authenticate"] == "Bearer"
    broken = await http.post("/api/rooms/codes/messages", content=b"{not json", headers=auth)
    assert broken.status_code == 422
