"""The stats replica's two background jobs: collect every instance's samples, and pulse at each tick.

At the start of tick ``n`` (``n * PULSE_INTERVAL`` on the wall clock, the same moment on every replica)
the aggregator builds pulse ``n``; it is serialised once and handed to the hub. A replica that wakes up
more than a tick late jumps to the current tick: a tick may be missed, never sent twice or out of order.
"""

import asyncio
import json
import logging
import time

from realtime.bus import Bus, Subscription
from realtime.pulse import SAMPLES, Sample, sleep_until, tick_of, tick_start

from stats_service.aggregate import Aggregator
from stats_service.fanout import PulseHub

logger = logging.getLogger(__name__)


def encode_pulse(pulse: dict[str, object]) -> str:
    return json.dumps(pulse, separators=(",", ":"))


class Ticker:
    def __init__(self, bus: Bus, aggregator: Aggregator, hub: PulseHub) -> None:
        self.bus = bus
        self.aggregator = aggregator
        self.hub = hub
        self.interval = aggregator.interval
        self.malformed = 0

    def _on_ready(self, ready: bool) -> None:
        # Lost NATS: samples may have been missed, so pulses pause until a whole window is heard again.
        self.aggregator.listening(time.time() if ready else None)

    async def run(self) -> None:
        async with self.bus.subscribe(SAMPLES) as samples:
            self.bus.on_ready_change(self._on_ready)
            self._on_ready(self.bus.ready)
            async with asyncio.TaskGroup() as jobs:
                jobs.create_task(self._collect(samples), name="pulse-collect")
                jobs.create_task(self._tick(), name="pulse-tick")

    async def _collect(self, samples: Subscription) -> None:
        async for message in samples:
            try:
                sample = Sample.from_json(message.payload)
            except ValueError as exc:
                self.malformed += 1
                if self.malformed == 1 or self.malformed % 1000 == 0:
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
                self.pulse(tick)
            except Exception:  # one bad tick must not end the pulse for good
                logger.exception("pulse for tick %d failed", tick)
            tick += 1

    def pulse(self, tick: int) -> None:
        started = time.perf_counter()
        pulse = self.aggregator.build(tick)
        if pulse is None:
            logger.debug("no pulse for tick %d: this replica has not heard a whole window yet", tick)
            return
        sent, skipped = self.hub.publish(tick, encode_pulse(pulse))
        logger.debug(
            "pulse %d to %d clients (%d skipped) in %.1f ms",
            tick,
            sent,
            skipped,
            (time.perf_counter() - started) * 1000,
        )
