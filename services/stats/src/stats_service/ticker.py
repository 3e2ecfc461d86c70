"""The stats replica's background jobs: collect samples, pulse at each tick, relay peers' pulses on warm-up.

At the start of tick ``n`` (``n * PULSE_INTERVAL`` on the wall clock, the same moment on every replica)
the aggregator builds pulse ``n``; it is serialised once, handed to the hub and shared on ``pulse.built``.
A replica that wakes up more than a tick late jumps to the current tick: a tick may be missed, never sent
twice or out of order.

Warm-up: a replica that has not yet heard a whole sample window (just started, or back from a NATS outage)
builds nothing; instead it relays the pulses its peers share, each tick at most once and only ticks before
its own first one, so its clients still get every tick, the same bytes as everyone else's, from the start.
"""

import asyncio
import contextlib
import json
import logging
import time

from realtime import metrics
from realtime.bus import Bus, BusUnavailable, Subscription
from realtime.lograte import worth_logging
from realtime.pulse import SAMPLES, Sample, sleep_until, tick_of, tick_start

from stats_service.aggregate import Aggregator
from stats_service.pulse_hub import PulseHub

logger = logging.getLogger(__name__)

PULSES = "pulse.built"  # every stats replica shares each pulse it built here


def encode_pulse(pulse: dict[str, object]) -> str:
    return json.dumps(pulse, separators=(",", ":"))


class Ticker:
    def __init__(self, bus: Bus, aggregator: Aggregator, hub: PulseHub, *, metrics_on: bool = True) -> None:
        self.bus = bus
        self._built = metrics.child(metrics.PULSES_BUILT, metrics_on)
        self._relayed = metrics.child(metrics.PULSES_RELAYED, metrics_on)
        self.aggregator = aggregator
        self.hub = hub
        self.interval = aggregator.interval
        self.malformed = 0
        self.relayed = 0
        self._relaying = False  # for the log: say once when relaying starts and when own pulses take over

    def _on_ready(self, ready: bool) -> None:
        # Lost NATS: samples may have been missed, so own pulses pause until a whole window is heard again.
        self.aggregator.listening(time.time() if ready else None)

    async def run(self) -> None:
        async with self.bus.subscribe(SAMPLES) as samples, self.bus.subscribe(PULSES, 64) as pulses:
            self.bus.on_ready_change(self._on_ready)
            self._on_ready(self.bus.ready)
            async with asyncio.TaskGroup() as jobs:
                jobs.create_task(self._collect(samples), name="pulse-collect")
                jobs.create_task(self._relay(pulses), name="pulse-relay")
                jobs.create_task(self._tick(), name="pulse-tick")

    async def _collect(self, samples: Subscription) -> None:
        async for message in samples:
            try:
                sample = Sample.from_json(message.payload)
            except ValueError as exc:
                self.malformed += 1
                if worth_logging(self.malformed):
                    logger.warning("ignoring a pulse sample on %s: %s", message.subject, exc)
                continue
            self.aggregator.add(sample)

    async def _tick(self) -> None:
        tick = tick_of(time.time(), self.interval) + 1
        while True:
            await sleep_until(tick_start(tick, self.interval))
            now = tick_of(time.time(), self.interval)
            if now > tick:
                logger.warning("pulse loop woke %d tick(s) late; skipping to tick %d", now - tick, now)
                tick = now
            try:
                text = self.pulse(tick)
            except Exception:  # one bad tick must not end the pulse for good
                logger.exception("pulse for tick %d failed", tick)
                text = None
            if text is not None:
                with contextlib.suppress(BusUnavailable):
                    await self.bus.publish(PULSES, text.encode())
            tick += 1

    def pulse(self, tick: int) -> str | None:
        """Build, encode and send this replica's pulse for ``tick``; None when it has none (warming up)."""
        started = time.perf_counter()
        pulse = self.aggregator.build(tick)
        if pulse is None:
            return None
        text = encode_pulse(pulse)
        if self._relaying:
            self._relaying = False
            logger.info("warm-up over: sending this replica's own pulses from tick %d", tick)
        self._built.inc()
        sent, skipped = self.hub.publish(tick, text, tick_start(tick, self.interval))
        logger.debug(
            "pulse %d to %d clients (%d skipped) in %.1f ms",
            tick,
            sent,
            skipped,
            (time.perf_counter() - started) * 1000,
        )
        return text

    async def _relay(self, pulses: Subscription) -> None:
        async for message in pulses:
            try:
                tick = int(json.loads(message.payload)["tick"])
            except (ValueError, TypeError, KeyError):
                continue
            if self.should_relay(tick, time.time()):
                if not self._relaying:
                    self._relaying = True
                    logger.info("warming up: relaying peers' pulses (from tick %d)", tick)
                self.relayed += 1
                self._relayed.inc()
                self.hub.publish(tick, message.payload.decode(), tick_start(tick, self.interval))

    def should_relay(self, tick: int, now: float) -> bool:
        """A peer's pulse goes to our clients only while we build none of our own, once per tick, in order,
        and only for about the tick now running (a replayed pulse is not news; one tick of slack either way
        absorbs clock differences between hosts)."""
        first_own = self.aggregator.first_complete
        if first_own is not None and tick >= first_own:
            return False  # from this tick on we send our own
        latest = self.hub.latest_tick
        if latest is not None and tick <= latest:
            return False  # already sent: each tick at most once, never backwards
        current = tick_of(now, self.interval)
        return current - 1 <= tick <= current + 1
