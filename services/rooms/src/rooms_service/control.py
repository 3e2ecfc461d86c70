"""The server API across replicas: one question to every live replica over the bus, the answers gathered.

No replica is special: the one that got the HTTP request publishes ``{"origin", "id", "reply", "op",
"args"}`` on ``<prefix>.control.ask``; every replica (itself included, the same way) answers on the
asker's ``<prefix>.control.reply.<origin>`` with ``{"origin", "id", "result"}``. The asker waits until
every replica it knows to be alive (the census's heartbeats, and itself) has answered, at most
``timeout`` seconds; ``Gathered.complete`` says whether all did. Questions and answers are core NATS:
ephemeral, like presence. Nothing here logs a user or an argument.
"""

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from realtime.bus import Bus, Subscription, safe_token

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Gathered:
    results: dict[str, Any]  # replica -> its answer
    complete: bool  # every live replica answered in time


class Control:
    def __init__(
        self,
        bus: Bus,
        prefix: str,
        origin: str,
        *,
        peers: Callable[[], set[str]],
        handlers: dict[str, Handler],
        timeout: float = 1.0,
    ) -> None:
        self._bus = bus
        self.origin = origin
        self.ask_subject = f"{prefix}.control.ask"
        self.reply_subject = f"{prefix}.control.reply.{safe_token(origin)}"
        self._peers = peers
        self._handlers = handlers
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[dict[str, Any], set[str], asyncio.Event]] = {}
        self.live = asyncio.Event()

    async def ask(self, op: str, **args: Any) -> Gathered:
        """Every live replica's answer to ``op`` (``BusUnavailable`` or the bus's error if it cannot ask)."""
        expected = self._peers() | {self.origin}
        query_id = next(self._ids)
        results: dict[str, Any] = {}
        done = asyncio.Event()
        self._pending[query_id] = (results, expected, done)
        event = {"origin": self.origin, "id": query_id, "reply": self.reply_subject, "op": op, "args": args}
        try:
            await self._bus.publish(self.ask_subject, json.dumps(event).encode())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self._timeout)
        finally:
            self._pending.pop(query_id, None)
        if not done.is_set():
            logger.info("server API %s: unanswered by %s", op, sorted(expected))
        return Gathered(dict(results), done.is_set())

    async def run(self) -> None:
        """Forever: answer the questions of every replica, collect the answers to this one's."""
        async with (
            self._bus.subscribe(self.ask_subject) as questions,
            self._bus.subscribe(self.reply_subject) as answers,
        ):
            self.live.set()
            async with asyncio.TaskGroup() as jobs:
                jobs.create_task(self._answer(questions), name="server API questions")
                jobs.create_task(self._collect(answers), name="server API answers")

    async def _answer(self, questions: Subscription) -> None:
        async for message in questions:
            try:
                event = json.loads(message.payload)
                handler = self._handlers[str(event["op"])]
                args, reply, query_id = dict(event["args"]), str(event["reply"]), int(event["id"])
            except (ValueError, KeyError, TypeError):
                logger.warning("ignored a malformed server API question")
                continue
            try:
                result = await handler(args)
            except Exception as exc:
                logger.warning("server API %s failed here (%s)", event["op"], type(exc).__name__)
                continue
            answer = {"origin": self.origin, "id": query_id, "result": result}
            with contextlib.suppress(Exception):
                await self._bus.publish(reply, json.dumps(answer).encode())

    async def _collect(self, answers: Subscription) -> None:
        async for message in answers:
            try:
                event = json.loads(message.payload)
                origin, query_id = str(event["origin"]), int(event["id"])
            except (ValueError, KeyError, TypeError):
                continue
            pending = self._pending.get(query_id)
            if pending is None:
                continue
            results, expected, done = pending
            results[origin] = event.get("result")
            expected.discard(origin)
            if not expected:
                done.set()
