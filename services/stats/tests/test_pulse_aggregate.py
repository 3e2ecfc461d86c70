"""The pulse rules: same samples in, byte-identical pulse out; one window per tick; drop-out; late samples."""

import random

from realtime.pulse import Sample
from stats_service.aggregate import Aggregator
from stats_service.ticker import encode_pulse

INTERVAL = 0.5
T = 3_400_000_000  # a tick number near today's


def sample(instance: str, tick: int, *, service: str = "rooms", host: str = "h1", **more: float) -> Sample:
    values = {"cpu": 1.5, "host_cpu": 40.0, "memory": 1_000_000, "connections": 3} | more
    return Sample(service=service, instance=instance, host=host, tick=tick, interval=INTERVAL, **values)  # type: ignore[arg-type]


def listening(aggregator: Aggregator, since_tick: int = T - 10) -> Aggregator:
    aggregator.listening(since_tick * INTERVAL)
    return aggregator


def instances(pulse: dict[str, object] | None) -> list[tuple[str, int]]:
    assert pulse is not None
    return [(i["instance"], i["sample_tick"]) for i in pulse["instances"]]  # type: ignore[index, union-attr]


def test_replicas_with_the_same_samples_build_byte_identical_pulses_whatever_the_arrival_order() -> None:
    samples = [
        sample(f"{svc}-{i}", T - 1, service=svc, host=f"h{i % 2}", cpu=i * 1.1, host_cpu=10.0 + i)
        for svc in ("rooms", "echo", "stats", "gateway")
        for i in range(1, 4)
    ]
    shuffled = samples[:]
    random.Random(4).shuffle(shuffled)
    one, two = listening(Aggregator(INTERVAL)), listening(Aggregator(INTERVAL))
    for s in samples:
        one.add(s)
    for s in shuffled:
        two.add(s)
    assert encode_pulse(one.build(T)) == encode_pulse(two.build(T))  # type: ignore[arg-type]


def test_pulse_for_tick_n_uses_samples_stamped_before_n_never_n_itself() -> None:
    agg = listening(Aggregator(INTERVAL))
    agg.add(sample("rooms-1", T - 1, connections=1))
    agg.add(sample("rooms-1", T, connections=99))  # early for pulse T: it belongs to pulse T + 1
    pulse = agg.build(T)
    assert pulse is not None
    assert pulse["tick"] == T
    assert pulse["ts"] == T * INTERVAL
    assert instances(pulse) == [("rooms-1", T - 1)]
    assert instances(agg.build(T + 1)) == [("rooms-1", T)]


def test_the_newest_sample_in_the_window_wins() -> None:
    agg = listening(Aggregator(INTERVAL, drop_after=2))
    agg.add(sample("rooms-1", T - 2, connections=1))
    agg.add(sample("rooms-1", T - 1, connections=2))
    pulse = agg.build(T)
    assert pulse["instances"][0]["connections"] == 2  # type: ignore[index]


def test_an_instance_that_stops_reporting_drops_out_after_drop_after_ticks() -> None:
    agg = listening(Aggregator(INTERVAL, drop_after=2))
    agg.add(sample("rooms-1", T - 1))
    for tick in range(T - 1, T + 5):
        agg.add(sample("rooms-2", tick))  # keeps reporting
    assert {i for i, _ in instances(agg.build(T))} == {"rooms-1", "rooms-2"}
    assert {i for i, _ in instances(agg.build(T + 1))} == {"rooms-1", "rooms-2"}  # one missed sample
    assert {i for i, _ in instances(agg.build(T + 2))} == {"rooms-2"}  # two missed: gone


def test_a_sample_arriving_after_its_first_pulse_was_built_is_dropped_as_late() -> None:
    agg = listening(Aggregator(INTERVAL))
    agg.build(T)
    assert not agg.add(sample("rooms-1", T - 1))  # pulse T was built without it: stays without it
    assert agg.late == 1
    assert agg.add(sample("rooms-1", T))  # still in time for pulse T + 1
    assert instances(agg.build(T + 1)) == [("rooms-1", T)]


def test_no_pulse_for_a_window_this_replica_did_not_hear_from_the_start() -> None:
    agg = Aggregator(INTERVAL, drop_after=2)
    agg.add(sample("rooms-1", T - 1))
    assert agg.build(T) is None  # never listening
    agg.listening(T * INTERVAL + 0.1)  # started listening a moment into tick T
    assert agg.first_complete == T + 3  # the window of pulse T + 3 is T + 1 .. T + 2
    assert agg.build(T + 2) is None
    agg.add(sample("rooms-1", T + 2))
    assert instances(agg.build(T + 3)) == [("rooms-1", T + 2)]
    agg.listening(None)  # lost NATS
    assert agg.build(T + 4) is None


def test_samples_with_another_interval_are_ignored() -> None:
    agg = listening(Aggregator(INTERVAL))
    other = Sample("rooms", "r", "h", T - 1, 5.0, 1.0, 1.0, 1, 1)
    assert not agg.add(other)
    assert instances(agg.build(T)) == []


def test_host_cpu_is_the_mean_per_host_then_over_hosts_and_services_are_totalled() -> None:
    agg = listening(Aggregator(INTERVAL))
    agg.add(sample("a", T - 1, host="h1", host_cpu=10.0, connections=2, cpu=1.0, memory=10))
    agg.add(sample("b", T - 1, host="h1", host_cpu=20.0, connections=3, cpu=2.0, memory=20))
    agg.add(sample("c", T - 1, host="h2", host_cpu=60.0, service="echo", connections=4))
    pulse = agg.build(T)
    assert pulse["hosts"] == [{"host": "h1", "cpu": 15.0}, {"host": "h2", "cpu": 60.0}]  # type: ignore[index]
    assert pulse["cpu"] == 37.5  # type: ignore[index]
    rooms = pulse["services"]["rooms"]  # type: ignore[index]
    assert rooms == {"instances": 2, "connections": 5, "cpu": 3.0, "memory": 30}


def test_an_empty_window_still_makes_a_pulse_with_no_instances() -> None:
    pulse = listening(Aggregator(INTERVAL)).build(T)
    assert pulse is not None
    assert (pulse["cpu"], pulse["instances"]) == (0.0, [])


def test_samples_from_a_clock_far_ahead_are_not_hoarded() -> None:
    agg = listening(Aggregator(INTERVAL))
    agg.build(T)
    assert agg.add(sample("rooms-1", T + 1))
    assert not agg.add(sample("rooms-1", T + 50))
