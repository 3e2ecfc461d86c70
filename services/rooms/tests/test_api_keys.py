"""ApiKeys alone: which key a bearer key is, the LRU of verified keys, the throttle, the rate per key."""

import asyncio

import pytest
from rooms_service.api_keys import ApiKeys, Verdict
from rooms_service.guard import FailureThrottle, hash_password


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def keys(*configured: str, max_failures: int = 5, clock: FakeClock | None = None, **kwargs) -> ApiKeys:
    clock = clock or FakeClock()
    throttle = FailureThrottle(max_failures, 60.0, clock=clock)
    kwargs.setdefault("rate", 10.0)
    kwargs.setdefault("burst", 100)
    return ApiKeys(configured, throttle, clock=clock, **kwargs)


async def test_plain_and_hashed_keys_allow_only_themselves() -> None:
    api = keys("plain-key", hash_password("hashed-key", iterations=1000))
    assert len(api) == 2
    for candidate, verdict in [
        ("plain-key", Verdict.ALLOWED),
        ("hashed-key", Verdict.ALLOWED),
        ("plain-key ", Verdict.WRONG),
        ("hashed", Verdict.WRONG),
        (None, Verdict.MISSING),
    ]:
        assert (await api.check("10.0.0.1", candidate)).verdict == verdict


async def test_a_verified_hashed_key_is_remembered_and_the_lru_is_bounded() -> None:
    configured = [f"key-{i}" for i in range(4)]
    api = keys(*(hash_password(k, iterations=1000) for k in configured), remembered=2)
    for key in configured[:2]:
        assert (await api.check("c", key)).verdict == Verdict.ALLOWED
    assert api.verifications == 2
    for key in configured[:2]:  # remembered: no PBKDF2 again
        assert (await api.check("c", key)).verdict == Verdict.ALLOWED
    assert api.verifications == 2
    await api.check("c", configured[2])  # a third pushes out the least recently used (key-0)
    assert api.verifications == 3 and len(api._remembered) == 2
    await api.check("c", configured[1])
    assert api.verifications == 3
    await api.check("c", configured[0])
    assert api.verifications == 4
    assert all(len(digest) == 32 for digest in api._remembered)  # digests, never the keys


async def test_concurrent_checks_of_one_key_share_one_verification() -> None:
    api = keys(hash_password("hashed-key", iterations=20_000))
    decisions = await asyncio.gather(*[api.check("c", "hashed-key") for _ in range(20)])
    assert {d.verdict for d in decisions} == {Verdict.ALLOWED}
    assert api.verifications == 1
    assert not api.throttle.blocked(("c", "/api"))  # the pre-charged failure was cleared


async def test_wrong_keys_are_throttled_per_address_and_unchecked_then() -> None:
    clock = FakeClock()
    api = keys("right", hash_password("hashed", iterations=1000), max_failures=3, clock=clock)
    for _ in range(3):
        assert (await api.check("10.0.0.1", "guess")).verdict == Verdict.WRONG
    verifications = api.verifications
    decision = await api.check("10.0.0.1", "right")
    assert decision.verdict == Verdict.THROTTLED and decision.retry_after == 60
    assert (await api.check("10.0.0.1", "guess")).verdict == Verdict.THROTTLED
    assert api.verifications == verifications  # refused without checking
    assert (await api.check("10.0.0.2", "right")).verdict == Verdict.ALLOWED  # per address
    clock.now += 45
    assert (await api.check("10.0.0.1", None)).retry_after == 15
    clock.now += 15.1
    assert (await api.check("10.0.0.1", "right")).verdict == Verdict.ALLOWED


async def test_a_burst_of_different_guesses_starts_at_most_the_limit_of_verifications() -> None:
    api = keys(hash_password("hashed", iterations=20_000), max_failures=3)
    decisions = await asyncio.gather(*[api.check("10.0.0.9", f"guess-{i}") for i in range(20)])
    verdicts = [d.verdict for d in decisions]
    assert verdicts.count(Verdict.WRONG) == 3 and verdicts.count(Verdict.THROTTLED) == 17
    assert api.verifications == 3


async def test_missing_keys_are_not_counted_as_failures() -> None:
    api = keys("right", max_failures=2)
    for _ in range(5):
        assert (await api.check("c", None)).verdict == Verdict.MISSING
    assert (await api.check("c", "right")).verdict == Verdict.ALLOWED


async def test_each_key_has_its_own_rate() -> None:
    clock = FakeClock()
    api = keys("one", hash_password("two", iterations=1000), rate=2.0, burst=2, clock=clock)
    assert [(await api.check("c", "one")).verdict for _ in range(3)] == [
        Verdict.ALLOWED,
        Verdict.ALLOWED,
        Verdict.RATE_LIMITED,
    ]
    assert (await api.check("c", "one")).retry_after == 1
    assert (await api.check("c", "two")).verdict == Verdict.ALLOWED
    clock.now += 0.5  # one token back at 2 a second
    assert (await api.check("c", "one")).verdict == Verdict.ALLOWED
    assert (await api.check("c", "one")).verdict == Verdict.RATE_LIMITED


async def test_no_keys_configured_refuses_every_key() -> None:
    api = keys()
    assert (await api.check("c", "anything")).verdict == Verdict.WRONG


@pytest.mark.parametrize("bad", ["", "with space", "tab\tkey", "ünïcode", "pbkdf2_sha256$x"])
def test_a_plain_key_that_no_header_can_carry_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        keys(bad)
