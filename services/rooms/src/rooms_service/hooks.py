"""The app decides: the join hook and the publish hook (Centrifugo's connect/subscribe and publish proxies).

With ``JOIN_HOOK_URL`` set, every join (``/ws/{room_id}``, and each join of a multiplexed ``/ws``) is
POSTed to the app after the room's password or token check::

    {"room": "lobby", "user": "ana" | null, "name": "Ana" | null, "address": "203.0.113.7",
     "headers": {"cookie": ..., "authorization": ..., "origin": ..., "user-agent": ...}}

(only those four headers, when present). The app answers 200 with ``{"result": "allow"}`` (optionally
``"user"`` and ``"name"``, which then stand for the member as a token's would) or ``{"result": "deny",
"code": 4000-4999, "reason": "..."}``. With ``PUBLISH_HOOK_URL`` set, every message is POSTed before it is
stored, ``{"room", "user", "name", "text", "id"}``, answered ``allow``, ``allow`` with ``"text"`` (stored
instead: moderation) or ``deny`` as above.

Anything else (no answer within ``HOOK_TIMEOUT``, a status other than 200, a body that is not one of
those answers) is a failure: ``Decision.failed``, code 1013, unless ``JOIN_HOOK_FAIL_OPEN`` lets a join
through. One pooled HTTP client per process, at most ``HOOK_CONCURRENCY`` calls at once per hook; a
call waiting for a slot waits inside its own timeout, so a slow app delays only the members waiting on
it (the client: hooks_http.py, a keep-alive pool per hook). Requests are signed (signing.py). Nothing
here logs or counts a URL, a room, a user, a header or a text: the metrics are labelled by hook and
outcome only, and a failure's log line names its kind.
"""

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from realtime import metrics
from realtime.close_codes import CloseCode
from realtime.lograte import worth_logging

from rooms_service.hooks_http import HttpError, HttpPool
from rooms_service.settings import RoomsSettings
from rooms_service.signing import Signer
from rooms_service.tokens import MAX_USER_LENGTH, display_name

logger = logging.getLogger(__name__)

FORWARDED_HEADERS = ("cookie", "authorization", "origin", "user-agent")
MAX_REASON_BYTES = 123  # what a close frame can carry (RFC 6455 5.5: 125 bytes, 2 of them the code)
MAX_ANSWER_BYTES = 256 * 1024 + 4096  # an answer's body beyond this is unreadable (a text is at most 64 KiB)
DENIED = "denied"


@dataclass(frozen=True, slots=True)
class Decision:
    """What a hook said. ``allowed``; else ``code``/``reason`` for the member (4000-4999 from the app,
    1013 when the hook failed). ``user``/``name``: the app's identity for a join (None: keep the
    member's); ``text``: a publish's replacement (None: store it as sent)."""

    allowed: bool
    code: int = 0
    reason: str = ""
    user: str | None = None
    name: str | None = None
    text: str | None = None
    failed: bool = False


ALLOW = Decision(True)
FAILED = Decision(False, int(CloseCode.TRY_AGAIN_LATER), "try again later", failed=True)


class HookFailed(Exception):
    """No usable answer: its ``outcome`` (timeout or error) and a kind that is safe to log."""

    def __init__(self, outcome: str, kind: str) -> None:
        super().__init__(kind)
        self.outcome = outcome


class _Hook:
    """One hook's URL, slots and metrics."""

    def __init__(self, name: str, url: str, concurrency: int, settings: RoomsSettings) -> None:
        self.name = name
        self.pool = HttpPool(url, concurrency, MAX_ANSWER_BYTES)  # at most one connection per slot
        self.slots = asyncio.Semaphore(concurrency)
        on, service = settings.metrics, settings.service_name
        self.seconds = metrics.child(metrics.HOOK_SECONDS, on, service=service, hook=name)
        self.outcomes = {
            outcome: metrics.child(metrics.HOOK_CALLS, on, service=service, hook=name, outcome=outcome)
            for outcome in metrics.HOOK_OUTCOMES
        }
        self.failures = 0


