"""Warm-up relay: a replica that builds no pulse yet sends its peers' pulses, once per tick, in order."""

from realtime.bus import create_bus
from stats_service.aggregate import Aggregator
from stats_service.pulse_hub import PulseHub
from stats_service.ticker import Ticker

INTERVAL = 0.5
T = 3_400_000_000


def ticker(first_own: int | None) -> Ticker:
    aggregator = Aggregator(INTERVAL, drop_after=2)
    if first_own is not None:
        aggregator.listening((first_own - 2) * INTERVAL)
        assert aggregator.first_complete == first_own
    return Ticker(create_bus("memory://"), aggregator, PulseHub())


def at(tick: int) -> float:
    return tick * INTERVAL + 0.01


def test_a_warming_replica_relays_the_running_tick() -> None:
    assert ticker(first_own=T + 3).should_relay(T, at(T))


def test_no_relay_from_the_replica_s_own_first_tick_on() -> None:
    t = ticker(first_own=T + 3)
    assert not t.should_relay(T + 3, at(T + 3))
    assert not t.should_relay(T + 4, at(T + 4))


def test_each_tick_is_relayed_at_most_once_and_never_backwards() -> None:
    t = ticker(first_own=T + 3)
    t.hub.publish(T, f'{{"tick":{T}}}')
    assert not t.should_relay(T, at(T))  # a second peer's copy of the same tick
    assert not t.should_relay(T - 1, at(T))
    assert t.should_relay(T + 1, at(T + 1))


def test_replayed_or_far_future_pulses_are_not_relayed() -> None:
    t = ticker(first_own=None)
    assert not t.should_relay(T - 5, at(T))
    assert not t.should_relay(T + 5, at(T))
    assert t.should_relay(T + 1, at(T))  # a peer whose clock runs a hair ahead
