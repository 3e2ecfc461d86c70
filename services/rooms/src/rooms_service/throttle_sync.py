"""Shares password and token check results between replicas, so the failure throttle counts across all.

Each replica publishes ``{"client", "room", "ok", "origin"}`` on ``<prefix>.auth.results`` after every
check of a guarded room's password or of a token (never the secret) and applies what the others publish
to its own throttle.
A room subject has two tokens (``<prefix>.<room_id>``, ids have no '.'), so this one never meets a room.
"""

import json
import logging

from realtime.bus import Bus

from rooms_service.guard import Announce, PasswordGuard

logger = logging.getLogger(__name__)


def results_subject(prefix: str) -> str:
    return f"{prefix}.auth.results"


def announcer(bus: Bus, subject: str, origin: str) -> Announce:
    async def announce(client: str, room_id: str, ok: bool) -> None:
        event = {"client": client, "room": room_id, "ok": ok, "origin": origin}
        await bus.publish(subject, json.dumps(event, separators=(",", ":")).encode("utf-8"))

    return announce


async def apply_others(bus: Bus, subject: str, origin: str, guard: PasswordGuard) -> None:
    """Forever: apply the other replicas' check results to this replica's throttle."""
    async with bus.subscribe(subject) as results:
        async for message in results:
            try:
                event = json.loads(message.payload)
                if event["origin"] != origin:
                    guard.heard(str(event["client"]), str(event["room"]), bool(event["ok"]))
            except (ValueError, KeyError, TypeError):
                logger.warning("ignored a malformed password check result")
