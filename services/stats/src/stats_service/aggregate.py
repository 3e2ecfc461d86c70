"""Samples in, one pulse per tick out, and the same pulse on every stats replica.

The rules (README, section "The stats pulse"), for ``interval`` seconds and ``drop_after`` ticks:
- the pulse for tick ``n`` is built at the start of tick ``n`` from samples stamped ``n - drop_after``
  to ``n - 1``: for each instance its newest sample in that window. Nothing else goes in: not the time the
  replica happened to wake up, not samples stamped ``n`` or later, not the order samples arrived in;
- a sample stamped ``s`` counts only if it arrives before this replica builds the pulse for ``s + 1`` (the
  first pulse that uses it). Instances sample early in a tick, so a sample has most of an interval to
  travel; one that arrives later is dropped and counted as late;
- an instance with no sample in the window is left out: one that stops reporting is gone from the pulse
  ``drop_after + 1`` ticks after its last sample;
- a replica builds a pulse only for a window it listened to from the start: after starting, or after
  losing NATS, it stays silent for up to ``drop_after + 1`` ticks rather than send a pulse that differs;
- samples with another interval are ignored (their ticks mean something else).
So two replicas that received the same samples build byte-identical pulses.
"""

import logging
import math
from datetime import UTC, datetime

from realtime.lograte import worth_logging
from realtime.pulse import Sample

logger = logging.getLogger(__name__)

MAX_INSTANCES = 10_000  # a bound on what a flood of junk samples can make this replica remember
MAX_AHEAD = 2  # ticks a sample may be stamped ahead of the newest pulse (clock skew between hosts)

Key = tuple[str, str]  # (service, instance)


def _mean(values: list[float]) -> float:
    return round(math.fsum(values) / len(values), 1) if values else 0.0


class Aggregator:
    def __init__(self, interval: float, drop_after: int = 2) -> None:
        if interval <= 0 or drop_after < 1:
            raise ValueError("interval must be positive and drop_after at least 1")
        self.interval = interval
        self.drop_after = drop_after
        self.built_through: int | None = None  # the newest tick whose pulse this replica built (or passed)
        self.first_complete: int | None = None  # the first tick whose whole window this replica heard
        self.late = 0
        self.ignored = 0
        self._history: dict[Key, dict[int, Sample]] = {}

    def listening(self, since: float | None) -> None:
        """Samples reach this replica from wall time ``since`` on (None: they do not, e.g. NATS is down)."""
        if since is None:
            self.first_complete = None
            return
        # The window of pulse n opens with tick n - drop_after; its samples are sent SAMPLE_PHASE into it.
        self.first_complete = math.ceil(since / self.interval - 1e-9) + self.drop_after

    def add(self, sample: Sample) -> bool:
        """Keep one sample; False when it is ignored (another interval, too late, too many instances)."""
        if sample.interval != self.interval:
            self.ignored += 1
            if worth_logging(self.ignored):
                logger.warning(
                    "ignoring pulse samples with interval %s from %s/%s (ours is %s)",
                    sample.interval,
                    sample.service,
                    sample.instance,
                    self.interval,
                )
            return False
        if self.built_through is not None and sample.tick + 1 <= self.built_through:
            self.late += 1
            if worth_logging(self.late):
                logger.warning(
                    "late pulse samples: %d so far (the last for tick %d from %s/%s)",
                    self.late,
                    sample.tick,
                    sample.service,
                    sample.instance,
                )
            return False
        if self.built_through is not None and sample.tick > self.built_through + MAX_AHEAD:
            self.ignored += 1  # a host whose clock runs ahead: do not hoard its future samples
            return False
        key = (sample.service, sample.instance)
        history = self._history.get(key)
        if history is None:
            if len(self._history) >= MAX_INSTANCES:
                self.ignored += 1
                return False
            history = self._history[key] = {}
        history[sample.tick] = sample
        return True

    def build(self, tick: int) -> dict[str, object] | None:
        """The pulse for ``tick``, or None when this replica did not hear the whole window."""
        self.built_through = tick if self.built_through is None else max(self.built_through, tick)
        oldest = tick - self.drop_after
        chosen: list[Sample] = []
        for key in sorted(self._history):
            history = self._history[key]
            in_window = [t for t in history if oldest <= t < tick]
            if in_window:
                chosen.append(history[max(in_window)])
            # the next pulse's window starts one tick later: what is older is no longer needed
            for t in [t for t in history if t <= oldest]:
                del history[t]
            if not history:
                del self._history[key]
        if self.first_complete is None or tick < self.first_complete:
            return None
        return self._pulse(tick, chosen)

    def _pulse(self, tick: int, samples: list[Sample]) -> dict[str, object]:
        hosts: dict[str, list[float]] = {}
        services: dict[str, dict[str, float]] = {}
        for s in samples:
            hosts.setdefault(s.host, []).append(s.host_cpu)
            empty = {"instances": 0, "connections": 0, "cpu": 0.0, "memory": 0}
            total = services.setdefault(s.service, empty)
            total["instances"] += 1
            total["connections"] += s.connections
            total["cpu"] = round(total["cpu"] + s.cpu, 1)
            total["memory"] += s.memory
        host_cpu = [{"host": h, "cpu": _mean(v)} for h, v in sorted(hosts.items())]
        start = tick * self.interval
        return {
            "tick": tick,
            "ts": start,
            "time": datetime.fromtimestamp(start, UTC).isoformat(timespec="milliseconds"),
            "interval": self.interval,
            "cpu": _mean([h["cpu"] for h in host_cpu]),
            "hosts": host_cpu,
            "services": dict(sorted(services.items())),
            "instances": [
                {
                    "service": s.service,
                    "instance": s.instance,
                    "host": s.host,
                    "cpu": s.cpu,
                    "memory": s.memory,
                    "connections": s.connections,
                    "sample_tick": s.tick,
                }
                for s in samples
            ],
        }
