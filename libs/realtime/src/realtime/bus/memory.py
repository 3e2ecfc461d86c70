"""One-process bus: for a single instance and for a service's own unit tests."""

from realtime.bus.base import Bus, BusUnavailable, Message, Subscription, subject_matches


class MemoryBus(Bus):
    def __init__(self) -> None:
        super().__init__()
        self._connected = False
        self._subscriptions: set[Subscription] = set()

    @property
    def ready(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        self._connected = True
        self._ready_changed(True)

    async def disconnect(self) -> None:
        self._connected = False
        self._ready_changed(False)

    async def publish(self, subject: str, payload: bytes) -> None:
        if not self._connected:
            raise BusUnavailable("memory bus is not connected")
        message = Message(subject, payload)
        for subscription in list(self._subscriptions):
            if subject_matches(subscription.subject, subject):
                subscription.deliver(message)

    async def _add(self, subscription: Subscription) -> None:
        self._subscriptions.add(subscription)

    async def _remove(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
