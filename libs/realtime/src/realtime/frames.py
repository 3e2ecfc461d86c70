"""Server-side WebSocket frames built once and written to many connections (RFC 6455 section 5.2).

A broadcast encodes its frame once per replica; ``FrameWriter`` (serve.py) writes the same bytes to every
member's transport. No compression: per-message deflate is off on every broadcast endpoint.
"""

import os

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8


def encode_frame(opcode: int, payload: bytes, *, masked: bool = False) -> bytes:
    """One final frame. ``masked`` only for frames a client writes (the gateway to an upstream)."""
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, length))
    elif length < 1 << 16:
        header = bytes((0x80 | opcode, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 127)) + length.to_bytes(8, "big")
    if not masked:
        return header + payload
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes((header[0], header[1] | 0x80)) + header[2:] + key + body


def text_frame(text: str) -> bytes:
    return encode_frame(OP_TEXT, text.encode("utf-8"))


def binary_frame(data: bytes) -> bytes:
    return encode_frame(OP_BINARY, data)


def close_frame(code: int, reason: str = "", *, masked: bool = False) -> bytes:
    return encode_frame(OP_CLOSE, code.to_bytes(2, "big") + reason.encode("utf-8")[:123], masked=masked)
