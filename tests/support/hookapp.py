"""The app's backend in the hook tests: a small FastAPI app on its own loopback port.

It runs under uvicorn in a thread of the test process (so the test reads what it was asked), verifies
every request's signature with the ``standardwebhooks`` library, as the docs tell an app to, and answers
with the rule the test gave for that hook: a dict (the JSON answer), an int (a bare status), or
``Slow(seconds, then)``. A request whose signature does not verify gets 401 and is counted.
"""

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from realtime.testing import free_port
from standardwebhooks import Webhook, WebhookVerificationError

ALLOW = {"result": "allow"}


@dataclass
class Slow:
    seconds: float
    then: Any = field(default_factory=lambda: dict(ALLOW))


Rule = Callable[[dict[str, Any]], Any]


class Backend:
    def __init__(self, secret: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.rules: dict[str, Rule] = {}
        self.calls: list[tuple[str, dict[str, Any], dict[str, str]]] = []  # (hook, body, headers)
        self.bad_signatures = 0
        self._webhook = Webhook(secret)
        self._server = uvicorn.Server(
            uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        )
        self._thread = threading.Thread(target=self._server.run, name="hook backend", daemon=True)

    def hook_url(self, hook: str) -> str:
        return f"{self.url}/hooks/{hook}"

    def asked(self, hook: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            b for h, b, _ in list(self.calls) if h == hook and all(b.get(k) == v for k, v in fields.items())
        ]

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hooks/{hook}")
        async def answer(hook: str, request: Request) -> Response:
            body = await request.body()
            headers = dict(request.headers)
            try:
                data = self._webhook.verify(body, headers)
            except WebhookVerificationError:
                self.bad_signatures += 1
                return Response(status_code=401)
            self.calls.append((hook, data, headers))
            rule = self.rules.get(hook)
            reply = rule(data) if rule is not None else ALLOW
            if isinstance(reply, Slow):
                await asyncio.sleep(reply.seconds)
                reply = reply.then
            if isinstance(reply, int):
                return Response(status_code=reply)
            if isinstance(reply, bytes):
                return Response(reply, media_type="application/json")
            return JSONResponse(reply)

        return app

    def __enter__(self) -> "Backend":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the hook backend did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
