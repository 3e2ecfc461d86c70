"""Server-side WebSocket frames built once and written to many connections (RFC 6455 section 5.2).

A broadcast encodes its frame once per replica; ``FrameWriter`` (realtime.transport) writes the same
bytes to every member's transport. No compression: per-message deflate is off on every broadcast endpoint.
"""

import os

from websockets.utils import apply_mask

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8

MAX_CLOSE_REASON = 123  # a control frame's payload is at most 125 bytes, two of them the code


def encode_frame(opcode: int, payload: bytes, *, masked: bool = False) -> bytes:
    """One final frame. ``masked`` only for frames a client writes (the gateway to an upstream)."""
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = bytes((0x80 | opcode, mask_bit | length))
    elif length < 1 << 16:
        header = bytes((0x80 | opcode, mask_bit | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, mask_bit | 127)) + length.to_bytes(8, "big")
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + apply_mask(payload, key)


def text_frame(text: str) -> bytes:
    return encode_frame(OP_TEXT, text.encode("utf-8"))


def binary_frame(data: bytes) -> bytes:
    return encode_frame(OP_BINARY, data)


def close_reason(reason: str) -> bytes:
    """``reason`` as UTF-8, cut to the 123 bytes a close frame holds without splitting a character."""
    return reason.encode("utf-8")[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")


def close_frame(code: int, reason: str = "", *, masked: bool = False) -> bytes:
    return encode_frame(OP_CLOSE, code.to_bytes(2, "big") + close_reason(reason), masked=masked)
