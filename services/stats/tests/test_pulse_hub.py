"""Fan-out: encoded once, newest value wins, a slow client never gets a backlog, a new one never waits."""

from realtime.frames import text_frame
from realtime.serve import FRAME_WRITER
from stats_service.pulse_hub import PulseHub


class FakeWriter:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.buffered = 0
        self.open = True

    def close(self, code: int, reason: str = "", *, abort_after: float = 0) -> None:
        self.open = False

    def write(self, frame: bytes) -> bool:
        if not self.open:
            return False
        self.frames.append(frame)
        return True


class FakeWebSocket:
    def __init__(self, writer: FakeWriter) -> None:
        self.scope = {"extensions": {FRAME_WRITER: writer}}


def joined(hub: PulseHub) -> tuple[FakeWriter, object]:
    writer = FakeWriter()
    client = hub.join(FakeWebSocket(writer))  # type: ignore[arg-type]
    return writer, client


def test_one_pulse_is_encoded_once_and_the_same_bytes_go_to_every_client() -> None:
    hub = PulseHub()
    writers = [joined(hub)[0] for _ in range(5)]
    assert hub.publish(1, '{"tick":1}') == (5, 0)
    first = writers[0].frames[0]
    assert first == text_frame('{"tick":1}')
    assert all(w.frames == [first] and w.frames[0] is first for w in writers)


def test_a_new_client_gets_the_newest_pulse_at_once() -> None:
    hub = PulseHub()
    hub.publish(1, '{"tick":1}')
    hub.publish(2, '{"tick":2}')
    writer, _ = joined(hub)
    assert writer.frames == [text_frame('{"tick":2}')]


def test_a_client_joining_before_any_pulse_gets_nothing_until_the_first() -> None:
    hub = PulseHub()
    writer, _ = joined(hub)
    assert writer.frames == []
    hub.publish(1, '{"tick":1}')
    assert writer.frames == [text_frame('{"tick":1}')]


def test_a_slow_client_skips_stale_pulses_and_gets_the_newest_next() -> None:
    hub = PulseHub(max_buffered=0)
    fast, _ = joined(hub)
    slow, _ = joined(hub)
    hub.publish(1, '{"tick":1}')
    slow.buffered = 300  # tick 1 still unsent to it
    assert hub.publish(2, '{"tick":2}') == (1, 1)
    assert hub.publish(3, '{"tick":3}') == (1, 1)
    slow.buffered = 0  # it caught up
    hub.publish(4, '{"tick":4}')
    assert slow.frames == [text_frame('{"tick":1}'), text_frame('{"tick":4}')]
    assert len(fast.frames) == 4
    assert hub.skipped == 2


def test_a_client_that_left_gets_nothing_more() -> None:
    hub = PulseHub()
    writer, client = joined(hub)
    hub.leave(client)  # type: ignore[arg-type]
    hub.publish(1, '{"tick":1}')
    assert writer.frames == []
    assert not hub.clients


def test_a_closing_connection_is_not_written_to() -> None:
    hub = PulseHub()
    writer, _ = joined(hub)
    writer.open = False
    assert hub.publish(1, '{"tick":1}') == (0, 1)