class Hooks:
    """The app's hooks of one process. ``await start()`` in the lifespan (the pooled client), then
    ``join(...)`` and ``publish(...)`` from any route, then ``await close()``."""

    def __init__(self, settings: RoomsSettings) -> None:
        secret = settings.hook_secret.get_secret_value() if settings.hook_secret else None
        self._signer = Signer(secret)  # a malformed secret fails here, at start
        self._timeout = settings.hook_timeout
        self._fail_open = settings.join_hook_fail_open
        self._max_text = settings.ws_max_size
        self._join = (
            _Hook("join", settings.join_hook_url, settings.hook_concurrency, settings)
            if settings.join_hook_url
            else None
        )
        self._publish = (
            _Hook("publish", settings.publish_hook_url, settings.hook_concurrency, settings)
            if settings.publish_hook_url
            else None
        )
        self.publish_api = settings.publish_hook_api

    @property
    def joins(self) -> bool:
        return self._join is not None

    @property
    def publishes(self) -> bool:
        return self._publish is not None

    async def start(self) -> None:
        """Nothing to open ahead: each hook's pool connects on its first call."""

    async def close(self) -> None:
        for hook in (self._join, self._publish):
            if hook is not None:
                await hook.pool.close()

    # --- the two questions --------------------------------------------------------------------
    async def join(
        self, room: str, user: str | None, name: str | None, address: str, headers: Mapping[str, str]
    ) -> Decision:
        """May this member join ``room``? ``ALLOW`` at once when there is no join hook."""
        hook = self._join
        if hook is None:
            return ALLOW
        forwarded = {h: headers[h] for h in FORWARDED_HEADERS if h in headers}
        body = {"room": room, "user": user, "name": name, "address": address, "headers": forwarded}
        try:
            answer = await self._call(hook, body)
            decision = _join_decision(answer)
        except HookFailed as exc:
            self._failed(hook, exc)
            return ALLOW if self._fail_open else FAILED
        hook.outcomes["allow" if decision.allowed else "deny"].inc()
        return decision

    async def publish(
        self, room: str, user: str | None, name: str | None, text: str, msg_id: str | None
    ) -> Decision:
        """May this message be stored (and as what)? ``ALLOW`` at once when there is no publish hook."""
        hook = self._publish
        if hook is None:
            return ALLOW
        body = {"room": room, "user": user, "name": name, "text": text, "id": msg_id}
        try:
            answer = await self._call(hook, body)
            decision = _publish_decision(answer, self._max_text)
        except HookFailed as exc:
            self._failed(hook, exc)
            return FAILED
        outcome = "deny" if not decision.allowed else "replace" if decision.text is not None else "allow"
        hook.outcomes[outcome].inc()
        return decision

    # --- one call -----------------------------------------------------------------------------
    async def _call(self, hook: _Hook, body: dict[str, Any]) -> Any:
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                async with hook.slots:
                    headers = self._signer.headers(payload)
                    headers["content-type"] = "application/json"
                    status, data = await hook.pool.post(payload, headers)
        except TimeoutError:
            raise HookFailed("timeout", "no answer in time") from None
        except HttpError as exc:
            raise HookFailed("error", str(exc)) from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise HookFailed("error", type(exc).__name__) from None
        finally:
            hook.seconds.observe(time.perf_counter() - started)
        if status != 200:
            raise HookFailed("error", f"status {status}")
        try:
            return json.loads(data)
        except ValueError:
            raise HookFailed("error", "answer not JSON") from None

    def _failed(self, hook: _Hook, exc: HookFailed) -> None:
        hook.outcomes[exc.outcome].inc()
        hook.failures += 1
        if worth_logging(hook.failures):
            logger.warning(
                "%s hook failed (%s: %s; %d so far)%s",
                hook.name,
                exc.outcome,
                exc,
                hook.failures,
                ", admitting (JOIN_HOOK_FAIL_OPEN)" if hook.name == "join" and self._fail_open else "",
            )


def _denial(answer: dict[str, Any]) -> Decision:
    code = answer.get("code")
    if type(code) is not int or not 4000 <= code <= 4999:
        raise HookFailed("error", "deny without a code 4000-4999")
    reason = answer.get("reason", DENIED)
    if not isinstance(reason, str):
        raise HookFailed("error", "reason not a string")
    return Decision(False, code, short_reason(reason))


def _join_decision(answer: Any) -> Decision:
    if not isinstance(answer, dict):
        raise HookFailed("error", "answer not an object")
    result = answer.get("result")
    if result == "deny":
        return _denial(answer)
    if result != "allow":
        raise HookFailed("error", "result neither allow nor deny")
    user, name = answer.get("user"), answer.get("name")
    if user is not None and not (
        isinstance(user, str) and 0 < len(user) <= MAX_USER_LENGTH and user.isprintable()
    ):
        raise HookFailed("error", "invalid user")
    if name is not None:
        name = display_name(name)
        if name is None:
            raise HookFailed("error", "invalid name")
    return Decision(True, user=user, name=name) if user is not None or name is not None else ALLOW


def _publish_decision(answer: Any, max_text: int) -> Decision:
    if not isinstance(answer, dict):
        raise HookFailed("error", "answer not an object")
    result = answer.get("result")
    if result == "deny":
        return _denial(answer)
    if result != "allow":
        raise HookFailed("error", "result neither allow nor deny")
    text = answer.get("text")
    if text is None:
        return ALLOW
    if not isinstance(text, str) or len(text.encode("utf-8")) > max_text:
        raise HookFailed("error", "replacement text not a string of at most WS_MAX_SIZE bytes")
    return Decision(True, text=text)


def short_reason(reason: str) -> str:
    """A reason that fits a close frame: at most 123 bytes of UTF-8, cut at a character boundary."""
    encoded = reason.encode("utf-8")
    if len(encoded) <= MAX_REASON_BYTES:
        return reason
    return encoded[:MAX_REASON_BYTES].decode("utf-8", errors="ignore")
