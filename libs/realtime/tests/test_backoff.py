from realtime.backoff import Backoff


def test_delays_double_up_to_the_limit_and_reset_starts_over():
    backoff = Backoff(first=0.1, limit=0.5, jitter=0.0)
    assert [backoff.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next() == 0.1


def test_jitter_stays_within_its_bounds():
    backoff = Backoff(first=1.0, limit=1.0, jitter=0.25)
    delays = [backoff.next() for _ in range(200)]
    assert all(0.75 <= d <= 1.25 for d in delays)
    assert len(set(delays)) > 1


def test_worth_logging_the_first_and_every_nth():
    from realtime.lograte import worth_logging

    assert [n for n in range(1, 3001) if worth_logging(n)] == [1, 1000, 2000, 3000]
    assert [n for n in range(1, 8) if worth_logging(n, every=3)] == [1, 3, 6]


def test_the_servers_and_the_python_client_share_one_backoff() -> None:
    import realtime_client
    from realtime_client import backoff as client_backoff

    assert Backoff is client_backoff.Backoff is realtime_client.Backoff
