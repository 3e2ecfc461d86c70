import random

import pytest
from gateway.frames import FrameTracker, accept_key
from realtime.frames import OP_BINARY, OP_TEXT, close_frame, encode_frame


def test_accept_key_matches_rfc6455_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def stream(masked: bool) -> tuple[bytes, list[int]]:
    """Frames of every header size, and the byte offsets where each frame ends."""
    rng = random.Random(7)
    data, ends = b"", []
    for size in [0, 1, 125, 126, 127, 1000, 65535, 65536, 3, 70000]:
        data += encode_frame(rng.choice([OP_TEXT, OP_BINARY]), bytes(size), masked=masked)
        ends.append(len(data))
    return data, ends


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("seed", range(20))
def test_boundaries_are_found_whatever_the_chunking(masked: bool, seed: int) -> None:
    data, ends = stream(masked)
    rng = random.Random(seed)
    tracker, pos = FrameTracker(), 0
    while pos < len(data):
        step = rng.choice([1, 2, 3, 7, 100, 5000, 70000])
        tracker.feed(data[pos : pos + step])
        pos = min(pos + step, len(data))
        assert tracker.at_boundary == (pos in ends), f"at byte {pos}"
    assert not tracker.saw_close


def test_close_frame_is_noticed_even_split_in_two() -> None:
    tracker = FrameTracker()
    frame = encode_frame(OP_TEXT, b"hi") + close_frame(1000, "bye", masked=True)
    tracker.feed(frame[:5])
    assert not tracker.saw_close
    tracker.feed(frame[5:])
    assert tracker.saw_close and tracker.at_boundary
