"""The shared hub: one frame to every connection, and the slow-consumer policy as a parameter."""

from realtime.close_codes import CloseCode
from realtime.hub import SLOW_CONSUMER, Hub, Policy


class FakeWriter:
    def __init__(self, buffered_after_write: int = 0) -> None:
        self.frames: list[bytes] = []
        self.buffered = 0
        self.grow = buffered_after_write
        self.open = True
        self.closed: tuple[int, str, float] | None = None

    def write(self, frame: bytes) -> bool:
        if not self.open:
            return False
        self.frames.append(frame)
        self.buffered += self.grow
        return True

    def close(self, code: int, reason: str = "", *, abort_after: float = 0) -> None:
        self.open = False
        self.closed = (code, reason, abort_after)


def test_the_same_bytes_reach_every_connection() -> None:
    hub = Hub(Policy.CUT_OFF, 100)
    writers = [FakeWriter() for _ in range(3)]
    for w in writers:
        hub.add(w)  # type: ignore[arg-type]
    assert hub.broadcast(b"frame") == 3
    assert all(w.frames[0] is writers[0].frames[0] for w in writers)


def test_cut_off_closes_a_slow_consumer_with_1013_after_its_backlog_and_writes_no_more() -> None:
    hub = Hub(Policy.CUT_OFF, 100, close_deadline=42.0)
    fast, slow = FakeWriter(), FakeWriter(buffered_after_write=60)
    hub.add(fast)  # type: ignore[arg-type]
    hub.add(slow)  # type: ignore[arg-type]
    hub.broadcast(b"1")
    hub.broadcast(b"2")  # 120 bytes unread: written, then cut off
    assert slow.closed == (CloseCode.TRY_AGAIN_LATER, SLOW_CONSUMER, 42.0)
    assert slow not in hub and hub.cut_off == 1
    hub.broadcast(b"3")
    assert slow.frames == [b"1", b"2"] and fast.frames == [b"1", b"2", b"3"]


def test_latest_wins_skips_a_slow_connection_until_it_has_read() -> None:
    hub = Hub(Policy.LATEST_WINS, 0)
    slow = FakeWriter()
    hub.add(slow)  # type: ignore[arg-type]
    slow.buffered = 10
    assert hub.broadcast(b"old") == 0
    slow.buffered = 0
    assert hub.broadcast(b"new") == 1
    assert slow.frames == [b"new"] and hub.skipped == 1 and slow.closed is None
