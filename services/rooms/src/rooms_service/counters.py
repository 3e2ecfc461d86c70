"""What the rooms' WebSocket endpoints count on, resolved once per app (never a label lookup per message):
the same counters for ``/ws/{room_id}`` and ``/ws``."""

from dataclasses import dataclass
from typing import Any

from realtime import metrics

from rooms_service.settings import RoomsSettings


@dataclass(frozen=True, slots=True)
class RelayMetrics:
    """What a member's messages count on."""

    received: metrics.Tally
    rate_limited: Any
    publish_to_store: Any
    on: bool


@dataclass(frozen=True, slots=True)
class AuthMetrics:
    """What a refused password or token counts on: a wrong one, or one refused unchecked (throttled)."""

    failures: Any
    throttled: Any


def relay_metrics(settings: RoomsSettings) -> RelayMetrics:
    on, service = settings.metrics, settings.service_name
    return RelayMetrics(
        metrics.tally(metrics.MESSAGES_RECEIVED, on, service=service),
        metrics.child(metrics.RATE_LIMITED, on, service=service),
        metrics.child(metrics.PUBLISH_TO_STORE, on, service=service),
        on,
    )


def auth_metrics(settings: RoomsSettings) -> AuthMetrics:
    on, service = settings.metrics, settings.service_name
    return AuthMetrics(
        metrics.child(metrics.AUTH_FAILURES, on, service=service),
        metrics.child(metrics.AUTH_THROTTLED, on, service=service),
    )
