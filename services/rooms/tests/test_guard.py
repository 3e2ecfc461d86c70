import subprocess
import sys

import pytest
from rooms_service.guard import FailureThrottle, PasswordGuard, StoredPassword, Verdict, hash_password


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_and_hashed_passwords_match_only_themselves() -> None:
    hashed = hash_password("secret123", iterations=1000)
    assert hashed.startswith("pbkdf2_sha256$1000$")
    for configured in ("secret123", hashed):
        stored = StoredPassword(configured)
        assert stored.matches("secret123")
        assert not stored.matches("secret12")
        assert not stored.matches("")
        assert not stored.matches("secret123 ")


def test_the_same_password_hashes_differently_each_time() -> None:
    assert hash_password("x", iterations=1000) != hash_password("x", iterations=1000)


@pytest.mark.parametrize(
    "bad", ["pbkdf2_sha256$S3cr3t", "pbkdf2_sha256$abc$S3cr3t$aGFz", "pbkdf2_sha256$0$S3cr3t$b"]
)
def test_malformed_hash_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        StoredPassword(bad)
    assert "S3cr3t" not in str(info.value)


def test_throttle_blocks_after_the_limit_and_forgets_after_the_window() -> None:
    clock = FakeClock()
    throttle = FailureThrottle(3, 60.0, clock=clock)
    key = ("10.0.0.1", "VIP")
    for _ in range(3):
        assert not throttle.blocked(key)
        throttle.failed(key)
    assert throttle.blocked(key)
    assert not throttle.blocked(("10.0.0.2", "VIP"))  # per client address
    assert not throttle.blocked(("10.0.0.1", "other"))  # per room
    clock.now += 60.1
    assert not throttle.blocked(key)


def test_throttle_memory_is_bounded() -> None:
    throttle = FailureThrottle(1, 60.0, max_keys=100, clock=FakeClock())
    for i in range(1000):
        throttle.failed((f"10.0.{i // 256}.{i % 256}", "VIP"))
    assert len(throttle._failures) == 100


async def test_guard_verdicts_and_success_resets_the_count() -> None:
    guard = PasswordGuard({"VIP": hash_password("pw", iterations=1000)}, FailureThrottle(2, 60.0))
    assert await guard.check("open", "a", None) == Verdict.ALLOWED
    assert await guard.check("VIP", "a", None) == Verdict.WRONG
    assert await guard.check("VIP", "a", "pw") == Verdict.ALLOWED
    assert await guard.check("VIP", "a", "no") == Verdict.WRONG
    assert await guard.check("VIP", "a", "no") == Verdict.WRONG
    assert await guard.check("VIP", "a", "pw") == Verdict.THROTTLED  # refused without checking


def test_hash_password_command_reads_stdin() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rooms_service.hash_password", "--iterations", "1000"],
        input="secret123\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    hashed = result.stdout.strip()
    assert "secret123" not in hashed
    assert StoredPassword(hashed).matches("secret123")
