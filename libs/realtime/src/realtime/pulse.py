"""The pulse sample every instance publishes: its own CPU, memory and WebSocket connections, once per tick.

Time is cut into ticks of ``PULSE_INTERVAL`` seconds aligned to the wall clock: tick ``n`` starts at
``n * interval`` (Unix time), so every instance on every host agrees on the tick number without talking.
An instance samples itself early in each tick (``SAMPLE_PHASE`` of the interval after the tick starts)
and publishes the sample, stamped with that tick, on ``pulse.sample.<service>.<instance>``. A sample that
could not be taken in the first half of its tick (a stalled event loop) is skipped, never sent late: the
stats service builds the pulse for tick ``n + 1`` from samples stamped ``n``, and a late sample could reach
one stats replica before that moment and another after it.

psutil calls read ``/proc``; they run in a worker thread so they never hold up the event loop.
"""

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass

import psutil

from realtime import metrics
from realtime.bus import Bus, BusUnavailable, safe_token
from realtime.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

SAMPLE_SUBJECT = "pulse.sample"  # full subject: pulse.sample.<service>.<instance>
SAMPLES = f"{SAMPLE_SUBJECT}.>"  # what the stats service subscribes to
SAMPLE_PHASE = 0.1  # instances sample this fraction of the interval after a tick starts
SAMPLE_CUTOFF = 0.5  # ...and skip the tick if they could not sample before this fraction
MAX_NAME = 128  # longest service, instance or host name a sample may carry


def sample_subject(service: str, instance: str) -> str:
    return f"{SAMPLE_SUBJECT}.{safe_token(service)}.{safe_token(instance)}"


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def tick_of(when: float, interval: float) -> int:
    """The tick that wall-clock time ``when`` falls in, in whole microseconds (no float drift)."""
    return _micros(when) // _micros(interval)


def tick_start(tick: int, interval: float) -> float:
    return tick * _micros(interval) / 1_000_000


async def sleep_until(when: float) -> None:
    """Sleep until the wall clock reads ``when`` (loop timers may wake a little early: check again)."""
    delay = when - time.time()
    while delay > 0:
        await asyncio.sleep(delay)
        delay = when - time.time()


@dataclass(frozen=True, slots=True)
class Sample:
    service: str
    instance: str
    host: str
    tick: int  # the tick this sample belongs to
    interval: float  # the sender's PULSE_INTERVAL: samples of another cadence are not comparable
    cpu: float  # this process, percent of one core (may exceed 100 on several cores)
    host_cpu: float  # the whole host, 0-100
    memory: int  # this process's resident memory, bytes
    connections: int  # WebSocket sessions this instance serves right now

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> "Sample":
        """Parse and validate a sample from the bus; raises ValueError for anything malformed."""
        try:
            data = json.loads(payload)
            sample = cls(
                service=str(data["service"]),
                instance=str(data["instance"]),
                host=str(data["host"]),
                tick=int(data["tick"]),
                interval=float(data["interval"]),
                cpu=float(data["cpu"]),
                host_cpu=float(data["host_cpu"]),
                memory=int(data["memory"]),
                connections=int(data["connections"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed pulse sample: {exc}") from None
        if not all(0 < len(n) <= MAX_NAME for n in (sample.service, sample.instance, sample.host)):
            raise ValueError("pulse sample names must be 1 to 128 characters")
        numbers = (sample.interval, sample.cpu, sample.host_cpu)
        if not all(math.isfinite(x) for x in numbers) or sample.interval <= 0:
            raise ValueError("pulse sample has a non-finite number or no interval")
        return sample


class Sampler:
    """Samples this process once per tick and publishes the sample on the bus."""

    def __init__(
        self,
        bus: Bus,
        *,
        service: str,
        instance: str,
        host: str,
        interval: float,
        connections: Callable[[], int],
        metrics_on: bool = True,
    ) -> None:
        if interval < 0.001:
            raise ValueError("the pulse interval must be at least a millisecond")
        self.bus = bus
        self.service, self.instance, self.host = service, instance, host
        self.interval = interval
        self.connections = connections
        self.subject = sample_subject(service, instance)
        self.published = 0
        self.skipped = 0
        on, skipped = metrics_on, metrics.PULSE_SAMPLES_SKIPPED
        self._published_metric = metrics.child(metrics.PULSE_SAMPLES_PUBLISHED, on, service=service)
        self._late_metric = metrics.child(skipped, on, service=service, reason="late")
        self._no_bus_metric = metrics.child(skipped, on, service=service, reason="bus")
        self._process: psutil.Process | None = None  # made in the worker thread: it reads /proc too

    def measure(self, tick: int, connections: int) -> Sample:
        """Blocking (reads /proc): call it in a thread. CPU figures cover the time since the last call."""
        if self._process is None:
            self._process = psutil.Process()
        with self._process.oneshot():
            cpu = self._process.cpu_percent(interval=None)
            memory = self._process.memory_info().rss
        return Sample(
            service=self.service,
            instance=self.instance,
            host=self.host,
            tick=tick,
            interval=self.interval,
            cpu=round(cpu, 1),
            host_cpu=round(psutil.cpu_percent(interval=None), 1),
            memory=memory,
            connections=connections,
        )

    async def run(self) -> None:
        """Forever: at ``SAMPLE_PHASE`` into each tick, measure and publish."""
        await asyncio.to_thread(self.measure, 0, 0)  # the first CPU reading only starts the clock
        tick = tick_of(time.time(), self.interval) + 1
        while True:
            start = tick_start(tick, self.interval)
            await sleep_until(start + SAMPLE_PHASE * self.interval)
            try:
                await self.sample_once(tick)
            except Exception:  # one failed reading must not silence this instance for good
                logger.exception("pulse sample for tick %d failed", tick)
            tick = max(tick + 1, tick_of(time.time(), self.interval) + 1)

    async def sample_once(self, tick: int) -> bool:
        """Measure and publish the sample for ``tick``; False when it was skipped."""
        connections = self.connections()  # read on the event loop, where the count changes
        sample = await asyncio.to_thread(self.measure, tick, connections)
        cutoff = tick_start(tick, self.interval) + SAMPLE_CUTOFF * self.interval
        if time.time() > cutoff:
            self.skipped += 1
            self._late_metric.inc()
            logger.warning("pulse sample for tick %d skipped: taken too late in its tick", tick)
            return False
        try:
            await self.bus.publish(self.subject, sample.to_json())
        except BusUnavailable:
            self.skipped += 1
            self._no_bus_metric.inc()
            logger.debug("pulse sample for tick %d skipped: bus not connected", tick)
            return False
        self.published += 1
        self._published_metric.inc()
        return True

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["Sampler"]:
        """Sample in the background while the block runs."""
        task = asyncio.create_task(self.run(), name=f"pulse-sampler {self.subject}")
        try:
            yield self
        finally:
            await cancel_and_wait(task)
