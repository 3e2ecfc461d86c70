import pytest
from realtime.frames import OP_TEXT, close_frame, encode_frame, text_frame
from websockets.frames import Frame
from websockets.streams import StreamReader


def parse(data: bytes, mask: bool) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=mask)
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("masked", [False, True])
def test_frames_parse_back_with_every_length_encoding(size: int, masked: bool) -> None:
    payload = bytes(i % 251 for i in range(size))
    frame = parse(encode_frame(OP_TEXT, payload, masked=masked), mask=masked)
    assert frame.data == payload and frame.fin


def test_text_and_close_frames() -> None:
    assert parse(text_frame("héllo"), mask=False).data == "héllo".encode()
    close = parse(close_frame(4003, "forbidden"), mask=False)
    assert close.data == (4003).to_bytes(2, "big") + b"forbidden"


@pytest.mark.parametrize("masked", [False, True])
def test_long_close_reason_is_cut_at_a_character_boundary(masked: bool) -> None:
    reason = "é" * 100  # 200 bytes: byte 123 is the first half of a two-byte character
    close = parse(close_frame(1008, reason, masked=masked), mask=masked)
    text = close.data[2:].decode("utf-8")  # raises if a character was split
    assert len(close.data) <= 125 and text == reason[: len(text)] and len(text.encode()) == 122
