"""An app's webhook receiver for the tests: a small FastAPI app on its own loopback port.

It verifies every request's signature with the ``standardwebhooks`` library (a bad one: 401, counted),
keeps what it got by ``webhook-id`` (a repeat is answered 2xx and dropped: the dedup the docs tell apps
to do), and can misbehave on demand: answer 500 to every Nth call, or be stopped and started again.
"""

import asyncio
import contextlib
import json
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from standardwebhooks import Webhook


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    def __init__(self, secret: str, *, fail_every: int = 0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.fail_every = fail_every  # 0: never; 3: a 500 to every third call
        self.calls = 0
        self.bad_signatures = 0
        self.repeats = 0
        self.batches: dict[str, list[dict[str, Any]]] = {}  # webhook-id -> its events, first copy
        self.events: list[dict[str, Any]] = []  # after dedup by webhook-id, in arrival order
        self._verifier = Webhook(secret)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = FastAPI()
        self.app.post("/hook")(self._hook)

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        self.calls += 1
        try:
            self._verifier.verify(body, dict(request.headers))
        except Exception:
            self.bad_signatures += 1
            return Response(status_code=401)
        if self.fail_every and self.calls % self.fail_every == 0:
            return Response(status_code=500)
        webhook_id = request.headers["webhook-id"]
        if webhook_id in self.batches:
            self.repeats += 1
            return Response(status_code=204)
        events = json.loads(body)["events"]
        self.batches[webhook_id] = events
        self.events += events
        return Response(status_code=204)

    async def start(self) -> None:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                await self._task  # raises why it could not start
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)
        self._server = self._task = None

    async def __aenter__(self) -> "Receiver":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
