"""Just enough of RFC 6455 for a splicing proxy: frame boundaries and close frames.

The gateway never decodes or re-encodes a frame. It only walks frame headers so that it knows when a
close frame of its own (1012, 1001) can be written between two frames without corrupting the stream.
"""

from realtime.frames import OP_CLOSE, close_frame
from websockets.utils import accept_key  # the Sec-WebSocket-Accept value for a Sec-WebSocket-Key

__all__ = ["FrameTracker", "accept_key", "close_frame"]


class FrameTracker:
    """Follows frame boundaries in one direction of a byte stream without copying payloads."""

    __slots__ = ("_header", "_skip", "saw_close")

    def __init__(self) -> None:
        self._skip = 0  # payload bytes of the current frame still to come
        self._header = b""  # the start of a frame header split across two chunks
        self.saw_close = False

    @property
    def at_boundary(self) -> bool:
        return self._skip == 0 and not self._header

    def feed(self, data: bytes) -> None:
        if self._header:
            data, pos = self._header + data, 0
            self._header = b""
        else:
            pos = self._skip
        end = len(data)
        while pos < end:
            if end - pos < 2:
                self._header, self._skip = data[pos:], 0
                return
            b1 = data[pos + 1]
            length = b1 & 0x7F
            size = 2 + (4 if b1 & 0x80 else 0) + (2 if length == 126 else 8 if length == 127 else 0)
            if end - pos < size:
                self._header, self._skip = data[pos:], 0
                return
            if length == 126:
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            if data[pos] & 0x0F == OP_CLOSE:
                self.saw_close = True
            pos += size + length
        self._skip = pos - end
